/**
 * Kubernetes manifests for a topology: per stage a Deployment (`sonicflow run <stage>`) and a KEDA
 * ScaledObject scaling it on the consumer group's lag (`stage.ts`, where the choices behind them
 * are given), plus a PodMonitor for every sonicflow pod, the shared ConfigMap and the HTTP API
 * (a StatefulSet with a state volume per replica, its headless Service and the Service clients
 * use) (`shared.ts`).
 *
 * Secrets (S3 keys, API keys, webhook secrets, the API's server secret) are never rendered: pods
 * read them from the Secret `sonicflow-secrets` when it exists; the API requires its
 * `SONIC_API_SECRET` key (every replica must key task ids alike). Each stage and the API connect to Kafka as their own
 * principal (`sonicflow topology acls`): a rendered Secret `sonicflow-<stage>-kafka` per principal
 * holds its SASL user name, and its password lives in `sonicflow-<stage>-kafka-password` (key
 * `password`), which is never rendered: the operator makes it once (`kubectl create secret`, or an
 * external secrets operator), so applying the manifests again never resets a password. Its
 * Deployment (the API's StatefulSet) reads both through `secretKeyRef`; a pod waits
 * (CreateContainerConfigError) until the password Secret exists.
 */
import { SonicError } from '../../core/errors.js';
import { API_PARTY, principalUser } from '../../runtime/acls.js';
import { findStage, type Topology } from '../../runtime/topology.js';
import { kafkaPasswordSecretName, kafkaSecretName, metadata, resolve, type RenderK8sOptions, type Resolved } from './common.js';
import type { K8sObject, Secret } from './objects.js';
import { apiObjects, configMap, podMonitor } from './shared.js';
import { stageDeployment, stageScaledObject } from './stage.js';
import { toYamlDocuments } from './yaml.js';

export type { RenderK8sOptions } from './common.js';
export type { ConfigMap, Container, Deployment, K8sObject, PodMonitor, ResourceRequirements, ScaledObject, Secret, Service, StatefulSet } from './objects.js';

/** The Secret of one principal (a stage or `api`): its SASL user name; the password is in a Secret the operator makes. */
function kafkaSecret(topology: Topology, component: string, opts: RenderK8sOptions, r: Resolved): Secret {
  const meta = metadata(kafkaSecretName(component), component, r, topology);
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      ...meta,
      annotations: {
        'sonicflow.io/kafka-principal': `User:${principalUser(topology, component, opts.principalPrefix)}`,
        'sonicflow.io/password-secret': `${kafkaPasswordSecretName(component)} (key password): made once by the operator, never rendered`,
      },
    },
    type: 'Opaque',
    stringData: { username: principalUser(topology, component, opts.principalPrefix) },
  };
}
export { toYaml } from './yaml.js';

/**
 * The manifests as objects, in apply order: ConfigMap, per stage its Kafka Secret, Deployment and
 * ScaledObject, the API's Kafka Secret, headless Service, StatefulSet and Service, the PodMonitor. With `opts.stage`,
 * only that stage's three objects.
 */
export function renderK8sObjects(topology: Topology, opts: RenderK8sOptions): K8sObject[] {
  const r = resolve(opts);
  let stages = topology.stages;
  if (opts.stage !== undefined) {
    const one = findStage(topology, opts.stage);
    if (!one) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${opts.stage}" (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
    stages = [one];
  }
  const perStage = stages.flatMap((s): K8sObject[] => [
    kafkaSecret(topology, s.name, opts, r),
    stageDeployment(topology, s, opts, r),
    stageScaledObject(topology, s, opts, r),
  ]);
  if (opts.stage !== undefined) return perStage;
  return [configMap(topology, opts, r), ...perStage, kafkaSecret(topology, API_PARTY, opts, r), ...apiObjects(topology, opts, r), podMonitor(topology, r)];
}

/** The manifests as multi-document YAML (`---` between documents), for `kubectl apply -f -`. */
export function renderK8s(topology: Topology, opts: RenderK8sOptions): string {
  return toYamlDocuments(renderK8sObjects(topology, opts));
}
