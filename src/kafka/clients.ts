/**
 * The stage runtime's Kafka clients, built for the client the handle was made for
 * (`SONIC_KAFKA_CLIENT`, see `port.ts`).
 */
import { GroupConsumer } from './consumer.js';
import { settingsOf, type KafkaClient } from './handle.js';
import { PlainProducer, TxProducer } from './io.js';
import { PkEventProducer, PkTxProducer, connectionOf } from './platformatic/producer.js';
import { PkGroupConsumer } from './platformatic/consumer.js';
import type { EventProducer, KafkaClientKind, StageConsumer, StageConsumerOptions, TransactionalProducer } from './port.js';

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
  return new PkGroupConsumer(connectionOf(kafka), options);
}

/** A transactional producer with the stable id `transactionalId`. */
export function transactionalProducer(kafka: KafkaClient, transactionalId: string, transactionTimeoutMs?: number): TransactionalProducer {
  const { kind } = settingsOf(kafka);
  if (kind === 'kafkajs') return new TxProducer(kafka, transactionalId, transactionTimeoutMs);
  return new PkTxProducer(kafka, transactionalId, transactionTimeoutMs);
}

/** An idempotent producer of events (progress). */
export function eventProducer(kafka: KafkaClient): EventProducer {
  const { kind } = settingsOf(kafka);
  if (kind === 'kafkajs') return new PlainProducer(kafka);
  return new PkEventProducer(kafka);
}
