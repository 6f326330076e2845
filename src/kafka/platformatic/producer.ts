/**
 * The stage runtime's producers on @platformatic/kafka (see `../port.ts`): the transactional
 * producer that writes a hop's records and commits its input offsets with the group generation
 * (KIP-447), and the idempotent producer of progress events. From the runtime's side they behave
 * as kafkajs' `TxProducer` and `PlainProducer` (`../io.ts`) do:
 *
 * - `connect()` initialises the transactional id at once, which fences every older producer with
 *   it and aborts its open transaction. The client is told `producerId -1, epoch -1`: with its
 *   default (0/0) a new producer cannot take over an id another one used (PRODUCER_FENCED at once).
 * - A publish that fails anywhere after its transaction began is aborted, never committed: the
 *   client would commit a transaction whose offset commit the group coordinator refused, and so
 *   publish a zombie's records.
 * - Keyed records land where the Java client and sonicflow's kafkajs producers put them (murmur2
 *   made positive with `& 0x7fffffff`); the client's own default (`>>> 0`) differs for negative
 *   hashes unless the partition count is a power of two.
 * - The client's `timeout` option is the transaction timeout (InitProducerId's
 *   transaction_timeout_ms); it is also the broker-side `timeout_ms` of Produce requests (how long
 *   the leader may wait for the in-sync replicas), which a longer transaction timeout only
 *   lengthens. Each request's wait on the client is `requestTimeout` (30 s), unaffected.
 *
 * Errors reach the runtime in the port's shape (`type` = the protocol error name).
 */
import { FindCoordinatorKeyTypes, Producer, findCoordinatorV4, type Message, type MessageToProduce } from '@platformatic/kafka';
import { randomInt } from 'node:crypto';
import { SonicError } from '../../core/errors.js';
import type { KafkaConnection } from '../connection.js';
import { settingsOf, type KafkaClient } from '../handle.js';
import type { OutRecord, ProducedOffset } from '../io.js';
import { murmur2 } from '../partitioner.js';
import { PRODUCER_FENCING_ERRORS, type EventProducer, type GroupGeneration, type InputOffset, type TransactionalProducer } from '../port.js';
import { connectChecked } from './access.js';
import { baseOptions, normalizeError, protocolErrorName } from './options.js';

/** A transaction of the client (its class is not exported by name). */
type Transaction = Awaited<ReturnType<Producer['beginTransaction']>>;

/** The connection settings behind a handle; a kafkajs client adopted without them cannot build a @platformatic/kafka client. */
export function connectionOf(kafka: KafkaClient): KafkaConnection {
  const { connection } = settingsOf(kafka);
  if (!connection) throw new SonicError('CONFIG_INVALID', 'SONIC_KAFKA_CLIENT=platformatic needs a client made by createKafka (its connection settings)');
  return connection;
}

/**
 * The client's partitioner option: keyed records as the Java client places them (murmur2 & 0x7fffffff;
 * the client takes it modulo the partition count), others round robin from a random start, as
 * kafkajs' default partitioner does (the client's own sends every keyless record to partition 0
 * once a partitioner is set).
 */
/** The first TxnOffsetCommit version that carries the member id and generation (KIP-447). */
const KIP447_TXN_OFFSET_COMMIT = 3;

/**
 * Refuses a broker whose TxnOffsetCommit predates KIP-447 (Kafka < 2.5): the client would fall
 * back to a version without member and generation, and offsets would commit unfenced.
 */
export function requireKip447(apis: readonly { name: string; maxVersion: number }[]): void {
  const api = apis.find((a) => a.name === 'TxnOffsetCommit');
  if (api && api.maxVersion >= KIP447_TXN_OFFSET_COMMIT) return;
  throw new SonicError(
    'KAFKA_PROTOCOL_MISMATCH',
    `the broker's TxnOffsetCommit is ${api ? `v${api.maxVersion} at most` : 'missing'}; fencing by group generation (KIP-447) needs v${KIP447_TXN_OFFSET_COMMIT} (Kafka 2.5 or later): run this stage with SONIC_KAFKA_CLIENT=kafkajs`,
  );
}

