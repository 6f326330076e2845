/**
 * Reads one partition of a topic between two offsets, read_committed, without a consumer group:
 * what a stage needs to restore a state store from its changelog (only the partitions it was
 * assigned, from a local checkpoint to the end). kafkajs has no manual `assign`, and a throw-away
 * group would cost a join (and read every partition of the topic); this reader sends ListOffsets
 * and Fetch requests to the partition's leader itself, through kafkajs' private cluster factory
 * (the same one `lag.ts` uses; kafkajs is pinned to 2.2.4), and drops what a read_committed
 * consumer would not see: records of aborted transactions and transaction markers.
 *
 * An empty changelog, the common start, costs one ListOffsets request.
 */
import { SonicError } from '../core/errors.js';
import { retry, sleep } from '../core/retry.js';
import type { KafkaClient } from './handle.js';
import { toInRecord, type InRecord, type RawHeaders } from './io.js';
import { ISOLATION, RETRIABLE_PARTITION_ERRORS, privateCluster } from './private-cluster.js';

/** A fetched record as kafkajs' record batch decoder returns it. */
export interface FetchedMessage {
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers?: RawHeaders;
  timestamp: string;
  isControlRecord?: boolean;
  batchContext?: { producerId: string; inTransaction: boolean };
}

export interface FetchedPartition {
  partition: number;
  highWatermark: string;
  lastStableOffset: string;
  abortedTransactions?: { producerId: string; firstOffset: string }[];
  messages: FetchedMessage[];
}

export interface InternalBroker {
  fetch(request: {
    isolationLevel: number;
    maxWaitTime: number;
    minBytes: number;
    maxBytes: number;
    topics: { topic: string; partitions: { partition: number; fetchOffset: string; maxBytes: number }[] }[];
  }): Promise<{ responses: { topicName: string; partitions: FetchedPartition[] }[] }>;
}

/** The parts of kafkajs' (private) Cluster this reader uses (a test may hand in its own). */
export interface InternalCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  addTargetTopic(topic: string): Promise<void>;
  refreshMetadata(): Promise<void>;
  findLeaderForPartitions(topic: string, partitions: number[]): Record<string, number[]>;
  findBroker(node: { nodeId: string }): Promise<InternalBroker>;
  fetchTopicsOffset(
    topics: { topic: string; fromBeginning: boolean; partitions: { partition: number }[] }[],
  ): Promise<{ topic: string; partitions: { partition: number; offset: string }[] }[]>;
}

/** Records of aborted transactions and control records dropped, as a read_committed consumer sees a fetch. */
export function committedMessages(messages: FetchedMessage[], aborted: { producerId: string; firstOffset: string }[] | undefined): FetchedMessage[] {
  const pending = [...(aborted ?? [])].sort((a, b) => (BigInt(a.firstOffset) < BigInt(b.firstOffset) ? -1 : 1));
  const open = new Set<string>();
  const out: FetchedMessage[] = [];
  for (const m of messages) {
    while (pending.length > 0 && BigInt(m.offset) >= BigInt(pending[0]!.firstOffset)) open.add(pending.shift()!.producerId);
    const producer = m.batchContext?.producerId ?? '';
    if (m.isControlRecord) {
      // an abort (or commit) marker ends that producer's transaction
      open.delete(producer);
      continue;
    }
    if (m.batchContext?.inTransaction && open.has(producer)) continue;
    out.push(m);
  }
  return out;
}

export interface PartitionRange {
  /** The first offset still in the log. */
  start: bigint;
  /** The last stable offset: the end a read_committed reader sees. */
  end: bigint;
}

export class PartitionReader {
  private readonly cluster: InternalCluster;
  private connecting: Promise<void> | undefined;
  private readonly known = new Set<string>();

  constructor(client: KafkaClient, own?: InternalCluster) {
    const cluster = own ?? privateCluster<InternalCluster>(client, ISOLATION.READ_COMMITTED);
    if (!cluster) throw new Error('kafkajs no longer offers its cluster factory; the partition reader needs kafkajs 2.2.4');
    this.cluster = cluster;
  }

  private async ready(topic: string): Promise<void> {
    this.connecting ??= this.cluster.connect().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    await this.connecting;
    if (!this.known.has(topic)) {
      await this.cluster.addTargetTopic(topic);
      this.known.add(topic);
    }
  }

  /** Retries what a metadata refresh mends, five tries in about a second. */
  private withRetry<T>(fn: () => Promise<T>): Promise<T> {
    return retry(
      async (attempt) => {
        if (attempt > 1) await this.cluster.refreshMetadata().catch(() => undefined);
        return fn();
      },
      {
        initialMs: 100,
        maxMs: 400,
        jitter: 'none',
        maxAttempts: 5,
        retryIf: (err) => RETRIABLE_PARTITION_ERRORS.has((err as { type?: string }).type ?? '') || (err as Error).name === 'KafkaJSConnectionError',
      },
    );
  }

