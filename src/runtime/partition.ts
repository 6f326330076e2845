/**
 * One input partition as the stage runner holds it: the records fetched and not yet handled, the
 * fetch position and the committed offset, and the partition's own transactional producer. What
 * a partition does by itself lives here: taking fetched batches (and pausing its fetching when
 * enough are queued), fencing older owners before its first batch, committing a batch's results
 * with its input offset in one transaction, committing a position that moved over transaction
 * markers only, and going back to the committed offset after a failed transaction. When a
 * partition gets a worker, and what the worker does, is the runner's (`runner.ts`).
 */
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StageMetrics } from '../core/metrics.js';
import type { BatchInfo, TopicPartition } from '../kafka/consumer.js';
import type { InRecord, OutRecord, ProducedOffset } from '../kafka/io.js';
import type { InputOffset, StageConsumer } from '../kafka/port.js';
import type { Outcome, RawRecord } from './program.js';
import { FENCING_ERRORS, clampToLogStart, keyOf, type PartitionPosition, type PartitionRecovery } from './recovery.js';

/** A handled record: what one transaction writes for it. */
export interface Handled {
  raw: RawRecord;
  outcome: Outcome & { kind: 'ok' | 'retry' | 'dlq' };
}

/**
 * What a partition commits through: its own transactional producer (kafkajs: one per input
 * partition, a new owner fencing the old by its id), or its share of the stage's one producer (a
 * KIP-447 client: see `group-commit.ts`).
 */
export interface PartitionProducer {
  readonly transactionalId: string;
  /** The records and the input offset in one transaction; where the records landed. */
  publish(records: (OutRecord & { topic: string })[], input: InputOffset): Promise<ProducedOffset[]>;
  close(): Promise<void>;
}

/** What the partitions of one runner share with it. */
export interface PartitionHost {
  readonly groupId: string;
  readonly stage: string;
  readonly consumer: StageConsumer;
  readonly recovery: PartitionRecovery;
  readonly logger: Logger;
  readonly metrics: StageMetrics | undefined;
  /** Most records of one batch: a fetch that brings this many means a backlog. */
  readonly maxRecords: number;
  /** A partition stops fetching when this many records are queued. */
  readonly prefetch: number;
  /** Aborted when the runner stops: ends a way back to the committed offset. */
  readonly stopping: AbortSignal;
  /** The runner is running (neither starting nor draining nor down). */
  running(): boolean;
  /**
   * The partition's producer, connected: its own with the partition's stable id (connecting fences
   * older owners), or its share of the stage's (a KIP-447 client), which commits its batches only
   * while `p.owned`.
   */
  producerFor(p: Partition): Promise<PartitionProducer>;
  /** The partition may have work: give it a worker when one is free. */
  schedule(p: Partition): void;
  /**
   * A transaction of the partition failed (`writing`: the topics it wrote to), or its handler
   * threw an error that stops the stage: a refusal by the broker's authorizer or such an error
   * (see `stopsStage`) stops the runner (a deployment mistake, never retried); anything else
   * goes to {@link Partition.recover}.
   */
  failed(p: Partition, err: unknown, writing?: string[]): Promise<void>;
}