function javaCompatiblePartitioner(): (message: MessageToProduce, key: Buffer | undefined) => number {
  const counters = new Map<string, number>();
  return (message, key) => {
    if (key !== undefined && key !== null) return murmur2(key) & 0x7fffffff;
    const next = ((counters.get(message.topic) ?? randomInt(0x7fffffff)) + 1) & 0x7fffffff;
    counters.set(message.topic, next);
    return next;
  };
}

/**
 * The back-off of the transactional producer's retried requests: the connection's (`retryDelay`)
 * but for CONCURRENT_TRANSACTIONS, which the coordinator answers the first AddPartitionsToTxn of a
 * transaction while it still writes the markers of the one before, for a few ms: 5 ms doubling
 * (5 … 640 ms over the client's 8 retries). A flat 20 ms cost a third of a bare publish loop's
 * throughput; 5 ms retries about as often.
 */
function transactionRetryDelay(initialMs: number): (client: unknown, operationId: string, attempt: number, retries: number, error: unknown) => number {
  return (_client, _operationId, attempt, _retries, error) =>
    protocolErrorName(error) === 'CONCURRENT_TRANSACTIONS' ? Math.min(5 * 2 ** Math.max(0, attempt - 1), 1000) : initialMs;
}

/** One OutRecord as the client sends it: UTF-8 key and headers, the value as is, the explicit partition when given. */
function toMessage(r: OutRecord & { topic: string }): MessageToProduce {
  return {
    topic: r.topic,
    ...(r.key === null ? {} : { key: Buffer.from(r.key, 'utf8') }),
    ...(r.value === null ? {} : { value: r.value }),
    ...(r.headers ? { headers: new Map(Object.entries(r.headers).map(([k, v]) => [Buffer.from(k, 'utf8'), Buffer.from(v, 'utf8')])) } : {}),
    ...(r.partition === undefined ? {} : { partition: r.partition }),
  };
}

/** The first offset of each topic-partition a send wrote (the client answers one offset per partition of each Produce request). */
function firstOffsets(offsets: { topic: string; partition: number; offset: bigint }[]): ProducedOffset[] {
  const first = new Map<string, ProducedOffset>();
  for (const o of offsets) {
    const key = `${o.topic}\u0000${o.partition}`;
    const seen = first.get(key);
    if (seen === undefined || o.offset < seen.baseOffset) first.set(key, { topic: o.topic, partition: o.partition, baseOffset: BigInt(o.offset) });
  }
  return [...first.values()];
}

/** Protocol errors after which the group coordinator is to be looked up again. */
const COORDINATOR_MOVED: ReadonlySet<string> = new Set(['NOT_COORDINATOR', 'COORDINATOR_NOT_AVAILABLE', 'COORDINATOR_LOAD_IN_PROGRESS']);

/** A transactional producer with a stable transactional id; see the module's comment. */
export class PkTxProducer implements TransactionalProducer {
  private readonly conn: KafkaConnection;
  private producer: Producer | undefined;
  /** The fencing error that ended this producer: every later call fails with it. */
  private fenced: Error | undefined;
  /** The group coordinator's node id, per group (a TxnOffsetCommit goes to it). */
  private readonly coordinators = new Map<string, number>();

  constructor(
    kafka: KafkaClient,
    readonly transactionalId: string,
    private readonly transactionTimeoutMs = 60_000,
  ) {
    this.conn = connectionOf(kafka);
  }

