/**
 * The lag report (pure): per stage its lag, rates, drain time and the replicas two rules would
 * run, built from two offset samples. See `src/ops/lag.ts` for the arithmetic and the rules.
 */
import type { PartitionLag } from '../../kafka/lag.js';
import type { Topology } from '../../runtime/topology.js';

// ---------------------------------------------------------------- replica rules

export interface ReplicaBounds {
  /** Partitions of the stage's input: the most consumers that get work. */
  partitions: number;
  minReplicas: number;
  /** The stage's own ceiling (topology `scaling.maxReplicas`); none when undefined. */
  maxReplicas?: number;
}

/** `desired` bounded: at most the partitions and maxReplicas, at least minReplicas (minReplicas wins a conflict). */
export function boundReplicas(desired: number, b: ReplicaBounds): number {
  return Math.max(b.minReplicas, Math.min(desired, b.partitions, b.maxReplicas ?? Number.POSITIVE_INFINITY));
}

/** Rounds up, forgiving floating-point noise (3.0000000000000004 is 3). */
function ceilRatio(x: number): number {
  return Math.ceil(x - 1e-9);
}

/**
 * KEDA's Kafka scaler rule: `ceil(totalLag / lagThreshold)` replicas, bounded. With minReplicas 0
 * the stage sleeps (0 replicas) while the lag is at most `activationLagThreshold`.
 */
export function kedaReplicas(totalLag: number, lagThreshold: number, b: ReplicaBounds & { activationLagThreshold?: number }): number {
  if (!(lagThreshold > 0)) throw new RangeError(`lagThreshold must be > 0, got ${lagThreshold}`);
  const lag = Math.max(0, totalLag);
  if (b.minReplicas === 0 && lag <= (b.activationLagThreshold ?? 0)) return 0;
  return boundReplicas(ceilRatio(lag / lagThreshold), b);
}

/** sonicflow's rule: `ceil(totalLag × secondsPerRecord / targetDrainSeconds)` replicas, bounded. */
export function drainReplicas(totalLag: number, secondsPerRecord: number, targetDrainSeconds: number, b: ReplicaBounds): number {
  if (!(targetDrainSeconds > 0)) throw new RangeError(`targetDrainSeconds must be > 0, got ${targetDrainSeconds}`);
  if (!(secondsPerRecord >= 0)) throw new RangeError(`secondsPerRecord must be >= 0, got ${secondsPerRecord}`);
  return boundReplicas(ceilRatio((Math.max(0, totalLag) * secondsPerRecord) / targetDrainSeconds), b);
}

// ---------------------------------------------------------------- samples and reports

/** One reading of a stage's consumer group. */
export interface StageSample {
  stage: string;
  groupId: string;
  /** Input and retry tier topics that exist. */
  topics: string[];
  /** Input and retry tier topics that do not exist (not deployed). */
  missingTopics: string[];
  /** Active members of the group. */
  members: number;
  partitions: PartitionLag[];
}

export interface OffsetSample {
  /** Epoch ms when the sample was taken. */
  at: number;
  stages: StageSample[];
}

export interface PartitionLagRow extends PartitionLag {
  /** Offsets appended per second since the previous sample; null without one. */
  inRate: number | null;
  /** Committed offsets advanced per second since the previous sample; null without one. */
  outRate: number | null;
}

export type SecondsPerRecordSource = 'given' | 'measured' | 'group-rate';

export interface StageLag {
  stage: string;
  groupId: string;
  topics: string[];
  missingTopics: string[];
  /** Partitions of the input topic (the replica cap). */
  partitions: number;
  members: number;
  /** Sum of the partitions' lag (negative ones as 0). */
  lag: bigint;
  inRate: number | null;
  outRate: number | null;
  /** lag / outRate; 0 without lag; null when nothing was processed (or no rate yet). */
  drainSeconds: number | null;
  secondsPerRecord: number | null;
  secondsPerRecordSource: SecondsPerRecordSource | null;
  replicas: {
    keda: number;
    /** null when there is lag but secondsPerRecord is unknown (nothing given, nothing processed). */
    sonicflow: number | null;
  };
  rows: PartitionLagRow[];
}

