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
 *   node --import tsx bench/scheduling.ts [--tasks 300] [--workers 4] [--partitions 4] [--service-ms 200]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import kafkajs from 'kafkajs';
import { TopicAdmin } from '../src/kafka/admin.js';
import { PlainProducer } from '../src/kafka/io.js';
import { Context } from '../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology } from '../src/ops/deploy.js';
import { groupId } from '../src/runtime/names.js';
import { valueSubject } from '../src/serde/wire.js';
import { TopicCollector, brokerList, deleteGroups, waitGroupsStable } from './baselines/sonicflow.js';
import { burstTopology } from './fixtures/burst.js';
import { startNode, stopProcess, waitFor, type Managed } from './lib.js';

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
}

export interface SchedulingResult {
  system: string;
  tasks: number;
  workers: number;
  partitions: number;
  serviceMs: number;
  makespanS: number;
  idealS: number;
  /** makespan / ideal. */
  ratio: number;
  /** Sum over workers of the time not in a handler while infer's lag was > 0, s. */
  idleWhileBacklogS: number;
  /** Same, while some record was in `prepared` and not yet started, s. */
  idleWhileWaitingS: number;
  /** Mean handler time, and mean gap between one handler's end and the same worker's next start, ms. */
  serviceMsMeasured: number;
  gapMsMean: number;
  /** Tasks per partition of `prepared`, and per worker with its busy and idle-while-backlog seconds. */
  perPartition: number[];
  perWorker: { worker: string; tasks: number; busyS: number; idleWhileBacklogS: number }[];
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
  if (partitions < workers) throw new Error(`scheduling: ${workers} workers need at least as many partitions (got ${partitions})`);
  const prefix = `bench_sched_${randomUUID().slice(0, 8)}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KAFKA_BROKERS: brokerList(opts.brokers),
    SONIC_TOPIC_PREFIX: prefix,
    BURST_PARTITIONS: String(partitions),
    BURST_INFER_MS: String(serviceMs),
    SONIC_METRICS_PORT: '0',
    SONIC_LOG_LEVEL: 'warn',
  };
  for (const k of ['SONIC_BATCH_MAX_RECORDS', 'SONIC_BATCH_MAX_WAIT_MS', 'SONIC_CONCURRENCY']) delete env[k];
  const ctx = new Context({ ...env, SONIC_LOG_LEVEL: 'fatal' }, 'bench');
  const topology = burstTopology({ prefix, partitions });
  const [inTopic, prepared, outTopic] = ['in', 'prepared', 'out'].map((k) => `${prefix}.${k}`) as [string, string, string];
  const encode = (id: string): Promise<Buffer> => ctx.serde.encode(valueSubject(inTopic), 'task-status', { task_id: id, state: 'QUEUED', at: new Date() });
  const logDir = mkdtempSync(join(tmpdir(), 'bench-scheduling-'));
  const admin = await new TopicAdmin(ctx.kafka).connect();
  const procs: Managed[] = [];
  const groups = ['prep', 'infer'].map((s) => groupId(ctx.config.clientId, prefix, s)) as [string, string];
  let failed = false;
  try {
    await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);
    const cli = join(ROOT, 'bin', 'sonicflow.mjs');
    procs.push(startNode([cli, 'run', 'prep', '--file', FIXTURE], env, join(logDir, 'prep.log')));
    for (let i = 1; i <= workers; i++)
      procs.push(startNode([cli, 'run', 'infer', '--file', FIXTURE], { ...env, BURST_WORKER: `w${i}` }, join(logDir, `infer-w${i}.log`)));
    const exited = (): string | undefined => {
      const p = procs.find((m) => m.proc.exitCode !== null);
      return p ? `${p.log} exited with ${p.proc.exitCode}:\n${p.tail()}` : undefined;
    };
    await waitGroupsStable(
      ctx.kafka,
      [
        { id: groups[0], members: 1 },
        { id: groups[1], members: workers },
      ],
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
      const burst = await Promise.all(
        Array.from({ length: tasks }, async (_, i) => {
          const id = partitioning === 'balanced' ? idOnPartition(i % partitions, partitions) : randomUUID();
          return { key: id, value: await encode(id) };
        }),
      );
      const seen = await new TopicCollector(ctx.kafka, [inTopic, prepared, outTopic], { headers: true }).start('end');
      try {
        await producer.send(inTopic, burst);
        const ideal = Math.ceil(tasks / workers) * serviceMs;
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
      return measure(
        seen,
        { inTopic, prepared, outTopic },
        burst.map((b) => b.key),
        { tasks, workers, partitions, serviceMs, partitioning },
      );
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

function measure(
  seen: TopicCollector,
  t: { inTopic: string; prepared: string; outTopic: string },
  keys: string[],
  o: { tasks: number; workers: number; partitions: number; serviceMs: number; partitioning: string },
): SchedulingResult {
  const rows = keys.map((k) => {
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
  const first = Math.min(...rows.map((r) => r.in));
  const last = Math.max(...rows.map((r) => r.done));
  const makespanS = (last - first) / 1000;
  const idealS = (Math.ceil(o.tasks / o.workers) * o.serviceMs) / 1000;

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
  const perPartition = Array.from({ length: o.partitions }, (_, p) => rows.filter((r) => r.partition === p).length);
  const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, v) => a + v, 0) / xs.length : Number.NaN);
  return {
    system: 'sonicflow',
    tasks: o.tasks,
    workers: o.workers,
    partitions: o.partitions,
    serviceMs: o.serviceMs,
    makespanS,
    idealS,
    ratio: makespanS / idealS,
    idleWhileBacklogS: idleLag / 1000,
    idleWhileWaitingS: idleWait / 1000,
    serviceMsMeasured: mean(rows.map((r) => r.end - r.start)),
    gapMsMean: mean(gaps),
    perPartition,
    perWorker,
    notes: [
      `bench/fixtures/burst.ts (prep -> infer with a fixed ${o.serviceMs} ms sleep), not the media pipeline`,
      `${o.workers} infer processes + 1 prep process, ${o.partitions} partitions, infer one record per transaction (exactly-once)`,
      `tasks written to in ${o.partitioning === 'key' ? 'by random task ids (murmur2), as the API does' : 'evenly (task ids chosen per partition)'}; infer's tasks per partition ${perPartition.join('/')}`,
      `makespan from the first 'in' to the last 'out' timestamp; idle = worker outside a handler while infer lag > 0, 1 ms resolution`,
      silent > 0 ? `${silent} worker(s) handled no task` : '',
    ]
      .filter(Boolean)
      .join('; '),
  };
}

if (import.meta.filename === process.argv[1]) {
  const { values: a } = parseArgs({
    options: {
      tasks: { type: 'string', default: '300' },
      workers: { type: 'string', default: '4' },
      partitions: { type: 'string', default: '4' },
      'service-ms': { type: 'string', default: '200' },
      partitioning: { type: 'string', default: 'key' },
    },
  });
  const r = await run({
    tasks: Number(a.tasks),
    workers: Number(a.workers),
    partitions: Number(a.partitions),
    serviceMs: Number(a['service-ms']),
    partitioning: a.partitioning as 'key' | 'balanced',
  });
  console.log(JSON.stringify(r, null, 2));
  process.exit(0);
}
