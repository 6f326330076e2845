/**
 * The one retrier of sonicflow (as kafkajs has one, `src/retry`): capped exponential backoff with
 * jitter, an optional attempt limit and deadline, an AbortSignal, a predicate deciding what is
 * worth another try and a hook that sees every wait. The clock is injectable, so that tests run
 * on a fake one. Every retry loop of sonicflow goes through `retry()`; a plain wait is `sleep()`
 * here (it rejects with the signal's own reason) or `setTimeout` of `node:timers/promises`.
 *
 * Jitter (see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015):
 * - `full`: a delay drawn from [0, min(max, initial * multiplier^n)] — spreads many clients best;
 * - `decorrelated`: a delay drawn from [initial, previous * 3], capped — never below `initial`,
 *   the choice for waits on a broker that is away;
 * - `none`: plain capped exponential growth.
 */

export type Jitter = 'full' | 'decorrelated' | 'none';

export interface BackoffOptions {
  /** First delay, ms (with full jitter the first delay's upper bound). */
  initialMs: number;
  /** Longest delay, ms. */
  maxMs: number;
  /** Growth per attempt for `full` and `none` (default 2). */
  multiplier?: number;
  /** Default `full`. */
  jitter?: Jitter;
  /** Uniform in [0, 1) (default Math.random). */
  random?: () => number;
}

/** Successive delays of one backoff; `reset()` after a success starts over. */
export class Backoff {
  private attempt = 0;
  private previous: number;

  constructor(private readonly options: BackoffOptions) {
    if (!(options.initialMs >= 0) || !(options.maxMs >= options.initialMs))
      throw new RangeError(`backoff needs 0 <= initialMs <= maxMs, got ${options.initialMs} and ${options.maxMs}`);
    this.previous = options.initialMs;
  }

  /** The next delay, ms (whole). */
  next(): number {
    const { initialMs, maxMs, multiplier = 2, jitter = 'full', random = Math.random } = this.options;
    const ceiling = Math.min(maxMs, initialMs * multiplier ** this.attempt);
    this.attempt += 1;
    let delay: number;
    if (jitter === 'none') delay = ceiling;
    else if (jitter === 'full') delay = random() * ceiling;
    else delay = Math.min(maxMs, initialMs + random() * (Math.max(initialMs, this.previous * 3) - initialMs));
    this.previous = delay;
    return Math.round(delay);
  }

  reset(): void {
    this.attempt = 0;
    this.previous = this.options.initialMs;
  }
}

/** Time as the retrier sees it. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** Waits `ms`; rejects with `signal.reason` as soon as the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const systemClock: Clock = { now: () => Date.now(), sleep };

/** Settles as `promise` does, or rejects with `signal.reason` when the signal aborts first (the promise then runs on, ignored). */
function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      promise.catch(() => undefined);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
  });
}

export interface RetryOptions extends BackoffOptions {
  /** Most attempts in all, the first included (default: no limit). */
  maxAttempts?: number;
  /** Gives up when the next attempt would start more than this many ms after the first one. */
  deadlineMs?: number;
  /** Ends the wait, and an attempt in progress (its outcome is then ignored): rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Whether `err` is worth another try (default: always). */
  retryIf?: (err: unknown, attempt: number) => boolean;
  /** Called before each wait: the error, the number of the attempt that failed (1 = first), the wait. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  clock?: Clock;
}

/**
 * Runs `fn` until it resolves; after each failure waits the next backoff delay. Rejects with the
 * last error when `retryIf` says no, the attempts are used up or the deadline would pass, and
 * with the signal's reason when it aborts.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { maxAttempts = Infinity, deadlineMs, signal, retryIf, onRetry, clock = systemClock } = options;
  const backoff = new Backoff(options);
  const started = clock.now();
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw signal.reason;
    try {
      return await abortable(fn(attempt), signal);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (attempt >= maxAttempts || (retryIf && !retryIf(err, attempt))) throw err;
      const delay = backoff.next();
      if (deadlineMs !== undefined && clock.now() + delay - started > deadlineMs) throw err;
      onRetry?.(err, attempt, delay);
      await clock.sleep(delay, signal);
    }
  }
}