export class Partition implements PartitionPosition {
  readonly key: string;
  /** False once revoked: a later assignment of the same partition gets a new Partition. */
  owned = true;
  /** Fetched, not yet handled. */
  queue: RawRecord[] = [];
  /** When each queued record counts as written for the runner's oldest-first order (see `headTime`). */
  private readonly orderAt = new WeakMap<RawRecord, number>();
  /** Next offset to hand to a worker (local de-duplication of refetches); -1 unknown. */
  position = -1n;
  /** Offset this member last committed (or found committed); -1 unknown. */
  committed = -1n;
  /** A worker, or an offset-only commit, is at work on the partition. */
  busy = false;
  /** A log-start refresh is under way (a fetch came from beyond the position). */
  refreshing = false;
  /** Aborts the handler at work here: the partition was revoked or the runner stops. */
  readonly abort = new AbortController();
  /** This runner paused the partition's fetching (queue full, or rewinding after a failure). */
  private paused = false;
  /** Last offset of the fetched batch each queued record came from (markers included), by record offset. */
  private readonly batchEnds = new Map<string, bigint>();
  /** Producer initialised and committed offset re-read since this member got the partition. */
  private fenced = false;
  private fencing: Promise<void> | undefined;
  /** Going back to the committed offset after a failed transaction, and not there yet. */
  private recovering = false;
  private producer: PartitionProducer | undefined;
  /** Wakes the partition when its head record (a retry) becomes due. */
  private dueTimer: NodeJS.Timeout | undefined;
  /** Commits a position that moved over markers only, once the partition has been idle a moment. */
  private markerTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly tp: TopicPartition,
    private readonly host: PartitionHost,
  ) {
    this.key = keyOf(tp);
  }

  /** Queues a fetched batch; true when it was taken (the fetch position moves past it). */
  take(records: InRecord[], { endOffset, fetchedOffset, highWatermark }: BatchInfo): boolean {
    // paused: a fetch that was in flight when the queue filled up or a transaction failed
    if (!this.owned || this.paused || !this.host.running()) {
      this.pauseFetch();
      return false;
    }
    // fetched from beyond what this member holds (a fetch that raced a rewind, or kafkajs reset an
    // out-of-range position to the log start): never skip records, unless they no longer exist
    if (this.position >= 0n && BigInt(fetchedOffset) > this.position) {
      this.fetchFromPosition();
      this.refreshLogStart(BigInt(fetchedOffset));
      return false;
    }
    const fresh = records.filter((r) => this.position < 0n || BigInt(r.offset) >= this.position);
    if (fresh.length === 0) {
      if (this.position >= 0n) this.fetchFromPosition();
      return false;
    }
    clearTimeout(this.markerTimer);
    const now = Date.now();
    for (const r of fresh) this.orderAt.set(r, Math.min(r.timestamp ?? now, now));
    this.queue.push(...fresh);
    // committing past the batch's trailing markers leaves no phantom lag of 1 behind each transaction
    const last = fresh[fresh.length - 1]!;
    const end = BigInt(endOffset) > BigInt(last.offset) ? BigInt(endOffset) : BigInt(last.offset);
    this.batchEnds.set(last.offset, end);
    this.position = end + 1n;
    // A backlog (a full batch fetched, or a batch's worth more in the log) keeps fetching while
    // this batch is handled and committed. Caught up, fetching waits for the work instead: the
    // records that arrive meanwhile then come as one fetch and one batch, not as many small ones
    // that cost a fetch and a transaction each.
    const max = this.host.maxRecords;
    const backlog = fresh.length >= max || BigInt(highWatermark) - this.position >= BigInt(max);
    if (this.queue.length >= this.host.prefetch || !backlog) this.pauseFetch();
    return true;
  }

  /** Pauses the partition's fetching; a revoked Partition touches the consumer no more (a new one may hold the partition). */
  pauseFetch(): void {
    if (this.paused || !this.owned) return;
    this.paused = true;
    this.host.consumer.pause(this.tp);
  }

  /**
   * When the next queued record counts as written, for the runner's oldest-first order: its
   * timestamp, never later than when it was fetched (a writer whose clock runs ahead would
   * otherwise put it behind everything fetched after it); none queued: never.
   */
  headTime(): number {
    const head = this.queue[0];
    return head ? (this.orderAt.get(head) ?? head.timestamp ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY;
  }

  /** Resumes a paused partition whose queue has room again; fetching goes on from the position (kafkajs resolved or was seeked to it). */
  resumeFetch(): void {
    if (!this.paused || !this.owned || this.queue.length >= this.host.prefetch || !this.host.running()) return;
    this.paused = false;
    this.host.consumer.resume(this.tp);
  }

  /** The runner stops: no wake-up, no more fetching. */
  hold(): void {
    clearTimeout(this.dueTimer);
    this.pauseFetch();
  }

  /** Calls `wake` in `ms` (the head record is not due yet), replacing an earlier wake-up. */
  wakeIn(ms: number, wake: () => void): void {
    clearTimeout(this.dueTimer);
    this.dueTimer = setTimeout(wake, ms);
  }

  /** A worker or an offset-only commit is done: a revoked partition closes its producer; one still ours fetches on and looks for work. */
  afterWork(): void {
    if (!this.owned) {
      void this.closeProducer();
      return;
    }
    this.resumeFetch();
    this.host.schedule(this);
  }

  /** The partition is no longer ours: its timers stop, its handler is aborted, its producer closes once it is idle. */
  revoke(): void {
    this.owned = false;
    clearTimeout(this.dueTimer);
    clearTimeout(this.markerTimer);
    this.abort.abort(new SonicError('SHUTDOWN', `partition ${this.key} was revoked`));
    this.host.recovery.stalled.delete(this);
    // a pause would otherwise survive until the partition comes back
    this.host.consumer.resume(this.tp);
    if (!this.busy) void this.closeProducer();
    this.host.logger.info({ partition: this.key, busy: this.busy }, 'partition revoked');
  }

  /** The partition's next fetch starts at the position (in memory only: no commit). */
  private fetchFromPosition(): void {
    if (!this.owned) return;
    this.host.consumer.seek(this.tp, this.position.toString());
  }

  /** A fetch came from beyond the position: when the records from it on were deleted, go on from the log start. */
  private refreshLogStart(fetchedOffset: bigint): void {
    void this.host.recovery.logStartPast(this, fetchedOffset).then((low) => {
      if (low === undefined || !this.owned || this.recovering || this.position < 0n || low <= this.position) return;
      this.host.logger.warn(
        { partition: this.key, position: this.position.toString(), log_start: low.toString() },
        'records below the log start were deleted before they were handled; going on from the log start',
      );
      this.position = low;
      this.fetchFromPosition();
    });
  }

  /**
   * A fetch of markers only moved the partition's position. When the partition stays idle for a
   * moment, commit that position (an offset-only transaction), so that an idle stage shows lag 0.
   */
  onMarkersOnly(lastOffset: bigint): void {
    if (!this.owned || this.committed < 0n || lastOffset + 1n <= this.committed || !this.host.running()) return;
    clearTimeout(this.markerTimer);
    this.markerTimer = setTimeout(() => {
      if (!this.owned || this.busy || this.queue.length > 0 || !this.producer || !this.host.running() || lastOffset + 1n <= this.committed) return;
      const producer = this.producer;
      this.busy = true;
      producer
        .publish([], { groupId: this.host.groupId, topic: this.tp.topic, partition: this.tp.partition, offset: (lastOffset + 1n).toString() })
        .then(() => {
          this.committed = lastOffset + 1n;
          if (this.position < this.committed) this.position = this.committed;
        })
        .catch((err: unknown) => this.host.failed(this, err))
        .finally(() => {
          this.busy = false;
          this.afterWork();
        });
    }, 1000);
  }

  /**
   * Before the first batch after (re)gaining the partition: initialise its transactional producer
   * (which fences any older owner and aborts its open transaction), then re-read the committed
   * offset and drop the queued records an older owner committed meanwhile; fetching moves on to
   * the committed offset (never below the log start) when it lies past the position.
   */
  fence(): Promise<void> {
    if (this.fenced && this.producer) return Promise.resolve();
    // one fencing at a time: the worker and a store restore (runner.ts) may both ask for it
    this.fencing ??= this.doFence().finally(() => (this.fencing = undefined));
    return this.fencing;
  }

  private async doFence(): Promise<void> {
    this.producer = await this.host.producerFor(this);
    const committed = await this.host.consumer.committed(this.tp);
    this.committed = committed;
    if (committed >= 0n) {
      const before = this.queue.length;
      this.queue = this.queue.filter((r) => BigInt(r.offset) >= committed);
      if (this.position < committed) {
        this.position = clampToLogStart(committed, await this.host.recovery.logStart(this.tp));
        this.fetchFromPosition();
      }
      if (before !== this.queue.length)
        this.host.logger.info(
          { partition: this.key, skipped: before - this.queue.length, committed: committed.toString() },
          'skipped records committed by a previous owner',
        );
    }
    this.fenced = true;
    this.host.logger.debug({ partition: this.key, transactional_id: this.producer.transactionalId }, 'partition fenced');
  }

  /**
   * One transaction: the batch's records and the input offset past the batch (its trailing markers
   * included). Returns where the records landed; undefined when nothing was published.
   */
  async commit(batch: Handled[]): Promise<ProducedOffset[] | undefined> {
    if (!this.owned || !this.producer) {
      this.drop(batch.length, 'partition revoked before commit');
      return undefined;
    }
    const last = batch[batch.length - 1]!.raw;
    const next = (this.batchEnds.get(last.offset) ?? BigInt(last.offset)) + 1n;
    for (const b of batch) this.batchEnds.delete(b.raw.offset);
    const started = Date.now();
    const landed = await this.producer.publish(
      batch.flatMap((b) => b.outcome.records),
      { groupId: this.host.groupId, topic: this.tp.topic, partition: this.tp.partition, offset: next.toString() },
    );
    this.committed = next;
    const { metrics: m, stage } = this.host;
    if (m) {
      m.transactions.inc({ stage, result: 'commit' });
      m.transactionSeconds.observe({ stage }, (Date.now() - started) / 1000);
      m.batchRecords.observe({ stage }, batch.length);
      for (const b of batch) {
        m.records.inc({ stage, outcome: b.outcome.kind });
        if (b.outcome.skipped !== undefined) m.skipped.inc({ stage, reason: b.outcome.skipped });
      }
    }
    this.host.logger.debug({ partition: this.key, records: batch.length, last_offset: last.offset, transaction_ms: Date.now() - started }, 'batch committed');
    return landed;
  }

  /** Forgets the queue: `records` handled ones are not published (counted as dropped). */
  drop(records: number, why: string): void {
    this.host.metrics?.records.inc({ stage: this.host.stage, outcome: 'dropped' }, records);
    this.host.logger.info({ partition: this.key, records, why }, 'results dropped, not published');
    this.queue = [];
    this.batchEnds.clear();
  }

  /**
   * A failed transaction: kafkajs cannot reuse the producer, so close it; forget the queue and
   * go back to the committed offset, clamped to the log start (fetching stays paused until then:
   * prefetched records past it must not be taken). While the broker is away the way back is
   * retried with capped backoff for as long as the partition is ours: fetching on from the
   * prefetch position instead could skip records.
   */
  async recover(err: unknown): Promise<void> {
    this.recovering = true;
    const stillOurs = (): boolean => this.owned && this.host.running();
    try {
      this.pauseFetch();
      const type = (err as { type?: string }).type ?? '';
      this.host.metrics?.transactions.inc({ stage: this.host.stage, result: 'abort' });
      this.host.logger.warn({ err, partition: this.key, type }, 'transaction failed; the batch is aborted and will be redone from the committed offset');
      this.drop(this.queue.length, 'transaction failed');
      await this.closeProducer();
      this.position = -1n;
      const start = await this.host.recovery.startAfterFailure(
        this,
        FENCING_ERRORS.has(type),
        stillOurs,
        AbortSignal.any([this.abort.signal, this.host.stopping]),
      );
      if (start === undefined || !stillOurs()) return;
      this.position = start;
      this.fetchFromPosition();
    } catch (e) {
      // revoked or stopping: whoever gets the partition next starts from the committed offset
      if (stillOurs()) this.host.logger.warn({ err: e, partition: this.key }, 'gave up going back to the committed offset');
    } finally {
      this.recovering = false;
    }
  }

  async closeProducer(): Promise<void> {
    const p = this.producer;
    this.producer = undefined;
    this.fenced = false;
    if (p) await p.close().catch((err: unknown) => this.host.logger.debug({ err }, 'producer close failed'));
  }
}
