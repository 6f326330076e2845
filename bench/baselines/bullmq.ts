/**
 * Baseline: BullMQ 6 on the local Redis, running the five-hop no-op chain of `npm run bench` as
 * a five-step flow per record: queue step1 → worker 1 → queue step2 → … → worker 5. The job of
 * step i enqueues the job of step i + 1 (same ~1 KB payload, unchanged) and then completes; step
 * 5 just completes. Five Workers with concurrency 50 each run in THIS process, the queues live
 * under a unique key prefix and are obliterated afterwards.
 *
 * Delivery: at-least-once, with no transaction across queues. A worker that dies after adding
 * the next step's job but before completing its own job has it run again (after the lock
 * expires, as a stalled job); the next step's job carries a deterministic job id (the record id),
 * so the re-add is dropped while that job still exists — but completed jobs are removed
 * (removeOnComplete), after which a re-run duplicates the record downstream.
 *
 * Method (the same as the Kafka baselines, see kafka-streams.ts; clocks are this process'
 * Date.now(), one machine):
 * - A record's time at stage 0 is when its step-1 job was added; at stage i = 1..4 when worker
 *   i added the step-(i+1) job (the job's `timestamp`); at stage 5 when step 5's job completed
 *   (the worker's `completed` event, after Redis acknowledged the completion). The stamps travel
 *   in the payload (`t`).
 * - Throughput, the "burst": N jobs are pre-loaded into step1 before the workers start;
 *   records/s = (N − 1) / (last − first stage-5 time).
 * - Latency, a separate paced run with the workers warm and idle: 100 records/s for 10 s, one add
 *   per record on its schedule. Hop i's latency = time at stage i − time at stage i − 1; p50/p99
 *   over the five hops pooled (per hop and end to end in `notes`).
 *
 *   node --import tsx bench/baselines/bullmq.ts [--records 5000]   (REDIS_URL, default redis://127.0.0.1:6379)
 *
 * `runScheduling` is the pull-model anchor of bench/scheduling.ts (one queue, one concurrency-1
 * Worker per "GPU"); see there.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Queue, Worker, type Job } from 'bullmq';
import {
  HOPS,
  LATENCY_RATE,
  LATENCY_SECONDS,
  VALUE_BYTES,
  describeLatency,
  hopLatency,
  throughput,
  type BaselineOptions,
  type BaselineResult,
} from './kafka-streams.js';

export const CONCURRENCY = 50;

interface StepData {
  id: string;
  /** ~1 KB, copied unchanged from step to step */
  payload: string;
  /** time (ms) at stage 0, 1, … */
  t: number[];
}

/**
 * BullMQ 6 talks to Redis through ioredis (or node-redis), an optional peer dependency it loads
 * itself: fail with a clear message, before creating anything, when it is not installed.
 */
export function checkRedisClient(): void {
  const fromBullmq = createRequire(createRequire(import.meta.url).resolve('bullmq'));
  try {
    fromBullmq.resolve('ioredis');
  } catch {
    throw new Error("BullMQ baseline: BullMQ 6 needs its optional peer dependency 'ioredis' (>= 5), which is not installed; add it to devDependencies");
  }
}

/** Polls `done` every 20 ms; rejects with `what()` after `timeoutMs`, or at once when `failure()` names one. */
async function until(done: () => boolean, timeoutMs: number, what: () => string, failure: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    const f = failure();
    if (f !== undefined) throw new Error(`${what()}: ${f}`);
    if (Date.now() > deadline) throw new Error(`${what()}: not done after ${Math.round(timeoutMs / 1000)} s`);
    await sleep(20);
  }
}

/** Whether `p` settled within `ms` (cleanup must not hang the bench). */
async function bounded(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), ms))),
  ]);
  clearTimeout(timer);
  return settled;
}

