/**
 * The replica rules of sonicflow's autoscaler, shared by `sonicflow autoscale` (src/ops), which
 * acts on them, and the console's overview (src/api), which shows what they want and why:
 *
 * - `lag`: replicas = ceil(lag × seconds per record / target drain seconds), bounded by the
 *   stage's min/max replicas and its input's partitions (more consumers than partitions idle).
 * - `work`, for the workers behind a dispatcher (`src/runtime/dispatcher.ts`): their input lag is
 *   at most 1 + queuePerWorker per worker by design, so they are scaled on the estimated
 *   worker-seconds the dispatcher holds and has handed out, never below the busy workers; bounded
 *   by the dispatcher sink's partitions (each worker holds one or more).
 *
 * The figures the rules read from stage processes come from their Prometheus text exposition
 * (`metricValue`, `dispatchLoad`, `handlerTotals`): a worker's own /metrics, or any endpoint that
 * serves the same series (a Prometheus server's /federate).
 */
import { drainReplicas } from './lag/report.js';
import type { StageSpec, Topology } from '../runtime/topology.js';

export interface ScaleInputs {
  lag: number;
  secondsPerRecord: number;
  targetDrainSeconds: number;
  min: number;
  max: number;
}

/** sonicflow's rule: replicas needed to drain `lag` within the target time, in [min, max]; min when idle. */
export function desiredReplicas(i: ScaleInputs): number {
  return drainReplicas(i.lag, i.secondsPerRecord, i.targetDrainSeconds, { minReplicas: i.min, maxReplicas: i.max, partitions: i.max });
}

/** What the dispatcher replicas in front of a workers' stage report, summed over the replicas. */
export interface DispatchLoad {
  backlogSeconds: number;
  outstandingSeconds: number;
  outstandingRecords: number;
  /** Workers holding a record dispatched and not yet committed (`sonicflow_dispatch_busy_workers`); undefined when no dispatcher reports it. */
  busyWorkers?: number;
}

export interface WorkScaleInputs extends DispatchLoad {
  /** Records one worker holds: the one it works on plus SONIC_DISPATCH_QUEUE_PER_WORKER. */
  perWorker: number;
  targetDrainSeconds: number;
  min: number;
  /** min(maxReplicas, the dispatcher sink's partitions, --max). */
  max: number;
}

/**
 * The rule for the workers of a dispatcher: replicas that do the work waiting and dispatched
 * (estimated worker-seconds) within the target drain time, and never fewer than the busy workers
 * (a lower count would stop a worker in the middle of a render: the seconds say how many workers
 * the work needs, not which are free) nor than those that can hold the records already
 * dispatched, in [min, max]; min when idle. Any count is useful, not only divisors of the
 * partitions: the dispatcher hands work to whichever worker is free.
 */
export function desiredWorkers(i: WorkScaleInputs): number {
  const seconds = Math.max(0, i.backlogSeconds) + Math.max(0, i.outstandingSeconds);
  // a sum of estimates lands a hair above a whole multiple (0.1 + 0.2): not a reason for one more GPU
  const drain = i.targetDrainSeconds > 0 ? Math.ceil(seconds / i.targetDrainSeconds - 1e-9) : i.max;
  // assumes every worker holds 1 + queuePerWorker: the floor when the busy count is not reported
  const holding = Math.ceil(Math.max(0, i.outstandingRecords) / Math.max(1, i.perWorker));
  const busy = Math.max(0, Math.round(i.busyWorkers ?? 0));
  const max = Math.max(1, i.max);
  return Math.min(max, Math.max(i.min, drain, holding, busy, 1));
}

/** A worker as scale-down sees it: its records in flight, undefined when its /metrics did not say. */
export interface StopCandidate {
  inFlight: number | undefined;
}

/**
 * Which `count` of `workers` (oldest first, as they were started) to stop: idle ones first (0 in
 * flight), then those whose metrics did not answer, then busy ones; the newest first within each
 * (the oldest have warm caches and stable assignments). A busy one stopped still finishes its
 * record: SIGTERM drains it.
 */
export function workersToStop<W extends StopCandidate>(workers: readonly W[], count: number): W[] {
  if (count <= 0) return [];
  const rank = (w: W): number => (w.inFlight === 0 ? 0 : w.inFlight === undefined ? 1 : 2);
  return workers
    .map((w, i) => ({ w, i }))
    .sort((a, b) => rank(a.w) - rank(b.w) || b.i - a.i)
    .slice(0, count)
    .map((x) => x.w);
}

/** The bounds of a stage's replica count under the autoscaler, and for the workers of a dispatcher, the dispatcher's name and the bound of the `work` rule. */
export interface ScalingBounds {
  min: number;
  max: number;
  dispatcher: { stage: string; max: number } | undefined;
}

