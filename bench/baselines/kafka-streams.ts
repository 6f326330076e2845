/**
 * Baseline: Kafka Streams on the JVM, exactly_once_v2, running the five-hop no-op chain of
 * `npm run bench`: topic h0 → hop1 → h1 → … → hop5 → h5, each hop copying the ~1 KB value
 * unchanged. The application is bench/kafka-streams (HopChain.java): ONE Kafka Streams
 * application in ONE JVM with num.stream.threads=1 (all 5 × partitions tasks on one thread, one
 * consumer, one transactional producer), commit.interval.ms at its EOS default of 100 ms,
 * ByteArray serdes, five sub-topologies with named processors (hopN-source, hopN-identity,
 * hopN-sink). The jar is built once with Maven and rebuilt only when a source is newer than it.
 *
 * Method (shared by the Kafka-based baselines of this directory, and mirrored by bullmq.ts):
 *
 * - All topics are created by this module (`<prefix>.h0` … `<prefix>.h5`, a unique prefix,
 *   `partitions` partitions, replication 1) with `message.timestamp.type=LogAppendTime`: every
 *   record's timestamp is the broker's append time in that topic. (Kafka Streams copies the input
 *   record's timestamp to its outputs, so CreateTime would make every hop look instantaneous.)
 * - Throughput, the "burst" run: N records (keys `b-<i>`, 1 KB values) are pre-loaded into h0
 *   before the JVM starts; the JVM is started and h5 is read (read_committed) until all N keys
 *   are there. records/s = (N − 1) / (last − first append time in h5), as bench/two-hop.ts:
 *   start-up and the pre-load are excluded, the whole chain's steady state is measured.
 * - Latency, a separate paced "latency run" on the same, now idle and warm, application: 100
 *   records/s for 10 s (keys `l-<i>`, one send per record on its schedule) produced fresh into
 *   h0, the same pace as bench/baselines/sonicflow.ts. Hop i's latency of a record is
 *   append time in h(i) − append time in h(i−1), matched by key; p50/p99 are over all five hops'
 *   samples pooled (per-hop values and end to end in `notes`). With exactly-once a hop's latency
 *   includes waiting for the upstream transaction to commit (read_committed), so it is bounded
 *   below by about half the commit interval.
 * - Afterwards the JVM is stopped (SIGTERM, SIGKILL after 10 s), and the topics and consumer
 *   groups are deleted. The transactional id of the application cannot be deleted; the broker
 *   expires it (transactional.id.expiration.ms).
 *
 * Against a secured broker (SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE, SONIC_KAFKA_SASL_*, the
 * product's variables) the driver's kafkajs clients connect as the product's, and the JVM gets the
 * same settings as Java client properties (security.protocol, sasl.mechanism, sasl.jaas.config, a
 * PEM truststore) in a file of mode 0600 in a private temporary directory, removed afterwards.
 *
 *   node --import tsx bench/baselines/kafka-streams.ts [--records 5000] [--partitions 4]
 *   (KAFKA_BROKERS, default localhost:9092)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Admin, Kafka } from 'kafkajs';
import { logLevel, Partitioners } from '../../src/kafka/kafkajs.js';
import { benchKafkajs, writeJavaClientProperties } from '../kafka-connection.js';
import { percentile } from '../lib.js';

export interface BaselineOptions {
  brokers: string;
  records: number;
  partitions: number;
  redisUrl?: string;
  /** The latency run's pace, records/s (default LATENCY_RATE), and length, s (default LATENCY_SECONDS). */
  latencyRate?: number;
  latencySeconds?: number;
}

export interface BaselineResult {
  system: string;
  records: number;
  recordsPerSecond: number;
  hopLatencyMs: { p50: number; p99: number };
  notes?: string;
}

export const HOPS = 5;
export const VALUE_BYTES = 1024;
/** The paced latency run: records per second and seconds (as bench/baselines/sonicflow.ts). */
export const LATENCY_RATE = 100;
export const LATENCY_SECONDS = 10;

