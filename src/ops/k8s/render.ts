/**
 * Kubernetes manifests for a topology: per stage a Deployment (`sonicflow run <stage>`) and a KEDA
 * ScaledObject scaling it on the consumer group's lag, plus a PodMonitor for every sonicflow pod,
 * the shared ConfigMap and the HTTP API (Deployment + Service).
 *
 * Choices, with their reasons:
 * - One Kafka trigger per consumed topic (the input and each retry tier), all on the stage's group.
 *   KEDA caps each trigger at its topic's partitions (`allowIdleConsumers: 'false'`) and the HPA
 *   takes the highest trigger, so the stage never runs more consumers than partitions.
 * - `maxReplicaCount` is clamped to the input's partitions as well (`topology validate` already
 *   refuses more): replicas beyond the partitions would join the group and idle.
 * - `lagThreshold` and `activationLagThreshold` are always written: KEDA's documentation and its
 *   code have disagreed on defaults, and both are strings as KEDA's metadata requires.
 * - `offsetResetPolicy: earliest` matches the runner (`fromBeginning: true`): a group with no
 *   committed offset has the whole retained backlog ahead of it, and KEDA counts it as lag.
 * - Scale-down is slow (one pod a minute after a 300 s stabilisation window): every replica change
 *   is a consumer-group rebalance that pauses the whole stage, so the scaler must not flap.
 * - `terminationGracePeriodSeconds` is the drain timeout plus a margin, so Kubernetes never kills a
 *   pod that is still finishing and committing in-flight work after SIGTERM.
 * - `spec.replicas` is left out of the stage Deployments: KEDA owns it, and an apply that sets it
 *   would reset the scaler's choice.
 * - GPU stages (`infer` by default) get `nvidia.com/gpu: 1` and a toleration for the usual GPU
 *   node taint, and roll with `maxSurge: 0` (a surge pod would wait for a spare GPU).
 *
 * Secrets (S3 keys, API keys, webhook secrets) are never rendered: pods read them from the Secret
 * `sonicflow-secrets` when it exists.
 */
import { SonicError } from '../../core/errors.js';
import { findStage, type StageSpec, type Topology } from '../../runtime/topology.js';
import { toYamlDocuments } from './yaml.js';

export { toYaml, toYamlDocuments } from './yaml.js';

export const DEFAULT_IMAGE = 'ghcr.io/sonicflow/sonicflow:latest';
export const DEFAULT_NAMESPACE = 'sonicflow';
export const DEFAULT_METRICS_PORT = 9464;
export const API_PORT = 8080;
export const CONFIG_MAP_NAME = 'sonicflow-config';
export const SECRET_NAME = 'sonicflow-secrets';
/** Added to the drain timeout: leaving the group, closing producers and the blob client, flushing logs. */
export const GRACE_MARGIN_SECONDS = 15;
export const SCALE_DOWN_STABILIZATION_SECONDS = 300;
export const SCALE_UP_STABILIZATION_SECONDS = 30;
export const POLLING_INTERVAL_SECONDS = 15;
/** KEDA waits this long after the last active trigger before scaling to zero (only when minReplicas is 0). */
export const COOLDOWN_PERIOD_SECONDS = 300;
export const GPU_RESOURCE = 'nvidia.com/gpu';

const NAME = 'sonicflow';
const LABEL_NAME = 'app.kubernetes.io/name';
const LABEL_COMPONENT = 'app.kubernetes.io/component';

// ---------------------------------------------------------------- object types

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface ResourceRequirements {
  requests: Record<string, string>;
  limits: Record<string, string>;
}

export interface HttpProbe {
  httpGet: { path: string; port: string };
  initialDelaySeconds?: number;
  periodSeconds: number;
  timeoutSeconds: number;
  failureThreshold: number;
}

export interface Container {
  name: string;
  image: string;
  imagePullPolicy: string;
  command: string[];
  env: { name: string; value: string }[];
  envFrom: ({ configMapRef: { name: string; optional?: boolean } } | { secretRef: { name: string; optional?: boolean } })[];
  ports: { name: string; containerPort: number; protocol: 'TCP' }[];
  livenessProbe: HttpProbe;
  readinessProbe: HttpProbe;
  resources: ResourceRequirements;
  securityContext: Record<string, unknown>;
  volumeMounts: { name: string; mountPath: string }[];
}

