/**
 * Kubernetes manifests for a topology: per stage a Deployment (`sonicflow run <stage>`) and a KEDA
 * ScaledObject scaling it on the consumer group's lag (`stage.ts`, where the choices behind them
 * are given), plus a PodMonitor for every sonicflow pod, the shared ConfigMap and the HTTP API
 * (Deployment + Service) (`shared.ts`).
 *
 * Secrets (S3 keys, API keys, webhook secrets) are never rendered: pods read them from the Secret
 * `sonicflow-secrets` when it exists.
 */
import { SonicError } from '../../core/errors.js';
import { findStage, type Topology } from '../../runtime/topology.js';
import { resolve, type RenderK8sOptions } from './common.js';
import type { K8sObject } from './objects.js';
import { apiObjects, configMap, podMonitor } from './shared.js';
import { stageDeployment, stageScaledObject } from './stage.js';
import { toYamlDocuments } from './yaml.js';

export type { RenderK8sOptions } from './common.js';
export type { ConfigMap, Deployment, K8sObject, PodMonitor, ResourceRequirements, ScaledObject, Service } from './objects.js';
export { toYaml } from './yaml.js';

/**
 * The manifests as objects, in apply order: ConfigMap, per stage its Deployment then ScaledObject,
 * the API Deployment and Service, the PodMonitor. With `opts.stage`, only that stage's two objects.
 */
export function renderK8sObjects(topology: Topology, opts: RenderK8sOptions): K8sObject[] {
  const r = resolve(opts);
  let stages = topology.stages;
  if (opts.stage !== undefined) {
    const one = findStage(topology, opts.stage);
    if (!one) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${opts.stage}" (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
    stages = [one];
  }
  const perStage = stages.flatMap((s): K8sObject[] => [stageDeployment(topology, s, opts, r), stageScaledObject(topology, s, opts, r)]);
  if (opts.stage !== undefined) return perStage;
  return [configMap(topology, opts, r), ...perStage, ...apiObjects(topology, opts, r), podMonitor(topology, r)];
}

/** The manifests as multi-document YAML (`---` between documents), for `kubectl apply -f -`. */
export function renderK8s(topology: Topology, opts: RenderK8sOptions): string {
  return toYamlDocuments(renderK8sObjects(topology, opts));
}
