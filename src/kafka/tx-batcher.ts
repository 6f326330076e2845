/**
 * Transactional group commit for the API: every submit's records (the task request and its
 * QUEUED status) are written in a Kafka transaction, so a read_committed reader sees both or
 * neither; submits that arrive while a transaction is open go together in the next one.
 *
 * Each submit has a deadline. A submit whose transaction has not reached its commit by then is
 * refused (BROKER_UNAVAILABLE) and can never become visible: the batch it was in is aborted
 * instead of committed, or, when the broker does not answer at all, left open and fenced by the
 * next producer with the same transactional id (or aborted by the coordinator at its timeout).
 * Only a commit already sent when the deadline passes has an unknown outcome; that submit is
 * refused with `details.inDoubt = true`, so the caller keeps what the records point at.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { KafkaClient } from './handle.js';
import { TxProducer, type OutRecord } from './io.js';

/** Options of {@link TxBatcher}. */
export interface TxBatcherOptions {
  /**
   * One transactional producer per id, taking turns, so that one waits for its commit markers
   * while another writes. Stable per API replica: a restarted replica fences its predecessor's
   * open transactions.
   */
  transactionalIds: string[];
  /** Broker-side transaction timeout, ms: how long an abandoned transaction can hold readers back. */
  transactionTimeoutMs: number;
  /** How long past its deadline a submit waits for a commit already sent before it is called in doubt, ms. */
  commitGraceMs?: number;
  /** Most submits in one transaction; 500 by default. */
  maxBatch?: number;
}

interface Pending {
  records: (OutRecord & { topic: string })[];
  resolve(): void;
  reject(err: SonicError): void;
  /** The deadline passed before the commit was sent: these records must never commit. */
  abandoned: boolean;
  /** The commit that holds these records has been sent. */
  committing: boolean;
  settled: boolean;
  timer?: NodeJS.Timeout;
}

/**
 * One transactional producer and the flush it runs. A producer cannot start its next transaction
 * before the coordinator has written the markers of the last one (it answers
 * CONCURRENT_TRANSACTIONS meanwhile), so several lanes take turns.
 */
class Lane {
  producer?: TxProducer;
  connecting?: Promise<TxProducer>;
  /** The flush that owns this lane now, if any. */
  flushing: symbol | undefined;
  /** Bumped whenever the producer is thrown away; a flush of an older generation must not touch the new one. */
  generation = 0;

  constructor(readonly transactionalId: string) {}
}

export class TxBatcher {
  private readonly queue: Pending[] = [];
  private readonly lanes: Lane[];
  private closed = false;

  constructor(
    private readonly kafka: KafkaClient,
    private readonly options: TxBatcherOptions,
    private readonly logger: Logger,
  ) {
    if (options.transactionalIds.length === 0) throw new Error('TxBatcher needs at least one transactional id');
    this.lanes = options.transactionalIds.map((id) => new Lane(id));
  }

  /**
   * Writes `records` in one transaction (with those of concurrent calls); resolves once committed.
   *
   * @throws SonicError `BROKER_UNAVAILABLE` (retryable) when not committed within `deadlineMs`;
   *   `details.inDoubt` is true when the commit was sent but not answered in time.
   */
  send(records: (OutRecord & { topic: string })[], deadlineMs: number): Promise<void> {
    if (this.closed) return Promise.reject(new SonicError('BROKER_UNAVAILABLE', 'the producer is closed', { safe: 'the service is shutting down' }));
    return new Promise<void>((resolve, reject) => {
      const p: Pending = { records, resolve, reject, abandoned: false, committing: false, settled: false };
      p.timer = setTimeout(() => this.expire(p), deadlineMs);
      this.queue.push(p);
      this.pump();
    });
  }

