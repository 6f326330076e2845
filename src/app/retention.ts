/**
 * Retention: ended tasks expire `SONIC_TASK_RETENTION` after their last status change, uploads
 * `SONIC_UPLOAD_RETENTION` after they were written. `collectGarbage` removes one batch of them;
 * `startJanitor` runs it on a timer (the runtime's punctuator, by wall clock); `sonicflow gc`
 * runs it by hand. The order makes a crash harmless: a task's blobs go first and its status
 * tombstone last, so a task interrupted in between is still listed, and found again next time.
 */
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { validatePrefix, type BlobEntry, type BlobStore } from '../blob/store.js';
import { UPLOADS_ROOT, publishedKey, taskBlobPrefix } from '../domain/paths.js';
import type { OutRecord } from '../kafka/io.js';

/** A task past its retention, as a {@link RetentionSource} knows it. */
export interface ExpiredTask {
  task_id: string;
  tenant_id: string | null;
  state: string;
  updated_at: Date;
}

/** Where expired tasks come from: the store-backed status view's `retentionSource()` (the API's, or the one `sonicflow gc` opens). */
export interface RetentionSource {
  /** Ended tasks (SUCCEEDED, FAILED) whose last status change is before `before`, oldest first, at most `limit`. */
  expired(before: Date, limit: number): Promise<ExpiredTask[]>;
  /** Tasks not ended whose last status change is before `before` (reported, never removed); optional. */
  stuck?(before: Date, limit: number): Promise<ExpiredTask[]>;
  /**
   * The task as the source knows it now; optional. Asked again right before a task's blobs go and
   * before its tombstone: a task that changed since it was listed (a DLQ replay, a new task made
   * with the same idempotency key after another replica removed the old one) is left alone.
   */
  current?(taskId: string): Promise<ExpiredTask | undefined>;
}

/** Whether the source still knows `task` as it was listed (unchanged since). */
async function unchanged(source: RetentionSource, task: ExpiredTask): Promise<boolean> {
  if (!source.current) return true;
  const now = await source.current(task.task_id);
  return now !== undefined && now.state === task.state && now.updated_at.getTime() === task.updated_at.getTime();
}

/** An expired task with what it holds in the store. */
export interface ExpiredTaskBlobs extends ExpiredTask {
  blobs: number;
  bytes: number;
}

/** What one run removed (or, with `dryRun`, would remove). */
export interface GcReport {
  tasks: ExpiredTaskBlobs[];
  /** Not ended, past retention: left alone, for an operator to look at. */
  stuck: ExpiredTask[];
  /** Uploads past their retention. */
  uploads: BlobEntry[];
  blobsDeleted: number;
  tombstones: number;
  uploadsDeleted: number;
  /** Tasks whose blobs could not all be deleted: no tombstone, found again next run. */
  failed: string[];
  dryRun: boolean;
}

/** Writes status tombstones: {@link PlainProducer} (idempotent) fits. */
export interface TombstoneSink {
  send(topic: string, records: OutRecord[]): Promise<void>;
}

export interface GcOptions {
  source: RetentionSource;
  blob: BlobStore;
  /** Needed unless `dryRun`. */
  tombstones?: TombstoneSink;
  statusTopic: string;
  /** Other compacted topics keyed by task id whose entry goes with the task (the idempotency keys): tombstoned before the status. */
  alsoTombstone?: string[];
  /** SONIC_TASK_RETENTION, s. */
  retentionS: number;
  /** SONIC_UPLOAD_RETENTION, s; undefined: uploads are left alone. */
  uploadRetentionS?: number;
  /** Most tasks per run. */
  limit: number;
  dryRun?: boolean;
  logger: Logger;
  now?: () => Date;
  /** Tombstones per produce request (default 500). */
  tombstoneBatch?: number;
  /** Tasks to pass over (a janitor's recent failures, so they do not hold the head of every batch). */
  skip?: ReadonlySet<string>;
}

/** Every blob of a task: its folder `tasks/<id>/` and its published video. */
export async function taskBlobs(blob: BlobStore, taskId: string): Promise<BlobEntry[]> {
  const out: BlobEntry[] = [];
  for await (const e of blob.list(taskBlobPrefix(taskId))) out.push(e);
  const video = publishedKey(taskId);
  const st = await blob.stat(video);
  if (st) out.push({ key: video, size_bytes: st.size_bytes, modified: new Date(0) });
  return out;
}

/** Uploads written before `before`. */
async function staleUploads(blob: BlobStore, before: Date): Promise<BlobEntry[]> {
  const out: BlobEntry[] = [];
  for await (const e of blob.list(validatePrefix(UPLOADS_ROOT))) if (e.modified.getTime() < before.getTime()) out.push(e);
  return out;
}

/**
 * One retention run: lists the expired tasks (at most `limit`), deletes every blob of each, then
 * writes a tombstone (key = task id, null value) per fully deleted task to the status topic, in
 * batches; then deletes uploads past their retention. A task whose blobs could not all be
 * deleted keeps its status and is tried again next run. With `dryRun` nothing is deleted or
 * written: the report says what would go.
 */
