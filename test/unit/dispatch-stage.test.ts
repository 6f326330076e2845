import { describe, expect, it } from 'vitest';
import { dispatch, estimatedGpuSeconds, GPU_SECONDS_PER_AUDIO_SECOND } from '../../src/stages/dispatch.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { validateTopology } from '../../src/runtime/validate.js';
import { boundedCost, busyMembers, MAX_COST_SECONDS } from '../../src/runtime/dispatcher.js';

const task = (audio: number, params: Partial<{ inference_steps: number; min_resolution: number }> = {}, priority = 0) =>
  ({ audio_duration_s: audio, request: { priority, params: { inference_steps: 25, min_resolution: 512, ...params } } }) as never;

describe('the sonic dispatch stage', () => {
  it('estimates a render from the audio, the steps and the pixels of a frame', () => {
    const ten = estimatedGpuSeconds(task(10));
    expect(ten).toBeCloseTo(5 + 10 * GPU_SECONDS_PER_AUDIO_SECOND);
    // twice the audio: about twice the work; a long task weighs more than many short ones' fixed cost
    expect(estimatedGpuSeconds(task(20)) - 5).toBeCloseTo(2 * (ten - 5));
    expect(estimatedGpuSeconds(task(10, { inference_steps: 50 })) - 5).toBeCloseTo(2 * (ten - 5));
    expect(estimatedGpuSeconds(task(10, { min_resolution: 256 })) - 5).toBeCloseTo((ten - 5) / 4);
    // a record that lies (no duration, nonsense parameters) still gets a finite, positive cost
    for (const bad of [task(Number.NaN), task(-3), task(10, { inference_steps: 0, min_resolution: -1 })]) {
      const c = estimatedGpuSeconds(bad);
      expect(Number.isFinite(c) && c > 0).toBe(true);
    }
  });

  it("orders by the request's priority and hands the tasks to infer's workers", () => {
    expect(dispatch.dispatch?.priority?.(task(1, {}, 7) as never)).toBe(7);
    expect(dispatch.dispatch?.workers).toBe('infer');
    const t = sonicTopology();
    const d = t.stages.find((s) => s.name === 'dispatch')!;
    const infer = t.stages.find((s) => s.name === 'infer')!;
    expect(d.input).toBe('sonic.tasks.prepared');
    expect(Object.values(d.outputs)).toEqual([infer.input]);
    // every infer replica can hold a partition of its input
    expect(t.topics[infer.input]!.partitions).toBeGreaterThanOrEqual(infer.scaling.maxReplicas);
    expect(d.stores.map((s) => s.name)).toEqual(['backlog']);
  });

  it('refuses a dispatcher whose workers do not read its sink, or do not exist', () => {
    const t = sonicTopology();
    const wrong = { ...t, stages: t.stages.map((s) => (s.name === 'infer' ? { ...s, input: 'sonic.tasks.prepared' } : s)) };
    expect(
      validateTopology(wrong)
        .map((p) => p.message)
        .join('\n'),
    ).toMatch(/dispatcher dispatch writes sonic\.tasks\.dispatched, but its workers \(stage infer\) read sonic\.tasks\.prepared/);
    const gone = { ...t, stages: t.stages.filter((s) => s.name !== 'infer') };
    expect(
      validateTopology(gone)
        .map((p) => p.message)
        .join('\n'),
    ).toMatch(/dispatches to stage infer, which is not declared/);
    expect(validateTopology(t)).toEqual([]);
  });

  it('a cost that lies is bounded: negative, NaN, a string -> 1; absurd -> a week', () => {
    for (const bad of [-100, Number.NaN, Number.POSITIVE_INFINITY, '5', null, undefined]) expect(boundedCost(bad)).toBe(1);
    expect(boundedCost(1e17)).toBe(MAX_COST_SECONDS);
    expect(boundedCost(0)).toBe(0);
    expect(boundedCost(12.5)).toBe(12.5);
  });

  it("the backlog's changelog rolls small segments and compacts early: a takeover reads little more than what waits", () => {
    const t = sonicTopology();
    expect(t.topics['sonic.dispatch.backlog-changelog']!.configs).toMatchObject({
      'cleanup.policy': 'compact',
      'segment.ms': '600000',
      'min.cleanable.dirty.ratio': '0.1',
    });
    // other stores keep the broker's defaults
    expect(t.topics['sonic.validate.seen-changelog']!.configs['segment.ms']).not.toBe('600000');
  });
});

describe("the dispatcher's busy workers (sonicflow_dispatch_busy_workers)", () => {
  it('counts the members holding a partition with a record dispatched and not yet committed', () => {
    const members = [
      { memberId: 'a', partitions: [0, 1] },
      { memberId: 'b', partitions: [2] },
      { memberId: 'c', partitions: [3, 4] },
      { memberId: 'd', partitions: [5] },
    ];
    // a: one on partition 1; b: none left (committed); c: two on partition 4; d: nothing dispatched
    const out = new Map<number, unknown[]>([
      [0, []],
      [1, [{}]],
      [2, []],
      [4, [{}, {}]],
    ]);
    expect(busyMembers(members, out)).toBe(2);
    expect(busyMembers(members, new Map())).toBe(0);
    // records on a partition no member holds (a rebalance): nobody to count
    expect(busyMembers(members, new Map([[9, [{}]]]))).toBe(0);
    expect(busyMembers([], out)).toBe(0);
  });
});
