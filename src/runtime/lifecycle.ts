/**
 * The stage process lifecycle as an explicit state machine. Every transition is logged; an
 * illegal one throws, so a bug cannot silently resurrect a stopped runner.
 */
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

export type LifecycleState = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

const ALLOWED: Record<LifecycleState, readonly LifecycleState[]> = {
  starting: ['running', 'draining', 'failed'],
  running: ['draining', 'failed'],
  draining: ['stopped', 'failed'],
  stopped: [],
  failed: [],
};

export class Lifecycle {
  private current: LifecycleState = 'starting';
  private readonly listeners: ((s: LifecycleState) => void)[] = [];

  constructor(private readonly logger: Logger) {
    logger.info({ state: this.current }, 'lifecycle state');
  }

  get state(): LifecycleState {
    return this.current;
  }

  /** Moves to `next`; throws INTERNAL on a transition the table does not allow. */
  to(next: LifecycleState, reason?: string): void {
    if (!ALLOWED[this.current].includes(next)) {
      throw new SonicError('INTERNAL', `illegal lifecycle transition ${this.current} -> ${next}`);
    }
    const from = this.current;
    this.current = next;
    this.logger.info({ from, state: next, reason }, 'lifecycle transition');
    for (const l of this.listeners) {
      try {
        l(next);
      } catch (err) {
        this.logger.warn({ err }, 'lifecycle listener failed');
      }
    }
  }

  /** True when `next` is allowed from here. */
  can(next: LifecycleState): boolean {
    return ALLOWED[this.current].includes(next);
  }

  onChange(listener: (s: LifecycleState) => void): void {
    this.listeners.push(listener);
  }
}
