/**
 * Kubernetes manifests for a topology: per stage a Deployment (`sonicflow run <stage>`) and a KEDA
 * ScaledObject scaling it on the consumer group's lag, or a dispatcher's workers on the
 * worker-seconds it holds (through Prometheus; a dispatcher of fixed size gets none) (`stage.ts`,
 * where the choices behind them are given), plus a PodMonitor for every sonicflow pod, the shared ConfigMap and the HTTP API
 * (a StatefulSet with a state volume per replica, its headless Service and the Service clients
 * use) (`shared.ts`).
 *
 * Secrets (S3 keys, API keys, webhook secrets, the API's server secret) are never rendered: pods
 * read them from the Secret `sonicflow-secrets` when it exists; the API requires its
 * `SONIC_API_SECRET` key (every replica must key task ids alike).
 *
 * Kafka security (`kafka.ts`) follows the options, which `render k8s` takes from the product's own
 * SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE and SONIC_KAFKA_SASL_MECHANISM: the ConfigMap carries
 * TLS and the mechanism to every pod; a CA file's PEM becomes the Secret `sonicflow-kafka-ca`,
 * mounted read-only into every pod (SONIC_KAFKA_SSL_CA_FILE points at it) and read by KEDA. With
 * SASL, each stage and the API connect as their own principal (`sonicflow topology acls`): a
 * rendered Secret `sonicflow-<stage>-kafka` per principal holds its SASL user name, and its
 * password lives in `sonicflow-<stage>-kafka-password` (key `password`), which is never rendered:
 * the operator makes it once (`kubectl create secret`, or an external secrets operator), so
 * applying the manifests again never resets a password. Its Deployment (the API's StatefulSet)
 * reads both through `secretKeyRef`; a pod waits (CreateContainerConfigError) until the password
 * Secret exists. KEDA connects as its own principal (`keda`) through one TriggerAuthentication
 * that every ScaledObject's triggers reference. Without SASL there are no Kafka Secrets and no
 * credentials in the pods; on a plaintext cluster no TriggerAuthentication either.
 */
import { SonicError } from '../../core/errors.js';
import { API_PARTY } from '../../runtime/acls.js';
import { findStage, type StageSpec, type Topology } from '../../runtime/topology.js';
import { resolve, type RenderK8sOptions } from './common.js';
export { DEFAULT_PROMETHEUS_URL } from './common.js';
export { DEFAULT_WEIGHTS_PATH } from './gpu.js';
import { kafkaCaSecret, kafkaSecret, kedaKafkaObjects } from './kafka.js';
import type { K8sObject } from './objects.js';
import { apiObjects, configMap, podMonitor } from './shared.js';
import { gpuWarnings } from './gpu.js';
import { isGpuStage, scaledByKeda, stageDeployment, stageScaledObject } from './stage.js';
import { toYamlDocuments } from './yaml.js';

export type { KafkaSaslMechanism, RenderK8sOptions } from './common.js';
export type { GpuOptions } from './gpu.js';
export type {
  ConfigMap,
  Container,
  Deployment,
  K8sObject,
  KafkaTrigger,
  PodMonitor,
  PrometheusTrigger,
  ResourceRequirements,
  ScaledObject,
  Secret,
  Toleration,
  Service,
  StatefulSet,
  TriggerAuthentication,
} from './objects.js';

export { toYaml } from './yaml.js';

/**
 * The manifests as objects, in apply order: the ConfigMap, the CA Secret (a CA file), KEDA's Secret
 * and TriggerAuthentication (TLS or SASL), per stage its Kafka Secret (SASL), Deployment and
 * ScaledObject, the API's Kafka Secret (SASL), headless Service, StatefulSet and Service, the
 * PodMonitor. With `opts.stage`, only that stage's objects; they reference the shared ones (the
 * ConfigMap, the CA, KEDA's TriggerAuthentication), which a full render applies.
 */
export function renderK8sObjects(topology: Topology, opts: RenderK8sOptions): K8sObject[] {
  const r = resolve(opts);
  const stages = renderedStages(topology, opts);
  const principalSecret = (component: string): K8sObject[] => (r.kafka.sasl ? [kafkaSecret(topology, component, opts, r)] : []);
  const perStage = stages.flatMap((s): K8sObject[] => [
    ...principalSecret(s.name),
    stageDeployment(topology, s, opts, r),
    ...(scaledByKeda(s) ? [stageScaledObject(topology, s, opts, r)] : []),
  ]);
  if (opts.stage !== undefined) return perStage;
  return [
    configMap(topology, opts, r),
    ...kafkaCaSecret(topology, r),
    ...kedaKafkaObjects(topology, opts, r),
    ...perStage,
    ...principalSecret(API_PARTY),
    ...apiObjects(topology, opts, r),
    podMonitor(topology, r),
  ];
}

/** The stages a render covers: all, or `opts.stage` (TOPOLOGY_INVALID when the topology has no such stage). */
function renderedStages(topology: Topology, opts: RenderK8sOptions): StageSpec[] {
  if (opts.stage === undefined) return topology.stages;
  const one = findStage(topology, opts.stage);
  if (!one) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${opts.stage}" (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
  return [one];
}

/**
 * What the operator should hear about these options, for stderr (never in the manifests): GPU
 * stage pods with the worker backend and no weights volume, which will fail to load Sonic.
 * Throws as {@link renderK8sObjects} does on bad options.
 */
export function renderK8sWarnings(topology: Topology, opts: RenderK8sOptions): string[] {
  const r = resolve(opts);
  const gpuStages = renderedStages(topology, opts)
    .filter((s) => isGpuStage(s, r))
    .map((s) => s.name);
  return gpuWarnings(r.gpu, opts.config?.SONIC_INFER_BACKEND, gpuStages);
}

/** The manifests as multi-document YAML (`---` between documents), for `kubectl apply -f -`. */
export function renderK8s(topology: Topology, opts: RenderK8sOptions): string {
  return toYamlDocuments(renderK8sObjects(topology, opts));
}
