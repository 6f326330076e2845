import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { Slots, type Release } from '../../src/core/slots.js';

/** Lets pending promise callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('Slots: a FIFO semaphore', () => {
  it('grants up to its size at once, then makes acquirers wait', async () => {
    const slots = new Slots(2);
    const a = await slots.acquire();
    const b = await slots.acquire();
    let third: Release | undefined;
    void slots.acquire().then((r) => (third = r));
    await settle();
    expect(third).toBeUndefined();
    expect(slots.inUse).toBe(2);
    expect(slots.waiting).toBe(1);
    a();
    await settle();
    expect(third).toBeDefined();
    expect(slots.inUse).toBe(2);
    expect(slots.waiting).toBe(0);
    b();
    third!();
    expect(slots.inUse).toBe(0);
  });

  it('serves waiters in the order they came, and a newcomer does not overtake them', async () => {
    const slots = new Slots(1);
    const first = await slots.acquire();
    const order: string[] = [];
    const releases = new Map<string, Release>();
    for (const name of ['a', 'b', 'c'])
      void slots.acquire().then((r) => {
        order.push(name);
        releases.set(name, r);
      });
    first();
    // a newcomer while waiters are queued goes to the back, even at the moment a slot is handed over
    void slots.acquire().then((r) => {
      order.push('late');
      releases.set('late', r);
    });
    for (const name of ['a', 'b', 'c', 'late']) {
      await settle();
      expect(order.at(-1)).toBe(name);
      releases.get(name)!();
    }
    expect(order).toEqual(['a', 'b', 'c', 'late']);
    expect(slots.inUse).toBe(0);
  });

  it('never has more holders than its size under many concurrent users', async () => {
    const slots = new Slots(3);
    let holders = 0;
    let most = 0;
    let done = 0;
    const user = async (i: number) => {
      const release = await slots.acquire();
      holders += 1;
      most = Math.max(most, holders);
      await new Promise((r) => setTimeout(r, i % 3));
      holders -= 1;
      release();
      done += 1;
    };
    await Promise.all(Array.from({ length: 40 }, (_, i) => user(i)));
    expect(done).toBe(40);
    expect(most).toBe(3);
    expect(slots.inUse).toBe(0);
    expect(slots.waiting).toBe(0);
  });

  it('an abort while waiting rejects with the reason and removes the waiter; the slot goes to the next one', async () => {
    const slots = new Slots(1);
    const held = await slots.acquire();
    const stop = new AbortController();
    const revoked = new AbortController();
    const aborted = slots.acquire(stop.signal, revoked.signal);
    let next: Release | undefined;
    void slots.acquire(undefined, stop.signal).then((r) => (next = r));
    expect(slots.waiting).toBe(2);
    revoked.abort(new Error('revoked'));
    await expect(aborted).rejects.toThrow('revoked');
    expect(slots.waiting).toBe(1);
    held();
    await settle();
    expect(next).toBeDefined();
    // the granted waiter no longer listens: a later abort of its signal changes nothing
    stop.abort(new Error('stopping'));
    expect(slots.inUse).toBe(1);
    next!();
    expect(slots.inUse).toBe(0);
  });

  it('rejects at once for an already aborted signal, taking no slot', async () => {
    const slots = new Slots(1);
    await expect(slots.acquire(AbortSignal.abort(new Error('gone')))).rejects.toThrow('gone');
    expect(slots.inUse).toBe(0);
    const r = await slots.acquire();
    expect(slots.inUse).toBe(1);
    r();
  });

  it('a second release of the same slot is harmless: it frees nothing and grants nobody', async () => {
    const slots = new Slots(1);
    const a = await slots.acquire();
    let b: Release | undefined;
    let c: Release | undefined;
    void slots.acquire().then((r) => (b = r));
    void slots.acquire().then((r) => (c = r));
    a();
    a();
    await settle();
    expect(b).toBeDefined();
    expect(c).toBeUndefined();
    expect(slots.inUse).toBe(1);
    expect(slots.waiting).toBe(1);
    b!();
    b!();
    await settle();
    expect(c).toBeDefined();
    c!();
    c!();
    expect(slots.inUse).toBe(0);
    expect(slots.waiting).toBe(0);
  });

  it('removes its abort listeners once a waiter is served or aborted', async () => {
    const slots = new Slots(1);
    const stop = new AbortController();
    const revoked = new AbortController();
    const listeners = () => getEventListeners(stop.signal, 'abort').length + getEventListeners(revoked.signal, 'abort').length;
    const held = await slots.acquire(stop.signal, revoked.signal);
    expect(listeners()).toBe(0); // granted at once: nothing to listen for
    const served = slots.acquire(stop.signal, revoked.signal);
    const other = new AbortController();
    const gone = slots.acquire(stop.signal, other.signal);
    expect(listeners()).toBe(3);
    other.abort(new Error('revoked'));
    await expect(gone).rejects.toThrow('revoked');
    expect(listeners()).toBe(2);
    held();
    (await served)();
    expect(listeners()).toBe(0);
  });

  it('refuses a size below one', () => {
    expect(() => new Slots(0)).toThrow(RangeError);
    expect(() => new Slots(1.5)).toThrow(RangeError);
  });
});
