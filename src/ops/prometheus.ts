/**
 * Prometheus file_sd targets of the stage processes, from the topology: one target group per stage
 * with its `stage` label (job sonicflow-stages in ops/prometheus/prometheus.yml).
 *   local    every stage on this host, stage i (topology order) on port 9464 + i
 *            (ops/prometheus/targets/stages.json)
 *   compose  every stage a service of ops/docker-compose.yml, each on port 9464
 *            (ops/prometheus/targets-compose/stages.json)
 */
import type { Topology } from '../runtime/topology.js';

/** SONIC_METRICS_PORT's default: the first stage's port locally, every stage's port in compose. */
export const STAGE_METRICS_PORT = 9464;

export type TargetsFor = 'local' | 'compose';

export const STAGE_TARGET_FILES: Record<TargetsFor, string> = {
  local: 'ops/prometheus/targets/stages.json',
  compose: 'ops/prometheus/targets-compose/stages.json',
};

export interface TargetGroup {
  targets: string[];
  labels: { stage: string };
}

/** The scrape target groups of every stage of `topology`, in its order. */
export function stageTargets(topology: Topology, where: TargetsFor): TargetGroup[] {
  return topology.stages.map((s, i) => ({
    targets: [where === 'local' ? `localhost:${STAGE_METRICS_PORT + i}` : `${s.name}:${STAGE_METRICS_PORT}`],
    labels: { stage: s.name },
  }));
}

/** The targets file for `where`: one group a line, as the committed files are written. */
export function renderStageTargets(topology: Topology, where: TargetsFor): string {
  const groups = stageTargets(topology, where).map(
    (g) => `  { "targets": [${g.targets.map((t) => JSON.stringify(t)).join(', ')}], "labels": { "stage": ${JSON.stringify(g.labels.stage)} } }`,
  );
  return `[\n${groups.join(',\n')}\n]\n`;
}
