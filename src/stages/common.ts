/**
 * What every Sonic stage shares: its dependencies, a scratch directory per task and stage, blob
 * transfer helpers, the status fields taken from the request, and the FAILED outcome that a
 * stage publishes when a task fails for good (notify turns it into a webhook).
 */
import { join } from 'node:path';
import type { Config } from '../core/config.js';
import { publicError, type SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { BlobRef, BlobStore } from '../blob/store.js';
import { defaultScratchRoot, processScratchDir, withScratchDir } from '../media/scratch.js';
import { defineStage, type StageDefinition, type StageRecord, type StageResult, type StatusExtra } from '../runtime/stage.js';
import type { MediaRef, TaskCompleted, TaskRequest } from '../domain/records.js';

export interface StageDeps {
  config: Config;
  blob: BlobStore;
  logger: Logger;
}

let scratchRoot: string | undefined;

/**
 * Sets this process's scratch root (SONIC_SCRATCH_DIR, or `<os tmpdir>/sonicflow-scratch-<uid>`)
 * and starts making its process directory, which first sweeps the directories of dead processes
 * (see src/media/scratch.ts). Stage factories call it, so the sweep runs when a stage starts; a
 * failure is logged here and thrown again by the first {@link withScratch}.
 */
export function initScratch(deps: Pick<StageDeps, 'config' | 'logger'>): void {
  scratchRoot = deps.config.scratchDir || defaultScratchRoot();
  processScratchDir(scratchRoot).then(
    (dir) => deps.logger.debug({ scratch_dir: dir }, 'scratch directory ready'),
    (err: unknown) => deps.logger.error({ err, scratch_root: scratchRoot }, 'cannot prepare the scratch directory'),
  );
}

/**
 * Runs `fn` in a fresh scratch directory of this process (`<process dir>/<stage>-<task>-<random>`)
 * that is removed afterwards, whatever happens; a process killed mid-task leaves it to the sweep
 * of the next process that starts.
 */
export async function withScratch<T>(taskId: string, stage: string, fn: (dir: string) => Promise<T>): Promise<T> {
  return withScratchDir(`${stage}-${taskId.slice(0, 8)}`, fn, scratchRoot);
}

/**
 * Downloads a referenced blob into `dir/name`, verified against the reference's sha256 when it
 * has one; returns the local path.
 *
 * @throws SonicError `CHECKSUM_MISMATCH` when the bytes are not the ones referenced (non-retryable);
 *   the store's `INPUT_NOT_FOUND` / `INPUT_FETCH_FAILED` otherwise.
 */
export async function fetchTo(blob: BlobStore, ref: MediaRef, dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await blob.download(blob.keyFromUri(ref.uri), path, ref.sha256 ? { sha256: ref.sha256 } : {});
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
export function failedOutcome(rec: StageRecord<{ request: TaskRequest } | TaskRequest>, error: SonicError, now: Date): StageResult {
  const request = 'request' in rec.value ? rec.value.request : rec.value;
  const outcome: TaskCompleted = {
    task_id: rec.taskId,
    request,
    outcome: 'FAILED',
    video: null,
    video_url: null,
    duration_s: null,
    error: { code: error.code, message: publicError(error).message, retryable: error.retryable },
    completed_at: now,
  };
  return { emit: [{ sink: 'failed', value: outcome }] };
}

/** A task record of the Sonic topics: the request itself, or a stage's output carrying it. */
export type TaskRecord = { request: TaskRequest } | TaskRequest;

/**
 * Defines a Sonic stage of the task path: prepares the process's scratch directory, and supplies
 * what every such stage shares — the status fields taken from the request, and the FAILED outcome
 * published when a task fails for good (so that its webhook fires), stamped with the stage's clock.
 */
export function sonicStage<In extends TaskRecord>(deps: Pick<StageDeps, 'config' | 'logger'>, def: Omit<StageDefinition<In>, 'statusOf' | 'onFailure'>): StageDefinition<In> {
  initScratch(deps);
  return defineStage<In>({
    ...def,
    statusOf,
    onFailure: (rec, error, ctx) => failedOutcome(rec, error, ctx.now()),
  });
}
