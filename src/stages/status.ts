/**
 * Sonic's task states, as the runtime's status hook: each stage of the task path names the state
 * a task is in while the stage works on it (and while its retries wait); the state written when
 * it succeeds is the next such stage's, or SUCCEEDED after the last. A task that fails for good
 * is FAILED. Stages outside the task path (notify, or any stage without a state) write none.
 */
import { publicError } from '../core/errors.js';
import { isTaskId } from '../domain/ids.js';
import type { TaskState, TaskStatus } from '../domain/records.js';
import type { StatusHook, StatusTransition } from '../runtime/stage.js';

/** Status fields a Sonic stage adds to its events. */
export type TaskStatusFields = {
  result_url?: string | null;
  tenant_id?: string | null;
  created_at?: Date | null;
  progress?: number | null;
};

/** The status hook for stages in this order; `state` is a stage's running state. */
export function taskStates(stages: readonly { name: string; state?: TaskState }[]): StatusHook {
  const path = stages.filter((s): s is { name: string; state: TaskState } => s.state !== undefined);
  const running = new Map(path.map((s) => [s.name, s.state]));
  const done = new Map(path.map((s, i) => [s.name, path[i + 1]?.state ?? ('SUCCEEDED' as const)]));
  const stateOf = (t: StatusTransition): TaskState | undefined => {
    if (!running.has(t.stage)) return undefined;
    if (t.phase === 'failed') return 'FAILED';
    return t.phase === 'succeeded' ? done.get(t.stage) : running.get(t.stage);
  };
  return {
    event(t): TaskStatus | undefined {
      const state = stateOf(t);
      // a key that is no task id (a stray record on its way to the DLQ) names no task to update
      if (state === undefined || !isTaskId(t.key)) return undefined;
      const f = t.fields as TaskStatusFields;
      return {
        task_id: t.key,
        state,
        stage: t.stage,
        attempt: t.attempt,
        progress: t.progress ?? f.progress ?? null,
        error_code: t.error?.code ?? null,
        error_message: t.error ? publicError(t.error).message : null,
        retryable: t.phase === 'retrying' ? true : t.phase === 'failed' ? false : null,
        result_url: f.result_url ?? null,
        tenant_id: f.tenant_id ?? null,
        created_at: f.created_at ?? null,
        at: t.at,
      };
    },
  };
}
