/**
 * The dispatcher: work reaches a worker when the worker is free, not by partition ownership.
 *
 * A dispatcher stage sits in front of a slow stage (infer: one task per GPU). It reads its input,
 * keeps the records in a backlog and hands each to a worker that has room, by writing it to a
 * partition of its one sink (the workers' input) that this worker holds in its consumer group.
 * A worker has room while fewer than `1 + queuePerWorker` records dispatched to its partitions
 * are not yet committed by it: it works on one, and the next waits for it, so the time the
 * dispatcher takes to notice a finished record and send another is hidden behind a render.
 * Which waiting record goes first is `dispatch-queue.ts`'s rule (priority with aging, then
 * longest estimated work first).
 *
 * Exactly once, through one transactional producer:
 * - Taking in: records read from the input are written to the backlog's changelog (compacted,
 *   keyed `<input partition>:<offset>`), and the input offsets committed, in one transaction.
 * - Dispatching: the record (its bytes and headers, unchanged) written to the worker's partition
 *   and a tombstone for its backlog entry, in one transaction (with the next intake, when any).
 *   A record is in the backlog or dispatched, never both and never neither.
 * - One dispatcher works at a time: its group's singleton assignor gives every input partition to
 *   one member; the others stand by with nothing assigned. The active one's transactional id is
 *   fixed (its input partition 0's), so a new active one fences an old one that is still alive
 *   (a zombie): the old one's next commit fails. A standby takes over when the active one leaves
 *   the group (at once on SIGTERM; after the session timeout when it is killed).
 * - Taking over (and after any failed transaction): fence, read the backlog's changelog to its
 *   end, read each worker partition from the workers' committed offset to its end (the records
 *   dispatched and not yet done), and go on reading the input from the committed offsets.
 *
 * What the dispatcher learns from Kafka, every `pollMs`: the workers' committed offsets of its
 * sink (a record below is done: its outputs are committed) and the workers' group (DescribeGroups:
 * who holds which partition). While that group rebalances nothing is dispatched.
 *
 * What it tells (optional gauges, `DispatchMetrics`): the records waiting and dispatched-not-done,
 * each as a count and as the sum of their cost (estimated worker-seconds), the workers it sees,
 * and how many of them hold a dispatched record (busy: the floor of any scale-down), set after
 * every step from the running sums and the last poll. The workers' autoscaler (`sonicflow
 * autoscale`, KEDA's prometheus trigger) scales on those seconds, never below the busy workers:
 * the workers' own input lag stays at 1 + queuePerWorker per worker by design. A standby reports
 * 0 throughout.
 */
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { DispatchMetrics } from '../core/metrics.js';
import { Backoff, sleep, type BackoffOptions } from '../core/retry.js';
import { stageConsumer, transactionalProducer } from '../kafka/clients.js';
import type { Assignment, BatchInfo } from '../kafka/consumer.js';
import { headersToStrings, type InRecord, type OutRecord } from '../kafka/io.js';
import type { StageConsumer, TransactionalProducer } from '../kafka/port.js';
import type { KafkaClient } from '../kafka/client.js';
import { OffsetReader } from '../kafka/lag.js';
import { PartitionReader } from '../kafka/partition-reader.js';
import type { Codec } from '../serde/codec.js';
import { DispatchQueue, planDispatch, type Waiting } from './dispatch-queue.js';
import { Lifecycle } from './lifecycle.js';
import { groupId, transactionalId } from './names.js';
import type { StageSpec, Topology } from './topology.js';

export interface DispatcherOptions {
  clientId: string;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  fetchMaxWaitMs: number;
  transactionTimeoutMs: number;
  reconnect: BackoffOptions;
  /** Records queued for each worker besides the one it works on. */
  queuePerWorker: number;
  /** A waiting record's priority rises by one per this many ms (0: never). */
  agingMs: number;
  /**
   * A worker gets more than 1 + queuePerWorker records while what it holds is estimated at less
   * than this, ms (the cost's unit is seconds): short tasks would end before the next dispatch.
   */
  leadMs: number;
  /** How often the workers' offsets and group are read, ms. */
  pollMs: number;
  /** Most records held in the backlog; beyond it the input is not read. */
  maxBacklog: number;
}

