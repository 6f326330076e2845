/**
 * The Kafka client handle: what `createKafka` returns and what every function and class of
 * `src/kafka` takes. It is opaque, to the type checker (no kafkajs method is on its type) and at
 * run time (a frozen empty object; the kafkajs client it stands for is kept here), so nothing
 * above `src/kafka` can reach kafkajs' API through it.
 *
 * This module is the one way from a handle back to kafkajs. ESLint lets only `src/kafka` import it
 * (tests and benchmarks, which may use kafkajs directly, too).
 */
import type { Admin, Kafka } from 'kafkajs';
import type { KafkaClientKind, KafkaConnection } from './connection.js';

declare const opaque: unique symbol;

/** A Kafka client made by `createKafka`: pass it to `src/kafka`'s functions and classes. */
export interface KafkaClient {
  readonly [opaque]: 'KafkaClient';
}

/** What a handle stands for: the kafkajs client (admin, tools, and the stage runtime on kafkajs) and the settings it was built from. */
interface Entry {
  kafka: Kafka;
  /** The client the stage runtime uses. */
  kind: KafkaClientKind;
  /** Undefined for an adopted kafkajs client (its settings are kafkajs' own). */
  connection?: KafkaConnection;
}

const clients = new WeakMap<KafkaClient, Entry>();

/**
 * A handle for a kafkajs client: built by `createKafka` (with its settings and the runtime's client
 * kind) or elsewhere (tests and benchmarks that set kafkajs options of their own: kafkajs only).
 */
export function adoptKafkajs(kafka: Kafka, settings?: { kind: KafkaClientKind; connection: KafkaConnection }): KafkaClient {
  const handle = Object.freeze({}) as KafkaClient;
  clients.set(handle, { kafka, kind: settings?.kind ?? 'kafkajs', ...(settings ? { connection: settings.connection } : {}) });
  return handle;
}

function entryOf(client: KafkaClient): Entry {
  const entry = clients.get(client);
  if (!entry) throw new TypeError('not a Kafka client handle (make one with createKafka)');
  return entry;
}

/** The kafkajs client behind a handle. */
export function kafkajsOf(client: KafkaClient): Kafka {
  return entryOf(client).kafka;
}

/** The client the stage runtime uses with this handle, and the settings to build it from (none for an adopted kafkajs client). */
export function settingsOf(client: KafkaClient): { kind: KafkaClientKind; connection?: KafkaConnection } {
  const { kind, connection } = entryOf(client);
  return connection ? { kind, connection } : { kind };
}

/** A kafkajs admin client of a handle, connected once however often `connect` is asked, and closed once. */
export class AdminConnection {
  readonly admin: Admin;
  private connected = false;

  constructor(client: KafkaClient) {
    this.admin = kafkajsOf(client).admin();
  }

  async connect(): Promise<void> {
    if (this.connected) return;
    await this.admin.connect();
    this.connected = true;
  }

  async close(): Promise<void> {
    if (this.connected) await this.admin.disconnect();
    this.connected = false;
  }
}