const PROJECT = join(import.meta.dirname, '..', 'kafka-streams');
const JAR = join(PROJECT, 'target', 'kafka-streams-bench.jar');

// ---------------------------------------------------------------------------------------------
// Kafka helpers (kafkajs directly: bench code, not src/)

/** The driver's kafkajs client: TLS and SASL as the product's when the environment configures them (bench/kafka-connection.ts). */
export function kafkaClient(brokers: string, clientId: string): Kafka {
  return benchKafkajs({
    clientId,
    brokers: brokers.split(',').map((b) => b.trim()),
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 8, initialRetryTime: 50, maxRetryTime: 5000 },
    // failures surface as exceptions; kafkajs' own log would only add retried NOT_LEADER noise
    // right after topic creation
    logLevel: logLevel.NOTHING,
  });
}

/** `<prefix>.h0` … `<prefix>.h<hops>` */
export function chainTopics(prefix: string, hops = HOPS): string[] {
  return Array.from({ length: hops + 1 }, (_, i) => `${prefix}.h${i}`);
}

/** Creates the topics, by default with LogAppendTime timestamps (see the header), and waits for their leaders. */
export async function createTopics(
  admin: Admin,
  topics: string[],
  partitions: number,
  timestampType: 'LogAppendTime' | 'CreateTime' = 'LogAppendTime',
): Promise<void> {
  await admin.createTopics({
    waitForLeaders: true,
    topics: topics.map((topic) => ({
      topic,
      numPartitions: partitions,
      replicationFactor: 1,
      configEntries: [{ name: 'message.timestamp.type', value: timestampType }],
    })),
  });
}

/** Deletes topics and those of `groups` that exist, reporting (not throwing) what could not be deleted. */
export async function cleanUp(admin: Admin, topics: string[], groups: string[]): Promise<string[]> {
  const problems: string[] = [];
  try {
    const existing = new Set((await admin.listGroups()).groups.map((g) => g.groupId));
    const ours = groups.filter((g) => existing.has(g));
    if (ours.length > 0) await admin.deleteGroups(ours);
  } catch (e) {
    const per = (e as { groups?: { groupId: string; error?: { message?: string } }[] }).groups;
    const detail = per?.map((g) => `${g.groupId}: ${g.error?.message ?? 'ok'}`).join('; ') ?? (e as Error).message;
    problems.push(`consumer groups not deleted: ${detail}`);
  }
  if (topics.length > 0) {
    try {
      await admin.deleteTopics({ topics, timeout: 30000 });
    } catch (e) {
      problems.push(`topics not deleted (${topics.join(', ')}): ${(e as Error).message}`);
    }
  }
  return problems;
}

/** A 1 KB value, the same bytes for every record of a run (values are copied, never read). */
export function recordValue(): Buffer {
  return randomBytes(VALUE_BYTES);
}

/** Pre-loads `n` records with keys `<keyPrefix><i>` into `topic` (idempotent producer, acks=all). */
export async function preload(kafka: Kafka, topic: string, n: number, keyPrefix: string, value: Buffer): Promise<void> {
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  try {
    for (let i = 0; i < n; i += 500) {
      const messages = [];
      for (let j = i; j < Math.min(n, i + 500); j++) messages.push({ key: `${keyPrefix}${j}`, value });
      await producer.send({ topic, acks: -1, messages });
    }
  } finally {
    await producer.disconnect();
  }
}

/**
 * Produces `rate` records/s for `seconds` s into `topic`, keys `<keyPrefix><i>`: record i is sent
 * on its own at start + i / rate (acks=all; sends are not awaited one by one, so a slow ack does
 * not delay the schedule). Returns the number sent.
 */
