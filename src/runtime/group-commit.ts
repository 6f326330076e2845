/**
 * One transaction for many partitions (KIP-447's model, Kafka Streams' `exactly_once_v2`): the
 * batches that a stage's partitions commit at about the same time go into one transaction of the
 * stage's one transactional producer, with every input offset and the group generation, instead
 * of one transaction per input partition and producer.
 *
 * - A batch handed over while a transaction is being committed waits for the next one: under load
 *   a transaction gathers the batches of every busy partition; alone, a batch commits at once (no
 *   linger).
 * - Whatever a transaction fails with, every batch in it fails with, and each of those partitions
 *   goes back to its committed offset (the runner's recovery). A batch of a partition is never in
 *   a later transaction than one of its batches that failed: a partition hands over its next batch
 *   only after the previous one settled.
 * - Fencing is by generation: the offsets go with the member id and generation the consumer joined
 *   with, and the coordinator refuses them from a member that is no longer in that generation (its
 *   partitions may be another's now); the transaction is then aborted, never committed. Only a
 *   client that sends the generation (`supportsKip447`) may use this: on kafkajs a zombie could
 *   commit beside the partition's new owner.
 * - After a producer fence (another producer took the transactional id) or an unknown failure the
 *   producer is replaced; after a group fence it is kept (its transaction was aborted and it can
 *   begin the next).
 */
import type { OutRecord, ProducedOffset } from '../kafka/io.js';
import { GROUP_FENCING_ERRORS, type GroupGeneration, type InputOffset, type TransactionalProducer } from '../kafka/port.js';
import type { PartitionProducer } from './partition.js';

interface Pending {
  records: (OutRecord & { topic: string })[];
  input: InputOffset;
  /** The partition is still this member's (the Partition it came from, not a later one of the same number). */
  owned(): boolean;
  /** Commit in a transaction of its own: a transaction it shared failed for a reason that may be its records'. */
  alone?: boolean;
  resolve(landed: ProducedOffset[]): void;
  reject(err: unknown): void;
}

export interface GroupCommitOptions {
  /** The stage's transactional id (one per process: see `transactionalId`'s `instance` form). */
  transactionalId: string;
  /** Makes the producer (not yet connected). */
  producer(): TransactionalProducer;
  /** The consumer's current generation; undefined while it is not a member (the transaction then fails). */
  generation(): GroupGeneration | undefined;
  /** Most records in one transaction; batches beyond it wait for the next one (default 5000). */
  maxRecords?: number;
  /** After each committed transaction: how many batches and records it held, and how long it took, ms. */
  onCommit?(batches: number, records: number, ms: number): void;
}

/**
 * A batch that cannot be committed because of a rebalance: the member is between generations (or
 * out of the group), or the batch's partition was revoked before its transaction began.
 */
export class RebalanceError extends Error {
  readonly type = 'REBALANCE_IN_PROGRESS';
}

export class GroupCommit {
  private readonly pending: Pending[] = [];
  private producer: TransactionalProducer | undefined;
  private connecting: Promise<TransactionalProducer> | undefined;
  private flushing = false;
  private closed = false;
  private readonly maxRecords: number;

  constructor(private readonly options: GroupCommitOptions) {
    this.maxRecords = options.maxRecords ?? 5000;
  }

  get transactionalId(): string {
    return this.options.transactionalId;
  }

  /**
   * A partition's way to commit through this group commit, once the producer is connected (its
   * first connection initialises the transactional id, fencing an earlier process with it).
   * Closing the share closes nothing: the producer is the stage's.
   */
  async share(owned: () => boolean): Promise<PartitionProducer> {
    await this.connected();
    return {
      transactionalId: this.options.transactionalId,
      publish: (records, input) => this.publish(records, input, owned),
      close: () => Promise.resolve(),
    };
  }

  /**
   * Writes `records` and commits `input` in the next transaction; resolves with where the
   * records of each topic-partition landed (the first of them) once it has committed. `owned`
   * says whether the partition is still this member's: a batch of a partition revoked before its
   * transaction begins fails instead (the coordinator checks the generation, not who owns which
   * partition: committed under the new generation, a revoked partition's offset would overwrite
   * its new owner's).
   */
  publish(records: (OutRecord & { topic: string })[], input: InputOffset, owned: () => boolean = () => true): Promise<ProducedOffset[]> {
    if (this.closed) return Promise.reject(new Error('the stage producer is closed'));
    return new Promise<ProducedOffset[]>((resolve, reject) => {
      this.pending.push({ records, input, owned, resolve, reject });
      void this.flush();
    });
  }

