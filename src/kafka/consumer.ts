/**
 * A group consumer for the stage runner: `read_committed`, no auto-commit, offsets committed
 * only through transactions. Batches are handed to the runner, which queues them and returns at
 * once; kafkajs keeps fetching and heartbeating, so a handler may run far longer than the session
 * timeout without losing the group. While the runner's queue of a partition is short it keeps the
 * partition fetching (the next batch arrives while the current one is handled and committed);
 * when the queue is full it pauses the partition, and resumes it as the queue drains. Fetch
 * positions move in memory only (kafkajs' resolveOffset and seek with autoCommit off).
 */
import { AssignerProtocol, PartitionAssigners } from './kafkajs.js';
import type { Admin, Consumer, ConsumerRunConfig, EachBatchPayload, PartitionAssigner } from 'kafkajs';
import type { Logger } from '../core/logger.js';
import { Backoff, sleep, type BackoffOptions } from '../core/retry.js';
import { untilConnected } from './client.js';
import { kafkajsOf, type KafkaClient } from './handle.js';
import { authorizationFailure } from './acls.js';
import { CONSUMER_BUGS, toInRecord, type InRecord } from './io.js';
import {
  CO_PARTITIONED,
  SINGLETON,
  STICKY,
  coPartitionedAssignment,
  readStickyClaim,
  singletonAssignment,
  singletonUserData,
  stickyAssignment,
  stickyUserData,
  type Assignment,
  type StickyClaim,
  type StickyMember,
  type TopicPartition,
} from './assignors.js';

/** The assignment types are the assignors' (`assignors.ts`); the runtime reaches them through here too. */
export type { Assignment, StickyClaim, TopicPartition } from './assignors.js';

export interface GroupConsumerOptions {
  groupId: string;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  /** Longest a fetch waits for data, ms. */
  maxWaitMs: number;
  maxBytesPerPartition?: number;
  /**
   * Assign partition number p of every subscribed topic to the same member (a stage with state
   * stores: its input and retry tiers share the store partition p). Members that do not offer it
   * yet (a rolling upgrade) make the group fall back to round robin until they do.
   */
  coPartitioned?: boolean;
  /**
   * Every partition of every subscribed topic to one member, the others standing by (a
   * dispatcher: one active, standbys that take over when it leaves the group). `holding` tells
   * whether this member holds the partitions now; it says so when it joins, and the member that
   * holds them keeps them, so a standby that joins never takes over from a live active member.
   */
  singleton?: { holding: () => boolean };
  /**
   * Sticky assignment (when neither of the above): `claim` tells which partitions this member
   * holds now (and which of them have a record in hand, under which member id); it says so when it
   * joins, and the assignor leaves every member what it holds within an even share, moving only
   * what must move (a member that left, a member that joined).
   * A worker that keeps its partition through a rebalance keeps its record in hand: a render in
   * progress is not aborted because another GPU came or went. Members that do not offer it (a
   * rolling upgrade) make the group fall back to round robin.
   */
  sticky?: { claim: () => StickyClaim };
  /** Waits between tries to reach the broker (start, restarts after a crash). */
  reconnect: BackoffOptions;
  logger: Logger;
}

export interface BatchInfo {
  /** The batch's last offset, including control records (transaction markers) after its records. */
  endOffset: string;
  /** The offset the fetch asked for. */
  fetchedOffset: string;
  /** The partition's high watermark when fetched (records past the last stable offset included). */
  highWatermark: string;
}

export interface GroupConsumerEvents {
  /** Connected and subscribed: called once, before the consumer runs (so before any assignment). */
  onConnected?(): void;
  /** Every (re)join, with the full new assignment and the assignor (protocol) the group chose. */
  onAssignment(assignment: Assignment, info: { generationId: number; memberId: string; protocol: string }): void;
  /**
   * A fetched batch; called with the partition still unpaused. Must not block. Returns true to
   * take the batch and go on fetching after `info.endOffset`; false when the handler paused the
   * partition or seeked it.
   */
  onBatch(topic: string, partition: number, records: InRecord[], info: BatchInfo): boolean;
  /** A fetch brought only control records (markers) up to `lastOffset`: the position moved without work. */
  onMarkersOnly(topic: string, partition: number, lastOffset: string): void;
  /** The consumer crashed with an error no restart can mend (a bug in a handler); it stays down. */
  onCrash(error: Error): void;
}