/** A backlog entry: the record as it will be dispatched, with what orders it. */
interface Entry extends Waiting {
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

/** The JSON value of a backlog changelog record. */
interface Stored {
  k: string | null;
  v: string | null;
  h: Record<string, string>;
  c: number;
  p: number;
  t: number;
}

/** A record dispatched to a worker and not yet committed by it: where it is, and its cost. */
interface Out {
  offset: bigint;
  cost: number;
}

/** Header on a dispatched record: when it was dispatched, ms since the epoch. */
export const DISPATCHED_AT_HEADER = 'sonicflow.dispatched.at.ms';
/** Most records a worker holds however short their estimates (see `RoomRule.maxPerWorker`). */
const MAX_PER_WORKER = 32;

export class Dispatcher {
  readonly lifecycle: Lifecycle;
  readonly groupId: string;
  readonly done: Promise<void>;
  private readonly workersGroup: string;
  private readonly output: string;
  private readonly changelog: string;
  private readonly consumer: StageConsumer;
  private readonly offsets: OffsetReader;
  private readonly partitions: PartitionReader;
  private readonly queue: DispatchQueue<Entry>;
  private readonly stopping = new AbortController();
  private readonly backoff: Backoff;
  private producer: TransactionalProducer | undefined;
  /** Records read from the input, not yet in the backlog's changelog. */
  private intake: { rec: InRecord }[] = [];
  /** Per input partition, the next offset to commit once the intake is written. */
  private intakeEnds = new Map<number, bigint>();
  /** Per partition of the sink: records dispatched there and not yet committed by its worker, in offset order. */
  private outstanding = new Map<number, Out[]>();
  /** Running totals of `outstanding` (count and cost), for the gauges. */
  private outCount = 0;
  private outCost = 0;
  /** Per input partition, the next offset to take in (records below it are in the backlog or were dispatched). */
  private positions = new Map<number, bigint>();
  /** Input partitions paused because the backlog is full. */
  private full = new Set<number>();
  private assignment: Assignment = [];
  /** Bumped by every assignment: the loop (re)activates when it differs from `activeFor`. */
  private generation = 0;
  private activeFor = -1;
  private active = false;
  private workers: { state: string; members: { memberId: string; partitions: number[] }[] } = { state: 'Empty', members: [] };
  private lastPoll = 0;
  private wake: (() => void) | undefined;
  private loop: Promise<void> = Promise.resolve();
  private failure: ((err: Error) => void) | undefined;
  private finished: (() => void) | undefined;

  constructor(
    private readonly kafka: KafkaClient,
    private readonly codec: Codec,
    readonly topology: Topology,
    readonly stage: StageSpec,
    private readonly logger: Logger,
    private readonly options: DispatcherOptions,
    private readonly metrics?: DispatchMetrics,
  ) {
    const spec = stage.dispatch;
    if (!spec) throw new SonicError('INTERNAL', `stage ${stage.name} is not a dispatcher`);
    const sinks = Object.values(stage.outputs);
    const workers = topology.stages.find((s) => s.name === spec.workers);
    const backlog = stage.stores.find((s) => s.name === 'backlog');
    if (sinks.length !== 1 || !workers || workers.input !== sinks[0] || !backlog) {
      throw new SonicError(
        'TOPOLOGY_INVALID',
        `dispatcher ${stage.name}: needs one sink that is the input of its workers' stage "${spec.workers}", and its backlog store`,
      );
    }
    this.output = sinks[0]!;
    this.changelog = backlog.changelog;
    this.lifecycle = new Lifecycle(logger);
    this.groupId = groupId(options.clientId, topology, stage);
    this.workersGroup = groupId(options.clientId, topology, workers);
    this.queue = new DispatchQueue<Entry>(options.agingMs);
    this.backoff = new Backoff({ ...options.reconnect, jitter: 'decorrelated' });
    this.consumer = stageConsumer(kafka, {
      groupId: this.groupId,
      sessionTimeoutMs: options.sessionTimeoutMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      rebalanceTimeoutMs: options.rebalanceTimeoutMs,
      maxWaitMs: options.fetchMaxWaitMs,
      reconnect: options.reconnect,
      logger,
      singleton: { holding: () => this.assignment.length > 0 },
    });
    this.offsets = new OffsetReader(kafka);
    this.partitions = new PartitionReader(kafka);
    this.done = new Promise((resolve, reject) => {
      this.finished = resolve;
      this.failure = reject;
    });
  }

