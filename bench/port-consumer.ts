/**
 * Consume throughput of the stage consumer of each client of the port (`src/kafka/clients.ts`):
 * N records of 1 KB in 4 partitions, read by `stageConsumer` with no processing (every batch taken
 * at once), runs interleaved kafkajs / platformatic. Prints records/s; asserts nothing.
 *
 *   npx node --import tsx bench/port-consumer.ts [records=50000] [runs=2]   (CLIENTS=platformatic: one client only)
 */
import { Context } from '../src/app/context.js';
import { TopicAdmin } from '../src/kafka/admin.js';
import { createKafka } from '../src/kafka/client.js';
import { loadKafkaClient, stageConsumer } from '../src/kafka/clients.js';
import { kafkajsOf } from '../src/kafka/handle.js';

const N = Number(process.argv[2] ?? 50_000);
const RUNS = Number(process.argv[3] ?? 2);
const ctx = new Context({ ...process.env, SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'warn' }, 'bench');
const topic = `bench-port-consumer-${Date.now().toString(36)}`;

async function consume(client: 'kafkajs' | 'platformatic', run: number): Promise<number> {
  const kafka = createKafka({ brokers: ctx.config.kafkaBrokers, clientId: `bench-${client}-${run}`, client }, ctx.logger);
  await loadKafkaClient(kafka);
  const consumer = stageConsumer(kafka, {
    groupId: `${topic}-${client}-${run}`,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 1000,
    rebalanceTimeoutMs: 10_000,
    maxWaitMs: 100,
    reconnect: { initialMs: 100, maxMs: 1000 },
    logger: ctx.logger,
  });
  let got = 0;
  let first = 0;
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  await consumer.start([topic], {
    onAssignment: () => undefined,
    onBatch: (_t, _p, records) => {
      if (first === 0) first = performance.now();
      got += records.length;
      if (got >= N) resolve();
      return true;
    },
    onMarkersOnly: () => undefined,
    onCrash: (err) => {
      throw err;
    },
  });
  await done;
  const seconds = (performance.now() - first) / 1000;
  await consumer.stop();
  return got / seconds;
}

const admin = await new TopicAdmin(ctx.kafka).connect();
await admin.create([{ name: topic, partitions: 4, replicationFactor: 1, configs: {} }]);
try {
  const producer = kafkajsOf(ctx.kafka).producer();
  await producer.connect();
  const value = Buffer.alloc(1024, 7);
  for (let i = 0; i < N; i += 1000)
    await producer.send({ topic, messages: Array.from({ length: Math.min(1000, N - i) }, (_, j) => ({ partition: (i + j) % 4, key: String(i + j), value })) });
  await producer.disconnect();
  for (let run = 1; run <= RUNS; run++)
    for (const client of (process.env.CLIENTS ?? 'kafkajs,platformatic').split(',') as ('kafkajs' | 'platformatic')[]) {
      const rate = await consume(client, run);
      console.log(`${client} run ${run}: ${N} records in 4 partitions, ${Math.round(rate)} records/s (first batch to last)`);
    }
} finally {
  await admin.delete([topic]);
  await admin.close();
}
