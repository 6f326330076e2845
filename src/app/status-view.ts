/**
 * The API's view of every task, materialised from the compacted status topic (a KTable kept in a
 * state store, not in memory): the latest event per task id, indexed by tenant and time and by
 * tenant and state for listings, with a change stream (rxjs) that feeds the SSE endpoint. Events
 * of one task arrive in order (same key, same partition); a stale best-effort progress event
 * never moves a task backwards past a later state. A tombstone (the retention janitor's) removes
 * the task.
 *
 * Rows, index entries and the topic offsets they reflect are written in one store transaction per
 * fetched batch, so a restart resumes reading where the store stopped instead of replaying the
 * topic; see docs/architecture.md ("State stores").
 */
import { Subject, type Observable } from 'rxjs';
import type { ExpiredTask, RetentionSource } from './retention.js';
import { SonicError } from '../core/errors.js';
import { sleep } from '../core/retry.js';
import { StateStore, type Table } from '../runtime/store.js';
import type { TaskKey, TaskState } from '../domain/records.js';
import type { Topology } from '../runtime/topology.js';
import { idempotencyKeysTopic } from '../domain/paths.js';
import { claim, Followed, type FollowerDeps } from './status-view/follow.js';
import { RANK, TERMINAL, supersedes, type ListPage, type ListQuery, type StatusEvent } from './status-view/model.js';

export { TASK_STATES, TERMINAL, supersedes, toView, type ListPage, type ListQuery, type StatusEvent, type TaskView } from './status-view/model.js';

export interface StatusViewOptions extends FollowerDeps {
  topic: string;
  schema: string;
  /** The compacted topic of idempotent requests (key and body fingerprint) and its schema. */
  keys: { topic: string; schema: string };
  /** Directory of the view's store: one per API process (a lock file refuses a second one). */
  dir: string;
  /**
   * A store last written longer ago than this is rebuilt rather than resumed: the topics'
   * `delete.retention.ms`, after which compaction drops tombstones a resumed view would miss.
   */
  maxCheckpointAgeMs?: number;
  /**
   * How often a view that follows its topics (caught up, not failed) marks its store current,
   * ms; it marks it this far behind now (what a fetch may lag). Default 60,000.
   */
  markCurrentEveryMs?: number;
  /** What the error says to do when another process holds `dir` (default: the API's advice). */
  lockHint?: string;
}

/**
 * The topics a status view follows in `topology` and how old its checkpoint may be: the options
 * the API and `sonicflow gc` open their views with.
 */
export function statusViewTopics(topology: Topology): Pick<StatusViewOptions, 'topic' | 'schema' | 'keys' | 'maxCheckpointAgeMs'> {
  const topic = topology.statusTopic;
  const keysTopic = idempotencyKeysTopic(topology.prefix);
  const schema = topology.topics[topic]?.valueSchema;
  const keySchema = topology.topics[keysTopic]?.valueSchema;
  if (!schema || !keySchema) throw new SonicError('TOPOLOGY_INVALID', `the topology lacks ${topic} or ${keysTopic}`);
  return {
    topic,
    schema,
    keys: { topic: keysTopic, schema: keySchema },
    // Kafka's default delete.retention.ms is one day
    maxCheckpointAgeMs: Math.min(...[topic, keysTopic].map((t) => Number(topology.topics[t]?.configs['delete.retention.ms'] ?? 86_400_000))),
  };
}

const TASKS = 'tasks';
const BY_TIME = 'tasks-by-tenant-time';
const BY_STATE = 'tasks-by-tenant-state';
const KEYS = 'idempotency-keys';
/** Every tenant's tasks by creation time, and by state then creation time: the operators' listings. */
const ALL_BY_TIME = 'tasks-by-time';
const ALL_BY_STATE = 'tasks-by-state';
/** Each task's events as they were applied, oldest first: its timeline. */
const HISTORY = 'task-history';
/** Most events kept in a task's timeline (progress ticks within a state are not kept). */
const MAX_HISTORY = 200;
/** The tables this version of the view writes: a store written by an older version is rebuilt. */
const LAYOUT = 2;
/** Ended tasks and the others, by last change: what the retention janitor reads. */
const ENDED = 'ended-by-update';
const ACTIVE = 'active-by-update';
/** When the store last applied a batch (ms since the epoch), under key `applied_at`. */
const META = 'meta';