export interface Deployment {
  apiVersion: 'apps/v1';
  kind: 'Deployment';
  metadata: ObjectMeta;
  spec: {
    replicas?: number;
    revisionHistoryLimit: number;
    selector: { matchLabels: Record<string, string> };
    strategy: { type: 'RollingUpdate'; rollingUpdate: { maxSurge: number; maxUnavailable: number } };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        securityContext: Record<string, unknown>;
        tolerations?: { key: string; operator: string; effect: string }[];
        containers: Container[];
        volumes: { name: string; emptyDir: Record<string, string> }[];
      };
    };
  };
}

export interface KafkaTrigger {
  type: 'kafka';
  metricType: 'AverageValue';
  metadata: {
    bootstrapServers: string;
    consumerGroup: string;
    topic: string;
    lagThreshold: string;
    activationLagThreshold: string;
    offsetResetPolicy: 'earliest' | 'latest';
    allowIdleConsumers: 'true' | 'false';
    scaleToZeroOnInvalidOffset: 'true' | 'false';
  };
}

export interface HpaScalingRules {
  stabilizationWindowSeconds: number;
  selectPolicy: 'Max' | 'Min';
  policies: { type: 'Pods' | 'Percent'; value: number; periodSeconds: number }[];
}

export interface ScaledObject {
  apiVersion: 'keda.sh/v1alpha1';
  kind: 'ScaledObject';
  metadata: ObjectMeta;
  spec: {
    scaleTargetRef: { apiVersion: 'apps/v1'; kind: 'Deployment'; name: string };
    pollingInterval: number;
    cooldownPeriod: number;
    minReplicaCount: number;
    maxReplicaCount: number;
    fallback: { failureThreshold: number; replicas: number };
    advanced: {
      restoreToOriginalReplicaCount: boolean;
      horizontalPodAutoscalerConfig: { behavior: { scaleUp: HpaScalingRules; scaleDown: HpaScalingRules } };
    };
    triggers: KafkaTrigger[];
  };
}

export interface PodMetricsEndpoint {
  port: string;
  path: string;
  interval: string;
  honorLabels: boolean;
  relabelings: { action: 'replace'; targetLabel: string; replacement?: string; sourceLabels?: string[] }[];
}

export interface PodMonitor {
  apiVersion: 'monitoring.coreos.com/v1';
  kind: 'PodMonitor';
  metadata: ObjectMeta;
  spec: {
    selector: { matchLabels: Record<string, string> };
    namespaceSelector: { matchNames: string[] };
    podMetricsEndpoints: PodMetricsEndpoint[];
  };
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: {
    type: 'ClusterIP';
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: string; protocol: 'TCP' }[];
  };
}

export interface ConfigMap {
  apiVersion: 'v1';
  kind: 'ConfigMap';
  metadata: ObjectMeta;
  data: Record<string, string>;
}

export type K8sObject = Deployment | ScaledObject | PodMonitor | Service | ConfigMap;

// ---------------------------------------------------------------- options

export interface RenderK8sOptions {
  /** Only this stage's Deployment and ScaledObject (no API, PodMonitor or ConfigMap). */
  stage?: string;
  image?: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  namespace?: string;
  /** SONIC_DRAIN_TIMEOUT_MS of the stage pods; the grace period is derived from it. */
  drainTimeoutMs: number;
  /** SONIC_METRICS_PORT of the stage pods (/metrics, /healthz, /readyz); 0 is not allowed here. */
  metricsPort?: number;
  /** Kafka bootstrap servers, for the KEDA triggers and the ConfigMap's KAFKA_BROKERS. */
  brokers: string[];
  /** The consumer group of a stage, as the runner forms it: `${clientId}.${prefix}.${stage}`. */
  groupIdOf: (stage: string) => string;
  /** SCHEMA_REGISTRY_URL in the ConfigMap; when absent the pods use their own default. */
  schemaRegistryUrl?: string;
  /**
   * SONIC_CLIENT_ID in the ConfigMap. Pass the client id `groupIdOf` uses: the ScaledObjects watch
   * `groupIdOf(stage)` and the pods join `${SONIC_CLIENT_ID}.${prefix}.${stage}`.
   */
  clientId?: string;
  /** More ConfigMap entries: SONIC_S3_ENDPOINT, SONIC_S3_BUCKET, SONIC_API_PUBLIC_URL, SONIC_INFER_BACKEND, ... */
  config?: Record<string, string>;
  /** Resources per stage (or `api`), replacing the defaults. */
  resources?: Record<string, ResourceRequirements>;
  /** Stages that get one GPU each (default `['infer']`; `[]` for the CPU-only builtin backend). */
  gpuStages?: string[];
  /** Replicas of the API Deployment (default 2; it needs the s3 blob store, which the ConfigMap selects). */
  apiReplicas?: number;
}