  /**
   * Connects and runs InitProducerId for the transactional id, which bumps its epoch: every older
   * producer with this id is fenced and its open transaction aborted. The client does this when a
   * transaction begins; the empty one begun here is dropped locally. May be called again after it
   * failed (a new client each time).
   */
  async connect(): Promise<this> {
    if (this.producer) return this;
    const base = baseOptions(this.conn);
    const producer = new Producer({
      ...base,
      retryDelay: transactionRetryDelay(base.retryDelay),
      idempotent: true,
      transactionalId: this.transactionalId,
      producerId: -1n,
      producerEpoch: -1,
      acks: -1,
      timeout: this.transactionTimeoutMs,
      partitioner: javaCompatiblePartitioner(),
    });
    // the client emits errors of its background work; without a listener they would end the process
    producer.on('error', () => undefined);
    try {
      await connectChecked(this.conn, async () => {
        const tx = await producer.beginTransaction();
        await tx.cancel();
      });
      requireKip447((await producer.listApis()) as { name: string; maxVersion: number }[]);
    } catch (err) {
      await producer.close(true).catch(() => undefined);
      throw err;
    }
    this.producer = producer;
    return this;
  }

  /**
   * Writes `records`, then commits the input offsets (the next offset to read of each partition)
   * for their group, then commits the transaction. With `generation` the offset commit carries its
   * member id and generation (KIP-447), and the coordinator refuses it (ILLEGAL_GENERATION,
   * UNKNOWN_MEMBER_ID, …) once that member lost its partitions; without it, generation -1 and no
   * member, as the Java client's `sendOffsetsToTransaction(offsets, groupId)`. One TxnOffsetCommit
   * per partition (the client's way), in order. Any failure aborts the transaction; a fencing
   * error (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, …) also ends this producer.
   */
  async publish(records: (OutRecord & { topic: string })[], input: InputOffset | InputOffset[], generation?: GroupGeneration): Promise<ProducedOffset[]> {
    const producer = this.usable();
    const inputs = Array.isArray(input) ? input : [input];
    let tx: Transaction;
    try {
      tx = await producer.beginTransaction();
    } catch (err) {
      throw this.failed(err);
    }
    try {
      const landed = records.length > 0 ? firstOffsets((await tx.send({ messages: records.map(toMessage) })).offsets ?? []) : [];
      for (const groupId of new Set(inputs.map((o) => o.groupId))) {
        // AddOffsetsToTxn reads nothing of the consumer but its group id
        await tx.addConsumer({ groupId } as Parameters<Transaction['addConsumer']>[0]);
      }
      for (const o of inputs) await tx.addOffset(await this.offsetMessage(o, generation));
      await tx.commit();
      return landed;
    } catch (err) {
      const aborted = await abandon(tx);
      const e = this.failed(err);
      if (!aborted) {
        // the transaction may still be open at the broker with this producer id and epoch: a next
        // transaction of this producer would add to it, and commit the failed one's records with it
        this.fenced ??= Object.assign(
          new Error(`transactional producer ${this.transactionalId}: the abort of a failed transaction was not confirmed; the producer must be replaced`),
          { type: 'INVALID_TXN_STATE' },
        );
        Object.assign(e, { abortUnconfirmed: true });
      }
      throw e;
    }
  }

  /**
   * The client commits "the position after a consumed message": a message-shaped object with the
   * offset before the next one to read and the group membership to send, which is all it reads.
   */
  private async offsetMessage(o: InputOffset, generation: GroupGeneration | undefined): Promise<Message> {
    // a generation of another group would commit these offsets unfenced: a caller's mistake
    if (generation && generation.groupId !== o.groupId) {
      throw new SonicError('INTERNAL', `offsets of group ${o.groupId} with the generation of group ${generation.groupId}`);
    }
    const member = generation;
    const consumer = {
      groupId: o.groupId,
      generationId: member?.generationId ?? -1,
      memberId: member?.memberId ?? '',
      coordinatorId: await this.coordinatorOf(o.groupId),
    };
    return { topic: o.topic, partition: o.partition, offset: BigInt(o.offset) - 1n, metadata: { consumer } } as unknown as Message;
  }

