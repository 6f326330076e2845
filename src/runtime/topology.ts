/**
 * The topology as data: stages, the topics between them, retry tiers, DLQs, schemas and scaling
 * bounds. `defineTopology` derives the per-stage retry and DLQ topics so a declaration only names
 * what is particular to the pipeline. Printing and checking live in `describe.ts` / `validate.ts`.
 */

import type { CompatibilityLevel } from '../serde/compat.js';
import { SonicError } from '../core/errors.js';
import type { AnyStage, BatchSpec, ResourceSpec, RetrySpec, ScalingSpec, Sinks, StageDeclaration, StageHandler, StatusHook } from './stage.js';

export type { BatchSpec, ResourceSpec, RetrySpec, ScalingSpec } from './stage.js';

export type Compatibility = CompatibilityLevel;

/**
 * What a topic is for; retry and DLQ topics carry the bytes of their stage's input, a changelog
 * the JSON values of a stage's state store (no schema, no subject).
 */
export type TopicRole = 'stream' | 'status' | 'retry' | 'dlq' | 'changelog';

export interface TopicSpec {
  name: string;
  role: TopicRole;
  partitions: number;
  replicationFactor: number;
  /** Broker topic configs (retention.ms, cleanup.policy, ...), as strings like kafka-configs takes them. */
  configs: Record<string, string>;
  /** Schema file base name under `schemas/` (`task-request` → `schemas/task-request.avsc`). */
  valueSchema?: string;
  /** Compatibility level of `<topic>-value`; only topics whose role registers a subject. */
  compatibility: Compatibility;
  /** Producers and consumers outside the topology (the API, webhooks receivers, operators). */
  external?: { producers?: string[]; consumers?: string[] };
  /**
   * How stages pick a partition when they write here: 'key' (murmur2 of the task id, the Java
   * client's rule; the default) or 'balanced' (each stage process deals its records round robin
   * over the partitions). 'balanced' evens out the backlog per partition of a slow stage's input,
   * where one record per task makes key order moot; see docs/runtime.md.
   */
  partitioning?: Partitioning;
  doc: string;
}

export type Partitioning = 'key' | 'balanced';

export interface StageSpec {
  name: string;
  doc: string;
  /** Input topic (the retry tier topics are consumed too). */
  input: string;
  /** Named sinks: sink name → topic. */
  outputs: Record<string, string>;
  /** Whether the stage writes a status event per record into the status topic. */
  emitsStatus: boolean;
  retry: RetrySpec & { topics: string[] };
  dlq: string;
  /** Handlers one process runs at once (see `StageDeclaration.concurrency`). */
  concurrency: number;
  /** The consumer group session timeout the stage declares, ms (see `StageDeclaration.sessionTimeoutMs`). */
  sessionTimeoutMs?: number;
  /** Records of one partition per transaction, and how long to wait to fill a batch. */
  batch: BatchSpec;
  scaling: ScalingSpec;
  /** What one replica needs, when the stage declares it. */
  resources?: ResourceSpec;
  /** State stores and their changelog topics (empty: the stage keeps no state). */
  stores: StoreSpec[];
  /**
   * The schemas the stage's code was typed against (its input and each sink), from a stage
   * declaration; validation checks them against the topics' schemas.
   */
  contract?: { input: string; sinks: Record<string, string> };
  /** Builds the stage's handler; only stages declared with code have one (not a JSON topology). */
  create?: (deps: never) => StageHandler;
  /** A dispatcher stage (see `dispatcher.ts`): its workers' stage, and how it weighs records. */
  dispatch?: DispatchSpec;
}

export interface DispatchSpec {
  /** The stage whose consumer group holds the partitions of the dispatcher's sink. */
  workers: string;
  /** A record's estimated work in worker-seconds (GPU-seconds); see `DispatchDecl.cost` in stage.ts. */
  cost?: (value: unknown) => number;
  priority?: (value: unknown) => number;
}

export interface StoreSpec {
  name: string;
  doc: string;
  /** `<prefix>.<stage>.<store>-changelog`: compacted, partitioned like the stage's input. */
  changelog: string;
  /** Entries go this long (ms) after their last write; see `StoreDecl.retentionMs` in stage.ts. */
  retentionMs?: number;
}

