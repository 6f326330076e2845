/**
 * The stage runner: one stage as one consumer/producer process with exactly-once hops.
 *
 * - Work first, then a short transaction: fetched records are queued per partition and handled
 *   outside kafkajs' fetch loop (which keeps heartbeating), then one transaction per batch writes
 *   the outputs, status events, retry/DLQ records and the input offset.
 * - Prefetch: a partition keeps fetching while its queue holds less than two batches, so the next
 *   batch is already here when a transaction commits; a fuller queue pauses the partition until
 *   it drains. Fetch positions move in memory only; the committed offset moves only in a
 *   transaction, so prefetched records a crash or rebalance loses are simply fetched again.
 * - Zombie fencing without KIP-447: one transactional producer per input partition with a stable
 *   id. Before its first batch, a new owner initialises that producer (fencing any old owner) and
 *   re-reads the committed offset, dropping records a previous owner already committed.
 * - Retry tiers: a retry partition's head record is not handled before it is due; the partition
 *   stays paused (heartbeats go on) and a timer wakes it.
 * - Broker outages: the runner waits for the broker at start, its consumer restarts itself when
 *   kafkajs gives up, and a partition whose transaction failed keeps trying to go back to its
 *   committed offset (clamped to the log start) with capped backoff while the broker is away.
 */
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StageMetrics } from '../core/metrics.js';
import type { BackoffOptions } from '../core/retry.js';
import { untilConnected, type Kafka } from '../kafka/client.js';
import { GroupConsumer, type Assignment, type BatchInfo } from '../kafka/consumer.js';
import { PlainProducer, TxProducer, type InRecord } from '../kafka/io.js';
import type { Codec } from '../serde/codec.js';
import { Lifecycle } from './lifecycle.js';
import { FENCING_ERRORS, PartitionRecovery, keyOf, newWork, type PartitionWork } from './partition.js';
import { StageProgram, type Outcome, type RawRecord } from './program.js';
import type { StageDefinition } from './stage.js';
import type { StageSpec, Topology } from './topology.js';

export interface RunnerOptions {
  clientId: string;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  fetchMaxWaitMs: number;
  transactionTimeoutMs: number;
  drainTimeoutMs: number;
  /** Override the topology's batch bounds and concurrency (0 / -1: keep). */
  batchMaxRecords?: number;
  batchMaxWaitMs?: number;
  concurrency?: number;
  /** Waits between tries while the broker is away: connecting, restarting the consumer, going back to a committed offset. */
  reconnect: BackoffOptions;
}

export class StageRunner {
  readonly lifecycle: Lifecycle;
  readonly groupId: string;
  private readonly program: StageProgram;
  private readonly consumer: GroupConsumer;
  private readonly progress: PlainProducer;
  private readonly parts = new Map<string, PartitionWork>();
  /** Partitions with records to handle, waiting for a worker slot. */
  private readonly runnable: PartitionWork[] = [];
  private readonly maxRecords: number;
  private readonly maxWaitMs: number;
  private readonly concurrency: number;
  /** A partition stops fetching when this many records are queued. */
  private readonly prefetch: number;
  private readonly recovery: PartitionRecovery;
  /** Aborted by stop(): ends the waits for the broker. */
  private readonly stopping = new AbortController();
  private active = 0;
  private memberId = '';
  private idle: (() => void) | undefined;
  private failure: ((err: Error) => void) | undefined;
  /** Settles when the runner has stopped (resolves) or failed (rejects). */
  readonly done: Promise<void>;

