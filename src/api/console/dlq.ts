/**
 * The console's dead letters (under /v1/console): a stage's DLQ grouped by error code, each dead
 * letter with its headers and its original record decoded, and replay (one, by code, all) with a
 * dry run. Operators see; only admins replay, and each replay is logged with the acting key.
 * Reading, selecting and replaying are src/app/dlq.ts, the code `sonicflow dlq` runs.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { SonicError, publicMessageOf, scrubInternals } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { InRecord } from '../../kafka/io.js';
import { HEADERS } from '../../runtime/headers.js';
import type { ReplaySelection } from '../../app/dlq.js';
import type { TaskState } from '../../domain/records.js';
import { requireAdmin, requireOperator, type ConsoleOrigin } from './access.js';
import { confirmReplay, planReplay, positionOf, type SkipReason, type SkippedLetter, type TaskStateOf } from './dlq-plan.js';

/** The DLQ operations the console uses (src/app/dlq.ts bound to the API's context and topology). */
export interface DeadLetters {
  stages: string[];
  read(stage: string): Promise<InRecord[]>;
  decode(r: InRecord): Promise<unknown>;
  select(records: InRecord[], sel: ReplaySelection): InRecord[];
  /** `by`: who replays (the acting key's id, never the key), recorded with the replay. */
  replay(stage: string, picked: InRecord[], by: string): Promise<void>;
}

/**
 * A dead letter as the console shows it: the public message of its code, and headers without the
 * stack, every value scrubbed of paths, buckets, credentials and hosts ({@link scrubInternals}).
 */
export interface DeadLetterView {
  position: string;
  task_id: string | null;
  code: string;
  reason: string | null;
  attempt: number | null;
  failed_at: string | null;
  message: string;
  replays: number;
  headers: Record<string, string>;
}

/** A decoded record or headers for the console: every string scrubbed ({@link scrubInternals}), bytes as their length. */
export function redact(value: unknown): unknown {
  if (typeof value === 'string') return scrubInternals(value);
  if (Array.isArray(value)) return value.map(redact);
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `(${value.length} bytes)`;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v)]));
  return typeof value === 'bigint' ? String(value) : value;
}

export function deadLetterView(r: InRecord): DeadLetterView {
  const h = r.headers;
  const code = h[HEADERS.errorCode] ?? 'UNKNOWN';
  const headers = Object.fromEntries(Object.entries(h).filter(([k]) => k !== HEADERS.errorStack));
  return {
    position: `${r.partition}:${r.offset}`,
    task_id: r.key,
    code,
    reason: h[HEADERS.dlqReason] ?? null,
    attempt: h[HEADERS.attempt] ? Number(h[HEADERS.attempt]) : null,
    failed_at: h[HEADERS.failedAtMs] ? new Date(Number(h[HEADERS.failedAtMs])).toISOString() : null,
    // the raw message (paths, hosts, a runner's stderr) stays in the DLQ for `sonicflow dlq`
    message: publicMessageOf(code),
    replays: Number(h[HEADERS.replayCount] ?? 0),
    headers: redact(headers) as Record<string, string>,
  };
}

/** How long one read of a stage's DLQ answers the console's requests, ms. */
export const DLQ_READ_CACHE_MS = 5000;
/** Most dead letters one answer shows per error code (the listing) or in all (a replay's preview). */
export const LETTERS_SHOWN = 200;

/**
 * `read` shared per stage: concurrent callers wait for one read, and its result answers for
 * `ttlMs` after it ended (a failed read is not kept). `forget(stage)` drops it (after a replay).
 */
export function sharedReads<T>(read: (stage: string) => Promise<T>, ttlMs: number, now: () => number = Date.now) {
  const reads = new Map<string, { p: Promise<T>; until: number }>();
  return {
    read(stage: string): Promise<T> {
      const cached = reads.get(stage);
      if (cached && now() < cached.until) return cached.p;
      const entry = { p: read(stage), until: Infinity };
      reads.set(stage, entry);
      entry.p.then(
        () => void (entry.until = now() + ttlMs),
        () => reads.get(stage) === entry && reads.delete(stage),
      );
      return entry.p;
    },
    forget(stage: string): void {
      reads.delete(stage);
    },
  };
}

/** A dead letter of the listing: its view, its task's state now, and whether a replay would take it by default. */
export interface ListedLetter extends DeadLetterView {
  task_state: TaskState | null;
  replayable: boolean;
}

/** How many selected letters a plan leaves out, per reason. */
function skippedCounts(skipped: SkippedLetter[]): Record<SkipReason, number> {
  const n: Record<SkipReason, number> = { 'not-failed': 0, 'unknown-task': 0, superseded: 0 };
  for (const s of skipped) n[s.reason]++;
  return n;
}

