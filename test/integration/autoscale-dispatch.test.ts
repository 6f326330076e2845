/**
 * The local autoscaler on the dispatcher's burst pipeline (bench/fixtures/burst.ts with
 * BURST_DISPATCH=1): infer's own input lag stays at 1 + queuePerWorker per worker, so it is scaled
 * on the GPU-seconds the dispatcher reports (backlog + outstanding), above the 2 partitions
 * upstream, and back down once the burst is done, every task exactly once.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { Autoscaler, lagOfStage, type Decision } from '../../src/ops/autoscale.js';
import { deployChain, produce, readAll, countKeys, waitUntil } from '../helpers/chain.js';
import { ROOT, testContext } from '../helpers/infra.js';
import { waitForMinimumMembers } from '../helpers/wait.js';

const BURST = join(ROOT, 'bench', 'fixtures', 'burst.ts');
const TASKS = 60;
// 60 tasks of ~0.6 s: ~36 GPU-seconds against infer's targetDrainSeconds of 10 -> 4 workers, on 8 slots
const FIXTURE = { BURST_DISPATCH: '1', BURST_PARTITIONS: '2', BURST_SLOTS: '8', BURST_INFER_MS: '600' };

describe('local autoscaler behind a dispatcher (real broker, workers as processes)', () => {
  it("scales infer on the dispatcher's GPU-seconds above the upstream partitions, then back down; every task exactly once", async () => {
    const chain = await deployChain(FIXTURE, BURST);
    const ctx = testContext();
    const topology = chain.topology;
    expect(topology.topics[`${chain.prefix}.prepared`]!.partitions).toBe(2);
    expect(topology.topics[`${chain.prefix}.dispatched`]!.partitions).toBe(8);
    const scaler = new Autoscaler(topology, lagOfStage(ctx, topology), createLogger('autoscale-dispatch-test', 'warn'), {
      intervalMs: 1000,
      upCooldownMs: 2000,
      downStabilizationMs: 4000,
      defaultSecondsPerRecord: 0.6,
      dispatchQueuePerWorker: 1,
      env: {
        ...process.env,
        ...FIXTURE,
        SONIC_TOPIC_PREFIX: chain.prefix,
        SONIC_LOG_LEVEL: 'warn',
        SONIC_SESSION_TIMEOUT_MS: '6000',
        SONIC_HEARTBEAT_INTERVAL_MS: '1000',
        SONIC_REBALANCE_TIMEOUT_MS: '8000',
        SONIC_DISPATCH_QUEUE_PER_WORKER: '1',
      },
      runArgs: ['--file', BURST],
    });
    scaler.start();
    let peak = 0;
    try {
      // the minimum workers have joined their groups (dispatch: the active one and its standby)
      await waitForMinimumMembers(ctx, topology);
      const keys = await produce(chain, TASKS);
      await waitUntil(
        async () => {
          peak = Math.max(peak, scaler.replicas('infer'));
          return (await readAll(chain.topic('out'), 400)).length >= TASKS;
        },
        90_000,
        'the burst to be done',
      );
      await waitUntil(() => scaler.replicas('infer') === 1, 45_000, 'infer to scale back down');
      const counts = countKeys(await readAll(chain.topic('out')));
      expect([...counts.keys()].sort()).toEqual([...keys].sort());
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
    } finally {
      await scaler.stop();
    }
    const infer = scaler.decisions.filter((d: Decision) => d.stage === 'infer');
    console.log(
      `infer decisions: ${infer
        .filter((d) => d.action !== 'hold')
        .map(
          (d) =>
            `${d.rule} ${d.action} ${d.current}->${d.target} (backlog ${d.backlogSeconds?.toFixed(1)} s, out ${d.outstandingSeconds?.toFixed(1)} s, busy ${d.busyWorkers}, lag ${d.lag})`,
        )
        .join(', ')}; peak ${peak}`,
    );
    const ups = infer.filter((d) => d.action === 'up');
    const downs = infer.filter((d) => d.action === 'down');
    // on the dispatcher's figures, not the lag: lag alone (2 per worker) never asks for more than 1
    expect(ups.length).toBeGreaterThanOrEqual(1);
    expect(ups.every((d) => d.rule === 'work')).toBe(true);
    expect(Math.max(...ups.map((d) => d.target))).toBeGreaterThan(2);
    expect(peak).toBeGreaterThan(2);
    expect(Math.max(...infer.map((d) => Math.max(d.desired, d.target)))).toBeLessThanOrEqual(8); // the slots
    expect(Math.max(...infer.map((d) => d.backlogSeconds ?? 0))).toBeGreaterThan(20);
    for (const d of infer.filter((x) => x.rule === 'work')) {
      expect(d).toMatchObject({
        backlogSeconds: expect.any(Number),
        outstandingSeconds: expect.any(Number),
        busyWorkers: expect.any(Number),
        targetDrainSeconds: 10,
      });
      // never below the workers holding a dispatched record (within the slots)
      expect(d.desired).toBeGreaterThanOrEqual(Math.min(d.busyWorkers!, 8));
      expect(d.target).toBeGreaterThanOrEqual(Math.min(d.busyWorkers!, 8, d.current));
    }
    // some decision saw a busy worker (the burst is rendered)
    expect(Math.max(...infer.map((d) => d.busyWorkers ?? 0))).toBeGreaterThanOrEqual(1);
    expect(downs.length).toBeGreaterThanOrEqual(1);
    expect(Math.max(...ups.map((d) => d.at))).toBeLessThan(Math.min(...downs.map((d) => d.at)));
    // the dispatcher stayed at its two replicas (active and standby)
    expect(scaler.decisions.filter((d) => d.stage === 'dispatch' && d.action !== 'hold')).toEqual([]);
  }, 240_000);
});
