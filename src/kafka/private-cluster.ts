/**
 * kafkajs' private cluster factory (kafkajs is pinned to 2.2.4): a second cluster connection with
 * an isolation level of our choosing, for what kafkajs' public API lacks — high watermarks for lag
 * (READ_UNCOMMITTED ListOffsets, `lag.ts`) and a group-less read of one partition (read_committed
 * Fetch, `partition-reader.ts`).
 */
import { kafkajsOf, type KafkaClient } from './handle.js';

/** kafkajs' ISOLATION_LEVEL values. */
export const ISOLATION = { READ_UNCOMMITTED: 0, READ_COMMITTED: 1 } as const;

/** Partition errors that a metadata refresh and another try mend (a leader moved, a broker restarted). */
export const RETRIABLE_PARTITION_ERRORS: ReadonlySet<string> = new Set([
  'UNKNOWN_TOPIC_OR_PARTITION',
  'NOT_LEADER_FOR_PARTITION',
  'NOT_LEADER_OR_FOLLOWER',
  'LEADER_NOT_AVAILABLE',
  'REPLICA_NOT_AVAILABLE',
  'OFFSET_NOT_AVAILABLE',
  'FENCED_LEADER_EPOCH',
  'KAFKA_STORAGE_ERROR',
]);

/** A private kafkajs cluster with `isolationLevel`, typed as the caller uses it; undefined when kafkajs no longer offers the factory. */
export function privateCluster<C>(client: KafkaClient, isolationLevel: number): C | undefined {
  const kafka = kafkajsOf(client);
  const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === 'private:Kafka:createCluster');
  const create = symbol === undefined ? undefined : (kafka as unknown as Record<symbol, unknown>)[symbol];
  if (typeof create !== 'function') return undefined;
  return (create as (o: object) => C)({ allowAutoTopicCreation: false, isolationLevel });
}
