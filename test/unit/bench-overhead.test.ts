/**
 * The overhead bench's reading of status events (bench/overhead.ts): which event marks which
 * stage's end, the hops left once handler times are taken off, and the part of the infer hop that
 * is waiting for a busy worker.
 */
import { describe, expect, it } from 'vitest';
import { overheadOf, spread, timelineOf, workerWaits, type StatusEventAt, type Timeline } from '../../bench/overhead.js';

const ID = '00000000-0000-4000-8000-000000000001';
const ev = (state: string, stage: string | null, at: number, more: Partial<StatusEventAt> = {}): StatusEventAt => ({
  task_id: ID,
  state,
  stage,
  attempt: 1,
  progress: null,
  at,
  ...more,
});

/** The events one task writes on its way through, as the stages write them (out of order on purpose). */
const straight = (): StatusEventAt[] => [
  ev('SUCCEEDED', 'publish', 2100),
  ev('QUEUED', null, 1000),
  ev('PREPROCESSING', 'validate', 1200),
  ev('INFERRING', 'preprocess', 1500),
  ev('INFERRING', 'infer', 1560, { progress: 0 }),
  ev('INFERRING', 'infer', 1700, { progress: 0.5 }),
  ev('ENCODING', 'infer', 1800),
  ev('PUBLISHING', 'encode', 2000),
];

describe('pipeline overhead from status events', () => {
  it('takes each stage end from its done event and the infer start from its progress-0 event', () => {
    const t = timelineOf(ID, straight()) as Timeline;
    expect(t).toEqual({
      taskId: ID,
      queuedAt: 1000,
      inferStart: 1560,
      end: { validate: 1200, preprocess: 1500, infer: 1800, encode: 2000, publish: 2100 },
    });
  });

  it('leaves out a task that was retried or lacks an event, saying why', () => {
    expect(timelineOf(ID, [...straight(), ev('PREPROCESSING', 'preprocess', 1300, { attempt: 2 })])).toEqual({ skipped: 'retried' });
    expect(
      timelineOf(
        ID,
        straight().filter((e) => e.progress !== 0),
      ),
    ).toEqual({ skipped: 'no event for infer start' });
  });

  it('splits end to end into handler times and five hops that add up to the overhead', () => {
    const t = timelineOf(ID, straight()) as Timeline;
    const o = overheadOf(t, { validate: 150, preprocess: 250, encode: 180, publish: 70 }, 10);
    expect(o.e2eMs).toBe(1100);
    expect(o.handlerMs.infer).toBe(240);
    expect(o.hopMs).toEqual([50, 50, 50, 20, 30]);
    expect(o.workerWaitMs).toBe(10);
    expect(o.overheadMs).toBe(200);
    const handlers = Object.values(o.handlerMs).reduce((a, b) => a + b, 0);
    expect(o.overheadMs + handlers + o.workerWaitMs).toBe(o.e2eMs);
  });

  it('counts as waiting only the time a single worker was rendering another task after this one was ready', () => {
    const line = (taskId: string, ready: number, start: number, end: number): Timeline => ({
      taskId,
      queuedAt: 0,
      inferStart: start,
      end: { validate: 0, preprocess: ready, infer: end, encode: end, publish: end },
    });
    const waits = workerWaits(
      [
        line('a', 100, 110, 500), // idle worker: no wait
        line('b', 200, 520, 900), // ready at 200, worker busy with a until 500
        line('c', 950, 990, 1200), // worker idle since 900
      ],
      1,
    );
    expect(Object.fromEntries(waits)).toEqual({ a: 0, b: 300, c: 0 });
    // with two workers, a alone never fills them: nobody waits
    expect(Object.fromEntries(workerWaits([line('a', 100, 110, 500), line('b', 200, 210, 900)], 2))).toEqual({ a: 0, b: 0 });
  });

  it('summarises with nearest-rank median and p90, and the mean', () => {
    expect(spread([10, 1, 3, 2])).toEqual({ median: 2, p90: 10, max: 10, mean: 4 });
  });
});
