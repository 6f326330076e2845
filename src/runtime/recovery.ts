/**
 * Where a partition's fetching (re)starts: the group's committed offset, clamped to the
 * partition's log start. Records below the log start are gone (retention, `deleteRecords`);
 * asking for them makes the broker answer OFFSET_OUT_OF_RANGE and kafkajs reset the fetch to the
 * earliest offset, and a runner that then seeks back to its older position loops between seek and
 * reset for ever.
 */
import type { Logger } from '../core/logger.js';
import { retry, sleep, type BackoffOptions } from '../core/retry.js';
import type { TopicPartition } from '../kafka/consumer.js';
import { GROUP_FENCING_ERRORS, PRODUCER_FENCING_ERRORS, type StageConsumer } from '../kafka/port.js';

/**
 * Errors that mean another producer took the partition's transactional id.
 * (TRANSACTIONAL_ID_AUTHORIZATION_FAILED is a missing ACL, not fencing: the runner stops on it.)
 */
/**
 * Errors after which another member probably owns the partition now: a newer producer took its
 * transactional id (kafkajs), or the coordinator refused this member's generation (KIP-447).
 */
export const FENCING_ERRORS: ReadonlySet<string> = new Set([...PRODUCER_FENCING_ERRORS, ...GROUP_FENCING_ERRORS]);

export function keyOf(tp: TopicPartition): string {
  return `${tp.topic}/${tp.partition}`;
}

/** What recovery reads of a partition: which one it is and where its fetching stands. */
export interface PartitionPosition {
  readonly tp: TopicPartition;
  readonly key: string;
  /** Next offset to hand to a worker; -1 unknown. */
  position: bigint;
  /** A log-start refresh is under way (a fetch came from beyond the position). */
  refreshing: boolean;
}

/**
 * The runner's view of its partitions' committed offsets and log starts: where a partition goes
 * back to after a failed transaction, waited for as long as the broker is away, and at the log
 * start when a fetch from beyond the position says the records past it were deleted.
 */
export class PartitionRecovery {
  /** Log start offsets by partition key: they only grow, so a cached one errs low, and is refreshed when a fetch says so. */
  private readonly logStarts = new Map<string, bigint>();
  /** Partitions whose way back failed at least once and has not succeeded yet. */
  readonly stalled = new Set<PartitionPosition>();

  constructor(
    private readonly consumer: StageConsumer,
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
   * Where fetching starts after a failed transaction: max(committed, log start). After a fencing
   * error it first waits two heartbeats (another member probably owns the partition now, and the
   * next heartbeat will say so). Tries again with capped backoff while `stillOurs()`; undefined
   * when the partition stopped being ours; rejects with the signal's reason.
   */
  async startAfterFailure(p: PartitionPosition, fenced: boolean, stillOurs: () => boolean, signal: AbortSignal): Promise<bigint | undefined> {
    try {
      if (fenced) await sleep(2 * this.options.heartbeatIntervalMs, signal);
      return await retry(
        async () => {
          if (!stillOurs()) return undefined;
          const committed = await this.consumer.committed(p.tp);
          const low = await this.logStart(p.tp, true);
          // kafkajs itself commits -2 (earliest) when it resets an out-of-range position
          if (committed < low && low > 0n) {
            this.logger.warn(
              { partition: p.key, committed: committed.toString(), log_start: low.toString() },
              'committed offset (or none) lies below the log start (records deleted): fetching from the log start',
            );
          }
          return clampToLogStart(committed, low);
        },
        {
          ...this.options.reconnect,
          jitter: 'decorrelated',
          signal,
          retryIf: stillOurs,
          onRetry: (err, attempt, delayMs) => {
            this.stalled.add(p);
            this.logger.warn({ err, partition: p.key, attempt, next_try_in_ms: delayMs }, 'could not read the committed offset; trying again');
          },
        },
      );
    } finally {
      this.stalled.delete(p);
    }
  }

  /**
   * A fetch came from beyond the position (a fetch that raced a rewind, or kafkajs reset an
   * out-of-range position to the log start). Resolves with the log start when it lies past the
   * position: the records in between were deleted, and seeking back to them would loop between
   * seek and reset. One check at a time per partition.
   */
  async logStartPast(p: PartitionPosition, fetchedOffset: bigint): Promise<bigint | undefined> {
    if (p.refreshing) return undefined;
    p.refreshing = true;
    this.logger.info(
      { partition: p.key, position: p.position.toString(), fetched_offset: fetchedOffset.toString() },
      'fetch came from beyond the position; seeking back and checking the log start',
    );
    try {
      const low = await this.logStart(p.tp, true);
      return p.position >= 0n && low > p.position ? low : undefined;
    } catch (err) {
      this.logger.warn({ err, partition: p.key }, 'could not read the log start');
      return undefined;
    } finally {
      p.refreshing = false;
    }
  }
}

/** max(committed, log start); nothing committed (-1) starts at the log start. */
export function clampToLogStart(committed: bigint, logStart: bigint): bigint {
  return committed > logStart ? committed : logStart;
}