  /** Refuses what is queued, closes the producers. */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) this.settle(p, unavailable('the producer is closing', false));
    await Promise.all(this.lanes.map((l) => this.reset(l)));
  }

  private expire(p: Pending): void {
    if (p.settled) return;
    if (!p.committing) {
      p.abandoned = true;
      this.settle(p, unavailable('the broker did not take the task in time', false));
      const i = this.queue.indexOf(p);
      if (i >= 0) this.queue.splice(i, 1);
      return;
    }
    p.timer = setTimeout(() => this.settle(p, unavailable('the broker did not confirm the task in time', true)), this.options.commitGraceMs ?? 5000);
  }

  private settle(p: Pending, err?: SonicError): void {
    if (p.settled) return;
    p.settled = true;
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve();
  }

  /** Starts a flush on every idle lane while submits wait. */
  private pump(): void {
    for (const lane of this.lanes) {
      if (this.closed || this.queue.length === 0) return;
      if (!lane.flushing) this.start(lane);
    }
  }

  private start(lane: Lane): void {
    const batch = this.queue.splice(0, this.options.maxBatch ?? 500);
    const flush = Symbol('flush');
    lane.flushing = flush;
    const release = (): void => {
      if (lane.flushing !== flush) return;
      lane.flushing = undefined;
      this.pump();
    };
    // A flush that hangs (no broker answers) must not hold later submits: once every submit of
    // it has given up, detach it and start over with a new producer, which fences the old one.
    const watch = setInterval(() => {
      if (!batch.every((p) => p.abandoned)) return;
      clearInterval(watch);
      if (lane.flushing !== flush) return;
      this.logger.warn({ submits: batch.length, transactional_id: lane.transactionalId }, 'enqueue transaction abandoned: the broker does not answer');
      void this.reset(lane);
      release();
    }, 100);
    watch.unref();
    void this.flush(lane, batch, lane.generation).finally(() => {
      clearInterval(watch);
      release();
    });
  }

  private async flush(lane: Lane, batch: Pending[], generation: number): Promise<void> {
    try {
      const producer = await this.connect(lane);
      if (batch.every((p) => p.abandoned)) return;
      let requeue = false;
      await producer.inTransaction(async (_send, sendMany) => sendMany(batch.flatMap((p) => p.records)), {
        // decided right before the commit, with no await in between
        commit: () => {
          const live = batch.filter((p) => !p.abandoned);
          if (live.length < batch.length || generation !== lane.generation) {
            // some gave up: none of this transaction may become visible; the others go again
            requeue = true;
            return false;
          }
          for (const p of batch) p.committing = true;
          return true;
        },
      });
      if (requeue) this.queue.unshift(...batch.filter((p) => !p.abandoned && !p.settled));
      else for (const p of batch) this.settle(p);
    } catch (err) {
      const inDoubt = batch.some((p) => p.committing);
      this.logger.warn({ err, submits: batch.length, in_doubt: inDoubt, transactional_id: lane.transactionalId }, 'enqueue transaction failed');
      for (const p of batch) this.settle(p, unavailable(`the enqueue transaction failed: ${(err as Error).message}`, p.committing));
      if (generation === lane.generation) await this.reset(lane);
    }
  }

  private async connect(lane: Lane): Promise<TxProducer> {
    if (lane.producer) return lane.producer;
    const generation = lane.generation;
    lane.connecting ??= (async () => {
      // connect() runs InitProducerId: it fences a previous instance and aborts its open transaction
      const producer = await new TxProducer(this.kafka, lane.transactionalId, this.options.transactionTimeoutMs).connect();
      if (generation !== lane.generation) {
        // thrown away while connecting
        await producer.close().catch(() => undefined);
        throw new Error('the producer was reset while connecting');
      }
      lane.producer = producer;
      return producer;
    })().finally(() => {
      if (lane.generation === generation) lane.connecting = undefined;
    });
    return lane.connecting;
  }

  /** Throws a lane's producer away (its next transaction starts with a new one). */
  private async reset(lane: Lane): Promise<void> {
    lane.generation += 1;
    const p = lane.producer;
    lane.producer = undefined;
    lane.connecting = undefined;
    if (p) await Promise.race([p.close().catch(() => undefined), delay(2000, undefined, { ref: false })]);
  }
}

function unavailable(why: string, inDoubt: boolean): SonicError {
  const safe = inDoubt
    ? 'the task queue did not confirm the task in time; retry with the same Idempotency-Key to learn whether it was enqueued'
    : 'the task queue is unavailable; nothing was enqueued, retry later';
  return new SonicError('BROKER_UNAVAILABLE', why, { safe, details: { inDoubt } });
}
