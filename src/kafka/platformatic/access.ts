/**
 * The access check of the @platformatic/kafka clients, the same as `createKafka`'s kafkajs clients
 * get (`../access.ts`): before the first connection with a connection's settings, one probe of the
 * bootstrap brokers (an untrusted certificate, TLS or SASL where the listener has none: refused at
 * once); and a failed connection whose cause is a wrong password or an untrusted certificate
 * becomes the project's access error. The client reports both as a retriable network error inside
 * a "cannot connect to any broker" aggregate, which a caller waiting for its broker
 * (`untilConnected`) would retry for ever.
 */
import { accessGate, explainAccessError } from '../access.js';
import { accessSettings } from '../client.js';
import type { KafkaConnection } from '../connection.js';
import { normalizeError } from './options.js';

/** The access gate per connection settings (one probe for every client built from them). */
const gates = new WeakMap<KafkaConnection, () => Promise<void>>();

function probeOnce(conn: KafkaConnection): Promise<void> {
  let gate = gates.get(conn);
  if (gate === undefined) {
    gate = accessGate(accessSettings(conn));
    gates.set(conn, gate);
  }
  return gate();
}

/**
 * Runs `connect` (a client's first request) after the probe; its failure comes back as an access
 * error (`KAFKA_AUTH_FAILED`, `KAFKA_TLS_UNTRUSTED`, `KAFKA_PROTOCOL_MISMATCH`: not retryable) or,
 * otherwise, in the port's shape ({@link normalizeError}).
 */
export async function connectChecked<T>(conn: KafkaConnection, connect: () => Promise<T>): Promise<T> {
  await probeOnce(conn);
  try {
    return await connect();
  } catch (err) {
    throw explainAccessError(err, accessSettings(conn)) ?? normalizeError(err);
  }
}
