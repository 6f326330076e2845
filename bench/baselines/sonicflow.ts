/**
 * sonicflow on the shared five-hop workload (bench/fixtures/five-hop.ts), exactly-once hops.
 *
 * Workload (the same for every system of `npm run bench`): h0 -> hop1 -> h1 -> ... -> hop5 -> h5,
 * `partitions` partitions per topic (default 4), no-op hops, `task-status` Avro records with a
 * 1000-character `error_message` (1060 bytes on the wire), keyed by a fresh UUID.
 *
 * Method (measureChain below; every Kafka-based system uses it the same way).
 *  1. Deploy the topology under a unique prefix (topics, schemas) and start the five stages, here
 *     as ONE process (`sonicflow run hop1 hop2 hop3 hop4 hop5 --file bench/fixtures/five-hop.ts`;
 *     on 2 cores five processes would only contend, and the raw kafkajs chain is one process too).
 *  2. Wait until the five consumer groups are Stable, then warm up: one record per partition end
 *     to end (every stage has fenced its partitions and made its transactional producers).
 *  3. Throughput: write N records into h0 inside ONE transaction. The hops read read_committed,
 *     so the whole backlog appears to all of them at the commit, with every hop already running:
 *     no hop starts late and drains a queue faster than the chain could carry it. records/s =
 *     (N - 1) / (last - first h5 output timestamp), as in bench/two-hop.ts (pipeline fill excluded).
 *     Also reported: recordsPerSecondFromCommit = N / (last h5 timestamp - commit of the load),
 *     fill included. All hops share the CPU, and by the first h5 output the upstream hops have
 *     already done part of their work, so a small N flatters the first figure (measured on 2
 *     cores: 5000 records gave about twice the rate of 20000); keep N >= 20000 for a steady state.
 *  4. Latency, with the same stages still running and idle: a "latency run" produces fresh
 *     records at `latencyRate` per second for `latencySeconds` (default 100/s for 10 s) into h0,
 *     one send per record, and reads h0..h5 from their end offsets taken just before. The latency
 *     of hop i for a record is timestamp(h_i) - timestamp(h_i-1), matched by key; p50/p99 are
 *     nearest-rank over all five hops' samples pooled (per hop and h0 -> h5 are reported too).
 *     Timestamps are the broker's append times (h0..h5 use message.timestamp.type=LogAppendTime,
 *     as for every system of `npm run bench`). A transactional hop's records are appended when
 *     sent, before its commit, so each hop's figure includes the previous hop's commit wait and
 *     the last hop's commit is counted nowhere.
 *  5. Stop the stages (SIGTERM, drain), delete the topics, subjects and consumer groups.
 *
 * Variants: 'eos-batched' sets SONIC_BATCH_MAX_RECORDS=500 SONIC_BATCH_MAX_WAIT_MS=100;
 * 'eos-default' sets nothing: the runtime's default batch (500 records / 100 ms, DEFAULT_BATCH of
 * src/runtime/topology.ts). sonicflow has no at-least-once mode.
 *
 * The Kafka helpers below (measureChain, loadInOneTransaction, warmUp, waitGroupsStable,
 * TopicCollector, latencyRun, deleteGroups) are shared with the raw kafkajs baseline, the submit
 * and the scheduling benchmarks; a Kafka Streams baseline can use measureChain as is.
 *
 *   node --import tsx bench/baselines/sonicflow.ts [--records 5000] [--variant eos-batched]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Consumer } from 'kafkajs';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { kafkajsOf, type KafkaClient } from '../../src/kafka/handle.js';
import { PlainProducer, TxProducer, headersToStrings } from '../../src/kafka/io.js';
import { Context } from '../../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology } from '../../src/ops/deploy.js';
import { groupId } from '../../src/runtime/names.js';
import { valueSubject } from '../../src/serde/wire.js';
import { FIVE_HOP, benchValue, fiveHopTopology } from '../fixtures/five-hop.js';
import { percentile, startNode, stopProcess, waitFor } from '../lib.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURE_PATH = join('bench', 'fixtures', 'five-hop.ts');

// ---------------------------------------------------------------- shared result shape

export interface LatencyStats {
  /** Records produced in the latency run, and at what pace. */
  records: number;
  ratePerSecond: number;
  /** p50/p99 of each hop, ms. */
  perHop: { hop: number; p50: number; p99: number }[];
  /** All hops pooled, ms. */
  pooled: { p50: number; p99: number };
  /** h0 -> h5, ms. */
  endToEnd: { p50: number; p99: number };
}

