import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { combineLag, partitionLag, type PartitionLag } from '../../src/kafka/lag.js';
import { firstValueFrom } from 'rxjs';
import { Context } from '../../src/app/context.js';
import {
  boundReplicas,
  buildReport,
  drainReplicas,
  formatDuration,
  formatLag,
  kedaReplicas,
  lagGauges,
  lagSamples$,
  serveLagExporter,
  type OffsetSample,
} from '../../src/ops/lag.js';
import { defineTopology } from '../../src/runtime/topology.js';

const bounds = { partitions: 12, minReplicas: 1, maxReplicas: 8 };

describe('KEDA rule: ceil(totalLag / lagThreshold), bounded', () => {
  it('rounds up', () => {
    expect(kedaReplicas(101, 50, bounds)).toBe(3);
    expect(kedaReplicas(100, 50, bounds)).toBe(2);
    expect(kedaReplicas(1, 50, bounds)).toBe(1);
    expect(kedaReplicas(51, 10, { partitions: 12, minReplicas: 1 })).toBe(6);
  });
  it('zero (or negative) lag gives minReplicas', () => {
    expect(kedaReplicas(0, 50, bounds)).toBe(1);
    expect(kedaReplicas(0, 50, { ...bounds, minReplicas: 3 })).toBe(3);
    expect(kedaReplicas(-5, 50, { ...bounds, minReplicas: 2 })).toBe(2);
  });
  it('is capped at the partition count and at maxReplicas', () => {
    expect(kedaReplicas(10_000, 10, { partitions: 4, minReplicas: 1 })).toBe(4);
    expect(kedaReplicas(10_000, 10, { partitions: 12, minReplicas: 1, maxReplicas: 8 })).toBe(8);
    expect(kedaReplicas(10_000, 10, { partitions: 3, minReplicas: 1, maxReplicas: 8 })).toBe(3);
  });
  it('minReplicas wins over the caps', () => {
    expect(kedaReplicas(10_000, 10, { partitions: 2, minReplicas: 3 })).toBe(3);
  });
  it('scales to zero at or below the activation threshold only when minReplicas is 0', () => {
    expect(kedaReplicas(0, 10, { partitions: 12, minReplicas: 0 })).toBe(0);
    expect(kedaReplicas(5, 10, { partitions: 12, minReplicas: 0, activationLagThreshold: 5 })).toBe(0);
    expect(kedaReplicas(6, 10, { partitions: 12, minReplicas: 0, activationLagThreshold: 5 })).toBe(1);
    expect(kedaReplicas(5, 10, { partitions: 12, minReplicas: 1, activationLagThreshold: 5 })).toBe(1);
  });
  it('refuses a threshold of 0', () => {
    expect(() => kedaReplicas(5, 0, bounds)).toThrow(RangeError);
  });
});

describe('sonicflow rule: ceil(totalLag × secondsPerRecord / targetDrainSeconds), bounded', () => {
  it('rounds up, without overshooting exact multiples through floating point', () => {
    expect(drainReplicas(3, 0.1, 0.1, bounds)).toBe(3); // 3 × 0.1 / 0.1 = 3.0000000000000004 in floating point
    expect(drainReplicas(100, 0.3, 10, bounds)).toBe(3);
    expect(drainReplicas(101, 0.3, 10, bounds)).toBe(4);
    expect(drainReplicas(600, 1, 300, bounds)).toBe(2);
    expect(drainReplicas(601, 1, 300, bounds)).toBe(3);
  });
  it('zero lag or zero work gives minReplicas', () => {
    expect(drainReplicas(0, 5, 60, bounds)).toBe(1);
    expect(drainReplicas(0, 5, 60, { ...bounds, minReplicas: 2 })).toBe(2);
    expect(drainReplicas(1000, 0, 60, { ...bounds, minReplicas: 0 })).toBe(0);
  });
  it('is capped at the partitions and maxReplicas, at least minReplicas', () => {
    expect(drainReplicas(1_000_000, 1, 60, { partitions: 4, minReplicas: 1 })).toBe(4);
    expect(drainReplicas(1_000_000, 1, 60, { partitions: 12, minReplicas: 1, maxReplicas: 8 })).toBe(8);
    expect(drainReplicas(1, 0.001, 60, { partitions: 12, minReplicas: 2 })).toBe(2);
  });
  it('differs from KEDA when records are slow: 20 records of 30 s each within 600 s need 1, KEDA (threshold 2) says 10', () => {
    expect(drainReplicas(20, 30, 600, bounds)).toBe(1);
    expect(kedaReplicas(20, 2, { ...bounds, maxReplicas: 12 })).toBe(10);
  });
  it('refuses a target of 0 and a negative cost', () => {
    expect(() => drainReplicas(5, 1, 0, bounds)).toThrow(RangeError);
    expect(() => drainReplicas(5, -1, 10, bounds)).toThrow(RangeError);
  });
  it('boundReplicas: caps then floor', () => {
    expect(boundReplicas(7, { partitions: 5, minReplicas: 1 })).toBe(5);
    expect(boundReplicas(0, { partitions: 5, minReplicas: 1 })).toBe(1);
    expect(boundReplicas(3, { partitions: 0, minReplicas: 1 })).toBe(1);
  });
});

