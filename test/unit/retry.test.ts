import { describe, expect, it } from 'vitest';
import { Backoff, retry, sleep, type Clock } from '../../src/core/retry.js';

/** A clock whose sleeps return at once and advance its time; every wait is recorded. */
function fakeClock(): Clock & { t: number; waits: number[] } {
  const clock = {
    t: 0,
    waits: [] as number[],
    now: () => clock.t,
    sleep: async (ms: number, signal?: AbortSignal) => {
      if (signal?.aborted) throw signal.reason;
      clock.waits.push(ms);
      clock.t += ms;
    },
  };
  return clock;
}

/** Fails `failures` times with `err`, then resolves with the attempt number. */
function flaky(failures: number, err: unknown = new Error('down')): { fn: (attempt: number) => Promise<number>; calls: () => number } {
  let calls = 0;
  return {
    fn: async (attempt) => {
      calls += 1;
      if (calls <= failures) throw err;
      return attempt;
    },
    calls: () => calls,
  };
}

describe('backoff', () => {
  it('without jitter doubles from the initial delay up to the cap, and starts over after reset()', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 'none' });
    expect(Array.from({ length: 6 }, () => b.next())).toEqual([100, 200, 400, 800, 1000, 1000]);
    b.reset();
    expect(b.next()).toBe(100);
  });

  it('full jitter draws each delay from [0, capped exponential]', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 'full', random: () => 0.5 });
    expect(Array.from({ length: 6 }, () => b.next())).toEqual([50, 100, 200, 400, 500, 500]);
    const top = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 'full', random: () => 0.999 });
    expect(Array.from({ length: 6 }, () => top.next())).toEqual([100, 200, 400, 799, 999, 999]);
  });

  it('decorrelated jitter stays within [initial, max] and grows from the previous delay', () => {
    const b = new Backoff({ initialMs: 500, maxMs: 10_000, jitter: 'decorrelated', random: () => 1 });
    // previous * 3 each time, capped
    expect(Array.from({ length: 5 }, () => b.next())).toEqual([1500, 4500, 10_000, 10_000, 10_000]);
    const low = new Backoff({ initialMs: 500, maxMs: 10_000, jitter: 'decorrelated', random: () => 0 });
    expect(Array.from({ length: 3 }, () => low.next())).toEqual([500, 500, 500]);
    const real = new Backoff({ initialMs: 500, maxMs: 10_000, jitter: 'decorrelated' });
    for (let i = 0; i < 200; i++) {
      const d = real.next();
      expect(d).toBeGreaterThanOrEqual(500);
      expect(d).toBeLessThanOrEqual(10_000);
    }
  });

  it('refuses a cap below the initial delay', () => {
    expect(() => new Backoff({ initialMs: 100, maxMs: 50 })).toThrow(RangeError);
  });
});

describe('retry', () => {
  it('retries until the call succeeds, telling onRetry each failure, its attempt and the wait', async () => {
    const clock = fakeClock();
    const { fn, calls } = flaky(3);
    const seen: [string, number, number][] = [];
    const result = await retry(fn, {
      initialMs: 100,
      maxMs: 1000,
      jitter: 'none',
      clock,
      onRetry: (err, attempt, delay) => seen.push([(err as Error).message, attempt, delay]),
    });
    expect(result).toBe(4);
    expect(calls()).toBe(4);
    expect(seen).toEqual([
      ['down', 1, 100],
      ['down', 2, 200],
      ['down', 3, 400],
    ]);
    expect(clock.waits).toEqual([100, 200, 400]);
  });

  it('gives up after maxAttempts with the last error', async () => {
    const clock = fakeClock();
    const { fn, calls } = flaky(10);
    await expect(retry(fn, { initialMs: 10, maxMs: 10, maxAttempts: 3, clock })).rejects.toThrow('down');
    expect(calls()).toBe(3);
    expect(clock.waits).toHaveLength(2);
  });

  it('does not retry what retryIf refuses', async () => {
    const clock = fakeClock();
    const fatal = Object.assign(new Error('fenced'), { type: 'PRODUCER_FENCED' });
    const { fn, calls } = flaky(5, fatal);
    await expect(retry(fn, { initialMs: 10, maxMs: 10, clock, retryIf: (e) => (e as { type?: string }).type === 'CONCURRENT_TRANSACTIONS' })).rejects.toBe(
      fatal,
    );
    expect(calls()).toBe(1);
    expect(clock.waits).toEqual([]);
  });

  it('stops before a wait that would end past the deadline', async () => {
    const clock = fakeClock();
    const { fn, calls } = flaky(100);
    // waits 100, 200, 400 fit in 1000 ms (700 in all); the next (800) would end at 1500
    await expect(retry(fn, { initialMs: 100, maxMs: 10_000, jitter: 'none', deadlineMs: 1000, clock })).rejects.toThrow('down');
    expect(clock.waits).toEqual([100, 200, 400]);
    expect(calls()).toBe(4);
  });

  it("ends a wait at once when the signal aborts, with the signal's reason", async () => {
    const controller = new AbortController();
    const { fn, calls } = flaky(100);
    const started = Date.now();
    let waiting!: () => void;
    const inWait = new Promise<void>((r) => (waiting = r));
    // onRetry is called just before the wait starts
    const running = retry(fn, { initialMs: 60_000, maxMs: 60_000, jitter: 'none', signal: controller.signal, onRetry: () => waiting() });
    await inWait;
    controller.abort(new Error('stopping'));
    await expect(running).rejects.toThrow('stopping');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(calls()).toBe(1);
  });

  it('ends an attempt that hangs when the signal aborts, and never starts one after', async () => {
    const controller = new AbortController();
    let calls = 0;
    const hang = (): Promise<never> => {
      calls += 1;
      return new Promise(() => undefined);
    };
    const running = retry(hang, { initialMs: 10, maxMs: 10, signal: controller.signal });
    controller.abort(new Error('stopping'));
    await expect(running).rejects.toThrow('stopping');
    expect(calls).toBe(1);
    await expect(retry(hang, { initialMs: 10, maxMs: 10, signal: controller.signal })).rejects.toThrow('stopping');
    expect(calls).toBe(1);
  });

  it('grows the waits of a long outage to the cap and no further (decorrelated jitter)', async () => {
    const clock = fakeClock();
    const { fn } = flaky(50);
    await retry(fn, { initialMs: 500, maxMs: 10_000, jitter: 'decorrelated', clock });
    expect(clock.waits).toHaveLength(50);
    expect(Math.min(...clock.waits)).toBeGreaterThanOrEqual(500);
    expect(Math.max(...clock.waits)).toBeLessThanOrEqual(10_000);
    // a minute of outage takes a handful of tries, not hundreds
    expect(clock.waits.slice(0, 20).reduce((a, b) => a + b, 0)).toBeGreaterThan(20 * 500);
  });
});

describe('sleep', () => {
  it('waits, and rejects with the reason as soon as the signal aborts', async () => {
    const t0 = Date.now();
    await sleep(20); // the sleep under test
    expect(Date.now() - t0).toBeGreaterThanOrEqual(15);
    const c = new AbortController();
    const s = sleep(60_000, c.signal);
    c.abort(new Error('bye'));
    await expect(s).rejects.toThrow('bye');
    await expect(sleep(10, c.signal)).rejects.toThrow('bye');
  });
});
