/**
 * The dispatcher on a real broker (bench/fixtures/burst.ts with BURST_DISPATCH=1: in -> prep ->
 * prepared -> dispatch -> dispatched -> infer -> out, infer sleeping BURST_INFER_MS per task):
 * what holds the backlog survives SIGKILL and a freeze (a zombie) with nothing lost or doubled,
 * a standby takes over within seconds, and a worker killed mid-task has its tasks done by others.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { kafkajsOf } from '../../src/kafka/handle.js';
import { OffsetReader } from '../../src/kafka/lag.js';
import { groupId } from '../../src/runtime/names.js';
import { deployChain, produce, readAll, countKeys, waitUntil, type Chain } from '../helpers/chain.js';
import { ROOT, startSonicflow, testContext, type SonicflowProcess } from '../helpers/infra.js';

const BURST = join(ROOT, 'bench', 'fixtures', 'burst.ts');
const ENV = {
  SONIC_METRICS_PORT: '0',
  SONIC_LOG_LEVEL: 'info',
  // no SONIC_SESSION_TIMEOUT_MS: infer and dispatch run with the 6 s session they declare
  SONIC_HEARTBEAT_INTERVAL_MS: '1000',
  SONIC_REBALANCE_TIMEOUT_MS: '8000',
  SONIC_DRAIN_TIMEOUT_MS: '10000',
  BURST_INFER_MS: '100',
};

let procs: SonicflowProcess[] = [];
afterEach(() => {
  for (const p of procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGCONT');
  procs = [];
});

function start(chain: Chain, stage: string, env: Record<string, string> = {}): SonicflowProcess {
  const p = startSonicflow(['run', stage, '--file', BURST], { ...ENV, SONIC_TOPIC_PREFIX: chain.prefix, ...env });
  procs.push(p);
  return p;
}

/** Records committed to `out` so far (its end offsets; each one-record transaction adds a marker). */
async function outProgress(chain: Chain): Promise<number> {
  const reader = new OffsetReader(testContext().kafka);
  try {
    return (await reader.offsets([chain.topic('out')])).reduce((s, o) => s + Number(o.stable), 0) / 2;
  } finally {
    await reader.close();
  }
}

/** Every key once in `out`, and no other key. */
async function expectExactlyOnce(chain: Chain, keys: string[]): Promise<void> {
  const want = new Set(keys);
  await waitUntil(
    async () => new Set((await readAll(chain.topic('out'), 1000)).map((r) => r.key)).size >= keys.length,
    120_000,
    `all ${keys.length} tasks in out`,
  );
  const counts = countKeys(await readAll(chain.topic('out')));
  const doubled = [...counts].filter(([k, n]) => want.has(k) && n > 1);
  const missing = keys.filter((k) => !counts.has(k));
  expect({ doubled, missing }).toEqual({ doubled: [], missing: [] });
}

async function pipeline(workers: number, inferEnv: Record<string, string> = {}): Promise<{ chain: Chain; d1: SonicflowProcess; infer: SonicflowProcess[] }> {
  const chain = await deployChain({ BURST_DISPATCH: '1', BURST_PARTITIONS: '4', BURST_SLOTS: '8' }, BURST);
  start(chain, 'prep');
  const infer = Array.from({ length: workers }, (_, i) => start(chain, 'infer', { BURST_WORKER: `w${i + 1}`, ...inferEnv }));
  const d1 = start(chain, 'dispatch');
  await d1.waitForLog(/dispatcher active/, 60_000);
  return { chain, d1, infer };
}

