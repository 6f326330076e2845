/**
 * Where a Sonic task's time goes, from its status events (bench/pipeline-overhead.ts): time inside
 * each stage's handler, and the gaps between one stage's end and the next one's start (the hops).
 *
 * What the events mark (src/runtime/program.ts, src/stages/status.ts): the API writes QUEUED
 * (`at`: the media stored, just before its enqueue transaction). A stage of the task path writes
 * one event when its handler has succeeded and its outputs are encoded, before its transaction
 * commits; its state is the next stage's (validate → PREPROCESSING, preprocess → INFERRING,
 * infer → ENCODING, encode → PUBLISHING, publish → SUCCEEDED). Only infer (`reportStart`) also
 * writes an event when its handler starts (INFERRING, progress 0). dispatch and notify write
 * none. So the events bracket infer's handler alone; the handler time of the other stages
 * comes from elsewhere (the stages' handler histograms) and is taken off the gap their event
 * closes.
 */
import { percentile } from './lib.js';

/** The stages of the task path with a handler, in order. */
export const STAGES = ['validate', 'preprocess', 'infer', 'encode', 'publish'] as const;
export type PathStage = (typeof STAGES)[number];

/** The five hops, each ending at the start of a stage's handler. */
export const HOPS = ['api → validate', 'validate → preprocess', 'preprocess → dispatch → infer', 'infer → encode', 'encode → publish'] as const;

/** The state a stage's done event carries. */
const DONE_STATE: Record<PathStage, string> = {
  validate: 'PREPROCESSING',
  preprocess: 'INFERRING',
  infer: 'ENCODING',
  encode: 'PUBLISHING',
  publish: 'SUCCEEDED',
};

/** A decoded task-status event, `at` in epoch ms. */
export interface StatusEventAt {
  task_id: string;
  state: string;
  stage: string | null;
  attempt: number;
  progress: number | null;
  at: number;
}

/** One task's marks, epoch ms (every process runs on one machine: one clock). */
export interface Timeline {
  taskId: string;
  queuedAt: number;
  inferStart: number;
  /** When each stage's handler was done (its done event). */
  end: Record<PathStage, number>;
}

/**
 * The marks of one task from its events; undefined, with the reason, for a task that did not run
 * straight through (retried, failed, or an event missing).
 */
export function timelineOf(taskId: string, events: StatusEventAt[]): Timeline | { skipped: string } {
  if (events.some((e) => e.attempt > 1)) return { skipped: 'retried' };
  if (events.some((e) => e.state === 'FAILED')) return { skipped: 'failed' };
  const queued = events.find((e) => e.state === 'QUEUED' && e.stage === null);
  const inferStart = events.find((e) => e.stage === 'infer' && e.state === 'INFERRING' && e.progress === 0);
  const end: Partial<Record<PathStage, number>> = {};
  for (const s of STAGES) {
    const done = events.find((e) => e.stage === s && e.state === DONE_STATE[s]);
    if (done) end[s] = done.at;
  }
  const missing = [...(queued ? [] : ['QUEUED']), ...(inferStart ? [] : ['infer start']), ...STAGES.filter((s) => end[s] === undefined)];
  if (missing.length > 0) return { skipped: `no event for ${missing.join(', ')}` };
  return { taskId, queuedAt: queued!.at, inferStart: inferStart!.at, end: end as Record<PathStage, number> };
}

/** One task's split, ms. */
export interface TaskOverhead {
  taskId: string;
  /** QUEUED → SUCCEEDED. */
  e2eMs: number;
  handlerMs: Record<PathStage, number>;
  /** Per hop (HOPS order): the gap between the stage before and the handler after, less `workerWaitMs` for the infer hop. */
  hopMs: number[];
  /** Of the infer hop: time infer was busy with other tasks while this one was ready for it. */
  workerWaitMs: number;
  /** e2eMs minus every handler and the worker wait: the hops' sum. */
  overheadMs: number;
}

/**
 * The split of a task: infer's handler time from its events, the others' from `handlerMs`
 * (measured per task, or a stage's mean when only that is known).
 */
export function overheadOf(t: Timeline, handlerMs: Record<Exclude<PathStage, 'infer'>, number>, workerWaitMs = 0): TaskOverhead {
  const h: Record<PathStage, number> = { ...handlerMs, infer: t.end.infer - t.inferStart };
  const hopMs = [
    t.end.validate - h.validate - t.queuedAt,
    t.end.preprocess - h.preprocess - t.end.validate,
    t.inferStart - t.end.preprocess - workerWaitMs,
    t.end.encode - h.encode - t.end.infer,
    t.end.publish - h.publish - t.end.encode,
  ];
  const e2eMs = t.end.publish - t.queuedAt;
  return { taskId: t.taskId, e2eMs, handlerMs: h, hopMs, workerWaitMs, overheadMs: hopMs.reduce((a, b) => a + b, 0) };
}

/**
 * For each task, how long infer was busy with others (all `slots` renders running) between the
 * task being ready for it (preprocess done) and its render starting: the part of the infer hop
 * that is waiting for a free worker, not transport. Uses every task's infer interval, so give it
 * every task that ran in the window.
 */
export function workerWaits(timelines: Timeline[], slots: number): Map<string, number> {
  const edges = timelines.flatMap((t) => [
    { at: t.inferStart, d: 1 },
    { at: t.end.infer, d: -1 },
  ]);
  // ends before starts at the same instant: a worker freed and taken again was not saturated in between
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  const saturated: [number, number][] = [];
  let running = 0;
  let since = 0;
  for (const e of edges) {
    if (e.d > 0 && ++running === slots) since = e.at;
    if (e.d < 0 && running-- === slots) saturated.push([since, e.at]);
  }
  const out = new Map<string, number>();
  for (const t of timelines) {
    // the task itself is not running before its start: any full use in [ready, start] is others'
    const ready = t.end.preprocess;
    out.set(
      t.taskId,
      saturated.reduce((sum, [from, to]) => sum + Math.max(0, Math.min(to, t.inferStart) - Math.max(from, ready)), 0),
    );
  }
  return out;
}

/** median and p90 (nearest rank), max and mean of `values`, ms. */
export interface Spread {
  median: number;
  p90: number;
  max: number;
  mean: number;
}

export function spread(values: number[]): Spread {
  const n = values.length;
  return {
    median: percentile(values, 50),
    p90: percentile(values, 90),
    max: n ? Math.max(...values) : Number.NaN,
    mean: n ? values.reduce((a, b) => a + b, 0) / n : Number.NaN,
  };
}
