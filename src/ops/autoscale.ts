/**
 * `sonicflow autoscale`: on one machine, supervises every stage as N worker processes
 * (`sonicflow run <stage>`) and adjusts N per stage from the backlog: desired replicas =
 * ceil(lag × measured seconds per record / target drain time), bounded by min/max replicas,
 * the input's partitions and --max. It scales up after a short cooldown, scales down only after
 * the lower value held for a stabilisation window (hysteresis, so it does not flap), and drains
 * workers it removes with SIGTERM. After a scale-down it scales up again only once the backlog has
 * grown past what it was then (the rebalance of a scale-down is no reason to scale up). Each
 * decision is logged with its inputs.
 *
 * The workers of a dispatcher stage (`dispatcher.ts`) are scaled on the work the dispatcher holds
 * instead (rule `work`): their input lag is at most 1 + queuePerWorker per worker by design (the
 * backlog waits in the dispatcher), so lag would never scale them up. Desired replicas =
 * ceil((backlog seconds + outstanding seconds) / target drain time), the seconds being the sum of
 * the records' estimated cost that the dispatcher replicas report on their /metrics
 * (`sonicflow_dispatch_*_seconds`, summed over the replicas: a standby reports 0), and never fewer
 * than the busy workers (`sonicflow_dispatch_busy_workers`: those holding a record dispatched and
 * not yet committed; 4 workers each on a 300 s render with nothing waiting and a 600 s target are
 * 4, not the 2 the seconds alone give), nor than the workers that can hold the records already
 * dispatched (1 + queuePerWorker each; the floor when a dispatcher does not report busy workers).
 * Any count up to the dispatcher sink's partitions is useful (each worker holds one or more of
 * them), so the bound is min(maxReplicas, those partitions, --max). When no dispatcher answers (not supervised
 * here, not started yet, no active replica), it falls back to the lag rule and logs why.
 *
 * Scale-down removes idle workers first (`sonicflow_in_flight_records` 0 on their /metrics), then
 * those that did not say, then busy ones, newest first within each. Under the `work` rule the
 * target is never below the busy workers, so the workers stopped are as many as the idle ones at
 * most; a busy one is stopped only when the counts disagree (its /metrics did not answer, a render
 * started between the dispatcher's figures and the stop) or under the `lag` rule. SIGTERM lets it
 * finish and commit its record for up to its SONIC_DRAIN_TIMEOUT_MS (the environment given here,
 * 30 s by default): a render longer than that is abandoned, uncommitted, and redone by another
 * worker. Set SONIC_DRAIN_TIMEOUT_MS above the longest render for the workers of a GPU stage.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { interval, exhaustMap, from, type Subscription } from 'rxjs';
import type { Logger } from '../core/logger.js';
import { fetchGroupLag } from '../kafka/lag.js';
import { groupId } from '../runtime/names.js';
import type { StageSpec, Topology } from '../runtime/topology.js';
import type { Context } from '../app/context.js';
import { dispatchLoad, handlerTotals, metricValue, scalingBounds, wantedReplicas, workersToStop, type DispatchLoad } from '../app/scaling.js';

const BIN = fileURLToPath(new URL('../../bin/sonicflow.mjs', import.meta.url));
/** The line `sonicflow run` prints on stdout once its metrics endpoint listens (src/ops/run.ts). */
const METRICS_LINE = /^metrics on :(\d+)\/metrics$/;
/** How long a worker may take to report its metrics port before the autoscaler warns. */
const PORT_REPORT_TIMEOUT_MS = 60_000;

export interface AutoscaleOptions {
  /** Stages to supervise (default: all). */
  stages?: string[];
  /** Sampling interval, ms. */
  intervalMs: number;
  /** Minimum time between two scale-ups of a stage, ms. */
  upCooldownMs: number;
  /** How long a lower replica count must be desired before scaling down, ms. */
  downStabilizationMs: number;
  /** Upper bound for every stage, on top of the topology's maxReplicas and partitions. */
  maxReplicas?: number;
  /** Seconds per record before any has been measured. */
  defaultSecondsPerRecord: number;
  /** Environment for the workers (their configuration). */
  env: NodeJS.ProcessEnv;
  /** Extra arguments for `sonicflow run` (e.g. --file for a test topology). */
  runArgs?: string[];
  /** The workers' SONIC_DISPATCH_QUEUE_PER_WORKER: a worker holds 1 + this many dispatched records (default 1). */
  dispatchQueuePerWorker?: number;
}

