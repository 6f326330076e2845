/**
 * Scheduling efficiency: how close sonicflow gets to the ideal makespan when a burst of tasks
 * meets a few slow, fixed-time "GPU" workers, and how long those workers sit idle while work waits.
 *
 * Pipeline: bench/fixtures/burst.ts (prep -> infer with a fixed service time,
 * instead of the full media pipeline): in -> prep (no-op, one process) -> prepared -> infer
 * (`serviceMs` sleep per record, default 200, concurrency 1, one record per transaction) -> out,
 * `partitions` partitions per topic (default 4), `workers` infer processes (default 4), each
 * `sonicflow run infer`, all in one consumer group: Kafka's partition assignment is the scheduler.
 *
 * Method.
 *  1. Deploy under a unique prefix; start prep and the infer workers; wait until both groups are
 *     Stable with every member; warm up with one record per partition (so every worker has
 *     fenced its partitions and set up its transactional producers) and wait for its outputs.
 *  2. Produce a burst of `tasks` records (default 300) into `in` in one send, keyed by fresh task
 *     ids with the default (murmur2) partitioner as the API does, so `in`'s partitions get uneven
 *     shares (or, with `partitioning: 'balanced'`, ids chosen to land evenly), and follow in,
 *     prepared and out until all are out. `prepared`, infer's input, is partitioned 'balanced' as
 *     sonic's tasks.prepared is: prep deals the tasks evenly over infer's partitions.
 *  3. makespan = last `out` timestamp - first `in` timestamp; ideal = ceil(tasks / workers) x
 *     serviceMs; the ratio makespan / ideal is the efficiency figure (1.0 is perfect).
 *  4. Worker idle time while a backlog existed: each output carries its handler's start and end
 *     (headers from the worker). Lag of infer at time t = records in `prepared` (timestamp <= t)
 *     whose output is not yet written (out timestamp > t), i.e. not yet committed. For every
 *     worker, the time in [first prepared, last out] when lag > 0 and the worker is not inside a
 *     handler, summed over workers, at 1 ms resolution: `idleWhileBacklogS`. It counts idleness
 *     from an uneven partition split (a worker whose partitions are empty while others' are not)
 *     and the per-record overhead between handlers (commit, fetch). `idleWhileWaitingS` is the
 *     same with the stricter backlog "a record is in `prepared` and no handler has started it".
 *  5. Stop everything, delete topics, subjects and consumer groups.
 *
 * Service-time mixes (`mix`, issue 14's goal): 'equal' (every task `serviceMs`) or 'lognormal'
 * (heavy-tailed: the tasks' times are the n quantiles exp(mu + sigma z_i), z_i the standard
 * normal at (i + 0.5) / n, scaled to mean `serviceMs`, shuffled by a seeded PRNG, so a seed gives
 * the same set and order every run; sigma = max(`sigma` (default 0.6), ln 20 / (2 z_max)) so the
 * longest is >= 20x the shortest). The bench writes each task's time to a plan file that the infer
 * fixture reads (BURST_SERVICE_PLAN), keyed by task id.
 * The issue's figures, reported beside the old ones: lower bound = max(total work / workers,
 * longest task); `ratioLowerBound` = makespan / lower bound; `idleWhileWaitingPct` = idle while
 * waiting as a % of worker time (workers x makespan), and the same for idle while backlog.
 * (`idealS`/`ratio` keep their old meaning, ceil(tasks / workers) x serviceMs, for the equal mix.)
 *
 * Sweep (`sweep`, the CLI with a worker list or range, or --sweep): for every mix, every worker
 * count and every system, one run and one table row: 'sonicflow' as above (one consumer group on
 * `partitions` partitions, default 12 as the sonic topology's), and 'bullmq', the pull model
 * (bench/baselines/bullmq.ts runScheduling: one queue, one concurrency-1 Worker per "GPU" in the
 * bench process, the same task times in the same order; queued = the burst's addBulk, done =
 * the `completed` event; no prep hop). Same metrics for both. Printed as a table and saved to
 * bench/results/scheduling-sweep.json.
 *
 * Failover (`killWorkerMidTask`, --failover, single-run mode): once the burst runs, the bench
 * SIGKILLs infer worker w1 as soon as its log shows it started a burst task (the fixture prints
 * `bench.start <id> <ms>` with BURST_LOG_STARTS), and reports `failover`: the time from the kill
 * to that task's handler start on another worker (from its output's headers) and to its output.
 *
 * Dispatch (`dispatch`, --dispatch; the sweep's system 'dispatch'): the same burst with a
 * dispatcher between prep and infer (bench/fixtures/burst.ts with BURST_DISPATCH=1; two dispatch
 * processes, the active one and a standby), infer reading `dispatched` (24 partitions): work goes
 * to a worker when it has room, not by partition ownership (docs/architecture.md, "How work
 * reaches a GPU"). --session-timeout-ms sets the stage processes' session timeout (failover).
 *
 *   node --import tsx bench/scheduling.ts [--tasks 300] [--workers 4] [--partitions 4] [--service-ms 200] [--mix equal|lognormal] [--failover] [--dispatch] [--session-timeout-ms N]
 *   node --import tsx bench/scheduling.ts --workers 1-12 [--mix equal,lognormal] [--systems sonicflow,dispatch,bullmq] [--partitions 12]
 *       [--tasks 300] [--service-ms 200] [--seed 1] [--sigma 0.6] [--sweep] [--out scheduling-sweep]
 *   (--sweep makes one worker count a sweep; --out names the results file, bench/results/<out>.json)
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import * as kafkajs from '../src/kafka/kafkajs.js';
import { TopicAdmin } from '../src/kafka/admin.js';
import { PlainProducer } from '../src/kafka/io.js';
import { Context } from '../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology } from '../src/ops/deploy.js';
import { groupId } from '../src/runtime/names.js';
import { valueSubject } from '../src/serde/wire.js';
import { TopicCollector, brokerList, deleteGroups, waitGroupsStable } from './baselines/sonicflow.js';
import { burstTopology } from './fixtures/burst.js';
import { runScheduling } from './baselines/bullmq.js';
import { saveResults, startNode, stopProcess, table, waitFor, type Managed } from './lib.js';

const ROOT = join(import.meta.dirname, '..');
const murmur2 = kafkajs.Partitioners.DefaultPartitioner();
const FIXTURE = join(ROOT, 'bench', 'fixtures', 'burst.ts');

export interface SchedulingOptions {
  brokers?: string | string[];
  tasks?: number;
  workers?: number;
  partitions?: number;
  serviceMs?: number;
  /**
   * 'key' (default): fresh random task ids, spread by the murmur2 partitioner as the API's are;
   * 'balanced': task ids picked so that murmur2 puts task i on partition i mod partitions, in
   * `in` and `prepared` alike (prep re-keys by task id, so choosing the partition of `in` alone
   * would not carry over).
   */
  partitioning?: 'key' | 'balanced';
  /** Service-time mix (default 'equal'), its seed (default 1) and, for 'lognormal', sigma (default 0.6). */
  mix?: Mix;
  seed?: number;
  sigma?: number;
  /**
   * Failover: once the burst runs, SIGKILL infer worker w1 as soon as it has started a burst task,
   * and report how long until that task started again on another worker (`failover`).
   */
  killWorkerMidTask?: boolean;
  /**
   * Pull-based dispatch (issue 14's design): prep -> prepared -> dispatch (two processes: the
   * active dispatcher and a standby) -> dispatched (`slots` partitions) -> infer. Without it,
   * infer reads `prepared` and partition ownership schedules.
   */
  dispatch?: boolean;
  /** Partitions of `dispatched` (default 24). */
  slots?: number;
  /** The stage processes' consumer session timeout, ms (SONIC_SESSION_TIMEOUT_MS; default: the processes' own, 30 s); heartbeats every sixth of it. */
  sessionTimeoutMs?: number;
}