export async function run(opts: BaselineOptions): Promise<BaselineResult> {
  checkRedisClient();
  const connection = { url: opts.redisUrl ?? 'redis://127.0.0.1:6379', maxRetriesPerRequest: null };
  const prefix = `bench-bullmq-${randomUUID().slice(0, 8)}`;
  const payload = randomBytes((VALUE_BYTES * 3) / 4).toString('base64'); // 1024 characters
  const names = Array.from({ length: HOPS }, (_, i) => `step${i + 1}`);
  const queues = names.map(
    (name) => new Queue<StepData>(name, { connection, prefix, defaultJobOptions: { removeOnComplete: true, removeOnFail: 1000, attempts: 1 } }),
  );
  for (const q of queues) q.on('error', (e) => (failure ??= `queue ${q.name}: ${e.message}`));
  /** record id → stage times, once step 5 completed */
  const finished = new Map<string, number[]>();
  let duplicates = 0;
  let failure: string | undefined;
  const workers: Worker<StepData>[] = [];
  try {
    for (let i = 0; i < HOPS; i++) {
      const next = queues[i + 1];
      const worker = new Worker<StepData>(
        names[i]!,
        async (job: Job<StepData>) => {
          if (!next) return;
          const now = Date.now();
          await next.add('step', { ...job.data, t: [...job.data.t, now] }, { jobId: job.data.id, timestamp: now });
        },
        { connection, prefix, concurrency: CONCURRENCY, autorun: false },
      );
      worker.on('error', (e) => (failure ??= `worker ${names[i]}: ${e.message}`));
      worker.on('failed', (job, e) => (failure ??= `job ${job?.id ?? '?'} of ${names[i]} failed: ${e.message}`));
      if (!next) {
        worker.on('completed', (job) => {
          if (finished.has(job.data.id)) duplicates++;
          else finished.set(job.data.id, [...job.data.t, Date.now()]);
        });
      }
      workers.push(worker);
    }
    const ready = Promise.all([...queues.map((q) => q.waitUntilReady()), ...workers.map((w) => w.waitUntilReady())]);
    if (!(await bounded(ready, 30_000))) throw new Error(`BullMQ: Redis at ${connection.url} not ready after 30 s${failure ? ` (${failure})` : ''}`);
    await ready;

    // burst: N jobs pre-loaded into step1, then the workers start
    const first = queues[0]!;
    for (let i = 0; i < opts.records; i += 1000) {
      const now = Date.now();
      const jobs = [];
      for (let j = i; j < Math.min(opts.records, i + 1000); j++)
        jobs.push({ name: 'step', data: { id: `b-${j}`, payload, t: [now] }, opts: { jobId: `b-${j}`, timestamp: now } });
      await first.addBulk(jobs);
    }
    for (const w of workers) void w.run().catch((e: Error) => (failure ??= `worker: ${e.message}`));
    await until(
      () => finished.size >= opts.records,
      60_000 + opts.records * 10,
      () => `BullMQ burst: ${finished.size} of ${opts.records} records through step 5`,
      () => failure,
    );
    const recordsPerSecond = throughput([...finished.values()].map((t) => t[HOPS]!));

    // latency: fresh records at a steady pace through the warm, idle workers
    const rate = opts.latencyRate ?? LATENCY_RATE;
    const total = Math.max(1, Math.round(rate * (opts.latencySeconds ?? LATENCY_SECONDS)));
    const adds: Promise<unknown>[] = [];
    const start = performance.now();
    for (let i = 0; i < total; i++) {
      const wait = start + (i * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
      const now = Date.now();
      adds.push(first.add('step', { id: `l-${i}`, payload, t: [now] }, { jobId: `l-${i}`, timestamp: now }));
    }
    await Promise.all(adds);
    const latencyIds = Array.from({ length: total }, (_, i) => `l-${i}`);
    await until(
      () => latencyIds.every((id) => finished.has(id)),
      60_000,
      () => `BullMQ latency run: not all ${total} records through step 5`,
      () => failure,
    );
    const stages = Array.from({ length: HOPS + 1 }, (_, s) => new Map(latencyIds.map((id) => [id, finished.get(id)![s]!])));
    const latency = hopLatency(stages);

    return {
      system: `BullMQ 6 (Redis, ${HOPS} queues, concurrency ${CONCURRENCY} each)`,
      records: opts.records,
      recordsPerSecond,
      hopLatencyMs: { p50: latency.p50, p99: latency.p99 },
      notes:
        `at-least-once: no transaction across queues (a step enqueues the next, then completes; a crash in between re-runs the step), ` +
        `deterministic job ids dedupe a re-add only while the next job still exists (removeOnComplete); ` +
        `5 Workers × concurrency ${CONCURRENCY} in one Node process on one Redis; ~1 KB payload; ` +
        `latency from a separate run of ${total} fresh records at ${rate}/s, stage times = add time of the next step's job (step 5: completion); ` +
        `${describeLatency(latency)}${duplicates ? `; ${duplicates} duplicate completions seen` : ''}`,
    };
  } finally {
    // let active jobs finish (15 s at most), then force
    await Promise.all(workers.map(async (w) => (await bounded(w.close(), 15_000)) || (await bounded(w.close(true), 5_000))));
    for (const q of queues) {
      await bounded(q.obliterate({ force: true }), 30_000);
      await bounded(q.close(), 5_000);
    }
  }
}

/** One task of the scheduling bench's BullMQ run: when it was queued, started, ended, completed, and by whom. */
export interface ScheduledTask {
  id: string;
  /** queued (the burst's addBulk), handler start and end, `completed` event (Redis acknowledged), ms */
  added: number;
  start: number;
  end: number;
  done: number;
  worker: string;
}

/**
 * The anchor of bench/scheduling.ts: the pull model. One queue; `workers` BullMQ Workers with
 * concurrency 1 (one per "GPU") in this process, each sleeping its job's own service time; every
 * free worker takes the next job. The workers are started and warmed up (one job each) first,
 * then the whole burst is added in one addBulk, FIFO. Removes its queue afterwards.
 */
export async function runScheduling(o: { redisUrl?: string; workers: number; tasks: { id: string; ms: number }[] }): Promise<ScheduledTask[]> {
  checkRedisClient();
  const connection = { url: o.redisUrl ?? 'redis://127.0.0.1:6379', maxRetriesPerRequest: null };
  const prefix = `bench-bullmq-sched-${randomUUID().slice(0, 8)}`;
  const queue = new Queue<{ id: string; ms: number }>('gpu', {
    connection,
    prefix,
    defaultJobOptions: { removeOnComplete: true, removeOnFail: 1000, attempts: 1 },
  });
  let failure: string | undefined;
  queue.on('error', (e) => (failure ??= `queue: ${e.message}`));
  const times = new Map<string, Omit<ScheduledTask, 'id' | 'added'>>();
  const done = new Map<string, number>();
  const workers: Worker<{ id: string; ms: number }>[] = [];
  try {
    for (let i = 1; i <= o.workers; i++) {
      const name = `w${i}`;
      const worker = new Worker<{ id: string; ms: number }>(
        'gpu',
        async (job) => {
          const start = Date.now();
          await sleep(job.data.ms);
          times.set(job.data.id, { start, end: Date.now(), done: Number.NaN, worker: name });
        },
        { connection, prefix, concurrency: 1 },
      );
      worker.on('error', (e) => (failure ??= `worker ${name}: ${e.message}`));
      worker.on('failed', (job, e) => (failure ??= `job ${job?.id ?? '?'} failed: ${e.message}`));
      worker.on('completed', (job) => done.set(job.data.id, Date.now()));
      workers.push(worker);
    }
    const ready = Promise.all([queue.waitUntilReady(), ...workers.map((w) => w.waitUntilReady())]);
    if (!(await bounded(ready, 30_000))) throw new Error(`BullMQ: Redis at ${connection.url} not ready after 30 s${failure ? ` (${failure})` : ''}`);
    await ready;
    // warm-up: one short job per worker
    const warm = Array.from({ length: o.workers }, (_, i) => `warm-${i}`);
    await queue.addBulk(warm.map((id) => ({ name: 'task', data: { id, ms: 1 }, opts: { jobId: id } })));
    await until(
      () => warm.every((id) => done.has(id)),
      30_000,
      () => 'BullMQ scheduling warm-up',
      () => failure,
    );
    const added = Date.now();
    await queue.addBulk(o.tasks.map((t) => ({ name: 'task', data: t, opts: { jobId: t.id, timestamp: added } })));
    const work = o.tasks.reduce((a, t) => a + t.ms, 0);
    await until(
      () => o.tasks.every((t) => done.has(t.id)),
      60_000 + 4 * work,
      () => `BullMQ scheduling: ${done.size - warm.length} of ${o.tasks.length} tasks completed`,
      () => failure,
    );
    return o.tasks.map((t) => ({ id: t.id, added, ...times.get(t.id)!, done: done.get(t.id)! }));
  } finally {
    await Promise.all(workers.map(async (w) => (await bounded(w.close(), 15_000)) || (await bounded(w.close(true), 5_000))));
    await bounded(queue.obliterate({ force: true }), 30_000);
    await bounded(queue.close(), 5_000);
  }
}

if (import.meta.filename === process.argv[1]) {
  const { values } = parseArgs({ options: { records: { type: 'string', default: '20000' } } });
  const result = await run({ brokers: '', records: Number(values.records), partitions: 4, redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
  console.log(JSON.stringify(result, null, 2));
  process.exit(0);
}