export {
  desiredReplicas,
  desiredWorkers,
  metricValue,
  workersToStop,
  type DispatchLoad,
  type ScaleInputs,
  type StopCandidate,
  type WorkScaleInputs,
} from '../app/scaling.js';

export interface Decision {
  stage: string;
  at: number;
  /** `lag`: lag × seconds per record; `work`: the dispatcher's backlog and outstanding seconds. */
  rule: 'lag' | 'work';
  lag: number;
  /** With rule `work`: estimated worker-seconds waiting in the dispatcher's backlog, and dispatched but not done. */
  backlogSeconds?: number;
  outstandingSeconds?: number;
  /** With rule `work`: workers holding a dispatched record, the floor of the count (absent when the dispatcher does not report it). */
  busyWorkers?: number;
  secondsPerRecord: number;
  targetDrainSeconds: number;
  current: number;
  /** What the rule asks for now. */
  desired: number;
  /** The count this decision set (with hysteresis, a scale-down goes to the highest count desired in its window). */
  target: number;
  action: 'up' | 'down' | 'hold';
  reason: string;
}

interface StageState {
  spec: StageSpec;
  max: number;
  /** For the workers of a dispatcher stage: that stage's name, and the bound of the `work` rule. */
  dispatcher: { stage: string; max: number } | undefined;
  /** Whether the last decision could use the dispatcher's figures (to log a change of rule once). */
  lastRule: Decision['rule'] | undefined;
  /** `port`: of the worker's metrics endpoint, once it has said (each worker picks a free one). */
  workers: { child: ChildProcess; port: number | undefined; stopping: boolean }[];
  lastUpAt: number;
  /** Since when a lower count has been desired, and the highest such value seen. */
  lowerSince: number | undefined;
  lowerPeak: number;
  secondsPerRecord: number;
  handled: { sum: number; count: number };
  /** Backlog (lag, or work seconds under the `work` rule) when this stage last scaled down: a scale-up after it needs it to have grown. */
  lagAtLastDown: number | undefined;
}

export type LagOf = (stage: StageSpec) => Promise<number>;

/** Total lag of a stage's group over its input and retry topics. */
export function lagOfStage(ctx: Context, topology: Topology): LagOf {
  return async (stage) => {
    const lags = await fetchGroupLag(ctx.kafka, groupId(ctx.config.clientId, topology, stage), [stage.input, ...stage.retry.topics]);
    return Number(lags.reduce((a, l) => a + (l.lag > 0n ? l.lag : 0n), 0n));
  };
}

