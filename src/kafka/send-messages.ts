/**
 * kafkajs's produce path, mended for a broker that fails mid-send. kafkajs 2.2.4's
 * `producer/sendMessages.js` sends one request per partition leader and, when any of them fails,
 * retries the whole send while remembering answers per *broker*:
 *
 * - **lost records:** a partition whose leader moved (its old leader died or answered
 *   NOT_LEADER) to a broker that had already answered this send is never sent again, and the
 *   send resolves as if it had been written. In a transaction the input offset commits with it:
 *   the records are gone (tulios/kafkajs#1303, the fix proposed in tulios/kafkajs#1798);
 * - **doubled records:** the retry starts as soon as one request fails, while requests to the
 *   other brokers may still wait for their acks (a leader waits for its in-sync replicas, for
 *   seconds when one of them just died). A broker with no answer yet is sent the same records
 *   again, under the next sequence numbers, so the broker cannot see them as a retry: both
 *   copies are written and commit in the same transaction.
 *
 * Here an attempt waits until every request it started has settled, and what is done is tracked
 * per *partition*: a retry sends exactly the partitions without an acknowledgement, to their
 * leaders now, with the sequence numbers their failed request had (so a request that was written
 * although its answer was lost is recognised by the broker as a duplicate). Partitions are chosen
 * once per send (a retry keeps every record in its partition). Everything else follows kafkajs.
 *
 * kafkajs binds `sendMessages` when its producer module loads, so this replaces the module in
 * kafkajs's CommonJS cache before that: `kafkajs.ts` imports this module first, and this module
 * throws when kafkajs's producer was loaded without it. kafkajs is pinned to 2.2.4.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A record as kafkajs's producer passes it on. */
interface Message {
  partition?: number;
  [field: string]: unknown;
}
interface TopicMessages {
  topic: string;
  messages: Message[];
}
interface PartitionAnswer {
  topicName: string;
  partition: number;
  errorCode: number;
  [field: string]: unknown;
}
interface BrokerLike {
  nodeId: number;
  produce(request: Record<string, unknown>): Promise<{ topics: { topicName: string; partitions: { partition: number; errorCode: number }[] }[] }>;
}
interface ClusterLike {
  targetTopics: Set<string>;
  refreshMetadataIfNecessary(): Promise<void>;
  refreshMetadata(): Promise<void>;
  addMultipleTargetTopics(topics: string[]): Promise<void>;
  findTopicPartitionMetadata(topic: string): { partitionId: number; leader: number }[];
  findLeaderForPartitions(topic: string, partitions: number[]): Record<string, number[]>;
  findBroker(q: { nodeId: string | number }): Promise<BrokerLike>;
  removeBroker(q: { host: string; port: number }): void;
  isConnected(): boolean;
  connect(): Promise<void>;
}
interface EosManagerLike {
  isTransactional(): boolean;
  getTransactionalId(): string;
  getProducerId(): number;
  getProducerEpoch(): number;
  getSequence(topic: string, partition: number): number;
  updateSequence(topic: string, partition: number, increment: number): void;
  addPartitionsToTransaction(topicData: { topic: string; partitions: { partition: number }[] }[]): Promise<void>;
  acquireBrokerLock(broker: BrokerLike): Promise<void>;
  releaseBrokerLock(broker: BrokerLike): void | Promise<void>;
}
type Partitioner = (a: { topic: string; partitionMetadata: unknown; message: Message }) => number;
type Retrier = <T>(fn: (bail: (err: unknown) => void, retryCount: number, retryTime: number) => Promise<T>) => Promise<T>;
interface Logger {
  debug(message: string, extra?: object): void;
  error(message: string, extra?: object): void;
}
export interface SendMessagesDeps {
  logger: Logger;
  cluster: ClusterLike;
  partitioner: Partitioner;
  eosManager: EosManagerLike;
  retrier: Retrier;
}
export interface SendRequest {
  acks: number;
  timeout: number;
  compression: unknown;
  topicMessages: TopicMessages[];
}

