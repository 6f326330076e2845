/**
 * Producing and reading: the idempotent producer of progress events (`PlainProducer`, tests too),
 * the transactional producer of a stage hop and of DLQ replays (`TxProducer`), a throw-away reader
 * for tools and tests (`readTopic`) and the follower behind the API's status view (`TopicTail`).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Consumer, IHeaders, Producer, Transaction } from 'kafkajs';
import { Backoff, retry } from '../core/retry.js';
import { PRODUCER_RETRY, createPartitioner } from './client.js';
import { SonicError } from '../core/errors.js';
import { authorizationFailure } from './acls.js';
import { kafkajsOf, type KafkaClient } from './handle.js';
import { OffsetReader } from './lag.js';

export interface OutRecord {
  key: string | null;
  value: Buffer | null;
  headers?: Record<string, string>;
  partition?: number;
}

export interface InRecord {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
  timestamp: number;
}

/** Where a transaction's records of one topic-partition landed: the offset of the first of them (the others follow it). */
export interface ProducedOffset {
  topic: string;
  partition: number;
  baseOffset: bigint;
}

/** Record headers as a client reads them: each value a Buffer, a string, or several of them. */
export type RawHeaders = Record<string, Buffer | string | (Buffer | string)[] | undefined>;

/** A fetched record as a client reads it. */
export interface RawMessage {
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers?: RawHeaders;
  timestamp: string;
}

/** Decodes header values (Buffer | string | arrays) to UTF-8 strings; the last value wins. */
export function headersToStrings(h: RawHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    const last = Array.isArray(v) ? v[v.length - 1] : v;
    if (last !== undefined) out[k] = Buffer.isBuffer(last) ? last.toString('utf8') : String(last);
  }
  return out;
}

/** A fetched message of a batch as an InRecord (UTF-8 key, string headers). */
export function toInRecord(topic: string, partition: number, m: RawMessage): InRecord {
  return {
    topic,
    partition,
    offset: m.offset,
    key: m.key ? m.key.toString('utf8') : null,
    value: m.value,
    headers: headersToStrings(m.headers),
    timestamp: Number(m.timestamp),
  };
}

function toMessages(records: OutRecord[]): { key: string | null; value: Buffer | null; headers?: IHeaders; partition?: number }[] {
  return records.map((r) => ({
    key: r.key,
    value: r.value,
    ...(r.headers ? { headers: r.headers } : {}),
    ...(r.partition === undefined ? {} : { partition: r.partition }),
  }));
}

/** Records for several topics grouped as kafkajs' sendBatch takes them (one request per broker). */
function topicMessages(records: (OutRecord & { topic: string })[]): { topic: string; messages: ReturnType<typeof toMessages> }[] {
  const byTopic = new Map<string, OutRecord[]>();
  for (const r of records) byTopic.set(r.topic, [...(byTopic.get(r.topic) ?? []), r]);
  return [...byTopic].map(([topic, recs]) => ({ topic, messages: toMessages(recs) }));
}

/** An idempotent (non-transactional) producer. */
export class PlainProducer {
  private readonly producer: Producer;

  constructor(kafka: KafkaClient) {
    this.producer = kafkajsOf(kafka).producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner,
      retry: PRODUCER_RETRY,
    });
  }

  async connect(): Promise<this> {
    await this.producer.connect();
    return this;
  }

  async send(topic: string, records: OutRecord[]): Promise<void> {
    await this.producer.send({ topic, acks: -1, messages: toMessages(records) });
  }

  /** Sends records to several topics in one request per broker. */
  async sendMany(records: (OutRecord & { topic: string })[]): Promise<void> {
    await this.producer.sendBatch({ acks: -1, topicMessages: topicMessages(records) });
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }
}

/**
 * Retries `fn` while the transaction coordinator answers CONCURRENT_TRANSACTIONS, which it does
 * while it still writes the markers of this producer's previous transaction. The Java client
 * retries this error; kafkajs does not for AddOffsetsToTxn (tulios/kafkajs#1315, #430).
 */
function retryConcurrentTransactions<T>(fn: () => Promise<T>, deadlineMs = 10_000): Promise<T> {
  // 10, 20, 40 ... 500 ms: the markers are usually written within the first few
  return retry(() => fn(), {
    initialMs: 10,
    maxMs: 500,
    jitter: 'none',
    deadlineMs,
    retryIf: (err) => (err as { type?: string }).type === 'CONCURRENT_TRANSACTIONS',
  });
}

/** A transactional producer with a stable transactional id (the new owner of the id fences the old one). */
export class TxProducer {
  private readonly producer: Producer;

