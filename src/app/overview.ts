/**
 * The console's overview of a running topology, one snapshot per sampling interval: per stage its
 * backlog (Kafka lag over the input and retry tiers, src/app/lag), the records waiting in its retry
 * tiers, the dead letters in its DLQ, the members of its consumer group (the replicas now), what
 * the autoscaler's rule wants and why (src/app/scaling.ts), and the runtime figures its processes
 * report on their metrics endpoints (src/app/stage-metrics.ts). One sampler serves every viewer
 * (see `shareOverview`); it reads Kafka and the endpoints once per interval, never per viewer.
 */
import { EMPTY, Observable, ReplaySubject, catchError, defer, exhaustMap, finalize, from, share, timer } from 'rxjs';
import { OffsetReader } from '../kafka/lag.js';
import { findStage, type StageSpec, type Topology } from '../runtime/topology.js';
import type { Context } from './context.js';
import { readDlq } from './dlq.js';
import { lagSamples$ } from './lag/sample.js';
import type { StageLag, StageLagReport } from './lag/report.js';
import { dispatchLoad, scalingBounds, wantedReplicas, type Wanted } from './scaling.js';
import { readMetrics, stageRuntime, type MetricsReading, type StageRuntime } from './stage-metrics.js';

export type StageHealth = 'ok' | 'behind' | 'no-replicas' | 'not-deployed';

export interface StageOverview extends StageRuntime {
  stage: string;
  input: string;
  partitions: number;
  /** Records (offsets) the stage has yet to read from its input and retry tiers. */
  lag: number;
  /** The part of `lag` in the retry tiers: records waiting for their retry. */
  retryBacklog: number;
  /** Offsets appended to / committed from the input and retry tiers per second (Kafka's view). */
  inRate: number | null;
  outRate: number | null;
  drainSeconds: number | null;
  /** Records in the stage's DLQ (counted when its end offsets move); null until counted. */
  deadLetters: number | null;
  /** Active members of the stage's consumer group. */
  replicas: number;
  /** What the autoscaler's rule asks for; `desired` null while the seconds per record are unknown. */
  wanted: { desired: number | null; rule: Wanted['rule']; reason: string };
  health: StageHealth;
}

export interface Overview {
  at: string;
  /** Seconds the rates are over; null for the first snapshot. */
  intervalSeconds: number | null;
  /** Metrics endpoints configured and answering (SONIC_CONSOLE_METRICS_URLS). */
  metrics: { targets: number; answered: number };
  stages: StageOverview[];
}

export interface OverviewOptions {
  intervalMs: number;
  /** Prometheus text endpoints of the stages (or a /federate). */
  metricsUrls: readonly string[];
  /** 1 + SONIC_DISPATCH_QUEUE_PER_WORKER. */
  perWorker: number;
  /** Handler time window for the quantiles, ms (default 60 s). */
  windowMs?: number;
  /** Least time between two counts of one DLQ, ms (default 15 s). */
  dlqRecountMs?: number;
}

/** Counts a stage's dead letters by reading its DLQ, again only when the DLQ's end offsets moved. */
class DeadLetterCounter {
  private readonly known = new Map<string, { ends: string; count: number | null; at: number; reading: boolean }>();
  constructor(
    private readonly ctx: Context,
    private readonly topology: Topology,
    private readonly recountMs: number,
  ) {}

  async refresh(reader: OffsetReader): Promise<void> {
    const dlqs = this.topology.stages.map((s) => s.dlq);
    const existing = new Set(await reader.existing(dlqs));
    const offsets = await reader.offsets([...existing]);
    for (const s of this.topology.stages) {
      const parts = offsets.filter((o) => o.topic === s.dlq);
      const ends = parts.map((p) => `${p.partition}:${p.earliest}-${p.end}`).join(',');
      const k = this.known.get(s.name) ?? { ends: '', count: null, at: 0, reading: false };
      this.known.set(s.name, k);
      if (!existing.has(s.dlq)) continue;
      if (parts.every((p) => p.end === p.earliest)) Object.assign(k, { ends, count: 0 });
      else if (ends !== k.ends && !k.reading && Date.now() - k.at >= this.recountMs) {
        // in the background: reading a DLQ joins a group and takes a moment
        Object.assign(k, { reading: true, at: Date.now() });
        readDlq(this.ctx, this.topology, s.name, { idleMs: 500 }).then(
          (records) => Object.assign(k, { ends, count: records.length, reading: false }),
          (err: unknown) => {
            this.ctx.logger.warn({ err, stage: s.name }, 'dead letters not counted');
            k.reading = false;
          },
        );
      }
    }
  }