const DEFAULT_RESOURCES: Record<string, ResourceRequirements> = {
  validate: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } },
  // ffmpeg resampling and image conversion
  preprocess: { requests: { cpu: '500m', memory: '512Mi' }, limits: { cpu: '2', memory: '1Gi' } },
  // the model, its weights and decoded frames; the GPU is added for GPU stages
  infer: { requests: { cpu: '2', memory: '8Gi' }, limits: { cpu: '8', memory: '16Gi' } },
  // ffmpeg H.264/AAC encoding
  encode: { requests: { cpu: '1', memory: '512Mi' }, limits: { cpu: '2', memory: '2Gi' } },
  publish: { requests: { cpu: '100m', memory: '256Mi' }, limits: { cpu: '500m', memory: '512Mi' } },
  notify: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '500m', memory: '256Mi' } },
  api: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '768Mi' } },
};
const FALLBACK_RESOURCES: ResourceRequirements = { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } };

// ---------------------------------------------------------------- rendering

interface Resolved {
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  namespace: string;
  metricsPort: number;
  graceSeconds: number;
  gpuStages: Set<string>;
}

function resolve(opts: RenderK8sOptions): Resolved {
  const bad = (message: string): never => {
    throw new SonicError('CONFIG_INVALID', message);
  };
  const metricsPort = opts.metricsPort ?? DEFAULT_METRICS_PORT;
  if (!Number.isInteger(metricsPort) || metricsPort < 1 || metricsPort > 65535) bad(`metrics port must be 1-65535 for Kubernetes probes, got ${metricsPort}`);
  if (!Number.isFinite(opts.drainTimeoutMs) || opts.drainTimeoutMs < 0) bad(`drain timeout must be a number of ms >= 0, got ${opts.drainTimeoutMs}`);
  if (opts.brokers.length === 0 || opts.brokers.some((b) => !/^[^\s,]+:\d+$/.test(b))) bad(`brokers must be host:port entries, got [${opts.brokers.join(', ')}]`);
  const namespace = opts.namespace ?? DEFAULT_NAMESPACE;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) bad(`namespace "${namespace}" is not a valid Kubernetes namespace name`);
  for (const key of Object.keys(opts.config ?? {})) {
    if (!/^[-._a-zA-Z0-9]+$/.test(key)) bad(`config key "${key}" is not a valid ConfigMap key`);
  }
  return {
    image: opts.image ?? DEFAULT_IMAGE,
    imagePullPolicy: opts.imagePullPolicy ?? 'IfNotPresent',
    namespace,
    metricsPort,
    graceSeconds: Math.ceil(opts.drainTimeoutMs / 1000) + GRACE_MARGIN_SECONDS,
    gpuStages: new Set(opts.gpuStages ?? ['infer']),
  };
}

function labels(component: string): Record<string, string> {
  return { [LABEL_NAME]: NAME, [LABEL_COMPONENT]: component };
}

function metadata(name: string, component: string, r: Resolved, topology: Topology): ObjectMeta {
  return {
    name,
    namespace: r.namespace,
    labels: { ...labels(component), 'app.kubernetes.io/part-of': topology.name, 'app.kubernetes.io/managed-by': NAME },
  };
}

/** Name of a stage's Deployment and ScaledObject. */
export function stageObjectName(stage: string): string {
  return `${NAME}-${stage}`;
}

function resourcesFor(component: string, opts: RenderK8sOptions, gpu: boolean): ResourceRequirements {
  const base = opts.resources?.[component] ?? DEFAULT_RESOURCES[component] ?? FALLBACK_RESOURCES;
  const res = { requests: { ...base.requests }, limits: { ...base.limits } };
  // an extended resource is requested through its limit (the request defaults to it and may not differ)
  if (gpu) res.limits[GPU_RESOURCE] = '1';
  else delete res.limits[GPU_RESOURCE];
  delete res.requests[GPU_RESOURCE];
  return res;
}

