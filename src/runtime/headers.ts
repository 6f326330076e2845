/**
 * The one header schema of sonicflow, used by retry tiers, DLQs and replay alike. All values are
 * UTF-8 strings (like Kafka Connect's `__connect.errors.*` and Kafka Streams' `__streams.errors.*`),
 * under our own `sonicflow.` prefix. Origin and first-failure headers are set once, at the first
 * failure, and kept; error headers describe the latest failure only, so they never pile up.
 */
import { randomFillSync } from 'node:crypto';
import type { SonicError } from '../core/errors.js';

export const HEADERS = {
  /** Version of this header schema. */
  version: 'sonicflow.headers.version',
  originTopic: 'sonicflow.origin.topic',
  originPartition: 'sonicflow.origin.partition',
  originOffset: 'sonicflow.origin.offset',
  stage: 'sonicflow.stage',
  /** Number of the attempt that failed (1 = the first try). */
  attempt: 'sonicflow.attempt',
  firstFailureMs: 'sonicflow.first.failure.ms',
  failedAtMs: 'sonicflow.failed.at.ms',
  /** Epoch ms before which a retry record must not be processed. */
  dueMs: 'sonicflow.due.ms',
  retryTier: 'sonicflow.retry.tier',
  errorCode: 'sonicflow.error.code',
  errorMessage: 'sonicflow.error.message',
  errorStack: 'sonicflow.error.stack',
  errorRetryable: 'sonicflow.error.retryable',
  /** Why a record is in the DLQ: permanent, exhausted or undecodable. */
  dlqReason: 'sonicflow.dlq.reason',
  replayCount: 'sonicflow.replay.count',
  replayAtMs: 'sonicflow.replay.at.ms',
  replayOf: 'sonicflow.replay.of',
  /** Who replayed: the console key's id (never the key), or `cli`. */
  replayBy: 'sonicflow.replay.by',
  /** W3C trace context. */
  traceparent: 'traceparent',
} as const;

export const HEADER_SCHEMA_VERSION = '1';
const MAX_STACK = 2000;
const MAX_MESSAGE = 1000;

export interface FailureContext {
  stage: string;
  /** Where the record was read from now. */
  topic: string;
  partition: number;
  offset: string;
  attempt: number;
  error: SonicError;
  nowMs: number;
  dueMs?: number;
  tier?: number;
  dlqReason?: 'permanent' | 'exhausted' | 'undecodable';
}

const ERROR_KEYS = [
  HEADERS.errorCode,
  HEADERS.errorMessage,
  HEADERS.errorStack,
  HEADERS.errorRetryable,
  HEADERS.dueMs,
  HEADERS.retryTier,
  HEADERS.dlqReason,
] as const;

/** Trims a stack to its first lines, at most 2000 characters. */
export function trimStack(stack: string | undefined): string {
  if (!stack) return '';
  return stack.split('\n').slice(0, 12).join('\n').slice(0, MAX_STACK);
}

/**
 * Headers for a record that goes to a retry tier or the DLQ: the input's headers, minus the
 * previous failure's error headers, plus origin (kept from the first failure), attempt, times
 * and the error.
 */
export function failureHeaders(input: Record<string, string>, f: FailureContext): Record<string, string> {
  const out: Record<string, string> = { ...input };
  for (const k of ERROR_KEYS) delete out[k];
  out[HEADERS.version] = HEADER_SCHEMA_VERSION;
  out[HEADERS.originTopic] ??= f.topic;
  out[HEADERS.originPartition] ??= String(f.partition);
  out[HEADERS.originOffset] ??= f.offset;
  out[HEADERS.firstFailureMs] ??= String(f.nowMs);
  out[HEADERS.stage] = f.stage;
  out[HEADERS.attempt] = String(f.attempt);
  out[HEADERS.failedAtMs] = String(f.nowMs);
  out[HEADERS.errorCode] = f.error.code;
  out[HEADERS.errorMessage] = f.error.message.slice(0, MAX_MESSAGE);
  out[HEADERS.errorStack] = trimStack(f.error.stack);
  out[HEADERS.errorRetryable] = String(f.error.retryable);
  if (f.dueMs !== undefined) out[HEADERS.dueMs] = String(f.dueMs);
  if (f.tier !== undefined) out[HEADERS.retryTier] = String(f.tier);
  if (f.dlqReason) out[HEADERS.dlqReason] = f.dlqReason;
  return out;
}

/** Headers for a record replayed from a DLQ: a fresh start (no attempt, no error), the replay recorded. */
export function replayHeaders(
  dlqHeaders: Record<string, string>,
  of: { topic: string; partition: number; offset: string },
  nowMs: number,
  by?: string,
): Record<string, string> {
  const out: Record<string, string> = { ...dlqHeaders };
  for (const k of [...ERROR_KEYS, HEADERS.attempt, HEADERS.failedAtMs, HEADERS.replayBy]) delete out[k];
  if (by !== undefined) out[HEADERS.replayBy] = by;
  out[HEADERS.replayCount] = String(Number(dlqHeaders[HEADERS.replayCount] ?? '0') + 1);
  out[HEADERS.replayAtMs] = String(nowMs);
  out[HEADERS.replayOf] = `${of.topic}:${of.partition}:${of.offset}`;
  return out;
}

/** The attempt number of a record about to be processed: 1 + the attempt recorded when it failed. */
export function attemptOf(headers: Record<string, string>): number {
  const failed = Number(headers[HEADERS.attempt] ?? '0');
  return Number.isInteger(failed) && failed >= 0 ? failed + 1 : 1;
}

/** The due time of a retry record, epoch ms (0 when it has none). */
export function dueOf(headers: Record<string, string>): number {
  const due = Number(headers[HEADERS.dueMs] ?? '0');
  return Number.isFinite(due) ? due : 0;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * The traceparent for records this hop writes: same trace id and flags as the input's, a new
 * span id (this hop). A missing or malformed input starts a new trace.
 */
export function childTraceparent(input: string | undefined): string {
  const m = input ? TRACEPARENT.exec(input) : null;
  const span = randomHex(8);
  if (m && m[2] !== '0'.repeat(32)) return `00-${m[2]}-${span}-${m[4]}`;
  return `00-${randomHex(16)}-${span}-01`;
}

// Ids come from the system CSPRNG a pool at a time: one randomBytes call per span id cost
// about 4% of a stage's CPU at thousands of records per second.
const pool = Buffer.alloc(4096);
let used = pool.length;

/** `bytes` random bytes as lower-case hex, never all zeros (W3C forbids all-zero ids). */
function randomHex(bytes: number): string {
  for (;;) {
    if (used + bytes > pool.length) {
      randomFillSync(pool);
      used = 0;
    }
    const hex = pool.toString('hex', used, used + bytes);
    used += bytes;
    if (!/^0+$/.test(hex)) return hex;
  }
}
