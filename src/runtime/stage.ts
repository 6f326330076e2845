/**
 * What a stage author writes: one declaration per stage — its input, its typed sinks, retry
 * tiers, concurrency, scaling — and a factory for its handler `(record, ctx) => result`. The
 * runtime turns it into a correct consumer/producer (exactly-once hops, retries, DLQ); the
 * handler never sees Kafka. Nothing here knows what a record means: status events are built by
 * the topology's {@link StatusHook}.
 */
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

declare const valueType: unique symbol;

/**
 * A topic as a stage sees it: its key in the topology (without the prefix) and the schema its
 * values have; `V` is the TypeScript type of those values. `sonicflow run` and `topology
 * validate` check that the topology's topic has this schema, so the type cannot lie.
 */
export interface TopicRef<V = unknown> {
  readonly topic: string;
  readonly schema: string;
  /** Type only (never set): the value type. Required, so that only {@link topicRefs} makes a TopicRef. */
  readonly [valueType]: V;
}

/**
 * A factory of typed topic references for a map of schema name → value type (generated from the
 * schemas): `const topic = topicRefs<Schemas>(); topic('tasks.encoded', 'task-encoded')` is a
 * `TopicRef<TaskEncoded>`, and a misspelt schema name does not compile.
 */
export function topicRefs<Schemas>() {
  return <S extends keyof Schemas & string>(topic: string, schema: S): TopicRef<Schemas[S]> => ({ topic, schema }) as unknown as TopicRef<Schemas[S]>;
}

/** Named sinks of a stage: sink name → topic. */
export type Sinks = Record<string, TopicRef>;

/** The value type of a topic reference. */
export type ValueOf<R> = R extends TopicRef<infer V> ? V : never;

/** One output record: a sink the declaration names, and a value of that sink's type. */
export type EmitOf<S extends Sinks> = {
  [K in keyof S & string]: {
    sink: K;
    value: ValueOf<S[K]>;
    /** Defaults to the input's key. */
    key?: string;
    headers?: Record<string, string>;
  };
}[keyof S & string];

/** Any output record (the runtime's untyped view). */
export interface Emit {
  sink: string;
  value: unknown;
  key?: string;
  headers?: Record<string, string>;
}

/** One input record, decoded. */
export interface StageRecord<V = unknown> {
  /** The record key (in Sonic, the task id). */
  key: string;
  value: V;
  /** 1 on the first try, +1 per retry. */
  attempt: number;
  topic: string;
  partition: number;
  offset: string;
  headers: Readonly<Record<string, string>>;
}

/**
 * A stage's state store as its handler sees it, scoped to the partition of the record being
 * handled (stores are partitioned like the input). Writes belong to the record: they are sent to
 * the store's changelog in the transaction that commits the record's outputs, and a record that
 * fails (retry, DLQ) or is abandoned leaves none. Reads see the record's own writes and those of
 * the earlier records of its batch. Values are JSON: what `get` returns is what JSON makes of
 * what `put` was given (a Date reads back as its ISO string).
 */
export interface KeyValueStore<V = unknown> {
  get(key: string): V | undefined;
  put(key: string, value: V): void;
  delete(key: string): void;
}

/** A state store a stage declares; the topology derives its changelog topic. */
export interface StoreDecl {
  doc: string;
  /**
   * Keep an entry this long (ms) after its last write, then drop it (Kafka Streams' windowed
   * stores): the changelog becomes `cleanup.policy=compact,delete` with this `retention.ms`, and
   * the runtime sweeps the local copy. Unset: entries stay until deleted.
   */
  retentionMs?: number;
  /**
   * Short-lived entries (each written, then deleted soon after): the changelog rolls a segment
   * every 10 minutes and is compacted once a tenth of it is dirty, so a restore reads little more
   * than the live entries (the active segment is never compacted; with the broker's default of a
   * week, a restore would read a week of writes and tombstones).
   */
  churn?: boolean;
}

export interface StageContext {
  readonly stage: string;
  /** The stage's declared state stores, by name (empty when it declares none). */
  readonly stores: Readonly<Record<string, KeyValueStore>>;
  /** Fires when the partition is revoked or the process stops: stop work, the result is dropped. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Reports progress in [0, 1] as a status event (best effort, outside the transaction). */
  progress(fraction: number): void;
  /** The stage's clock (the test driver's fake one under test). */
  now(): Date;
}

/** What `onFailure` may use: the stage's clock. */
export interface FailureContext {
  readonly stage: string;
  now(): Date;
}