  constructor(
    private readonly kafka: Kafka,
    codec: Codec,
    readonly topology: Topology,
    readonly stage: StageSpec,
    definition: StageDefinition,
    private readonly logger: Logger,
    private readonly options: RunnerOptions,
    private readonly metrics?: StageMetrics,
  ) {
    this.lifecycle = new Lifecycle(logger);
    this.groupId = `${options.clientId}.${topology.prefix}.${stage.name}`;
    this.maxRecords = options.batchMaxRecords || stage.batch.maxRecords;
    this.maxWaitMs = options.batchMaxWaitMs !== undefined && options.batchMaxWaitMs >= 0 ? options.batchMaxWaitMs : stage.batch.maxWaitMs;
    this.concurrency = options.concurrency || stage.concurrency;
    this.prefetch = 2 * this.maxRecords;
    this.progress = new PlainProducer(kafka);
    this.program = new StageProgram(topology, stage, definition, codec, {
      logger,
      onProgress: (r) => void this.progress.send(r.topic, [r]).catch((err: unknown) => logger.warn({ err }, 'progress event not sent')),
    });
    this.consumer = new GroupConsumer(kafka, {
      groupId: this.groupId,
      sessionTimeoutMs: options.sessionTimeoutMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      rebalanceTimeoutMs: options.rebalanceTimeoutMs,
      maxWaitMs: options.fetchMaxWaitMs,
      reconnect: options.reconnect,
      logger,
    });
    this.recovery = new PartitionRecovery(this.consumer, logger, options);
    // every series exists from the start, so that increase() sees the first retry or dead letter
    for (const outcome of ['ok', 'retry', 'dlq', 'dropped']) metrics?.records.inc({ stage: stage.name, outcome }, 0);
    for (const result of ['commit', 'abort']) metrics?.transactions.inc({ stage: stage.name, result }, 0);
    this.done = new Promise<void>((resolve, reject) => {
      this.lifecycle.onChange((s) => {
        if (s === 'stopped') resolve();
      });
      this.failure = reject;
    });
    this.done.catch(() => undefined);
  }

  /**
   * Connects (waiting for the broker as long as it takes, until stop()), joins the group and
   * starts handling records. Resolves at once when stop() ends the wait.
   */
  async start(): Promise<void> {
    const signal = this.stopping.signal;
    const topics = [this.stage.input, ...this.stage.retry.topics];
    try {
      await untilConnected('producer', () => this.progress.connect(), { backoff: this.options.reconnect, logger: this.logger, signal });
      await this.consumer.start(
        topics,
        {
          // running before the consumer runs: batches may arrive as soon as it has joined
          onConnected: () => {
            if (this.lifecycle.state === 'starting') this.lifecycle.to('running');
          },
          onAssignment: (a, info) => this.onAssignment(a, info.memberId),
          onBatch: (topic, partition, records, info) => this.onBatch(topic, partition, records, info),
          onMarkersOnly: (topic, partition, last) => this.onMarkersOnly(topic, partition, BigInt(last)),
          onCrash: (err) => void this.fail(err),
        },
        signal,
      );
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    }
    this.logger.info(
      { group: this.groupId, topics, batch_max_records: this.maxRecords, batch_max_wait_ms: this.maxWaitMs, concurrency: this.concurrency },
      'stage running',
    );
  }

  /**
   * Ready: running, a member of the group, and no partition stuck going back to its committed
   * offset. A broker outage makes it unready (the consumer restarts, recoveries fail) until the
   * broker is back and the group is joined again.
   */
  get ready(): boolean {
    return this.lifecycle.state === 'running' && this.consumer.joined && this.recovery.stalled.size === 0;
  }

  /**
   * Stops fetching, lets in-flight work finish and commit for up to the drain timeout, then
   * abandons what is left (uncommitted, so the next owner redoes it), leaves the group and closes.
   */
  async stop(reason: string): Promise<void> {
    if (!this.lifecycle.can('draining')) return this.done;
    this.lifecycle.to('draining', reason);
    this.stopping.abort(new SonicError('SHUTDOWN', 'stage is stopping'));
    for (const w of this.parts.values()) {
      clearTimeout(w.timer);
      this.pauseFetch(w);
    }
    this.runnable.length = 0;
    const drained = await this.waitIdle(this.options.drainTimeoutMs);
    if (!drained) {
      this.logger.warn({ drain_timeout_ms: this.options.drainTimeoutMs, in_flight: this.active }, 'drain timeout: abandoning in-flight work, it stays uncommitted');
      for (const w of this.parts.values()) w.abort.abort(new SonicError('SHUTDOWN', 'stage is stopping'));
      await this.waitIdle(5_000);
    }
    await this.closeAll();
    this.lifecycle.to('stopped', reason);
  }

  private async fail(err: Error): Promise<void> {
    if (!this.lifecycle.can('failed')) return;
    this.logger.error({ err }, 'stage failed');
    this.lifecycle.to('failed', err.message);
    this.stopping.abort(err);
    for (const w of this.parts.values()) w.abort.abort(err);
    await this.closeAll().catch(() => undefined);
    this.failure?.(err);
  }

