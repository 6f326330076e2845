/**
 * `sonicflow lag`: how far behind each stage is, how fast records arrive and leave, how long
 * the backlog takes to drain, and how many replicas two scaling rules would run.
 *
 * - Lag per partition is Kafka's (`src/kafka/lag.ts`): high watermark − committed offset, with
 *   transaction markers counted, so it equals `kafka-consumer-groups --describe`. A partition the
 *   group never committed counts its whole retained backlog (a stage starts from the earliest
 *   offset). A stage's lag is the sum over its input and retry-tier partitions (negative
 *   partition lags, after a truncation, count as 0).
 * - Rates come from two samples: input rate = end-offset growth per second (records appended to
 *   the input and retry tiers), processing rate = committed-offset growth per second. Both count
 *   offsets, markers included, like the lag they are compared with.
 * - Replicas, side by side:
 *   KEDA's Kafka scaler: `ceil(totalLag / lagThreshold)`;
 *   sonicflow's: `ceil(totalLag × secondsPerRecord / targetDrainSeconds)`, the replicas that drain
 *   the backlog in the stage's target time. Both are capped at the input's partition count (more
 *   consumers than partitions idle) and the stage's maxReplicas, and are at least minReplicas.
 *   secondsPerRecord is given per stage, or measured as active members / processing rate (the
 *   time one replica spends per record while it has work), or else 1 / processing rate.
 *   Neither rule counts the inflow: with lag 0 both say minReplicas.
 * - The exporter serves kafka_exporter's series (so Grafana dashboard 7589 works) plus
 *   sonicflow's per-stage figures, refreshed by the sampler; a scrape never reaches Kafka.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Gauge, Registry } from 'prom-client';
import { EMPTY, Observable, catchError, defer, exhaustMap, finalize, from, map, timer } from 'rxjs';
import { SonicError } from '../core/errors.js';
import { serveMetrics } from '../core/metrics.js';
import { OffsetReader, combineLag, type PartitionLag } from '../kafka/lag.js';
import type { StageSpec, Topology } from '../runtime/topology.js';
import type { Context } from './context.js';

// ---------------------------------------------------------------- replica rules (pure)

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

/** The consumer group of a stage, as the runner names it (`src/runtime/runner.ts`). */
export function stageGroupId(clientId: string, topology: Topology, stage: StageSpec): string {
  return `${clientId}.${topology.prefix}.${stage.name}`;
}

