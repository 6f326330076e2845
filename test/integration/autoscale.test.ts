import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { Autoscaler, desiredReplicas, lagOfStage, type Decision } from '../../src/ops/autoscale.js';
import { loadTopologyFile } from '../../src/app/context.js';
import { deployChain, produce, readAll, waitUntil } from '../helpers/chain.js';
import { ROOT, testContext } from '../helpers/infra.js';
import { waitForMinimumMembers } from '../helpers/wait.js';

// the scheduling benchmark's pipeline serves the autoscaler test too
const BURST = join(ROOT, 'bench', 'fixtures', 'burst.ts');

describe('replica rule', () => {
  it('drains the backlog in the target time, within [min, max], min when idle', () => {
    expect(desiredReplicas({ lag: 0, secondsPerRecord: 5, targetDrainSeconds: 60, min: 1, max: 8 })).toBe(1);
    expect(desiredReplicas({ lag: 100, secondsPerRecord: 0.2, targetDrainSeconds: 10, min: 1, max: 8 })).toBe(2);
    expect(desiredReplicas({ lag: 101, secondsPerRecord: 0.2, targetDrainSeconds: 10, min: 1, max: 8 })).toBe(3);
    expect(desiredReplicas({ lag: 10_000, secondsPerRecord: 30, targetDrainSeconds: 600, min: 1, max: 8 })).toBe(8);
    expect(desiredReplicas({ lag: 1, secondsPerRecord: 0.001, targetDrainSeconds: 600, min: 2, max: 8 })).toBe(2);
  });
});

describe('local autoscaler on a burst (real broker, workers as processes)', () => {
  it('a burst of 200 tasks with a slowed infer scales infer up, drains the backlog, and scales back down without flapping', async () => {
    const chain = await deployChain({}, BURST);
    const ctx = testContext();
    const topology = await loadTopologyFile(BURST, chain.prefix);
    const scaler = new Autoscaler(topology, lagOfStage(ctx, topology), createLogger('autoscale-test', 'warn'), {
      intervalMs: 1000,
      upCooldownMs: 2000,
      downStabilizationMs: 4000,
      defaultSecondsPerRecord: 0.2,
      env: {
        ...process.env,
        SONIC_TOPIC_PREFIX: chain.prefix,
        SONIC_LOG_LEVEL: 'warn',
        SONIC_SESSION_TIMEOUT_MS: '6000',
        SONIC_HEARTBEAT_INTERVAL_MS: '1000',
        SONIC_REBALANCE_TIMEOUT_MS: '8000',
        BURST_INFER_MS: '200',
      },
      runArgs: ['--file', BURST],
    });
    scaler.start();
    try {
      // the minimum workers have joined their groups (dispatch: the active one and its standby)
      await waitForMinimumMembers(ctx, topology);
      const keys = await produce(chain, 200);
      await waitUntil(async () => (await readAll(chain.topic('out'), 400)).length >= 200, 150_000, 'the backlog to drain');
      await waitUntil(() => scaler.replicas('infer') === 1, 60_000, 'infer to scale back down');
      const outs = await readAll(chain.topic('out'));
      expect(new Set(outs.map((r) => r.key))).toEqual(new Set(keys));
      expect(outs).toHaveLength(200);
    } finally {
      await scaler.stop();
    }
    const infer = scaler.decisions.filter((d: Decision) => d.stage === 'infer');
    console.log(
      `infer decisions: ${infer
        .filter((d) => d.action !== 'hold')
        .map((d) => `${d.action} ${d.current}->${d.target} (lag ${d.lag})`)
        .join(', ')}`,
    );
    const ups = infer.filter((d) => d.action === 'up');
    const downs = infer.filter((d) => d.action === 'down');
    expect(ups.length).toBeGreaterThanOrEqual(1);
    expect(Math.max(...ups.map((d) => d.target))).toBeGreaterThanOrEqual(2);
    expect(Math.max(...infer.map((d) => Math.max(d.desired, d.target)))).toBeLessThanOrEqual(4); // never above the partitions
    expect(downs.length).toBeGreaterThanOrEqual(1);
    // no flapping: every scale-up comes before every scale-down
    expect(Math.max(...ups.map((d) => d.at))).toBeLessThan(Math.min(...downs.map((d) => d.at)));
    // each decision carries its inputs
    for (const d of infer)
      expect(d).toMatchObject({ lag: expect.any(Number), secondsPerRecord: expect.any(Number), targetDrainSeconds: 10, current: expect.any(Number) });
    // the measured service time came from the workers' metrics (the handler sleeps 200 ms), read on
    // the free ports the workers printed: not the default of 0.2 s
    const measured = infer[infer.length - 1]!.secondsPerRecord;
    expect(measured).not.toBe(0.2);
    expect(measured).toBeGreaterThan(0.15);
    expect(measured).toBeLessThan(1);
    // prep stayed at its single replica
    expect(scaler.decisions.filter((d) => d.stage === 'prep' && d.action !== 'hold')).toEqual([]);
  }, 300_000);
});
