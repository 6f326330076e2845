/**
 * The dispatcher on a real broker (bench/fixtures/burst.ts with BURST_DISPATCH=1: in -> prep ->
 * prepared -> dispatch -> dispatched -> infer -> out, infer sleeping BURST_INFER_MS per task):
 * what holds the backlog survives SIGKILL and a freeze (a zombie) with nothing lost or doubled,
 * a standby takes over within seconds, and a worker killed mid-task has its tasks done by others.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { OffsetReader } from '../../src/kafka/lag.js';
import { deployChain, produce, readAll, countKeys, waitUntil, type Chain } from '../helpers/chain.js';
import { ROOT, startSonicflow, testContext, type SonicflowProcess } from '../helpers/infra.js';

const BURST = join(ROOT, 'bench', 'fixtures', 'burst.ts');
const ENV = {
  SONIC_METRICS_PORT: '0',
  SONIC_LOG_LEVEL: 'info',
  SONIC_SESSION_TIMEOUT_MS: '6000',
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

async function pipeline(workers: number): Promise<{ chain: Chain; d1: SonicflowProcess; infer: SonicflowProcess[] }> {
  const chain = await deployChain({ BURST_DISPATCH: '1', BURST_PARTITIONS: '4', BURST_SLOTS: '8' }, BURST);
  start(chain, 'prep');
  const infer = Array.from({ length: workers }, (_, i) => start(chain, 'infer', { BURST_WORKER: `w${i + 1}` }));
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

  it('SIGKILL of a worker mid-task: its tasks are done by the others, every task exactly once', async () => {
    const { chain, infer } = await pipeline(3);
    const keys = await produce(chain, 120);
    await waitUntil(async () => (await outProgress(chain)) >= 20, 60_000, '20 tasks out before the kill');
    infer[0]!.proc.kill('SIGKILL');
    await expectExactlyOnce(chain, keys);
  }, 240_000);
});