export interface HopBaselineResult {
  system: string;
  records: number;
  recordsPerSecond: number;
  /** Latency of one hop: p50/p99 over the five hops' samples pooled, ms. */
  hopLatencyMs: { p50: number; p99: number };
  notes: string;
  partitions: number;
  /**
   * N / (last output - commit of the load): pipeline fill included. With a small N the upstream
   * hops finish early and leave the CPU to the later ones, which flatters `recordsPerSecond`.
   */
  recordsPerSecondFromCommit: number;
  latency: LatencyStats;
}

export interface HopBaselineOptions {
  /** Bootstrap servers, `host:port[,host:port]` or a list (default: KAFKA_BROKERS, else localhost:9092). */
  brokers?: string | string[];
  /** Records pre-loaded for the throughput run (default 20000). */
  records?: number;
  /** Partitions per topic (default 4). */
  partitions?: number;
  /** Latency run pace, records/s (default 100), and length, s (default 10). */
  latencyRate?: number;
  latencySeconds?: number;
}

export const brokerList = (b: string | string[] | undefined): string => (Array.isArray(b) ? b.join(',') : (b ?? process.env.KAFKA_BROKERS ?? 'localhost:9092'));

// ---------------------------------------------------------------- shared Kafka helpers

/**
 * Writes `n` workload records (fresh UUID keys) into `topic` in sends of 500 inside ONE
 * transaction: read_committed consumers see none of them until the commit, then all at once, so
 * a running chain starts on a full backlog at one instant. Resolves after the commit.
 */
export async function loadInOneTransaction(kafka: KafkaClient, topic: string, n: number, encode: (id: string) => Buffer | Promise<Buffer>): Promise<void> {
  const producer = await new TxProducer(kafka, `bench-load-${randomUUID()}`, 300_000).connect();
  try {
    await producer.inTransaction(async (send) => {
      for (let i = 0; i < n; i += 500) {
        const batch = [];
        for (let j = i; j < Math.min(n, i + 500); j++) {
          const id = randomUUID();
          batch.push({ key: id, value: await encode(id) });
        }
        await send(topic, batch);
      }
    });
  } finally {
    await producer.close().catch(() => undefined);
  }
}