describe('partition lag', () => {
  it('is end − committed, like the Kafka tool; without a commit, the retained backlog', () => {
    expect(partitionLag(40n, 101n, 0n)).toBe(61n);
    expect(partitionLag(-1n, 101n, 20n)).toBe(81n);
    expect(partitionLag(120n, 101n, 0n)).toBe(-19n); // truncated log: the tool shows it negative too
  });
  it('combineLag fills missing commits with -1 and sorts', () => {
    const rows = combineLag('g', new Map([['t:1', 5n]]), [
      { topic: 't', partition: 1, earliest: 0n, stable: 9n, end: 10n },
      { topic: 't', partition: 0, earliest: 2n, stable: 7n, end: 7n },
    ]);
    expect(rows.map((r) => [r.partition, r.committed, r.lag])).toEqual([
      [0, -1n, 5n],
      [1, 5n, 5n],
    ]);
  });
});

const topology = defineTopology({
  name: 't',
  prefix: 'p',
  status: 'status',
  defaults: { partitions: 2, retry: { delaysMs: [1000], maxAttempts: 2 } },
  topics: { in: { doc: 'in' }, out: { doc: 'out' }, status: { role: 'status', doc: 's' } },
  stages: { work: { doc: 'w', input: 'in', outputs: { o: 'out' }, scaling: { minReplicas: 1, maxReplicas: 2, lagThreshold: 10, targetDrainSeconds: 10 } } },
});

function row(topic: string, partition: number, committed: bigint, end: bigint, earliest = 0n): PartitionLag {
  return { groupId: 'sonicflow.p.work', topic, partition, committed, end, earliest, stable: end, lag: partitionLag(committed, end, earliest) };
}
function sample(at: number, members: number, rows: PartitionLag[]): OffsetSample {
  return { at, stages: [{ stage: 'work', groupId: 'sonicflow.p.work', topics: ['p.in', 'p.work.retry.1'], missingTopics: [], members, partitions: rows }] };
}

