/**
 * The client port: what the stage runtime needs of a Kafka client on its hot path — group
 * membership with sonicflow's assignors, fetching with per-partition backpressure, transactional
 * produce with the input offsets in the same transaction, and a plain producer for progress events
 * — and the clients that provide it, chosen per process by `SONIC_KAFKA_CLIENT`:
 *
 * - `kafkajs` (2.2.4): TxnOffsetCommit v0–v1 only, so no consumer-group metadata goes with a
 *   transactional offset commit. The runtime keeps one transactional producer per input partition
 *   with a stable id, and a new owner fences an old one by initialising that id ("EOS alpha").
 * - `platformatic` (@platformatic/kafka 2.x): TxnOffsetCommit v3+ carries the member id and the
 *   group generation (KIP-447), so the coordinator refuses an offset commit from a member that lost
 *   its partitions in a rebalance. The runtime keeps one transactional producer per stage and
 *   commits every partition's batches in one transaction (`src/runtime/group-commit.ts`).
 *
 * Both clients' errors reach the runtime in one shape: an `Error` whose `type` is the Kafka
 * protocol error name (`PRODUCER_FENCED`, `ILLEGAL_GENERATION`, `TOPIC_AUTHORIZATION_FAILED`, …)
 * when the broker answered one, as kafkajs' own errors have it.
 *
 * Admin, tools, the API's submits and the status view stay on kafkajs with either choice; only the
 * stage runtime's path goes through this port.
 */
import type { GroupConsumerEvents, GroupConsumerOptions, TopicPartition } from './consumer.js';
import type { OutRecord, ProducedOffset } from './io.js';

export { KAFKA_CLIENT_KINDS, type KafkaClientKind } from './connection.js';

/** One generation of a consumer group as this member joined it: what a KIP-447 offset commit carries. */
export interface GroupGeneration {
  groupId: string;
  memberId: string;
  generationId: number;
}

/** An input offset to commit in a transaction: the next offset to read of one partition, for one group. */
export interface InputOffset {
  groupId: string;
  topic: string;
  partition: number;
  offset: string;
}

/**
 * A member of a stage's consumer group. Batches come per partition, only for partitions this
 * member owns in its current generation; `pause`, `resume` and `seek` act on one partition.
 */
export interface StageConsumer {
  /** True while a member of the group with an assignment. */
  readonly joined: boolean;
  /** Connects (waiting for the broker as long as it takes), joins the group and starts fetching. */
  start(topics: string[], events: GroupConsumerEvents, signal?: AbortSignal): Promise<void>;
  pause(tp: TopicPartition): void;
  resume(tp: TopicPartition): void;
  /** The partition's next fetch starts at `offset` (in memory only: nothing is committed). */
  seek(tp: TopicPartition, offset: string): void;
  /**
   * The group's committed offset of `tp` (-1 when none). A client with KIP-447 asks for a stable
   * offset: while another member's transaction that commits an offset of `tp` is open, it waits.
   */
  committed(tp: TopicPartition): Promise<bigint>;
  /** The first offset still in `tp`'s log. */
  logStart(tp: TopicPartition): Promise<bigint>;
  /** The generation this member joined last; undefined before the first join and after leaving. */
  generation(): GroupGeneration | undefined;
  /** Ends any wait for the broker, leaves the group and closes the connections. */
  stop(): Promise<void>;
}

/** A transactional producer with a stable transactional id (connecting fences every older producer with it). */
export interface TransactionalProducer {
  readonly transactionalId: string;
  /** Connects and initialises the transactional id (which fences older producers with it). */
  connect(): Promise<this>;
  /**
   * Writes `records` and commits `input` (for one group) in one transaction: everything becomes
   * visible, or nothing. With `generation` (a KIP-447 client), the coordinator refuses the offsets
   * of a member no longer in that generation, and the transaction is aborted, never committed.
   * Returns where each topic-partition's records landed (the first of them). A failure whose
   * abort the broker did not confirm carries `abortUnconfirmed: true`: the producer must then be
   * replaced (its transaction may still be open), whatever the error.
   */
  publish(records: (OutRecord & { topic: string })[], input: InputOffset | InputOffset[], generation?: GroupGeneration): Promise<ProducedOffset[]>;
  close(): Promise<void>;
}

/** An idempotent, non-transactional producer (progress events). */
export interface EventProducer {
  connect(): Promise<this>;
  send(topic: string, records: OutRecord[]): Promise<void>;
  sendMany(records: (OutRecord & { topic: string })[]): Promise<void>;
  close(): Promise<void>;
}

/** Protocol errors that mean this member's generation is over: its offsets are refused, its transaction must abort. */
export const GROUP_FENCING_ERRORS: ReadonlySet<string> = new Set(['ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID', 'FENCED_INSTANCE_ID', 'REBALANCE_IN_PROGRESS']);

/** Protocol errors that mean a newer producer took the transactional id: this producer is done. */
export const PRODUCER_FENCING_ERRORS: ReadonlySet<string> = new Set(['INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED', 'INVALID_PRODUCER_ID_MAPPING']);

/** Options of a stage consumer, whichever client (see {@link GroupConsumerOptions}). */
export type StageConsumerOptions = GroupConsumerOptions;