  /** Running and a member of the group: active or standing by. */
  get ready(): boolean {
    return this.lifecycle.state === 'running' && this.consumer.joined;
  }

  async start(): Promise<void> {
    await this.consumer.start(
      [this.stage.input],
      {
        onAssignment: (a) => {
          this.assignment = a;
          this.generation += 1;
          this.active = false;
          // the line every stage process logs when it has joined its group (the demo and the tests wait for it)
          this.logger.info({ assignment: a.map((tp) => `${tp.topic}:${tp.partition}`).sort(), standby: a.length === 0 }, 'partitions assigned');
          // nothing is taken until the new assignment is set up
          for (const tp of a) this.consumer.pause(tp);
          this.poke();
        },
        onBatch: (topic, partition, records, info) => this.onBatch(partition, records, info),
        onMarkersOnly: (_topic, partition, last) => {
          const end = BigInt(last) + 1n;
          if (this.active && end > (this.positions.get(partition) ?? -1n)) {
            this.positions.set(partition, end);
            this.intakeEnds.set(partition, end);
          }
        },
        onCrash: (err) => void this.fail(err),
      },
      this.stopping.signal,
    );
    if (this.lifecycle.can('running')) this.lifecycle.to('running');
    this.loop = this.run();
    this.logger.info({ group: this.groupId, input: this.stage.input, output: this.output, workers: this.workersGroup, dispatcher: true }, 'stage running');
  }

  async stop(reason: string): Promise<void> {
    if (!this.lifecycle.can('draining')) return this.done;
    this.lifecycle.to('draining', reason);
    this.stopping.abort(new SonicError('SHUTDOWN', 'dispatcher is stopping'));
    this.poke();
    await this.loop;
    await this.close();
    this.lifecycle.to('stopped', reason);
    this.finished?.();
  }

  private onBatch(partition: number, records: InRecord[], info: BatchInfo): boolean {
    const tp = { topic: this.stage.input, partition };
    if (!this.active || this.full.has(partition)) {
      this.consumer.pause(tp);
      return false;
    }
    // a fetch that raced a seek back to the committed offsets may repeat records: take each once
    const from = this.positions.get(partition) ?? -1n;
    for (const rec of records) if (BigInt(rec.offset) >= from) this.intake.push({ rec });
    const end = BigInt(info.endOffset) + 1n;
    if (end > from) {
      this.positions.set(partition, end);
      this.intakeEnds.set(partition, end);
    }
    if (this.queue.size + this.intake.length >= this.options.maxBacklog) {
      this.full.add(partition);
      this.consumer.pause(tp);
    }
    this.poke();
    return true;
  }

  private poke(): void {
    this.wake?.();
  }

  private async idle(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
    this.wake = undefined;
  }

  /** The one loop that activates, takes in, polls and dispatches: everything in order, one transaction at a time. */
  private async run(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      try {
        if (this.activeFor !== this.generation) {
          await this.activate();
          this.report();
          continue;
        }
        if (this.active) await this.step();
        this.report();
        await this.idle(this.active && this.intake.length > 0 ? 0 : this.options.pollMs);
      } catch (err) {
        if (this.stopping.signal.aborted) return;
        // a failed transaction (fenced by a newer active dispatcher, the broker away): start over
        // from what Kafka holds, after a pause
        const wait = this.backoff.next();
        this.logger.warn({ err, retry_in_ms: wait }, 'dispatcher step failed: setting up again from the changelog and the offsets');
        this.active = false;
        this.activeFor = -1;
        this.report();
        await sleep(wait, this.stopping.signal).catch(() => undefined);
      }
    }
  }