/** A stage's bounds: at least 1 and minReplicas; at most maxReplicas, its input's partitions (the `work` rule: its dispatcher sink's) and `cap`. */
export function scalingBounds(topology: Topology, spec: StageSpec, cap = Number.POSITIVE_INFINITY): ScalingBounds {
  const partitions = topology.topics[spec.input]?.partitions ?? 1;
  // the workers of a dispatcher: every partition of its sink is a slot some worker holds
  const front = topology.stages.find((d) => d.dispatch?.workers === spec.name);
  const sink = front ? Object.values(front.outputs)[0] : undefined;
  const slots = sink ? (topology.topics[sink]?.partitions ?? 1) : 1;
  return {
    min: Math.max(1, spec.scaling.minReplicas),
    max: Math.max(1, Math.min(spec.scaling.maxReplicas, partitions, cap)),
    dispatcher: front ? { stage: front.name, max: Math.max(1, Math.min(spec.scaling.maxReplicas, slots, cap)) } : undefined,
  };
}

/** What a rule asks for now, and why (the hysteresis of the autoscaler's actions aside). */
export interface Wanted {
  rule: 'lag' | 'work';
  desired: number;
  reason: string;
}

/**
 * The replicas the stage's rule asks for: `work` when the dispatcher's figures are given (the
 * workers of a dispatcher), else `lag`. `perWorker` is 1 + SONIC_DISPATCH_QUEUE_PER_WORKER.
 */
export function wantedReplicas(
  spec: StageSpec,
  b: ScalingBounds,
  figures: { lag: number; secondsPerRecord: number; work?: DispatchLoad | undefined; perWorker?: number },
): Wanted {
  const target = spec.scaling.targetDrainSeconds;
  const { work } = figures;
  if (work && b.dispatcher) {
    const desired = desiredWorkers({ ...work, perWorker: figures.perWorker ?? 2, targetDrainSeconds: target, min: b.min, max: b.dispatcher.max });
    const seconds = Math.max(0, work.backlogSeconds) + Math.max(0, work.outstandingSeconds);
    let reason = `${seconds.toFixed(0)} s of work waiting or dispatched, to do in ${target} s`;
    if (work.busyWorkers !== undefined && work.busyWorkers > 0 && desired === Math.round(work.busyWorkers) && desired > b.min)
      reason += `; never below the ${desired} busy workers`;
    return { rule: 'work', desired, reason };
  }
  const desired = desiredReplicas({ lag: figures.lag, secondsPerRecord: figures.secondsPerRecord, targetDrainSeconds: target, min: b.min, max: b.max });
  const reason =
    figures.lag <= 0
      ? `no backlog: the minimum (${b.min})`
      : `backlog ${figures.lag} × ${figures.secondsPerRecord.toFixed(3)} s/record to drain in ${target} s` + (desired === b.max ? ` (capped at ${b.max})` : '');
  return { rule: 'lag', desired, reason };
}

/** The sum of a metric's samples in a Prometheus text exposition, over the series with `stage="<stage>"`; undefined when there are none. */
export function metricValue(text: string, name: string, stage: string): number | undefined {
  let found = false;
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const m = /^[^{]+\{([^}]*)\} (\S+)/.exec(line);
    if (!m || !m[1]!.split(',').includes(`stage="${stage}"`)) continue;
    const v = Number(m[2]);
    if (!Number.isFinite(v)) continue;
    found = true;
    sum += v;
  }
  return found ? sum : undefined;
}

/**
 * The dispatcher `stage`'s figures summed over the expositions of its replicas, or why there are
 * none (no replica answered, or none is active).
 */
export function dispatchLoad(texts: readonly string[], stage: string): { load: DispatchLoad } | { why: string } {
  const sum = (name: string): number => texts.reduce((a, t) => a + (metricValue(t, name, stage) ?? 0), 0);
  if (texts.length === 0) return { why: `no replica of dispatcher ${stage} answers on its metrics endpoint` };
  if (sum('sonicflow_dispatch_active') < 1) return { why: `no replica of dispatcher ${stage} is active (taking over, or waiting for the broker)` };
  // a dispatcher from before the busy gauge reports none: the floor is then `holding` alone
  const busy = texts.map((t) => metricValue(t, 'sonicflow_dispatch_busy_workers', stage)).filter((v) => v !== undefined);
  return {
    load: {
      backlogSeconds: sum('sonicflow_dispatch_backlog_seconds'),
      outstandingSeconds: sum('sonicflow_dispatch_outstanding_seconds'),
      outstandingRecords: sum('sonicflow_dispatch_outstanding_records'),
      ...(busy.length > 0 ? { busyWorkers: busy.reduce((a, v) => a + v, 0) } : {}),
    },
  };
}

/** Handler time (sum, count) over the records handled (ok, retry, dlq) in an exposition; `stage` alone when given. */
export function handlerTotals(text: string, stage?: string): { sum: number; count: number } {
  let sum = 0;
  let count = 0;
  for (const m of text.matchAll(/^sonicflow_handler_duration_seconds_(sum|count)\{([^}]*)\} ([\d.e+-]+)$/gm)) {
    const labels = m[2]!.split(',');
    if (!labels.some((l) => /^outcome="(ok|retry|dlq)"$/.test(l))) continue;
    if (stage !== undefined && !labels.includes(`stage="${stage}"`)) continue;
    if (m[1] === 'sum') sum += Number(m[3]);
    else count += Number(m[3]);
  }
  return { sum, count };
}
