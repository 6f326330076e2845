import { describe, expect, it } from 'vitest';
import { desiredReplicas, desiredWorkers, metricValue, workersToStop, type WorkScaleInputs } from '../../src/ops/autoscale.js';

// infer behind a dispatcher: 4 input partitions upstream, 24 slots (partitions of the dispatcher's sink)
const base: WorkScaleInputs = { backlogSeconds: 0, outstandingSeconds: 0, outstandingRecords: 0, perWorker: 2, targetDrainSeconds: 60, min: 1, max: 24 };

describe('workers of a dispatcher: replicas from GPU-seconds', () => {
  it('asks for ceil((backlog + outstanding seconds) / target drain seconds): 300 s at 60 s is 5, above the 4 input partitions', () => {
    expect(desiredWorkers({ ...base, backlogSeconds: 300 })).toBe(5);
    expect(desiredWorkers({ ...base, backlogSeconds: 240, outstandingSeconds: 60 })).toBe(5);
    expect(desiredWorkers({ ...base, backlogSeconds: 240, outstandingSeconds: 61 })).toBe(6);
    // any count is useful, not only divisors of the slots
    expect(desiredWorkers({ ...base, backlogSeconds: 420 })).toBe(7);
    // the lag rule on the workers' input would have asked for the minimum: their lag is 2 per worker at most
    expect(desiredReplicas({ lag: 2, secondsPerRecord: 30, targetDrainSeconds: 60, min: 1, max: 24 })).toBe(1);
  });

  it('does not add a GPU for a rounding hair above a whole multiple', () => {
    expect(desiredWorkers({ ...base, targetDrainSeconds: 0.3, backlogSeconds: 0.1 + 0.2 + 0.3 })).toBe(2);
  });

  it('is capped by the slots (max) and --max, and never below min', () => {
    expect(desiredWorkers({ ...base, backlogSeconds: 100_000 })).toBe(24);
    expect(desiredWorkers({ ...base, backlogSeconds: 100_000, max: 8 })).toBe(8);
    expect(desiredWorkers({ ...base, backlogSeconds: 30, min: 3 })).toBe(3);
  });

  it('idle (nothing waiting, nothing out) is min', () => {
    expect(desiredWorkers(base)).toBe(1);
    expect(desiredWorkers({ ...base, min: 2 })).toBe(2);
  });

  it('never goes below the busy workers: 4 workers each on one 300 s render, nothing waiting, target 600 s are 4, not 2', () => {
    const four = { ...base, targetDrainSeconds: 600, outstandingSeconds: 4 * 300, outstandingRecords: 4, busyWorkers: 4 };
    expect(desiredWorkers(four)).toBe(4);
    // the seconds alone (and the records at 2 per worker) ask for 2: the two others would be stopped mid-render
    const { busyWorkers: _ignored, ...unreported } = four;
    expect(desiredWorkers(unreported)).toBe(2);
    // more work than the busy workers: the seconds decide
    expect(desiredWorkers({ ...four, backlogSeconds: 3000 })).toBe(7);
    // within max and above min
    expect(desiredWorkers({ ...four, max: 3 })).toBe(3);
    expect(desiredWorkers({ ...four, busyWorkers: 1, outstandingRecords: 1, outstandingSeconds: 300, min: 2 })).toBe(2);
  });

  it('idle (nothing waiting, nothing out, no busy worker) is min, whatever was busy before', () => {
    expect(desiredWorkers({ ...base, targetDrainSeconds: 600, busyWorkers: 0 })).toBe(1);
    expect(desiredWorkers({ ...base, targetDrainSeconds: 600, busyWorkers: 0, min: 2 })).toBe(2);
  });

  it('keeps at least the workers that hold the records already dispatched (1 + queuePerWorker each)', () => {
    // 7 short records out, 2 per worker: 4 workers hold them, though their seconds need 1
    expect(desiredWorkers({ ...base, outstandingSeconds: 7, outstandingRecords: 7 })).toBe(4);
    expect(desiredWorkers({ ...base, outstandingSeconds: 7, outstandingRecords: 7, perWorker: 1 })).toBe(7);
    expect(desiredWorkers({ ...base, outstandingSeconds: 7, outstandingRecords: 7, max: 3 })).toBe(3);
  });
});

describe('scale-down: which workers to stop', () => {
  const w = (name: string, inFlight: number | undefined) => ({ name, inFlight });

  it('stops idle workers first, newest first, and a busy one only when the idle ones are not enough', () => {
    const workers = [w('a', 0), w('b', 1), w('c', 0), w('d', 1), w('e', 0)];
    expect(workersToStop(workers, 2).map((x) => x.name)).toEqual(['e', 'c']);
    expect(workersToStop(workers, 3).map((x) => x.name)).toEqual(['e', 'c', 'a']);
    expect(workersToStop(workers, 4).map((x) => x.name)).toEqual(['e', 'c', 'a', 'd']);
  });

  it('puts workers that did not answer between idle and busy ones; stops none for 0', () => {
    const workers = [w('busy', 1), w('silent', undefined), w('idle', 0)];
    expect(workersToStop(workers, 1).map((x) => x.name)).toEqual(['idle']);
    expect(workersToStop(workers, 2).map((x) => x.name)).toEqual(['idle', 'silent']);
    expect(workersToStop(workers, 0)).toEqual([]);
    expect(workersToStop(workers, 5)).toHaveLength(3);
  });
});

describe('reading the gauges from /metrics text', () => {
  const text = [
    '# HELP sonicflow_dispatch_backlog_seconds Estimated worker-seconds',
    '# TYPE sonicflow_dispatch_backlog_seconds gauge',
    'sonicflow_dispatch_backlog_seconds{stage="dispatch"} 12.5',
    'sonicflow_dispatch_backlog_seconds{stage="other"} 100',
    'sonicflow_dispatch_backlog_seconds_total{stage="dispatch"} 999',
    'sonicflow_in_flight_records{stage="infer"} 1',
  ].join('\n');

  it("sums a metric's series of one stage; undefined without any", () => {
    expect(metricValue(text, 'sonicflow_dispatch_backlog_seconds', 'dispatch')).toBe(12.5);
    expect(metricValue(text, 'sonicflow_in_flight_records', 'infer')).toBe(1);
    expect(metricValue(text, 'sonicflow_in_flight_records', 'prep')).toBeUndefined();
    expect(metricValue(text, 'sonicflow_dispatch_active', 'dispatch')).toBeUndefined();
  });
});
