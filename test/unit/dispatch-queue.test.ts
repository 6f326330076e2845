import { describe, expect, it } from 'vitest';
import { DispatchQueue, effectivePriority, planDispatch, type Waiting } from '../../src/runtime/dispatch-queue.js';

const w = (id: string, o: Partial<Waiting> = {}): Waiting => ({ id, cost: 1, priority: 0, enqueuedAt: 0, partition: 0, offset: BigInt(id.length), ...o });

describe('dispatch order', () => {
  it('higher priority first, then the longest estimated work, then the oldest', () => {
    const q = new DispatchQueue(60_000);
    q.add(w('low-long', { priority: 0, cost: 100 }));
    q.add(w('high-short', { priority: 5, cost: 1 }));
    q.add(w('high-long', { priority: 5, cost: 10 }));
    q.add(w('high-long-newer', { priority: 5, cost: 10, enqueuedAt: 5 }));
    expect(q.take(4, 10).map((x) => x.id)).toEqual(['high-long', 'high-long-newer', 'high-short', 'low-long']);
    expect(q.size).toBe(0);
  });

  it('a waiting record gains one priority level per aging interval: priority 0 overtakes a fresh 9 after 9 intervals, never starved', () => {
    const q = new DispatchQueue(1000);
    q.add(w('old-low', { priority: 0, enqueuedAt: 0 }));
    // at 8.9 s it is still behind a fresh priority-9 record, at 10 s ahead of it
    q.add(w('fresh-high', { priority: 9, enqueuedAt: 8_900 }));
    expect(q.take(1, 8_900)[0]!.id).toBe('fresh-high');
    q.add(w('fresh-high-2', { priority: 9, enqueuedAt: 10_000 }));
    expect(effectivePriority({ priority: 0, enqueuedAt: 0 }, 10_000, 1000)).toBe(10);
    expect(q.take(1, 10_000)[0]!.id).toBe('old-low');
  });

  it('aging 0 never changes the order; take(n) never returns more than it holds', () => {
    const q = new DispatchQueue(0);
    q.add(w('a', { priority: 1, enqueuedAt: 0 }));
    q.add(w('b', { priority: 2, enqueuedAt: 1e9 }));
    expect(q.take(5, 2e9).map((x) => x.id)).toEqual(['b', 'a']);
    expect(q.take(1, 0)).toEqual([]);
  });
});

describe('where records go', () => {
  const workers = [
    { memberId: 'm-a', partitions: [0, 1, 2] },
    { memberId: 'm-b', partitions: [3, 4, 5] },
  ];
  /** n records of estimated cost c each. */
  const costs = (n: number, c = 1) => Array.from({ length: n }, () => c);
  /** Per partition, the costs of its outstanding records. */
  const held = (entries: [number, number[]][]) => new Map(entries);

  it('idle workers first, one record each, then the queue slot of each; never beyond capacity', () => {
    const plan = planDispatch(workers, new Map(), { capacity: 2 }, costs(10));
    expect(plan).toHaveLength(4);
    // first record to each idle worker, then the second to another partition of each
    expect(plan.slice(0, 2).sort()).toEqual([0, 3]);
    expect(plan.slice(2).sort()).toEqual([1, 4]);
  });

  it('a busy worker (outstanding records on its partitions) gets nothing until it has room', () => {
    const plan = planDispatch(
      workers,
      held([
        [0, [1]],
        [1, [1]],
      ]),
      { capacity: 2 },
      costs(10),
    );
    expect(plan.sort()).toEqual([3, 4]);
    expect(
      planDispatch(
        workers,
        held([
          [0, [1, 1]],
          [4, [1, 1]],
        ]),
        { capacity: 2 },
        costs(10),
      ),
    ).toEqual([]);
  });

  it('a worker holding no partition gets nothing; no workers, no plan', () => {
    expect(planDispatch([{ memberId: 'x', partitions: [] }], new Map(), { capacity: 2 }, costs(3))).toEqual([]);
    expect(planDispatch([], new Map(), { capacity: 2 }, costs(3))).toEqual([]);
  });

  it('the worker free first gets the next record, whatever the member order', () => {
    const two = [
      { memberId: 'm-a', partitions: [0] },
      { memberId: 'm-b', partitions: [1] },
    ];
    expect(planDispatch(two, held([[0, [1]]]), { capacity: 3 }, costs(1))).toEqual([1]);
    // both hold one record, m-b's is estimated longer: m-a will be free first
    expect(
      planDispatch(
        two,
        held([
          [0, [1]],
          [1, [5]],
        ]),
        { capacity: 3 },
        costs(1),
      ),
    ).toEqual([0]);
  });

  it('short tasks: a worker gets more than its capacity while what it holds lasts less than the lead, up to maxPerWorker', () => {
    // 1/16 s tasks, a 0.5 s lead: each of the two workers gets eight, not two
    const plan = planDispatch(workers, new Map(), { capacity: 2, lead: 0.5 }, costs(40, 0.0625));
    expect(plan).toHaveLength(16);
    expect(plan.filter((p) => p < 3)).toHaveLength(8);
    // capped by maxPerWorker however short
    expect(planDispatch(workers, new Map(), { capacity: 2, lead: 0.5, maxPerWorker: 4 }, costs(40, 0.001))).toHaveLength(8);
    // long tasks (a GPU render, estimated in seconds): capacity only, the lead changes nothing
    expect(planDispatch(workers, new Map(), { capacity: 2, lead: 0.5 }, costs(40, 30))).toHaveLength(4);
    // a worker already holding the lead's worth gets nothing more beyond capacity
    expect(planDispatch(workers, held([[0, [0.3, 0.3]]]), { capacity: 2, lead: 0.5 }, costs(40, 0.05)).filter((p) => p < 3)).toEqual([]);
  });
});

describe('backlog cost total', () => {
  it('follows adds, replacements, deletes, takes and clear; an empty queue is exactly 0', () => {
    const q = new DispatchQueue(0);
    q.add(w('a', { cost: 0.1 }));
    q.add(w('b', { cost: 0.2 }));
    q.add(w('c', { cost: 3 }));
    expect(q.cost).toBeCloseTo(3.3);
    q.add(w('c', { cost: 5 })); // the same record again: replaced, not added twice
    expect(q.cost).toBeCloseTo(5.3);
    expect(q.delete('missing')).toBe(false);
    expect(q.delete('a')).toBe(true);
    expect(q.cost).toBeCloseTo(5.2);
    expect(q.take(1, 0).map((x) => x.id)).toEqual(['c']);
    expect(q.cost).toBeCloseTo(0.2);
    q.take(1, 0);
    expect(q.cost).toBe(0);
    q.add(w('d', { cost: 2 }));
    q.clear();
    expect(q.cost).toBe(0);
  });
});
