/**
 * Is the Kafka cluster reachable? One answer for readiness probes (`/readyz` of the API and of
 * stage processes), cheap enough to ask on every probe:
 *
 * - one long-lived admin connection, opened at the first check and replaced after a failure;
 * - each check is a Metadata round trip; its answer is kept for `cacheMs`;
 * - concurrent checks share one request (single flight), and a request never runs twice at once:
 *   a check while one is still under way waits for it (at most `timeoutMs` in all);
 * - a check answers false after `timeoutMs` (a frozen broker accepts connections and never
 *   answers), and at once while the request under way is already overdue.
 */
import type { Admin } from 'kafkajs';
import type { Logger } from '../core/logger.js';
import { kafkajsOf, type KafkaClient } from './handle.js';

export interface BrokerHealthOptions {
  /** How long an answer is kept, ms (default 1000). */
  cacheMs?: number;
  /** Longest a check waits for the broker, ms (default 2000). */
  timeoutMs?: number;
  logger?: Logger;
  now?: () => number;
}

export interface BrokerHealthStatus {
  ok: boolean;
  /** When the answer was found (epoch ms); 0 before the first check. */
  checkedAt: number;
  /** Why the last check failed. */
  error?: string;
}

export class BrokerHealth {
  private readonly cacheMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  private admin: Admin | undefined;
  private connected = false;
  private closed = false;
  private answer: BrokerHealthStatus = { ok: false, checkedAt: 0 };
  /** The request under way, and when it started. */
  private probing: { promise: Promise<boolean>; started: number } | undefined;
  /** The check under way (waiting for the request, at most `timeoutMs`). */
  private pending: Promise<boolean> | undefined;

  constructor(
    private readonly kafka: KafkaClient,
    options: BrokerHealthOptions = {},
  ) {
    this.cacheMs = options.cacheMs ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.now = options.now ?? Date.now;
    this.logger = options.logger;
  }

  /** The last answer, without asking. */
  get status(): BrokerHealthStatus {
    return { ...this.answer };
  }

  /** True when the broker answered a metadata request (now, or less than `cacheMs` ago). */
  check(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.answer.checkedAt > 0 && this.now() - this.answer.checkedAt < this.cacheMs) return Promise.resolve(this.answer.ok);
    if (this.pending) return this.pending;
    // a request from an earlier check still hangs past its time: the broker does not answer
    if (this.probing && this.now() - this.probing.started >= this.timeoutMs) {
      this.settle(false, `no answer within ${this.timeoutMs} ms`);
      return Promise.resolve(false);
    }
    if (!this.probing) {
      const started = { promise: this.probe(), started: this.now() };
      this.probing = started;
      void started.promise.finally(() => {
        if (this.probing === started) this.probing = undefined;
      });
    }
    const probe = this.probing.promise;
    const left = Math.max(0, this.timeoutMs - (this.now() - this.probing.started));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), left);
      timer.unref();
    });
    this.pending = Promise.race([probe, timeout]).then((ok) => {
      clearTimeout(timer);
      this.pending = undefined;
      // the request itself settles its answer; a timeout settles only while it still hangs
      if (!ok && this.probing?.promise === probe) this.settle(false, `no answer within ${this.timeoutMs} ms`);
      return ok;
    });
    return this.pending;
  }

  /** Closes the connection; later checks answer false. */
  async close(): Promise<void> {
    this.closed = true;
    await this.drop();
  }

  private settle(ok: boolean, error?: string): void {
    if (ok !== this.answer.ok && this.answer.checkedAt > 0) {
      if (ok) this.logger?.info('broker reachable again');
      else this.logger?.warn({ reason: error }, 'broker unreachable');
    }
    this.answer = { ok, checkedAt: this.now(), ...(error === undefined ? {} : { error }) };
  }

  /** One metadata round trip on the long-lived connection; never rejects. */
  private async probe(): Promise<boolean> {
    try {
      // no retries of our own: the next check is the retry
      this.admin ??= kafkajsOf(this.kafka).admin({ retry: { retries: 0 } });
      if (!this.connected) {
        await this.admin.connect();
        this.connected = true;
      }
      await this.admin.describeCluster();
      if (this.closed) return false;
      this.settle(true);
      return true;
    } catch (err) {
      this.settle(false, (err as Error).message);
      // a failed connection is not trusted again: the next check opens a fresh one
      await this.drop();
      return false;
    }
  }

  private async drop(): Promise<void> {
    const admin = this.admin;
    this.admin = undefined;
    this.connected = false;
    if (admin) await admin.disconnect().catch(() => undefined);
  }
}
