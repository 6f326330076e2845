/**
 * The broker's own ceiling on this machine, for scale: Kafka's producer and consumer performance
 * tools (org.apache.kafka.tools.ProducerPerformance / ConsumerPerformance, the Java clients, run
 * through `ops/stack/stack.sh tool`) against one fresh topic of `partitions` partitions.
 *
 * - producer-perf: `records` records of 1 KB, acks=all, --throughput -1 (unthrottled), the
 *   producer's other settings at their defaults; records/s, MB/s and the per-record send
 *   latency (avg, p99) as the tool prints them.
 * - consumer-perf: the same `records` records read back by a fresh group (read_uncommitted, the
 *   tool's default); records/s and MB/s are the tool's fetch.nMsg.sec and fetch.MB.sec, i.e.
 *   without the group join (rebalance.time.ms, reported in `notes`), which for short runs would
 *   otherwise dominate.
 * The topic and the group are deleted afterwards; each tool is killed if it outlives its bound.
 *
 * Against a secured broker (the product's SONIC_KAFKA_SSL* and SONIC_KAFKA_SASL_* variables) the
 * tools get the same settings as a client properties file (--producer.config, --consumer.config;
 * mode 0600 in a private temporary directory, removed afterwards), and the driver's kafkajs admin
 * connects as the product's clients do (bench/kafka-connection.ts).
 *
 *   node --import tsx bench/baselines/broker-perf.ts [--records 50000] [--partitions 4]
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeJavaClientProperties } from '../kafka-connection.js';
import { cleanUp, createTopics, kafkaClient, stopProcess } from './kafka-streams.js';

const STACK = join(import.meta.dirname, '..', '..', 'ops', 'stack', 'stack.sh');
export const RECORD_BYTES = 1024;

export interface BrokerPerfOptions {
  brokers: string;
  records: number;
  partitions: number;
}

export interface BrokerPerfResult {
  system: string;
  records: number;
  producerRecordsPerSecond: number;
  producerMBps: number;
  consumerRecordsPerSecond: number;
  consumerMBps: number;
  producerLatencyMs: { avg: number; p99: number };
  notes?: string;
}

/** Runs `stack.sh tool <args>`; resolves with its stdout, rejects on a non-zero exit or after `timeoutMs` (killed). */
function tool(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [STACK, 'tool', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (err += b.toString('utf8')));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void stopProcess(child, exited, 5_000);
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(`${args[0]}: killed after ${timeoutMs} ms:\n${err.slice(-2000)}`));
      else if (code !== 0) reject(new Error(`${args[0]}: exit ${code ?? signal}:\n${err.slice(-2000)}${out.slice(-2000)}`));
      else resolve(out);
    });
  });
}

/** ProducerPerformance's summary line (the last one). */
export function parseProducerPerf(out: string): { records: number; rps: number; mbps: number; avgMs: number; p99Ms: number } {
  const re =
    /(\d+) records sent, ([\d.]+) records\/sec \(([\d.]+) MB\/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th/g;
  const all = [...out.matchAll(re)];
  const m = all[all.length - 1];
  if (!m) throw new Error(`producer-perf: no summary line in its output:\n${out.slice(-2000)}`);
  return { records: Number(m[1]), rps: Number(m[2]), mbps: Number(m[3]), avgMs: Number(m[4]), p99Ms: Number(m[8]) };
}

/** ConsumerPerformance's CSV-like header and row, by column name. */
export function parseConsumerPerf(out: string): Record<string, string> {
  const lines = out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const h = lines.findIndex((l) => l.startsWith('start.time'));
  if (h < 0 || !lines[h + 1]) throw new Error(`consumer-perf: no result table in its output:\n${out.slice(-2000)}`);
  const head = lines[h]!.split(/,\s*/);
  const row = lines[h + 1]!.split(/,\s*/);
  return Object.fromEntries(head.map((k, i) => [k, row[i] ?? '']));
}

export async function run(opts: BrokerPerfOptions): Promise<BrokerPerfResult> {
  const topic = `bench_perf_${randomUUID().slice(0, 8)}`;
  const group = `${topic}.consumer-perf`;
  const kafka = kafkaClient(opts.brokers, `${topic}.driver`);
  const admin = kafka.admin();
  await admin.connect();
  const bound = 120_000 + opts.records; // 1 ms a record on top of two minutes
  // TLS and SASL for the tools' Java clients (none for a plaintext broker)
  const clientConfig = writeJavaClientProperties();
  try {
    await createTopics(admin, [topic], opts.partitions, 'CreateTime');
    const prod = parseProducerPerf(
      await tool(
        [
          'producer-perf',
          '--topic',
          topic,
          '--num-records',
          String(opts.records),
          '--record-size',
          String(RECORD_BYTES),
          '--throughput',
          '-1',
          '--producer-props',
          `bootstrap.servers=${opts.brokers}`,
          'acks=all',
          ...(clientConfig ? ['--producer.config', clientConfig.path] : []),
        ],
        bound,
      ),
    );
    const cons = parseConsumerPerf(
      await tool(
        [
          'consumer-perf',
          '--bootstrap-server',
          opts.brokers,
          '--topic',
          topic,
          '--messages',
          String(opts.records),
          '--group',
          group,
          '--timeout',
          '30000',
          ...(clientConfig ? ['--consumer.config', clientConfig.path] : []),
        ],
        bound,
      ),
    );
    const consumed = Number(cons['data.consumed.in.nMsg']);
    if (consumed < opts.records) throw new Error(`consumer-perf read ${consumed} of ${opts.records} records`);
    return {
      system: 'Kafka 4.1.1 broker (producer-perf / consumer-perf)',
      records: opts.records,
      producerRecordsPerSecond: prod.rps,
      producerMBps: prod.mbps,
      consumerRecordsPerSecond: Number(cons['fetch.nMsg.sec']),
      consumerMBps: Number(cons['fetch.MB.sec']),
      producerLatencyMs: { avg: prod.avgMs, p99: prod.p99Ms },
      notes:
        `${opts.records} records of ${RECORD_BYTES} B, ${opts.partitions} partitions, replication 1; producer acks=all, unthrottled, other settings default; ` +
        `consumer rates exclude the group join (rebalance ${cons['rebalance.time.ms']} ms; with it: ${Number(cons['nMsg.sec']).toFixed(0)} records/s, ${Number(cons['MB.sec']).toFixed(1)} MB/s)`,
    };
  } finally {
    clientConfig?.remove();
    const problems = await cleanUp(admin, [topic], [group]);
    await admin.disconnect();
    for (const p of problems) process.stderr.write(`broker-perf: cleanup: ${p}\n`);
  }
}

if (import.meta.filename === process.argv[1]) {
  const { values } = parseArgs({ options: { records: { type: 'string', default: '50000' }, partitions: { type: 'string', default: '4' } } });
  const result = await run({ brokers: process.env.KAFKA_BROKERS ?? 'localhost:9092', records: Number(values.records), partitions: Number(values.partitions) });
  console.log(JSON.stringify(result, null, 2));
  process.exit(0);
}
