/**
 * How to reach the brokers: the settings every Kafka client of a process is built from, whichever
 * client library (`SONIC_KAFKA_CLIENT`, see `port.ts`).
 */
/** The Kafka clients sonicflow can run its stages on (`SONIC_KAFKA_CLIENT`). */
export type KafkaClientKind = 'kafkajs' | 'platformatic';
export const KAFKA_CLIENT_KINDS: readonly KafkaClientKind[] = ['kafkajs', 'platformatic'];

export interface KafkaConnection {
  brokers: string[];
  /** The client the stage runtime uses (see `port.ts`); kafkajs when unset. */
  client?: KafkaClientKind;
  clientId: string;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /**
   * First retry backoff, ms (kafkajs: 100). Right after a commit the coordinator answers the next
   * transaction's AddPartitionsToTxn with CONCURRENT_TRANSACTIONS until it has written the markers;
   * the Java client retries that after 20 ms, kafkajs after its full backoff.
   */
  retryInitialMs?: number;
  ssl?: KafkaSsl;
  sasl?: KafkaSasl;
}

/** TLS to the brokers: `true` trusts the system CAs; `ca` trusts these CA certificates (PEM) instead. */
export type KafkaSsl = boolean | { ca: string[] };

/** SASL credentials for the brokers. */
export type KafkaSasl =
  | { mechanism: 'plain'; username: string; password: string }
  | { mechanism: 'scram-sha-256'; username: string; password: string }
  | { mechanism: 'scram-sha-512'; username: string; password: string };