  /** The node id of `groupId`'s coordinator (FindCoordinator, remembered until an error says it moved). */
  private async coordinatorOf(groupId: string): Promise<number> {
    const known = this.coordinators.get(groupId);
    if (known !== undefined) return known;
    const producer = this.usable();
    const metadata = await producer.metadata({ topics: [] });
    const connection = await producer.connections.getFirstAvailable([...metadata.brokers.values()]);
    const { coordinators } = await findCoordinatorV4.api.async(connection, FindCoordinatorKeyTypes.GROUP, [groupId]);
    const found = coordinators.find((c) => c.key === groupId);
    if (found === undefined || found.errorCode !== 0) {
      throw Object.assign(new Error(`no coordinator for group ${groupId} (error code ${found?.errorCode ?? 'none'})`), {
        type: 'COORDINATOR_NOT_AVAILABLE',
        retriable: true,
      });
    }
    this.coordinators.set(groupId, found.nodeId);
    return found.nodeId;
  }

  /** The client, connected and not fenced. */
  private usable(): Producer {
    if (this.fenced) throw this.fenced;
    if (!this.producer) throw new SonicError('INTERNAL', `transactional producer ${this.transactionalId} is not connected`);
    return this.producer;
  }

  /** `err` in the port's shape, noting what it means for this producer: fenced for good, or a coordinator to look up again. */
  private failed(err: unknown): Error {
    const e = normalizeError(err);
    const type = (e as { type?: string }).type;
    if (type !== undefined && PRODUCER_FENCING_ERRORS.has(type)) this.fenced = e;
    if (type !== undefined && COORDINATOR_MOVED.has(type)) this.coordinators.clear();
    return e;
  }

  async close(): Promise<void> {
    const producer = this.producer;
    this.producer = undefined;
    if (producer) await producer.close(true);
  }
}

/**
 * Aborts `tx`; when the broker will not (a fenced producer, the coordinator away), drops it locally
 * so that the client can begin the next. True when the transaction is over at the broker (aborted,
 * or already completed); false when only dropped locally: it may still be open there.
 */
async function abandon(tx: Transaction): Promise<boolean> {
  if (tx.completed) return true;
  try {
    await tx.abort();
    return true;
  } catch {
    await tx.cancel().catch(() => undefined);
    return false;
  }
}

/** An idempotent, non-transactional producer (progress events). */
export class PkEventProducer implements EventProducer {
  private readonly conn: KafkaConnection;
  private producer: Producer | undefined;

  constructor(kafka: KafkaClient) {
    this.conn = connectionOf(kafka);
  }

  /** Connects and gets a producer id (InitProducerId), as kafkajs' idempotent producer does; may be called again after it failed. */
  async connect(): Promise<this> {
    if (this.producer) return this;
    const producer = new Producer({
      ...baseOptions(this.conn),
      idempotent: true,
      producerId: -1n,
      producerEpoch: -1,
      acks: -1,
      partitioner: javaCompatiblePartitioner(),
    });
    producer.on('error', () => undefined);
    try {
      await connectChecked(this.conn, () => producer.initIdempotentProducer({}));
    } catch (err) {
      await producer.close(true).catch(() => undefined);
      throw err;
    }
    this.producer = producer;
    return this;
  }

  async send(topic: string, records: OutRecord[]): Promise<void> {
    await this.sendMany(records.map((r) => ({ ...r, topic })));
  }

  /** Sends records to several topics, one request per broker. */
  async sendMany(records: (OutRecord & { topic: string })[]): Promise<void> {
    if (!this.producer) throw new SonicError('INTERNAL', 'event producer is not connected');
    if (records.length === 0) return;
    try {
      await this.producer.send({ messages: records.map(toMessage) });
    } catch (err) {
      throw normalizeError(err);
    }
  }

  async close(): Promise<void> {
    const producer = this.producer;
    this.producer = undefined;
    if (producer) await producer.close(true);
  }
}