function selectStages(topology: Topology, only?: string[]): StageSpec[] {
  if (!only || only.length === 0) return topology.stages;
  const unknown = only.filter((n) => !topology.stages.some((s) => s.name === n));
  if (unknown.length > 0) throw new SonicError('TOPOLOGY_INVALID', `no stage named ${unknown.join(', ')} (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
  return topology.stages.filter((s) => only.includes(s.name));
}

/** Reads every selected stage's group: committed offsets first, then the end offsets of all topics. */
export async function sampleOffsets(reader: OffsetReader, clientId: string, topology: Topology, only?: string[]): Promise<OffsetSample> {
  const stages = selectStages(topology, only);
  const wanted = stages.map((s) => [s.input, ...s.retry.topics]);
  const existing = new Set(await reader.existing([...new Set(wanted.flat())]));
  const at = Date.now();
  const perStage = await Promise.all(
    stages.map(async (s, i) => {
      const topics = wanted[i]!.filter((t) => existing.has(t));
      const groupId = stageGroupId(clientId, topology, s);
      const [committed, members] = await Promise.all([reader.committed(groupId, topics), reader.members(groupId)]);
      return { s, groupId, topics, missing: wanted[i]!.filter((t) => !existing.has(t)), committed, members };
    }),
  );
  const offsets = await reader.offsets([...existing]);
  return {
    at,
    stages: perStage.map(({ s, groupId, topics, missing, committed, members }) => ({
      stage: s.name,
      groupId,
      topics,
      missingTopics: missing,
      members,
      partitions: combineLag(
        groupId,
        committed,
        offsets.filter((o) => topics.includes(o.topic)),
      ),
    })),
  };
}

const rate = (delta: bigint, seconds: number): number => Math.max(0, Number(delta)) / seconds;

/**
 * Builds the report from the latest sample and, for rates, the one before it (pure).
 * A partition first committed between the samples counts as processed from its earliest offset.
 */
export function buildReport(topology: Topology, current: OffsetSample, previous: OffsetSample | undefined, opts: Pick<LagOptions, 'secondsPerRecord'> = {}): StageLagReport {
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
        sonicflow: lag <= 0n ? boundReplicas(0, bounds) : secondsPerRecord === null ? null : drainReplicas(lagN, secondsPerRecord, spec.scaling.targetDrainSeconds, bounds),
      },
      rows,
    };
  });
  return { at: new Date(current.at), intervalSeconds: seconds, stages };
}

/** Two samples `sampleMs` apart (default 2 s), reported with rates, drain times and replica counts. */
export async function stageLag(ctx: Context, topology: Topology, opts: LagOptions & { sampleMs?: number } = {}): Promise<StageLagReport> {
  const reader = new OffsetReader(ctx.kafka);
  try {
    const first = await sampleOffsets(reader, ctx.config.clientId, topology, opts.stages);
    await delay(opts.sampleMs ?? 2000);
    const second = await sampleOffsets(reader, ctx.config.clientId, topology, opts.stages);
    return buildReport(topology, second, first, opts);
  } finally {
    await reader.close();
  }
}

/**
 * A report every `intervalMs` (the first at once, without rates), for `sonicflow lag --watch` and
 * the exporter. One Kafka connection per subscription, closed on unsubscribe. A sample that fails
 * is logged and skipped (the next one tries again); a slow one makes the ticks it overlaps skip.
 */
export function lagSamples$(ctx: Context, topology: Topology, intervalMs: number, opts: LagOptions = {}): Observable<StageLagReport> {
  return defer(() => {
    // an unknown stage or a bad interval fails the subscription, not every tick
    if (!(intervalMs > 0)) throw new SonicError('INVALID_REQUEST', `the sampling interval must be > 0 ms, got ${intervalMs}`);
    selectStages(topology, opts.stages);
    const reader = new OffsetReader(ctx.kafka);
    let previous: OffsetSample | undefined;
    return timer(0, intervalMs).pipe(
      exhaustMap(() =>
        from(sampleOffsets(reader, ctx.config.clientId, topology, opts.stages)).pipe(
          catchError((err: unknown) => {
            ctx.logger.warn({ err }, 'lag sample failed');
            return EMPTY;
          }),
        ),
      ),
      map((sample) => {
        const report = buildReport(topology, sample, previous, opts);
        previous = sample;
        return report;
      }),
      finalize(() => void reader.close()),
    );
  });
}

// ---------------------------------------------------------------- text

const num = (n: number | null, digits = 1): string => (n === null ? '-' : n.toFixed(digits));

/** 0s, 42s, 3m05s, 2h04m; '-' for unknown. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null) return '-';
  if (!Number.isFinite(seconds)) return 'inf';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function table(head: string[], rows: string[][], rightAligned: Set<number>): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]!) : i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

/**
 * The report as text: one line per stage (stage, group, partitions, lag, in/s, out/s, drain, the
 * two replica counts), and with `partitions` a section per stage with one line per partition in
 * the Kafka tool's terms (CURRENT-OFFSET `-` when the group has not committed; LAG is then the
 * retained backlog).
 */
export function formatLag(report: StageLagReport, opts: { partitions?: boolean } = {}): string {
  const head = ['STAGE', 'GROUP', 'PARTITIONS', 'LAG', 'IN/S', 'OUT/S', 'DRAIN', 'KEDA', 'SONICFLOW'];
  const rows = report.stages.map((s) => [
    s.stage,
    s.groupId,
    String(s.partitions),
    s.lag.toString(),
    num(s.inRate),
    num(s.outRate),
    formatDuration(s.drainSeconds),
    String(s.replicas.keda),
    s.replicas.sonicflow === null ? '-' : String(s.replicas.sonicflow),
  ]);
  const parts = [table(head, rows, new Set([2, 3, 4, 5, 6, 7, 8]))];
  const rateNote = report.intervalSeconds === null ? 'no rates yet (one sample)' : `rates over ${report.intervalSeconds.toFixed(1)} s`;
  parts.push(`${report.at.toISOString()}  ${rateNote}; replicas: KEDA ceil(lag/lagThreshold), sonicflow ceil(lag*s_per_record/targetDrainSeconds)`);
  const missing = report.stages.flatMap((s) => s.missingTopics);
  if (missing.length > 0) parts.push(`missing topics (not deployed): ${missing.join(', ')}`);
  if (opts.partitions) {
    for (const s of report.stages) {
      const prow = s.rows.map((r) => [
        r.topic,
        String(r.partition),
        r.committed < 0n ? '-' : r.committed.toString(),
        r.end.toString(),
        r.lag.toString(),
        num(r.inRate),
        num(r.outRate),
      ]);
      parts.push(`\n${s.stage} (${s.groupId}, ${s.members} member(s))\n${table(['TOPIC', 'PARTITION', 'CURRENT-OFFSET', 'LOG-END-OFFSET', 'LAG', 'IN/S', 'OUT/S'], prow, new Set([1, 2, 3, 4, 5, 6]))}`);
    }
    if (report.stages.some((s) => s.rows.some((r) => r.committed < 0n))) parts.push('CURRENT-OFFSET -: nothing committed; LAG is then the retained backlog (log end - log start).');
  }
  return `${parts.join('\n')}\n`;
}

// ---------------------------------------------------------------- Prometheus exporter

export interface LagExporter {
  port: number;
  close(): Promise<void>;
}

/** The exporter's gauges in `registry`, and the function that writes a report into them. */
export function lagGauges(registry: Registry): (report: StageLagReport) => void {
  const g = <L extends string>(name: string, help: string, labelNames: L[]): Gauge<L> => new Gauge({ name, help, labelNames, registers: [registry] });
  const groupLag = g('kafka_consumergroup_lag', 'Current approximate lag of a consumer group at topic/partition (-1: nothing committed).', ['consumergroup', 'topic', 'partition']);
  const groupLagSum = g('kafka_consumergroup_lag_sum', 'Current approximate lag of a consumer group at topic for all partitions (committed ones).', ['consumergroup', 'topic']);
  const groupOffset = g('kafka_consumergroup_current_offset', 'Current offset of a consumer group at topic/partition (-1: nothing committed).', ['consumergroup', 'topic', 'partition']);
  const topicOffset = g('kafka_topic_partition_current_offset', 'Current offset (high watermark) of a topic/partition.', ['topic', 'partition']);
  const stageLagG = g('sonicflow_stage_lag', 'Records (offsets) a stage has yet to process over its input and retry tiers, uncommitted partitions counting their whole backlog.', ['stage']);
  const replicas = g('sonicflow_stage_recommended_replicas', 'Replicas recommended by KEDA\'s rule (ceil(lag/lagThreshold)) and sonicflow\'s (ceil(lag*s_per_record/targetDrainSeconds)).', ['stage', 'rule']);
  const drain = g('sonicflow_stage_drain_seconds', 'Estimated time to drain the stage\'s lag at its processing rate (+Inf: lag but nothing processed).', ['stage']);
  const sampled = g('sonicflow_lag_sample_timestamp_seconds', 'When the figures were sampled from Kafka.', []);
  const all = [groupLag, groupLagSum, groupOffset, topicOffset, stageLagG, replicas, drain];

  return (report) => {
    for (const m of all) m.reset(); // series of vanished partitions or groups go away
    for (const s of report.stages) {
      // kafka_exporter: topics the group has committed on; -1 where a partition has nothing
      for (const topic of s.topics) {
        const rows = s.rows.filter((r) => r.topic === topic);
        for (const r of rows) topicOffset.set({ topic, partition: String(r.partition) }, Number(r.end));
        if (!rows.some((r) => r.committed >= 0n)) continue;
        let sum = 0n;
        for (const r of rows) {
          const labels = { consumergroup: s.groupId, topic, partition: String(r.partition) };
          groupOffset.set(labels, Number(r.committed));
          groupLag.set(labels, r.committed >= 0n ? Number(r.end - r.committed) : -1);
          if (r.committed >= 0n) sum += r.end - r.committed;
        }
        groupLagSum.set({ consumergroup: s.groupId, topic }, Number(sum));
      }
      stageLagG.set({ stage: s.stage }, Number(s.lag));
      replicas.set({ stage: s.stage, rule: 'keda' }, s.replicas.keda);
      if (s.replicas.sonicflow !== null) replicas.set({ stage: s.stage, rule: 'sonicflow' }, s.replicas.sonicflow);
      if (s.drainSeconds !== null) drain.set({ stage: s.stage }, s.drainSeconds);
      else if (report.intervalSeconds !== null) drain.set({ stage: s.stage }, Number.POSITIVE_INFINITY);
    }
    sampled.set(report.at.getTime() / 1000);
  };
}

/**
 * Serves `/metrics` (plus `/healthz`, and `/readyz` once a sample arrived) on `port` (0: any free
 * port), the values refreshed by a sampler every `intervalMs`. Resolves once listening and the
 * first sample is in (or failed, or 10 s passed).
 */
export async function serveLagExporter(ctx: Context, topology: Topology, port: number, intervalMs: number, opts: LagOptions = {}): Promise<LagExporter> {
  const registry = new Registry();
  const update = lagGauges(registry);
  let sampled = false;
  let failed: unknown;
  let markFirst!: () => void;
  const first = new Promise<void>((r) => (markFirst = r));
  const subscription = lagSamples$(ctx, topology, intervalMs, opts).subscribe({
    next: (report) => {
      update(report);
      sampled = true;
      markFirst();
    },
    error: (err: unknown) => {
      failed = err;
      ctx.logger.error({ err }, 'lag sampler stopped');
      markFirst();
    },
  });
  // a sampler that cannot start (unknown stage, bad interval) fails the call
  if (failed !== undefined) throw failed;
  try {
    const { server, port: bound } = await serveMetrics(port, registry, { live: () => failed === undefined, ready: () => sampled }, ctx.logger);
    const wait = setTimeout(markFirst, Math.max(10_000, intervalMs));
    await first;
    clearTimeout(wait);
    return {
      port: bound,
      close: async () => {
        subscription.unsubscribe();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  } catch (err) {
    subscription.unsubscribe();
    throw err;
  }
}