/** What topics need from the cluster in one environment; see `src/runtime/profiles.ts`. */
export interface EnvironmentProfile {
  /** Replicas of every partition of every topic. */
  replicationFactor: number;
  /** Topic config `min.insync.replicas`; unset leaves the broker's default (1 unless configured). */
  minInsyncReplicas?: number;
  doc?: string;
}

export interface Topology {
  name: string;
  prefix: string;
  /** Environment profiles by name (DEFAULT_PROFILES when absent), and the one applied, if any. */
  profiles?: Record<string, EnvironmentProfile>;
  profile?: string;
  /** Topic that every status-emitting stage writes. */
  statusTopic: string;
  /** Builds the status events (see StatusHook); a topology without one can be deployed, not run. */
  statusHook?: StatusHook;
  topics: Record<string, TopicSpec>;
  stages: StageSpec[];
}

export interface TopicDecl {
  role?: 'stream' | 'status';
  partitions?: number;
  configs?: Record<string, string>;
  valueSchema?: string;
  compatibility?: Compatibility;
  external?: { producers?: string[]; consumers?: string[] };
  partitioning?: Partitioning;
  doc: string;
}

/** A stage as plain data (no code): a declaration's settings, with topic keys instead of references. */
export type StageDecl = Pick<
  StageDeclaration,
  'doc' | 'emitsStatus' | 'retry' | 'concurrency' | 'batch' | 'scaling' | 'resources' | 'stores' | 'sessionTimeoutMs'
> & {
  /** Topic key (without prefix) of the input. */
  input: string;
  /** Sink name → topic key (without prefix). */
  outputs?: Record<string, string>;
};

export interface TopologyDecl {
  name: string;
  prefix: string;
  /** Topic key of the status topic, and the hook that builds its events. */
  status: string | { topic: string; hook: StatusHook };
  defaults?: {
    /** Multiplies every retry delay (tests shrink them; the tiers stay the same topics). */
    retryDelayScale?: number;
    partitions?: number;
    replicationFactor?: number;
    retry?: RetrySpec;
    retryTopicConfigs?: Record<string, string>;
    dlqTopicConfigs?: Record<string, string>;
  };
  topics: Record<string, TopicDecl>;
  /** Environment profiles by name (see `withProfile`); DEFAULT_PROFILES when absent. */
  profiles?: Record<string, EnvironmentProfile>;
  /**
   * The stages, in order: declarations with their code (see `defineStage`), or plain data by name
   * (a topology that is only described, validated or deployed).
   */
  stages: readonly AnyStage[] | Record<string, StageDecl>;
}

export const DEFAULT_PARTITIONS = 12;
/**
 * A stage's batch unless it declares one: up to 500 records of a partition per transaction, and
 * no more than 100 ms of handling. The time bound keeps a slow stage's batches small (a record that
 * takes longer than 100 ms is a batch of its own), so the record bound only matters for fast
 * records, where a larger transaction is the cheaper one (measured in docs/performance.md; 50,
 * the earlier default, moved a third of the records per second).
 */
export const DEFAULT_BATCH: BatchSpec = { maxRecords: 500, maxWaitMs: 100 };
export const DEFAULT_RETRY: RetrySpec = { delaysMs: [5_000, 30_000, 120_000], maxAttempts: 4 };
const DAY_MS = 86_400_000;

/** Full topic name for a topic key: `sonic` + `tasks.requested` → `sonic.tasks.requested`. */
export function topicName(prefix: string, key: string): string {
  return `${prefix}.${key}`;
}

/**
 * Expands a declaration into a full topology: prefixes topic names, applies defaults and adds
 * each stage's retry tier topics and DLQ with the stage input's schema. Does not validate;
 * see `validateTopology`.
 */