  /** Stands by (nothing assigned), or becomes the active dispatcher for the current assignment. */
  private async activate(): Promise<void> {
    const generation = this.generation;
    const assignment = this.assignment;
    this.active = false;
    this.intake = [];
    this.intakeEnds.clear();
    this.queue.clear();
    this.outstanding.clear();
    this.outCount = 0;
    this.outCost = 0;
    this.positions.clear();
    this.full.clear();
    if (assignment.length === 0) {
      await this.closeProducer();
      this.activeFor = generation;
      this.logger.info('dispatcher standing by');
      return;
    }
    const started = Date.now();
    for (const tp of assignment) this.consumer.pause(tp);
    // fence any older active dispatcher before reading what it wrote
    await this.closeProducer();
    const id = transactionalId(this.options.clientId, { kind: 'partition', stage: this.stage, topic: this.stage.input, partition: 0 });
    this.producer = await transactionalProducer(this.kafka, id, this.options.transactionTimeoutMs).connect();
    await this.restoreBacklog();
    await this.restoreOutstanding();
    const committed = await this.offsets.committed(this.groupId, [this.stage.input]);
    // never committed: a new dispatcher. If the workers read this topic themselves before (an
    // upgrade from a topology without the dispatcher), what they committed is done: go on from there
    const before = [...committed.values()].some((o) => o >= 0n)
      ? new Map<string, bigint>()
      : await this.offsets.committed(this.workersGroup, [this.stage.input]);
    if ([...before.values()].some((o) => o >= 0n))
      this.logger.info({ group: this.workersGroup }, "dispatcher starts from its workers' committed offsets on its input (an upgrade)");
    for (const tp of assignment) {
      const key = `${tp.topic}:${tp.partition}`;
      let next = committed.get(key) ?? -1n;
      if (next < 0n) next = before.get(key) ?? -1n;
      if (next < 0n) next = (await this.partitions.range(tp.topic, tp.partition)).start;
      this.positions.set(tp.partition, next);
      this.consumer.seek(tp, next.toString());
    }
    if (generation !== this.generation) return;
    this.activeFor = generation;
    this.active = true;
    this.backoff.reset();
    for (const tp of assignment) this.consumer.resume(tp);
    this.logger.info(
      {
        backlog: this.queue.size,
        outstanding: this.outCount,
        took_ms: Date.now() - started,
      },
      'dispatcher active',
    );
  }

  private async restoreBacklog(): Promise<void> {
    for (let partition = 0; partition < this.topology.topics[this.changelog]!.partitions; partition++) {
      const { start, end } = await this.partitions.range(this.changelog, partition);
      if (end <= start) continue;
      await this.partitions.read(this.changelog, partition, start, end, (records) => {
        for (const r of records) {
          if (!r.key) continue;
          if (!r.value) {
            this.queue.delete(r.key);
            continue;
          }
          const s = JSON.parse(r.value.toString('utf8')) as Stored;
          const [p, o] = r.key.split(':');
          this.queue.add({
            id: r.key,
            key: s.k,
            value: s.v === null ? null : Buffer.from(s.v, 'base64'),
            headers: s.h,
            cost: boundedCost(s.c),
            priority: s.p,
            enqueuedAt: s.t,
            partition: Number(p),
            offset: BigInt(o ?? '0'),
          });
        }
      });
    }
  }

  private async restoreOutstanding(): Promise<void> {
    const committed = await this.offsets.committed(this.workersGroup, [this.output]);
    for (let partition = 0; partition < this.topology.topics[this.output]!.partitions; partition++) {
      const { start, end } = await this.partitions.range(this.output, partition);
      const done = committed.get(`${this.output}:${partition}`) ?? -1n;
      const from = done > start ? done : start;
      const records: InRecord[] = [];
      if (end > from) await this.partitions.read(this.output, partition, from, end, (batch) => records.push(...batch));
      // the cost is not stored with a dispatched record: estimated again from its value (a few per worker)
      const out: Out[] = [];
      for (const r of records) out.push({ offset: BigInt(r.offset), cost: (await this.weigh(r)).cost });
      this.outstanding.set(partition, out);
      this.outCount += out.length;
      for (const o of out) this.outCost += o.cost;
    }
  }

