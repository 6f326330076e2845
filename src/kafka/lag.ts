/**
 * Consumer-group lag, computed the way Kafka's own `kafka-consumer-groups --describe` does:
 * LAG = LOG-END-OFFSET − CURRENT-OFFSET, where LOG-END-OFFSET is the partition's high watermark
 * (a READ_UNCOMMITTED ListOffsets) and CURRENT-OFFSET the group's committed offset. Both count
 * transaction markers and the records of still-open transactions, so on transactional topics a
 * "fully consumed" partition may show a lag of 1 (a commit marker after the last committed
 * record) and a partition being written shows records nobody can read yet. We keep Kafka's
 * arithmetic anyway: the figures must agree with the tool's output and kafka_exporter's.
 *
 * kafkajs gap: `admin.fetchTopicOffsets` asks with READ_COMMITTED, so its `high` is the *last
 * stable offset* (LSO), which stays behind the high watermark while a transaction is open. We
 * use it for the log start offset and the LSO (`stable`), and read the high watermark with a
 * second kafkajs cluster built with READ_UNCOMMITTED through kafkajs' private cluster factory
 * (kafkajs 2.2.4 is pinned; if a later version hides the factory, `end` falls back to the LSO,
 * which `highWatermarks` reports). `test/integration/lag.test.ts` holds a transaction open and
 * checks `end` against the tool's LOG-END-OFFSET, so a regression shows.
 *
 * Partitions without a committed offset: the tool prints `-` for CURRENT-OFFSET and LAG, and
 * kafka_exporter exports lag -1. Here `committed` is -1n and `lag` is the retained backlog
 * (end − log start offset): a sonicflow stage consumes from the earliest offset when its group
 * has none, so that backlog is what it will read. Callers that mirror the tool (the exporter's
 * kafka_* series) test `committed < 0n` and print `-` / -1 instead.
 */
import { ISOLATION, RETRIABLE_PARTITION_ERRORS, privateCluster } from './private-cluster.js';
import type { Admin } from 'kafkajs';
import { AssignerProtocol } from './kafkajs.js';
import { retry } from '../core/retry.js';
import { kafkajsOf, type KafkaClient } from './handle.js';

export interface PartitionLag {
  groupId: string;
  topic: string;
  partition: number;
  /** The group's committed offset (the next offset it reads); -1n when it has none. */
  committed: bigint;
  /** Log end offset = high watermark, as the tool's LOG-END-OFFSET (markers and open transactions included). */
  end: bigint;
  /** Log start offset: the earliest offset still retained. */
  earliest: bigint;
  /** Last stable offset: the end a read_committed consumer sees (below `end` while a transaction is open). */
  stable: bigint;
  /** end − committed (as the tool's LAG, negative if the log was truncated below the commit); without a committed offset, end − earliest. */
  lag: bigint;
}

export interface PartitionOffsets {
  topic: string;
  partition: number;
  earliest: bigint;
  stable: bigint;
  end: bigint;
}

/** Lag of one partition from its offsets (see the module comment for the no-commit case). */
export function partitionLag(committed: bigint, end: bigint, earliest: bigint): bigint {
  return committed < 0n ? end - earliest : end - committed;
}

/** Combines committed offsets (key `topic:partition`) with end offsets into lag rows, sorted by topic then partition. */
export function combineLag(groupId: string, committed: Map<string, bigint>, offsets: PartitionOffsets[]): PartitionLag[] {
  return offsets
    .map((o) => {
      const c = committed.get(`${o.topic}:${o.partition}`) ?? -1n;
      return {
        groupId,
        topic: o.topic,
        partition: o.partition,
        committed: c,
        end: o.end,
        earliest: o.earliest,
        stable: o.stable,
        lag: partitionLag(c, o.end, o.earliest),
      };
    })
    .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
}

/** The parts of kafkajs' (private) Cluster we use. */
interface InternalCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  addMultipleTargetTopics(topics: string[]): Promise<void>;
  refreshMetadata(): Promise<void>;
  fetchTopicsOffset(
    topics: { topic: string; fromBeginning: boolean; partitions: { partition: number }[] }[],
  ): Promise<{ topic: string; partitions: { partition: number; offset: string }[] }[]>;
}

/**
 * Reads committed offsets, log offsets and group membership over one admin connection (and one
 * READ_UNCOMMITTED cluster connection for high watermarks); for samplers that ask repeatedly.
 */
export class OffsetReader {
  private readonly admin: Admin;
  private readonly cluster: InternalCluster | undefined;
  private connecting: Promise<void> | undefined;
  private knownTopics = new Set<string>();

  constructor(client: KafkaClient) {
    const kafka = kafkajsOf(client);
    this.admin = kafka.admin();
    this.cluster = privateCluster<InternalCluster>(client, ISOLATION.READ_UNCOMMITTED);
  }

  /** Whether `end` is the high watermark (true) or, on a kafkajs without the private factory, the LSO. */
  get highWatermarks(): boolean {
    return this.cluster !== undefined;
  }

  async connect(): Promise<this> {
    this.connecting ??= (async () => {
      await this.admin.connect();
      await this.cluster?.connect();
    })();
    try {
      await this.connecting;
    } catch (err) {
      this.connecting = undefined;
      throw err;
    }
    return this;
  }