export interface FailoverResult {
  taskId: string;
  /** when w1 started the task, and when it was SIGKILLed, ms since the epoch */
  startedAt: number;
  killedAt: number;
  /** kill -> the task's handler start on its new worker, s, and that worker */
  restartedAfterS: number;
  restartedOn: string;
  /** kill -> the task's output, s */
  completedAfterS: number;
}

export type Mix = 'equal' | 'lognormal';

/** A seeded PRNG (mulberry32), uniform in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9). */
function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number): number =>
    (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1)
  );
}

/**
 * The service times (ms, integers >= 1) of `n` tasks in burst order: 'equal' all `meanMs`;
 * 'lognormal' the n quantiles of a log-normal with mean `meanMs` (see the header), seeded order.
 */
export function serviceTimes(n: number, mix: Mix, meanMs: number, seed = 1, sigma = 0.6): number[] {
  if (mix === 'equal') return Array.from({ length: n }, () => meanMs);
  if (mix !== 'lognormal') throw new Error(`scheduling: unknown mix '${String(mix)}' (equal, lognormal)`);
  const zMax = n > 1 ? -normalQuantile(0.5 / n) : 1;
  const s = Math.max(sigma, Math.log(20) / (2 * zMax));
  const raw = Array.from({ length: n }, (_, i) => Math.exp(s * normalQuantile((i + 0.5) / n)));
  const scale = (meanMs * n) / raw.reduce((x, v) => x + v, 0);
  const times = raw.map((v) => Math.max(1, Math.round(v * scale)));
  const rnd = prng(seed);
  for (let i = times.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [times[i], times[j]] = [times[j]!, times[i]!];
  }
  return times;
}

