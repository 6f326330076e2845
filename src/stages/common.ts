/**
 * What every Sonic stage shares: its dependencies, a scratch directory per task and stage, blob
 * transfer helpers, the status fields taken from the request, and the FAILED outcome that a
 * stage publishes when a task fails for good (notify turns it into a webhook).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../core/config.js';
import { publicError, type SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { BlobRef, BlobStore } from '../blob/store.js';
import type { StageRecord, StageResult, StatusExtra } from '../runtime/stage.js';
import type { MediaRef, TaskCompleted, TaskRequest } from './records.js';

export interface StageDeps {
  config: Config;
  blob: BlobStore;
  logger: Logger;
}

/** Runs `fn` in a fresh scratch directory that is removed afterwards, whatever happens. */
export async function withScratch<T>(taskId: string, stage: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), `sonicflow-${stage}-${taskId.slice(0, 8)}-`));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Downloads a referenced blob into `dir/name`; returns the local path. */
export async function fetchTo(blob: BlobStore, ref: MediaRef, dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await blob.download(blob.keyFromUri(ref.uri), path);
  return path;
}

/** A BlobRef as the Avro MediaRef. */
export function mediaRef(b: BlobRef): MediaRef {
  return { uri: b.uri, content_type: b.content_type, size_bytes: b.size_bytes, sha256: b.sha256 };
}

/** Status fields every event of a task carries. */
export function statusOf(v: { request: TaskRequest } | TaskRequest): StatusExtra {
  const r = 'request' in v ? v.request : v;
  return { tenant_id: r.tenant_id, created_at: r.created_at };
}

/** The FAILED outcome published with a dead letter, so that the task's webhook fires. */
export function failedOutcome(rec: StageRecord<{ request: TaskRequest } | TaskRequest>, error: SonicError, nowMs: number): StageResult {
  const request = 'request' in rec.value ? rec.value.request : rec.value;
  const outcome: TaskCompleted = {
    task_id: rec.taskId,
    request,
    outcome: 'FAILED',
    video: null,
    video_url: null,
    duration_s: null,
    error: { code: error.code, message: publicError(error).message, retryable: error.retryable },
    completed_at: new Date(nowMs),
  };
  return { emit: [{ sink: 'failed', value: outcome }] };
}