export function defineTopology(decl: TopologyDecl): Topology {
  const partitions = decl.defaults?.partitions ?? DEFAULT_PARTITIONS;
  const replicationFactor = decl.defaults?.replicationFactor ?? 1;
  const retryDefault = decl.defaults?.retry ?? DEFAULT_RETRY;
  const topics: Record<string, TopicSpec> = {};
  const full = (key: string): string => topicName(decl.prefix, key);

  for (const [key, t] of Object.entries(decl.topics)) {
    const name = full(key);
    topics[name] = {
      name,
      role: t.role ?? 'stream',
      partitions: t.partitions ?? partitions,
      replicationFactor,
      configs: { ...t.configs },
      ...(t.valueSchema === undefined ? {} : { valueSchema: t.valueSchema }),
      compatibility: t.compatibility ?? 'BACKWARD',
      ...(t.external === undefined ? {} : { external: t.external }),
      ...(t.partitioning === undefined ? {} : { partitioning: t.partitioning }),
      doc: t.doc,
    };
  }

  const scale = decl.defaults?.retryDelayScale ?? 1;
  if (!(Number.isFinite(scale) && scale > 0)) throw new SonicError('TOPOLOGY_INVALID', `retryDelayScale must be a number > 0, got ${String(scale)}`);
  const scaled = (ms: number[]): number[] => (scale === 1 ? ms : ms.map((d) => Math.max(1, Math.round(d * scale))));
  const stages: StageSpec[] = [];
  for (const [stageName, s] of stageEntries(decl.stages)) {
    const input = full(s.input);
    const inputSpec = topics[input];
    const derived = (key: string, role: 'retry' | 'dlq' | 'changelog', doc: string, configs: Record<string, string>): string => {
      const name = full(key);
      topics[name] = {
        name,
        role,
        partitions: inputSpec?.partitions ?? partitions,
        replicationFactor,
        configs: { ...configs },
        ...(inputSpec?.valueSchema === undefined || role === 'changelog' ? {} : { valueSchema: inputSpec.valueSchema }),
        compatibility: inputSpec?.compatibility ?? 'BACKWARD',
        doc,
      };
      return name;
    };
    const delaysMs = scaled(s.retry?.delaysMs ?? retryDefault.delaysMs);
    const retryTopics = delaysMs.map((delay, i) =>
      derived(
        `${stageName}.retry.${i + 1}`,
        'retry',
        `Retry tier ${i + 1} of ${stageName}: records become due ${delay} ms after their failure.`,
        decl.defaults?.retryTopicConfigs ?? { 'retention.ms': String(7 * DAY_MS) },
      ),
    );
    const dlq = derived(
      `${stageName}.dlq`,
      'dlq',
      `Dead letters of ${stageName}: original bytes plus error context headers.`,
      decl.defaults?.dlqTopicConfigs ?? { 'retention.ms': String(30 * DAY_MS) },
    );
    const stores = Object.entries(s.stores ?? {}).map(([store, d]): StoreSpec => {
      if (d.retentionMs !== undefined && !(Number.isInteger(d.retentionMs) && d.retentionMs > 0))
        throw new SonicError(
          'TOPOLOGY_INVALID',
          `stage ${stageName}, store ${store}: retentionMs must be a whole number of ms > 0, got ${String(d.retentionMs)}`,
        );
      const kept = d.retentionMs === undefined ? '' : ` Entries go ${d.retentionMs} ms after their last write.`;
      return {
        name: store,
        doc: d.doc,
        changelog: derived(`${stageName}.${store}-changelog`, 'changelog', `Changelog of ${stageName}'s store ${store}: ${d.doc}${kept}`, {
          ...(d.retentionMs === undefined
            ? { 'cleanup.policy': 'compact' }
            : { 'cleanup.policy': 'compact,delete', 'retention.ms': String(d.retentionMs), 'segment.ms': String(d.retentionMs) }),
          // entries that live minutes: small segments, compacted early, tombstones kept an hour
          ...(d.churn ? { 'segment.ms': String(600_000), 'min.cleanable.dirty.ratio': '0.1', 'delete.retention.ms': String(3_600_000) } : {}),
        }),
        ...(d.retentionMs === undefined ? {} : { retentionMs: d.retentionMs }),
      };
    });
    stages.push({
      name: stageName,
      doc: s.doc,
      input,
      outputs: Object.fromEntries(Object.entries(s.outputs ?? {}).map(([sink, key]) => [sink, full(key)])),
      emitsStatus: s.emitsStatus ?? true,
      retry: { delaysMs, maxAttempts: s.retry?.maxAttempts ?? Math.max(retryDefault.maxAttempts, 1), topics: retryTopics },
      dlq,
      concurrency: s.concurrency ?? 1,
      ...(s.sessionTimeoutMs === undefined ? {} : { sessionTimeoutMs: s.sessionTimeoutMs }),
      batch: { maxRecords: s.batch?.maxRecords ?? DEFAULT_BATCH.maxRecords, maxWaitMs: s.batch?.maxWaitMs ?? DEFAULT_BATCH.maxWaitMs },
      scaling: {
        minReplicas: s.scaling?.minReplicas ?? 1,
        maxReplicas: s.scaling?.maxReplicas ?? 4,
        lagThreshold: s.scaling?.lagThreshold ?? 10,
        activationLagThreshold: s.scaling?.activationLagThreshold ?? 0,
        targetDrainSeconds: s.scaling?.targetDrainSeconds ?? 300,
      },
      ...(s.resources ? { resources: s.resources } : {}),
      stores,
      ...(s.contract ? { contract: s.contract } : {}),
      ...(s.create ? { create: s.create } : {}),
      ...(s.dispatch ? { dispatch: s.dispatch } : {}),
    });
  }
  const status = typeof decl.status === 'string' ? { topic: decl.status } : decl.status;
  const profiles = decl.profiles ? { profiles: decl.profiles } : {};
  return {
    name: decl.name,
    prefix: decl.prefix,
    statusTopic: full(status.topic),
    ...('hook' in status ? { statusHook: status.hook } : {}),
    topics,
    stages,
    ...profiles,
  };
}