const POD_SECURITY = { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } };
// /tmp is an emptyDir: stages work in temporary directories (ffmpeg, inference) and tsx caches there
const CONTAINER_SECURITY = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } };

function envFrom(): Container['envFrom'] {
  return [{ configMapRef: { name: CONFIG_MAP_NAME } }, { secretRef: { name: SECRET_NAME, optional: true } }];
}

function probes(port: string): Pick<Container, 'livenessProbe' | 'readinessProbe'> {
  return {
    livenessProbe: { httpGet: { path: '/healthz', port }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
  };
}

function stageDeployment(topology: Topology, stage: StageSpec, opts: RenderK8sOptions, r: Resolved): Deployment {
  const gpu = r.gpuStages.has(stage.name);
  const podLabels = labels(stage.name);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(stageObjectName(stage.name), stage.name, r, topology),
    spec: {
      revisionHistoryLimit: 5,
      selector: { matchLabels: { ...podLabels } },
      strategy: { type: 'RollingUpdate', rollingUpdate: gpu ? { maxSurge: 0, maxUnavailable: 1 } : { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { ...podLabels } },
        spec: {
          terminationGracePeriodSeconds: r.graceSeconds,
          securityContext: POD_SECURITY,
          ...(gpu ? { tolerations: [{ key: GPU_RESOURCE, operator: 'Exists', effect: 'NoSchedule' }] } : {}),
          containers: [
            {
              name: stage.name,
              image: r.image,
              imagePullPolicy: r.imagePullPolicy,
              command: [NAME, 'run', stage.name],
              env: [
                { name: 'SONIC_METRICS_PORT', value: String(r.metricsPort) },
                { name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(opts.drainTimeoutMs) },
              ],
              envFrom: envFrom(),
              ports: [{ name: 'metrics', containerPort: r.metricsPort, protocol: 'TCP' }],
              ...probes('metrics'),
              resources: resourcesFor(stage.name, opts, gpu),
              securityContext: CONTAINER_SECURITY,
              volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
            },
          ],
          volumes: [{ name: 'tmp', emptyDir: {} }],
        },
      },
    },
  };
}

function stageScaledObject(topology: Topology, stage: StageSpec, opts: RenderK8sOptions, r: Resolved): ScaledObject {
  const input = topology.topics[stage.input];
  if (!input) throw new SonicError('TOPOLOGY_INVALID', `stage ${stage.name} reads topic ${stage.input}, which the topology does not declare`);
  const { minReplicas, maxReplicas, lagThreshold, activationLagThreshold } = stage.scaling;
  if (!(lagThreshold > 0)) throw new SonicError('TOPOLOGY_INVALID', `stage ${stage.name} lagThreshold must be > 0 for KEDA, got ${lagThreshold}`);
  const maxReplicaCount = Math.max(1, Math.min(maxReplicas, input.partitions));
  const minReplicaCount = Math.max(0, Math.min(minReplicas, maxReplicaCount));
  const consumerGroup = opts.groupIdOf(stage.name);
  const trigger = (topic: string): KafkaTrigger => ({
    type: 'kafka',
    metricType: 'AverageValue',
    metadata: {
      bootstrapServers: opts.brokers.join(','),
      consumerGroup,
      topic,
      lagThreshold: String(Math.ceil(lagThreshold)),
      activationLagThreshold: String(Math.max(0, Math.floor(activationLagThreshold))),
      offsetResetPolicy: 'earliest',
      allowIdleConsumers: 'false',
      scaleToZeroOnInvalidOffset: 'false',
    },
  });
  return {
    apiVersion: 'keda.sh/v1alpha1',
    kind: 'ScaledObject',
    metadata: metadata(stageObjectName(stage.name), stage.name, r, topology),
    spec: {
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: stageObjectName(stage.name) },
      pollingInterval: POLLING_INTERVAL_SECONDS,
      cooldownPeriod: COOLDOWN_PERIOD_SECONDS,
      minReplicaCount,
      maxReplicaCount,
      // when the scaler cannot read the lag (broker down), hold at least one replica
      fallback: { failureThreshold: 3, replicas: Math.max(1, minReplicaCount) },
      advanced: {
        restoreToOriginalReplicaCount: false,
        horizontalPodAutoscalerConfig: {
          behavior: {
            scaleUp: {
              stabilizationWindowSeconds: SCALE_UP_STABILIZATION_SECONDS,
              selectPolicy: 'Max',
              policies: [
                { type: 'Pods', value: 2, periodSeconds: 60 },
                { type: 'Percent', value: 100, periodSeconds: 60 },
              ],
            },
            scaleDown: {
              stabilizationWindowSeconds: SCALE_DOWN_STABILIZATION_SECONDS,
              selectPolicy: 'Min',
              policies: [{ type: 'Pods', value: 1, periodSeconds: 60 }],
            },
          },
        },
      },
      triggers: [stage.input, ...stage.retry.topics].map(trigger),
    },
  };
}