  count(stage: string): number | null {
    return this.known.get(stage)?.count ?? null;
  }
}

function health(spec: StageSpec, l: StageLag): StageHealth {
  if (l.missingTopics.includes(spec.input)) return 'not-deployed';
  if (l.members === 0) return 'no-replicas';
  if (l.lag > 0n && (l.drainSeconds === null || l.drainSeconds > spec.scaling.targetDrainSeconds)) return 'behind';
  return 'ok';
}

/** Builds one snapshot (pure but for the clock-free inputs it is given). */
export function buildOverview(
  topology: Topology,
  report: StageLagReport,
  readings: { now: MetricsReading; previous: MetricsReading | undefined; windowStart: MetricsReading | undefined },
  deadLetters: (stage: string) => number | null,
  perWorker: number,
): Overview {
  const { now, previous, windowStart } = readings;
  const seconds = previous && now.at > previous.at ? (now.at - previous.at) / 1000 : null;
  const stages = report.stages.map((l): StageOverview => {
    const spec = findStage(topology, l.stage)!;
    const runtime = stageRuntime(now.stages.get(l.stage), previous?.stages.get(l.stage), seconds, windowStart?.stages.get(l.stage));
    const b = scalingBounds(topology, spec);
    const work = b.dispatcher ? dispatchLoad(now.texts, b.dispatcher.stage) : undefined;
    const lag = Number(l.lag);
    const secondsPerRecord = runtime.meanHandlerSeconds ?? l.secondsPerRecord;
    const wanted: StageOverview['wanted'] =
      work && 'load' in work
        ? wantedReplicas(spec, b, { lag, secondsPerRecord: secondsPerRecord ?? 0, work: work.load, perWorker })
        : secondsPerRecord === null && lag > 0
          ? { desired: null, rule: 'lag', reason: 'seconds per record unknown: nothing handled yet' }
          : wantedReplicas(spec, b, { lag, secondsPerRecord: secondsPerRecord ?? 0 });
    return {
      ...runtime,
      stage: l.stage,
      input: spec.input,
      partitions: l.partitions,
      lag,
      retryBacklog: l.rows.filter((r) => r.topic !== spec.input).reduce((a, r) => a + Math.max(0, Number(r.lag)), 0),
      inRate: l.inRate,
      outRate: l.outRate,
      drainSeconds: l.drainSeconds,
      deadLetters: deadLetters(l.stage),
      replicas: l.members,
      wanted,
      health: health(spec, l),
    };
  });
  return { at: report.at.toISOString(), intervalSeconds: seconds, metrics: { targets: now.targets, answered: now.answered }, stages };
}

/**
 * A snapshot every `intervalMs` (the first at once, without rates), until unsubscribed. A tick that
 * comes while a snapshot is still being built (slow metrics endpoints, a slow broker) is skipped,
 * so snapshots never queue up behind each other.
 */
export function overview$(ctx: Context, topology: Topology, o: OverviewOptions): Observable<Overview> {
  return defer(() => {
    const reader = new OffsetReader(ctx.kafka);
    const dlq = new DeadLetterCounter(ctx, topology, o.dlqRecountMs ?? 15_000);
    const windowMs = o.windowMs ?? 60_000;
    let history: MetricsReading[] = [];
    return lagSamples$(ctx, topology, o.intervalMs).pipe(
      exhaustMap((report) =>
        from(
          (async () => {
            const [now] = await Promise.all([
              readMetrics(o.metricsUrls),
              dlq.refresh(reader).catch((err: unknown) => ctx.logger.warn({ err }, 'dead letter offsets not read')),
            ]);
            const previous = history.at(-1);
            history = [...history.filter((r) => now.at - r.at <= windowMs), now];
            return buildOverview(
              topology,
              report,
              { now, previous, windowStart: history[0] === now ? undefined : history[0] },
              (s) => dlq.count(s),
              o.perWorker,
            );
          })(),
        ).pipe(
          catchError((err: unknown) => {
            ctx.logger.warn({ err }, 'overview snapshot failed');
            return EMPTY;
          }),
        ),
      ),
      finalize(() => void reader.close()),
    );
  });
}

/**
 * One sampler for every viewer: it starts with the first subscriber, replays the latest snapshot
 * to each new one, and stops `idleMs` after the last one left.
 */
export function shareOverview<T extends Overview>(source: Observable<T>, idleMs = 30_000): Observable<T> {
  return source.pipe(share({ connector: () => new ReplaySubject<T>(1), resetOnRefCountZero: () => timer(idleMs), resetOnError: true }));
}
