/**
 * The Sonic talking-head pipeline:
 * api → tasks.requested → validate → preprocess → dispatch → infer → encode → publish → tasks.completed → notify.
 * dispatch holds the backlog of prepared tasks and hands each to an infer worker (a GPU) when it
 * is free (src/runtime/dispatcher.ts); it writes no task state, so a task goes from PREPROCESSING
 * to INFERRING.
 * Each stage is declared once, in its own file under src/stages/; this file composes the stages
 * (one line each, in task order: the task states follow it) with the topics. Every stage of the
 * task path writes tasks.status; every stage has its retry tiers and DLQ (derived by defineTopology).
 */
import type { TaskState } from '../src/domain/records.js';
import type { StageDeclaration } from '../src/runtime/stage.js';
import type { StageDeps } from '../src/stages/common.js';
import { defineTopology, type EnvironmentProfile, type Topology } from '../src/runtime/topology.js';
import { dispatch } from '../src/stages/dispatch.js';
import { encode } from '../src/stages/encode.js';
import { infer } from '../src/stages/infer.js';
import { notify } from '../src/stages/notify.js';
import { preprocess } from '../src/stages/preprocess.js';
import { publish } from '../src/stages/publish.js';
import { taskStates } from '../src/stages/status.js';
import { validate } from '../src/stages/validate.js';

/** A stage this topology can run: built from StageDeps; `state` for a stage of the task path. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each stage has its own input, sinks and status fields
export type SonicStage = StageDeclaration<StageDeps, any, any, any> & { state?: TaskState };

/** The stages, in task order. */
export const SONIC_STAGES: readonly SonicStage[] = [validate, preprocess, dispatch, infer, encode, publish, notify];

const DAY_MS = 86_400_000;
const stream = { 'cleanup.policy': 'delete', 'retention.ms': String(7 * DAY_MS) };
/** The latest record per key, kept; a tombstone (the retention janitor's) goes a day later. */
const compacted = {
  'cleanup.policy': 'compact',
  'min.compaction.lag.ms': String(60_000),
  'segment.ms': String(3_600_000),
  'delete.retention.ms': String(DAY_MS),
};

/**
 * Where the topology is deployed (SONIC_TOPOLOGY_PROFILE picks one; `local` by default): one broker
 * with one replica, or a cluster of three or more with three replicas of which two must hold a write.
 */
export const SONIC_PROFILES: Record<string, EnvironmentProfile> = {
  local: { replicationFactor: 1, doc: 'one broker (npm run stack:up): one replica per partition' },
  replicated: {
    replicationFactor: 3,
    minInsyncReplicas: 2,
    doc: 'three or more brokers (npm run stack:up -- --brokers 3): three replicas, two in sync for every write',
  },
};

export interface SonicTopologyOptions {
  /** Topic prefix (env SONIC_TOPIC_PREFIX). */
  prefix?: string;
  /** Partitions of every topic but tasks.dispatched (12 by default). */
  partitions?: number;
  /**
   * Partitions of tasks.dispatched, infer's input, written by dispatch (24 by default): each infer
   * worker needs one at least, so this bounds infer's replicas; any count up to it is useful.
   */
  slots?: number;
  /** Replication factor of every topic (1 on a single local broker). */
  replicationFactor?: number;
  /** Multiplies every retry delay (tests shrink them; the tiers stay the same topics). */
  retryDelayScale?: number;
  /** The stages in task order (SONIC_STAGES by default; a test adds one); each is built from StageDeps. */
  stages?: readonly SonicStage[];
}

/** Builds the Sonic topology for a prefix. */
export function sonicTopology(options: SonicTopologyOptions = {}): Topology {
  const stages = options.stages ?? SONIC_STAGES;
  return defineTopology({
    name: 'sonic',
    prefix: options.prefix ?? 'sonic',
    status: { topic: 'tasks.status', hook: taskStates(stages) },
    defaults: {
      partitions: options.partitions ?? 12,
      replicationFactor: options.replicationFactor ?? 1,
      retry: { delaysMs: [5_000, 30_000, 120_000], maxAttempts: 4 },
      ...(options.retryDelayScale === undefined ? {} : { retryDelayScale: options.retryDelayScale }),
    },
    topics: {
      'tasks.requested': {
        valueSchema: 'task-request',
        configs: stream,
        external: { producers: ['api'] },
        doc: 'Submitted tasks, written by the HTTP API.',
      },
      'tasks.validated': { valueSchema: 'task-validated', configs: stream, doc: 'Tasks whose inputs probed as acceptable.' },
      'tasks.prepared': {
        valueSchema: 'task-prepared',
        configs: stream,
        // dispatch's input: each task is one record here, so key order is moot
        partitioning: 'balanced',
        doc: 'Tasks with model-ready audio and image; dispatch keeps them until an infer worker is free.',
      },
      'tasks.dispatched': {
        valueSchema: 'task-prepared',
        partitions: options.slots ?? 24,
        configs: stream,
        doc: "Infer's input: dispatch writes each task to a partition of the infer worker it chose (a worker holds one or more), the one it renders and the next (more only for tasks estimated shorter than SONIC_DISPATCH_LEAD_MS).",
      },
      'tasks.rendered': { valueSchema: 'task-rendered', configs: stream, doc: 'Tasks with a rendered silent video.' },
      'tasks.encoded': { valueSchema: 'task-encoded', configs: stream, doc: 'Tasks with the deliverable MP4.' },
      'tasks.completed': {
        valueSchema: 'task-completed',
        configs: stream,
        doc: 'Tasks that reached their end, succeeded or failed, for webhooks and other subscribers.',
      },
      'tasks.status': {
        role: 'status',
        valueSchema: 'task-status',
        // FULL: the API's status view and outside subscribers read old and new events alike.
        compatibility: 'FULL',
        configs: compacted,
        external: { producers: ['api'], consumers: ['api'] },
        doc: 'Latest state per task (compacted); the API materialises it into its status view.',
      },
      'tasks.keys': {
        valueSchema: 'task-key',
        compatibility: 'FULL',
        configs: compacted,
        external: { producers: ['api'], consumers: ['api'] },
        doc: 'The first request of each idempotent task: key and body fingerprint (compacted); every API replica reads it to answer a retry with another body 422.',
      },
    },
    profiles: SONIC_PROFILES,
    stages,
  });
}

export default sonicTopology;