  /** The log start and the last stable offset of `topic`/`partition`. */
  async range(topic: string, partition: number): Promise<PartitionRange> {
    await this.ready(topic);
    const ask = async (fromBeginning: boolean): Promise<bigint> => {
      const res = await this.cluster.fetchTopicsOffset([{ topic, fromBeginning, partitions: [{ partition }] }]);
      const offset = res.find((t) => t.topic === topic)?.partitions.find((p) => p.partition === partition)?.offset;
      if (offset === undefined) throw Object.assign(new Error(`no offsets for ${topic}:${partition}`), { type: 'UNKNOWN_TOPIC_OR_PARTITION' });
      return BigInt(offset);
    };
    return this.withRetry(async () => {
      const [start, end] = await Promise.all([ask(true), ask(false)]);
      return { start, end };
    });
  }

  /**
   * Reads `topic`/`partition` from `from` up to `to` (exclusive; the last stable offset read with
   * {@link range}), read_committed, handing each fetched chunk of committed records to `onRecords`
   * in offset order. Returns `to` once everything in between was read or is known to be gone.
   *
   * A fetch that brings nothing from the offset asked for is not taken for "the rest was compacted
   * away" unless the leader's own last stable offset (in the fetch response) reaches `to`: a new
   * leader whose high watermark is still behind (a failover) answers empty below the end, and
   * ending there would skip records. Such a fetch is retried (metadata refreshed) for up to
   * `emptyWaitMs`; then the read fails (BROKER_UNAVAILABLE) rather than skip anything.
   */
  async read(
    topic: string,
    partition: number,
    from: bigint,
    to: bigint,
    onRecords: (records: InRecord[]) => void,
    { maxBytes = 4 * 1024 * 1024, emptyWaitMs = 30_000 }: { maxBytes?: number; emptyWaitMs?: number } = {},
  ): Promise<bigint> {
    await this.ready(topic);
    let next = from;
    let emptySince: number | undefined;
    let emptyTries = 0;
    while (next < to) {
      const fetched = await this.withRetry(async () => {
        const leaders = this.cluster.findLeaderForPartitions(topic, [partition]);
        const nodeId = Object.keys(leaders)[0];
        if (nodeId === undefined) throw Object.assign(new Error(`no leader for ${topic}:${partition}`), { type: 'LEADER_NOT_AVAILABLE' });
        const broker = await this.cluster.findBroker({ nodeId });
        const res = await broker.fetch({
          isolationLevel: ISOLATION.READ_COMMITTED,
          maxWaitTime: 0,
          minBytes: 1,
          maxBytes,
          topics: [{ topic, partitions: [{ partition, fetchOffset: next.toString(), maxBytes }] }],
        });
        return res.responses.find((r) => r.topicName === topic)?.partitions.find((p) => p.partition === partition);
      });
      // a fetch may start inside a batch: offsets before the one asked for come again
      const fromNext = (fetched?.messages ?? []).filter((m) => BigInt(m.offset) >= next);
      const messages = fromNext.filter((m) => BigInt(m.offset) < to);
      if (messages.length === 0) {
        // the log holds something at or past `to` and nothing before it: [next, to) was compacted away;
        // or the leader's stable end reaches `to` and it returned nothing: the same
        const lso = fetched?.lastStableOffset === undefined ? -1n : BigInt(fetched.lastStableOffset);
        if (fromNext.length > 0 || lso >= to) return to;
        // a leader behind the end it had told (a failover): wait for it, never skip
        emptySince ??= Date.now();
        emptyTries += 1;
        if (Date.now() - emptySince >= emptyWaitMs) {
          throw new SonicError(
            'BROKER_UNAVAILABLE',
            `${topic}:${partition}: fetches from ${next} return nothing below the end ${to} (leader's last stable offset ${lso}) for ${emptyWaitMs} ms`,
            { details: { topic, partition, next: next.toString(), to: to.toString(), last_stable_offset: lso.toString() } },
          );
        }
        await sleep(Math.min(100 * emptyTries, 1000));
        await this.cluster.refreshMetadata().catch(() => undefined);
        continue;
      }
      emptySince = undefined;
      emptyTries = 0;
      const records = committedMessages(messages, fetched?.abortedTransactions).map((m): InRecord => toInRecord(topic, partition, m));
      if (records.length > 0) onRecords(records);
      next = BigInt(messages[messages.length - 1]!.offset) + 1n;
    }
    return to;
  }

  async close(): Promise<void> {
    if (this.connecting) await this.cluster.disconnect().catch(() => undefined);
    this.connecting = undefined;
    this.known.clear();
  }
}