interface KafkajsError extends Error {
  type?: string;
  retriable?: boolean;
  host?: string;
  port?: number;
}

const STALE_METADATA = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'LEADER_NOT_AVAILABLE', 'NOT_LEADER_FOR_PARTITION']);

/** The factory kafkajs's `messageProducer` calls in place of its own `sendMessages`. */
export function createSendMessages({ logger, cluster, partitioner, eosManager, retrier }: SendMessagesDeps) {
  const { KafkaJSMetadataNotLoaded } = require('kafkajs/src/errors') as { KafkaJSMetadataNotLoaded: new (m: string) => Error };
  return async ({ acks, timeout, compression, topicMessages }: SendRequest): Promise<PartitionAnswer[]> => {
    /** Records by topic and partition, chosen at the first attempt that had metadata. */
    let placed: Map<string, Map<number, Message[]>> | undefined;
    /** Acknowledged partitions (`topic\0partition`) and their answers. */
    const acked = new Map<string, PartitionAnswer>();

    const place = (): Map<string, Map<number, Message[]>> => {
      const out = new Map<string, Map<number, Message[]>>();
      for (const { topic, messages } of topicMessages) {
        const partitionMetadata = cluster.findTopicPartitionMetadata(topic);
        if (partitionMetadata.length === 0) {
          logger.debug('Producing to topic without metadata', { topic, targetTopics: Array.from(cluster.targetTopics) });
          throw new KafkaJSMetadataNotLoaded('Producing to topic without metadata');
        }
        const byPartition = out.get(topic) ?? new Map<number, Message[]>();
        for (const message of messages) {
          const p = partitioner({ topic, partitionMetadata, message });
          const list = byPartition.get(p);
          if (list) list.push(message);
          else byPartition.set(p, [message]);
        }
        out.set(topic, byPartition);
      }
      return out;
    };

    /** One request to `broker` for the partitions it leads now that are not acknowledged yet. */
    const send = async (broker: BrokerLike, partitions: { topic: string; partition: number; messages: Message[] }[]): Promise<void> => {
      const topicData = [...new Set(partitions.map((p) => p.topic))].map((topic) => ({
        topic,
        partitions: partitions.filter((p) => p.topic === topic).map(({ partition, messages }) => ({ partition, messages }) as Record<string, unknown>),
      }));
      await eosManager.acquireBrokerLock(broker);
      try {
        if (eosManager.isTransactional()) await eosManager.addPartitionsToTransaction(topicData as { topic: string; partitions: { partition: number }[] }[]);
        for (const t of topicData)
          for (const entry of t.partitions) {
            const partition = entry.partition as number;
            entry.firstSequence = eosManager.getSequence(t.topic, partition);
            eosManager.updateSequence(t.topic, partition, (entry.messages as Message[]).length);
          }
        let response: Awaited<ReturnType<BrokerLike['produce']>>;
        try {
          response = await broker.produce({
            transactionalId: eosManager.isTransactional() ? eosManager.getTransactionalId() : undefined,
            producerId: eosManager.getProducerId(),
            producerEpoch: eosManager.getProducerEpoch(),
            acks,
            timeout,
            compression,
            topicData,
          });
        } catch (err) {
          // the same records go again under the same sequence numbers: a broker that wrote them sees a retry
          for (const t of topicData)
            for (const entry of t.partitions) eosManager.updateSequence(t.topic, entry.partition as number, -(entry.messages as Message[]).length);
          throw err;
        }
        if (acks === 0) {
          for (const p of partitions) acked.set(`${p.topic}\0${p.partition}`, { topicName: p.topic, partition: p.partition, errorCode: 0 });
          return;
        }
        for (const { topicName, partitions: answers } of response.topics)
          for (const answer of answers) acked.set(`${topicName}\0${answer.partition}`, { topicName, ...answer });
      } finally {
        await eosManager.releaseBrokerLock(broker);
      }
    };

    return retrier(async (bail, retryCount, retryTime) => {
      await cluster.addMultipleTargetTopics(topicMessages.map(({ topic }) => topic));
      try {
        await cluster.refreshMetadataIfNecessary();
        placed ??= place();
        // the partitions still to send, by their leader now
        const byLeader = new Map<number, { topic: string; partition: number; messages: Message[] }[]>();
        for (const [topic, byPartition] of placed) {
          const pending = [...byPartition.keys()].filter((p) => !acked.has(`${topic}\0${p}`));
          if (pending.length === 0) continue;
          const leaders = cluster.findLeaderForPartitions(topic, pending);
          // a partition the metadata does not place is not sent, so the send must not resolve
          const led = new Set(Object.values(leaders).flat().map(Number));
          if (pending.some((p) => !led.has(p))) throw new KafkaJSMetadataNotLoaded(`no leader known for a partition of ${topic}`);
          for (const [nodeId, partitions] of Object.entries(leaders)) {
            const list = byLeader.get(Number(nodeId)) ?? [];
            for (const partition of partitions) list.push({ topic, partition: Number(partition), messages: byPartition.get(Number(partition))! });
            byLeader.set(Number(nodeId), list);
          }
        }
        const requests = [...byLeader].map(async ([nodeId, partitions]) => send(await cluster.findBroker({ nodeId }), partitions));
        // every request settles before a retry: none may still be on its way when the next one goes
        const failed = (await Promise.allSettled(requests)).find((r) => r.status === 'rejected');
        if (failed) throw failed.reason;
        const answers: PartitionAnswer[] = [];
        for (const [topic, byPartition] of placed) for (const p of byPartition.keys()) answers.push(acked.get(`${topic}\0${p}`)!);
        return answers;
      } catch (caught) {
        const e = caught as KafkajsError;
        if (e.name === 'KafkaJSConnectionClosedError' && e.host !== undefined && e.port !== undefined) cluster.removeBroker({ host: e.host, port: e.port });
        if (!cluster.isConnected()) {
          logger.debug(`Cluster has disconnected, reconnecting: ${e.message}`, { retryCount, retryTime });
          await cluster.connect();
          await cluster.refreshMetadata();
          throw e;
        }
        if (
          STALE_METADATA.has(e.type ?? '') ||
          e.name === 'KafkaJSMetadataNotLoaded' ||
          e.name === 'KafkaJSConnectionError' ||
          e.name === 'KafkaJSConnectionClosedError' ||
          (e.name === 'KafkaJSProtocolError' && e.retriable === true)
        ) {
          logger.error(`Failed to send messages: ${e.message}`, { retryCount, retryTime });
          await cluster.refreshMetadata();
          throw e;
        }
        logger.error(e.message, { retryCount, retryTime });
        if (e.retriable === true) throw e;
        bail(e);
        return [];
      }
    });
  };
}

const SEND_MESSAGES = 'kafkajs/src/producer/sendMessages.js';
const MESSAGE_PRODUCER = 'kafkajs/src/producer/messageProducer.js';

/** kafkajs's own `sendMessages` factory (set once installed; tests compare against it). */
export let kafkajsSendMessages: ((deps: SendMessagesDeps) => (request: SendRequest) => Promise<PartitionAnswer[]>) | undefined;

/**
 * Puts {@link createSendMessages} in place of kafkajs's own, before kafkajs's producer binds it.
 * Throws when kafkajs's producer was loaded first (it would keep the old one).
 */
export function installSendMessages(): void {
  const path = require.resolve(SEND_MESSAGES);
  const cached = require.cache[path];
  if (cached?.exports === createSendMessages) return;
  if (require.cache[require.resolve(MESSAGE_PRODUCER)])
    throw new Error('kafkajs was loaded before src/kafka/send-messages.ts: import kafkajs through src/kafka/kafkajs.ts');
  // load the original (and the modules it needs), then replace what it exports
  kafkajsSendMessages = require(SEND_MESSAGES) as typeof kafkajsSendMessages;
  require.cache[path]!.exports = createSendMessages;
}

installSendMessages();