/** The partitions of `topics` as kafkajs' cluster metadata has them (a topic it does not know: none). */
function partitionsOf(cluster: Parameters<PartitionAssigner>[0]['cluster'], topics: Iterable<string>): Record<string, number[]> {
  const all: Record<string, number[]> = {};
  for (const topic of topics) {
    const meta = cluster.findTopicPartitionMetadata(topic);
    if (meta.length > 0) all[topic] = meta.map((p) => p.partitionId);
  }
  return all;
}

/** A kafkajs assignment of each member (every member listed, an empty one included). */
function encodeAssignments(assignment: Map<string, Record<string, number[]>>): { memberId: string; memberAssignment: Buffer }[] {
  return [...assignment].map(([memberId, a]) => ({
    memberId,
    memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: a, userData: Buffer.alloc(0) }),
  }));
}

/** See {@link GroupConsumerOptions.sticky}; the member's claim travels as JSON in its metadata's userData. */
function stickyAssigner(claim: () => StickyClaim): PartitionAssigner {
  return ({ cluster }) => ({
    name: STICKY,
    version: 0,
    async assign({ members, topics }) {
      const seen: StickyMember[] = members.map((m) => {
        const meta = AssignerProtocol.MemberMetadata.decode(m.memberMetadata);
        const claimed = readStickyClaim(meta?.userData, m.memberId);
        return { id: m.memberId, topics: meta?.topics ?? [], ...(claimed ? { claim: claimed } : {}) };
      });
      // every topic some member subscribes to (kafkajs passes the leader's own), each dealt among its subscribers
      return encodeAssignments(stickyAssignment(seen, partitionsOf(cluster, new Set([...topics, ...seen.flatMap((m) => m.topics)]))));
    },
    protocol({ topics }) {
      return { name: STICKY, metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: stickyUserData(claim()) }) };
    },
  });
}

/** See {@link GroupConsumerOptions.coPartitioned} and {@link coPartitionedAssignment}. */
const coPartitionedAssigner: PartitionAssigner = ({ cluster }) => ({
  name: CO_PARTITIONED,
  version: 0,
  async assign({ members, topics }) {
    return encodeAssignments(
      coPartitionedAssignment(
        members.map((m) => m.memberId),
        partitionsOf(cluster, topics),
      ),
    );
  },
  protocol({ topics }) {
    return { name: CO_PARTITIONED, metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
  },
});

/** See {@link GroupConsumerOptions.singleton} and {@link singletonAssignment}. */
function singletonAssigner(holding: () => boolean): PartitionAssigner {
  return ({ cluster }) => ({
    name: SINGLETON,
    version: 0,
    async assign({ members, topics }) {
      const seen = members.map((m) => ({ id: m.memberId, userData: AssignerProtocol.MemberMetadata.decode(m.memberMetadata)?.userData }));
      return encodeAssignments(singletonAssignment(seen, partitionsOf(cluster, topics)));
    },
    protocol({ topics }) {
      return { name: SINGLETON, metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: singletonUserData(holding()) }) };
    },
  });
}

/**
 * The consumer survives broker outages: it waits for the broker at start, and when kafkajs gives
 * up (its retries exhausted: the broker or the coordinator away too long) it restarts the kafkajs
 * consumer itself, with capped, jittered backoff, until the broker is back or `stop()` is called.
 * A restarted consumer joins the group as a new member, so the runner sees a fresh assignment.
 */