/** A stage as data, from a declaration with code or a plain data entry. */
type StageEntry = StageDecl & Pick<StageSpec, 'contract' | 'create' | 'dispatch'>;

/** The stages of a declaration by name, in order; declarations with code bring their contract and factory. */
function stageEntries(stages: TopologyDecl['stages']): [string, StageEntry][] {
  if (!Array.isArray(stages)) return Object.entries(stages as Record<string, StageDecl>);
  const seen = new Set<string>();
  return (stages as readonly AnyStage[]).map((d) => {
    if (seen.has(d.name)) throw new SonicError('TOPOLOGY_INVALID', `stage ${d.name} is declared twice`);
    seen.add(d.name);
    const sinks = Object.entries((d.sinks ?? {}) as Sinks);
    const entry: StageEntry = {
      doc: d.doc,
      input: d.input.topic,
      outputs: Object.fromEntries(sinks.map(([sink, ref]) => [sink, ref.topic])),
      ...(d.emitsStatus === undefined ? {} : { emitsStatus: d.emitsStatus }),
      ...(d.retry ? { retry: d.retry } : {}),
      ...(d.concurrency === undefined ? {} : { concurrency: d.concurrency }),
      ...(d.batch ? { batch: d.batch } : {}),
      ...(d.sessionTimeoutMs === undefined ? {} : { sessionTimeoutMs: d.sessionTimeoutMs }),
      ...(d.scaling ? { scaling: d.scaling } : {}),
      ...(d.resources ? { resources: d.resources } : {}),
      ...(d.stores ? { stores: d.stores } : {}),
      contract: { input: d.input.schema, sinks: Object.fromEntries(sinks.map(([sink, ref]) => [sink, ref.schema])) },
      create: d.create as unknown as StageSpec['create'],
      ...(d.dispatch ? { dispatch: d.dispatch as DispatchSpec } : {}),
    };
    return [d.name, entry];
  });
}

/** Topics whose value subject is registered (`<topic>-value`); retry and DLQ topics reuse their input's. */
export function registeredTopics(t: Topology): TopicSpec[] {
  return Object.values(t.topics).filter((topic) => topic.role === 'stream' || topic.role === 'status');
}

/** The stage by name, or undefined. */
export function findStage(t: Topology, name: string): StageSpec | undefined {
  return t.stages.find((s) => s.name === name);
}