/** Waits until every group is Stable with its number of members (describeGroups). */
export async function waitGroupsStable(
  kafka: KafkaClient,
  groups: { id: string; members: number }[],
  opts: { timeoutMs: number; what: string; abort?: () => string | undefined },
): Promise<void> {
  const admin = kafkajsOf(kafka).admin();
  await admin.connect();
  try {
    await waitFor(
      async () => {
        const { groups: found } = await admin.describeGroups(groups.map((g) => g.id)).catch(() => ({ groups: [] }));
        return groups.every((g) => found.some((f) => f.groupId === g.id && f.state === 'Stable' && f.members.length === g.members));
      },
      { timeoutMs: opts.timeoutMs, what: opts.what, everyMs: 300, ...(opts.abort ? { abort: opts.abort } : {}) },
    );
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Sends one record to each partition of topics[0] and waits until all reach the last topic. */
export async function warmUp(
  kafka: KafkaClient,
  topics: string[],
  encode: (id: string) => Buffer | Promise<Buffer>,
  partitions: number,
  abort?: () => string | undefined,
): Promise<void> {
  const last = topics[topics.length - 1]!;
  const seen = await new TopicCollector(kafka, [last]).start('end');
  const producer = await new PlainProducer(kafka).connect();
  try {
    const recs = await Promise.all(
      Array.from({ length: partitions }, async (_, partition) => {
        const id = randomUUID();
        return { key: id, value: await encode(id), partition };
      }),
    );
    await producer.send(topics[0]!, recs);
    await waitFor(() => seen.count(last) >= partitions, {
      timeoutMs: 90_000,
      what: `warm-up: ${last} did not get the ${partitions} warm-up records`,
      everyMs: 100,
      ...(abort ? { abort } : {}),
    });
  } finally {
    await producer.close().catch(() => undefined);
    await seen.stop();
  }
}

/**
 * The shared measurement of a five-hop chain whose hops are started (consumer groups `groups`,
 * one member each): wait for the groups to be Stable, warm up (one record per partition end to
 * end), load `records` records into topics[0] in one transaction, and take records/s =
 * (N - 1) / (last - first output timestamp in the last topic); then the latency run.
 */
export async function measureChain(
  kafka: KafkaClient,
  topics: string[],
  encode: (id: string) => Buffer | Promise<Buffer>,
  o: { records: number; partitions: number; groups: string[]; what: string; latencyRate?: number; latencySeconds?: number; abort?: () => string | undefined },
): Promise<{ recordsPerSecond: number; recordsPerSecondFromCommit: number; latency: LatencyStats }> {
  const last = topics[topics.length - 1]!;
  const abort = o.abort ? { abort: o.abort } : {};
  await waitGroupsStable(
    kafka,
    o.groups.map((id) => ({ id, members: 1 })),
    { timeoutMs: 120_000, what: `${o.what}: the hops' consumer groups did not become Stable`, ...abort },
  );
  await warmUp(kafka, topics, encode, o.partitions, o.abort);
  const out = await new TopicCollector(kafka, [last]).start('end');
  let recordsPerSecond: number;
  let recordsPerSecondFromCommit: number;
  try {
    await loadInOneTransaction(kafka, topics[0]!, o.records, encode);
    const committed = Date.now();
    await waitFor(() => out.count(last) >= o.records, {
      timeoutMs: 120_000 + o.records * 10,
      what: `${o.what}: ${last} did not get all ${o.records} records (has ${out.count(last)})`,
      everyMs: 100,
      ...abort,
    });
    const ts = [...out.seen.get(last)!.values()].map((s) => s.timestamp);
    recordsPerSecond = throughputOf(ts);
    recordsPerSecondFromCommit = o.records / ((Math.max(...ts) - committed) / 1000);
  } finally {
    await out.stop();
  }
  const latency = await latencyRun(kafka, topics, encode, {
    ratePerSecond: o.latencyRate ?? 100,
    seconds: o.latencySeconds ?? 10,
    timeoutMs: 60_000,
    ...abort,
  });
  return { recordsPerSecond, recordsPerSecondFromCommit, latency };
}

export interface Sighting {
  timestamp: number;
  partition: number;
  headers?: Record<string, string>;
}

/**
 * Follows topics (read_committed) with a private group and no commits, remembering the first
 * sighting of each key per topic: its timestamp, partition and, when asked, headers. Starts
 * from the beginning, or from the end offsets of the moment `start` is called.
 */
export class TopicCollector {
  readonly seen = new Map<string, Map<string, Sighting>>();
  readonly groupId = `bench-collect.${randomUUID().slice(0, 8)}`;
  private consumer?: Consumer;

  constructor(
    private readonly kafka: KafkaClient,
    readonly topics: string[],
    private readonly opts: { headers?: boolean } = {},
  ) {
    for (const t of topics) this.seen.set(t, new Map());
  }

  async start(from: 'beginning' | 'end'): Promise<this> {
    const ends: { topic: string; partition: number; offset: string }[] = [];
    if (from === 'end') {
      const admin = kafkajsOf(this.kafka).admin();
      await admin.connect();
      try {
        for (const topic of this.topics) for (const p of await admin.fetchTopicOffsets(topic)) ends.push({ topic, partition: p.partition, offset: p.offset });
      } finally {
        await admin.disconnect();
      }
    }
    const consumer = kafkajsOf(this.kafka).consumer({ groupId: this.groupId, maxWaitTimeInMs: 100, readUncommitted: false, allowAutoTopicCreation: false });
    this.consumer = consumer;
    try {
      await this.run(consumer, from);
    } catch (err) {
      await this.stop();
      throw err;
    }
    // applied at the next fetch of each partition, whenever the group has assigned it
    for (const e of ends) consumer.seek(e);
    return this;
  }

  private async run(consumer: Consumer, from: 'beginning' | 'end'): Promise<void> {
    await consumer.connect();
    await consumer.subscribe({ topics: this.topics, fromBeginning: from === 'beginning' });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const seen = this.seen.get(batch.topic)!;
        for (const m of batch.messages) {
          const key = m.key?.toString('utf8');
          if (!key || seen.has(key)) continue;
          seen.set(key, { timestamp: Number(m.timestamp), partition: batch.partition, ...(this.opts.headers ? { headers: headersToStrings(m.headers) } : {}) });
        }
      },
    });
  }

  count(topic: string): number {
    return this.seen.get(topic)?.size ?? 0;
  }

  async stop(): Promise<void> {
    await this.consumer?.disconnect().catch(() => undefined);
    await deleteGroups(this.kafka, [this.groupId]);
  }
}