/** Issue 14's lower bound on the makespan: max(total work / workers, longest task), ms. */
export function lowerBoundMs(times: number[], workers: number): number {
  return Math.max(times.reduce((a, v) => a + v, 0) / workers, Math.max(...times));
}

export interface SchedulingResult {
  system: string;
  mix: Mix;
  seed: number;
  tasks: number;
  workers: number;
  partitions: number;
  serviceMs: number;
  makespanS: number;
  idealS: number;
  /** makespan / ideal. */
  ratio: number;
  /** Sum of the tasks' planned service times, the longest and the shortest, s. */
  totalWorkS: number;
  longestS: number;
  shortestS: number;
  /** max(total work / workers, longest task), s, and makespan / it. */
  lowerBoundS: number;
  ratioLowerBound: number;
  /** idleWhileWaitingS and idleWhileBacklogS as % of worker time (workers x makespan). */
  idleWhileWaitingPct: number;
  idleWhileBacklogPct: number;
  /** Sum over workers of the time not in a handler while infer's lag was > 0, s. */
  idleWhileBacklogS: number;
  /** Same, while some record was in `prepared` and not yet started, s. */
  idleWhileWaitingS: number;
  /** Mean handler time, and mean gap between one handler's end and the same worker's next start, ms. */
  serviceMsMeasured: number;
  gapMsMean: number;
  /** From the first task in `in` to the first handler start: the pipeline's latency before any work (prep hop, dispatch). */
  firstStartMs: number;
  /** Between the first and the last worker to finish its last task: the burst's ragged end. */
  lastEndSpreadMs: number;
  /** Tasks per partition of `prepared`, and per worker with its busy and idle-while-backlog seconds. */
  perPartition: number[];
  perWorker: { worker: string; tasks: number; busyS: number; idleWhileBacklogS: number }[];
  /** with `killWorkerMidTask` */
  failover?: FailoverResult;
  notes: string;
}

/** A fresh task id that the default (murmur2) partitioner puts on `partition` of `partitions`. */
function idOnPartition(partition: number, partitions: number): string {
  const meta = Array.from({ length: partitions }, (_, p) => ({
    partitionId: p,
    leader: 0,
    replicas: [0],
    isr: [0],
    partitionErrorCode: 0,
    offlineReplicas: [],
  }));
  for (;;) {
    const id = randomUUID();
    if (murmur2({ topic: 'any', partitionMetadata: meta, message: { key: id, value: null } }) === partition) return id;
  }
}

/** Length of the union of `intervals` ∩ [from, to) at 1 ms resolution, as a 0/1 array over it. */
function coverage(intervals: [number, number][], from: number, to: number): Uint8Array {
  const diff = new Int32Array(to - from + 1);
  for (const [a, b] of intervals) {
    const s = Math.max(from, a);
    const e = Math.min(to, b);
    if (e <= s) continue;
    diff[s - from]! += 1;
    diff[e - from]! -= 1;
  }
  const out = new Uint8Array(to - from);
  let c = 0;
  for (let i = 0; i < out.length; i++) {
    c += diff[i]!;
    out[i] = c > 0 ? 1 : 0;
  }
  return out;
}

