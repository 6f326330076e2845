/**
 * The status view's model: a task's status event, the view of it the API answers with, the order
 * of states (which event supersedes the row), and a listing's query and page.
 */
import type { FaceRegion, TaskState, TaskStatus } from '../../domain/records.js';

/** One status event: the value of the status topic (generated from schemas/task-status.avsc). */
export type StatusEvent = TaskStatus;

export interface TaskView {
  task_id: string;
  state: TaskState;
  stage: string | null;
  progress: number | null;
  attempt: number;
  error: { code: string; message: string; retryable: boolean } | null;
  result_url: string | null;
  tenant_id: string | null;
  created_at: string | null;
  updated_at: string;
  /** The face and crop preprocess chose; null before it (and for tasks older than face detection). */
  face: FaceRegion | null;
}

export const TERMINAL: ReadonlySet<TaskState> = new Set(['SUCCEEDED', 'FAILED']);
export const TASK_STATES: readonly TaskState[] = ['QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED', 'FAILED'];
export const RANK: Record<TaskState, number> = {
  QUEUED: 0,
  VALIDATING: 1,
  PREPROCESSING: 2,
  INFERRING: 3,
  ENCODING: 4,
  PUBLISHING: 5,
  SUCCEEDED: 6,
  FAILED: 6,
};

/** Whether `next` should replace `current` in the view. */
export function supersedes(current: StatusEvent | undefined, next: StatusEvent): boolean {
  if (!current) return true;
  if (current.state === 'SUCCEEDED') return false;
  // a DLQ replay restarts a FAILED task: later events win
  if (current.state === 'FAILED') return next.at.getTime() > current.at.getTime();
  if (RANK[next.state] < RANK[current.state] && next.error_code === null) return next.at.getTime() > current.at.getTime() && next.progress === null;
  return true;
}

export function toView(e: StatusEvent): TaskView {
  return {
    task_id: e.task_id,
    state: e.state,
    stage: e.stage,
    progress: e.progress,
    attempt: e.attempt,
    error: e.error_code ? { code: e.error_code, message: e.error_message ?? '', retryable: e.retryable ?? false } : null,
    result_url: e.result_url,
    tenant_id: e.tenant_id,
    created_at: e.created_at ? e.created_at.toISOString() : null,
    updated_at: e.at.toISOString(),
    face: e.face ?? null,
  };
}

/** A page of a tenant's tasks (or, for an operator, every tenant's). */
export interface ListQuery {
  /** The tenant whose tasks are listed; undefined: every tenant's (operators only). */
  tenant: string | undefined;
  state?: TaskState;
  /** Tasks created at or after this instant. */
  since?: Date;
  limit: number;
  /** The `next_cursor` of the previous page. */
  cursor?: string;
  /** `desc` (newest first, the default) or `asc`. */
  order?: 'asc' | 'desc';
}

export interface ListPage {
  tasks: StatusEvent[];
  /** Present when more tasks may follow: pass it as `cursor` for the next page. */
  next_cursor: string | null;
}
