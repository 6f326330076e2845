/**
 * `sonicflow autoscale`: on one machine, supervises every stage as N worker processes
 * (`sonicflow run <stage>`) and adjusts N per stage from the backlog: desired replicas =
 * ceil(lag × measured seconds per record / target drain time), bounded by min/max replicas,
 * the input's partitions and --max. It scales up after a short cooldown, scales down only after
 * the lower value held for a stabilisation window (hysteresis, so it does not flap), and drains
 * workers it removes with SIGTERM. After a scale-down it scales up again only once the backlog has
 * grown past what it was then (the rebalance of a scale-down is no reason to scale up). Each
 * decision is logged with its inputs.
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
import { drainReplicas } from './lag.js';

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
}

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

export interface Decision {
  stage: string;
  at: number;
  lag: number;
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
  /** `port`: of the worker's metrics endpoint, once it has said (each worker picks a free one). */
  workers: { child: ChildProcess; port: number | undefined; stopping: boolean }[];
  lastUpAt: number;
  /** Since when a lower count has been desired, and the highest such value seen. */
  lowerSince: number | undefined;
  lowerPeak: number;
  secondsPerRecord: number;
  handled: { sum: number; count: number };
  /** Lag when this stage last scaled down: a scale-up after it needs the backlog to have grown. */
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

/** Reads a worker's handler time (sum, count) from its /metrics. */
async function handlerTotals(port: number | undefined): Promise<{ sum: number; count: number } | undefined> {
  if (port === undefined) return undefined;
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1000) })).text();
    let sum = 0;
    let count = 0;
    for (const m of text.matchAll(/^sonicflow_handler_duration_seconds_(sum|count)\{[^}]*outcome="(ok|retry|dlq)"[^}]*\} ([\d.e+-]+)$/gm)) {
      if (m[1] === 'sum') sum += Number(m[3]);
      else count += Number(m[3]);
    }
    return { sum, count };
  } catch {
    return undefined;
  }
}

export class Autoscaler {
  private readonly states = new Map<string, StageState>();
  private sub?: Subscription;
  readonly decisions: Decision[] = [];

  constructor(
    private readonly topology: Topology,
    private readonly lagOf: LagOf,
    private readonly logger: Logger,
    private readonly options: AutoscaleOptions,
  ) {
    for (const spec of topology.stages) {
      if (options.stages && !options.stages.includes(spec.name)) continue;
      const partitions = topology.topics[spec.input]?.partitions ?? 1;
      const max = Math.max(1, Math.min(spec.scaling.maxReplicas, partitions, options.maxReplicas ?? Number.POSITIVE_INFINITY));
      this.states.set(spec.name, {
        spec,
        max,
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
    for (const s of this.states.values()) this.scaleTo(s, Math.max(1, s.spec.scaling.minReplicas));
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
      this.decide(s, lag, Date.now());
    }
  }

  /** Seconds per record from the workers' handler histograms since the last sample. */
  private async measure(s: StageState): Promise<void> {
    const totals = await Promise.all(s.workers.map((w) => handlerTotals(w.port)));
    const sum = totals.reduce((a, t) => a + (t?.sum ?? 0), 0);
    const count = totals.reduce((a, t) => a + (t?.count ?? 0), 0);
    const dCount = count - s.handled.count;
    if (dCount > 0 && sum >= s.handled.sum) s.secondsPerRecord = Math.max(0.001, (sum - s.handled.sum) / dCount);
    s.handled = { sum, count };
  }

  private decide(s: StageState, lag: number, now: number): void {
    const current = this.replicas(s.spec.name);
    const min = Math.max(1, s.spec.scaling.minReplicas);
    const inputs = { lag, secondsPerRecord: s.secondsPerRecord, targetDrainSeconds: s.spec.scaling.targetDrainSeconds, min, max: s.max };
    const desired = desiredReplicas(inputs);
    let action: Decision['action'] = 'hold';
    let target = current;
    let reason = 'at the desired count';
    if (desired > current) {
      s.lowerSince = undefined;
      if (s.lagAtLastDown !== undefined && lag <= s.lagAtLastDown) {
        // the rebalance a scale-down causes stalls the stage for a moment; that is not new work
        reason = 'backlog has not grown since the last scale-down (hysteresis)';
      } else if (now - s.lastUpAt >= this.options.upCooldownMs) {
        action = 'up';
        reason = `backlog needs ${desired} to drain in ${inputs.targetDrainSeconds} s`;
        s.lastUpAt = now;
        s.lagAtLastDown = undefined;
        target = desired;
        this.scaleTo(s, desired);
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
        this.scaleTo(s, s.lowerPeak);
        s.lowerSince = undefined;
        s.lagAtLastDown = lag;
      } else reason = 'waiting for the lower count to hold (hysteresis)';
    } else s.lowerSince = undefined;
    const d: Decision = { stage: s.spec.name, at: now, ...inputs, current, desired, target, action, reason };
    this.decisions.push(d);
    this.logger.info({ decision: d }, 'autoscale decision');
  }

  private scaleTo(s: StageState, n: number): void {
    const live = s.workers.filter((w) => !w.stopping);
    for (let i = live.length; i < n; i++) this.spawn(s);
    // remove the newest first: the oldest have warm caches and stable assignments
    for (const w of live.slice(n).reverse()) {
      w.stopping = true;
      w.child.kill('SIGTERM');
    }
  }

  private spawn(s: StageState): void {
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
