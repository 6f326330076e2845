import type { TaskStatus } from './records.js';

/**
 * A status event: `fields` over an event that says nothing more (first attempt; no stage,
 * progress, error, result, tenant, creation time or face). Every producer of status events in code
 * (the API's QUEUED, tests and benchmarks) builds them here, so a field added to the schema is
 * added once.
 */
export function statusEvent(fields: Pick<TaskStatus, 'task_id' | 'state' | 'at'> & Partial<TaskStatus>): TaskStatus {
  return {
    stage: null,
    attempt: 1,
    progress: null,
    error_code: null,
    error_message: null,
    retryable: null,
    result_url: null,
    tenant_id: null,
    created_at: null,
    face: null,
    replayed_by: null,
    ...fields,
  };
}