/** `created_at` as a fixed-width, sortable key part. */
const timeKey = (e: StatusEvent): string => (e.created_at ?? e.at).toISOString();
const timeIndexKey = (e: StatusEvent): string => `${e.tenant_id ?? ''}/${timeKey(e)}/${e.task_id}`;
const stateIndexKey = (e: StatusEvent): string => `${e.tenant_id ?? ''}/${e.state}/${timeKey(e)}/${e.task_id}`;
const updateIndexKey = (e: StatusEvent): string => `${e.at.toISOString()}/${e.task_id}`;
const allTimeKey = (e: StatusEvent): string => `${timeKey(e)}/${e.task_id}`;
const allStateKey = (e: StatusEvent): string => `${e.state}/${timeKey(e)}/${e.task_id}`;

export class StatusView {
  private readonly subject = new Subject<StatusEvent>();
  private readonly store: StateStore;
  private readonly tasks: Table<StatusEvent>;
  private readonly byTime: Table<string>;
  private readonly byState: Table<string>;
  private readonly keys: Table<TaskKey>;
  private readonly ended: Table<string>;
  private readonly active: Table<string>;
  private readonly meta: Table<number>;
  private readonly allByTime: Table<string>;
  private readonly allByState: Table<string>;
  private readonly history: Table<StatusEvent>;
  private readonly status: Followed<StatusEvent>;
  private readonly keyLog: Followed<TaskKey>;
  private readonly release: () => void;
  private pending: StatusEvent[] = [];
  /** Every accepted change, in order. */
  readonly changes$: Observable<StatusEvent> = this.subject.asObservable();
  readonly topic: string;

  constructor(private readonly o: StatusViewOptions) {
    this.topic = o.topic;
    this.store = StateStore.open({ path: o.dir });
    try {
      this.release = claim(o.dir, o.lockHint);
    } catch (err) {
      void this.store.close();
      throw err;
    }
    this.tasks = this.store.table<StatusEvent>(TASKS);
    this.byTime = this.store.table<string>(BY_TIME);
    this.byState = this.store.table<string>(BY_STATE);
    this.keys = this.store.table<TaskKey>(KEYS);
    this.ended = this.store.table<string>(ENDED);
    this.active = this.store.table<string>(ACTIVE);
    this.meta = this.store.table<number>(META);
    this.allByTime = this.store.table<string>(ALL_BY_TIME);
    this.allByState = this.store.table<string>(ALL_BY_STATE);
    this.history = this.store.table<StatusEvent>(HISTORY);
    this.status = new Followed<StatusEvent>(
      o.topic,
      o.schema,
      this.store,
      o,
      (records) => {
        for (const e of records) {
          if ('tombstone' in e) this.removeTask(e.tombstone);
          else {
            this.record(e);
            const row = this.applyOne(e);
            if (row) this.pending.push(row);
          }
        }
        void this.meta.put('applied_at', Date.now());
        void this.meta.put('layout', LAYOUT);
      },
      // changes reach the event streams once their batch is in the store
      () => {
        const changed = this.pending;
        this.pending = [];
        for (const e of changed) this.subject.next(e);
      },
    );
    this.keyLog = new Followed<TaskKey>(o.keys.topic, o.keys.schema, this.store, o, (records) => {
      for (const k of records) {
        if ('tombstone' in k) void this.keys.remove(k.tombstone);
        // the last record of a task id, as compaction keeps it: two replicas racing one key with
        // two bodies write two records, and a view rebuilt after compaction sees only the last;
        // every view must hold the same fingerprint, whenever it was built
        else void this.keys.put(k.task_id, k);
      }
    });
  }

  private isCaughtUp = false;
  /** Marks the store current while the view follows its topics (see `start`). */
  private currentTimer: NodeJS.Timeout | undefined;