/** Runs the burst and measures it; removes everything it made. */
export async function run(opts: SchedulingOptions = {}): Promise<SchedulingResult> {
  const tasks = opts.tasks ?? 300;
  const workers = opts.workers ?? 4;
  const partitions = opts.partitions ?? 4;
  const serviceMs = opts.serviceMs ?? 200;
  const partitioning = opts.partitioning ?? 'key';
  const mix = opts.mix ?? 'equal';
  const seed = opts.seed ?? 1;
  const times = serviceTimes(tasks, mix, serviceMs, seed, opts.sigma);
  const dispatch = opts.dispatch ?? false;
  if (!dispatch && partitions < workers) throw new Error(`scheduling: ${workers} workers need at least as many partitions (got ${partitions})`);
  const prefix = `bench_sched_${randomUUID().slice(0, 8)}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KAFKA_BROKERS: brokerList(opts.brokers),
    SONIC_TOPIC_PREFIX: prefix,
    BURST_PARTITIONS: String(partitions),
    BURST_INFER_MS: String(serviceMs),
    SONIC_METRICS_PORT: '0',
    SONIC_LOG_LEVEL: 'warn',
    ...(opts.killWorkerMidTask ? { BURST_LOG_STARTS: '1' } : {}),
    ...(dispatch ? { BURST_DISPATCH: '1', BURST_SLOTS: String(opts.slots ?? 24) } : {}),
    ...(opts.sessionTimeoutMs
      ? {
          SONIC_SESSION_TIMEOUT_MS: String(opts.sessionTimeoutMs),
          SONIC_HEARTBEAT_INTERVAL_MS: String(Math.max(100, Math.floor(opts.sessionTimeoutMs / 6))),
        }
      : {}),
  };
  for (const k of ['SONIC_BATCH_MAX_RECORDS', 'SONIC_BATCH_MAX_WAIT_MS', 'SONIC_CONCURRENCY']) delete env[k];
  const ctx = new Context({ ...env, SONIC_LOG_LEVEL: 'fatal' }, 'bench');
  const topology = burstTopology({ prefix, partitions, dispatch, slots: opts.slots ?? 24 });
  const [inTopic, prepared, outTopic] = ['in', 'prepared', 'out'].map((k) => `${prefix}.${k}`) as [string, string, string];
  const encode = (id: string): Promise<Buffer> => ctx.serde.encode(valueSubject(inTopic), 'task-status', { task_id: id, state: 'QUEUED', at: new Date() });
  const logDir = mkdtempSync(join(tmpdir(), 'bench-scheduling-'));
  // the burst's task ids and their service times, before the workers start (they read the plan)
  const ids = Array.from({ length: tasks }, (_, i) => (partitioning === 'balanced' ? idOnPartition(i % partitions, partitions) : randomUUID()));
  env.BURST_SERVICE_PLAN = join(logDir, 'service-plan.json');
  writeFileSync(env.BURST_SERVICE_PLAN, JSON.stringify(Object.fromEntries(ids.map((id, i) => [id, times[i]!]))));
  const admin = await new TopicAdmin(ctx.kafka).connect();
  const procs: Managed[] = [];
  const groups = ['prep', 'infer', ...(dispatch ? ['dispatch'] : [])].map((s) => groupId(ctx.config.clientId, prefix, s)) as [string, string, ...string[]];
  let failed = false;
  try {
    await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);
    const cli = join(ROOT, 'bin', 'sonicflow.mjs');
    procs.push(startNode([cli, 'run', 'prep', '--file', FIXTURE], env, join(logDir, 'prep.log')));
    // dispatchers go last, so that procs[1] is infer w1 (the failover run's victim)
    for (let i = 1; i <= workers; i++)
      procs.push(startNode([cli, 'run', 'infer', '--file', FIXTURE], { ...env, BURST_WORKER: `w${i}` }, join(logDir, `infer-w${i}.log`)));
    if (dispatch) for (const d of ['d1', 'd2']) procs.push(startNode([cli, 'run', 'dispatch', '--file', FIXTURE], env, join(logDir, `dispatch-${d}.log`)));
    const exited = (): string | undefined => {
      const p = procs.find((m) => m.proc.exitCode !== null);
      return p ? `${p.log} exited with ${p.proc.exitCode}:\n${p.tail()}` : undefined;
    };
    await waitGroupsStable(
      ctx.kafka,
      [{ id: groups[0], members: 1 }, { id: groups[1], members: workers }, ...(dispatch ? [{ id: groups[2]!, members: 2 }] : [])],
      {
        timeoutMs: 180_000,
        what: `scheduling: the prep and ${workers} infer processes did not form stable groups`,
        abort: exited,
      },
    );

    // warm-up: one record per partition through the whole pipeline
    const producer = await new PlainProducer(ctx.kafka).connect();
    try {
      const warm = await new TopicCollector(ctx.kafka, [outTopic]).start('end');
      try {
        const recs = await Promise.all(
          Array.from({ length: partitions }, async (_, p) => {
            const id = randomUUID();
            return { key: id, value: await encode(id), partition: p };
          }),
        );
        await producer.send(inTopic, recs);
        await waitFor(() => warm.count(outTopic) >= partitions, {
          timeoutMs: 60_000 + partitions * serviceMs,
          what: 'scheduling: warm-up records did not come out',
          everyMs: 100,
          abort: exited,
        });
      } finally {
        await warm.stop();
      }

      // the burst
      const burst = await Promise.all(ids.map(async (id) => ({ key: id, value: await encode(id) })));
      let killed: Omit<FailoverResult, 'restartedAfterS' | 'restartedOn' | 'completedAfterS'> | undefined;
      const seen = await new TopicCollector(ctx.kafka, [inTopic, prepared, outTopic], { headers: true }).start('end');
      try {
        await producer.send(inTopic, burst);
        if (opts.killWorkerMidTask) {
          const victim = procs[1]!; // infer w1
          const inBurst = new Set(ids);
          const started = (): [string, number] | undefined => {
            for (const m of readFileSync(victim.log, 'utf8').matchAll(/^bench\.start (\S+) (\d+)$/gm)) if (inBurst.has(m[1]!)) return [m[1]!, Number(m[2])];
            return undefined;
          };
          await waitFor(() => started() !== undefined, { timeoutMs: 60_000, what: 'scheduling: w1 did not start a burst task', everyMs: 20, abort: exited });
          const [taskId, startedAt] = started()!;
          victim.proc.kill('SIGKILL');
          killed = { taskId, startedAt, killedAt: Date.now() };
        }
        const ideal = lowerBoundMs(times, workers);
        await waitFor(() => seen.count(outTopic) >= tasks, {
          timeoutMs: 60_000 + 4 * ideal,
          what: `scheduling: ${outTopic} did not get all ${tasks} tasks`,
          everyMs: 100,
          abort: exited,
        });
        // the `in` reader may trail the `out` one by a fetch
        await waitFor(() => seen.count(inTopic) >= tasks && seen.count(prepared) >= tasks, {
          timeoutMs: 10_000,
          what: 'scheduling: in/prepared not fully read',
          everyMs: 50,
        });
      } finally {
        await seen.stop();
      }
      const result = measure(seen, { inTopic, prepared, outTopic }, ids, { tasks, workers, partitions, serviceMs, partitioning, mix, seed, times, dispatch });
      if (killed) {
        const out = seen.seen.get(outTopic)!.get(killed.taskId)!;
        const restart = Number(out.headers?.['bench.start.ms']);
        const failover: FailoverResult = {
          ...killed,
          restartedAfterS: (restart - killed.killedAt) / 1000,
          restartedOn: out.headers?.['bench.worker'] ?? '?',
          completedAfterS: (out.timestamp - killed.killedAt) / 1000,
        };
        result.failover = failover;
        result.notes += `; failover: w1 SIGKILLed ${killed.killedAt - killed.startedAt} ms into a task, which restarted on ${failover.restartedOn} ${failover.restartedAfterS.toFixed(1)} s after the kill`;
      }
      return result;
    } finally {
      await producer.close().catch(() => undefined);
    }
  } catch (err) {
    failed = true;
    if (err instanceof Error) err.message += ` (stage logs kept in ${logDir})`;
    throw err;
  } finally {
    await Promise.all(procs.map((p) => stopProcess(p.proc, 30_000)));
    await removeTopology(topology, admin, ctx.registryAdmin).catch(() => undefined);
    await admin.close();
    await deleteGroups(ctx.kafka, groups);
    if (!failed) rmSync(logDir, { recursive: true, force: true });
  }
}

interface MeasureOptions {
  tasks: number;
  workers: number;
  partitions: number;
  serviceMs: number;
  partitioning: string;
  mix: Mix;
  seed: number;
  /** planned service time per task, ms, in burst order */
  times: number[];
  dispatch?: boolean;
}

/** One task's times (ms): queued (in), available to a worker, done (committed), its handler's start and end. */
interface TaskRow {
  in: number;
  avail: number;
  /** partition of infer's input; -1 where there is none (BullMQ) */
  partition: number;
  done: number;
  worker: string;
  start: number;
  end: number;
}

function measure(seen: TopicCollector, t: { inTopic: string; prepared: string; outTopic: string }, keys: string[], o: MeasureOptions): SchedulingResult {
  const rows: TaskRow[] = keys.map((k) => {
    const i = seen.seen.get(t.inTopic)!.get(k)!;
    const p = seen.seen.get(t.prepared)!.get(k)!;
    const out = seen.seen.get(t.outTopic)!.get(k)!;
    const h = out.headers ?? {};
    return {
      in: i.timestamp,
      avail: p.timestamp,
      partition: p.partition,
      done: out.timestamp,
      worker: h['bench.worker'] ?? '?',
      start: Number(h['bench.start.ms']),
      end: Number(h['bench.end.ms']),
    };
  });
  const r = metrics(rows, o);
  return {
    ...r,
    system: o.dispatch ? 'sonicflow-dispatch' : 'sonicflow',
    notes: [
      ...(o.dispatch
        ? [
            `dispatch: 2 dispatcher processes (active + standby) hold the backlog and hand each task to a free worker, on ${o.workers} workers; cost estimate = planned time within +/-25 %`,
          ]
        : []),
      `bench/fixtures/burst.ts (prep -> infer with a ${o.mix === 'equal' ? `fixed ${o.serviceMs} ms` : `${o.mix} (seed ${o.seed}, mean ${o.serviceMs} ms)`} sleep), not the media pipeline`,
      `${o.workers} infer processes + 1 prep process, ${o.partitions} partitions, infer one record per transaction (exactly-once)`,
      `tasks written to in ${o.partitioning === 'key' ? 'by random task ids (murmur2), as the API does' : 'evenly (task ids chosen per partition)'}; infer's tasks per partition ${r.perPartition.join('/')}`,
      `makespan from the first 'in' to the last 'out' timestamp; idle = worker outside a handler while infer lag > 0, 1 ms resolution`,
      r.notes,
    ]
      .filter(Boolean)
      .join('; '),
  };
}

