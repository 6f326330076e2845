import { describe, expect, it } from 'vitest';
import { bucketQuantile, parseExposition, stageRuntime, type StageSeries } from '../../src/app/stage-metrics.js';

/** A stage process's exposition with `n` records handled, each in (0.02, 0.1] s but one in (1, 2.5]. */
const exposition = (n: number, inFlight = 0): string =>
  [
    '# HELP sonicflow_records_total Input records by outcome.',
    `sonicflow_records_total{stage="validate",outcome="ok",service="stage"} ${n - 1}`,
    'sonicflow_records_total{stage="validate",outcome="retry",service="stage"} 1',
    `sonicflow_handler_duration_seconds_bucket{le="0.02",stage="validate",outcome="ok"} 0`,
    `sonicflow_handler_duration_seconds_bucket{le="0.1",stage="validate",outcome="ok"} ${n - 1}`,
    `sonicflow_handler_duration_seconds_bucket{le="2.5",stage="validate",outcome="ok"} ${n}`,
    `sonicflow_handler_duration_seconds_bucket{le="+Inf",stage="validate",outcome="ok"} ${n}`,
    `sonicflow_handler_duration_seconds_sum{stage="validate",outcome="ok"} ${(n - 1) * 0.05 + 2}`,
    `sonicflow_in_flight_records{stage="validate"} ${inFlight}`,
    'sonicflow_records_total{stage="infer",outcome="dlq"} 2',
  ].join('\n');

describe("the stages' runtime figures from their Prometheus expositions", () => {
  it('sums the series of every process by stage', () => {
    const m = new Map<string, StageSeries>();
    parseExposition(exposition(11, 1), m);
    parseExposition(exposition(11, 2), m);
    const v = m.get('validate')!;
    expect(v.records).toEqual({ ok: 20, retry: 2 });
    expect(v.buckets.get(Number.POSITIVE_INFINITY)).toBe(22);
    expect(v.inFlight).toBe(3);
    expect(m.get('infer')!.records).toEqual({ dlq: 4 });
  });

  it("takes quantiles as Prometheus' histogram_quantile does (linear within the bucket)", () => {
    const b = new Map([
      [0.1, 50],
      [1, 100],
      [Number.POSITIVE_INFINITY, 100],
    ]);
    expect(bucketQuantile(0.5, b)).toBeCloseTo(0.1);
    expect(bucketQuantile(0.75, b)).toBeCloseTo(0.55);
    expect(bucketQuantile(0.5, new Map([[Number.POSITIVE_INFINITY, 0]]))).toBeNull();
  });

  it('rates over the change between readings, handler time over the window, a restarted process counting from zero', () => {
    const read = (text: string) => {
      const m = new Map<string, StageSeries>();
      parseExposition(text, m);
      return m.get('validate')!;
    };
    const r = stageRuntime(read(exposition(31)), read(exposition(11)), 10, read(exposition(11)));
    expect(r.recordsPerSecond).toBeCloseTo(2);
    expect(r.handlerP50).toBeGreaterThan(0.02);
    expect(r.handlerP50).toBeLessThanOrEqual(0.1);
    expect(r.meanHandlerSeconds).toBeCloseTo(0.05);
    // counters below the previous reading: the process restarted
    expect(stageRuntime(read(exposition(5)), read(exposition(11)), 10).recordsPerSecond).toBeCloseTo(0.5);
    expect(stageRuntime(read(exposition(5)), undefined, null).recordsPerSecond).toBeNull();
  });

  it('a replica that disappears takes its counters with it instead of counting everything again', () => {
    const reading = (parts: [endpoint: string, text: string][]) => {
      const m = new Map<string, StageSeries>();
      for (const [endpoint, text] of parts) parseExposition(text, m, endpoint);
      return m.get('validate')!;
    };
    const ok = (n: number, instance = '') => `sonicflow_records_total{stage="validate",outcome="ok"${instance}} ${n}`;
    // one /metrics per process: b is gone, a handled 2 records over 10 s
    const before = reading([
      ['http://a/metrics', ok(10000)],
      ['http://b/metrics', ok(10000)],
    ]);
    expect(stageRuntime(reading([['http://a/metrics', ok(10002)]]), before, 10).recordsPerSecond).toBeCloseTo(0.2);
    // behind one /federate: the series differ by their labels
    const fed = (...xs: [string, number][]) => reading([['http://prom/federate', xs.map(([i, n]) => ok(n, `,instance="${i}"`)).join('\n')]]);
    expect(stageRuntime(fed(['a', 10002]), fed(['a', 10000], ['b', 10000]), 10).recordsPerSecond).toBeCloseTo(0.2);
    // b restarted (fell to 3) and a new replica c handled 5: 2 + 3 + 5
    expect(stageRuntime(fed(['a', 10002], ['b', 3], ['c', 5]), fed(['a', 10000], ['b', 10000]), 10).recordsPerSecond).toBeCloseTo(1);
    // an endpoint that did not answer before has no baseline yet
    expect(
      stageRuntime(
        reading([
          ['http://a/metrics', ok(10002)],
          ['http://c/metrics', ok(700)],
        ]),
        reading([['http://a/metrics', ok(10000)]]),
        10,
      ).recordsPerSecond,
    ).toBeCloseTo(0.2);
  });
});
