import { describe, expect, it } from 'vitest';
import { countKeys, deployChain, produce, readAll, startStage, waitUntil } from '../helpers/chain.js';
import { LISTENING, listeningPort, testContext } from '../helpers/infra.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

describe('long tasks and graceful shutdown (real broker)', () => {
  it('a handler running three times the session timeout completes once, with no rebalance-induced duplicate', async () => {
    const chain = await deployChain();
    const stage = startStage(chain, 'first', { CHAIN_DELAY_MS: '19000', SONIC_SESSION_TIMEOUT_MS: '6000', SONIC_HEARTBEAT_INTERVAL_MS: '1000' });
    await stage.waitForLog(/"msg":"partitions assigned"/);
    const keys = await produce(chain, 2);
    const t0 = Date.now();
    await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length >= 2, 90_000, 'both outputs');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(18_000); // the work really took > 3 session timeouts
    await waitConsumedToEnd(testContext(), chain.topology, ['first']);
    const counts = countKeys(await readAll(chain.topic('mid')));
    expect([...counts.keys()].sort()).toEqual([...keys].sort());
    expect([...counts.values()]).toEqual([1, 1]);
    // membership was never lost: one assignment only, no rejoin, no dropped results
    expect(stage.logs().match(/"msg":"partitions assigned"/g)).toHaveLength(1);
    expect(stage.logs()).not.toMatch(/results dropped|partition revoked/);
    stage.proc.kill('SIGTERM');
    expect(await stage.exited).toBe(0);
  }, 150_000);

  it('SIGTERM during a batch: in-flight work commits, the process exits 0, and a restart finishes without loss or duplicate', async () => {
    const chain = await deployChain();
    const keys = await produce(chain, 300);
    const env = { CHAIN_DELAY_MS: '100' };
    const first = startStage(chain, 'first', env);
    await waitUntil(() => (first.logs().match(/"msg":"handling"/g) ?? []).length >= 40, 60_000, 'some progress');
    // the process serves Prometheus metrics while it works
    const port = await listeningPort(first, LISTENING.metrics);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/sonicflow_records_total\{stage="first",outcome="ok"\} [1-9]/);
    expect(metrics).toMatch(/sonicflow_transactions_total\{stage="first",result="commit"\} [1-9]/);
    expect(metrics).toContain('sonicflow_handler_duration_seconds_bucket');
    expect(metrics).toContain('sonicflow_in_flight_records');
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);

    first.proc.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(first.logs()).not.toContain('drain timeout');
    expect(first.logs()).toMatch(/"from":"running","state":"draining"/);
    expect(first.logs()).toMatch(/"from":"draining","state":"stopped"/);
    const partial = (await readAll(chain.topic('mid'))).length;
    expect(partial).toBeLessThan(300);

    const again = startStage(chain, 'first', env);
    await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length >= 300, 90_000, 'all 300 outputs');
    await waitConsumedToEnd(testContext(), chain.topology, ['first']);
    again.proc.kill('SIGINT');
    expect(await again.exited).toBe(0);
    const counts = countKeys(await readAll(chain.topic('mid')));
    expect(keys.filter((k) => counts.get(k) !== 1)).toEqual([]);
    expect(counts.size).toBe(300);
  }, 180_000);
});