  async close(): Promise<void> {
    const was = this.connecting;
    this.connecting = undefined;
    if (!was) return;
    await was.catch(() => undefined);
    await this.admin.disconnect().catch(() => undefined);
    await this.cluster?.disconnect().catch(() => undefined);
  }

  /** The names among `topics` that exist now. */
  async existing(topics: string[]): Promise<string[]> {
    await this.connect();
    const all = new Set(await this.admin.listTopics());
    return topics.filter((t) => all.has(t));
  }

  /** The group's committed offsets of `topics` (existing ones), keyed `topic:partition`; -1n where it has none. */
  async committed(groupId: string, topics: string[]): Promise<Map<string, bigint>> {
    await this.connect();
    const out = new Map<string, bigint>();
    if (topics.length === 0) return out;
    for (const t of await this.admin.fetchOffsets({ groupId, topics })) {
      for (const p of t.partitions) out.set(`${t.topic}:${p.partition}`, BigInt(p.offset));
    }
    return out;
  }

  /** Log start, last stable and high-watermark offsets of every partition of `topics` (existing ones). */
  async offsets(topics: string[]): Promise<PartitionOffsets[]> {
    await this.connect();
    const out: PartitionOffsets[] = [];
    const perTopic = await Promise.all(topics.map(async (topic) => ({ topic, parts: await this.admin.fetchTopicOffsets(topic) })));
    const partitions = perTopic.map(({ topic, parts }) => ({ topic, partitions: parts.map((p) => p.partition) }));
    const high = await this.highWatermarksOf(partitions);
    for (const { topic, parts } of perTopic) {
      for (const p of parts) {
        const stable = BigInt(p.high);
        out.push({ topic, partition: p.partition, earliest: BigInt(p.low), stable, end: high.get(`${topic}:${p.partition}`) ?? stable });
      }
    }
    return out;
  }

  /**
   * The group's state (`Stable`, `PreparingRebalance`, ..., `Dead` when it has no members) and
   * each member's partitions of `topic` (DescribeGroups; DESCRIBE on the group).
   */
  async assignments(groupId: string, topic: string): Promise<{ state: string; members: { memberId: string; partitions: number[] }[] }> {
    await this.connect();
    const { groups } = await this.admin.describeGroups([groupId]);
    const g = groups.find((x) => x.groupId === groupId);
    if (!g) return { state: 'Dead', members: [] };
    return {
      state: g.state,
      members: g.members.map((m) => {
        const decoded = m.memberAssignment.length > 0 ? AssignerProtocol.MemberAssignment.decode(m.memberAssignment) : null;
        return { memberId: m.memberId, partitions: [...(decoded?.assignment[topic] ?? [])].sort((a, b) => a - b) };
      }),
    };
  }

  /** Members of the group now (0 when it is empty or unknown). */
  async members(groupId: string): Promise<number> {
    await this.connect();
    const { groups } = await this.admin.describeGroups([groupId]);
    return groups.find((g) => g.groupId === groupId)?.members.length ?? 0;
  }

  /** Lag of `groupId` on every partition of `topics` (missing topics are skipped). */
  async groupLag(groupId: string, topics: string[]): Promise<PartitionLag[]> {
    const present = await this.existing(topics);
    // committed first, ends second: an end read later is never below a commit read earlier
    const committed = await this.committed(groupId, present);
    return combineLag(groupId, committed, await this.offsets(present));
  }

  private async highWatermarksOf(topics: { topic: string; partitions: number[] }[]): Promise<Map<string, bigint>> {
    const cluster = this.cluster;
    if (!cluster || topics.length === 0) return new Map();
    const names = topics.map((t) => t.topic);
    if (names.some((n) => !this.knownTopics.has(n))) {
      await cluster.addMultipleTargetTopics(names);
      for (const n of names) this.knownTopics.add(n);
    }
    const wanted = topics.reduce((n, t) => n + t.partitions.length, 0);
    return retry(
      async (attempt) => {
        if (attempt > 1) await cluster.refreshMetadata().catch(() => undefined);
        const res = await cluster.fetchTopicsOffset(
          topics.map((t) => ({ topic: t.topic, fromBeginning: false, partitions: t.partitions.map((partition) => ({ partition })) })),
        );
        const out = new Map<string, bigint>();
        for (const t of res) for (const p of t.partitions) out.set(`${t.topic}:${p.partition}`, BigInt(p.offset));
        // a partition whose leader the cached metadata does not know is left out of the answer
        if (out.size < wanted) throw new Error(`no high watermark for ${wanted - out.size} partition(s) of ${names.join(', ')}`);
        return out;
      },
      // five tries in about a second: 100, 200, 400, 400 ms
      {
        initialMs: 100,
        maxMs: 400,
        jitter: 'none',
        maxAttempts: 5,
        retryIf: (err) => {
          const type = (err as { type?: string }).type;
          return type === undefined || RETRIABLE_PARTITION_ERRORS.has(type);
        },
      },
    );
  }
}

/**
 * Lag of consumer group `groupId` on every partition of `topics`, as `kafka-consumer-groups
 * --describe` computes it (see the module comment; topics that do not exist are skipped).
 */
export async function fetchGroupLag(kafka: KafkaClient, groupId: string, topics: string[]): Promise<PartitionLag[]> {
  const reader = new OffsetReader(kafka);
  try {
    return await reader.groupLag(groupId, topics);
  } finally {
    await reader.close();
  }
}