describe('buildReport', () => {
  const s1 = sample(1000, 2, [row('p.in', 0, 10n, 100n), row('p.in', 1, -1n, 50n), row('p.work.retry.1', 0, -1n, 0n), row('p.work.retry.1', 1, -1n, 0n)]);
  const s2 = sample(3000, 2, [row('p.in', 0, 30n, 120n), row('p.in', 1, 20n, 50n), row('p.work.retry.1', 0, -1n, 0n), row('p.work.retry.1', 1, -1n, 4n)]);

  it('one sample: lag, no rates, no drain time, no sonicflow count unless given', () => {
    const r = buildReport(topology, s1, undefined);
    const st = r.stages[0]!;
    expect(st.lag).toBe(90n + 50n);
    expect(st.partitions).toBe(2);
    expect([st.inRate, st.outRate, st.drainSeconds, st.replicas.sonicflow, r.intervalSeconds]).toEqual([null, null, null, null, null]);
    expect(st.replicas.keda).toBe(2); // ceil(140/10) = 14, capped at maxReplicas 2
    expect(buildReport(topology, s1, undefined, { secondsPerRecord: { work: 0.1 } }).stages[0]!.replicas.sonicflow).toBe(2); // ceil(140*0.1/10)=2
  });

  it('two samples: rates from offset deltas, drain = lag / processing rate, measured seconds per record', () => {
    const st = buildReport(topology, s2, s1).stages[0]!;
    // appended: 20 on p.in/0, 4 on retry/1, over 2 s; processed: 20 on p.in/0 and 20 on p.in/1 (first commit, from earliest 0)
    expect(st.inRate).toBe(12);
    expect(st.outRate).toBe(20);
    expect(st.lag).toBe(90n + 30n + 4n);
    expect(st.drainSeconds).toBeCloseTo(124 / 20);
    expect(st.secondsPerRecordSource).toBe('measured');
    expect(st.secondsPerRecord).toBeCloseTo(2 / 20); // two members share 20 records/s
    expect(st.replicas.sonicflow).toBe(2); // ceil(124 * 0.1 / 10) = 2
    const p1 = st.rows.find((r) => r.topic === 'p.in' && r.partition === 1)!;
    expect([p1.inRate, p1.outRate]).toEqual([0, 10]);
  });

  it('falls back to 1 / processing rate without members, and to null when nothing was processed', () => {
    expect(buildReport(topology, { ...s2, stages: [{ ...s2.stages[0]!, members: 0 }] }, s1).stages[0]!.secondsPerRecordSource).toBe('group-rate');
    const idle = buildReport(topology, sample(3000, 1, s1.stages[0]!.partitions), s1).stages[0]!;
    expect([idle.outRate, idle.drainSeconds, idle.secondsPerRecord, idle.replicas.sonicflow]).toEqual([0, null, null, null]);
  });

  it('zero lag drains in 0 s and recommends minReplicas', () => {
    const done = sample(5000, 1, [row('p.in', 0, 120n, 120n), row('p.in', 1, 50n, 50n)]);
    const st = buildReport(topology, done, s2).stages[0]!;
    expect([st.lag, st.drainSeconds, st.replicas.keda, st.replicas.sonicflow]).toEqual([0n, 0, 1, 1]);
    // no rate, nothing given: without lag, sonicflow's rule still says minReplicas
    expect(buildReport(topology, done, undefined).stages[0]!.replicas.sonicflow).toBe(1);
  });

  it('formatLag prints the stage line and, with partitions, the Kafka tool columns', () => {
    const text = formatLag(buildReport(topology, s2, s1), { partitions: true });
    expect(text).toMatch(/^STAGE\s+GROUP\s+PARTITIONS\s+LAG\s+IN\/S\s+OUT\/S\s+DRAIN\s+KEDA\s+SONICFLOW$/m);
    expect(text).toMatch(/^work\s+sonicflow\.p\.work\s+2\s+124\s+12\.0\s+20\.0\s+7s\s+2\s+2$/m);
    expect(text).toMatch(/^p\.work\.retry\.1\s+1\s+-\s+4\s+4\s+2\.0\s+0\.0$/m);
    expect(formatLag(buildReport(topology, s1, undefined))).not.toMatch(/CURRENT-OFFSET/);
  });

  it('formatDuration', () => {
    expect([formatDuration(null), formatDuration(0), formatDuration(42.2), formatDuration(185), formatDuration(7440)]).toEqual([
      '-',
      '0s',
      '43s',
      '3m05s',
      '2h04m',
    ]);
  });
});

describe('exporter gauges', () => {
  it('kafka_exporter semantics: -1 for an uncommitted partition of a consumed topic, sum of committed ones, nothing for untouched topics', async () => {
    const registry = new Registry();
    lagGauges(registry)(
      buildReport(topology, sample(1000, 1, [row('p.in', 0, 10n, 100n), row('p.in', 1, -1n, 50n), row('p.work.retry.1', 0, -1n, 3n)]), undefined),
    );
    const text = await registry.metrics();
    expect(text).toContain('kafka_consumergroup_lag{consumergroup="sonicflow.p.work",topic="p.in",partition="0"} 90');
    expect(text).toContain('kafka_consumergroup_lag{consumergroup="sonicflow.p.work",topic="p.in",partition="1"} -1');
    expect(text).toContain('kafka_consumergroup_current_offset{consumergroup="sonicflow.p.work",topic="p.in",partition="1"} -1');
    expect(text).toContain('kafka_consumergroup_lag_sum{consumergroup="sonicflow.p.work",topic="p.in"} 90');
    expect(text).not.toMatch(/kafka_consumergroup_lag\{[^}]*topic="p\.work\.retry\.1"/);
    expect(text).toContain('kafka_topic_partition_current_offset{topic="p.work.retry.1",partition="0"} 3');
    expect(text).toContain('sonicflow_stage_lag{stage="work"} 143');
    expect(text).toContain('sonicflow_stage_recommended_replicas{stage="work",rule="keda"} 2');
    expect(text).not.toContain('rule="sonicflow"');
    expect(text).not.toMatch(/sonicflow_stage_drain_seconds\{/);
  });
});

describe('sampler and exporter arguments (no broker reached)', () => {
  const ctx = new Context({ SONIC_LOG_LEVEL: 'silent' }, 'test');
  it('an unknown stage or a non-positive interval fails at subscription', async () => {
    await expect(firstValueFrom(lagSamples$(ctx, topology, 1000, { stages: ['nope'] }))).rejects.toThrow(/no stage named nope/);
    await expect(firstValueFrom(lagSamples$(ctx, topology, 0))).rejects.toThrow(/interval/);
    await expect(serveLagExporter(ctx, topology, 0, 1000, { stages: ['nope'] })).rejects.toThrow(/no stage named nope/);
  });
});