/** Deletes consumer groups (best effort: an unknown or non-empty group is left alone). */
export async function deleteGroups(kafka: KafkaClient, groupIds: string[]): Promise<void> {
  if (groupIds.length === 0) return;
  const admin = kafkajsOf(kafka).admin();
  try {
    await admin.connect();
    await admin.deleteGroups(groupIds).catch(() => undefined);
  } catch {
    // the benchmark's result does not depend on it
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Groups whose id starts with `prefix`. */
export async function groupsStartingWith(kafka: KafkaClient, prefix: string): Promise<string[]> {
  const admin = kafkajsOf(kafka).admin();
  try {
    await admin.connect();
    return (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g.startsWith(prefix));
  } catch {
    return [];
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Records/s between the first and the last of `timestamps` (n - 1 intervals). */
export function throughputOf(timestamps: number[]): number {
  const ts = [...timestamps].sort((a, b) => a - b);
  const spanS = (ts[ts.length - 1]! - ts[0]!) / 1000;
  return spanS > 0 ? (ts.length - 1) / spanS : Number.NaN;
}

/**
 * The latency run: produces `ratePerSecond` fresh records per second for `seconds` into
 * topics[0], one send per record on its schedule, and follows every topic of the chain from its
 * current end until the last topic has them all (or `timeoutMs`). Per-hop latency of a record:
 * timestamp in topics[i] minus timestamp in topics[i-1], matched by key.
 */
export async function latencyRun(
  kafka: KafkaClient,
  topics: string[],
  encode: (id: string) => Buffer | Promise<Buffer>,
  opts: { ratePerSecond?: number; seconds?: number; timeoutMs?: number; abort?: () => string | undefined } = {},
): Promise<LatencyStats> {
  const rate = opts.ratePerSecond ?? 100;
  const n = Math.max(1, Math.round(rate * (opts.seconds ?? 10)));
  const records = await Promise.all(
    Array.from({ length: n }, async () => {
      const id = randomUUID();
      return { key: id, value: await encode(id) };
    }),
  );
  const collector = await new TopicCollector(kafka, topics).start('end');
  const producer = await new PlainProducer(kafka).connect();
  const last = topics[topics.length - 1]!;
  try {
    const t0 = performance.now();
    const sends: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const wait = t0 + (i * 1000) / rate - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sends.push(producer.send(topics[0]!, [records[i]!]));
    }
    await Promise.all(sends);
    await waitFor(() => collector.count(last) >= n, {
      timeoutMs: opts.timeoutMs ?? 60_000,
      what: `latency run: ${last} did not get all ${n} records (has ${collector.count(last)})`,
      everyMs: 100,
      ...(opts.abort ? { abort: opts.abort } : {}),
    });
  } finally {
    await producer.close().catch(() => undefined);
    await collector.stop();
  }
  const perHop: LatencyStats['perHop'] = [];
  const pooled: number[] = [];
  const e2e: number[] = [];
  const at = topics.map((t) => collector.seen.get(t)!);
  for (let i = 1; i < topics.length; i++) {
    const ms: number[] = [];
    for (const { key } of records) {
      const a = at[i - 1]!.get(key);
      const b = at[i]!.get(key);
      if (a && b) ms.push(b.timestamp - a.timestamp);
    }
    pooled.push(...ms);
    perHop.push({ hop: i, p50: percentile(ms, 50), p99: percentile(ms, 99) });
  }
  for (const { key } of records) {
    const a = at[0]!.get(key);
    const b = at[topics.length - 1]!.get(key);
    if (a && b) e2e.push(b.timestamp - a.timestamp);
  }
  return {
    records: n,
    ratePerSecond: rate,
    perHop,
    pooled: { p50: percentile(pooled, 50), p99: percentile(pooled, 99) },
    endToEnd: { p50: percentile(e2e, 50), p99: percentile(e2e, 99) },
  };
}

// ---------------------------------------------------------------- sonicflow

export type SonicflowVariant = 'eos-batched' | 'eos-default';

const VARIANT_ENV: Record<SonicflowVariant, Record<string, string>> = {
  'eos-batched': { SONIC_BATCH_MAX_RECORDS: '500', SONIC_BATCH_MAX_WAIT_MS: '100' },
  'eos-default': {},
};

/** Deploys, loads, runs and measures the five-hop chain on sonicflow, then removes everything it made. */
export async function run(
  opts: HopBaselineOptions & {
    variant?: SonicflowVariant;
    statusEvents?: boolean;
    /** The stage runtime's Kafka client (SONIC_KAFKA_CLIENT); kafkajs by default. */
    client?: 'kafkajs' | 'platformatic';
    /** The source tree whose `bin/sonicflow.mjs` and five-hop fixture run the stages (default: this one); bench/ab.ts points it at another revision. */
    root?: string;
  } = {},
): Promise<HopBaselineResult> {
  const root = opts.root ?? ROOT;
  const n = opts.records ?? 20_000;
  const partitions = opts.partitions ?? FIVE_HOP.partitions;
  const variant = opts.variant ?? 'eos-batched';
  const statusEvents = opts.statusEvents ?? true;
  const prefix = `bench_sf_${randomUUID().slice(0, 8)}`;
  const baseEnv: NodeJS.ProcessEnv = { ...process.env, KAFKA_BROKERS: brokerList(opts.brokers) };
  // the variant alone decides batching
  for (const k of ['SONIC_BATCH_MAX_RECORDS', 'SONIC_BATCH_MAX_WAIT_MS', 'SONIC_CONCURRENCY']) delete baseEnv[k];
  const client = opts.client ?? 'kafkajs';
  baseEnv.SONIC_KAFKA_CLIENT = client;
  const ctx = new Context({ ...baseEnv, SONIC_LOG_LEVEL: 'fatal' }, 'bench');
  const topology = fiveHopTopology({ prefix, partitions, emitsStatus: statusEvents });
  const topics = FIVE_HOP.topicKeys.map((k) => `${prefix}.${k}`);
  const input = topics[0]!;
  const encode = (id: string): Promise<Buffer> => ctx.serde.encode(valueSubject(input), 'task-status', benchValue(id));
  const logDir = mkdtempSync(join(tmpdir(), 'bench-sonicflow-'));
  const admin = await new TopicAdmin(ctx.kafka).connect();
  let stages: ReturnType<typeof startNode> | undefined;
  let failed = false;
  try {
    await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);
    stages = startNode(
      // BENCH_STAGE_NODE_ARGS adds node flags to the stage process, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
      [
        ...(process.env.BENCH_STAGE_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
        join(root, 'bin', 'sonicflow.mjs'),
        'run',
        'hop1',
        'hop2',
        'hop3',
        'hop4',
        'hop5',
        '--file',
        join(root, FIXTURE_PATH),
      ],
      {
        ...baseEnv,
        ...VARIANT_ENV[variant],
        SONIC_TOPIC_PREFIX: prefix,
        FIVE_HOP_PARTITIONS: String(partitions),
        FIVE_HOP_STATUS: statusEvents ? 'on' : 'off',
        SONIC_METRICS_PORT: '0',
        // BENCH_STAGE_LOG_LEVEL=debug logs every committed batch (the log is kept, see below)
        SONIC_LOG_LEVEL: process.env.BENCH_STAGE_LOG_LEVEL ?? 'warn',
      },
      join(logDir, 'stages.log'),
    );
    const proc = stages;
    const { recordsPerSecond, recordsPerSecondFromCommit, latency } = await measureChain(ctx.kafka, topics, encode, {
      records: n,
      partitions,
      groups: topology.stages.map((s) => groupId(ctx.config.clientId, topology, s)),
      what: `sonicflow ${variant}`,
      ...(opts.latencyRate ? { latencyRate: opts.latencyRate } : {}),
      ...(opts.latencySeconds ? { latencySeconds: opts.latencySeconds } : {}),
      abort: () => (proc.proc.exitCode !== null ? `the stage process exited with ${proc.proc.exitCode}:\n${proc.tail()}` : undefined),
    });
    const batch =
      variant === 'eos-batched'
        ? '500 records / 100 ms per transaction (SONIC_BATCH_MAX_RECORDS=500, SONIC_BATCH_MAX_WAIT_MS=100)'
        : "the runtime's default batch (500 records / 100 ms per transaction)";
    return {
      system: `sonicflow (${variant}${client === 'kafkajs' ? '' : `, ${client}`})`,
      records: n,
      recordsPerSecond,
      recordsPerSecondFromCommit,
      hopLatencyMs: latency.pooled,
      partitions,
      latency,
      notes: [
        client === 'kafkajs'
          ? `exactly-once hops on kafkajs (read_committed, one transaction per batch and input partition: outputs + offsets); sonicflow has no at-least-once mode`
          : `exactly-once hops on @platformatic/kafka (KIP-447: one transactional producer per stage, the batches of every partition in one transaction with the group generation); sonicflow has no at-least-once mode`,
        `batching: ${batch}`,
        `all five stages in ONE process (sonicflow run hop1 … hop5), each working on ${partitions} partitions at once`,
        `each hop decodes and re-encodes Avro (Confluent wire format)${statusEvents ? ' and writes a status event per record, so 2 records per hop' : '; status events off'}`,
        `latency: ${latency.records} records at ${latency.ratePerSecond}/s with the stages warm; broker append times; p50/p99 over the 5 hops pooled`,
      ].join('; '),
    };
  } catch (err) {
    failed = true;
    if (err instanceof Error && stages) err.message += ` (stage log kept: ${stages.log})`;
    throw err;
  } finally {
    if (stages) await stopProcess(stages.proc, 40_000);
    await removeTopology(topology, admin, ctx.registryAdmin).catch(() => undefined);
    await admin.close();
    await deleteGroups(
      ctx.kafka,
      topology.stages.map((s) => groupId(ctx.config.clientId, topology, s)),
    );
    if (!failed && !process.env.BENCH_STAGE_LOG_LEVEL) rmSync(logDir, { recursive: true, force: true });
    else if (!failed) process.stderr.write(`stage log kept: ${join(logDir, 'stages.log')}\n`);
  }
}

if (import.meta.filename === process.argv[1]) {
  const { values: a } = parseArgs({
    options: {
      records: { type: 'string', default: '5000' },
      partitions: { type: 'string', default: '4' },
      variant: { type: 'string', default: 'eos-batched' },
      client: { type: 'string', default: 'kafkajs' },
    },
  });
  const r = await run({
    records: Number(a.records),
    partitions: Number(a.partitions),
    variant: a.variant as SonicflowVariant,
    client: a.client as 'kafkajs' | 'platformatic',
  });
  console.log(JSON.stringify(r, null, 2));
  process.exit(0);
}
