/**
 * The stage runtime's Kafka clients, built for the client the handle was made for
 * (`SONIC_KAFKA_CLIENT`, see `port.ts`); with @platformatic/kafka, after {@link loadKafkaClient}.
 */
import { SonicError } from '../core/errors.js';
import { GroupConsumer } from './consumer.js';
import { settingsOf, type KafkaClient } from './handle.js';
import { PlainProducer, TxProducer } from './io.js';
import type { EventProducer, KafkaClientKind, StageConsumer, StageConsumerOptions, TransactionalProducer } from './port.js';

/** The @platformatic/kafka adapter, once {@link loadKafkaClient} has loaded it. */
let platformatic: { producer: typeof import('./platformatic/producer.js'); consumer: typeof import('./platformatic/consumer.js') } | undefined;

/**
 * Loads the adapter of the client this handle was made for, before the factories below are called
 * with it. @platformatic/kafka costs about a second of CPU to import (it compiles its validators
 * at load), so only a process that uses it pays for it; the kafkajs adapter is always loaded.
 */
export async function loadKafkaClient(kafka: KafkaClient | KafkaClientKind): Promise<void> {
  if ((typeof kafka === 'string' ? kafka : clientKind(kafka)) !== 'platformatic' || platformatic) return;
  // modules of this folder, which the layer rules allow it; loaded here only to be loaded late
  // eslint-disable-next-line no-restricted-syntax
  const [producer, consumer] = await Promise.all([import('./platformatic/producer.js'), import('./platformatic/consumer.js')]);
  platformatic = { producer, consumer };
}

function platformaticAdapter(): NonNullable<typeof platformatic> {
  if (!platformatic) throw new SonicError('INTERNAL', 'SONIC_KAFKA_CLIENT=platformatic: its adapter is not loaded (await loadKafkaClient(kafka) first)');
  return platformatic;
}

/** The client the stage runtime uses with this handle. */
export function clientKind(kafka: KafkaClient): KafkaClientKind {
  return settingsOf(kafka).kind;
}

/**
 * True when the client sends the group generation with transactional offset commits (KIP-447):
 * then one transactional producer per stage is safe, and the runtime commits every partition's
 * batches together (see `src/runtime/group-commit.ts`).
 */
export function supportsKip447(kafka: KafkaClient): boolean {
  return clientKind(kafka) === 'platformatic';
}

/** A member of a stage's consumer group. */
export function stageConsumer(kafka: KafkaClient, options: StageConsumerOptions): StageConsumer {
  const { kind } = settingsOf(kafka);
  if (kind === 'kafkajs') return new GroupConsumer(kafka, options);
  const { producer, consumer } = platformaticAdapter();
  return new consumer.PkGroupConsumer(producer.connectionOf(kafka), options);
}

/** A transactional producer with the stable id `transactionalId`. */
export function transactionalProducer(kafka: KafkaClient, transactionalId: string, transactionTimeoutMs?: number): TransactionalProducer {
  const { kind } = settingsOf(kafka);
  if (kind === 'kafkajs') return new TxProducer(kafka, transactionalId, transactionTimeoutMs);
  return new (platformaticAdapter().producer.PkTxProducer)(kafka, transactionalId, transactionTimeoutMs);
}

/** An idempotent producer of events (progress). */
export function eventProducer(kafka: KafkaClient): EventProducer {
  const { kind } = settingsOf(kafka);
  if (kind === 'kafkajs') return new PlainProducer(kafka);
  return new (platformaticAdapter().producer.PkEventProducer)(kafka);
}