function podMonitor(topology: Topology, r: Resolved): PodMonitor {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PodMonitor',
    metadata: metadata(NAME, 'monitoring', r, topology),
    spec: {
      selector: { matchLabels: { [LABEL_NAME]: NAME } },
      namespaceSelector: { matchNames: [r.namespace] },
      podMetricsEndpoints: [
        {
          // stage pods; job and stage labels as ops/prometheus/prometheus.yml sets them locally.
          // honorLabels: the stage's own `stage` label wins over the target's (no exported_stage).
          port: 'metrics',
          path: '/metrics',
          interval: '15s',
          honorLabels: true,
          relabelings: [
            { action: 'replace', targetLabel: 'job', replacement: `${NAME}-stages` },
            { action: 'replace', sourceLabels: ['__meta_kubernetes_pod_label_app_kubernetes_io_component'], targetLabel: 'stage' },
          ],
        },
        {
          // the API serves /metrics on its HTTP port
          port: 'http',
          path: '/metrics',
          interval: '15s',
          honorLabels: true,
          relabelings: [{ action: 'replace', targetLabel: 'job', replacement: `${NAME}-api` }],
        },
      ],
    },
  };
}

function configMap(topology: Topology, opts: RenderK8sOptions, r: Resolved): ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: metadata(CONFIG_MAP_NAME, 'config', r, topology),
    data: {
      // pods share no filesystem: media must live in an S3-compatible store
      SONIC_BLOB_STORE: 's3',
      SONIC_LOG_LEVEL: 'info',
      ...opts.config,
      // last: these must agree with the ScaledObjects' brokers and consumer groups
      KAFKA_BROKERS: opts.brokers.join(','),
      ...(opts.schemaRegistryUrl === undefined ? {} : { SCHEMA_REGISTRY_URL: opts.schemaRegistryUrl }),
      SONIC_TOPIC_PREFIX: topology.prefix,
      ...(opts.clientId === undefined ? {} : { SONIC_CLIENT_ID: opts.clientId }),
    },
  };
}

function apiObjects(topology: Topology, opts: RenderK8sOptions, r: Resolved): [Deployment, Service] {
  const podLabels = labels('api');
  const deployment: Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(`${NAME}-api`, 'api', r, topology),
    spec: {
      replicas: opts.apiReplicas ?? 2,
      revisionHistoryLimit: 5,
      selector: { matchLabels: { ...podLabels } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { ...podLabels } },
        spec: {
          terminationGracePeriodSeconds: 30,
          securityContext: POD_SECURITY,
          containers: [
            {
              name: 'api',
              image: r.image,
              imagePullPolicy: r.imagePullPolicy,
              command: [NAME, 'api'],
              env: [
                { name: 'SONIC_API_HOST', value: '0.0.0.0' },
                { name: 'SONIC_API_PORT', value: String(API_PORT) },
              ],
              envFrom: envFrom(),
              ports: [{ name: 'http', containerPort: API_PORT, protocol: 'TCP' }],
              ...probes('http'),
              resources: resourcesFor('api', opts, false),
              securityContext: CONTAINER_SECURITY,
              volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
            },
          ],
          volumes: [{ name: 'tmp', emptyDir: {} }],
        },
      },
    },
  };
  const service: Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(`${NAME}-api`, 'api', r, topology),
    spec: { type: 'ClusterIP', selector: { ...podLabels }, ports: [{ name: 'http', port: API_PORT, targetPort: 'http', protocol: 'TCP' }] },
  };
  return [deployment, service];
}

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