describe('dispatch (real broker)', () => {
  it('SIGKILL of the active dispatcher mid-burst: the standby takes over within seconds, every task exactly once', async () => {
    const { chain, d1 } = await pipeline(3);
    const d2 = start(chain, 'dispatch');
    await d2.waitForLog(/dispatcher standing by/, 60_000);
    const keys = await produce(chain, 150);
    await waitUntil(async () => (await outProgress(chain)) >= 30, 60_000, '30 tasks out before the kill');
    d1.proc.kill('SIGKILL');
    const killedAt = Date.now();
    await d2.waitForLog(/dispatcher active/, 30_000);
    const takeoverS = (Date.now() - killedAt) / 1000;
    // the session timeout (6 s here) plus the rebalance and the restore
    expect(takeoverS).toBeLessThan(12);
    await expectExactlyOnce(chain, keys);
  }, 240_000);

  it('a frozen active dispatcher (a zombie) is fenced: the standby takes over, and once thawed nothing it sends lands twice', async () => {
    const { chain, d1 } = await pipeline(2);
    const d2 = start(chain, 'dispatch');
    await d2.waitForLog(/dispatcher standing by/, 60_000);
    const keys = await produce(chain, 100);
    await waitUntil(async () => (await outProgress(chain)) >= 15, 60_000, '15 tasks out before the freeze');
    d1.proc.kill('SIGSTOP');
    await d2.waitForLog(/dispatcher active/, 30_000);
    // more work arrives while the zombie is frozen with its old view of the backlog
    const more = await produce(chain, 50);
    await new Promise((r) => setTimeout(r, 2000));
    d1.proc.kill('SIGCONT');
    await expectExactlyOnce(chain, [...keys, ...more]);
    // the thawed one found itself fenced or out of the group, and stands by
    await d1.waitForLog(/dispatcher standing by|dispatcher step failed/, 30_000);
  }, 240_000);

  it("SIGKILL of a worker mid-render: its task starts again on another worker within 10 s, the others' renders go on undisturbed, every task exactly once", async () => {
    const { chain, infer } = await pipeline(3, { BURST_INFER_MS: '1000', BURST_LOG_STARTS: '1' });
    const keys = await produce(chain, 36);
    await waitUntil(async () => (await outProgress(chain)) >= 6, 60_000, '6 tasks out before the kill');
    // kill w1 just after it begins a render
    const starts = (p: SonicflowProcess) => [...p.logs().matchAll(/bench\.start (\S+) (\d+)/g)].map((m) => ({ task: m[1]!, at: Number(m[2]) }));
    const before = starts(infer[0]!).length;
    await waitUntil(() => starts(infer[0]!).length > before, 30_000, 'w1 to begin a render');
    infer[0]!.proc.kill('SIGKILL');
    const killedAt = Date.now();
    const inHand = starts(infer[0]!).at(-1)!.task;
    const survivors = infer.slice(1);
    await waitUntil(() => survivors.some((p) => starts(p).some((s) => s.task === inHand)), 30_000, `task ${inHand} to start again`);
    const restartS =
      (Math.min(
        ...survivors.flatMap((p) =>
          starts(p)
            .filter((s) => s.task === inHand)
            .map((s) => s.at),
        ),
      ) -
        killedAt) /
      1000;
    console.log(`task ${inHand} began again ${restartS.toFixed(1)} s after its worker was killed`);
    // the declared 6 s session, the rebalance and a dispatcher poll; not the 30 s default session
    expect(restartS).toBeLessThan(10);
    await expectExactlyOnce(chain, keys);
    // the sticky assignor left each survivor its partitions: none of their renders was revoked and begun again elsewhere
    const begun = new Map<string, number>();
    for (const s of survivors.flatMap(starts)) begun.set(s.task, (begun.get(s.task) ?? 0) + 1);
    expect([...begun].filter(([, n]) => n > 1)).toEqual([]);
  }, 240_000);

  it("an upgrade: a new dispatcher starts from the workers' committed offsets on its input, so what they rendered before is not rendered again", async () => {
    const chain = await deployChain({ BURST_DISPATCH: '1', BURST_PARTITIONS: '4', BURST_SLOTS: '8' }, BURST);
    start(chain, 'prep');
    const old = await produce(chain, 20);
    const reader = new OffsetReader(testContext().kafka);
    let ends: { partition: number; offset: string }[] = [];
    try {
      // the old topology's infer read `prepared` itself: all 20 there, and done (its group committed the ends)
      await waitUntil(
        async () => (await reader.offsets([`${chain.prefix}.prepared`])).reduce((n, o) => n + Number(o.stable), 0) >= 40,
        60_000,
        'the 20 tasks in prepared',
      );
      ends = (await reader.offsets([`${chain.prefix}.prepared`])).map((o) => ({ partition: o.partition, offset: o.stable.toString() }));
    } finally {
      await reader.close();
    }
    const admin = kafkajsOf(testContext().kafka).admin();
    await admin.connect();
    try {
      await admin.setOffsets({ groupId: groupId(testContext().config.clientId, chain.topology, 'infer'), topic: `${chain.prefix}.prepared`, partitions: ends });
    } finally {
      await admin.disconnect();
    }
    const fresh = await produce(chain, 10);
    start(chain, 'infer', { BURST_WORKER: 'w1' });
    const d = start(chain, 'dispatch');
    await d.waitForLog(/starts from its workers' committed offsets/, 60_000);
    await expectExactlyOnce(chain, fresh);
    const seen = new Set((await readAll(chain.topic('out'))).map((r) => r.key));
    expect(old.filter((k) => seen.has(k))).toEqual([]);
  }, 180_000);
});