  constructor(
    kafka: KafkaClient,
    readonly transactionalId: string,
    transactionTimeoutMs = 60_000,
  ) {
    this.producer = kafkajsOf(kafka).producer({
      transactionalId,
      idempotent: true,
      maxInFlightRequests: 1,
      transactionTimeout: transactionTimeoutMs,
      allowAutoTopicCreation: false,
      createPartitioner,
      retry: PRODUCER_RETRY,
    });
  }

  /**
   * Connects and runs the transactional InitProducerId, which bumps the epoch of the id and so
   * fences every older producer with it (and aborts its open transaction). kafkajs would only do
   * this lazily at the first transaction; an empty transaction forces it now (its abort is local).
   */
  async connect(): Promise<this> {
    try {
      await this.producer.connect();
      const txn = await this.producer.transaction();
      await txn.abort();
    } catch (err) {
      // a producer that could not start holds no connection
      await this.producer.disconnect().catch(() => undefined);
      throw err;
    }
    return this;
  }

  /**
   * Runs `fill` inside one transaction and commits it; aborts when `fill` throws or `commit` is
   * (or, asked right before the commit, answers) false. `fill` may send to one topic or, with
   * `sendMany`, to several in one request. `offsets`, when given, are committed for `groupId` in
   * the same transaction.
   */
  async inTransaction(
    fill: (
      send: (topic: string, records: OutRecord[]) => Promise<void>,
      sendMany: (records: (OutRecord & { topic: string })[]) => Promise<void>,
    ) => Promise<void>,
    opts: { commit?: boolean | (() => boolean); offsets?: { groupId: string; topic: string; partition: number; offset: string }[] } = {},
  ): Promise<void> {
    const txn: Transaction = await this.producer.transaction();
    try {
      await fill(
        async (topic, records) => {
          await txn.send({ topic, acks: -1, messages: toMessages(records) });
        },
        async (records) => {
          await txn.sendBatch({ acks: -1, topicMessages: topicMessages(records) });
        },
      );
      for (const o of opts.offsets ?? []) {
        await retryConcurrentTransactions(() =>
          txn.sendOffsets({
            consumerGroupId: o.groupId,
            topics: [{ topic: o.topic, partitions: [{ partition: o.partition, offset: o.offset }] }],
          }),
        );
      }
      const commit = typeof opts.commit === 'function' ? opts.commit() : opts.commit !== false;
      if (!commit) await txn.abort();
      else await txn.commit();
    } catch (err) {
      if (txn.isActive()) await txn.abort().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Writes `records` and commits `offset` (the next offset to read) of the input partition (or of
   * each input partition, one group) for `groupId`, all in one transaction: either everything becomes visible or nothing does. Returns
   * where the records landed, per topic-partition.
   */
  async publish(
    records: (OutRecord & { topic: string })[],
    input: { groupId: string; topic: string; partition: number; offset: string } | { groupId: string; topic: string; partition: number; offset: string }[],
  ): Promise<ProducedOffset[]> {
    const inputs = Array.isArray(input) ? input : [input];
    const txn: Transaction = await this.producer.transaction();
    try {
      const landed = records.length > 0 ? await txn.sendBatch({ acks: -1, topicMessages: topicMessages(records) }) : [];
      // one group per call; its partitions together in one request
      const byTopic = new Map<string, { partition: number; offset: string }[]>();
      for (const o of inputs) byTopic.set(o.topic, [...(byTopic.get(o.topic) ?? []), { partition: o.partition, offset: o.offset }]);
      if (inputs.length > 0) {
        await retryConcurrentTransactions(() =>
          txn.sendOffsets({
            consumerGroupId: inputs[0]!.groupId,
            topics: [...byTopic].map(([topic, partitions]) => ({ topic, partitions })),
          }),
        );
      }
      await txn.commit();
      return landed.flatMap((m) => (m.baseOffset === undefined ? [] : [{ topic: m.topicName, partition: m.partition, baseOffset: BigInt(m.baseOffset) }]));
    } catch (err) {
      if (txn.isActive()) await txn.abort().catch(() => undefined);
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }
}

export interface ReadOptions {
  /** `read_committed` (default) or `read_uncommitted`. */
  isolation?: 'read_committed' | 'read_uncommitted';
  /** Stop after this many records. */
  limit?: number;
  /** Stop when no record arrived for this long, ms (default 3000). */
  idleMs?: number;
  /** Give up after this long in all, ms (default 30000). */
  timeoutMs?: number;
  /** The group to read with; default: a throw-away one, `<groupPrefix>.<pid>.<time>.<random>`. */
  groupId?: string;
  /**
   * The start of the throw-away group: an operator's tool gives its deployment's
   * (`readerGroupPrefix` of src/runtime/names.ts, which its principal may READ, PREFIXED); default
   * `sonicflow-read`, for tests and tools run as a super user.
   */
  groupPrefix?: string;
}

/**
 * Reads a topic from the beginning with a throw-away consumer group and returns what it saw.
 * Ends at `limit` records, after `idleMs` without records, or at `timeoutMs`.
 */
export async function readTopic(kafka: KafkaClient, topic: string, opts: ReadOptions = {}): Promise<InRecord[]> {
  const consumer = kafkajsOf(kafka).consumer({
    groupId: opts.groupId ?? `${opts.groupPrefix ?? 'sonicflow-read'}.${process.pid}.${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 8)}`,
    readUncommitted: opts.isolation === 'read_uncommitted',
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 200,
  });
  const out: InRecord[] = [];
  const idleMs = opts.idleMs ?? 3000;
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let last = Date.now();
  let joined = false;
  // the idle clock starts once the group is joined: joining alone can take seconds
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = true;
    last = Date.now();
  });
  // a refusal by the authorizer would otherwise look like an empty topic after the timeout
  let refused: unknown;
  consumer.on(consumer.events.CRASH, (e) => {
    if (authorizationFailure(e.payload.error)) refused = e.payload.error;
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic: t, partition, message }) => {
        last = Date.now();
        out.push(toInRecord(t, partition, message));
      },
    });
    while (Date.now() < deadline && (!joined || Date.now() - last < idleMs) && (opts.limit === undefined || out.length < opts.limit)) {
      if (refused) {
        throw new SonicError(
          'KAFKA_NOT_AUTHORIZED',
          `not authorized to read topic ${topic} through a consumer group of its own (the broker answered ${authorizationFailure(refused)})`,
          { cause: refused },
        );
      }
      await delay(50);
    }
  } finally {
    await consumer.disconnect();
  }
  return opts.limit === undefined ? out : out.slice(0, opts.limit);
}