/** The figures of a run from its tasks' times; `notes` says only what is unusual. */
function metrics(rows: TaskRow[], o: MeasureOptions): SchedulingResult {
  const first = Math.min(...rows.map((r) => r.in));
  const last = Math.max(...rows.map((r) => r.done));
  const makespanS = (last - first) / 1000;
  const lowerBoundS = lowerBoundMs(o.times, o.workers) / 1000;
  const idealS = o.mix === 'equal' ? (Math.ceil(o.tasks / o.workers) * o.serviceMs) / 1000 : lowerBoundS;

  const from = Math.min(...rows.map((r) => r.avail));
  const to = Math.max(last, ...rows.map((r) => r.end));
  const lag = coverage(
    rows.map((r) => [r.avail, r.done]),
    from,
    to,
  );
  const waiting = coverage(
    rows.map((r) => [r.avail, r.start]),
    from,
    to,
  );
  const workerIds = [...new Set(rows.map((r) => r.worker))].sort();
  let idleLag = 0;
  let idleWait = 0;
  const perWorker = workerIds.map((w) => {
    const mine = rows.filter((r) => r.worker === w).sort((a, b) => a.start - b.start);
    const busy = coverage(
      mine.map((r) => [r.start, r.end]),
      from,
      to,
    );
    let il = 0;
    let iw = 0;
    let b = 0;
    for (let i = 0; i < busy.length; i++) {
      b += busy[i]!;
      if (!busy[i]) {
        il += lag[i]!;
        iw += waiting[i]!;
      }
    }
    idleLag += il;
    idleWait += iw;
    return { worker: w, tasks: mine.length, busyS: b / 1000, idleWhileBacklogS: il / 1000 };
  });
  // workers that got no task at all were idle the whole time there was lag
  const silent = Math.max(0, o.workers - workerIds.length);
  const lagMs = lag.reduce((a, v) => a + v, 0);
  const waitMs = waiting.reduce((a, v) => a + v, 0);
  idleLag += silent * lagMs;
  idleWait += silent * waitMs;
  const gaps: number[] = [];
  for (const w of workerIds) {
    const mine = rows.filter((r) => r.worker === w).sort((a, b) => a.start - b.start);
    for (let i = 1; i < mine.length; i++) if (mine[i]!.avail <= mine[i - 1]!.end) gaps.push(mine[i]!.start - mine[i - 1]!.end);
  }
  const perPartition = o.partitions > 0 ? Array.from({ length: o.partitions }, (_, p) => rows.filter((r) => r.partition === p).length) : [];
  const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, v) => a + v, 0) / xs.length : Number.NaN);
  const workerS = o.workers * makespanS;
  return {
    system: '',
    mix: o.mix,
    seed: o.seed,
    tasks: o.tasks,
    workers: o.workers,
    partitions: o.partitions,
    serviceMs: o.serviceMs,
    makespanS,
    idealS,
    ratio: makespanS / idealS,
    totalWorkS: o.times.reduce((a, v) => a + v, 0) / 1000,
    longestS: Math.max(...o.times) / 1000,
    shortestS: Math.min(...o.times) / 1000,
    lowerBoundS,
    ratioLowerBound: makespanS / lowerBoundS,
    idleWhileBacklogS: idleLag / 1000,
    idleWhileWaitingS: idleWait / 1000,
    idleWhileWaitingPct: (100 * idleWait) / 1000 / workerS,
    idleWhileBacklogPct: (100 * idleLag) / 1000 / workerS,
    serviceMsMeasured: mean(rows.map((r) => r.end - r.start)),
    gapMsMean: mean(gaps),
    firstStartMs: Math.min(...rows.map((r) => r.start)) - first,
    lastEndSpreadMs:
      Math.max(...workerIds.map((w) => Math.max(...rows.filter((r) => r.worker === w).map((r) => r.end)))) -
      Math.min(...workerIds.map((w) => Math.max(...rows.filter((r) => r.worker === w).map((r) => r.end)))),
    perPartition,
    perWorker,
    notes: silent > 0 ? `${silent} worker(s) handled no task` : '',
  };
}

