/**
 * The access guard of @platformatic/kafka clients, as `../client.ts` gives kafkajs' clients: one
 * probe of the broker's security before a client's first connection (`../access.ts`), and the
 * client's SASL failure turned into `KAFKA_AUTH_FAILED`, so a client the broker will never let in
 * as configured fails at connect with an error that says why, instead of retrying for ever.
 */
import { explainAccessError, probeAccess, type AccessSettings } from '../access.js';
import type { KafkaConnection } from '../connection.js';

/** What the probe needs of the connection settings. */
export function accessSettings(conn: KafkaConnection): AccessSettings {
  return {
    brokers: conn.brokers,
    ...(conn.ssl === undefined ? {} : { ssl: conn.ssl }),
    ...(conn.sasl === undefined ? {} : { sasl: { mechanism: conn.sasl.mechanism, username: conn.sasl.username } }),
    timeoutMs: Math.min(conn.connectTimeoutMs ?? 5000, 5000),
  };
}

/**
 * Runs `connect` after the probe's verdict (asked once; asked again only while the broker is
 * unreachable): a refusal rejects with its access error, and a SASL failure of `connect` with
 * `KAFKA_AUTH_FAILED`. Other errors pass through unchanged.
 */
export class AccessGuard {
  private verdict: Promise<void> | undefined;
  private readonly settings: AccessSettings;

  constructor(conn: KafkaConnection) {
    this.settings = accessSettings(conn);
  }

  async connect<T>(connect: () => Promise<T>): Promise<T> {
    this.verdict ??= probeAccess(this.settings).then((v) => {
      if (v.kind === 'unreachable') this.verdict = undefined;
      if (v.kind === 'refused') throw v.error;
    });
    await this.verdict;
    try {
      return await connect();
    } catch (err) {
      throw explainAccessError(err, this.settings) ?? err;
    }
  }
}
