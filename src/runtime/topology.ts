/**
 * The topology as data: stages, the topics between them, retry tiers, DLQs, schemas and scaling
 * bounds. `defineTopology` derives the per-stage retry and DLQ topics so a declaration only names
 * what is particular to the pipeline. Printing and checking live in `describe.ts` / `validate.ts`.
 */

import type { CompatibilityLevel } from '../serde/compat.js';

export type Compatibility = CompatibilityLevel;

/** What a topic is for; retry and DLQ topics carry the bytes of their stage's input. */
export type TopicRole = 'stream' | 'status' | 'retry' | 'dlq';

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
  /** Partitions processed concurrently by one process. */
  concurrency: number;
  /** Records of one partition per transaction, and how long to wait to fill a batch. */
  batch: { maxRecords: number; maxWaitMs: number };
  scaling: ScalingSpec;
}

export interface Topology {
  name: string;
  prefix: string;
  /** Topic that every status-emitting stage writes. */
  statusTopic: string;
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

export interface StageDecl {
  doc: string;
  /** Topic key (without prefix) of the input. */
  input: string;
  /** Sink name → topic key (without prefix). */
  outputs?: Record<string, string>;
  emitsStatus?: boolean;
  retry?: Partial<RetrySpec>;
  concurrency?: number;
  batch?: Partial<StageSpec['batch']>;
  scaling?: Partial<ScalingSpec>;
}

export interface TopologyDecl {
  name: string;
  prefix: string;
  /** Topic key of the status topic. */
  status: string;
  defaults?: {
    partitions?: number;
    replicationFactor?: number;
    retry?: RetrySpec;
    retryTopicConfigs?: Record<string, string>;
    dlqTopicConfigs?: Record<string, string>;
  };
  topics: Record<string, TopicDecl>;
  stages: Record<string, StageDecl>;
}

export const DEFAULT_PARTITIONS = 12;
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

  const stages: StageSpec[] = [];
  for (const [stageName, s] of Object.entries(decl.stages)) {
    const input = full(s.input);
    const inputSpec = topics[input];
    const derived = (key: string, role: 'retry' | 'dlq', doc: string, configs: Record<string, string>): string => {
      const name = full(key);
      topics[name] = {
        name,
        role,
        partitions: inputSpec?.partitions ?? partitions,
        replicationFactor,
        configs: { ...configs },
        ...(inputSpec?.valueSchema === undefined ? {} : { valueSchema: inputSpec.valueSchema }),
        compatibility: inputSpec?.compatibility ?? 'BACKWARD',
        doc,
      };
      return name;
    };
    const delaysMs = s.retry?.delaysMs ?? retryDefault.delaysMs;
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
    stages.push({
      name: stageName,
      doc: s.doc,
      input,
      outputs: Object.fromEntries(Object.entries(s.outputs ?? {}).map(([sink, key]) => [sink, full(key)])),
      emitsStatus: s.emitsStatus ?? true,
      retry: { delaysMs, maxAttempts: s.retry?.maxAttempts ?? Math.max(retryDefault.maxAttempts, 1), topics: retryTopics },
      dlq,
      concurrency: s.concurrency ?? 1,
      batch: { maxRecords: s.batch?.maxRecords ?? 50, maxWaitMs: s.batch?.maxWaitMs ?? 100 },
      scaling: {
        minReplicas: s.scaling?.minReplicas ?? 1,
        maxReplicas: s.scaling?.maxReplicas ?? 4,
        lagThreshold: s.scaling?.lagThreshold ?? 10,
        activationLagThreshold: s.scaling?.activationLagThreshold ?? 0,
        targetDrainSeconds: s.scaling?.targetDrainSeconds ?? 300,
      },
    });
  }
  return { name: decl.name, prefix: decl.prefix, statusTopic: full(decl.status), topics, stages };
}

/** Topics whose value subject is registered (`<topic>-value`); retry and DLQ topics reuse their input's. */
export function registeredTopics(t: Topology): TopicSpec[] {
  return Object.values(t.topics).filter((topic) => topic.role === 'stream' || topic.role === 'status');
}

/** The stage by name, or undefined. */
export function findStage(t: Topology, name: string): StageSpec | undefined {
  return t.stages.find((s) => s.name === name);
}
