/**
 * `sonicflow gc`: retention by hand. Reads the status topic through the API's status view (the
 * latest event per task, tombstones removing tasks, ended and active tasks by last change), kept
 * in a state store on disk rather than in memory, then runs `collectGarbage` on the view's
 * retention source: with `--dry-run` it only prints what would go.
 *
 * The store is a fresh temporary directory, removed at the end, unless `--view-dir` names one to
 * keep: a later run then resumes from its checkpoint and reads only what is new. One process per
 * directory: a second gc on it, or a gc pointed at a running API's view, is refused.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SonicError } from '../core/errors.js';
import { PlainProducer } from '../kafka/io.js';
import type { Topology } from '../runtime/topology.js';
import { gcViewGroupPrefix } from '../runtime/names.js';
import type { Context } from '../app/context.js';
import { StatusView, statusViewTopics } from '../app/status-view.js';
import { collectGarbage, type GcReport } from '../app/retention.js';

export interface GcCommandOptions {
  dryRun: boolean;
  /** Overrides SONIC_TASK_RETENTION, s. */
  olderThanS?: number;
  /** Overrides SONIC_UPLOAD_RETENTION, s. */
  uploadsOlderThanS?: number;
  /** Overrides SONIC_JANITOR_BATCH. */
  limit?: number;
  /** Directory of the status view's store, kept for the next run; default: a temporary one, removed at the end. */
  viewDir?: string;
  /** Longest wait for the view to read what the status topic held when gc started, ms (default 10 min). */
  catchUpMs?: number;
  now?: () => Date;
}

/** How the view was read. */
export interface GcViewStats {
  /** The kept store, or null for a temporary one. */
  dir: string | null;
  /** Records read from the status and idempotency-keys topics (only what is new when a kept store resumed). */
  recordsRead: number;
  /** Tasks in the view once it had read everything. */
  tasks: number;
}

/** Reads the status topic through a status view and removes (or lists) what is past retention. */
export async function runGc(ctx: Context, topology: Topology, o: GcCommandOptions): Promise<GcReport & { view: GcViewStats }> {
  const c = ctx.config;
  const logger = ctx.logger.child({ component: 'gc' });
  const topics = statusViewTopics(topology);
  const dir = o.viewDir ?? mkdtempSync(join(tmpdir(), 'sonicflow-gc-view-'));
  let view: StatusView | undefined;
  try {
    view = new StatusView({
      ...topics,
      kafka: ctx.kafka,
      codec: ctx.serde,
      logger,
      groupPrefix: gcViewGroupPrefix(c.clientId, topology),
      dir,
      lockHint: 'a running API replica or another `sonicflow gc`; give this gc a --view-dir of its own, or none for a temporary one',
    });
    await view.start();
    // everything committed when gc started, applied to the store; the retention source lists
    // nothing before that (a task listed from a partial view might since have changed)
    const catchUpMs = o.catchUpMs ?? 600_000;
    if (!(await view.settle(catchUpMs))) {
      throw new SonicError(
        'BROKER_UNAVAILABLE',
        `the status view did not read ${topics.topic} to its end within ${Math.round(catchUpMs / 1000)} s: nothing removed`,
      );
    }
    const stats: GcViewStats = { dir: o.viewDir ?? null, recordsRead: view.recordsRead, tasks: view.size };
    logger.info({ store: stats.dir, records_read: stats.recordsRead, tasks: stats.tasks }, 'gc read the status topic');
    const producer = o.dryRun ? undefined : await new PlainProducer(ctx.kafka).connect();
    try {
      const report = await collectGarbage({
        source: view.retentionSource(),
        blob: ctx.blob,
        ...(producer ? { tombstones: producer } : {}),
        statusTopic: topics.topic,
        alsoTombstone: [topics.keys.topic],
        retentionS: o.olderThanS ?? c.taskRetentionS,
        uploadRetentionS: o.uploadsOlderThanS ?? c.uploadRetentionS,
        limit: o.limit ?? c.janitorBatch,
        dryRun: o.dryRun,
        logger,
        ...(o.now ? { now: o.now } : {}),
      });
      return { ...report, view: stats };
    } finally {
      await producer?.close().catch(() => undefined);
    }
  } finally {
    await view?.stop().catch(() => undefined);
    if (o.viewDir === undefined) rmSync(dir, { recursive: true, force: true });
  }
}

function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s >= 86_400) return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${s}s`;
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(head), ...rows.map(line)].join('\n')}\n`;
}

/** The report as `sonicflow gc` prints it; with `view`, a last line says how the status topic was read. */
export function formatGcReport(r: GcReport & { view?: GcViewStats }, now: Date = new Date()): string {
  const verb = r.dryRun ? 'would be removed' : 'removed';
  let s = '';
  if (r.tasks.length > 0) {
    s += table(
      ['TASK', 'TENANT', 'STATE', 'AGE', 'BLOBS', 'BYTES'],
      r.tasks.map((t) => [t.task_id, t.tenant_id ?? '-', t.state, age(now.getTime() - t.updated_at.getTime()), String(t.blobs), String(t.bytes)]),
    );
  }
  const bytes = r.tasks.reduce((n, t) => n + t.bytes, 0);
  s += `${r.tasks.length} expired task(s) ${verb} (${r.tasks.reduce((n, t) => n + t.blobs, 0)} blob(s), ${bytes} bytes)`;
  s += r.dryRun ? '\n' : `; ${r.tombstones} tombstone(s) written\n`;
  if (r.failed.length > 0) s += `${r.failed.length} task(s) could not be removed (see the log), tried again next run: ${r.failed.join(', ')}\n`;
  if (r.uploads.length > 0) {
    s += table(
      ['UPLOAD', 'AGE', 'BYTES'],
      r.uploads.map((u) => [u.key, age(now.getTime() - u.modified.getTime()), String(u.size_bytes)]),
    );
  }
  s += `${r.dryRun ? r.uploads.length : r.uploadsDeleted} expired upload(s) ${verb}\n`;
  if (r.stuck.length > 0) {
    s += `${r.stuck.length} task(s) past retention never ended and are kept:\n`;
    s += table(
      ['TASK', 'TENANT', 'STATE', 'AGE'],
      r.stuck.map((t) => [t.task_id, t.tenant_id ?? '-', t.state, age(now.getTime() - t.updated_at.getTime())]),
    );
  }
  if (r.view) {
    s += `status view: ${r.view.recordsRead} record(s) read, ${r.view.tasks} task(s) known (${r.view.dir === null ? 'temporary store' : `store ${r.view.dir}, kept`})\n`;
  }
  return s;
}