/** A request's replay selection: `all`, `code`, `task_ids` (at most 1000). */
function selectionOf(b: Record<string, unknown>): ReplaySelection {
  const sel: ReplaySelection = {};
  if (b.all === true) sel.all = true;
  if (typeof b.code === 'string' && b.code !== '') sel.code = b.code;
  if (Array.isArray(b.task_ids)) sel.taskIds = b.task_ids.filter((x): x is string => typeof x === 'string').slice(0, 1000);
  return sel;
}

/**
 * The console's DLQ routes. `stateOf` is a task's state in the status view: a replay leaves out
 * the letters of tasks that are not FAILED now unless asked to `force` (./dlq-plan.ts). A stage's
 * DLQ is read at most once per `cacheMs` (shared by concurrent requests); an answer shows at most
 * {@link LETTERS_SHOWN} letters per code (the newest), with each code's total.
 */
export function consoleDlqRoutes(
  dlq: DeadLetters,
  stateOf: TaskStateOf,
  logger: Logger,
  origin: ConsoleOrigin,
  cacheMs = DLQ_READ_CACHE_MS,
): FastifyPluginAsync {
  const stageOf = (name: string): string => {
    if (!dlq.stages.includes(name)) throw new SonicError('INVALID_REQUEST', `no stage ${name.slice(0, 64)} (stages: ${dlq.stages.join(', ')})`, { safe: true });
    return name;
  };
  // one read of a stage's DLQ (a throw-away consumer group reading the whole topic) answers every
  // request for a few seconds; a replay drops it, so the page reloads what the replay changed
  const reads = sharedReads((stage) => dlq.read(stage), cacheMs);
  return async (app: FastifyInstance) => {
    app.get<{ Params: { stage: string } }>('/console/dlq/:stage', { schema: { hide: true } }, async (req) => {
      requireOperator(req);
      const stage = stageOf(req.params.stage);
      const records = await reads.read(stage);
      const replayable = new Set(planReplay(records, { all: true }, stateOf, { max: Infinity }).picked);
      const byCode = new Map<string, InRecord[]>();
      for (const r of records) {
        const code = r.headers[HEADERS.errorCode] ?? 'UNKNOWN';
        byCode.set(code, [...(byCode.get(code) ?? []), r]);
      }
      // the newest letters of each code are shown, and only those are decoded
      const codes = await Promise.all(
        [...byCode].map(async ([code, items]) => ({
          code,
          count: items.length,
          replayable: items.filter((r) => replayable.has(r)).length,
          more: Math.max(0, items.length - LETTERS_SHOWN),
          letters: await Promise.all(
            items.slice(-LETTERS_SHOWN).map(async (r) => {
              const listed: ListedLetter = { ...deadLetterView(r), task_state: (r.key && stateOf(r.key)) || null, replayable: replayable.has(r) };
              return { ...listed, record: redact(await dlq.decode(r)) };
            }),
          ),
        })),
      );
      return { stage, total: records.length, replayable: replayable.size, letters_shown_per_code: LETTERS_SHOWN, codes };
    });

    // the dry run picks the letters and lists their positions; the confirmation sends exactly
    // those positions back, and is refused (409) if any of them would no longer be picked
    app.post<{ Params: { stage: string }; Body: Record<string, unknown> }>('/console/dlq/:stage/replay', { schema: { hide: true } }, async (req) => {
      requireAdmin(req, origin);
      const stage = stageOf(req.params.stage);
      const b = (req.body ?? {}) as Record<string, unknown>;
      const force = b.force === true;
      const records = await reads.read(stage);
      if (b.dry_run === true) {
        const sel = selectionOf(b);
        const plan = planReplay(records, sel, stateOf, { force });
        const skipped = skippedCounts(plan.skipped);
        logger.info(
          { action: 'dlq.replay.dry-run', key_id: req.keyId, tenant: req.tenant, stage, selection: sel, force, count: plan.picked.length, skipped },
          'console: replay previewed',
        );
        return {
          stage,
          dry_run: true,
          force,
          count: plan.picked.length,
          positions: plan.picked.map(positionOf),
          letters: plan.picked.slice(0, LETTERS_SHOWN).map(deadLetterView),
          skipped,
          remaining: plan.remaining,
        };
      }
      const positions = Array.isArray(b.positions) ? b.positions.filter((x): x is string => typeof x === 'string') : [];
      const picked = confirmReplay(records, positions, stateOf, { force });
      try {
        await dlq.replay(stage, picked, req.keyId ?? 'console (auth disabled)');
      } finally {
        reads.forget(stage);
      }
      // every action is logged with the key that did it
      logger.info(
        { action: 'dlq.replay', key_id: req.keyId, tenant: req.tenant, stage, force, positions, count: picked.length, tasks: picked.map((r) => r.key) },
        'console: dead letters replayed',
      );
      return { stage, dry_run: false, force, count: picked.length, positions, letters: picked.slice(0, LETTERS_SHOWN).map(deadLetterView) };
    });
  };
}