  /** Resolves once the view has read what the topics held when it started. */
  get caughtUp(): Promise<void> {
    return Promise.all([this.status.tail.caughtUp, this.keyLog.tail.caughtUp]).then(() => undefined);
  }

  /**
   * Settles when the view stopped following a topic for good (see TopicTail's `failed`): the
   * process should stop, saying why (a missing READ ACL is KAFKA_NOT_AUTHORIZED). Never settles
   * while the view runs.
   */
  get failed(): Promise<SonicError> {
    return Promise.race([this.status.tail.failed, this.keyLog.tail.failed, this.status.broken, this.keyLog.broken]);
  }

  /** True once `caughtUp` has resolved. */
  get ready(): boolean {
    return this.isCaughtUp;
  }

  /** Records read from the topics since start: 0 for a view resumed from a store that was up to date. */
  get recordsRead(): number {
    return this.status.read + this.keyLog.read;
  }

  /**
   * Resolves once the view has caught up and applied everything committed to the status topic
   * before this call (a batch job's "read it all", such as `sonicflow gc`), or `waitMs` has passed;
   * whether it got there.
   */
  async settle(waitMs: number): Promise<boolean> {
    const deadline = Date.now() + waitMs;
    // the timer goes when the view catches up first: no long wait left behind in the process
    const timer = new AbortController();
    const failure = this.failed.then((err) => {
      throw err;
    });
    await Promise.race([this.caughtUp, sleep(waitMs, timer.signal).catch(() => undefined), failure]).finally(() => timer.abort());
    timer.abort();
    while (!this.ready && Date.now() < deadline) await sleep(10);
    return this.ready && (await this.status.reachAll(Math.max(0, deadline - Date.now())));
  }

  /** Tasks in the view. */
  get size(): number {
    return this.tasks.count();
  }

  /**
   * Starts following the topics from the store's checkpoints. A checkpoint beyond a topic's end
   * (the topic was deleted and made again) empties the store, which then rebuilds from the topics.
   */
  async start(): Promise<void> {
    void this.caughtUp.then(() => (this.isCaughtUp = true));
    // A view that follows its topics is current even when nothing is written for days: it marks
    // the store so (a minute behind, what a fetch may lag) once a minute while it is caught up and
    // has not failed, so that a restart of an idle deployment resumes rather than rebuilds.
    const every = this.o.markCurrentEveryMs ?? 60_000;
    let failedNow = false;
    void this.failed.then(() => (failedNow = true));
    this.currentTimer = setInterval(() => {
      if (!this.isCaughtUp || failedNow) return;
      try {
        this.store.transaction(() => void this.meta.put('applied_at', Date.now() - every));
      } catch (err) {
        this.o.logger.warn({ err }, 'status view store not marked current');
      }
    }, every);
    this.currentTimer.unref();
    let from = [await this.status.checkpoint(), await this.keyLog.checkpoint()];
    const appliedAt = this.meta.get('applied_at');
    const tooOld = appliedAt !== undefined && this.o.maxCheckpointAgeMs !== undefined && Date.now() - appliedAt > this.o.maxCheckpointAgeMs;
    // a store of an older layout lacks tables this version reads (operators' listings, timelines)
    const oldLayout = appliedAt !== undefined && this.meta.get('layout') !== LAYOUT;
    if (from.some((f) => f === undefined) || tooOld || oldLayout) {
      this.o.logger.warn(
        { topic: this.o.topic, store: this.o.dir, applied_at: appliedAt === undefined ? null : new Date(appliedAt).toISOString() },
        tooOld
          ? 'status view store is older than the topics keep tombstones: rebuilding it'
          : oldLayout
            ? 'status view store was written by an older version: rebuilding it'
            : 'status view store is ahead of its topics (were they made again?): rebuilding it',
      );
      this.store.clear();
      from = [new Map(), new Map()];
    }
    void this.caughtUp.then(() => this.o.logger.info({ tasks: this.size, records_read: this.recordsRead }, 'status view caught up'));
    this.o.logger.info({ tasks: this.size, resumed_partitions: from[0]!.size, partitions: this.status.partitions }, 'status view resumes from its store');
    await this.status.start(from[0]!);
    await this.keyLog.start(from[1]!);
  }