/** What kafkajs itself treats as unrecoverable (its `retry` module): programming errors, not outages; a restart would only repeat them. */
export const CONSUMER_BUGS: ReadonlySet<string> = new Set(['TypeError', 'RangeError', 'ReferenceError', 'SyntaxError']);

/** What a {@link TopicTail} delivers: the records of one fetched batch and the position after it. */
export interface TailBatch {
  partition: number;
  /** The batch's records, in offset order (none when it held only transaction markers or aborted records). */
  records: InRecord[];
  /** The next offset to read of the partition: past the batch, its markers included. */
  next: bigint;
}

/**
 * Follows a topic with a private consumer group that commits nothing: from the offsets it is given
 * (a materialised view's checkpoint; each partition is sought there when the group is joined,
 * before its first fetch) and from the beginning elsewhere, `read_committed`. `caughtUp` resolves after the first fetch that brings
 * nothing new, i.e. once the follower has read what the topic held when it started. Every batch
 * is delivered with the position after it, also a batch of transaction markers only, so a
 * follower can tell how far it has read (see {@link endOffsets}).
 */
export class TopicTail {
  private readonly consumer: Consumer;
  private readonly groupId: string;
  private reader: OffsetReader | undefined;
  readonly caughtUp: Promise<void>;
  private markCaughtUp!: () => void;
  /**
   * Settles when the follower stopped for good: a refusal by the broker's authorizer
   * (KAFKA_NOT_AUTHORIZED naming the topic) or a bug (BROKER_UNAVAILABLE). When kafkajs gives up
   * for any other reason (the broker or the group coordinator away longer than its retries) the
   * follower starts again after a backoff and this does not settle.
   */
  readonly failed: Promise<SonicError>;
  private fail!: (err: SonicError) => void;
  private readonly stopping = new AbortController();
  private readonly restarts = new Backoff({ initialMs: 200, maxMs: 5000, jitter: 'decorrelated' });
  private restarting: Promise<void> = Promise.resolve();
  private runConfig: Parameters<Consumer['run']>[0] | undefined;
  /** Told when kafkajs gave up and the follower starts its consumer again after `waitMs`. */
  onRestart?: (err: Error, waitMs: number) => void;