/** BullMQ on the same burst: one queue, `workers` concurrency-1 Workers (bench/baselines/bullmq.ts). */
export async function runBullmq(opts: SchedulingOptions & { redisUrl?: string } = {}): Promise<SchedulingResult> {
  const tasks = opts.tasks ?? 300;
  const workers = opts.workers ?? 4;
  const serviceMs = opts.serviceMs ?? 200;
  const mix = opts.mix ?? 'equal';
  const seed = opts.seed ?? 1;
  const times = serviceTimes(tasks, mix, serviceMs, seed, opts.sigma);
  const done = await runScheduling({ redisUrl: opts.redisUrl, workers, tasks: times.map((ms, i) => ({ id: `t-${i}`, ms })) });
  const rows: TaskRow[] = done.map((d) => ({ in: d.added, avail: d.added, partition: -1, done: d.done, worker: d.worker, start: d.start, end: d.end }));
  const r = metrics(rows, { tasks, workers, partitions: 0, serviceMs, partitioning: 'pull', mix, seed, times });
  return {
    ...r,
    system: 'bullmq',
    notes: [
      `BullMQ (Redis): one queue, ${workers} Workers with concurrency 1 in the bench process, each sleeping its job's service time (${mix}, mean ${serviceMs} ms); at-least-once`,
      `burst added in one addBulk to warm, idle workers; makespan from the add to the last 'completed' event; idle = worker outside a handler while a job was not completed, 1 ms resolution`,
      r.notes,
    ]
      .filter(Boolean)
      .join('; '),
  };
}

