/**
 * One topic the status view follows into its store: the tail, how far the store has applied each
 * partition, and the wait for "everything committed before now" that read-your-submit needs; and
 * the lock that gives a store directory to one process.
 */
import { SonicError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { sleep } from '../../core/retry.js';
import type { KafkaClient } from '../../kafka/client.js';
import { partitionOfKey } from '../../kafka/partitioner.js';
import { TopicTail, type InRecord, type TailBatch } from '../../kafka/io.js';
import { lockDir, lockHolder } from '../../runtime/dir-lock.js';
import type { StateStore } from '../../runtime/store.js';
import type { Codec } from '../../serde/codec.js';

/** What a follower needs of the view's options. */
export interface FollowerDeps {
  kafka: KafkaClient;
  codec: Codec;
  logger: Logger;
  /** Prefix of the view's private consumer groups. */
  groupPrefix: string;
}

type Ends = Map<number, { low: bigint; end: bigint; high: bigint }>;

/** Most records a followed topic holds fetched but not applied before its tail waits (about 10 MB). */
const MAX_QUEUED = 20_000;

/**
 * Takes the store directory for this process: a second live process on the same directory would
 * apply events the first one already applied, and its own SSE streams would miss them.
 */
export function claim(dir: string, hint = 'give each API replica its own SONIC_API_INSTANCE_ID (or SONIC_API_VIEW_DIR)'): () => void {
  const release = lockDir(dir);
  if (!release) {
    throw new SonicError('CONFIG_INVALID', `the status view store ${dir} is in use by process ${lockHolder(dir)}: ${hint}`);
  }
  return release;
}

/**
 * One topic the view follows: its tail, how far the store has applied each partition, and the
 * wait for "everything committed before now" that read-your-submit needs.
 */
export class Followed<V> {
  readonly tail: TopicTail;
  /** Next offset to read, per partition, as far as the store has applied. */
  readonly positions = new Map<number, bigint>();
  partitions = 0;
  /** Records read since start (a restart from the checkpoint reads only what is new). */
  read = 0;
  stopped = false;
  /** The last end-offsets lookup: a wait may share it only when it started after the wait began. */
  private ends: { startedAt: number; settled: boolean; promise: Promise<Ends> } | undefined;
  /** A lookup queued to start when the one in flight settles, shared by every wait that began meanwhile. */
  private nextEnds: Promise<Ends> | undefined;

  constructor(
    readonly topic: string,
    readonly schema: string,
    private readonly store: StateStore,
    private readonly o: FollowerDeps,
    /** Applies the decoded records of one batch (a tombstone is the key alone); inside a store transaction. */
    private readonly applyBatch: (records: (V | { tombstone: string })[]) => void,
    /** Runs once the batch is committed to the store. */
    private readonly afterBatch: () => void = () => undefined,
  ) {
    this.tail = new TopicTail(o.kafka, topic, o.groupPrefix);
    this.tail.onRestart = (err, waitMs) => o.logger.warn({ err, topic, restart_in_ms: waitMs }, 'view follower stopped (kafkajs gave up); starting it again');
    this.broken = new Promise((r) => (this.breakWith = r));
  }

  /**
   * Starts from the store's checkpoint; `false` when the checkpoint is beyond the topic's end (the
   * topic was deleted and made again), and the caller empties the store before starting again.
   */
  async checkpoint(): Promise<Map<number, bigint> | undefined> {
    const ends = await this.tail.endOffsets();
    this.partitions = ends.size;
    const saved = this.store.offsets(this.topic);
    return [...saved].some(([p, next]) => !ends.has(p) || next > ends.get(p)!.high) ? undefined : saved;
  }

  /**
   * Settles when a batch could not be applied to the store (the disk full, the map size reached):
   * the view applies nothing after it, so its checkpoint never passes a batch it lacks, and the
   * process should stop (a restart resumes from the checkpoint).
   */
  readonly broken: Promise<SonicError>;
  private breakWith!: (err: SonicError) => void;
  private isBroken = false;

  async start(from: Map<number, bigint>): Promise<void> {
    for (const [p, next] of from) this.positions.set(p, next);
    let chain = Promise.resolve();
    /** Records fetched and not applied yet. */
    let queued = 0;
    await this.tail.start((batch) => {
      // decode and apply in order, one batch after the other. Past MAX_QUEUED records behind the
      // store, the tail waits for this batch before it fetches again: a first start reading a
      // large topic faster than the store writes holds a bounded backlog, not the topic
      queued += batch.records.length;
      chain = chain
        .then(() => (this.isBroken ? undefined : this.ingest(batch)))
        .finally(() => (queued -= batch.records.length))
        .catch((err: unknown) => {
          this.o.logger.error({ err, topic: this.topic, partition: batch.partition }, 'batch not applied to the view: the view stops');
          this.isBroken = true;
          this.breakWith(
            err instanceof SonicError
              ? err
              : new SonicError('INTERNAL', `the status view could not apply a batch of ${this.topic}: ${(err as Error).message}`, { cause: err }),
          );
        });
      return queued > MAX_QUEUED ? chain : undefined;
    }, from);
  }

  private async ingest(batch: TailBatch): Promise<void> {
    const records: (V | { tombstone: string })[] = [];
    for (const r of batch.records) {
      if (!r.value) {
        if (r.key) records.push({ tombstone: r.key });
        continue;
      }
      const value = await this.decode(r);
      if (value !== undefined) records.push(value);
    }
    this.read += batch.records.length;
    this.store.transaction(() => {
      this.applyBatch(records);
      this.store.commitOffset(this.topic, batch.partition, batch.next);
    });
    this.positions.set(batch.partition, batch.next);
    this.afterBatch();
  }

  /**
   * The record's value; undefined for bytes that will never decode (skipped, logged). Anything
   * else (the registry unreachable) is tried again until it works or the view stops: the
   * checkpoint must not move past a record the view did not apply.
   */
  private async decode(r: InRecord): Promise<V | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.o.codec.decode<V>(r.value!, this.schema)).value;
      } catch (err) {
        if ((err as SonicError).code === 'DESERIALIZATION_FAILED') {
          this.o.logger.warn({ err, topic: this.topic, offset: r.offset, partition: r.partition }, 'undecodable record skipped');
          return undefined;
        }
        if (this.stopped) throw err;
        if (attempt === 1 || attempt % 20 === 0) this.o.logger.warn({ err, topic: this.topic, attempt }, 'record not decoded yet (registry?); trying again');
        await sleep(Math.min(5000, 100 * 2 ** Math.min(attempt, 6)));
      }
    }
  }

  /**
   * Resolves once the store has applied everything committed to `key`'s partition before this
   * call, or `found()` holds, or `waitMs` has passed.
   */
  async reach(key: string, waitMs: number, found: () => boolean): Promise<void> {
    if (found() || waitMs <= 0 || this.partitions === 0) return;
    await this.reachPartitions([partitionOfKey(key, this.partitions)], waitMs, found);
  }

  /**
   * Resolves once the store has applied everything committed to every partition before this call,
   * or `waitMs` has passed (a listing on one replica then holds what another replica just accepted);
   * whether it had applied all that.
   */
  async reachAll(waitMs: number): Promise<boolean> {
    if (this.partitions === 0) return true;
    if (waitMs <= 0) return false;
    return await this.reachPartitions(
      Array.from({ length: this.partitions }, (_, i) => i),
      waitMs,
      () => false,
    );
  }

  /** Whether the store reached the targets (not merely `found()` or the deadline). */
  private async reachPartitions(partitions: number[], waitMs: number, found: () => boolean): Promise<boolean> {
    const began = Date.now();
    const deadline = began + waitMs;
    const ends = await Promise.race([this.endOffsets(began), sleep(waitMs).then(() => undefined)]).catch(() => undefined);
    // an empty partition is never fetched from: nothing there to wait for; without a target (the
    // lookup failed or is slow: a broker failing over) the wait lasts until found or the deadline
    const reached = (): boolean =>
      ends !== undefined &&
      partitions.every((p) => {
        const target = ends.get(p);
        // the high watermark, not the last stable offset: a transaction acknowledged a moment ago
        // may not have its markers written yet, and its records lie past the last stable offset
        return target !== undefined && (target.high <= target.low || (this.positions.get(p) ?? -1n) >= target.high);
      });
    while (!found() && !reached() && Date.now() < deadline) await sleep(20);
    return reached();
  }

  /**
   * End offsets looked up no earlier than `since` (ms). Waits share lookups: one that started
   * after the wait began, or else the next one, which starts when the lookup in flight settles, so
   * a flood of reads for unknown ids costs about one lookup per broker round trip, not one each.
   */
  private endOffsets(since: number): Promise<Ends> {
    if (this.ends && this.ends.startedAt >= since) return this.ends.promise;
    if (this.nextEnds) return this.nextEnds;
    const lookup = (): Promise<Ends> => {
      const entry: { startedAt: number; settled: boolean; promise: Promise<Ends> } = { startedAt: Date.now(), settled: false, promise: this.tail.endOffsets() };
      this.ends = entry;
      entry.promise.then(
        () => (entry.settled = true),
        () => {
          entry.settled = true;
          if (this.ends === entry) this.ends = undefined;
        },
      );
      return entry.promise;
    };
    if (this.ends && !this.ends.settled) {
      const next = this.ends.promise.then(
        () => undefined,
        () => undefined,
      );
      this.nextEnds = next.then(() => {
        this.nextEnds = undefined;
        return lookup();
      });
      return this.nextEnds;
    }
    return lookup();
  }
}
