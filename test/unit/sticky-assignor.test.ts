import { describe, expect, it } from 'vitest';
import { readStickyClaim, stickyAssignment, type StickyMember } from '../../src/kafka/assignors.js';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const T = 'sonic.tasks.dispatched';
const R = 'sonic.infer.retry.1';
type Held = Map<string, Record<string, number[]>>;
/** Members subscribed to T (and R), with what they hold and have in hand. */
const assign = (ids: string[], held: Held = new Map(), partitions: Record<string, number[]> = { [T]: range(24) }, busy: Held = new Map()) =>
  stickyAssignment(
    ids.map((id): StickyMember => ({
      id,
      topics: [T, R],
      ...(held.has(id) || busy.has(id) ? { claim: { held: held.get(id) ?? {}, busy: busy.get(id) ?? {} } } : {}),
    })),
    partitions,
  );
const count = (a: Held) => new Map([...a].map(([m, t]) => [m, t[T]?.length ?? 0]));
const owners = (a: Held, topic = T) => {
  const o = new Map<number, string>();
  for (const [m, t] of a)
    for (const p of t[topic] ?? []) {
      expect(o.has(p), `partition ${p} given twice`).toBe(false);
      o.set(p, m);
    }
  return o;
};

describe('sticky assignor', () => {
  it('deals evenly from nothing, every partition once', () => {
    const a = assign(['c', 'a', 'b', 'd', 'e']);
    expect(owners(a).size).toBe(24);
    expect([...count(a).values()].sort()).toEqual([4, 5, 5, 5, 5]);
  });

  it('a member that leaves: only its partitions move, the others keep every one they hold', () => {
    const first = assign(['a', 'b', 'c', 'd']);
    const held = new Map([...first].filter(([m]) => m !== 'c'));
    const next = assign(['a', 'b', 'd'], held);
    for (const m of ['a', 'b', 'd']) for (const p of first.get(m)![T]!) expect(next.get(m)![T]).toContain(p);
    expect([...count(next).values()]).toEqual([8, 8, 8]);
    expect(owners(next).size).toBe(24);
  });

  it('a member that joins takes only its share, and never a partition with a record in hand', () => {
    const first = assign(['a', 'b', 'c']);
    // each holds 8 and works on its highest one (the one a plain trim would give up)
    const busy: Held = new Map(['a', 'b', 'c'].map((m) => [m, { [T]: [first.get(m)![T]!.at(-1)!] }]));
    const next = assign(['a', 'b', 'c', 'z'], first, undefined, busy);
    expect([...count(next).values()]).toEqual([6, 6, 6, 6]);
    let moved = 0;
    for (const m of ['a', 'b', 'c']) {
      for (const p of next.get(m)![T]!) expect(first.get(m)![T]).toContain(p);
      expect(next.get(m)![T]).toContain(busy.get(m)![T]![0]);
      moved += first.get(m)![T]!.length - next.get(m)![T]!.length;
    }
    expect(moved).toBe(6);
  });

  it("a dead member's partitions go to an idle member before a busy one", () => {
    const held: Held = new Map([
      ['b', { [T]: [0, 1] }],
      ['c', { [T]: [2, 3] }],
    ]);
    // b renders, c is idle; a (dead) held 4 and 5: with equal shares, the first orphan goes to c
    const next = assign(['b', 'c'], held, { [T]: range(6) }, new Map([['b', { [T]: [0] }]]));
    expect(owners(next).get(4)).toBe('c');
    expect([...count(next).values()]).toEqual([3, 3]);
  });

  it('a claim two members make: the one with it in hand wins; a partition that does not exist is dropped', () => {
    const held: Held = new Map([
      ['a', { [T]: [0, 1, 2, 99] }],
      ['b', { [T]: [2, 3] }],
    ]);
    const a = assign(['a', 'b', 'c'], held, { [T]: range(6) }, new Map([['b', { [T]: [2] }]]));
    expect(owners(a).get(2)).toBe('b');
    expect(a.get('a')![T]).toEqual([0, 1]);
    expect(owners(a).size).toBe(6);
  });

  it('each topic is dealt among the members that subscribe to it', () => {
    const members: StickyMember[] = [
      { id: 'old', topics: [T] },
      { id: 'new', topics: [T, R] },
    ];
    const a = stickyAssignment(members, { [T]: range(4), [R]: range(4) });
    expect(a.get('new')![R]).toEqual([0, 1, 2, 3]);
    expect(a.get('old')![R]).toBeUndefined();
    expect(owners(a).size).toBe(4);
  });

  it('more members than partitions: some get none, none gets two', () => {
    const a = assign(['a', 'b', 'c', 'd'], new Map(), { [T]: range(2) });
    expect([...count(a).values()].sort()).toEqual([0, 0, 1, 1]);
  });
});

describe('sticky claims', () => {
  const data = (x: unknown) => Buffer.from(JSON.stringify(x));
  it('a claim under another member id (expelled, rejoined under a new one) is stale: none', () => {
    expect(readStickyClaim(data({ memberId: 'm-old', held: { [T]: [1] }, busy: {} }), 'm-new')).toBeUndefined();
    expect(readStickyClaim(data({ memberId: 'm', held: { [T]: [1] }, busy: { [T]: [1] } }), 'm')).toEqual({ held: { [T]: [1] }, busy: { [T]: [1] } });
  });

  it('junk is no claim, and never throws: the leader must always be able to assign', () => {
    for (const junk of [
      Buffer.from('{'),
      Buffer.alloc(0),
      data(null),
      data(5),
      data({ memberId: 'm', held: { [T]: 5 } }),
      data({ memberId: 'm', held: { [T]: {} } }),
    ]) {
      const c = readStickyClaim(junk, 'm');
      expect(c === undefined || Object.values(c.held).every((ps) => Array.isArray(ps) && ps.length === 0)).toBe(true);
    }
    expect(readStickyClaim(data({ memberId: 'm', held: { [T]: [1, -1, 1.5, 'x', 2] } }), 'm')!.held[T]).toEqual([1, 2]);
  });
});
