/**
 * `sonicflow gc`: retention by hand. Reads the compacted status topic (read_committed, the latest
 * event per task, tombstones removing tasks) into a {@link RetentionSource}, then runs
 * `collectGarbage`: with `--dry-run` it only prints what would go.
 */
import { SonicError } from '../core/errors.js';
import { PlainProducer, readTopic } from '../kafka/io.js';
import type { Topology } from '../runtime/topology.js';
import type { TaskStatus } from '../domain/records.js';
import type { Context } from '../app/context.js';
import { idempotencyKeysTopic } from '../domain/paths.js';
import { collectGarbage, type ExpiredTask, type GcReport, type RetentionSource } from '../app/retention.js';

const ENDED = new Set(['SUCCEEDED', 'FAILED']);

/** The status topic's table: the latest event per task id (by its `at`; a tombstone removes the task). */
export async function readStatusTable(ctx: Context, topology: Topology, idleMs = 2000): Promise<Map<string, TaskStatus>> {
  const schema = topology.topics[topology.statusTopic]?.valueSchema;
  if (!schema) throw new SonicError('TOPOLOGY_INVALID', `the topology has no status topic ${topology.statusTopic}`);
  const records = await readTopic(ctx.kafka, topology.statusTopic, { isolation: 'read_committed', idleMs, timeoutMs: 600_000 });
  const table = new Map<string, TaskStatus>();
  for (const r of records) {
    if (r.key === null) continue;
    if (r.value === null) {
      table.delete(r.key);
      continue;
    }
    let e: TaskStatus;
    try {
      e = (await ctx.serde.decode<TaskStatus>(r.value, schema)).value;
    } catch (err) {
      ctx.logger.warn({ err, partition: r.partition, offset: r.offset }, 'undecodable status event skipped');
      continue;
    }
    const current = table.get(r.key);
    // a late best-effort progress event never moves a task back in time
    if (!current || e.at.getTime() >= current.at.getTime()) table.set(r.key, e);
  }
  return table;
}

/** A {@link RetentionSource} over a status table read once. */
export function tableSource(table: Map<string, TaskStatus>): RetentionSource {
  const pick = (ended: boolean, before: Date, limit: number): ExpiredTask[] =>
    [...table.values()]
      .filter((e) => ENDED.has(e.state) === ended && e.at.getTime() < before.getTime())
      .sort((a, b) => a.at.getTime() - b.at.getTime())
      .slice(0, limit)
      .map((e) => ({ task_id: e.task_id, tenant_id: e.tenant_id, state: e.state, updated_at: e.at }));
  return {
    expired: async (before, limit) => pick(true, before, limit),
    stuck: async (before, limit) => pick(false, before, limit),
  };
}

export interface GcCommandOptions {
  dryRun: boolean;
  /** Overrides SONIC_TASK_RETENTION, s. */
  olderThanS?: number;
  /** Overrides SONIC_UPLOAD_RETENTION, s. */
  uploadsOlderThanS?: number;
  /** Overrides SONIC_JANITOR_BATCH. */
  limit?: number;
  now?: () => Date;
}

/** Reads the status topic and removes (or lists) what is past retention. */
export async function runGc(ctx: Context, topology: Topology, o: GcCommandOptions): Promise<GcReport> {
  const c = ctx.config;
  const table = await readStatusTable(ctx, topology);
  const producer = o.dryRun ? undefined : await new PlainProducer(ctx.kafka).connect();
  try {
    return await collectGarbage({
      source: tableSource(table),
      blob: ctx.blob,
      ...(producer ? { tombstones: producer } : {}),
      statusTopic: topology.statusTopic,
      ...(topology.topics[idempotencyKeysTopic(topology.prefix)] ? { alsoTombstone: [idempotencyKeysTopic(topology.prefix)] } : {}),
      retentionS: o.olderThanS ?? c.taskRetentionS,
      uploadRetentionS: o.uploadsOlderThanS ?? c.uploadRetentionS,
      limit: o.limit ?? c.janitorBatch,
      dryRun: o.dryRun,
      logger: ctx.logger.child({ component: 'gc' }),
      ...(o.now ? { now: o.now } : {}),
    });
  } finally {
    await producer?.close().catch(() => undefined);
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

/** The report as `sonicflow gc` prints it. */
export function formatGcReport(r: GcReport, now: Date = new Date()): string {
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
  return s;
}