  private async closeAll(): Promise<void> {
    const producers = [...this.parts.values()].map((w) => this.closeProducer(w));
    await Promise.allSettled(producers);
    await this.consumer.stop().catch((err: unknown) => this.logger.warn({ err }, 'consumer stop failed'));
    await this.progress.close().catch(() => undefined);
  }

  private waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.active === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.idle = undefined;
        resolve(false);
      }, timeoutMs);
      this.idle = () => {
        clearTimeout(t);
        this.idle = undefined;
        resolve(true);
      };
    });
  }

  private onAssignment(assignment: Assignment, memberId: string): void {
    const next = new Set(assignment.map((tp) => keyOf(tp)));
    // a new member id means this process was out of the group: whatever it held may have moved
    const rejoined = this.memberId !== '' && memberId !== this.memberId;
    this.memberId = memberId;
    for (const w of [...this.parts.values()]) {
      if (!rejoined && next.has(w.key)) continue;
      this.revoke(w);
    }
    for (const tp of assignment) {
      if (!this.parts.has(keyOf(tp))) this.parts.set(keyOf(tp), newWork(tp));
    }
    this.logger.info({ member_id: memberId, assignment: [...next].sort(), rejoined }, 'partitions assigned');
  }

  private revoke(w: PartitionWork): void {
    w.owned = false;
    clearTimeout(w.timer);
    clearTimeout(w.markerTimer);
    w.abort.abort(new SonicError('SHUTDOWN', `partition ${w.key} was revoked`));
    this.parts.delete(w.key);
    this.recovery.stalled.delete(w);
    const i = this.runnable.indexOf(w);
    if (i >= 0) this.runnable.splice(i, 1);
    // a pause would otherwise survive until the partition comes back
    this.consumer.resume(w.tp);
    if (!w.busy) void this.closeProducer(w);
    this.logger.info({ partition: w.key, busy: w.busy }, 'partition revoked');
  }

  /** Queues a fetched batch; true when it was taken (the fetch position moves past it). */
  private onBatch(topic: string, partition: number, records: InRecord[], { endOffset, fetchedOffset, highWatermark }: BatchInfo): boolean {
    const w = this.parts.get(keyOf({ topic, partition }));
    if (!w) return false;
    // paused: a fetch that was in flight when the queue filled up or a transaction failed
    if (!w.owned || w.paused || this.lifecycle.state !== 'running') {
      this.pauseFetch(w);
      return false;
    }
    // fetched from beyond what this member holds (a fetch that raced a rewind, or kafkajs reset an
    // out-of-range position to the log start): never skip records, unless they no longer exist
    if (w.position >= 0n && BigInt(fetchedOffset) > w.position) {
      this.fetchFromPosition(w);
      this.refreshLogStart(w, BigInt(fetchedOffset));
      return false;
    }
    const fresh = records.filter((r) => w.position < 0n || BigInt(r.offset) >= w.position);
    if (fresh.length === 0) {
      if (w.position >= 0n) this.fetchFromPosition(w);
      return false;
    }
    clearTimeout(w.markerTimer);
    w.queue.push(...fresh);
    // committing past the batch's trailing markers leaves no phantom lag of 1 behind each transaction
    const last = fresh[fresh.length - 1]!;
    const end = BigInt(endOffset) > BigInt(last.offset) ? BigInt(endOffset) : BigInt(last.offset);
    w.batchEnds.set(last.offset, end);
    w.position = end + 1n;
    // A backlog (a full batch fetched, or a batch's worth more in the log) keeps fetching while
    // this batch is handled and committed. Caught up, fetching waits for the work instead: the
    // records that arrive meanwhile then come as one fetch and one batch, not as many small ones
    // that cost a fetch and a transaction each.
    const backlog = fresh.length >= this.maxRecords || BigInt(highWatermark) - w.position >= BigInt(this.maxRecords);
    if (w.queue.length >= this.prefetch || !backlog) this.pauseFetch(w);
    this.schedule(w);
    return true;
  }

  private pauseFetch(w: PartitionWork): void {
    if (w.paused) return;
    w.paused = true;
    this.consumer.pause(w.tp);
  }

  /** Resumes a paused partition whose queue has room again; fetching goes on from `w.position` (kafkajs resolved or was seeked to it). */
  private resumeFetch(w: PartitionWork): void {
    if (!w.paused || !w.owned || w.queue.length >= this.prefetch || this.lifecycle.state !== 'running') return;
    w.paused = false;
    this.consumer.resume(w.tp);
  }

  /** The partition's next fetch starts at `w.position` (in memory only: no commit). */
  private fetchFromPosition(w: PartitionWork): void {
    this.consumer.seek(w.tp, w.position.toString());
  }

  /** A fetch came from beyond the position: when the records from it on were deleted, go on from the log start. */
  private refreshLogStart(w: PartitionWork, fetchedOffset: bigint): void {
    void this.recovery.logStartPast(w, fetchedOffset).then((low) => {
      if (low === undefined || this.parts.get(w.key) !== w || !w.owned || w.recovering || w.position < 0n || low <= w.position) return;
      this.logger.warn({ partition: w.key, position: w.position.toString(), log_start: low.toString() }, 'records below the log start were deleted before they were handled; going on from the log start');
      w.position = low;
      this.fetchFromPosition(w);
    });
  }

  /**
   * A fetch of markers only moved the partition's position. When the partition stays idle for a
   * moment, commit that position (an offset-only transaction), so that an idle stage shows lag 0.
   */
  private onMarkersOnly(topic: string, partition: number, lastOffset: bigint): void {
    const w = this.parts.get(keyOf({ topic, partition }));
    if (!w || !w.owned || w.committed < 0n || lastOffset + 1n <= w.committed || this.lifecycle.state !== 'running') return;
    clearTimeout(w.markerTimer);
    w.markerTimer = setTimeout(() => {
      if (!w.owned || w.busy || w.queue.length > 0 || !w.producer || this.lifecycle.state !== 'running' || lastOffset + 1n <= w.committed) return;
      const producer = w.producer;
      w.busy = true;
      producer
        .publish([], { groupId: this.groupId, topic: w.tp.topic, partition: w.tp.partition, offset: (lastOffset + 1n).toString() })
        .then(() => {
          w.committed = lastOffset + 1n;
          if (w.position < w.committed) w.position = w.committed;
        })
        .catch((err: unknown) => this.recover(w, err))
        .finally(() => {
          w.busy = false;
          this.afterWork(w);
        });
    }, 1000);
  }

  /** Queues a partition for a worker slot, or sets a timer when its head retry is not due yet. */
  private schedule(w: PartitionWork): void {
    if (w.busy || !w.owned || w.queue.length === 0 || this.runnable.includes(w) || this.lifecycle.state !== 'running') return;
    const due = this.program.dueAt(w.queue[0]!);
    const wait = due - Date.now();
    if (wait > 0) {
      clearTimeout(w.timer);
      w.timer = setTimeout(() => this.schedule(w), wait);
      return;
    }
    this.runnable.push(w);
    this.pump();
  }

  private pump(): void {
    while (this.active < this.concurrency && this.runnable.length > 0) {
      const w = this.runnable.shift()!;
      this.active += 1;
      w.busy = true;
      void this.work(w).finally(() => {
        w.busy = false;
        this.active -= 1;
        this.afterWork(w);
        if (this.active === 0) this.idle?.();
        this.pump();
      });
    }
  }

  private afterWork(w: PartitionWork): void {
    if (!w.owned) {
      void this.closeProducer(w);
      return;
    }
    this.resumeFetch(w);
    this.schedule(w);
  }

  /** Handles the queued records of one partition in batches, one transaction per batch. */
  private async work(w: PartitionWork): Promise<void> {
    try {
      await this.fence(w);
      while (w.owned && w.queue.length > 0 && this.lifecycle.state === 'running') {
        const batch: { raw: RawRecord; outcome: Outcome & { kind: 'ok' | 'retry' | 'dlq' } }[] = [];
        const started = Date.now();
        while (
          w.queue.length > 0 &&
          batch.length < this.maxRecords &&
          (batch.length === 0 || (Date.now() - started < this.maxWaitMs && this.lifecycle.state === 'running'))
        ) {
          const raw = w.queue[0]!;
          const due = this.program.dueAt(raw);
          if (due > Date.now()) break; // not due: commit what we have, the timer resumes us
          w.queue.shift();
          if (due > 0) this.metrics?.retryLatenessSeconds.observe({ stage: this.stage.name, topic: raw.topic }, (Date.now() - due) / 1000);
          this.metrics?.inFlight.inc({ stage: this.stage.name });
          let outcome: Outcome;
          try {
            outcome = await this.program.process(raw, w.abort.signal);
          } finally {
            this.metrics?.inFlight.dec({ stage: this.stage.name });
          }
          this.metrics?.handlerSeconds.observe({ stage: this.stage.name, outcome: outcome.kind }, outcome.handlerMs / 1000);
          if (outcome.kind === 'aborted') {
            this.drop(w, batch.length + 1, 'handler aborted: partition revoked or process stopping');
            return;
          }
          batch.push({ raw, outcome });
        }
        if (batch.length === 0) return;
        await this.commit(w, batch);
        this.resumeFetch(w);
      }
    } catch (err) {
      await this.recover(w, err);
    }
  }

  /** First batch after (re)gaining the partition: fence older owners, then skip what they committed. */
  private async fence(w: PartitionWork): Promise<void> {
    if (w.fenced && w.producer) return;
    const txId = `${this.options.clientId}.${this.stage.name}.${w.tp.topic}.${w.tp.partition}`;
    await this.recovery.fence(w, () => new TxProducer(this.kafka, txId, this.options.transactionTimeoutMs).connect());
  }

  private async commit(w: PartitionWork, batch: { raw: RawRecord; outcome: Outcome & { kind: 'ok' | 'retry' | 'dlq' } }[]): Promise<void> {
    if (!w.owned || !w.producer) {
      this.drop(w, batch.length, 'partition revoked before commit');
      return;
    }
    const last = batch[batch.length - 1]!.raw;
    const next = (w.batchEnds.get(last.offset) ?? BigInt(last.offset)) + 1n;
    for (const b of batch) w.batchEnds.delete(b.raw.offset);
    const started = Date.now();
    await w.producer.publish(batch.flatMap((b) => b.outcome.records), { groupId: this.groupId, topic: w.tp.topic, partition: w.tp.partition, offset: next.toString() });
    w.committed = next;
    const m = this.metrics;
    if (m) {
      m.transactions.inc({ stage: this.stage.name, result: 'commit' });
      m.transactionSeconds.observe({ stage: this.stage.name }, (Date.now() - started) / 1000);
      m.batchRecords.observe({ stage: this.stage.name }, batch.length);
      for (const b of batch) m.records.inc({ stage: this.stage.name, outcome: b.outcome.kind });
    }
    this.logger.debug({ partition: w.key, records: batch.length, last_offset: last.offset, transaction_ms: Date.now() - started }, 'batch committed');
  }

  private drop(w: PartitionWork, records: number, why: string): void {
    this.metrics?.records.inc({ stage: this.stage.name, outcome: 'dropped' }, records);
    this.logger.info({ partition: w.key, records, why }, 'results dropped, not published');
    w.queue = [];
    w.batchEnds.clear();
  }

  /**
   * A failed transaction: kafkajs cannot reuse the producer, so close it; forget the queue and
   * go back to the committed offset, clamped to the log start (fetching stays paused until then:
   * prefetched records past it must not be taken). While the broker is away the way back is
   * retried with capped backoff for as long as the partition is ours: fetching on from the
   * prefetch position instead could skip records.
   */
  private async recover(w: PartitionWork, err: unknown): Promise<void> {
    w.recovering = true;
    const stillOurs = (): boolean => w.owned && this.lifecycle.state === 'running';
    try {
      this.pauseFetch(w);
      const type = (err as { type?: string }).type ?? '';
      this.metrics?.transactions.inc({ stage: this.stage.name, result: 'abort' });
      this.logger.warn({ err, partition: w.key, type }, 'transaction failed; the batch is aborted and will be redone from the committed offset');
      this.drop(w, w.queue.length, 'transaction failed');
      await this.closeProducer(w);
      w.position = -1n;
      const start = await this.recovery.startAfterFailure(w, FENCING_ERRORS.has(type), stillOurs, AbortSignal.any([w.abort.signal, this.stopping.signal]));
      if (start === undefined || !stillOurs()) return;
      w.position = start;
      this.fetchFromPosition(w);
    } catch (e) {
      // revoked or stopping: whoever gets the partition next starts from the committed offset
      if (stillOurs()) this.logger.warn({ err: e, partition: w.key }, 'gave up going back to the committed offset');
    } finally {
      w.recovering = false;
    }
  }

  private async closeProducer(w: PartitionWork): Promise<void> {
    const p = w.producer;
    w.producer = undefined;
    w.fenced = false;
    if (p) await p.close().catch((err: unknown) => this.logger.debug({ err }, 'producer close failed'));
  }
}