export async function feedPaced(kafka: Kafka, topic: string, rate: number, seconds: number, keyPrefix: string, value: Buffer): Promise<number> {
  const total = Math.max(1, Math.round(rate * seconds));
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  try {
    const start = performance.now();
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < total; i++) {
      const wait = start + (i * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
      sends.push(producer.send({ topic, acks: -1, messages: [{ key: `${keyPrefix}${i}`, value }] }));
    }
    await Promise.all(sends);
    return total;
  } finally {
    await producer.disconnect();
  }
}

export interface Collected {
  /** topic → key → timestamp (ms) of its first occurrence */
  timestamps: Map<string, Map<string, number>>;
  /** records seen again under a key already seen (in any wanted topic) */
  duplicates: number;
}

/**
 * Reads `topics` (read_committed, group `groupId`) until each holds `expected` distinct keys that
 * start with `keyPrefix`; other records are skipped. `from` gives per-topic start offsets (an
 * optimisation: the key filter alone is correct). Rejects after `timeoutMs` naming the counts, or
 * as soon as `abort()` returns a reason; the consumer is always disconnected before it settles.
 */
export async function collect(
  kafka: Kafka,
  groupId: string,
  topics: string[],
  keyPrefix: string,
  expected: number,
  opts: { timeoutMs: number; from?: Map<string, { partition: number; offset: string }[]>; abort?: () => string | undefined },
): Promise<Collected> {
  const timestamps = new Map(topics.map((t) => [t, new Map<string, number>()]));
  let duplicates = 0;
  const consumer = kafka.consumer({ groupId, readUncommitted: false, allowAutoTopicCreation: false, sessionTimeout: 30000, maxWaitTimeInMs: 200 });
  const complete = () => topics.every((t) => timestamps.get(t)!.size >= expected);
  await consumer.connect();
  try {
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const seen = timestamps.get(batch.topic)!;
        for (const m of batch.messages) {
          const key = m.key?.toString('utf8');
          if (key === undefined || !key.startsWith(keyPrefix)) continue;
          if (seen.has(key)) duplicates++;
          else seen.set(key, Number(m.timestamp));
        }
      },
    });
    // applied at the next fetch of each partition, whenever the group has assigned it
    for (const [topic, offsets] of opts.from ?? []) for (const o of offsets) consumer.seek({ topic, partition: o.partition, offset: o.offset });
    const deadline = Date.now() + opts.timeoutMs;
    while (!complete()) {
      const why = opts.abort?.();
      if (why !== undefined) throw new Error(why);
      if (Date.now() > deadline) {
        const counts = topics.map((t) => `${t}: ${timestamps.get(t)!.size}`).join(', ');
        throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${expected} '${keyPrefix}*' records per topic (${counts})`);
      }
      await sleep(20);
    }
    return { timestamps, duplicates };
  } finally {
    await consumer.disconnect();
  }
}

/** Per-partition high watermarks of each topic: where a run that starts now begins. */
export async function endOffsets(admin: Admin, topics: string[]): Promise<Map<string, { partition: number; offset: string }[]>> {
  const out = new Map<string, { partition: number; offset: string }[]>();
  for (const topic of topics)
    out.set(
      topic,
      (await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, offset: p.high })),
    );
  return out;
}

/** records/s between the first and the last timestamp: (n − 1) / span, as bench/two-hop.ts. */
export function throughput(ts: Iterable<number>): number {
  const sorted = [...ts].sort((a, b) => a - b);
  if (sorted.length < 2) return Number.NaN;
  const span = (sorted[sorted.length - 1]! - sorted[0]!) / 1000;
  return span > 0 ? (sorted.length - 1) / span : Number.POSITIVE_INFINITY;
}

export interface HopLatency {
  /** all hops' samples pooled */
  p50: number;
  p99: number;
  perHop: { p50: number; p99: number }[];
  endToEnd: { p50: number; p99: number };
  samples: number;
}

/**
 * Per-hop latency from the timestamps of the same keys in consecutive stages: `stages[i]` maps
 * key → time the record appeared at stage i (0 = input, HOPS = output). Keys missing from a stage
 * are skipped.
 */
export function hopLatency(stages: Map<string, number>[]): HopLatency {
  const pooled: number[] = [];
  const perHop: { p50: number; p99: number }[] = [];
  for (let i = 1; i < stages.length; i++) {
    const values: number[] = [];
    for (const [key, t] of stages[i]!) {
      const before = stages[i - 1]!.get(key);
      if (before !== undefined) values.push(t - before);
    }
    pooled.push(...values);
    perHop.push({ p50: percentile(values, 50), p99: percentile(values, 99) });
  }
  const e2e: number[] = [];
  for (const [key, t] of stages[stages.length - 1]!) {
    const start = stages[0]!.get(key);
    if (start !== undefined) e2e.push(t - start);
  }
  return {
    p50: percentile(pooled, 50),
    p99: percentile(pooled, 99),
    perHop,
    endToEnd: { p50: percentile(e2e, 50), p99: percentile(e2e, 99) },
    samples: pooled.length,
  };
}

export function describeLatency(l: HopLatency): string {
  const hops = l.perHop.map((h, i) => `hop${i + 1} ${h.p50}/${h.p99}`).join(', ');
  return `per-hop p50/p99 ms: ${hops}; end to end p50/p99 ${l.endToEnd.p50}/${l.endToEnd.p99} ms`;
}

// ---------------------------------------------------------------------------------------------
// the JVM

function newestMtime(path: string): number {
  const s = statSync(path);
  if (!s.isDirectory()) return s.mtimeMs;
  return Math.max(s.mtimeMs, ...readdirSync(path).map((f) => newestMtime(join(path, f))));
}

/** Builds bench/kafka-streams with Maven unless the jar is newer than pom.xml and src/. */
export function ensureJar(): string {
  let jarTime = 0;
  try {
    jarTime = statSync(JAR).mtimeMs;
  } catch {
    // not built yet
  }
  const sources = Math.max(newestMtime(join(PROJECT, 'pom.xml')), newestMtime(join(PROJECT, 'src')));
  if (jarTime > sources) return JAR;
  process.stderr.write('kafka-streams: building bench/kafka-streams with Maven (once)\n');
  const r = spawnSync('mvn', ['-q', '-B', '-f', join(PROJECT, 'pom.xml'), 'package'], { stdio: ['ignore', 2, 2], timeout: 600_000, killSignal: 'SIGKILL' });
  if (r.error) throw new Error(`kafka-streams: could not run mvn: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`kafka-streams: mvn package failed (exit ${r.status ?? r.signal})`);
  return JAR;
}

