/**
 * Which dead letters a console replay takes. A dead letter stays in the DLQ after its replay, so a
 * selection joins each letter with its task's state now: only a FAILED task's latest dead letter
 * is replayed by default. A task that succeeded since, or runs again after an earlier replay, is
 * left out (re-running it would render it again and flip its state back); `force` takes those too.
 * Pure: the task states come from the caller (the API's status view).
 */
import { SonicError } from '../../core/errors.js';
import type { TaskState } from '../../domain/records.js';
import type { InRecord } from '../../kafka/io.js';
import { select, type ReplaySelection } from '../../app/dlq.js';

/** Most dead letters one replay takes (one transaction); the rest wait for the next replay. */
export const MAX_REPLAY = 1000;

/**
 * Why a selected dead letter is left out: its task is not FAILED now (`not-failed`: succeeded, or
 * running again after an earlier replay), unknown to the status view or keyless (`unknown-task`),
 * or a later dead letter of the same task is in the DLQ (`superseded`: replaying both would run
 * the task twice; `force` does not take these).
 */
export type SkipReason = 'not-failed' | 'unknown-task' | 'superseded';

export interface SkippedLetter {
  position: string;
  task_id: string | null;
  task_state: TaskState | null;
  reason: SkipReason;
}

export interface ReplayPlan {
  /** The letters to replay, oldest first, at most `max`. */
  picked: InRecord[];
  skipped: SkippedLetter[];
  /** Replayable letters beyond `max`, left for the next replay. */
  remaining: number;
}

/** `partition:offset`, a dead letter's position in its DLQ. */
export const positionOf = (r: InRecord): string => `${r.partition}:${r.offset}`;

/** The task's state now, or undefined when the status view does not know it. */
export type TaskStateOf = (taskId: string) => TaskState | undefined;

/** The latest dead letter of each task in `records` (a task's letters share a partition: its key's). */
function latestPerTask(records: InRecord[]): Map<string, InRecord> {
  const latest = new Map<string, InRecord>();
  for (const r of records) {
    if (r.key === null) continue;
    const seen = latest.get(r.key);
    if (!seen || r.partition !== seen.partition || BigInt(r.offset) > BigInt(seen.offset)) latest.set(r.key, r);
  }
  return latest;
}

/**
 * The dead letters of `records` (a stage's whole DLQ) that `sel` picks and may be replayed now.
 * Throws INVALID_REQUEST on an empty selection (as {@link select}).
 */
export function planReplay(records: InRecord[], sel: ReplaySelection, stateOf: TaskStateOf, o: { force?: boolean; max?: number } = {}): ReplayPlan {
  const max = o.max ?? MAX_REPLAY;
  const latest = latestPerTask(records);
  const plan: ReplayPlan = { picked: [], skipped: [], remaining: 0 };
  for (const r of select(records, sel)) {
    const state = r.key === null ? undefined : stateOf(r.key);
    const skip = (reason: SkipReason): void => {
      plan.skipped.push({ position: positionOf(r), task_id: r.key, task_state: state ?? null, reason });
    };
    if (r.key !== null && latest.get(r.key) !== r) skip('superseded');
    else if (!o.force && state === undefined) skip('unknown-task');
    else if (!o.force && state !== 'FAILED') skip('not-failed');
    else if (plan.picked.length < max) plan.picked.push(r);
    else plan.remaining++;
  }
  return plan;
}

/**
 * The letters at `positions`, which a dry run listed, provided each is still in the DLQ and would
 * still be picked (its task still FAILED, unless `force`). Throws DLQ_SELECTION_CHANGED (409)
 * naming the ones that are not: the operator runs the dry run again.
 */
export function confirmReplay(records: InRecord[], positions: string[], stateOf: TaskStateOf, o: { force?: boolean } = {}): InRecord[] {
  if (positions.length === 0) throw new SonicError('INVALID_REQUEST', 'say which dead letters to replay: the positions the dry run listed', { safe: true });
  if (positions.length > MAX_REPLAY) throw new SonicError('INVALID_REQUEST', `at most ${MAX_REPLAY} dead letters per replay`, { safe: true });
  const plan = planReplay(records, { all: true }, stateOf, { ...o, max: Infinity });
  const pickable = new Map(plan.picked.map((r) => [positionOf(r), r]));
  const present = new Set(records.map(positionOf));
  const gone = positions.filter((p) => !present.has(p));
  const unselected = positions.filter((p) => present.has(p) && !pickable.has(p));
  if (gone.length || unselected.length) {
    const said = [
      gone.length ? `no longer in the DLQ: ${gone.slice(0, 10).join(', ')}` : '',
      unselected.length ? `no longer selected (task not FAILED now, or superseded): ${unselected.slice(0, 10).join(', ')}` : '',
    ];
    throw new SonicError('DLQ_SELECTION_CHANGED', `the dead letters changed since the dry run; run it again (${said.filter(Boolean).join('; ')})`, {
      safe: true,
    });
  }
  return [...new Set(positions)].map((p) => pickable.get(p)!);
}
