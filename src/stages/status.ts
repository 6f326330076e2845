/**
 * Sonic's task states, as the runtime's status hook: each stage of the task path names the state
 * a task is in while the stage works on it (and while its retries wait); the state written when
 * it succeeds is the next such stage's, or SUCCEEDED after the last. A task that fails for good
 * is FAILED. Stages outside the task path (notify, or any stage with `emitsStatus: false`) write
 * none. Events are written only for keys that are task ids (lower-case UUIDs, as the API mints
 * them): a stray record on its way to the DLQ names no task to update.
 */
import { SonicError, publicError } from '../core/errors.js';
import { isTaskId } from '../domain/ids.js';
import type { TaskState, TaskStatus } from '../domain/records.js';
import type { StatusHook, StatusTransition } from '../runtime/stage.js';

/** Status fields a Sonic stage adds to its events (typed from the task-status schema). */
export type TaskStatusFields = Partial<Pick<TaskStatus, 'result_url' | 'tenant_id' | 'created_at' | 'progress' | 'face'>>;

/** What the hook needs of a stage declaration. */
export interface TaskPathStage {
  name: string;
  /** The task's state while the stage works on it; none for a stage outside the task path. */
  state?: TaskState;
  emitsStatus?: boolean;
  input?: { topic: string };
  sinks?: Record<string, { topic: string }>;
  /** A dispatcher (no state): records pass through it unchanged, from its input to its sink. */
  dispatch?: unknown;
}

/**
 * The status hook for stages in this order. Refuses (TOPOLOGY_INVALID, naming the stage) a stage
 * that writes status events without a state, and a task path whose next stage does not read what
 * the one before it writes, since the states would then lie about where a task is.
 */
export function taskStates(stages: readonly TaskPathStage[]): StatusHook<TaskStatusFields> {
  const invalid = (stage: string, message: string): SonicError => new SonicError('TOPOLOGY_INVALID', `stage:${stage}: ${message}`);
  for (const s of stages) {
    if (s.state === undefined && s.emitsStatus !== false) {
      throw invalid(
        s.name,
        `stage ${s.name} writes task status events but names no task state: give it a state (taskStage), or emitsStatus: false outside the task path`,
      );
    }
  }
  const path = stages.filter((s): s is TaskPathStage & { state: TaskState } => s.state !== undefined);
  path.forEach((s, i) => {
    const next = path[i + 1];
    if (!next?.input || !s.sinks) return;
    // what s writes, and what a dispatcher reading it passes on
    const reaches = new Set(Object.values(s.sinks).map((sink) => sink.topic));
    for (const d of stages) if (d.dispatch && d.input && reaches.has(d.input.topic)) for (const sink of Object.values(d.sinks ?? {})) reaches.add(sink.topic);
    if (!reaches.has(next.input.topic)) {
      throw invalid(
        next.name,
        `stage ${next.name} follows ${s.name} in the task path (state ${next.state} after ${s.state}) but does not read what ${s.name} writes`,
      );
    }
  });
  const running = new Map(path.map((s) => [s.name, s.state]));
  const done = new Map(path.map((s, i) => [s.name, path[i + 1]?.state ?? ('SUCCEEDED' as const)]));
  const stateOf = (t: StatusTransition<TaskStatusFields>): TaskState | undefined => {
    if (!running.has(t.stage)) return undefined;
    if (t.phase === 'failed') return 'FAILED';
    return t.phase === 'succeeded' ? done.get(t.stage) : running.get(t.stage);
  };
  return {
    schema: 'task-status',
    event(t): TaskStatus | undefined {
      const state = stateOf(t);
      if (state === undefined || !isTaskId(t.key)) return undefined;
      const f = t.fields;
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
        face: f.face ?? null,
        replayed_by: null,
        at: t.at,
      };
    },
  };
}
