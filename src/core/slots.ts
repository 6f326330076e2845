/**
 * A counting semaphore with FIFO waiters: at most `size` holders at once; a released slot goes to
 * the longest waiting acquirer. The stage runner bounds its handlers with it, so that a worker
 * can commit its batch while another worker's handler already runs.
 */

/** Gives a slot back; calling it again does nothing. */
export type Release = () => void;

interface Waiter {
  grant: () => void;
  fail: (reason: unknown) => void;
}

export class Slots {
  private held = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`slots: size must be a positive integer, got ${size}`);
  }

  /** Slots held now. */
  get inUse(): number {
    return this.held;
  }

  /** Acquirers waiting for a slot. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Resolves with a release once a slot is held (at once when one is free and nobody waits).
   * Rejects with the signal's reason when any signal aborts first; the waiter is then gone and
   * holds nothing.
   */
  acquire(...signals: (AbortSignal | undefined)[]): Promise<Release> {
    const live = signals.filter((s): s is AbortSignal => s !== undefined);
    const aborted = live.find((s) => s.aborted);
    if (aborted) return Promise.reject(aborted.reason as Error);
    if (this.held < this.size && this.waiters.length === 0) {
      this.held += 1;
      return Promise.resolve(this.releaser());
    }
    return new Promise<Release>((resolve, reject) => {
      const detach = (): void => {
        for (const s of live) s.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        // the slot is handed over as it is released: `held` stays the same
        grant: () => {
          detach();
          resolve(this.releaser());
        },
        fail: (reason) => {
          detach();
          reject(reason as Error);
        },
      };
      const onAbort = (event: Event): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        waiter.fail((event.target as AbortSignal).reason);
      };
      for (const s of live) s.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.held -= 1;
    };
  }
}
