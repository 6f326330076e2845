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
 *
 * - Handlers overlap commits: `concurrency` bounds the handlers at work, not the workers. Up to
 *   twice as many partitions have a worker; a worker takes a handler slot for handling its batch
 *   and gives it back before the batch's transaction, so the next partition's batch is handled
 *   while this one commits (a GPU stage of concurrency 1 is not idle during every commit).
 *
 * This file is the scheduling: which partition gets a worker and a handler slot, and the worker's
 * loop of handling records into batches. A partition's own state and steps (taking fetched batches,
 * fencing, committing, recovering) are `Partition`'s (`partition.ts`), where its fetching restarts
 * `PartitionRecovery`'s (`recovery.ts`).
 */
import { setMaxListeners } from 'node:events';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { SonicError, stopsStage, toSonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StageMetrics } from '../core/metrics.js';
import type { BackoffOptions } from '../core/retry.js';
import { Slots, type Release } from '../core/slots.js';
import { untilConnected, type KafkaClient } from '../kafka/client.js';
import { eventProducer, stageConsumer, supportsKip447, transactionalProducer } from '../kafka/clients.js';
import { CO_PARTITIONED, byCompleteNumber, type Assignment, type StickyClaim } from '../kafka/assignors.js';
import type { BatchInfo } from '../kafka/consumer.js';
import type { InRecord } from '../kafka/io.js';
import type { EventProducer, StageConsumer } from '../kafka/port.js';
import type { Codec } from '../serde/codec.js';
import { explainRefusal, type RefusalContext } from './acls.js';
import { lockSlot } from './dir-lock.js';
import { GroupCommit } from './group-commit.js';
import { Lifecycle } from './lifecycle.js';
import { groupId, transactionalId } from './names.js';
import { Partition, type Handled, type PartitionHost } from './partition.js';
import { StageProgram, type Outcome } from './program.js';
import { PartitionRecovery, keyOf } from './recovery.js';
import { StageStores, type BatchWrites } from './stage-stores.js';
import type { StageHandler } from './stage.js';
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
  /** The principal this process connects as (`User:<SASL user>`), named in authorization errors. */
  principal?: string;
  /**
   * Directory of the local copies of stage stores (`<dir>/<group>/<slot>`); only a stage that
   * declares stores opens anything there.
   */
  storeDir?: string;
}

export class StageRunner {
  readonly lifecycle: Lifecycle;
  readonly groupId: string;
  private readonly program: StageProgram;
  private readonly consumer: StageConsumer;
  private readonly progress: EventProducer;
  private readonly parts = new Map<string, Partition>();
  /** Partitions with records to handle, waiting for a worker. */
  private readonly runnable: Partition[] = [];
  private readonly maxRecords: number;
  private readonly maxWaitMs: number;
  /** Handlers at work at once (`concurrency`); workers may be twice as many. */
  private readonly concurrency: number;
  /** The handler slots: a worker holds one while it handles a batch, not while the batch commits. */
  private readonly handlers: Slots;
  private readonly recovery: PartitionRecovery;
  /** The stage's one transactional producer and its shared transactions (a KIP-447 client); undefined on kafkajs. */
  private readonly groupCommit: GroupCommit | undefined;
  /** Gives back this process's producer slot (see `transactionalId`'s `stage` form). */
  private releaseSlot: (() => void) | undefined;
  /** The stage's state stores; undefined for a stage without (which pays nothing for them). */
  private readonly stores: StageStores | undefined;
  /** What every partition shares with this runner. */
  private readonly host: PartitionHost;
  /** Aborted by stop(): ends the waits for the broker. */
  private readonly stopping = new AbortController();
  /** Workers (partitions being worked on): at most `2 × concurrency`. */
  private active = 0;
  /** Store partitions a worker is at (a stage with stores): one worker per store partition at a time. */
  private readonly storeBusy = new Set<number>();
  /** Partitions assigned but not taken (a stage with stores: their number is split across members); paused. */
  private refused: Assignment = [];
  private memberId = '';
  /** The generation of the last assignment (-1 before the first). */
  private generationId = -1;
  private idle: (() => void) | undefined;
  private failure: ((err: Error) => void) | undefined;
  /** Settles when the runner has stopped (resolves) or failed (rejects). */
  readonly done: Promise<void>;