  /** Reads the workers' progress (every pollMs), takes in what was read, dispatches to workers with room: one transaction. */
  private async step(): Promise<void> {
    const now = Date.now();
    // nothing waiting and nothing out: the workers have nothing to tell
    const busy = this.queue.size > 0 || this.intake.length > 0 || this.outCount > 0;
    if (busy && now - this.lastPoll >= this.options.pollMs) {
      this.lastPoll = now;
      const [committed, workers] = await Promise.all([
        this.offsets.committed(this.workersGroup, [this.output]),
        this.offsets.assignments(this.workersGroup, this.output),
      ]);
      this.workers = workers;
      for (const [p, out] of this.outstanding) {
        const done = committed.get(`${this.output}:${p}`) ?? -1n;
        if (out.length > 0 && out[0]!.offset < done) {
          const left = out.filter((o) => o.offset >= done);
          this.outstanding.set(p, left);
          this.outCount -= out.length - left.length;
          for (const o of out) if (o.offset < done) this.outCost -= o.cost;
          if (this.outCount === 0) this.outCost = 0; // no rounding drift left behind
        }
      }
    }
    const intake = this.intake;
    const ends = this.intakeEnds;
    this.intake = [];
    this.intakeEnds = new Map();
    const entries = await Promise.all(intake.map(({ rec }) => this.entryOf(rec, now)));
    for (const e of entries) this.queue.add(e);
    // the lead never beyond a worker's fair share of what waits: at a burst's end the last short
    // tasks go one by one to whoever is free first, not queued behind estimates that may be off
    const share = this.queue.cost / Math.max(1, this.workers.members.length);
    const rule = { capacity: 1 + this.options.queuePerWorker, lead: Math.min(this.options.leadMs / 1000, share), maxPerWorker: MAX_PER_WORKER };
    const held = new Map([...this.outstanding].map(([p, o]) => [p, o.map((x) => x.cost)]));
    // the backlog is sorted only when some worker has room (room does not depend on the record)
    const room = this.workers.state === 'Stable' && this.queue.size > 0 && planDispatch(this.workers.members, held, rule, [0]).length > 0;
    const candidates = room ? this.queue.best(this.workers.members.length * Math.max(rule.capacity, MAX_PER_WORKER), now) : [];
    const planned = planDispatch(
      this.workers.members,
      held,
      rule,
      candidates.map((c) => c.cost),
    );
    const chosen = candidates.slice(0, planned.length);
    for (const c of chosen) this.queue.delete(c.id);
    if (entries.length === 0 && chosen.length === 0 && ends.size === 0) return;
    const records: (OutRecord & { topic: string })[] = [];
    const dispatchedIds = new Set(chosen.map((c) => c.id));
    // taken in: its backlog entry, unless it is dispatched in this same transaction
    for (const e of entries)
      if (!dispatchedIds.has(e.id)) records.push({ topic: this.changelog, key: e.id, value: Buffer.from(JSON.stringify(storedOf(e))), partition: e.partition });
    const intakeIds = new Set(entries.map((e) => e.id));
    const stamp = String(Date.now());
    chosen.forEach((c, i) => {
      records.push({ topic: this.output, key: c.key, value: c.value, headers: { ...c.headers, [DISPATCHED_AT_HEADER]: stamp }, partition: planned[i]! });
      if (!intakeIds.has(c.id)) records.push({ topic: this.changelog, key: c.id, value: null, partition: c.partition });
    });
    const inputs = [...ends].map(([partition, next]) => ({ groupId: this.groupId, topic: this.stage.input, partition, offset: next.toString() }));
    let landed;
    try {
      landed = await this.producer!.publish(records, inputs);
    } catch (err) {
      // the backlog is set up again from the changelog, where these records are (or are not)
      throw err instanceof SonicError ? err : new SonicError('BROKER_UNAVAILABLE', `dispatcher transaction failed: ${(err as Error).message}`, { cause: err });
    }
    // where each dispatched record landed: in order within each partition of the sink
    const next = new Map(landed.filter((l) => l.topic === this.output).map((l) => [l.partition, l.baseOffset]));
    planned.slice(0, chosen.length).forEach((p, i) => {
      const at = next.get(p);
      if (at === undefined) return;
      (this.outstanding.get(p) ?? this.outstanding.set(p, []).get(p)!).push({ offset: at, cost: chosen[i]!.cost });
      this.outCount += 1;
      this.outCost += chosen[i]!.cost;
      next.set(p, at + 1n);
    });
    for (const p of [...this.full]) {
      if (this.queue.size >= this.options.maxBacklog) break;
      this.full.delete(p);
      this.consumer.resume({ topic: this.stage.input, partition: p });
    }
  }

