/**
 * The transactional producer of each client of the port (src/kafka/clients.ts), bare: a loop of
 * publishes (records with an input offset, one transaction each) into a topic of 4 partitions,
 * 1 KB values, 500 records per transaction, 50 000 records per run; the clients' runs interleaved
 * (kafkajs, platformatic, kafkajs, platformatic, …) so that a busy machine slows both alike.
 * Prints records/s per run; asserts nothing. Connection settings from the environment, as the
 * product reads them.
 *
 *   node --import tsx bench/tx-producer.ts [runs per client, default 2]
 */
import { randomBytes } from 'node:crypto';
import { kafkaConnection } from '../src/app/context.js';
import { loadConfig } from '../src/core/config.js';
import { createLogger } from '../src/core/logger.js';
import { TopicAdmin } from '../src/kafka/admin.js';
import { createKafka } from '../src/kafka/client.js';
import { kafkajsOf } from '../src/kafka/handle.js';
import { loadKafkaClient, transactionalProducer } from '../src/kafka/clients.js';
import type { KafkaClientKind } from '../src/kafka/port.js';

const RECORDS = 50_000;
const PER_TRANSACTION = 500;
const PARTITIONS = 4;
const runs = Number(process.argv[2] ?? 2);

const config = loadConfig(process.env);
const logger = createLogger('bench', 'warn');
const kafkajsHandle = createKafka(kafkaConnection(config), logger);
const admin = await new TopicAdmin(kafkajsHandle).connect();
const groups = kafkajsOf(kafkajsHandle).admin();
await groups.connect();
const suffix = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
const value = randomBytes(1024);

async function run(client: KafkaClientKind, i: number): Promise<number> {
  const topic = `bench-tx-producer-${client}-${i}-${suffix}`;
  await admin.create([{ name: topic, partitions: PARTITIONS, replicationFactor: 1, configs: {} }]);
  const kafka = createKafka({ ...kafkaConnection(config), client }, logger);
  await loadKafkaClient(kafka);
  const producer = await transactionalProducer(kafka, `${topic}-tx`, 60_000).connect();
  try {
    const started = performance.now();
    for (let sent = 0; sent < RECORDS; sent += PER_TRANSACTION) {
      const records = Array.from({ length: PER_TRANSACTION }, (_, j) => ({ topic, key: String(sent + j), value }));
      await producer.publish(records, { groupId: `${topic}-group`, topic, partition: 0, offset: String(sent + PER_TRANSACTION) });
    }
    return RECORDS / ((performance.now() - started) / 1000);
  } finally {
    await producer.close();
    await admin.delete([topic]);
    await groups.deleteGroups([`${topic}-group`]).catch(() => undefined);
  }
}

const results: Record<string, number[]> = { kafkajs: [], platformatic: [] };
for (let i = 0; i < runs; i++) {
  for (const client of ['kafkajs', 'platformatic'] as const) {
    const rate = await run(client, i);
    results[client]!.push(rate);
    console.log(`${client} run ${i + 1}: ${Math.round(rate)} records/s`);
  }
}
for (const [client, rates] of Object.entries(results)) console.log(`${client}: ${rates.map((r) => Math.round(r)).join(', ')} records/s`);
await admin.close();
await groups.disconnect();