interface Jvm {
  child: ChildProcess;
  /** resolves at the first STATE RUNNING; rejects when the JVM reports ERROR or exits first */
  running: Promise<void>;
  exited: Promise<void>;
  stderrTail: string[];
}

function startJvm(jar: string, args: string[]): Jvm {
  const child = spawn('java', ['-Xms256m', '-Xmx512m', '-XX:+UseG1GC', '-Djava.awt.headless=true', '-jar', jar, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderrTail: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 40) stderrTail.shift();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line === 'STATE RUNNING') resolve();
      if (line === 'STATE ERROR') reject(new Error(`Kafka Streams went to ERROR:\n${stderrTail.join('\n')}`));
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => reject(new Error(`the Kafka Streams JVM exited (${code ?? signal}) before RUNNING:\n${stderrTail.join('\n')}`)));
  });
  running.catch(() => undefined); // observed by the caller; avoid an unhandled rejection after a stop
  return { child, running, exited, stderrTail };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
export async function stopProcess(child: ChildProcess, exited: Promise<void>, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Why the JVM is gone, or undefined while it runs. */
function jvmGone(jvm: Jvm): string | undefined {
  const { exitCode, signalCode } = jvm.child;
  if (exitCode === null && signalCode === null) return undefined;
  return `the Kafka Streams JVM exited (${exitCode ?? signalCode}) during the run:\n${jvm.stderrTail.join('\n')}`;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no result after ${ms} ms`)), ms)))]).finally(
    () => clearTimeout(timer),
  );
}

// ---------------------------------------------------------------------------------------------

export async function run(opts: BaselineOptions): Promise<BaselineResult> {
  const jar = ensureJar();
  const prefix = `bench_ks_${randomUUID().slice(0, 8)}`;
  const topics = chainTopics(prefix);
  const kafka = kafkaClient(opts.brokers, `${prefix}.driver`);
  const admin = kafka.admin();
  await admin.connect();
  const stateDir = mkdtempSync(join(tmpdir(), 'sonicflow-bench-ks-'));
  // TLS and SASL for the JVM's clients (none for a plaintext broker)
  const clientConfig = writeJavaClientProperties();
  const groups = [`${prefix}.streams`, `${prefix}.burst-reader`, `${prefix}.latency-reader`];
  let jvm: Jvm | undefined;
  const killOnExit = () => jvm?.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const value = recordValue();
  try {
    await createTopics(admin, topics, opts.partitions);
    await preload(kafka, topics[0]!, opts.records, 'b-', value);

    jvm = startJvm(jar, [opts.brokers, prefix, String(HOPS), stateDir, ...(clientConfig ? [clientConfig.path] : [])]);
    await withTimeout(jvm.running, 90_000, 'Kafka Streams start-up');

    // burst: all N pre-loaded records through five hops
    const alive = jvm;
    const burst = await collect(kafka, `${prefix}.burst-reader`, [topics[HOPS]!], 'b-', opts.records, {
      timeoutMs: 60_000 + opts.records * 10,
      abort: () => jvmGone(alive),
    });
    const recordsPerSecond = throughput(burst.timestamps.get(topics[HOPS]!)!.values());

    // latency: a paced run of fresh records through the warm, idle application
    const from = await endOffsets(admin, topics);
    const rate = opts.latencyRate ?? LATENCY_RATE;
    const sent = await feedPaced(kafka, topics[0]!, rate, opts.latencySeconds ?? LATENCY_SECONDS, 'l-', value);
    const lat = await collect(kafka, `${prefix}.latency-reader`, topics, 'l-', sent, { timeoutMs: 60_000, from, abort: () => jvmGone(alive) });
    const latency = hopLatency(topics.map((t) => lat.timestamps.get(t)!));

    const dups = burst.duplicates + lat.duplicates;
    return {
      system: 'Kafka Streams 4.1.1 (JVM, exactly_once_v2, 1 stream thread)',
      records: opts.records,
      recordsPerSecond,
      hopLatencyMs: { p50: latency.p50, p99: latency.p99 },
      notes:
        `one Kafka Streams app, 5 sub-topologies, num.stream.threads=1, commit.interval.ms=100 (EOS default), ByteArray serdes; ` +
        `latency from a separate run of ${sent} fresh records at ${rate}/s, LogAppendTime(h(i)) − LogAppendTime(h(i−1)); ` +
        `${describeLatency(latency)}${dups ? `; ${dups} duplicate outputs seen` : ''}`,
    };
  } finally {
    if (jvm) await stopProcess(jvm.child, jvm.exited);
    process.removeListener('exit', killOnExit);
    const problems = await cleanUp(admin, topics, groups);
    await admin.disconnect();
    rmSync(stateDir, { recursive: true, force: true });
    clientConfig?.remove();
    for (const p of problems) process.stderr.write(`kafka-streams: cleanup: ${p}\n`);
  }
}

if (import.meta.filename === process.argv[1]) {
  const { values } = parseArgs({ options: { records: { type: 'string', default: '20000' }, partitions: { type: 'string', default: '4' } } });
  const result = await run({ brokers: process.env.KAFKA_BROKERS ?? 'localhost:9092', records: Number(values.records), partitions: Number(values.partitions) });
  console.log(JSON.stringify(result, null, 2));
  process.exit(0);
}