export interface SweepOptions extends Omit<SchedulingOptions, 'workers' | 'mix'> {
  redisUrl?: string;
  workers: number[];
  mixes: Mix[];
  systems: System[];
}

/** 'sonicflow': partition ownership schedules infer; 'dispatch': sonicflow with its dispatcher; 'bullmq': the pull model. */
export type System = 'sonicflow' | 'dispatch' | 'bullmq';

/**
 * One run per (workers, mix, system), worker counts outermost so that an interrupted sweep has
 * every mix and system for the counts it reached; `progress` hears of each run before it starts
 * and of its result (or failure) after. A failed run is reported in `failures` and the sweep goes on.
 */
export async function sweep(
  o: SweepOptions,
  progress: (s: string, r?: SchedulingResult) => void = () => undefined,
): Promise<{ results: SchedulingResult[]; failures: string[] }> {
  const results: SchedulingResult[] = [];
  const failures: string[] = [];
  for (const workers of o.workers)
    for (const mix of o.mixes)
      for (const system of o.systems) {
        const what = `${system} ${mix} ${workers} worker(s)`;
        progress(what);
        try {
          const r =
            system === 'bullmq'
              ? await runBullmq({ ...o, mix, workers })
              : await run({ ...o, partitions: o.partitions ?? 12, mix, workers, dispatch: system === 'dispatch' });
          results.push(r);
          progress(`${what}: done`, r);
        } catch (err) {
          failures.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
          progress(`${what}: FAILED ${failures.at(-1)!}`);
        }
      }
  return { results, failures };
}

