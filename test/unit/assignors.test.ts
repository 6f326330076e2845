import { describe, expect, it } from 'vitest';
import { coPartitionedAssignment, roundRobinAssignment, singletonAssignment, singletonUserData } from '../../src/kafka/assignors.js';

const plain = (m: Map<string, Record<string, number[]>>) => Object.fromEntries(m);

describe('co-partitioned assignor', () => {
  it('gives partition p of every topic to member p mod n (members by id), every member listed', () => {
    const a = coPartitionedAssignment(['m-b', 'm-a', 'm-c'], { in: [0, 1, 2, 3], retry: [0, 1, 2, 3] });
    expect(plain(a)).toEqual({ 'm-a': { in: [0, 3], retry: [0, 3] }, 'm-b': { in: [1], retry: [1] }, 'm-c': { in: [2], retry: [2] } });
    expect(plain(coPartitionedAssignment(['x', 'y', 'z', 'w'], { in: [0] }))).toEqual({ w: { in: [0] }, x: {}, y: {}, z: {} });
  });
});

describe('singleton assignor', () => {
  it('gives everything to the member holding it, else to the first by id', () => {
    const all = { in: [0, 1], retry: [0] };
    expect(plain(singletonAssignment([{ id: 'b' }, { id: 'a' }], all))).toEqual({ a: all, b: {} });
    expect(plain(singletonAssignment([{ id: 'a' }, { id: 'b', userData: singletonUserData(true) }], all))).toEqual({ a: {}, b: all });
    expect(plain(singletonAssignment([{ id: 'a', userData: singletonUserData(false) }, { id: 'b' }], all))).toEqual({ a: all, b: {} });
  });
});

describe('round robin (kafkajs)', () => {
  it('deals the partitions of the topics in order, one by one, to the members by id', () => {
    expect(plain(roundRobinAssignment(['b', 'a'], { in: [0, 1, 2], retry: [0, 1, 2] }))).toEqual({
      a: { in: [0, 2], retry: [1] },
      b: { in: [1], retry: [0, 2] },
    });
  });
});