/**
 * Fields a stage adds to its status events; the topology's status hook decides what they mean,
 * and a stage kit narrows the type (Sonic's `taskStage` to the task status fields).
 */
export type StatusFields = Readonly<Record<string, unknown>>;

export interface StageResult<S extends Sinks = Sinks, F extends StatusFields = StatusFields> {
  emit?: EmitOf<S>[];
  status?: F;
  /**
   * Drops the record on purpose, for this reason (e.g. `duplicate`): no outputs, no status event;
   * it is counted (`sonicflow_records_skipped_total{stage,reason}`) and its input offset committed.
   * Store writes the handler made are kept.
   */
  skip?: string;
}

/** The code of a stage, built in the process that runs it. */
export interface StageHandler<In = unknown, S extends Sinks = Sinks, F extends StatusFields = StatusFields> {
  /**
   * Does the work. Throw a SonicError with a code to fail: retryable codes go to the retry tiers,
   * others to the DLQ. Anything else thrown is a bug (INTERNAL, DLQ at once).
   */
  handle(record: StageRecord<In>, ctx: StageContext): Promise<StageResult<S, F>>;
  /** Emit a progress-0 status event when work on a record starts (for long stages). */
  reportStart?: boolean;
  /** Status fields for every event of a record, from its value. */
  statusOf?(value: In): F;
  /**
   * Called when a record fails for good in this stage (permanent error or retries exhausted): its
   * emits are published in the same transaction as the DLQ record.
   */
  onFailure?(record: StageRecord<In>, error: SonicError, ctx: FailureContext): StageResult<S, F>;
  /** Releases resources when the process stops. */
  close?(): Promise<void>;
}

export interface RetrySpec {
  /** Delay of each tier, ms; tier n is topic `<prefix>.<stage>.retry.<n>`. */
  delaysMs: number[];
  /** Total attempts including the first; beyond the last tier a failure goes to the DLQ. */
  maxAttempts: number;
}

export interface ScalingSpec {
  minReplicas: number;
  maxReplicas: number;
  /** KEDA lagThreshold: target lag per replica. */
  lagThreshold: number;
  /** KEDA activationLagThreshold: lag above which the stage wakes from zero. */
  activationLagThreshold: number;
  /** Target time to drain the backlog, s (sonicflow's own scaling rule). */
  targetDrainSeconds: number;
}

/** What one replica of a stage needs (deployment renderers read it; Kubernetes quantities). */
export interface ResourceSpec {
  requests: { cpu: string; memory: string };
  limits: { cpu: string; memory: string };
  /** GPUs per replica (0 or absent: none). */
  gpus?: number;
}

export interface BatchSpec {
  /** Records of one partition per transaction. */
  maxRecords: number;
  /** How long to wait to fill a batch, ms. */
  maxWaitMs: number;
}

/**
 * A stage, declared once: everything the topology, deploy, autoscaling and the runner need, and
 * `create`, which builds the handler from the process's dependencies `D`.
 */
export interface StageDeclaration<D = never, In = unknown, S extends Sinks = Sinks, F extends StatusFields = StatusFields> {
  name: string;
  doc: string;
  input: TopicRef<In>;
  sinks?: S;
  /** Whether the stage writes a status event per record (default true when the topology has a status topic). */
  emitsStatus?: boolean;
  retry?: Partial<RetrySpec>;
  /**
   * Handlers one process runs at once (default 1); records of one partition are handled in order.
   * A batch's transaction commits while the next batch (of another partition) is handled, so up
   * to twice as many partitions are worked on at once.
   */
  concurrency?: number;
  batch?: Partial<BatchSpec>;
  /**
   * The stage's consumer group session timeout, ms (6000 to 1800000): how soon a replica that died
   * without leaving (SIGKILL, a lost node) loses its partitions to the others. Unset: 30 s.
   * SONIC_SESSION_TIMEOUT_MS, when set, wins. Heartbeats go on while a handler works, so a long
   * handler needs no long session; a GPU stage declares a short one so that a dead worker's tasks
   * go to another within seconds.
   */
  sessionTimeoutMs?: number;
  scaling?: Partial<ScalingSpec>;
  /** What one replica needs (CPU, memory, GPUs); renderers use a small default without it. */
  resources?: ResourceSpec;
  /**
   * State stores, by name (`[a-z][a-z0-9-]*`): each gets a compacted changelog topic
   * `<prefix>.<stage>.<store>-changelog` partitioned like the input, and the handler reaches it as
   * `ctx.stores.<name>`.
   */
  stores?: Record<string, StoreDecl>;
  /**
   * A dispatcher instead of a handler (see `dispatcher.ts`): the stage holds its input's records
   * as a backlog and hands each to a free worker of the stage `dispatch.workers`, through its one
   * sink (that stage's input). Declare it with {@link defineDispatch}.
   */
  dispatch?: DispatchDecl<In>;
  /**
   * Builds the handler from the process's dependencies. Its emits are checked against `sinks`
   * (NoInfer: the sinks are what the declaration names, never widened by what the handler emits;
   * a stage without sinks can emit nothing).
   */
  create: (deps: D) => StageHandler<In, NoInfer<S>, NoInfer<F>>;
}

