/**
 * What every Sonic stage shares: its dependencies, a scratch directory per task and stage, blob
 * transfer helpers, and `taskStage`, which declares a stage of the task path with what all of
 * them share (the task state, the status fields taken from the request, the FAILED outcome
 * published when a task fails for good so that notify turns it into a webhook).
 */
import { join } from 'node:path';
import type { Config } from '../core/config.js';
import { SonicError, publicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Registry } from '../core/metrics.js';
import type { BlobRef, BlobStore } from '../blob/store.js';
import { defaultScratchRoot, processScratchDir, withScratchDir } from '../media/scratch.js';
import type { Sinks, StageDeclaration, StageHandler, StageRecord, StageResult, TopicRef } from '../runtime/stage.js';
import type { TaskStatusFields } from './status.js';
import type { MediaRef, TaskCompleted, TaskRequest, TaskState } from '../domain/records.js';

export interface StageDeps {
  config: Config;
  blob: BlobStore;
  logger: Logger;
  /** The process's metrics registry (`sonicflow run`), for a stage's own metrics. */
  registry?: Registry;
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
export function statusOf(v: { request: TaskRequest } | TaskRequest): TaskStatusFields {
  const r = 'request' in v ? v.request : v;
  return { tenant_id: r.tenant_id, created_at: r.created_at };
}

/** The FAILED outcome published with a dead letter, so that the task's webhook fires. */
export function failedOutcome(rec: StageRecord<TaskRecord>, error: SonicError, now: Date): StageResult<{ failed: TopicRef<TaskCompleted> }> {
  const request = 'request' in rec.value ? rec.value.request : rec.value;
  const outcome: TaskCompleted = {
    task_id: rec.key,
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

/** A stage of the Sonic task path: a declaration with its task state (see status.ts). */
export type TaskStageDeclaration<In, S extends Sinks> = StageDeclaration<StageDeps, In, S, TaskStatusFields> & { state: TaskState };

/**
 * Declares a stage of the task path. Besides the runtime's declaration it names `state`, the
 * task's state while the stage works on it (the state after it follows from the stage order),
 * and needs a `failed` sink for the FAILED outcome. It supplies what every such stage shares: the
 * scratch directory is prepared when the handler is built, every status event carries the
 * request's tenant and creation time, and a task that fails for good publishes its FAILED
 * outcome (so that its webhook fires), stamped with the stage's clock.
 */
export function taskStage<In extends TaskRecord, S extends Sinks & { failed: TopicRef<TaskCompleted> }>(
  decl: Omit<TaskStageDeclaration<In, S>, 'create' | 'sinks'> & {
    sinks: S;
    create: (deps: StageDeps) => Omit<StageHandler<In, NoInfer<S>, TaskStatusFields>, 'statusOf' | 'onFailure'>;
  },
): TaskStageDeclaration<In, S> {
  // the types require it; a declaration built around them (a cast, plain JavaScript) is refused here
  if (decl.sinks.failed?.schema !== 'task-completed') {
    throw new SonicError('TOPOLOGY_INVALID', `stage:${decl.name}: a task-path stage needs a \`failed\` sink of task-completed records for its FAILED outcome`);
  }
  return {
    ...decl,
    create(deps) {
      initScratch(deps);
      const handler: StageHandler<In, S, TaskStatusFields> = decl.create(deps);
      handler.statusOf = statusOf;
      // the outcome goes to the `failed` sink, which every S has (checked above)
      handler.onFailure = (rec, error, ctx) => failedOutcome(rec, error, ctx.now()) as unknown as StageResult<S, TaskStatusFields>;
      return handler;
    },
  };
}
