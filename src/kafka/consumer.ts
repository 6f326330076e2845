/**
 * A group consumer for the stage runner: `read_committed`, no auto-commit, offsets committed
 * only through transactions. Batches are handed to the runner, which queues them and returns at
 * once; kafkajs keeps fetching and heartbeating, so a handler may run far longer than the session
 * timeout without losing the group. While the runner's queue of a partition is short it keeps the
 * partition fetching (the next batch arrives while the current one is handled and committed);
 * when the queue is full it pauses the partition, and resumes it as the queue drains. Fetch
 * positions move in memory only (kafkajs' resolveOffset and seek with autoCommit off).
 */
import type { Admin, Consumer, EachBatchPayload } from 'kafkajs';
import type { Kafka } from './client.js';
import { toInRecord, type InRecord } from './io.js';

export interface GroupConsumerOptions {
  groupId: string;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  /** Longest a fetch waits for data, ms. */
  maxWaitMs: number;
  maxBytesPerPartition?: number;
}

export interface TopicPartition {
  topic: string;
  partition: number;
}

export type Assignment = TopicPartition[];

export interface BatchInfo {
  /** The batch's last offset, including control records (transaction markers) after its records. */
  endOffset: string;
  /** The offset the fetch asked for. */
  fetchedOffset: string;
  /** The partition's high watermark when fetched (records past the last stable offset included). */
  highWatermark: string;
}

export interface GroupConsumerEvents {
  /** Every (re)join, with the full new assignment. */
  onAssignment(assignment: Assignment, info: { generationId: number; memberId: string }): void;
  /**
   * A fetched batch; called with the partition still unpaused. Must not block. Returns true to
   * take the batch and go on fetching after `info.endOffset`; false when the handler paused the
   * partition or seeked it.
   */
  onBatch(topic: string, partition: number, records: InRecord[], info: BatchInfo): boolean;
  /** A fetch brought only control records (markers) up to `lastOffset`: the position moved without work. */
  onMarkersOnly(topic: string, partition: number, lastOffset: string): void;
  /** The consumer crashed and will not restart itself. */
  onCrash(error: Error): void;
}

export class GroupConsumer {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  private generation = 0;

  constructor(
    kafka: Kafka,
    readonly options: GroupConsumerOptions,
  ) {
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: options.heartbeatIntervalMs,
      rebalanceTimeout: options.rebalanceTimeoutMs,
      maxWaitTimeInMs: options.maxWaitMs,
      maxBytesPerPartition: options.maxBytesPerPartition ?? 1_048_576,
      readUncommitted: false,
      allowAutoTopicCreation: false,
    });
    this.admin = kafka.admin();
  }

  async start(topics: string[], events: GroupConsumerEvents): Promise<void> {
    const { GROUP_JOIN, CRASH, START_BATCH_PROCESS } = this.consumer.events;
    // kafkajs resolves batches of only markers itself and never shows them to eachBatch
    this.consumer.on(START_BATCH_PROCESS, (e) => {
      if (e.payload.batchSize === 0) events.onMarkersOnly(e.payload.topic, e.payload.partition, String(e.payload.lastOffset));
    });
    this.consumer.on(GROUP_JOIN, (e) => {
      this.generation += 1;
      const assignment: Assignment = Object.entries(e.payload.memberAssignment).flatMap(([topic, partitions]) =>
        partitions.map((partition) => ({ topic, partition })),
      );
      events.onAssignment(assignment, { generationId: this.generation, memberId: e.payload.memberId });
    });
    this.consumer.on(CRASH, (e) => {
      if (!e.payload.restart) events.onCrash(e.payload.error);
    });
    await this.admin.connect();
    await this.consumer.connect();
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
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
    });
  }

  pause(tp: TopicPartition): void {
    this.consumer.pause([{ topic: tp.topic, partitions: [tp.partition] }]);
  }

  resume(tp: TopicPartition): void {
    this.consumer.resume([{ topic: tp.topic, partitions: [tp.partition] }]);
  }

  /** The next fetch of `tp` starts at `offset` (no commit: offsets move only in transactions). */
  seek(tp: TopicPartition, offset: string): void {
    this.consumer.seek({ topic: tp.topic, partition: tp.partition, offset });
  }

  /** The group's committed offset of `tp` as the coordinator has it now (-1 when none). */
  async committed(tp: TopicPartition): Promise<bigint> {
    const [res] = await this.admin.fetchOffsets({ groupId: this.options.groupId, topics: [tp.topic] });
    const offset = res?.partitions.find((p) => p.partition === tp.partition)?.offset ?? '-1';
    return BigInt(offset);
  }

  /** Leaves the group and closes the connections. */
  async stop(): Promise<void> {
    await this.consumer.disconnect();
    await this.admin.disconnect();
  }
}
