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

declare const opaque: unique symbol;

/** A Kafka client made by `createKafka`: pass it to `src/kafka`'s functions and classes. */
export interface KafkaClient {
  readonly [opaque]: 'KafkaClient';
}

const clients = new WeakMap<KafkaClient, Kafka>();

/** A handle for a kafkajs client built elsewhere (tests and benchmarks that set kafkajs options of their own). */
export function adoptKafkajs(kafka: Kafka): KafkaClient {
  const handle = Object.freeze({}) as KafkaClient;
  clients.set(handle, kafka);
  return handle;
}

/** The kafkajs client behind a handle. */
export function kafkajsOf(client: KafkaClient): Kafka {
  const kafka = clients.get(client);
  if (!kafka) throw new TypeError('not a Kafka client handle (make one with createKafka)');
  return kafka;
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