  /** Closes the producer; batches still waiting fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.pending.splice(0)) p.reject(new Error('the stage producer is closed'));
    const p = this.producer;
    this.producer = undefined;
    if (p) await p.close();
  }

  private connected(): Promise<TransactionalProducer> {
    if (this.producer) return Promise.resolve(this.producer);
    this.connecting ??= this.options
      .producer()
      .connect()
      .then(async (p) => {
        // closed while connecting (the stage stopped): this producer must not outlive it
        if (this.closed) {
          await p.close().catch(() => undefined);
          throw new Error('the stage producer is closed');
        }
        this.producer = p;
        return p;
      })
      .finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.pending.length > 0 && !this.closed) {
        const take: Pending[] = [];
        let records = 0;
        while (
          this.pending.length > 0 &&
          (take.length === 0 || (!take[0]!.alone && !this.pending[0]!.alone && records + this.pending[0]!.records.length <= this.maxRecords))
        ) {
          const p = this.pending.shift()!;
          records += p.records.length;
          take.push(p);
        }
        await this.transaction(take, records);
      }
    } finally {
      this.flushing = false;
    }
  }

  private async transaction(batches: Pending[], records: number): Promise<void> {
    const started = Date.now();
    let producer: TransactionalProducer | undefined;
    let take = batches;
    try {
      producer = await this.connected();
      // the generation and the partitions it owns, read together (no assignment can come between):
      // offsets go only for partitions this member owns in the generation they are committed with
      const generation = this.options.generation();
      if (!generation) throw new RebalanceError('the consumer is not a member of a group generation: its offsets cannot be committed now');
      take = batches.filter((p) => p.owned());
      for (const p of batches)
        if (!take.includes(p)) p.reject(new RebalanceError(`partition ${p.input.topic}/${p.input.partition} was revoked before its batch committed`));
      if (take.length === 0) return;
      const landed = await producer.publish(
        take.flatMap((p) => p.records),
        take.map((p) => p.input),
        generation,
      );
      this.options.onCommit?.(take.length, records, Date.now() - started);
      for (const p of take) p.resolve(landedFor(landed, p.records));
    } catch (err) {
      const type = (err as { type?: string }).type ?? '';
      const confirmed = (err as { abortUnconfirmed?: boolean }).abortUnconfirmed !== true;
      if (take.length > 1 && confirmed && RECORD_ERRORS.has(type)) {
        // one batch's records may be the cause (too large, a topic it may not write): each batch
        // goes again in a transaction of its own, so only that batch's partition fails, as it
        // would with a transaction per partition
        for (const p of take) p.alone = true;
        this.pending.unshift(...take);
        return;
      }
      for (const p of take) p.reject(err);
      // a group fence leaves the producer usable (its transaction was aborted), unless the abort was not confirmed
      const keep = (GROUP_FENCING_ERRORS.has(type) || RECORD_ERRORS.has(type)) && confirmed;
      if (producer && this.producer === producer && !keep) {
        this.producer = undefined;
        await producer.close().catch(() => undefined);
      }
    }
  }
}

/**
 * Errors a transaction can fail with because of one batch's records or topics: a transaction that
 * several batches shared is tried again batch by batch.
 */
const RECORD_ERRORS: ReadonlySet<string> = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
  'INVALID_TIMESTAMP',
  'UNKNOWN_TOPIC_OR_PARTITION',
  'TOPIC_AUTHORIZATION_FAILED',
]);

/**
 * Where one batch's records landed, from where the whole transaction's did: the batch's
 * topic-partitions only. A topic-partition that several batches of one transaction wrote reports
 * the first record of them all; the runtime reads landed offsets only for store changelogs, whose
 * partition one batch writes at a time.
 */
export function landedFor(landed: ProducedOffset[], records: (OutRecord & { topic: string })[]): ProducedOffset[] {
  const exact = new Set(records.filter((r) => r.partition !== undefined).map((r) => `${r.topic}\u0000${r.partition}`));
  const anyPartition = new Set(records.filter((r) => r.partition === undefined).map((r) => r.topic));
  return landed.filter((l) => exact.has(`${l.topic}\u0000${l.partition}`) || anyPartition.has(l.topic));
}