/** What a dispatcher stage declares besides its input and its one sink. */
export interface DispatchDecl<In = unknown> {
  /** The stage whose replicas are the workers: its input is the dispatcher's sink. */
  workers: string;
  /**
   * A record's estimated work in worker-seconds (GPU-seconds: how long one worker will take on
   * it), default 1. The longest of one priority goes first, and the workers are scaled on the
   * sum over the records waiting and dispatched (`sonicflow_dispatch_*_seconds`) against their
   * `scaling.targetDrainSeconds`: a unit other than seconds scales them wrongly.
   */
  cost?: (value: In) => number;
  /** A record's priority, 0 (lowest) to 9 (default 0). */
  priority?: (value: In) => number;
}

/**
 * Declares a dispatcher stage: the records of `input` wait in its backlog (a store with a
 * compacted changelog) until a worker of `dispatch.workers` is free, then go to that worker's
 * partition of the one sink. It emits no status and has no retry tiers; an undecodable record
 * goes on with priority 0 and cost 1 (its worker dead-letters it).
 */
export function defineDispatch<In, S extends Sinks>(decl: {
  name: string;
  doc: string;
  input: TopicRef<In>;
  sinks: S;
  dispatch: DispatchDecl<In>;
  scaling?: Partial<ScalingSpec>;
  resources?: ResourceSpec;
}): StageDeclaration<unknown, In, S> {
  if (Object.keys(decl.sinks).length !== 1)
    throw new SonicError('TOPOLOGY_INVALID', `dispatcher ${decl.name}: exactly one sink (its workers' input), got ${Object.keys(decl.sinks).length}`);
  return {
    ...decl,
    emitsStatus: false,
    retry: { delaysMs: [], maxAttempts: 1 },
    // a standby takes over within seconds of the active dispatcher's death
    sessionTimeoutMs: 6000,
    scaling: { minReplicas: 2, maxReplicas: 2, ...decl.scaling },
    stores: { backlog: { doc: 'records waiting for a free worker, by input partition and offset; a tombstone once dispatched', churn: true } },
    create: () => {
      throw new SonicError('INTERNAL', `stage ${decl.name} is a dispatcher: \`sonicflow run\` runs it without a handler`);
    },
  };
}

/** A stage declaration of any input, sinks and dependencies (for lists of stages). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each stage has its own input, sinks and deps
export type AnyStage = StageDeclaration<any, any, any, any>;

/** Keeps a declaration's types: the input's value type and the sinks' names and value types. */
export function defineStage<D, In, S extends Sinks = Record<never, TopicRef>, F extends StatusFields = StatusFields>(
  decl: StageDeclaration<D, In, S, F>,
): StageDeclaration<D, In, S, F> {
  return decl;
}

/** What a status event is about. */
export type StatusPhase = 'progress' | 'succeeded' | 'retrying' | 'failed';

export interface StatusTransition<F extends StatusFields = StatusFields> {
  stage: string;
  /** The record key. */
  key: string;
  /**
   * progress: work started or moved on (`progress` set); succeeded: the stage's outputs are
   * written; retrying: the record waits in a retry tier; failed: it went to the DLQ.
   */
  phase: StatusPhase;
  /** The attempt the event describes (for `retrying`, the next one). */
  attempt: number;
  progress?: number;
  /** Why it is retrying or failed; give clients only `publicError(error)`. */
  error?: SonicError;
  /** The stage's `statusOf(value)` merged with its result's `status`. */
  fields: F;
  at: Date;
}

/**
 * Turns the runtime's view of a record's progress into the status topic's value: the topology
 * supplies it (in Sonic, task states derived from the stage order). Returns undefined to write no
 * event (for example, for a key that names no task).
 */
export interface StatusHook<F extends StatusFields = StatusFields> {
  /** The schema of the values it builds: validation checks it is the status topic's. */
  readonly schema: string;
  event(transition: StatusTransition<F>): unknown;
}
