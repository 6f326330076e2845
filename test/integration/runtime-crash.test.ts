import { describe, expect, it } from 'vitest';
import { fetchGroupLag } from '../../src/kafka/lag.js';
import { testContext } from '../helpers/infra.js';
import { countKeys, deployChain, produce, readAll, startStage, waitUntil, type StageProcess } from '../helpers/chain.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

/** Deterministic pseudo-random numbers, so a failing run can be repeated (seed printed). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

describe('crash test: exactly once across SIGKILLs (real broker, stages as child processes)', () => {
  it('500 records through a two-hop chain: every input has exactly one output at each hop after repeated SIGKILLs', async () => {
    const seed = Number(process.env.CRASH_SEED ?? Date.now() % 100_000);
    const random = rng(seed);
    console.log(`crash test seed ${seed} (repeat with CRASH_SEED=${seed})`);
    const chain = await deployChain();
    const keys = await produce(chain, 500);
    // 100 ms per record: a partition's 125 records take over 12 s per hop, so the kills land mid-work
    const env = { CHAIN_DELAY_MS: '100', SONIC_LOG_LEVEL: 'warn' };
    const procs: StageProcess[] = [
      startStage(chain, 'first', env),
      startStage(chain, 'first', env),
      startStage(chain, 'second', env),
      startStage(chain, 'second', env),
    ];

    let kills = 0;
    const outCount = async () => (await readAll(chain.topic('out'), 400)).length;
    // records not yet committed past by each hop, from the groups' offsets: cheap, unlike reading
    // `out`, which never goes idle while outputs stream in (a transaction marker per partition of
    // `mid` may remain uncommitted at the end, hence the tolerance)
    const kafka = testContext().kafka;
    const pending = (lags: { committed: bigint; end: bigint }[]): bigint => lags.reduce((n, l) => n + (l.committed < 0n ? l.end : l.end - l.committed), 0n);
    const finished = async (): Promise<boolean> => {
      const first = await fetchGroupLag(kafka, `sonicflow.${chain.prefix}.first`, [chain.topic('in')]);
      const second = await fetchGroupLag(kafka, `sonicflow.${chain.prefix}.second`, [chain.topic('mid')]);
      return pending(first) === 0n && pending(second) <= BigInt(second.length);
    };
    const deadline = Date.now() + 150_000;
    while (kills < 6 && Date.now() < deadline) {
      // the kill schedule under test (seeded): 1-4 s between SIGKILLs
      await new Promise((r) => setTimeout(r, 1000 + random() * 3000));
      const i = Math.floor(random() * procs.length);
      const victim = procs[i]!;
      victim.proc.kill('SIGKILL');
      await victim.exited;
      kills += 1;
      procs[i] = startStage(chain, victim.name as 'first' | 'second', env);
      if (await finished()) break;
    }
    expect(kills).toBeGreaterThanOrEqual(4);
    await waitUntil(async () => (await outCount()) >= 500, 180_000, 'all 500 outputs');
    // both hops have committed every input up to the log end (idle consumers of a transactional
    // topic commit past its markers, so no phantom lag is left): no late duplicate can appear
    await waitConsumedToEnd(testContext(), chain.topology, ['first', 'second'], 60_000);
    for (const p of procs) p.proc.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exited));

    for (const hop of ['mid', 'out'] as const) {
      const counts = countKeys(await readAll(chain.topic(hop)));
      const missing = keys.filter((k) => !counts.has(k));
      const doubled = [...counts].filter(([, n]) => n > 1);
      expect({ hop, missing: missing.length, doubled: doubled.length, extra: counts.size - keys.length }).toEqual({ hop, missing: 0, doubled: 0, extra: 0 });
    }
    console.log(`crash test: ${kills} SIGKILLs, no loss, no duplicate`);
  }, 400_000);
});
