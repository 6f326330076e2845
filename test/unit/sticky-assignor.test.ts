import { describe, expect, it } from 'vitest';
import { stickyAssignment } from '../../src/kafka/consumer.js';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const T = 'sonic.tasks.dispatched';
const count = (a: Map<string, Record<string, number[]>>) => new Map([...a].map(([m, t]) => [m, t[T]?.length ?? 0]));
const owners = (a: Map<string, Record<string, number[]>>) => {
  const o = new Map<number, string>();
  for (const [m, t] of a) for (const p of t[T] ?? []) {
    expect(o.has(p), `partition ${p} given twice`).toBe(false);
    o.set(p, m);
  }
  return o;
};

describe('sticky assignor', () => {
  it('deals evenly from nothing, every partition once', () => {
    const a = stickyAssignment(['c', 'a', 'b', 'd', 'e'], new Map(), { [T]: range(24) });
    expect(owners(a).size).toBe(24);
    expect([...count(a).values()].sort()).toEqual([4, 5, 5, 5, 5]);
  });

  it('a member that leaves: only its partitions move, the others keep every one they hold', () => {
    const first = stickyAssignment(['a', 'b', 'c', 'd'], new Map(), { [T]: range(24) });
    const held = new Map([...first].filter(([m]) => m !== 'c'));
    const next = stickyAssignment(['a', 'b', 'd'], held, { [T]: range(24) });
    for (const m of ['a', 'b', 'd']) for (const p of first.get(m)![T]!) expect(next.get(m)![T]).toContain(p);
    expect([...count(next).values()]).toEqual([8, 8, 8]);
    expect(owners(next).size).toBe(24);
  });

  it('a member that joins takes only its share, from those holding more', () => {
    const first = stickyAssignment(['a', 'b', 'c'], new Map(), { [T]: range(24) });
    const next = stickyAssignment(['a', 'b', 'c', 'z'], first, { [T]: range(24) });
    expect([...count(next).values()]).toEqual([6, 6, 6, 6]);
    let moved = 0;
    for (const m of ['a', 'b', 'c']) for (const p of next.get(m)![T]!) expect(first.get(m)![T]).toContain(p);
    for (const m of ['a', 'b', 'c']) moved += first.get(m)![T]!.length - next.get(m)![T]!.length;
    expect(moved).toBe(6);
  });

  it('a claim two members make, a partition that does not exist and junk are settled', () => {
    const held = new Map<string, Record<string, number[]>>([
      ['a', { [T]: [0, 1, 2, 99] }],
      ['b', { [T]: [2, 3] }],
      ['c', { other: [0] }],
    ]);
    const a = stickyAssignment(['a', 'b', 'c'], held, { [T]: range(6) });
    const o = owners(a);
    expect(o.size).toBe(6);
    // a claimed 2 first (by id) but holds its share with 0 and 1; b's claim to 2 lost to a's: 2 is dealt anew
    expect(a.get('a')![T]).toEqual([0, 1]);
    expect(o.get(3)).toBe('b');
    expect(o.get(2)).not.toBe('a');
    expect([...count(a).values()]).toEqual([2, 2, 2]);
    expect(a.get('c')!.other).toBeUndefined();
  });

  it('more members than partitions: some get none, none gets two', () => {
    const a = stickyAssignment(['a', 'b', 'c', 'd'], new Map(), { [T]: range(2) });
    expect([...count(a).values()].sort()).toEqual([0, 0, 1, 1]);
  });
});