export async function collectGarbage(o: GcOptions): Promise<GcReport> {
  const now = (o.now ?? (() => new Date()))();
  const before = new Date(now.getTime() - o.retentionS * 1000);
  const dryRun = o.dryRun ?? false;
  if (!dryRun && !o.tombstones) throw new SonicError('INTERNAL', 'collectGarbage needs a tombstone sink unless dryRun');
  const report: GcReport = { tasks: [], stuck: [], uploads: [], blobsDeleted: 0, tombstones: 0, uploadsDeleted: 0, failed: [], dryRun };
  const done: string[] = [];
  const skip = o.skip ?? new Set<string>();
  const listed = (await o.source.expired(before, o.limit + skip.size)).filter((t) => !skip.has(t.task_id)).slice(0, o.limit);
  for (const task of listed) {
    const log = o.logger.child({ task_id: task.task_id });
    try {
      const blobs = await taskBlobs(o.blob, task.task_id);
      report.tasks.push({ ...task, blobs: blobs.length, bytes: blobs.reduce((n, b) => n + b.size_bytes, 0) });
      if (dryRun) continue;
      if (!(await unchanged(o.source, task))) {
        log.info('task changed since it was listed: kept');
        continue;
      }
      for (const b of blobs) {
        await o.blob.delete(b.key);
        report.blobsDeleted += 1;
      }
      done.push(task.task_id);
    } catch (err) {
      report.failed.push(task.task_id);
      log.warn({ err }, 'expired task not removed: its blobs could not be listed or deleted; tried again next run');
    }
  }
  if (o.source.stuck) report.stuck = await o.source.stuck(before, o.limit);
  if (report.stuck.length > 0) {
    o.logger.warn({ count: report.stuck.length, oldest: report.stuck[0]?.task_id }, 'tasks past retention that never ended are kept: look at them');
  }
  const batch = o.tombstoneBatch ?? 500;
  // asked once more: a task made again meanwhile (same id) keeps its status and key
  const still: string[] = [];
  for (const id of done) {
    const task = listed.find((t) => t.task_id === id)!;
    if (await unchanged(o.source, task)) still.push(id);
  }
  for (let i = 0; i < still.length; i += batch) {
    const ids = still.slice(i, i + batch);
    // the status last: until it is written, the task is still listed and found again
    for (const topic of [...(o.alsoTombstone ?? []), o.statusTopic]) {
      await o.tombstones!.send(
        topic,
        ids.map((id) => ({ key: id, value: null })),
      );
    }
    report.tombstones += ids.length;
  }
  if (o.uploadRetentionS !== undefined) {
    report.uploads = await staleUploads(o.blob, new Date(now.getTime() - o.uploadRetentionS * 1000));
    if (!dryRun) {
      for (const u of report.uploads) {
        await o.blob.delete(u.key).then(
          () => void (report.uploadsDeleted += 1),
          (err: unknown) => o.logger.warn({ err, key: u.key }, 'expired upload not removed; tried again next run'),
        );
      }
    }
  }
  if (!dryRun && (report.tombstones > 0 || report.uploadsDeleted > 0 || report.failed.length > 0)) {
    o.logger.info(
      { tasks: report.tombstones, blobs: report.blobsDeleted, uploads: report.uploadsDeleted, failed: report.failed.length },
      'expired tasks and uploads removed',
    );
  }
  return report;
}

/** A running janitor. */
export interface Janitor {
  /** Stops the timer and waits for a run in progress. */
  stop(): Promise<void>;
}

/**
 * Runs {@link collectGarbage} every `intervalMs` (the first run after `firstRunMs`, by default
 * the lesser of the interval and one minute, so a process that restarts often still collects).
 * Runs never overlap: the next is scheduled when one ends. Errors are logged, never thrown; the
 * timer does not keep the process alive.
 */
export function startJanitor(o: GcOptions & { intervalMs: number; firstRunMs?: number; onReport?: (r: GcReport) => void; budgetMs?: number }): Janitor {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  /** Tasks whose blobs could not be removed, passed over for the next runs (tried again after an hour). */
  const failed = new Map<string, number>();
  const budgetMs = o.budgetMs ?? Math.max(1000, Math.floor(o.intervalMs / 2));
  /** One run: batch after batch while full ones come back (a backlog), within the time budget. */
  const run = async (): Promise<void> => {
    const started = Date.now();
    for (;;) {
      for (const [id, at] of failed) if (Date.now() - at > 3_600_000) failed.delete(id);
      const report = await collectGarbage({ ...o, skip: new Set(failed.keys()) });
      for (const id of report.failed) failed.set(id, Date.now());
      o.onReport?.(report);
      if (stopped || report.dryRun || report.tasks.length < o.limit || Date.now() - started > budgetMs) return;
    }
  };
  const schedule = (ms: number): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = run()
        .catch((err: unknown) => o.logger.error({ err }, 'janitor run failed; tried again at the next interval'))
        .finally(() => {
          running = undefined;
          schedule(o.intervalMs);
        });
    }, ms);
    timer.unref();
  };
  schedule(o.firstRunMs ?? Math.min(o.intervalMs, 60_000));
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
