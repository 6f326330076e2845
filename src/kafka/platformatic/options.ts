/**
 * What every @platformatic/kafka client of a process is built from (see `../port.ts`): the
 * brokers, TLS and SASL of the connection settings, and the retry behaviour the runtime needs.
 * Errors of the client come back in the port's shape through {@link normalizeError}.
 */
import type { BaseOptions } from '@platformatic/kafka';
import type { KafkaConnection } from '../connection.js';

/**
 * Back-off between retried requests, ms. The client's default (1000 ms) costs a second on every
 * CONCURRENT_TRANSACTIONS the coordinator answers while it writes the last transaction's markers;
 * the Java client retries after 20 ms. The runtime's own setting (`retryInitialMs`) wins.
 */
const RETRY_DELAY_MS = 20;

/**
 * The client options of the connection settings (brokers, client id, timeouts, TLS, SASL). The
 * return type is inferred (checked against the client's `BaseOptions`), so that no client type
 * appears in this module's declaration.
 */
export function baseOptions(conn: KafkaConnection) {
  const ssl = conn.ssl;
  return {
    clientId: conn.clientId,
    bootstrapBrokers: conn.brokers,
    connectTimeout: conn.connectTimeoutMs ?? 5000,
    requestTimeout: conn.requestTimeoutMs ?? 30000,
    retries: 8,
    retryDelay: conn.retryInitialMs ?? RETRY_DELAY_MS,
    autocreateTopics: false,
    ...(ssl === undefined || ssl === false ? {} : { tls: ssl === true ? {} : { ca: ssl.ca } }),
    ...(conn.sasl === undefined
      ? {}
      : { sasl: { mechanism: SASL_MECHANISMS[conn.sasl.mechanism], username: conn.sasl.username, password: conn.sasl.password } }),
  } satisfies BaseOptions;
}

const SASL_MECHANISMS = { plain: 'PLAIN', 'scram-sha-256': 'SCRAM-SHA-256', 'scram-sha-512': 'SCRAM-SHA-512' } as const;

/** The protocol error inside one of the client's errors, however deep (it wraps them in aggregates and network errors). */
interface ProtocolErrorLike {
  apiId?: string;
  apiCode?: number;
  canRetry?: boolean;
  errors?: unknown[];
  cause?: unknown;
}

/** The first Kafka protocol error name (`apiId`) inside `err`, depth first; undefined when there is none. */
export function protocolErrorName(err: unknown, depth = 0): string | undefined {
  if (depth > 6 || err === null || typeof err !== 'object') return undefined;
  const e = err as ProtocolErrorLike;
  if (typeof e.apiId === 'string' && e.apiId !== '') return e.apiId;
  for (const inner of e.errors ?? []) {
    const name = protocolErrorName(inner, depth + 1);
    if (name) return name;
  }
  return protocolErrorName(e.cause, depth + 1);
}

/**
 * The client's error in the port's shape: the same error, with `type` set to the Kafka protocol
 * error name it carries (as kafkajs' errors have it: the runtime's fencing and authorization checks
 * read `type`) and `retriable` as the protocol error says.
 */
export function normalizeError(err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const type = protocolErrorName(e);
  if (type !== undefined && (e as { type?: unknown }).type === undefined) Object.assign(e, { type });
  return e;
}