  /**
   * Writes `e` when it supersedes the row, with what earlier events said that it does not repeat;
   * returns that row (what the event streams send), or undefined. Inside a store transaction.
   */
  private applyOne(e: StatusEvent): StatusEvent | undefined {
    const current = this.tasks.get(e.task_id);
    if (!supersedes(current, e)) return undefined;
    // stage events may not repeat what the QUEUED event said, nor later ones the face preprocess found
    const row: StatusEvent = {
      ...e,
      created_at: e.created_at ?? current?.created_at ?? null,
      tenant_id: e.tenant_id ?? current?.tenant_id ?? null,
      face: e.face ?? current?.face ?? null,
    };
    if (current) this.unindex(current);
    void this.tasks.put(e.task_id, row);
    void this.byTime.put(timeIndexKey(row), row.task_id);
    void this.byState.put(stateIndexKey(row), row.task_id);
    void this.allByTime.put(allTimeKey(row), row.task_id);
    void this.allByState.put(allStateKey(row), row.task_id);
    void (TERMINAL.has(row.state) ? this.ended : this.active).put(updateIndexKey(row), row.task_id);
    return row;
  }

  private unindex(row: StatusEvent): void {
    void this.byTime.remove(timeIndexKey(row));
    void this.byState.remove(stateIndexKey(row));
    void this.allByTime.remove(allTimeKey(row));
    void this.allByState.remove(allStateKey(row));
    void (TERMINAL.has(row.state) ? this.ended : this.active).remove(updateIndexKey(row));
  }

  private removeTask(taskId: string): void {
    const current = this.tasks.get(taskId);
    if (!current) return;
    void this.tasks.remove(taskId);
    this.unindex(current);
    for (const { key } of this.history.scan(`${taskId}/`)) void this.history.remove(key);
  }

  /**
   * Adds `e` to its task's timeline (inside a store transaction), whether or not it supersedes
   * the row: a stale event still happened. A progress tick within the state the timeline is in
   * is not kept, and a timeline holds at most MAX_HISTORY events.
   */
  private record(e: StatusEvent): void {
    const prefix = `${e.task_id}/`;
    const last = this.history.scan(prefix, { limit: 1, reverse: true })[0]?.value;
    if (last && last.state === e.state && last.stage === e.stage && last.attempt === e.attempt && e.error_code === null && e.progress !== null) return;
    if (this.history.scan(prefix, { limit: MAX_HISTORY }).length >= MAX_HISTORY) return;
    void this.history.put(`${prefix}${e.at.toISOString()}/${RANK[e.state]}/${e.attempt}`, e);
  }

  /** The task's events as applied, oldest first (empty for a task the view does not know). */
  timeline(taskId: string): StatusEvent[] {
    return this.history.scan(`${taskId}/`, { limit: MAX_HISTORY }).map((x) => x.value);
  }

  /**
   * Where the retention janitor finds what expired: ended tasks (SUCCEEDED, FAILED) and, for its
   * report, tasks that never ended, each by last change, oldest first.
   */
  retentionSource(): RetentionSource {
    const older = (index: Table<string>, before: Date, limit: number): ExpiredTask[] => {
      const bound = before.toISOString();
      const out: ExpiredTask[] = [];
      for (const { key, value } of index.scan('', { limit })) {
        if (key >= bound) break;
        const e = this.tasks.get(value);
        if (e) out.push({ task_id: e.task_id, tenant_id: e.tenant_id, state: e.state, updated_at: e.at });
      }
      return out;
    };
    // a view still catching up may hold rows that later events change (a replayed FAILED task
    // that has since succeeded): it lists nothing until it has read what the topics held
    return {
      expired: async (before, limit) => (this.ready ? older(this.ended, before, limit) : []),
      stuck: async (before, limit) => (this.ready ? older(this.active, before, limit) : []),
      current: async (taskId) => {
        const e = this.tasks.get(taskId);
        return e && { task_id: e.task_id, tenant_id: e.tenant_id, state: e.state, updated_at: e.at };
      },
    };
  }

