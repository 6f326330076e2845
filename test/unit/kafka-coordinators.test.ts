import { describe, expect, it } from 'vitest';
import { CoordinatorCache, isStaleCoordinatorError } from '../../src/kafka/coordinators.js';

describe('coordinator cache', () => {
  const owner = {};

  it('answers a repeated lookup from the cache, per owner and key, and shares a lookup in flight', async () => {
    const cache = new CoordinatorCache<string>();
    let loads = 0;
    const load = async () => `node-${++loads}`;
    const [a, b] = await Promise.all([cache.get(owner, 'txn:t1', load), cache.get(owner, 'txn:t1', load)]);
    expect([a, b, await cache.get(owner, 'txn:t1', load)]).toEqual(['node-1', 'node-1', 'node-1']);
    expect(await cache.get(owner, 'group:g1', load)).toBe('node-2');
    expect(await cache.get({}, 'txn:t1', load)).toBe('node-3');
  });

  it('looks up again after the time to live', async () => {
    let now = 0;
    const cache = new CoordinatorCache<number>(1000, () => now);
    let loads = 0;
    const load = async () => ++loads;
    await cache.get(owner, 'k', load);
    now = 999;
    expect(await cache.get(owner, 'k', load)).toBe(1);
    now = 1000;
    expect(await cache.get(owner, 'k', load)).toBe(2);
  });

  it('does not keep a failed lookup', async () => {
    const cache = new CoordinatorCache<string>();
    await expect(cache.get(owner, 'k', () => Promise.reject(new Error('no coordinator')))).rejects.toThrow('no coordinator');
    expect(await cache.get(owner, 'k', async () => 'found')).toBe('found');
  });

  it('a coordinator request failing with a stale-coordinator error forgets every cached answer; other errors do not', async () => {
    const cache = new CoordinatorCache<number>();
    let loads = 0;
    const load = async () => ++loads;
    await cache.get(owner, 'k', load);
    const failWith = (err: unknown) => cache.invalidating(async () => Promise.reject(err))();
    await expect(failWith(Object.assign(new Error('fenced'), { type: 'PRODUCER_FENCED' }))).rejects.toThrow('fenced');
    expect(await cache.get(owner, 'k', load)).toBe(1);
    await expect(failWith(Object.assign(new Error('moved'), { type: 'NOT_COORDINATOR_FOR_GROUP' }))).rejects.toThrow('moved');
    expect(await cache.get(owner, 'k', load)).toBe(2);
    expect(await cache.get(owner, 'k', load)).toBe(2);
    const ok = cache.invalidating(async (x: number) => x * 2);
    expect(await ok(21)).toBe(42);
  });

  it('knows the stale-coordinator errors', () => {
    expect(isStaleCoordinatorError({ type: 'GROUP_COORDINATOR_NOT_AVAILABLE' })).toBe(true);
    expect(isStaleCoordinatorError({ type: 'GROUP_LOAD_IN_PROGRESS' })).toBe(true);
    expect(isStaleCoordinatorError({ name: 'KafkaJSConnectionClosedError' })).toBe(true);
    expect(isStaleCoordinatorError({ code: 'ECONNREFUSED' })).toBe(true);
    expect(isStaleCoordinatorError({ type: 'CONCURRENT_TRANSACTIONS' })).toBe(false);
    expect(isStaleCoordinatorError(null)).toBe(false);
  });
});