/** The sweep's table, rows ordered by mix, workers, system. */
export function sweepTable(results: SchedulingResult[]): string {
  const f = (n: number, d = 2) => n.toFixed(d);
  const order = (r: SchedulingResult): string => `${r.mix} ${String(r.workers).padStart(4, '0')} ${r.system}`;
  return table(
    ['system', 'mix', 'workers', 'makespan, s', 'lower bound, s', 'makespan / LB', 'idle while waiting, %', 'idle while backlog, %', 'tasks per worker'],
    [...results]
      .sort((a, b) => order(a).localeCompare(order(b)))
      .map((r) => [
        r.system,
        r.mix,
        String(r.workers),
        f(r.makespanS),
        f(r.lowerBoundS),
        f(r.ratioLowerBound),
        f(r.idleWhileWaitingPct, 1),
        f(r.idleWhileBacklogPct, 1),
        r.perWorker.map((w) => w.tasks).join('/'),
      ]),
  );
}

/** "1-12", "1,3,5" or "4" → [1..12], [1, 3, 5], [4]. */
function workerList(s: string): number[] {
  return s.split(',').flatMap((part) => {
    const m = /^(\d+)-(\d+)$/.exec(part.trim());
    if (m) return Array.from({ length: Number(m[2]) - Number(m[1]) + 1 }, (_, i) => Number(m[1]) + i);
    const n = Number(part);
    if (!Number.isInteger(n) || n < 1) throw new Error(`scheduling: bad --workers '${s}' (a count, a list 1,3,5 or a range 1-12)`);
    return [n];
  });
}

if (import.meta.filename === process.argv[1]) {
  const { values: a } = parseArgs({
    options: {
      tasks: { type: 'string', default: '300' },
      workers: { type: 'string', default: '4' },
      partitions: { type: 'string' },
      'service-ms': { type: 'string', default: '200' },
      partitioning: { type: 'string', default: 'key' },
      mix: { type: 'string' },
      seed: { type: 'string', default: '1' },
      sigma: { type: 'string', default: '0.6' },
      systems: { type: 'string', default: 'sonicflow,dispatch,bullmq' },
      dispatch: { type: 'boolean', default: false },
      'session-timeout-ms': { type: 'string' },
      sweep: { type: 'boolean', default: false },
      out: { type: 'string', default: 'scheduling-sweep' },
      failover: { type: 'boolean', default: false },
    },
  });
  const workers = workerList(a.workers);
  const common = {
    tasks: Number(a.tasks),
    serviceMs: Number(a['service-ms']),
    partitioning: a.partitioning as 'key' | 'balanced',
    seed: Number(a.seed),
    sigma: Number(a.sigma),
  };
  if (a.sweep || workers.length > 1 || (a.mix ?? '').includes(',')) {
    if (a.failover) throw new Error('scheduling: --failover is a single run (one --workers count, one --mix), not a sweep');
    const mixes = (a.mix ?? 'equal,lognormal').split(',') as Mix[];
    const systems = a.systems.split(',') as System[];
    const partitions = Number(a.partitions ?? Math.max(12, ...workers));
    const { results, failures } = await sweep(
      { ...common, partitions, workers, mixes, systems, redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
      (s, r) => console.error(`scheduling sweep: ${s}${r ? `\n${sweepTable([r]).split('\n').at(-1)!}` : ''}`),
    );
    console.log(
      `Scheduling sweep: ${common.tasks} tasks, mean service ${common.serviceMs} ms, sonicflow on ${partitions} partitions, seed ${common.seed}; LB = max(total work / workers, longest task); idle % of workers x makespan`,
    );
    console.log(sweepTable(results));
    for (const f of failures) console.log(`FAILED ${f}`);
    console.log(`saved ${saveResults(a.out, { options: { ...common, partitions, workers, mixes, systems }, results, failures })}`);
    process.exit(failures.length ? 1 : 0);
  }
  const r = await run({
    ...common,
    workers: workers[0],
    partitions: Number(a.partitions ?? '4'),
    mix: (a.mix ?? 'equal') as Mix,
    killWorkerMidTask: a.failover,
    dispatch: a.dispatch,
    ...(a['session-timeout-ms'] ? { sessionTimeoutMs: Number(a['session-timeout-ms']) } : {}),
  });
  console.log(JSON.stringify(r, null, 2));
  process.exit(0);
}