  /** A record's cost and priority from the stage's estimates (cost 1, priority 0 when it has none or the record does not decode). */
  private async weigh(rec: InRecord): Promise<{ cost: number; priority: number }> {
    let cost = 1;
    let priority = 0;
    const spec = this.stage.dispatch!;
    if (rec.value && (spec.cost || spec.priority)) {
      try {
        const { value } = await this.codec.decode(rec.value);
        if (spec.cost) cost = boundedCost(spec.cost(value));
        if (spec.priority) priority = Math.min(9, Math.max(0, Math.round(finite(spec.priority(value), 0))));
      } catch (err) {
        this.logger.warn(
          { err, partition: rec.partition, offset: rec.offset },
          'record not decoded: dispatched with priority 0 and cost 1 (its worker decides what it is)',
        );
      }
    }
    return { cost, priority };
  }

  private async entryOf(rec: InRecord, now: number): Promise<Entry> {
    const { cost, priority } = await this.weigh(rec);
    return {
      id: `${rec.partition}:${rec.offset}`,
      key: rec.key,
      value: rec.value,
      headers: headersToStrings(rec.headers),
      cost,
      priority,
      enqueuedAt: now,
      partition: rec.partition,
      offset: BigInt(rec.offset),
    };
  }

  /** Sets the gauges from the running totals: the active replica's state, zeros on a standby (or while it sets up). */
  private report(on = this.active): void {
    const m = this.metrics;
    if (!m) return;
    const labels = { stage: this.stage.name };
    m.active.set(labels, on ? 1 : 0);
    m.backlogRecords.set(labels, on ? this.queue.size : 0);
    m.backlogSeconds.set(labels, on ? Math.max(0, this.queue.cost) : 0);
    m.outstandingRecords.set(labels, on ? this.outCount : 0);
    m.outstandingSeconds.set(labels, on ? Math.max(0, this.outCost) : 0);
    m.workers.set(labels, on ? this.workers.members.length : 0);
    m.busyWorkers.set(labels, on && this.outCount > 0 ? busyMembers(this.workers.members, this.outstanding) : 0);
  }

  private async closeProducer(): Promise<void> {
    const p = this.producer;
    this.producer = undefined;
    await p?.close().catch(() => undefined);
  }

  private async close(): Promise<void> {
    this.report(false);
    await this.consumer.stop().catch((err: unknown) => this.logger.warn({ err }, 'consumer stop failed'));
    await this.closeProducer();
    await this.offsets.close().catch(() => undefined);
  }

  private async fail(err: Error): Promise<void> {
    if (!this.lifecycle.can('failed')) return;
    this.logger.error({ err }, 'dispatcher failed');
    this.lifecycle.to('failed', err.message);
    this.stopping.abort(err);
    this.poke();
    await this.close().catch(() => undefined);
    this.failure?.(err);
  }
}

/**
 * Members of the workers' group (as last read) holding a partition with a record dispatched and
 * not yet committed: the workers a scale-down must not stop, whatever the seconds say (4 workers
 * each on a 300 s render are 4 busy GPUs, though 1200 s fit in 2 × a 600 s target).
 */
export function busyMembers(members: readonly { partitions: readonly number[] }[], outstanding: ReadonlyMap<number, readonly unknown[]>): number {
  let busy = 0;
  for (const m of members) if (m.partitions.some((p) => (outstanding.get(p)?.length ?? 0) > 0)) busy += 1;
  return busy;
}

function storedOf(e: Entry): Stored {
  return { k: e.key, v: e.value ? e.value.toString('base64') : null, h: e.headers, c: e.cost, p: e.priority, t: e.enqueuedAt };
}

/** Most worker-seconds one record is taken to cost: a week on one GPU (an estimate beyond it is a bug, not a task). */
export const MAX_COST_SECONDS = 7 * 86_400;

/**
 * A cost as the dispatcher uses it: a number in [0, MAX_COST_SECONDS]; anything else (NaN, a
 * negative or absurd estimate, a changelog entry that lies) is 1. A negative cost would keep a
 * worker under its lead for ever, a huge one would pin the autoscaler and drown the running sums.
 */
export function boundedCost(n: unknown): number {
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.min(n, MAX_COST_SECONDS) : 1;
}

function finite(n: number, dflt: number): number {
  return Number.isFinite(n) ? n : dflt;
}
