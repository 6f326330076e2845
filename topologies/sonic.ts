/**
 * The Sonic talking-head pipeline:
 * api → tasks.requested → validate → preprocess → infer → encode → publish → tasks.completed → notify.
 * Every stage also writes tasks.status, and has its retry tiers and DLQ (derived by defineTopology).
 */
import { defineTopology, type Topology } from '../src/runtime/topology.js';

const DAY_MS = 86_400_000;
const stream = { 'cleanup.policy': 'delete', 'retention.ms': String(7 * DAY_MS) };

export interface SonicTopologyOptions {
  /** Topic prefix (env SONIC_TOPIC_PREFIX). */
  prefix?: string;
  /** Partitions of every topic (12 by default). */
  partitions?: number;
  /** Replication factor of every topic (1 on a single local broker). */
  replicationFactor?: number;
  /** Multiplies every retry delay (tests shrink them; the tiers stay the same topics). */
  retryDelayScale?: number;
}

/** Builds the Sonic topology for a prefix. */
export function sonicTopology(options: SonicTopologyOptions = {}): Topology {
  const scale = options.retryDelayScale ?? 1;
  const delays = (ms: number[]): number[] => ms.map((d) => Math.max(1, Math.round(d * scale)));
  return defineTopology({
    name: 'sonic',
    prefix: options.prefix ?? 'sonic',
    status: 'tasks.status',
    defaults: {
      partitions: options.partitions ?? 12,
      replicationFactor: options.replicationFactor ?? 1,
      retry: { delaysMs: delays([5_000, 30_000, 120_000]), maxAttempts: 4 },
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
        // infer's input: each task is one record here, so key order is moot, and dealing the tasks
        // evenly keeps every GPU worker busy while a backlog lasts (random task ids do not)
        partitioning: 'balanced',
        doc: 'Tasks with model-ready audio and image.',
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
        configs: {
          'cleanup.policy': 'compact',
          'min.compaction.lag.ms': String(60_000),
          'segment.ms': String(3_600_000),
          'delete.retention.ms': String(DAY_MS),
        },
        external: { producers: ['api'], consumers: ['api'] },
        doc: 'Latest state per task (compacted); the API materialises it into its status view.',
      },
    },
    stages: {
      validate: {
        doc: 'Probes the audio and the image and checks every parameter.',
        input: 'tasks.requested',
        outputs: { validated: 'tasks.validated', failed: 'tasks.completed' },
        concurrency: 4,
        scaling: { maxReplicas: 4, lagThreshold: 50, targetDrainSeconds: 60 },
      },
      preprocess: {
        doc: 'Converts audio to 16 kHz mono PCM and the portrait to a bounded RGB PNG.',
        input: 'tasks.validated',
        outputs: { prepared: 'tasks.prepared', failed: 'tasks.completed' },
        concurrency: 4,
        scaling: { maxReplicas: 4, lagThreshold: 50, targetDrainSeconds: 60 },
      },
      infer: {
        doc: 'Renders the talking head (builtin preview, Sonic CLI, or a Cog server); one task per GPU.',
        input: 'tasks.prepared',
        outputs: { rendered: 'tasks.rendered', failed: 'tasks.completed' },
        concurrency: 1,
        retry: { delaysMs: delays([10_000, 60_000, 300_000]), maxAttempts: 3 },
        batch: { maxRecords: 1, maxWaitMs: 0 },
        scaling: { maxReplicas: 8, lagThreshold: 2, targetDrainSeconds: 600 },
      },
      encode: {
        doc: 'Muxes the original audio into an H.264/AAC faststart MP4 and probes it.',
        input: 'tasks.rendered',
        outputs: { encoded: 'tasks.encoded', failed: 'tasks.completed' },
        concurrency: 2,
        scaling: { maxReplicas: 4, lagThreshold: 10, targetDrainSeconds: 120 },
      },
      publish: {
        doc: 'Moves the MP4 to its public location and marks the task SUCCEEDED.',
        input: 'tasks.encoded',
        outputs: { completed: 'tasks.completed', failed: 'tasks.completed' },
        concurrency: 4,
        scaling: { maxReplicas: 2, lagThreshold: 50, targetDrainSeconds: 60 },
      },
      notify: {
        doc: 'Delivers Standard Webhooks events; a failing receiver never fails the task.',
        input: 'tasks.completed',
        emitsStatus: false,
        concurrency: 8,
        retry: { delaysMs: delays([5_000, 30_000, 120_000, 600_000]), maxAttempts: 5 },
        scaling: { maxReplicas: 2, lagThreshold: 100, targetDrainSeconds: 60 },
      },
    },
  });
}

export default sonicTopology;
