/**
 * One input partition as the stage runner holds it, and where its fetching (re)starts: the
 * group's committed offset, clamped to the partition's log start. Records below the log start
 * are gone (retention, `deleteRecords`); asking for them makes the broker answer
 * OFFSET_OUT_OF_RANGE and kafkajs reset the fetch to the earliest offset, and a runner that then
 * seeks back to its older position loops between seek and reset for ever.
 */
import type { Logger } from '../core/logger.js';
import { retry, sleep, type BackoffOptions } from '../core/retry.js';
import type { GroupConsumer, TopicPartition } from '../kafka/consumer.js';
import type { TxProducer } from '../kafka/io.js';
import type { RawRecord } from './program.js';

export interface PartitionWork {
  tp: TopicPartition;
  key: string;
  owned: boolean;
  /** Fetched, not yet handled. */
  queue: RawRecord[];
  /** Next offset to hand to a worker (local de-duplication of refetches); -1 unknown. */
  position: bigint;
  /** This runner paused the partition's fetching (queue full, or rewinding after a failure). */
  paused: boolean;
  /** Offset this member last committed (or found committed); -1 unknown. */
  committed: bigint;
  /** Last offset of the fetched batch each queued record came from (markers included), by record offset. */
  batchEnds: Map<string, bigint>;
  /** Commits a position that moved over markers only, once the partition has been idle a moment. */
  markerTimer?: NodeJS.Timeout;
  busy: boolean;
  /** Producer initialised and committed offset re-read since this member got the partition. */
  fenced: boolean;
  /** Going back to the committed offset after a failed transaction, and not there yet. */
  recovering: boolean;
  /** A log-start refresh is under way (a fetch came from beyond the position). */
  refreshing: boolean;
  abort: AbortController;
  producer?: TxProducer;
  timer?: NodeJS.Timeout;
}

/** Errors that mean another producer took the partition's transactional id. */
export const FENCING_ERRORS = new Set(['INVALID_PRODUCER_EPOCH', 'PRODUCER_FENCED', 'INVALID_PRODUCER_ID_MAPPING', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED']);

export function keyOf(tp: TopicPartition): string {
  return `${tp.topic}/${tp.partition}`;
}

export function newWork(tp: TopicPartition): PartitionWork {
  return {
    tp,
    key: keyOf(tp),
    owned: true,
    queue: [],
    position: -1n,
    paused: false,
    committed: -1n,
    batchEnds: new Map(),
    busy: false,
    fenced: false,
    recovering: false,
    refreshing: false,
    abort: new AbortController(),
  };
}

/**
 * Where a partition's work (re)starts: when this member gains it, past what older owners
 * committed; after a failed transaction, at the committed offset clamped to the log start, waited
 * for as long as the broker is away; after a fetch from beyond the position, at the log start
 * when the records past the position were deleted.
 */
export class PartitionRecovery {
  /** Log start offsets by partition key: they only grow, so a cached one errs low, and is refreshed when a fetch says so. */
  private readonly logStarts = new Map<string, bigint>();
  /** Partitions whose way back failed at least once and has not succeeded yet. */
  readonly stalled = new Set<PartitionWork>();

  constructor(
    private readonly consumer: GroupConsumer,
    private readonly logger: Logger,
    private readonly options: { reconnect: BackoffOptions; heartbeatIntervalMs: number },
  ) {}

  /** The partition's log start: cached, or asked for when `refresh` or unknown. */
  async logStart(tp: TopicPartition, refresh = false): Promise<bigint> {
    const key = keyOf(tp);
    const cached = this.logStarts.get(key);
    if (cached !== undefined && !refresh) return cached;
    const low = await this.consumer.logStart(tp);
    const start = cached !== undefined && cached > low ? cached : low;
    this.logStarts.set(key, start);
    return start;
  }

  /**
   * Before the first batch after (re)gaining a partition: initialise its transactional producer
   * (which fences any older owner and aborts its open transaction), then re-read the committed
   * offset and drop the queued records an older owner committed meanwhile; fetching moves on to
   * the committed offset (never below the log start) when it lies past the position.
   */
  async fence(w: PartitionWork, initProducer: () => Promise<TxProducer>): Promise<void> {
    w.producer = await initProducer();
    const committed = await this.consumer.committed(w.tp);
    w.committed = committed;
    if (committed >= 0n) {
      const before = w.queue.length;
      w.queue = w.queue.filter((r) => BigInt(r.offset) >= committed);
      if (w.position < committed) {
        w.position = clampToLogStart(committed, await this.logStart(w.tp));
        this.consumer.seek(w.tp, w.position.toString());
      }
      if (before !== w.queue.length) this.logger.info({ partition: w.key, skipped: before - w.queue.length, committed: committed.toString() }, 'skipped records committed by a previous owner');
    }
    w.fenced = true;
    this.logger.debug({ partition: w.key, transactional_id: w.producer.transactionalId }, 'partition fenced');
  }

  /**
   * Where fetching starts after a failed transaction: max(committed, log start). After a fencing
   * error it first waits two heartbeats (another member probably owns the partition now, and the
   * next heartbeat will say so). Tries again with capped backoff while `stillOurs()`; undefined
   * when the partition stopped being ours; rejects with the signal's reason.
   */
  async startAfterFailure(w: PartitionWork, fenced: boolean, stillOurs: () => boolean, signal: AbortSignal): Promise<bigint | undefined> {
    try {
      if (fenced) await sleep(2 * this.options.heartbeatIntervalMs, signal);
      return await retry(
        async () => {
          if (!stillOurs()) return undefined;
          const committed = await this.consumer.committed(w.tp);
          const low = await this.logStart(w.tp, true);
          // kafkajs itself commits -2 (earliest) when it resets an out-of-range position
          if (committed < low && low > 0n) {
            this.logger.warn({ partition: w.key, committed: committed.toString(), log_start: low.toString() }, 'committed offset (or none) lies below the log start (records deleted): fetching from the log start');
          }
          return clampToLogStart(committed, low);
        },
        {
          ...this.options.reconnect,
          jitter: 'decorrelated',
          signal,
          retryIf: stillOurs,
          onRetry: (err, attempt, delayMs) => {
            this.stalled.add(w);
            this.logger.warn({ err, partition: w.key, attempt, next_try_in_ms: delayMs }, 'could not read the committed offset; trying again');
          },
        },
      );
    } finally {
      this.stalled.delete(w);
    }
  }

  /**
   * A fetch came from beyond the position (a fetch that raced a rewind, or kafkajs reset an
   * out-of-range position to the log start). Resolves with the log start when it lies past the
   * position: the records in between were deleted, and seeking back to them would loop between
   * seek and reset. One check at a time per partition.
   */
  async logStartPast(w: PartitionWork, fetchedOffset: bigint): Promise<bigint | undefined> {
    if (w.refreshing) return undefined;
    w.refreshing = true;
    this.logger.info({ partition: w.key, position: w.position.toString(), fetched_offset: fetchedOffset.toString() }, 'fetch came from beyond the position; seeking back and checking the log start');
    try {
      const low = await this.logStart(w.tp, true);
      return w.position >= 0n && low > w.position ? low : undefined;
    } catch (err) {
      this.logger.warn({ err, partition: w.key }, 'could not read the log start');
      return undefined;
    } finally {
      w.refreshing = false;
    }
  }
}

/** max(committed, log start); nothing committed (-1) starts at the log start. */
export function clampToLogStart(committed: bigint, logStart: bigint): bigint {
  return committed > logStart ? committed : logStart;
}
