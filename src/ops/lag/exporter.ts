/**
 * The lag exporter: kafka_exporter's series (so Grafana dashboard 7589 works) plus sonicflow's
 * per-stage figures, refreshed by the sampler; a scrape never reaches Kafka.
 */
import { Gauge, Registry } from 'prom-client';
import { serveMetrics } from '../../core/metrics.js';
import type { Topology } from '../../runtime/topology.js';
import type { Context } from '../../app/context.js';
import type { LagOptions, StageLagReport } from '../../app/lag/report.js';
import { lagSamples$ } from '../../app/lag/sample.js';

export interface LagExporter {
  port: number;
  close(): Promise<void>;
}

/** The exporter's gauges in `registry`, and the function that writes a report into them. */
export function lagGauges(registry: Registry): (report: StageLagReport) => void {
  const g = <L extends string>(name: string, help: string, labelNames: L[]): Gauge<L> => new Gauge({ name, help, labelNames, registers: [registry] });
  const groupLag = g('kafka_consumergroup_lag', 'Current approximate lag of a consumer group at topic/partition (-1: nothing committed).', [
    'consumergroup',
    'topic',
    'partition',
  ]);
  const groupLagSum = g('kafka_consumergroup_lag_sum', 'Current approximate lag of a consumer group at topic for all partitions (committed ones).', [
    'consumergroup',
    'topic',
  ]);
  const groupOffset = g('kafka_consumergroup_current_offset', 'Current offset of a consumer group at topic/partition (-1: nothing committed).', [
    'consumergroup',
    'topic',
    'partition',
  ]);
  const topicOffset = g('kafka_topic_partition_current_offset', 'Current offset (high watermark) of a topic/partition.', ['topic', 'partition']);
  const stageLagG = g(
    'sonicflow_stage_lag',
    'Records (offsets) a stage has yet to process over its input and retry tiers, uncommitted partitions counting their whole backlog.',
    ['stage'],
  );
  const replicas = g(
    'sonicflow_stage_recommended_replicas',
    "Replicas recommended by KEDA's rule (ceil(lag/lagThreshold)) and sonicflow's (ceil(lag*s_per_record/targetDrainSeconds)).",
    ['stage', 'rule'],
  );
  const drain = g('sonicflow_stage_drain_seconds', "Estimated time to drain the stage's lag at its processing rate (+Inf: lag but nothing processed).", [
    'stage',
  ]);
  const sampled = g('sonicflow_lag_sample_timestamp_seconds', 'When the figures were sampled from Kafka.', []);
  const all = [groupLag, groupLagSum, groupOffset, topicOffset, stageLagG, replicas, drain];

  return (report) => {
    for (const m of all) m.reset(); // series of vanished partitions or groups go away
    for (const s of report.stages) {
      // kafka_exporter: topics the group has committed on; -1 where a partition has nothing
      for (const topic of s.topics) {
        const rows = s.rows.filter((r) => r.topic === topic);
        for (const r of rows) topicOffset.set({ topic, partition: String(r.partition) }, Number(r.end));
        if (!rows.some((r) => r.committed >= 0n)) continue;
        let sum = 0n;
        for (const r of rows) {
          const labels = { consumergroup: s.groupId, topic, partition: String(r.partition) };
          groupOffset.set(labels, Number(r.committed));
          groupLag.set(labels, r.committed >= 0n ? Number(r.end - r.committed) : -1);
          if (r.committed >= 0n) sum += r.end - r.committed;
        }
        groupLagSum.set({ consumergroup: s.groupId, topic }, Number(sum));
      }
      stageLagG.set({ stage: s.stage }, Number(s.lag));
      replicas.set({ stage: s.stage, rule: 'keda' }, s.replicas.keda);
      if (s.replicas.sonicflow !== null) replicas.set({ stage: s.stage, rule: 'sonicflow' }, s.replicas.sonicflow);
      if (s.drainSeconds !== null) drain.set({ stage: s.stage }, s.drainSeconds);
      else if (report.intervalSeconds !== null) drain.set({ stage: s.stage }, Number.POSITIVE_INFINITY);
    }
    sampled.set(report.at.getTime() / 1000);
  };
}

/**
 * Serves `/metrics` (plus `/healthz`, and `/readyz` once a sample arrived) on `port` (0: any free
 * port), the values refreshed by a sampler every `intervalMs`. Resolves once listening and the
 * first sample is in (or failed, or 10 s passed).
 */
export async function serveLagExporter(ctx: Context, topology: Topology, port: number, intervalMs: number, opts: LagOptions = {}): Promise<LagExporter> {
  const registry = new Registry();
  const update = lagGauges(registry);
  let sampled = false;
  let failed: unknown;
  let markFirst!: () => void;
  const first = new Promise<void>((r) => (markFirst = r));
  const subscription = lagSamples$(ctx, topology, intervalMs, opts).subscribe({
    next: (report) => {
      update(report);
      sampled = true;
      markFirst();
    },
    error: (err: unknown) => {
      failed = err;
      ctx.logger.error({ err }, 'lag sampler stopped');
      markFirst();
    },
  });
  // a sampler that cannot start (unknown stage, bad interval) fails the call
  if (failed !== undefined) throw failed;
  try {
    const { server, port: bound } = await serveMetrics(port, registry, { live: () => failed === undefined, ready: () => sampled }, ctx.logger);
    const wait = setTimeout(markFirst, Math.max(10_000, intervalMs));
    await first;
    clearTimeout(wait);
    return {
      port: bound,
      close: async () => {
        subscription.unsubscribe();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  } catch (err) {
    subscription.unsubscribe();
    throw err;
  }
}