/** A worker's /metrics text, or undefined when it has no port yet or does not answer within a second. */
async function metricsText(port: number | undefined): Promise<string | undefined> {
  if (port === undefined) return undefined;
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

/** Reads a worker's handler time (sum, count) from its /metrics. */
async function workerHandlerTotals(port: number | undefined): Promise<{ sum: number; count: number } | undefined> {
  const text = await metricsText(port);
  return text === undefined ? undefined : handlerTotals(text);
}

export class Autoscaler {
  private readonly states = new Map<string, StageState>();
  private sub?: Subscription;
  /** Set by stop(): a control step still in flight then decides nothing (its workers are draining, not gone). */
  private stopped = false;
  readonly decisions: Decision[] = [];

  constructor(
    private readonly topology: Topology,
    private readonly lagOf: LagOf,
    private readonly logger: Logger,
    private readonly options: AutoscaleOptions,
  ) {
    for (const spec of topology.stages) {
      if (options.stages && !options.stages.includes(spec.name)) continue;
      const b = scalingBounds(topology, spec, options.maxReplicas);
      this.states.set(spec.name, {
        spec,
        max: b.max,
        dispatcher: b.dispatcher,
        lastRule: undefined,
        workers: [],
        lastUpAt: 0,
        lowerSince: undefined,
        lowerPeak: 0,
        secondsPerRecord: options.defaultSecondsPerRecord,
        handled: { sum: 0, count: 0 },
        lagAtLastDown: undefined,
      });
    }
  }

  /** Current live workers per stage. */
  replicas(stage: string): number {
    return this.states.get(stage)?.workers.filter((w) => !w.stopping).length ?? 0;
  }

  /** Starts min replicas of every stage and the control loop. */
  start(): void {
    for (const s of this.states.values()) void this.scaleTo(s, Math.max(1, s.spec.scaling.minReplicas));
    this.sub = interval(this.options.intervalMs)
      .pipe(exhaustMap(() => from(this.tick())))
      .subscribe({ error: (err: unknown) => this.logger.error({ err }, 'autoscaler loop failed') });
  }

  /** One control step for every stage (exposed for tests). */
  async tick(): Promise<void> {
    for (const s of this.states.values()) {
      const lag = await this.lagOf(s.spec).catch((err: unknown) => {
        this.logger.warn({ err, stage: s.spec.name }, 'lag not available; holding');
        return undefined;
      });
      if (lag === undefined) continue;
      await this.measure(s);
      const work = s.dispatcher ? await this.dispatchLoad(s) : undefined;
      await this.decide(s, lag, work, Date.now());
    }
  }

  /**
   * The dispatcher's figures for a workers' stage, summed over its replicas' /metrics, or
   * undefined (with the reason logged when the rule changes) when no active replica answers.
   */
  private async dispatchLoad(s: StageState): Promise<DispatchLoad | undefined> {
    const d = s.dispatcher!;
    const front = this.states.get(d.stage);
    let why: string | undefined;
    let load: DispatchLoad | undefined;
    if (!front) why = `dispatcher stage ${d.stage} is not supervised here`;
    else {
      const texts = (await Promise.all(front.workers.filter((w) => !w.stopping).map((w) => metricsText(w.port)))).filter((t) => t !== undefined);
      const r = dispatchLoad(texts, d.stage);
      if ('load' in r) load = r.load;
      else why = r.why;
    }
    const rule: Decision['rule'] = load ? 'work' : 'lag';
    if (rule !== s.lastRule) {
      if (load) this.logger.info({ stage: s.spec.name, dispatcher: d.stage }, "scaling on the dispatcher's backlog and outstanding seconds");
      else this.logger.warn({ stage: s.spec.name, dispatcher: d.stage, reason: why }, 'dispatcher figures not available: scaling on the input lag');
    }
    return load;
  }

  /** Seconds per record from the workers' handler histograms since the last sample. */
  private async measure(s: StageState): Promise<void> {
    const totals = await Promise.all(s.workers.map((w) => workerHandlerTotals(w.port)));
    const sum = totals.reduce((a, t) => a + (t?.sum ?? 0), 0);
    const count = totals.reduce((a, t) => a + (t?.count ?? 0), 0);
    const dCount = count - s.handled.count;
    if (dCount > 0 && sum >= s.handled.sum) s.secondsPerRecord = Math.max(0.001, (sum - s.handled.sum) / dCount);
    s.handled = { sum, count };
  }

  private async decide(s: StageState, lag: number, work: DispatchLoad | undefined, now: number): Promise<void> {
    if (this.stopped) return;
    const current = this.replicas(s.spec.name);
    const min = Math.max(1, s.spec.scaling.minReplicas);
    const rule: Decision['rule'] = work ? 'work' : 'lag';
    // the backlog figure hysteresis compares: in the rule's own unit, forgotten when the rule changes
    if (rule !== s.lastRule) s.lagAtLastDown = undefined;
    s.lastRule = rule;
    const targetDrainSeconds = s.spec.scaling.targetDrainSeconds;
    const inputs = work
      ? {
          lag,
          backlogSeconds: work.backlogSeconds,
          outstandingSeconds: work.outstandingSeconds,
          ...(work.busyWorkers !== undefined ? { busyWorkers: work.busyWorkers } : {}),
          secondsPerRecord: s.secondsPerRecord,
          targetDrainSeconds,
          min,
          max: s.dispatcher!.max,
        }
      : { lag, secondsPerRecord: s.secondsPerRecord, targetDrainSeconds, min, max: s.max };
    const wanted = wantedReplicas(
      s.spec,
      { min, max: s.max, dispatcher: s.dispatcher },
      { lag, secondsPerRecord: s.secondsPerRecord, work, perWorker: 1 + (this.options.dispatchQueuePerWorker ?? 1) },
    );
    const desired = wanted.desired;
    const backlog = work ? work.backlogSeconds + work.outstandingSeconds : lag;
    let action: Decision['action'] = 'hold';
    let target = current;
    let reason = 'at the desired count';
    if (desired > current) {
      s.lowerSince = undefined;
      if (s.lagAtLastDown !== undefined && backlog <= s.lagAtLastDown) {
        // the rebalance a scale-down causes stalls the stage for a moment; that is not new work
        reason = 'backlog has not grown since the last scale-down (hysteresis)';
      } else if (now - s.lastUpAt >= this.options.upCooldownMs) {
        action = 'up';
        reason = `backlog needs ${desired} to drain in ${inputs.targetDrainSeconds} s`;
        s.lastUpAt = now;
        s.lagAtLastDown = undefined;
        target = desired;
        await this.scaleTo(s, desired);
      } else reason = 'scale-up cooldown';
    } else if (desired < current) {
      if (s.lowerSince === undefined) {
        s.lowerSince = now;
        s.lowerPeak = desired;
      }
      s.lowerPeak = Math.max(s.lowerPeak, desired);
      if (now - s.lowerSince >= this.options.downStabilizationMs) {
        action = 'down';
        reason = `fewer needed for ${this.options.downStabilizationMs} ms`;
        target = s.lowerPeak;
        await this.scaleTo(s, s.lowerPeak);
        s.lowerSince = undefined;
        s.lagAtLastDown = backlog;
      } else reason = 'waiting for the lower count to hold (hysteresis)';
    } else s.lowerSince = undefined;
    // say when the busy workers are what holds the count up (the seconds alone would ask for fewer)
    const floor = wanted.reason.indexOf('; never below');
    if (floor >= 0) reason += wanted.reason.slice(floor);
    const d: Decision = { stage: s.spec.name, at: now, rule, ...inputs, current, desired, target, action, reason };
    this.decisions.push(d);
    this.logger.info({ decision: d }, 'autoscale decision');
  }

  private async scaleTo(s: StageState, n: number): Promise<void> {
    const live = s.workers.filter((w) => !w.stopping);
    for (let i = live.length; i < n; i++) this.spawn(s);
    if (live.length <= n) return;
    // idle workers first (a busy one would drain its record, but an idle one frees its GPU at once)
    const inFlight = await Promise.all(
      live.map(async (w) => {
        const text = await metricsText(w.port);
        return text === undefined ? undefined : (metricValue(text, 'sonicflow_in_flight_records', s.spec.name) ?? 0);
      }),
    );
    const stop = workersToStop(
      live.map((w, i) => ({ w, inFlight: inFlight[i] })),
      live.length - n,
    );
    for (const { w, inFlight: busy } of stop) {
      if (w.stopping) continue;
      w.stopping = true;
      this.logger.info({ stage: s.spec.name, pid: w.child.pid, in_flight: busy ?? 'unknown' }, 'stopping worker (SIGTERM: it drains)');
      w.child.kill('SIGTERM');
    }
  }

  private spawn(s: StageState): void {
    if (this.stopped) return;
    // each worker's metrics endpoint takes a free port and says which on stdout
    const child = spawn(process.execPath, [BIN, 'run', s.spec.name, ...(this.options.runArgs ?? [])], {
      env: { ...this.options.env, SONIC_METRICS_PORT: '0' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const worker: StageState['workers'][number] = { child, port: undefined, stopping: false };
    s.workers.push(worker);
    // read every line, so that a worker writing to stdout never blocks on a full pipe
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = METRICS_LINE.exec(line);
      if (!m || worker.port !== undefined) return;
      worker.port = Number(m[1]);
      this.logger.info({ stage: s.spec.name, pid: child.pid, metrics_port: worker.port }, 'worker metrics endpoint');
    });
    // a worker that never says its port is left out of the service-time measurement: say so
    const silent = setTimeout(() => {
      if (worker.port === undefined && !worker.stopping) {
        this.logger.warn({ stage: s.spec.name, pid: child.pid }, 'worker has not reported its metrics port; its service time is not measured');
      }
    }, PORT_REPORT_TIMEOUT_MS);
    silent.unref();
    child.on('exit', (code, signal) => {
      clearTimeout(silent);
      s.workers.splice(s.workers.indexOf(worker), 1);
      if (!worker.stopping && this.sub && !this.sub.closed) {
        this.logger.warn({ stage: s.spec.name, code, signal }, 'worker exited unexpectedly; restarting it');
        this.spawn(s);
      }
    });
    this.logger.info({ stage: s.spec.name, pid: child.pid }, 'worker started');
  }

  /** Stops the loop and drains every worker. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.sub?.unsubscribe();
    const exits: Promise<void>[] = [];
    for (const s of this.states.values()) {
      for (const w of s.workers) {
        w.stopping = true;
        exits.push(new Promise((r) => (w.child.exitCode !== null ? r() : w.child.once('exit', () => r()))));
        w.child.kill('SIGTERM');
      }
    }
    await Promise.all(exits);
  }
}
