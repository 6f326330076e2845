/**
 * `sonicflow lag`: how far behind each stage is, how fast records arrive and leave, how long
 * the backlog takes to drain, and how many replicas two scaling rules would run.
 *
 * - Lag per partition is Kafka's (`src/kafka/lag.ts`): high watermark − committed offset, with
 *   transaction markers counted, so it equals `kafka-consumer-groups --describe`. A partition the
 *   group never committed counts its whole retained backlog (a stage starts from the earliest
 *   offset). A stage's lag is the sum over its input and retry-tier partitions (negative
 *   partition lags, after a truncation, count as 0).
 * - Rates come from two samples: input rate = end-offset growth per second (records appended to
 *   the input and retry tiers), processing rate = committed-offset growth per second. Both count
 *   offsets, markers included, like the lag they are compared with.
 * - Replicas, side by side:
 *   KEDA's Kafka scaler: `ceil(totalLag / lagThreshold)`;
 *   sonicflow's: `ceil(totalLag × secondsPerRecord / targetDrainSeconds)`, the replicas that drain
 *   the backlog in the stage's target time. Both are capped at the input's partition count (more
 *   consumers than partitions idle) and the stage's maxReplicas, and are at least minReplicas.
 *   secondsPerRecord is given per stage, or measured as active members / processing rate (the
 *   time one replica spends per record while it has work), or else 1 / processing rate.
 *   Neither rule counts the inflow: with lag 0 both say minReplicas.
 * - The exporter serves kafka_exporter's series (so Grafana dashboard 7589 works) plus
 *   sonicflow's per-stage figures, refreshed by the sampler; a scrape never reaches Kafka.
 *
 * The parts: `src/app/lag/report.ts` (the replica rules and the report, pure), `src/app/lag/sample.ts` (reading
 * the groups, once or every interval), `lag/format.ts` (the text), `lag/exporter.ts` (Prometheus).
 */
export { serveLagExporter, lagGauges, type LagExporter } from './lag/exporter.js';
export { formatDuration, formatLag } from './lag/format.js';
export { boundReplicas, buildReport, drainReplicas, kedaReplicas, type LagOptions, type OffsetSample, type StageLagReport } from '../app/lag/report.js';
export { lagSamples$, sampleOffsets, stageLag } from '../app/lag/sample.js';