export interface StageLagReport {
  /** When the (latest) sample was taken. */
  at: Date;
  /** Seconds between the two samples the rates come from; null for a single sample. */
  intervalSeconds: number | null;
  stages: StageLag[];
}

export interface LagOptions {
  /** Only these stages (all by default). */
  stages?: string[];
  /** Handler seconds per record of one replica, per stage; measured when not given. */
  secondsPerRecord?: Record<string, number>;
}

const rate = (delta: bigint, seconds: number): number => Math.max(0, Number(delta)) / seconds;

/**
 * Builds the report from the latest sample and, for rates, the one before it (pure).
 * A partition first committed between the samples counts as processed from its earliest offset.
 */
export function buildReport(
  topology: Topology,
  current: OffsetSample,
  previous: OffsetSample | undefined,
  opts: Pick<LagOptions, 'secondsPerRecord'> = {},
): StageLagReport {
  const seconds = previous && current.at > previous.at ? (current.at - previous.at) / 1000 : null;
  const stages = current.stages.map((sample): StageLag => {
    const spec = topology.stages.find((s) => s.name === sample.stage);
    if (!spec) throw new RangeError(`no stage named ${sample.stage} in topology ${topology.name}`);
    const before = new Map((previous?.stages.find((s) => s.stage === sample.stage)?.partitions ?? []).map((p) => [`${p.topic}:${p.partition}`, p]));
    const rows: PartitionLagRow[] = sample.partitions.map((p) => {
      const b = before.get(`${p.topic}:${p.partition}`);
      if (seconds === null || !b) return { ...p, inRate: null, outRate: null };
      const from = b.committed >= 0n ? b.committed : b.earliest;
      return { ...p, inRate: rate(p.end - b.end, seconds), outRate: p.committed >= 0n ? rate(p.committed - from, seconds) : 0 };
    });
    const measured = seconds !== null && rows.length > 0 && rows.every((r) => r.inRate !== null);
    const inRate = measured ? rows.reduce((n, r) => n + (r.inRate ?? 0), 0) : null;
    const outRate = measured ? rows.reduce((n, r) => n + (r.outRate ?? 0), 0) : null;
    const lag = rows.reduce((n, r) => n + (r.lag > 0n ? r.lag : 0n), 0n);
    const lagN = Number(lag);
    const partitions = sample.partitions.filter((p) => p.topic === spec.input).length || topology.topics[spec.input]?.partitions || 0;

    let secondsPerRecord: number | null = null;
    let source: SecondsPerRecordSource | null = null;
    const given = opts.secondsPerRecord?.[spec.name];
    if (given !== undefined) [secondsPerRecord, source] = [given, 'given'];
    else if (outRate && outRate > 0 && sample.members > 0) [secondsPerRecord, source] = [sample.members / outRate, 'measured'];
    else if (outRate && outRate > 0) [secondsPerRecord, source] = [1 / outRate, 'group-rate'];

    const bounds = { partitions, minReplicas: spec.scaling.minReplicas, maxReplicas: spec.scaling.maxReplicas };
    return {
      stage: spec.name,
      groupId: sample.groupId,
      topics: sample.topics,
      missingTopics: sample.missingTopics,
      partitions,
      members: sample.members,
      lag,
      inRate,
      outRate,
      drainSeconds: lag === 0n ? 0 : outRate && outRate > 0 ? lagN / outRate : null,
      secondsPerRecord,
      secondsPerRecordSource: source,
      replicas: {
        keda: kedaReplicas(lagN, spec.scaling.lagThreshold, { ...bounds, activationLagThreshold: spec.scaling.activationLagThreshold }),
        sonicflow:
          lag <= 0n
            ? boundReplicas(0, bounds)
            : secondsPerRecord === null
              ? null
              : drainReplicas(lagN, secondsPerRecord, spec.scaling.targetDrainSeconds, bounds),
      },
      rows,
    };
  });
  return { at: new Date(current.at), intervalSeconds: seconds, stages };
}