  constructor(
    private readonly kafka: KafkaClient,
    codec: Codec,
    readonly topology: Topology,
    readonly stage: StageSpec,
    handler: StageHandler,
    private readonly logger: Logger,
    private readonly options: RunnerOptions,
    private readonly metrics?: StageMetrics,
  ) {
    this.lifecycle = new Lifecycle(logger);
    this.groupId = groupId(options.clientId, topology, stage);
    this.maxRecords = options.batchMaxRecords || stage.batch.maxRecords;
    this.maxWaitMs = options.batchMaxWaitMs !== undefined && options.batchMaxWaitMs >= 0 ? options.batchMaxWaitMs : stage.batch.maxWaitMs;
    this.concurrency = options.concurrency || stage.concurrency;
    this.handlers = new Slots(this.concurrency);
    // every worker waiting for a handler slot listens to the stop signal
    setMaxListeners(2 * this.concurrency + 20, this.stopping.signal);
    this.progress = eventProducer(kafka);
    this.program = new StageProgram(topology, stage, handler, codec, {
      logger,
      onProgress: (r) => void this.progress.send(r.topic, [r]).catch((err: unknown) => logger.warn({ err }, 'progress event not sent')),
    });
    this.consumer = stageConsumer(kafka, {
      groupId: this.groupId,
      sessionTimeoutMs: options.sessionTimeoutMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      rebalanceTimeoutMs: options.rebalanceTimeoutMs,
      maxWaitMs: options.fetchMaxWaitMs,
      reconnect: options.reconnect,
      logger,
      // store partition p is the input's and every retry tier's partition p: one member holds them all
      coPartitioned: stage.stores.length > 0,
      // otherwise a member keeps what it holds through a rebalance: a record in hand is not aborted
      // because another replica came or went (a render on a GPU, minutes of work)
      sticky: { claim: () => this.stickyClaim() },
    });
    this.stores =
      stage.stores.length > 0
        ? new StageStores({ dir: join(options.storeDir ?? join(tmpdir(), 'sonicflow-stores'), this.groupId), specs: stage.stores, kafka, logger })
        : undefined;
    this.recovery = new PartitionRecovery(this.consumer, logger, options);
    this.groupCommit = supportsKip447(kafka) ? this.stageProducer() : undefined;
    this.host = {
      groupId: this.groupId,
      stage: stage.name,
      consumer: this.consumer,
      recovery: this.recovery,
      logger,
      metrics,
      maxRecords: this.maxRecords,
      // a partition keeps fetching while less than two batches are queued
      prefetch: 2 * this.maxRecords,
      stopping: this.stopping.signal,
      running: () => this.lifecycle.state === 'running',
      // KIP-447: a share of the stage's producer (fencing by generation); kafkajs: one transactional
      // id per input partition, whose new owner fences the old one
      producerFor: (p) =>
        this.groupCommit?.share(() => p.owned) ??
        transactionalProducer(
          kafka,
          transactionalId(options.clientId, { kind: 'partition', stage, topic: p.tp.topic, partition: p.tp.partition }),
          options.transactionTimeoutMs,
        ).connect(),
      schedule: (p) => this.schedule(p),
      failed: (p, err, writing) => this.partitionFailed(p, err, writing),
    };
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
          onAssignment: (a, info) => this.onAssignment(a, info.memberId, info.protocol, info.generationId),
          onBatch: (topic, partition, records, info) => this.onBatch(topic, partition, records, info),
          onMarkersOnly: (topic, partition, last) => this.parts.get(keyOf({ topic, partition }))?.onMarkersOnly(BigInt(last)),
          onCrash: (err) => void this.refusal(err, { topics: this.consumedTopics(), action: 'read' }).then((refused) => this.fail(refused ?? err)),
        },
        signal,
      );
    } catch (err) {
      if (signal.aborted) return;
      throw (await this.refusal(err, { topics, action: 'read' })) ?? err;
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
    for (const p of this.parts.values()) p.hold();
    this.runnable.length = 0;
    const drained = await this.waitIdle(this.options.drainTimeoutMs);
    if (!drained) {
      this.logger.warn(
        { drain_timeout_ms: this.options.drainTimeoutMs, in_flight: this.active },
        'drain timeout: abandoning in-flight work, it stays uncommitted',
      );
      for (const p of this.parts.values()) p.abort.abort(new SonicError('SHUTDOWN', 'stage is stopping'));
      await this.waitIdle(5_000);
    }
    await this.closeAll();
    this.lifecycle.to('stopped', reason);
  }

  /** KAFKA_NOT_AUTHORIZED for a refusal by the broker's authorizer (see `explainRefusal`); undefined for any other error. */
  private refusal(err: unknown, where: Pick<RefusalContext, 'topics' | 'action' | 'transactionalId'>): Promise<SonicError | undefined> {
    const principal = this.options.principal;
    return explainRefusal(this.kafka, err, { stage: this.stage.name, group: this.groupId, ...(principal ? { principal } : {}), ...where });
  }

  /** The topics the stage reads: its input, retry tiers and store changelogs. */
  private consumedTopics(): string[] {
    return [this.stage.input, ...this.stage.retry.topics, ...this.stage.stores.map((s) => s.changelog)];
  }

  private async fail(err: Error): Promise<void> {
    if (!this.lifecycle.can('failed')) return;
    this.logger.error({ err }, 'stage failed');
    this.lifecycle.to('failed', err.message);
    this.stopping.abort(err);
    for (const p of this.parts.values()) p.abort.abort(err);
    await this.closeAll().catch(() => undefined);
    this.failure?.(err);
  }

  private async closeAll(): Promise<void> {
    await Promise.allSettled([...this.parts.values()].map((p) => p.closeProducer()));
    await this.groupCommit?.close().catch((err: unknown) => this.logger.warn({ err }, 'stage producer close failed'));
    this.releaseSlot?.();
    this.releaseSlot = undefined;
    await this.consumer.stop().catch((err: unknown) => this.logger.warn({ err }, 'consumer stop failed'));
    await this.progress.close().catch(() => undefined);
    await this.stores?.close().catch((err: unknown) => this.logger.warn({ err }, 'state stores close failed'));
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

  private onAssignment(assigned: Assignment, memberId: string, protocol: string, generationId: number): void {
    const assignment = this.stores ? this.coPartitioned(assigned, protocol) : assigned;
    const next = new Set(assignment.map((tp) => keyOf(tp)));
    // a new member id means this process was out of the group, and a generation skipped means it
    // missed a rebalance (a failed sync the client mended by joining again): whatever it held may
    // have moved meanwhile, so nothing it holds carries over
    const skipped = this.generationId >= 0 && generationId !== this.generationId + 1;
    const rejoined = (this.memberId !== '' && memberId !== this.memberId) || skipped;
    this.memberId = memberId;
    this.generationId = generationId;
    for (const p of [...this.parts.values()]) {
      if (!rejoined && next.has(p.key)) continue;
      p.revoke();
      // another member may write the store partition now: restore it again if it comes back
      this.stores?.forget(p.tp.partition);
      this.parts.delete(p.key);
      const i = this.runnable.indexOf(p);
      if (i >= 0) this.runnable.splice(i, 1);
    }
    for (const tp of assignment) {
      if (this.parts.has(keyOf(tp))) continue;
      this.parts.set(keyOf(tp), new Partition(tp, this.host));
      // a new Partition starts unpaused: no pause of an earlier holder of the number may outlive it
      this.consumer.resume(tp);
    }
    this.logger.info({ member_id: memberId, generation_id: generationId, assignment: [...next].sort(), rejoined }, 'partitions assigned');
  }

  /**
   * A stage with stores takes only the partitions whose number it holds in the input and in every
   * retry tier: store partition p must have one writer, or each member's checkpoint would jump
   * over the other's changelog records. The group falls back to round robin while a member does
   * not offer the co-partitioning assignor (a rolling upgrade from a version without it); the
   * partitions that fallback splits stay paused here, unprocessed, until the group assigns them
   * whole again (their lag grows meanwhile).
   */
  private coPartitioned(assigned: Assignment, protocol: string): Assignment {
    const { complete, incomplete } = byCompleteNumber(assigned, [this.stage.input, ...this.stage.retry.topics]);
    for (const tp of this.refused) if (!incomplete.some((x) => keyOf(x) === keyOf(tp))) this.consumer.resume(tp);
    this.refused = incomplete;
    for (const tp of incomplete) this.consumer.pause(tp);
    if (incomplete.length > 0 || protocol !== CO_PARTITIONED) {
      this.logger.error(
        {
          code: 'CONFIG_INVALID',
          protocol,
          expected_protocol: CO_PARTITIONED,
          refused: incomplete.map((tp) => keyOf(tp)).sort(),
        },
        `the group did not assign store partitions whole (assignor ${protocol}; every member of a stage with stores must offer ${CO_PARTITIONED}): the partitions split across members are not processed`,
      );
    }
    return complete;
  }

  /** Queues a fetched batch with its partition; true when it was taken (the fetch position moves past it). */
  private onBatch(topic: string, partition: number, records: InRecord[], info: BatchInfo): boolean {
    const p = this.parts.get(keyOf({ topic, partition }));
    if (!p || !p.take(records, info)) return false;
    this.schedule(p);
    return true;
  }

  /** Queues a partition for a worker, or sets a timer when its head retry is not due yet. */
  private schedule(p: Partition): void {
    if (p.busy || !p.owned || p.queue.length === 0 || this.runnable.includes(p) || this.lifecycle.state !== 'running') return;
    const wait = this.program.dueAt(p.queue[0]!) - Date.now();
    if (wait > 0) {
      p.wakeIn(wait, () => this.schedule(p));
      return;
    }
    // the oldest head record first (Kafka Streams' rule across a task's partitions): a record a dead
    // replica held, inherited at a rebalance, goes before this replica's newer ones
    const at = this.runnable.findIndex((q) => q.headTime() > p.headTime());
    if (at < 0) this.runnable.push(p);
    else this.runnable.splice(at, 0, p);
    this.pump();
  }

  /**
   * Gives runnable partitions workers: up to twice the handler slots, so that while one worker
   * commits, another already waits for (or holds) the slot it gives back.
   */
  private pump(): void {
    while (this.active < 2 * this.concurrency) {
      // a stage with stores: one worker per store partition (input p and its retry tiers p take turns)
      const i = this.stores ? this.runnable.findIndex((q) => !this.storeBusy.has(q.tp.partition)) : this.runnable.length > 0 ? 0 : -1;
      if (i < 0) return;
      const p = this.runnable.splice(i, 1)[0]!;
      this.active += 1;
      p.busy = true;
      if (this.stores) this.storeBusy.add(p.tp.partition);
      void this.work(p).finally(() => {
        p.busy = false;
        if (this.stores) this.storeBusy.delete(p.tp.partition);
        this.active -= 1;
        p.afterWork();
        if (this.active === 0) this.idle?.();
        this.pump();
      });
    }
  }

  /**
   * Handles the queued records of one partition in batches, one transaction per batch. A batch is
   * handled holding a handler slot, which goes back before the batch commits.
   */
  private async work(p: Partition): Promise<void> {
    // what a refusal by the authorizer is about: the partition's own resources until a batch commits
    let writing: string[] | undefined;
    try {
      // first batch after (re)gaining the partition: fence older owners, then skip what they committed
      await p.fence();
      const n = p.tp.partition;
      while (p.owned && p.queue.length > 0 && this.lifecycle.state === 'running') {
        // the store partition: every producer of partition n fenced, then restored from its changelog
        // (once after each assignment, and again after a commit whose outcome is unknown)
        if (this.stores) {
          await this.stores.ensureRestored(n, async () => {
            for (const q of [...this.parts.values()]) if (q.tp.partition === n && q.owned) await q.fence();
          });
        }
        const release = await this.handlerSlot(p);
        if (!release) return;
        const batch: Handled[] = [];
        let writes: BatchWrites | undefined;
        try {
          writes = this.stores?.batch(n);
          // the batch's wait bound runs from when it may be handled, not from when the worker began waiting
          const started = Date.now();
          while (
            p.queue.length > 0 &&
            batch.length < this.maxRecords &&
            (batch.length === 0 || (Date.now() - started < this.maxWaitMs && this.lifecycle.state === 'running'))
          ) {
            const raw = p.queue[0]!;
            const due = this.program.dueAt(raw);
            if (due > Date.now()) break; // not due: commit what we have, the timer resumes us
            p.queue.shift();
            if (due > 0) this.metrics?.retryLatenessSeconds.observe({ stage: this.stage.name, topic: raw.topic }, (Date.now() - due) / 1000);
            this.metrics?.inFlight.inc({ stage: this.stage.name });
            let outcome: Outcome;
            try {
              outcome = await this.program.process(raw, p.abort.signal, writes?.forRecord());
            } finally {
              this.metrics?.inFlight.dec({ stage: this.stage.name });
            }
            this.metrics?.handlerSeconds.observe({ stage: this.stage.name, outcome: outcome.kind }, outcome.handlerMs / 1000);
            if (outcome.kind === 'aborted') {
              p.drop(batch.length + 1, 'handler aborted: partition revoked or process stopping');
              return;
            }
            batch.push({ raw, outcome });
          }
        } finally {
          // the next batch (of another partition) is handled while this one commits
          release();
        }
        if (batch.length === 0) return;
        writing = [...new Set(batch.flatMap((b) => b.outcome.records.map((r) => r.topic)))];
        if (this.stores && writes) {
          // commit, then apply the batch's store writes locally (taking turns with restores)
          await this.stores.commit(writes, async () => {
            const landed = await p.commit(batch);
            return landed && new Map(landed.filter((l) => l.partition === n).map((l) => [l.topic, l.baseOffset]));
          });
        } else await p.commit(batch);
        writing = undefined;
        p.resumeFetch();
        // another partition of store partition n waits (a retry tier, or the input): its turn now
        if (this.stores && this.runnable.some((q) => q.tp.partition === n)) return;
      }
    } catch (err) {
      await this.partitionFailed(p, err, writing);
    }
  }

  /**
   * Waits for a handler slot (FIFO among the workers). Undefined, holding nothing, when the runner
   * stops or the partition is revoked meanwhile, or when there is nothing left to handle once the
   * slot is ours (the worker then ends).
   */
  /** What this member holds (and has in hand) as it joins, under the member id it held it as. */
  private stickyClaim(): StickyClaim {
    const byTopic = (ps: Partition[]): Record<string, number[]> => {
      const out: Record<string, number[]> = {};
      for (const p of ps) (out[p.tp.topic] ??= []).push(p.tp.partition);
      return out;
    };
    const mine = [...this.parts.values()].filter((p) => p.owned);
    return { memberId: this.memberId, held: byTopic(mine), busy: byTopic(mine.filter((p) => p.busy)) };
  }

  private async handlerSlot(p: Partition): Promise<Release | undefined> {
    let release: Release;
    try {
      release = await this.handlers.acquire(this.stopping.signal, p.abort.signal);
    } catch {
      return undefined;
    }
    // while it waited, an older record became runnable on another partition: this worker steps
    // aside (its partition is scheduled again behind that one) and the freed slot goes to it
    const older = this.runnable.some((q) => q.headTime() < p.headTime() && (!this.stores || !this.storeBusy.has(q.tp.partition)));
    if (this.lifecycle.state === 'running' && p.owned && p.queue.length > 0 && !older) return release;
    release();
    return undefined;
  }

  /**
   * The stage's one producer on a KIP-447 client: every partition's batches commit through it
   * together. Its transactional id names this host and a slot taken under the store directory, so
   * a process restarted on the same host fences its predecessor's open transaction at once (which
   * would otherwise hold the partitions' offsets unstable until the transaction timeout).
   */
  private stageProducer(): GroupCommit {
    const base = join(this.options.storeDir ?? join(tmpdir(), 'sonicflow-stores'), this.groupId, 'producer');
    const slot = lockSlot(base, 'stage producer');
    this.releaseSlot = slot.release;
    const id = transactionalId(this.options.clientId, { kind: 'stage', stage: this.stage, topic: this.stage.input, instance: `${hostname()}-${slot.slot}` });
    const { stage } = this;
    this.logger.info({ transactional_id: id }, 'one transactional producer for the stage (KIP-447): partitions commit together');
    return new GroupCommit({
      transactionalId: id,
      producer: () => transactionalProducer(this.kafka, id, this.options.transactionTimeoutMs),
      generation: () => this.consumer.generation(),
      maxRecords: 10 * this.maxRecords,
      onCommit: (batches) => this.metrics?.transactionBatches.observe({ stage: stage.name }, batches),
    });
  }

  /** See {@link PartitionHost.failed}. */
  private async partitionFailed(p: Partition, err: unknown, writing?: string[]): Promise<void> {
    // a missing ACL, or a model that cannot load, is a deployment mistake: stop, neither retry the
    // batch nor dead-letter it (it stays uncommitted and is redone by the next owner)
    if (stopsStage(err)) return this.fail(toSonicError(err));
    const tp = p.tp;
    const refused = await this.refusal(err, {
      topics: writing ?? this.consumedTopics(),
      ...(writing ? { action: 'write to' } : {}),
      transactionalId:
        this.groupCommit?.transactionalId ??
        transactionalId(this.options.clientId, { kind: 'partition', stage: this.stage, topic: tp.topic, partition: tp.partition }),
    });
    if (refused) return this.fail(refused);
    await p.recover(err);
  }
}
