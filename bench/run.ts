/**
 * `npm run bench`: every benchmark side by side, on this machine, in one run.
 *  1. hop throughput and latency of the same five-hop no-op chain (~1 KB Avro records) on
 *     sonicflow (exactly-once, batched and default), a raw kafkajs chain (at-least-once),
 *     Kafka Streams (exactly_once_v2) and BullMQ (a five-step flow on Redis);
 *  2. the broker's own ceiling (Kafka's producer and consumer performance tools);
 *  3. the submit API under autocannon;
 *  4. scheduling efficiency of a 300-task burst on 4 fixed-time infer workers;
 *  5. the scheduling sweep: 300-task bursts, equal and log-normal task times, 1 to 12 workers,
 *     partition ownership ('sonicflow'), the dispatcher ('dispatch') and BullMQ side by side
 *     (bench/scheduling.ts; about 35 minutes), and the failover of a worker SIGKILLed mid-task
 *     behind the dispatcher, each infer worker with the session timeout it declares;
 *  6. the GPU path: Sonic loaded per task (command backend, demo.py) against Sonic loaded once
 *     (worker backend), 20 tasks on the stand-in Sonic with a 20 s load and 2 s per task
 *     (bench/gpu.ts; about 9 minutes);
 *  7. the pipeline's own cost per task: submit → SUCCEEDED less the handlers' time, per hop, for
 *     the demo sample 5 times and a burst of 100 small tasks (bench/pipeline-overhead.ts; about
 *     5 minutes).
 * Each figure is the median of --runs runs with min–max. Prints a table, writes
 * bench/results/bench.json and bench/results/bench.svg.
 *
 *   npm run bench [-- --runs 3 --records 10000 --only sonicflow-batched,raw-kafkajs]
 *
 * Kafka: KAFKA_BROKERS and SCHEMA_REGISTRY_URL; against a secured cluster also the product's
 * SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE and SONIC_KAFKA_SASL_MECHANISM / _USERNAME / _PASSWORD,
 * which every benchmark uses (bench/kafka-connection.ts; docs/performance.md).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { run as brokerPerf } from './baselines/broker-perf.js';
import { run as bullmq } from './baselines/bullmq.js';
import { run as kafkaStreams } from './baselines/kafka-streams.js';
import { run as rawKafkajs } from './baselines/raw-kafkajs.js';
import { run as sonicflow } from './baselines/sonicflow.js';
import { describeKafkaSecurity } from './kafka-connection.js';
import { barChartSvg, fmt, saveResults, summarise, table, type Summary } from './lib.js';
import { run as scheduling, sweep, sweepTable, type SchedulingResult } from './scheduling.js';
import { run as submit } from './submit.js';
import { gpuBench, gpuTable, type GpuBenchResult } from './gpu.js';
import { overheadBench, overheadReport, type OverheadResults } from './pipeline-overhead.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    records: { type: 'string', default: '10000' },
    partitions: { type: 'string', default: '4' },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log(`usage: npm run bench [-- --runs 3 --records 10000 --partitions 4 --only KEY,...]

  --runs N        runs of each system; figures are the median with min–max (default 3)
  --records N     records of the five-hop throughput run (default 10000)
  --partitions N  partitions per topic (default 4)
  --only KEYS     comma-separated: sonicflow-batched, sonicflow-default,
                  sonicflow-batched-kip447, sonicflow-default-kip447, raw-kafkajs,
                  kafka-streams, bullmq, broker, submit, scheduling, scheduling-sweep, gpu,
                  overhead
                  (default: all)

Environment: KAFKA_BROKERS, SCHEMA_REGISTRY_URL (npm run bench starts the local stack for what
is unset); for a secured cluster SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE,
SONIC_KAFKA_SASL_MECHANISM, SONIC_KAFKA_SASL_USERNAME, SONIC_KAFKA_SASL_PASSWORD, as for sonicflow
itself: every benchmark connects with them (see docs/performance.md).`);
  process.exit(0);
}
const RUNS = Number(args.runs);
const N = Number(args.records);
const P = Number(args.partitions);
const brokers = process.env.KAFKA_BROKERS ?? 'localhost:9092';
const only = args.only?.split(',');
const want = (name: string): boolean => !only || only.includes(name);
const started = Date.now();
const log = (s: string): boolean => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${s}\n`);
log(`Kafka at ${brokers} over ${describeKafkaSecurity()}`);

interface HopResult {
  system: string;
  records: number;
  recordsPerSecond: number;
  hopLatencyMs: { p50: number; p99: number };
  notes?: string;
}

const systems: { key: string; label: string; run: () => Promise<HopResult> }[] = [
  {
    key: 'sonicflow-batched',
    label: 'sonicflow, exactly-once, batched (500 / 100 ms)',
    run: () => sonicflow({ brokers, records: N, partitions: P, variant: 'eos-batched' }),
  },
  {
    key: 'sonicflow-default',
    label: 'sonicflow, exactly-once, runtime default batching (500 / 100 ms)',
    run: () => sonicflow({ brokers, records: N, partitions: P, variant: 'eos-default' }),
  },
  {
    key: 'sonicflow-batched-kip447',
    label: 'sonicflow, exactly-once, batched (500 / 100 ms), @platformatic/kafka (KIP-447)',
    run: () => sonicflow({ brokers, records: N, partitions: P, variant: 'eos-batched', client: 'platformatic' }),
  },
  {
    key: 'sonicflow-default-kip447',
    label: 'sonicflow, exactly-once, runtime default batching (500 / 100 ms), @platformatic/kafka (KIP-447)',
    run: () => sonicflow({ brokers, records: N, partitions: P, variant: 'eos-default', client: 'platformatic' }),
  },
  { key: 'raw-kafkajs', label: 'raw kafkajs chain, at-least-once', run: () => rawKafkajs({ brokers, records: N, partitions: P }) },
  { key: 'kafka-streams', label: 'Kafka Streams 4.1, exactly_once_v2', run: () => kafkaStreams({ brokers, records: N, partitions: P }) },
  { key: 'bullmq', label: 'BullMQ 6, five-step flow on Redis', run: () => bullmq({ brokers, records: N, partitions: P, redisUrl: 'redis://127.0.0.1:6379' }) },
];

interface SystemSummary {
  label: string;
  recordsPerSecond: Summary;
  p50: Summary;
  p99: Summary;
  notes?: string;
}

const hop: Record<string, SystemSummary> = {};
const raw: Record<string, HopResult[]> = {};
const failed: Record<string, string[]> = {};
// interleaved: run i of every system before run i + 1 of any, so drift hits all alike
for (let i = 0; i < RUNS; i++) {
  for (const s of systems.filter((x) => want(x.key))) {
    log(`${s.label}: run ${i + 1}/${RUNS}`);
    try {
      const r = await s.run();
      (raw[s.key] ??= []).push(r);
      log(`  ${r.recordsPerSecond.toFixed(0)} records/s, hop p50 ${r.hopLatencyMs.p50.toFixed(1)} ms, p99 ${r.hopLatencyMs.p99.toFixed(1)} ms`);
    } catch (err) {
      // one failing system must not lose the others' figures: it is reported as failed
      (failed[s.key] ??= []).push((err as Error).message);
      log(`  FAILED: ${(err as Error).message}`);
    }
  }
}
for (const s of systems) {
  const rs = raw[s.key];
  if (!rs) continue;
  hop[s.key] = {
    label: s.label,
    recordsPerSecond: summarise(rs.map((r) => r.recordsPerSecond)),
    p50: summarise(rs.map((r) => r.hopLatencyMs.p50)),
    p99: summarise(rs.map((r) => r.hopLatencyMs.p99)),
    ...(rs[0]?.notes ? { notes: rs[0].notes } : {}),
  };
}

let broker: Awaited<ReturnType<typeof brokerPerf>> | undefined;
if (want('broker')) {
  log('broker ceiling: producer and consumer performance tools');
  broker = await brokerPerf({ brokers, records: Math.max(N * 5, 50_000), partitions: P });
}

let api: { rps: Summary; p50: Summary; p99: Summary; non2xx: number } | undefined;
if (want('submit')) {
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    log(`submit API (autocannon): run ${i + 1}/${RUNS}`);
    runs.push(await submit({ brokers, durationS: 10, connections: 10 }));
  }
  api = {
    rps: summarise(runs.map((r) => r.requestsPerSecond)),
    p50: summarise(runs.map((r) => r.latencyMs.p50)),
    p99: summarise(runs.map((r) => r.latencyMs.p99)),
    non2xx: runs.reduce((a, r) => a + r.non2xx, 0),
  };
}

let sched: { ratio: Summary; idle: Summary; makespan: Summary } | undefined;
if (want('scheduling')) {
  const runs = [];
  for (let i = 0; i < Math.min(RUNS, 2); i++) {
    log(`scheduling efficiency: run ${i + 1}`);
    runs.push(await scheduling({ brokers, tasks: 300, workers: 4, serviceMs: 200 }));
  }
  sched = {
    ratio: summarise(runs.map((r) => r.makespanS / r.idealS)),
    idle: summarise(runs.map((r) => r.idleWhileBacklogS)),
    makespan: summarise(runs.map((r) => r.makespanS)),
  };
}

let sweepRun: { results: SchedulingResult[]; failures: string[]; failover?: SchedulingResult['failover'] } | undefined;
if (want('scheduling-sweep')) {
  log('scheduling sweep: 300 tasks, workers 1-12, equal and log-normal, sonicflow / dispatch / BullMQ (about 35 minutes)');
  const common = { brokers, tasks: 300, serviceMs: 200, partitioning: 'key' as const, seed: 1, sigma: 0.6 };
  sweepRun = await sweep(
    {
      ...common,
      partitions: 12,
      workers: Array.from({ length: 12 }, (_, i) => i + 1),
      mixes: ['equal', 'lognormal'],
      systems: ['sonicflow', 'dispatch', 'bullmq'],
      redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    },
    (what) => log(`scheduling sweep: ${what}`),
  );
  log('scheduling failover: a worker SIGKILLed mid-task behind the dispatcher');
  try {
    const r = await scheduling({ ...common, workers: 4, partitions: 12, mix: 'equal', dispatch: true, killWorkerMidTask: true });
    sweepRun.failover = r.failover;
  } catch (err) {
    sweepRun.failures.push(`failover: ${err instanceof Error ? err.message : String(err)}`);
  }
  saveResults('scheduling-sweep', { options: { ...common, partitions: 12, workers: '1-12', mixes: ['equal', 'lognormal'] }, ...sweepRun });
}

let gpu: GpuBenchResult[] | undefined;
if (want('gpu')) {
  log('GPU path: Sonic loaded per task (command) and once (worker), 20 tasks, 20 s load, 2 s per task (about 9 minutes)');
  gpu = await gpuBench({ tasks: 20, loadS: 20, taskS: 2, backends: ['command', 'worker'] }, (s) => log(`gpu: ${s}`));
  saveResults('gpu', { options: { tasks: 20, loadS: 20, taskS: 2 }, results: gpu });
}

let overhead: OverheadResults | undefined;
if (want('overhead')) {
  log('pipeline overhead: the demo sample 5 times, then a burst of 100 small tasks (about 5 minutes)');
  overhead = await overheadBench({ demo: 5, burst: 100 }, (s) => log(`overhead: ${s}`));
  saveResults('pipeline-overhead', overhead);
}

// ---------------------------------------------------------------- report
const lines: string[] = [];
const out = (s = ''): number => lines.push(s);
out(`sonicflow benchmarks — ${new Date().toISOString()}, ${N} records of ~1 KB, ${P} partitions, median (min–max) of ${RUNS} runs`);
out();
out('1. Five-hop no-op chain, end to end');
out(
  table(
    ['system', 'records/s', 'hop latency p50, ms', 'hop latency p99, ms'],
    Object.values(hop).map((h) => [h.label, fmt(h.recordsPerSecond), fmt(h.p50, 1), fmt(h.p99, 1)]),
  ),
);
for (const [key, errors] of Object.entries(failed)) out(`${systems.find((x) => x.key === key)?.label}: ${errors.length} run(s) failed: ${errors[0]}`);
const ratio = (a: string, b: string): string => {
  const x = hop[a]?.recordsPerSecond;
  const y = hop[b]?.recordsPerSecond;
  if (!x || !y) return 'n/a';
  return `${(x.median / y.median).toFixed(2)} (${(x.min / y.max).toFixed(2)}–${(x.max / y.min).toFixed(2)})`;
};
out();
out('Throughput ratios, median (worst–best pairing of runs):');
out(
  table(
    ['ratio', 'value'],
    [
      ['sonicflow batched / Kafka Streams', ratio('sonicflow-batched', 'kafka-streams')],
      ['sonicflow batched / raw kafkajs', ratio('sonicflow-batched', 'raw-kafkajs')],
      ['sonicflow batched / BullMQ', ratio('sonicflow-batched', 'bullmq')],
      ['sonicflow default / Kafka Streams', ratio('sonicflow-default', 'kafka-streams')],
      ['sonicflow default / raw kafkajs', ratio('sonicflow-default', 'raw-kafkajs')],
      ['sonicflow default / BullMQ', ratio('sonicflow-default', 'bullmq')],
      ['sonicflow batched, KIP-447 / Kafka Streams', ratio('sonicflow-batched-kip447', 'kafka-streams')],
      ['sonicflow batched, KIP-447 / raw kafkajs', ratio('sonicflow-batched-kip447', 'raw-kafkajs')],
      ['sonicflow batched, KIP-447 / BullMQ', ratio('sonicflow-batched-kip447', 'bullmq')],
      ['sonicflow default, KIP-447 / Kafka Streams', ratio('sonicflow-default-kip447', 'kafka-streams')],
      ['sonicflow default, KIP-447 / raw kafkajs', ratio('sonicflow-default-kip447', 'raw-kafkajs')],
      ['sonicflow default, KIP-447 / BullMQ', ratio('sonicflow-default-kip447', 'bullmq')],
      ['sonicflow batched, KIP-447 / kafkajs', ratio('sonicflow-batched-kip447', 'sonicflow-batched')],
      ['sonicflow default, KIP-447 / kafkajs', ratio('sonicflow-default-kip447', 'sonicflow-default')],
    ],
  ),
);
if (broker) {
  out();
  out("2. The broker's own ceiling (kafka-producer-perf-test / kafka-consumer-perf-test, 1 KB records, acks=all)");
  out(
    table(
      ['tool', 'records/s', 'MB/s'],
      [
        ['producer', broker.producerRecordsPerSecond.toFixed(0), broker.producerMBps.toFixed(1)],
        ['consumer', broker.consumerRecordsPerSecond.toFixed(0), broker.consumerMBps.toFixed(1)],
      ],
    ),
  );
}
if (api) {
  out();
  out('3. Submit API: autocannon, 10 connections x 10 s, POST /v1/tasks (JSON referencing stored blobs)');
  out(table(['requests/s', 'latency p50, ms', 'latency p99, ms', 'non-2xx'], [[fmt(api.rps), fmt(api.p50, 1), fmt(api.p99, 1), String(api.non2xx)]]));
}
if (sched) {
  out();
  out('4. Scheduling: 300 tasks, 4 infer workers, 200 ms fixed service time (ideal makespan 15 s)');
  out(
    table(['makespan, s', 'makespan / ideal', 'worker idle while a backlog existed, s'], [[fmt(sched.makespan, 1), fmt(sched.ratio, 2), fmt(sched.idle, 1)]]),
  );
}
if (sweepRun) {
  out();
  out('5. Scheduling sweep: 300 tasks (mean 200 ms), 1-12 workers; LB = max(total work / workers, longest task); idle % of workers x makespan');
  out(sweepTable(sweepRun.results));
  const worst = (system: string) => {
    const rs = sweepRun!.results.filter((r) => r.system === system);
    return rs.length
      ? [system, String(rs.length), Math.max(...rs.map((r) => r.ratioLowerBound)).toFixed(3), Math.max(...rs.map((r) => r.idleWhileWaitingPct)).toFixed(1)]
      : undefined;
  };
  out(
    table(
      ['system', 'runs', 'worst makespan / LB (goal <= 1.05)', 'worst idle while waiting, % (goal <= 5)'],
      ['sonicflow', 'sonicflow-dispatch', 'bullmq'].map(worst).filter((x): x is string[] => x !== undefined),
    ),
  );
  const f = sweepRun.failover;
  if (f)
    out(
      `Failover: a worker SIGKILLed ${f.killedAt - f.startedAt} ms into a task; the task began again on ${f.restartedOn} ${f.restartedAfterS.toFixed(1)} s after the kill (goal < 10 s), done ${f.completedAfterS.toFixed(1)} s after it`,
    );
  for (const x of sweepRun.failures) out(`FAILED ${x}`);
}
if (gpu) {
  out();
  out('6. GPU path: 20 tasks in a row on one GPU, the stand-in Sonic loading in 20 s and rendering in 2 s');
  out(gpuTable(gpu));
}
if (overhead) {
  out();
  out("7. The pipeline's own cost per task (builtin backend, topology defaults): hops = gaps between handlers, ms");
  out(overheadReport(overhead));
}
const report = lines.join('\n');
console.log(report);
const jsonPath = saveResults('bench', {
  records: N,
  partitions: P,
  runs: RUNS,
  hop,
  failed,
  broker,
  api,
  scheduling: sched,
  schedulingSweep: sweepRun,
  gpu,
  overhead,
  seconds: (Date.now() - started) / 1000,
});
const svg = barChartSvg(
  `Five-hop chain throughput, records/s (median, min–max; ${N} x 1 KB records, ${P} partitions)`,
  Object.values(hop).map((h) => ({ label: h.label, value: h.recordsPerSecond.median, min: h.recordsPerSecond.min, max: h.recordsPerSecond.max })),
  'records/s',
);
const svgPath = join(import.meta.dirname, 'results', 'bench.svg');
writeFileSync(svgPath, svg);
console.log(`\nsaved ${jsonPath} and ${svgPath} in ${((Date.now() - started) / 60_000).toFixed(1)} min`);
process.exit(0);