  /** Applies one event (also used by the API for its own QUEUED events: read your writes). */
  apply(e: StatusEvent): void {
    const row = this.store.transaction(() => {
      this.record(e);
      return this.applyOne(e);
    });
    if (row) this.subject.next(row);
  }

  get(taskId: string): StatusEvent | undefined {
    return this.tasks.get(taskId);
  }

  /**
   * The task, or undefined once the view has read everything committed to the task's partition
   * before this call (so a task another replica accepted a moment ago is found), waiting at most
   * `waitMs` for that.
   */
  async find(taskId: string, waitMs: number): Promise<StatusEvent | undefined> {
    await this.status.reach(taskId, waitMs, () => this.tasks.get(taskId) !== undefined);
    return this.get(taskId);
  }

  /**
   * The first request of an idempotent task (its key and body fingerprint), read up to what was
   * committed before this call like {@link find}.
   */
  async findKey(taskId: string, waitMs: number): Promise<TaskKey | undefined> {
    await this.keyLog.reach(taskId, waitMs, () => this.keys.get(taskId) !== undefined);
    return this.keys.get(taskId);
  }

  /**
   * One page of a tenant's tasks, by creation time, optionally of one state, read after the view
   * has applied everything committed before this call (waiting at most `waitMs` for that), so a
   * task accepted by another replica a moment ago is listed.
   */
  async list(q: ListQuery, waitMs = 0): Promise<ListPage> {
    await this.status.reachAll(waitMs);
    return this.listNow(q);
  }

  /**
   * Tasks created at or after `since`, every tenant's, counted by their state now (the console's
   * overview); at most `limit` tasks are examined, `complete` says whether that was all of them.
   */
  countByState(since: Date, limit = 100_000): { counts: Partial<Record<TaskState, number>>; complete: boolean } {
    const counts: Partial<Record<TaskState, number>> = {};
    const entries = this.allByTime.scan('', { from: since.toISOString(), limit: limit + 1 });
    for (const { value } of entries.slice(0, limit)) {
      const e = this.tasks.get(value);
      if (e) counts[e.state] = (counts[e.state] ?? 0) + 1;
    }
    return { counts, complete: entries.length <= limit };
  }

  private listNow(q: ListQuery): ListPage {
    const scope = q.tenant === undefined ? '' : `${q.tenant}/`;
    const prefix = q.state ? `${scope}${q.state}/` : scope;
    const index = q.tenant === undefined ? (q.state ? this.allByState : this.allByTime) : q.state ? this.byState : this.byTime;
    let after: string | undefined;
    if (q.cursor !== undefined) {
      after = Buffer.from(q.cursor, 'base64url').toString('utf8');
      if (!after.startsWith(prefix))
        throw new SonicError('INVALID_REQUEST', 'cursor does not belong to this listing', { safe: true, details: { field: 'cursor' } });
    }
    const entries = index.scan(prefix, {
      limit: q.limit + 1,
      ...(after === undefined ? {} : { after }),
      ...(q.since ? { from: `${prefix}${q.since.toISOString()}` } : {}),
      reverse: (q.order ?? 'desc') === 'desc',
    });
    const page = entries.slice(0, q.limit);
    const tasks = page.map((x) => this.tasks.get(x.value)).filter((e): e is StatusEvent => e !== undefined);
    return { tasks, next_cursor: entries.length > q.limit ? Buffer.from(page.at(-1)!.key, 'utf8').toString('base64url') : null };
  }

  async stop(): Promise<void> {
    clearInterval(this.currentTimer);
    this.subject.complete();
    this.status.stopped = this.keyLog.stopped = true;
    await this.status.tail.stop().catch(() => undefined);
    await this.keyLog.tail.stop().catch(() => undefined);
    await this.store.close();
    this.release();
  }
}