  constructor(
    private readonly kafka: KafkaClient,
    readonly topic: string,
    groupPrefix: string,
  ) {
    this.groupId = `${groupPrefix}.${process.pid}.${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 6)}`;
    this.consumer = kafkajsOf(kafka).consumer({
      groupId: this.groupId,
      readUncommitted: false,
      maxWaitTimeInMs: 250,
      allowAutoTopicCreation: false,
    });
    this.caughtUp = new Promise((r) => (this.markCaughtUp = r));
    this.failed = new Promise((r) => (this.fail = r));
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      const refused = authorizationFailure(payload.error);
      if (refused) {
        this.fail(
          new SonicError(
            'KAFKA_NOT_AUTHORIZED',
            `not authorized to read topic ${this.topic} through a consumer group of its own (the broker answered ${refused})`,
            {
              cause: payload.error,
              details: { topic: this.topic, type: refused },
            },
          ),
        );
      } else if (CONSUMER_BUGS.has(payload.error.name)) {
        this.fail(new SonicError('BROKER_UNAVAILABLE', `the follower of topic ${this.topic} stopped: ${payload.error.message}`, { cause: payload.error }));
      } else if (!payload.restart) {
        // kafkajs gave up (a coordinator not elected yet on a cluster that just started, a broker
        // away longer than its retries): the follower waits and starts again, as a stage's consumer does
        this.restarting = this.restart(payload.error);
      }
    });
  }

  private async restart(err: Error): Promise<void> {
    const wait = this.restarts.next();
    this.onRestart?.(err, wait);
    try {
      await delay(wait, undefined, { signal: this.stopping.signal });
      await this.consumer.connect();
      if (this.stopping.signal.aborted || !this.runConfig) return;
      await this.consumer.run(this.runConfig);
    } catch (e) {
      if (this.stopping.signal.aborted) return;
      // connecting failed too: the next attempt waits longer
      this.restarting = this.restart(e as Error);
    }
  }

  /**
   * Per partition: the log start (`low`; a partition whose end is there holds nothing to read),
   * the last stable offset (`end`: what a `read_committed` reader reaches today) and the high
   * watermark (`high`: past every record written before this call, committed or not). A commit is
   * acknowledged before its markers are written, so a record committed a moment ago may still lie
   * past `end`; a follower whose position reaches `high` has read it (the markers of every
   * transaction below `high` are written by then, and the position passes them).
   */
  async endOffsets(): Promise<Map<number, { low: bigint; end: bigint; high: bigint }>> {
    this.reader ??= new OffsetReader(this.kafka);
    const reader = this.reader;
    // a leader that moved (or a topic made a moment ago) answers with a retriable error
    const parts = await retry(() => reader.offsets([this.topic]), {
      initialMs: 50,
      maxMs: 1000,
      deadlineMs: 15_000,
      retryIf: (err) => (err as { retriable?: boolean }).retriable === true || (err as { type?: string }).type === undefined,
    });
    return new Map(parts.map((p) => [p.partition, { low: p.earliest, end: p.stable, high: p.end }]));
  }

  /** Starts following; `from` holds the next offset to read of partitions read before (a checkpoint). */
  /**
   * Starts following; `from` holds the next offset to read of partitions read before (a
   * checkpoint). A promise `onBatch` returns for a batch of records holds the next fetch of that
   * partition back until it settles: a follower slower than the broker does not pile batches up.
   */
  async start(onBatch: (batch: TailBatch) => void | Promise<void>, from: ReadonlyMap<number, bigint> = new Map()): Promise<void> {
    /** Next offset to read per partition: the checkpoint, then past each delivered batch. */
    const next = new Map(from);
    const deliver = (batch: TailBatch): void | Promise<void> => {
      next.set(batch.partition, batch.next);
      return onBatch(batch);
    };
    let fetches = 0;
    let sawRecords = false;
    // the group commits nothing: at every join (the first, or after a rebalance) each partition
    // is sought to where the follower is, before the first fetch; the rest start at the beginning
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => {
      fetches = 0;
      for (const partition of payload.memberAssignment[this.topic] ?? []) {
        const offset = next.get(partition);
        if (offset !== undefined) this.consumer.seek({ topic: this.topic, partition, offset: offset.toString() });
      }
    });
    // FETCH fires before the batches of that fetch are handled: `sawRecords` at fetch n tells
    // whether fetch n-1 brought anything
    this.consumer.on(this.consumer.events.FETCH, () => {
      fetches += 1;
      if (fetches >= 2 && !sawRecords) this.markCaughtUp();
      sawRecords = false;
    });
    // a batch of markers or aborted records only never reaches eachBatch; its end still moves the position
    this.consumer.on(this.consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (payload.batchSize === 0 && payload.topic === this.topic)
        deliver({ partition: payload.partition, records: [], next: BigInt(payload.lastOffset) + 1n });
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topic, fromBeginning: true });
    this.runConfig = {
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        this.restarts.reset();
        if (batch.messages.length > 0) sawRecords = true;
        await deliver({
          partition: batch.partition,
          records: batch.messages.map((m) => toInRecord(batch.topic, batch.partition, m)),
          next: BigInt(batch.lastOffset()) + 1n,
        });
      },
    };
    await this.consumer.run(this.runConfig);
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.restarting;
    await this.consumer.disconnect();
    const reader = this.reader;
    this.reader = undefined;
    await reader?.close().catch(() => undefined);
  }
}