export class GroupConsumer {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  private readonly logger: Logger;
  /** Restarts since the last successful join: the wait before the next one grows. */
  private readonly restarts: Backoff;
  private readonly stopping = new AbortController();
  /** Joins so far (kafkajs does not tell the group's generation id; it sends none with offsets either). */
  private joins = 0;
  private memberId: string | undefined;
  private state: 'idle' | 'connecting' | 'joining' | 'joined' | 'restarting' | 'stopped' = 'idle';
  private runConfig: ConsumerRunConfig | undefined;
  private lastStart = Promise.resolve();

  constructor(
    client: KafkaClient,
    readonly options: GroupConsumerOptions,
  ) {
    const kafka = kafkajsOf(client);
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: options.heartbeatIntervalMs,
      rebalanceTimeout: options.rebalanceTimeoutMs,
      maxWaitTimeInMs: options.maxWaitMs,
      maxBytesPerPartition: options.maxBytesPerPartition ?? 1_048_576,
      readUncommitted: false,
      allowAutoTopicCreation: false,
      ...(options.coPartitioned ? { partitionAssigners: [coPartitionedAssigner, PartitionAssigners.roundRobin] } : {}),
      ...(options.singleton ? { partitionAssigners: [singletonAssigner(options.singleton.holding)] } : {}),
      ...(options.sticky && !options.coPartitioned && !options.singleton
        ? { partitionAssigners: [stickyAssigner(options.sticky.claim), PartitionAssigners.roundRobin] }
        : {}),
      // kafkajs restarts after a fixed pause, and never after some errors: we restart it ourselves
      retry: { retries: 5, restartOnFailure: async () => false },
    });
    this.admin = kafka.admin();
    this.logger = options.logger;
    this.restarts = new Backoff({ ...options.reconnect, jitter: 'decorrelated' });
  }

  /** True while the consumer is a member of the group with an assignment (rebalances included). */
  get joined(): boolean {
    return this.state === 'joined';
  }

  /**
   * Connects (waiting for the broker as long as it takes), subscribes and starts consuming;
   * resolves once it runs (the group join follows). Rejects with the signal's reason when
   * `signal` (or `stop()`) ends the wait.
   */
  async start(topics: string[], events: GroupConsumerEvents, signal?: AbortSignal): Promise<void> {
    const { GROUP_JOIN, CRASH, START_BATCH_PROCESS } = this.consumer.events;
    // kafkajs resolves batches of only markers itself and never shows them to eachBatch
    this.consumer.on(START_BATCH_PROCESS, (e) => {
      if (e.payload.batchSize === 0) events.onMarkersOnly(e.payload.topic, e.payload.partition, String(e.payload.lastOffset));
    });
    this.consumer.on(GROUP_JOIN, (e) => {
      this.joins += 1;
      this.memberId = e.payload.memberId;
      this.state = 'joined';
      this.restarts.reset();
      const assignment: Assignment = Object.entries(e.payload.memberAssignment).flatMap(([topic, partitions]) =>
        partitions.map((partition) => ({ topic, partition })),
      );
      events.onAssignment(assignment, { generationId: this.joins, memberId: e.payload.memberId, protocol: e.payload.groupProtocol });
    });
    this.consumer.on(CRASH, (e) => {
      const err = e.payload.error;
      if (this.state === 'stopped') return;
      // a bug, or a refusal by the broker's authorizer: restarting would fail the same way
      if (CONSUMER_BUGS.has(err.name) || authorizationFailure(err)) {
        this.state = 'stopped';
        events.onCrash(err);
        return;
      }
      this.state = 'restarting';
      this.lastStart = this.restart(err, events);
    });
    this.runConfig = {
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset }: EachBatchPayload) => {
        const endOffset = batch.lastOffset();
        const records = batch.messages.map((m) => toInRecord(batch.topic, batch.partition, m));
        // fetchedOffset is set by kafkajs 2.x's Batch, though its typings omit it
        const fetchedOffset = String((batch as typeof batch & { fetchedOffset: string }).fetchedOffset);
        // resolving moves only kafkajs' in-memory fetch position: autoCommit is off
        if (events.onBatch(batch.topic, batch.partition, records, { endOffset, fetchedOffset, highWatermark: batch.highWatermark })) resolveOffset(endOffset);
      },
    };
    const abort = signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal;
    this.state = 'connecting';
    await untilConnected(
      'consumer',
      async () => {
        await this.admin.connect();
        await this.consumer.connect();
        await this.consumer.subscribe({ topics, fromBeginning: true });
      },
      { backoff: this.options.reconnect, logger: this.logger, signal: abort },
    );
    if (abort.aborted) throw abort.reason;
    events.onConnected?.();
    this.state = 'joining';
    await this.consumer.run(this.runConfig);
  }

  /** kafkajs gave up and disconnected: wait, reconnect, run again (a new member of the group). */
  private async restart(err: Error, events: GroupConsumerEvents): Promise<void> {
    const delay = this.restarts.next();
    this.logger.warn({ err, restart_in_ms: delay }, 'consumer crashed (kafkajs gave up); restarting it');
    try {
      await sleep(delay, this.stopping.signal);
      this.state = 'connecting';
      await untilConnected('consumer restart', () => this.consumer.connect(), {
        backoff: this.options.reconnect,
        logger: this.logger,
        signal: this.stopping.signal,
      });
      if (this.stopping.signal.aborted) return;
      this.state = 'joining';
      await this.consumer.run(this.runConfig);
    } catch (e) {
      if (this.stopping.signal.aborted) return;
      this.state = 'stopped';
      events.onCrash(e as Error);
    }
  }

  // Pause, resume and seek act on the running kafkajs consumer; while it restarts there is none,
  // and none is needed: a restarted consumer rejoins as a new member and the runner starts over.

  pause(tp: TopicPartition): void {
    this.whileRunning(() => this.consumer.pause([{ topic: tp.topic, partitions: [tp.partition] }]));
  }

  resume(tp: TopicPartition): void {
    this.whileRunning(() => this.consumer.resume([{ topic: tp.topic, partitions: [tp.partition] }]));
  }

  /** The next fetch of `tp` starts at `offset` (no commit: offsets move only in transactions). */
  seek(tp: TopicPartition, offset: string): void {
    this.whileRunning(() => this.consumer.seek({ topic: tp.topic, partition: tp.partition, offset }));
  }

  private whileRunning(action: () => void): void {
    if (this.state !== 'joining' && this.state !== 'joined') return;
    try {
      action();
    } catch (err) {
      // kafkajs crashed a moment ago and has no consumer group: nothing to pause or seek
      if (!/not initialized/.test((err as Error).message)) throw err;
    }
  }

  /**
   * This member's last join: its member id, and the count of its joins in place of the group's
   * generation id, which kafkajs keeps to itself (and never sends with a transactional offset
   * commit: fencing on kafkajs is by transactional id, see port.ts).
   */
  generation(): { groupId: string; memberId: string; generationId: number } | undefined {
    return this.memberId === undefined || this.state !== 'joined'
      ? undefined
      : { groupId: this.options.groupId, memberId: this.memberId, generationId: this.joins };
  }

  /** The group's committed offset of `tp` as the coordinator has it now (-1 when none). */
  async committed(tp: TopicPartition): Promise<bigint> {
    const [res] = await this.admin.fetchOffsets({ groupId: this.options.groupId, topics: [tp.topic] });
    const offset = res?.partitions.find((p) => p.partition === tp.partition)?.offset ?? '-1';
    return BigInt(offset);
  }

  /** The first offset still in `tp`'s log (records below it were deleted by retention or deleteRecords). */
  async logStart(tp: TopicPartition): Promise<bigint> {
    const offsets = await this.admin.fetchTopicOffsets(tp.topic);
    const p = offsets.find((o) => o.partition === tp.partition);
    if (!p) throw new Error(`no partition ${tp.partition} in ${tp.topic}`);
    return BigInt(p.low);
  }

  /** Ends any wait for the broker, leaves the group and closes the connections. */
  async stop(): Promise<void> {
    this.state = 'stopped';
    this.stopping.abort(new Error('consumer stopped'));
    await this.lastStart;
    await this.consumer.disconnect();
    await this.admin.disconnect();
  }
}
