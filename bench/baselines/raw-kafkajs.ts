/**
 * The floor of what kafkajs itself can do on the shared five-hop workload: a hand-rolled
 * consume -> produce chain, at-least-once, all five hops in this process.
 *
 * Each hop is one consumer group (autoCommit: offsets committed after each batch is handled,
 * `partitionsConsumedConcurrently` = partitions) and one idempotent producer (acks=all,
 * maxInFlightRequests 1); `eachBatch` copies the batch's raw key and value bytes to the same
 * partition of the next topic with one `producer.sendBatch`. No transactions, no Avro decoding
 * (the h0 records are the same ~1.1 KB Confluent-framed `task-status` Avro bytes as sonicflow's,
 * encoded locally with schema id 0 and never looked at again), no status events, no headers.
 *
 * Method: measureChain of bench/baselines/sonicflow.ts, the same as for sonicflow. Topics h0..h5
 * with `partitions` partitions under a unique prefix, timestamps = broker append time
 * (LogAppendTime, as for every system); the five hops started; once their groups
 * are Stable and a warm-up record per partition went through, N records are written into h0 in
 * one transaction (the hops read read_committed, kafkajs' default, so they see the backlog at
 * once); records/s = (N - 1) / (last - first h5 timestamp). Then, with the hops still running,
 * the latency run: fresh records at 100/s for 10 s into h0, hop latency = timestamp in h_i -
 * timestamp in h_i-1 by key, p50/p99 over the five hops pooled. The readers share this process
 * (and so the hops' event loop); they keep only keys and timestamps. Topics and groups are
 * deleted at the end.
 *
 * Brokers: KAFKA_BROKERS (default localhost:9092); TLS and SASL as the product's, from
 * SONIC_KAFKA_SSL* and SONIC_KAFKA_SASL_* (bench/kafka-connection.ts).
 *
 *   node --import tsx bench/baselines/raw-kafkajs.ts [--records 5000]
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Consumer, Kafka, Producer } from 'kafkajs';
import { logLevel } from '../../src/kafka/kafkajs.js';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { PRODUCER_RETRY } from '../../src/kafka/client.js';
import { adoptKafkajs } from '../../src/kafka/handle.js';
import { SchemaCatalog } from '../../src/serde/catalog.js';
import { frameWire } from '../../src/serde/wire.js';
import { APPEND_TIME, FIVE_HOP, benchValue } from '../fixtures/five-hop.js';
import { benchKafkajs } from '../kafka-connection.js';
import { brokerList, deleteGroups, measureChain, type HopBaselineOptions, type HopBaselineResult } from './sonicflow.js';

interface Hop {
  consumer: Consumer;
  producer: Producer;
}

async function startHop(kafka: Kafka, groupId: string, from: string, to: string, partitions: number): Promise<Hop> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: PRODUCER_RETRY });
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100, allowAutoTopicCreation: false });
  await producer.connect();
  await consumer.connect();
  await consumer.subscribe({ topic: from, fromBeginning: true });
  await consumer.run({
    autoCommit: true,
    partitionsConsumedConcurrently: partitions,
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return;
      await producer.sendBatch({
        acks: -1,
        topicMessages: [{ topic: to, messages: batch.messages.map((m) => ({ key: m.key, value: m.value, partition: batch.partition })) }],
      });
      // eachBatchAutoResolve (default) marks the batch done; autoCommit commits it
    },
  });
  return { consumer, producer };
}

/** Runs and measures the raw kafkajs five-hop chain, then removes its topics and groups. */
export async function run(opts: HopBaselineOptions = {}): Promise<HopBaselineResult> {
  const n = opts.records ?? 20_000;
  const partitions = opts.partitions ?? FIVE_HOP.partitions;
  const prefix = `bench_raw_${randomUUID().slice(0, 8)}`;
  // TLS and SASL as the product's clients, when the environment configures them
  const kafka = benchKafkajs({
    clientId: 'bench-raw',
    brokers: brokerList(opts.brokers).split(','),
    retry: { retries: 8, initialRetryTime: 20, maxRetryTime: 5000 },
    logLevel: logLevel.NOTHING,
  });
  // the same kafkajs client, as a handle for the shared helpers and src/kafka's TopicAdmin
  const client = adoptKafkajs(kafka);
  const topics = FIVE_HOP.topicKeys.map((k) => `${prefix}.${k}`);
  const groups = [1, 2, 3, 4, 5].map((i) => `${prefix}.hop${i}`);
  const type = new SchemaCatalog().type('task-status');
  const encode = (id: string): Buffer => frameWire(0, type.toBuffer(benchValue(id)));
  const admin = await new TopicAdmin(client).connect();
  const hops: Hop[] = [];
  try {
    await admin.create(topics.map((name) => ({ name, partitions, replicationFactor: 1, configs: APPEND_TIME })));
    hops.push(...(await Promise.all([1, 2, 3, 4, 5].map((i) => startHop(kafka, groups[i - 1]!, topics[i - 1]!, topics[i]!, partitions)))));
    const { recordsPerSecond, recordsPerSecondFromCommit, latency } = await measureChain(client, topics, encode, {
      records: n,
      partitions,
      groups,
      what: 'raw kafkajs',
      ...(opts.latencyRate ? { latencyRate: opts.latencyRate } : {}),
      ...(opts.latencySeconds ? { latencySeconds: opts.latencySeconds } : {}),
    });
    return {
      system: 'raw kafkajs (at-least-once)',
      records: n,
      recordsPerSecond,
      recordsPerSecondFromCommit,
      hopLatencyMs: latency.pooled,
      partitions,
      latency,
      notes: [
        'at-least-once: autoCommit after each batch, no transactions; a crash between send and commit duplicates',
        'one consumer group + one idempotent producer (acks=all) per hop, eachBatch + sendBatch to the same partition, partitionsConsumedConcurrently = partitions',
        'raw bytes copied: no Avro decoding, no status events, no headers',
        'all five hops and the h5 reader in this one process',
        `latency: ${latency.records} records at ${latency.ratePerSecond}/s with the hops warm; broker append times; p50/p99 over the 5 hops pooled`,
      ].join('; '),
    };
  } finally {
    const bounded = <T>(p: Promise<T>): Promise<T | undefined> =>
      Promise.race([p.catch(() => undefined), new Promise<undefined>((r) => void setTimeout(() => r(undefined), 15_000).unref())]);
    await Promise.all(hops.map((h) => bounded(h.consumer.disconnect())));
    await Promise.all(hops.map((h) => bounded(h.producer.disconnect())));
    await admin.delete(topics).catch(() => undefined);
    await admin.close();
    await deleteGroups(client, groups);
  }
}

if (import.meta.filename === process.argv[1]) {
  const { values: a } = parseArgs({ options: { records: { type: 'string', default: '5000' }, partitions: { type: 'string', default: '4' } } });
  console.log(JSON.stringify(await run({ records: Number(a.records), partitions: Number(a.partitions) }), null, 2));
  process.exit(0);
}
