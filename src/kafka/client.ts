/**
 * The Kafka port: the only module family that imports kafkajs. Everything above it talks to
 * Kafka through the small functions and types exported from `src/kafka/*`, none of them kafkajs'
 * own: `createKafka` returns an opaque {@link KafkaClient} handle (see `handle.ts`).
 */
import type { LogEntry } from 'kafkajs';
import { Kafka, logLevel } from './kafkajs.js';
import { isSonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { retry, type BackoffOptions } from '../core/retry.js';
import { accessGate, explainAccessError, isAccessError, type AccessSettings } from './access.js';
import { installCoordinatorCache } from './coordinators.js';
import { installTxnErrorTopics } from './txn-errors.js';
import { authorizationFailure } from './acls.js';
import type { KafkaConnection } from './connection.js';
import { adoptKafkajs, type KafkaClient } from './handle.js';

/** The opaque client handle every `src/kafka` function and class takes (kafkajs' own client never leaves `src/kafka`). */
export type { KafkaClient } from './handle.js';

/** Java-compatible murmur2 partitioning (the Java client's default), set on every producer. */
export { createPartitioner } from './partitioner.js';

/**
 * Idempotent producers must retry without limit (kafkajs warns otherwise); request timeouts bound
 * each try. The first backoff comes from the client (`retryInitialMs`).
 */
export const PRODUCER_RETRY = { retries: Number.MAX_SAFE_INTEGER, maxRetryTime: 5000 };

export type { KafkaConnection, KafkaSasl, KafkaSsl } from './connection.js';

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/** A Kafka client whose logs go to our pino logger (kafkajs INFO is demoted to debug: it is chatty). */
export function createKafka(conn: KafkaConnection, logger: Logger): KafkaClient {
  installCoordinatorCache();
  installTxnErrorTopics();
  const log = logger.child({ component: 'kafkajs' });
  const kafka = new Kafka({
    clientId: conn.clientId,
    brokers: conn.brokers,
    connectionTimeout: conn.connectTimeoutMs ?? 5000,
    requestTimeout: conn.requestTimeoutMs ?? 30000,
    ...(conn.ssl === undefined ? {} : { ssl: conn.ssl }),
    ...(conn.sasl === undefined ? {} : { sasl: conn.sasl }),
    retry: { retries: 8, initialRetryTime: conn.retryInitialMs ?? 20, maxRetryTime: 5000 },
    logLevel: logLevel.INFO,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, timestamp: _ts, logger: _l, ...rest } = entry;
        // CONCURRENT_TRANSACTIONS is retried by src/kafka/io.ts; kafkajs still logs it as an error
        const expected = `${String(rest.error ?? '')} ${message}`.includes('another concurrent operation on the same transaction');
        const lvl = expected ? 'debug' : (LEVELS[level] ?? 'info');
        (lvl === 'info' ? log.debug : log[lvl]).call(log, { ...rest, namespace: entry.logger }, message);
      },
  });
  guardAccess(kafka, accessSettings(conn));
  return adoptKafkajs(kafka, { kind: conn.client ?? 'kafkajs', connection: conn });
}

/** What the access probe (`access.ts`) needs of connection settings: the brokers, TLS, the SASL mechanism and user, a step timeout. */
export function accessSettings(conn: KafkaConnection): AccessSettings {
  return {
    brokers: conn.brokers,
    ...(conn.ssl === undefined ? {} : { ssl: conn.ssl }),
    ...(conn.sasl === undefined ? {} : { sasl: { mechanism: conn.sasl.mechanism, username: conn.sasl.username } }),
    timeoutMs: Math.min(conn.connectTimeoutMs ?? 5000, 5000),
  };
}

type Connectable = { connect: () => Promise<void> };

/**
 * Makes every admin, producer and consumer of `kafka` probe the broker's security before its first
 * connection (`src/kafka/access.ts`, once per client: any verdict but "unreachable" is kept) and
 * turn kafkajs' SASL failures into `KAFKA_AUTH_FAILED`: a client the broker will never let in as
 * configured fails at once with an error that says why, instead of retrying.
 */
function guardAccess(kafka: InstanceType<typeof Kafka>, settings: AccessSettings): void {
  const gate = accessGate(settings);
  const guarded = <T extends Connectable>(client: T): T => {
    const connect = client.connect.bind(client);
    client.connect = async () => {
      await gate();
      try {
        await connect();
      } catch (err) {
        throw explainAccessError(err, settings) ?? err;
      }
    };
    return client;
  };
  const { admin, producer, consumer } = kafka;
  kafka.admin = (o) => guarded(admin.call(kafka, o));
  kafka.producer = (o) => guarded(producer.call(kafka, o));
  kafka.consumer = (o) => guarded(consumer.call(kafka, o));
}

/** A kafkajs client, as far as {@link guardKafkajsAccess} says (no kafkajs type leaves `src/kafka` but through the handle). */
export interface KafkajsLike {
  admin: (...args: never[]) => unknown;
  producer: (...args: never[]) => unknown;
  consumer: (...args: never[]) => unknown;
}

/**
 * The guard of {@link createKafka}'s clients, for a kafkajs client made elsewhere (the benchmarks'
 * own, bench/kafka-connection.ts): a client the broker will never let in as configured fails at
 * its first connect with `KAFKA_AUTH_FAILED`, `KAFKA_TLS_UNTRUSTED` or `KAFKA_PROTOCOL_MISMATCH`.
 */
export function guardKafkajsAccess(kafka: KafkajsLike, settings: AccessSettings): void {
  guardAccess(kafka as InstanceType<typeof Kafka>, settings);
}

/**
 * Runs `connect` until it succeeds, waiting a capped, jittered backoff between tries, each wait
 * logged with its attempt and delay: a process that needs the broker waits for it rather than
 * exit. Rejects with the signal's reason when the signal aborts, and at once on what waiting
 * would not change: an access error (`KAFKA_AUTH_FAILED`, `KAFKA_TLS_UNTRUSTED`,
 * `KAFKA_PROTOCOL_MISMATCH`), a refusal by the broker's authorizer, or another non-retryable
 * SonicError.
 */
export async function untilConnected(
  what: string,
  connect: () => Promise<unknown>,
  options: { backoff: BackoffOptions; logger: Logger; signal?: AbortSignal },
): Promise<void> {
  await retry(connect, {
    ...options.backoff,
    jitter: 'decorrelated',
    ...(options.signal ? { signal: options.signal } : {}),
    // a broker that refuses our credentials, certificate or protocol will not change its mind, nor
    // its authorizer an ACL: waiting changes nothing
    retryIf: (err) => !isAccessError(err) && authorizationFailure(err) === undefined && !(isSonicError(err) && !err.retryable),
    onRetry: (err, attempt, delayMs) => options.logger.warn({ err, what, attempt, next_try_in_ms: delayMs }, 'broker unreachable; waiting to try again'),
  });
}
