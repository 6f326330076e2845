/** Task ids: the record key of every Sonic topic, a lower-case UUID minted by the API. */

const TASK_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True for a string shaped like a task id (a lower-case UUID). */
export function isTaskId(s: string): boolean {
  return TASK_ID.test(s);
}
