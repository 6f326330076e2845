/**
 * What every rendered manifest shares: the defaults, the render options as given and as checked,
 * the labels and metadata, and the parts of a pod (resources, security, probes, config).
 */
import { longestRenderMs, readKafkaCa, SETTINGS } from '../../core/config.js';
import { SonicError } from '../../core/errors.js';
import type { ResourceSpec, Topology } from '../../runtime/topology.js';
import { CACHE_DIR, GPU_RESOURCE, resolveGpu, type GpuOptions, type ResolvedGpu } from './gpu.js';
import type { Container, ObjectMeta, ResourceRequirements, Volume } from './objects.js';

const DEFAULT_IMAGE = 'ghcr.io/sonicflow/sonicflow:latest';
const DEFAULT_NAMESPACE = 'sonicflow';
const DEFAULT_METRICS_PORT = 9464;
/** The Prometheus Operator's default Service for a Prometheus named in the `monitoring` namespace (kube-prometheus-stack). */
export const DEFAULT_PROMETHEUS_URL = 'http://prometheus-operated.monitoring.svc:9090';
export const API_PORT = 8080;
export const CONFIG_MAP_NAME = 'sonicflow-config';
export const SECRET_NAME = 'sonicflow-secrets';
/**
 * Where a pod keeps its local state (SONIC_STATE_DIR): the API's status view store, a stage's
 * state stores. The root filesystem is read-only, so it is always a volume of its own.
 */
export const STATE_DIR = '/var/lib/sonicflow';
export const STATE_VOLUME = 'state';
const DEFAULT_API_STATE_STORAGE = '2Gi';
/** Added to the drain timeout: leaving the group, closing producers and the blob client, flushing logs. */
const GRACE_MARGIN_SECONDS = 15;
/** The most SONIC_DRAIN_TIMEOUT_MS takes (Node's longest timer). */
const MAX_DRAIN_MS = 2_147_483_647;
export { GPU_RESOURCE };

/**
 * The brokers' CA (SONIC_KAFKA_SSL_CA_FILE at render time) as the Secret `sonicflow-kafka-ca`, key
 * `ca.crt`: mounted read-only into every sonicflow pod, and KEDA's TriggerAuthentication takes
 * its `ca` from the same key (a TriggerAuthentication's secretTargetRef reads Secrets only, so one
 * Secret serves both; a CA certificate is public, the Secret is for KEDA's sake).
 */
export const KAFKA_CA_SECRET = 'sonicflow-kafka-ca';
export const KAFKA_CA_KEY = 'ca.crt';
const KAFKA_CA_VOLUME = 'kafka-ca';
const KAFKA_CA_DIR = '/etc/sonicflow/kafka-ca';
/** SONIC_KAFKA_SSL_CA_FILE in the pods. */
export const KAFKA_CA_PATH = `${KAFKA_CA_DIR}/${KAFKA_CA_KEY}`;

/** KEDA's TriggerAuthentication for the kafka triggers (a secured cluster), after its Secret `sonicflow-keda-kafka`. */
export const KEDA_TRIGGER_AUTH = 'sonicflow-keda-kafka';

export type KafkaSaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';
const SASL_MECHANISMS: readonly string[] = ['plain', 'scram-sha-256', 'scram-sha-512'] satisfies KafkaSaslMechanism[];
/** Set through the Kafka security options (or never, the credentials): refused in `config`. */
const KAFKA_SECURITY_KEYS = [
  'SONIC_KAFKA_SSL',
  'SONIC_KAFKA_SSL_CA_FILE',
  'SONIC_KAFKA_SASL_MECHANISM',
  'SONIC_KAFKA_SASL_USERNAME',
  'SONIC_KAFKA_SASL_PASSWORD',
];

export const NAME = 'sonicflow';
/** The `job` label the PodMonitor gives the stage pods' series (as ops/prometheus/prometheus.yml does locally). */
export const STAGES_JOB = `${NAME}-stages`;
export const LABEL_NAME = 'app.kubernetes.io/name';
const LABEL_COMPONENT = 'app.kubernetes.io/component';

export interface RenderK8sOptions extends GpuOptions {
  /** Only this stage's objects: its Kafka Secret (SASL), Deployment and ScaledObject (not the shared ConfigMap, CA, KEDA objects, API or PodMonitor). */
  stage?: string;
  image?: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  namespace?: string;
  /**
   * SONIC_DRAIN_TIMEOUT_MS of the stage pods; their grace period is derived from it. Unless
   * `drainTimeoutExplicit`, the pods of a stage with GPUs and of the workers of a dispatcher get
   * `longestRenderMs` + this instead (see {@link Resolved.renderDrainMs}).
   */
  drainTimeoutMs: number;
  /** The operator set `drainTimeoutMs` (SONIC_DRAIN_TIMEOUT_MS at render time): every stage pod gets it as it is. */
  drainTimeoutExplicit?: boolean;
  /**
   * The longest render the configuration allows, ms: SONIC_INFER_TIMEOUT_BASE_S +
   * SONIC_INFER_TIMEOUT_PER_AUDIO_S × SONIC_MAX_AUDIO_SECONDS (`longestRenderMs` of the config).
   * Default: from those settings' defaults (120 + 60 × 60 s = 3720 s).
   */
  longestRenderMs?: number;
  /** SONIC_METRICS_PORT of the stage pods (/metrics, /healthz, /readyz); 0 is not allowed here. */
  metricsPort?: number;
  /**
   * Where KEDA queries Prometheus for the prometheus triggers (the workers of a dispatcher stage,
   * scaled on its backlog's worker-seconds); that Prometheus must scrape the PodMonitor rendered
   * here. Default {@link DEFAULT_PROMETHEUS_URL}.
   */
  prometheusUrl?: string;
  /** Kafka bootstrap servers, for the KEDA triggers and the ConfigMap's KAFKA_BROKERS. */
  brokers: string[];
  /** SCHEMA_REGISTRY_URL in the ConfigMap; when absent the pods use their own default. */
  schemaRegistryUrl?: string;
  /**
   * SONIC_CLIENT_ID in the ConfigMap, and the client id of the consumer groups the ScaledObjects
   * watch (`groupId` of `src/runtime/names.ts`): the pods join the groups KEDA scales them on.
   */
  clientId: string;
  /** More ConfigMap entries: SONIC_S3_ENDPOINT, SONIC_S3_BUCKET, SONIC_API_PUBLIC_URL, SONIC_INFER_BACKEND, ... */
  config?: Record<string, string>;
  /** Resources per stage (or `api`), replacing what the stage declares. */
  resources?: Record<string, ResourceRequirements>;
  /**
   * Stages that get GPUs (their declared count, at least one), replacing which stages the
   * declarations give GPUs (the Sonic topology: infer); `[]` for the CPU-only builtin backend.
   */
  gpuStages?: string[];
  /** Replicas of the API StatefulSet (default 2; it needs the s3 blob store, which the ConfigMap selects). */
  apiReplicas?: number;
  /** Kafka principals are `User:<principalPrefix>-<stage>` and `-api` (see `topology acls`); default: the topology's prefix. */
  principalPrefix?: string;
  /** Size of each API replica's state volume (its status view store), default 2Gi. */
  apiStateStorage?: string;
  /** StorageClass of the API's state volumes; absent: the cluster's default class. */
  storageClass?: string;
  /**
   * The Kafka security settings, as the product reads them (`sonicflow render k8s` takes them from
   * its own SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE and SONIC_KAFKA_SASL_MECHANISM). SONIC_KAFKA_SSL:
   * TLS to the brokers, for the pods (ConfigMap) and KEDA (its TriggerAuthentication).
   */
  kafkaSsl?: boolean;
  /**
   * SONIC_KAFKA_SSL_CA_FILE: PEM file of the brokers' CA, read now into the Secret
   * `sonicflow-kafka-ca` (mounted into every pod, and KEDA's `ca`); needs `kafkaSsl`. Absent: the
   * system CAs.
   */
  kafkaSslCaFile?: string;
  /**
   * SONIC_KAFKA_SASL_MECHANISM. With it every stage and the API connect as their own principal
   * (a rendered Secret with the user name, the password in one the operator makes), and so does
   * KEDA. Absent: no SASL, no Kafka Secrets, no credentials in the pods.
   */
  kafkaSaslMechanism?: KafkaSaslMechanism;
}

/**
 * The API's status view lives in its state store (bounded memory: `npm run bench:state` serves
 * 1M tasks inside a 300 MB memory limit); the rest is HTTP, spooled uploads and streams.
 */
const API_RESOURCES: ResourceRequirements = { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } };
/** For a stage that declares no resources. */
const FALLBACK_RESOURCES: ResourceRequirements = { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } };

/** The options checked, with their defaults filled in. */
export interface Resolved {
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  namespace: string;
  metricsPort: number;
  /** SONIC_DRAIN_TIMEOUT_MS of a stage pod that renders nothing long, and its grace period. */
  drainMs: number;
  graceSeconds: number;
  /**
   * SONIC_DRAIN_TIMEOUT_MS of the pods of a stage with GPUs and of the workers of a dispatcher:
   * the longest render plus the drain timeout (what surrounds the render: fetching the inputs,
   * uploading the output, committing), so that a scale-down's SIGTERM lets the render in progress
   * finish instead of abandoning it. Equal to `drainMs` when the operator set the drain timeout.
   */
  renderDrainMs: number;
  renderGraceSeconds: number;
  prometheusUrl: string;
  /** The GPU stages, when the options name them (otherwise each stage's declaration decides). */
  gpuStages?: Set<string>;
  apiStateStorage: string;
  kafka: KafkaSecurity;
  /** The GPU stage pods' image, backend, weights, caches, placement and replica cap (`gpu.ts`). */
  gpu: ResolvedGpu;
}

/** How the pods and KEDA reach the brokers. */
export interface KafkaSecurity {
  ssl: boolean;
  /** The CA's PEM, read from `kafkaSslCaFile` (TLS only). */
  caPem?: string;
  /** Absent: no SASL. */
  sasl?: KafkaSaslMechanism;
}

/** The Kafka security options checked; the CA file read (CONFIG_INVALID naming the variable when it cannot be). */
function resolveKafka(opts: RenderK8sOptions, bad: (message: string) => never): KafkaSecurity {
  const ssl = opts.kafkaSsl ?? false;
  const sasl = opts.kafkaSaslMechanism;
  if (sasl !== undefined && !SASL_MECHANISMS.includes(sasl))
    bad(`SONIC_KAFKA_SASL_MECHANISM must be one of ${SASL_MECHANISMS.join(', ')} (or empty for none), got "${String(sasl)}"`);
  if (opts.kafkaSslCaFile === undefined || opts.kafkaSslCaFile === '') return { ssl, ...(sasl ? { sasl } : {}) };
  if (!ssl)
    bad(
      `SONIC_KAFKA_SSL_CA_FILE is set (${opts.kafkaSslCaFile}) but SONIC_KAFKA_SSL is not true: the CA would go unused; set SONIC_KAFKA_SSL=true or unset the CA file`,
    );
  return { ssl, caPem: readKafkaCa(opts.kafkaSslCaFile), ...(sasl ? { sasl } : {}) };
}

export function resolve(opts: RenderK8sOptions): Resolved {
  const bad = (message: string): never => {
    throw new SonicError('CONFIG_INVALID', message);
  };
  const metricsPort = opts.metricsPort ?? DEFAULT_METRICS_PORT;
  if (!Number.isInteger(metricsPort) || metricsPort < 1 || metricsPort > 65535) bad(`metrics port must be 1-65535 for Kubernetes probes, got ${metricsPort}`);
  if (!Number.isFinite(opts.drainTimeoutMs) || opts.drainTimeoutMs < 0) bad(`drain timeout must be a number of ms >= 0, got ${opts.drainTimeoutMs}`);
  const longest =
    opts.longestRenderMs ??
    longestRenderMs({
      inferTimeoutBaseS: SETTINGS.inferTimeoutBaseS.default,
      inferTimeoutPerAudioS: SETTINGS.inferTimeoutPerAudioS.default,
      maxAudioSeconds: SETTINGS.maxAudioSeconds.default,
    });
  if (!Number.isFinite(longest) || longest < 0) bad(`longest render must be a number of ms >= 0, got ${longest}`);
  const drainMs = Math.ceil(opts.drainTimeoutMs);
  const renderDrainMs = opts.drainTimeoutExplicit ? drainMs : Math.ceil(longest) + drainMs;
  if (renderDrainMs > MAX_DRAIN_MS)
    bad(
      `the drain timeout of a GPU stage (the longest render ${Math.ceil(longest)} ms + the drain timeout ${drainMs} ms) passes ${MAX_DRAIN_MS} ms, the most SONIC_DRAIN_TIMEOUT_MS takes: lower SONIC_MAX_AUDIO_SECONDS or the infer timeouts, or set SONIC_DRAIN_TIMEOUT_MS`,
    );
  if (opts.brokers.length === 0 || opts.brokers.some((b) => !/^[^\s,]+:\d+$/.test(b)))
    bad(`brokers must be host:port entries, got [${opts.brokers.join(', ')}]`);
  const namespace = opts.namespace ?? DEFAULT_NAMESPACE;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) bad(`namespace "${namespace}" is not a valid Kubernetes namespace name`);
  const apiStateStorage = opts.apiStateStorage ?? DEFAULT_API_STATE_STORAGE;
  if (!/^[1-9]\d*(Mi|Gi|Ti)$/.test(apiStateStorage)) bad(`API state storage must be a quantity like 2Gi, got "${apiStateStorage}"`);
  if (opts.storageClass !== undefined && !/^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$/.test(opts.storageClass))
    bad(`storage class "${opts.storageClass}" is not a valid Kubernetes name`);
  for (const key of Object.keys(opts.config ?? {})) {
    if (!/^[-._a-zA-Z0-9]+$/.test(key)) bad(`config key "${key}" is not a valid ConfigMap key`);
    if (KAFKA_SECURITY_KEYS.includes(key)) bad(`config key "${key}" is not taken: the Kafka security options set the pods' TLS and SASL (and KEDA's) together`);
  }
  const kafka = resolveKafka(opts, bad);
  const prometheusUrl = opts.prometheusUrl ?? DEFAULT_PROMETHEUS_URL;
  if (!/^https?:\/\/[^\s/]+(\/\S*)?$/.test(prometheusUrl)) bad(`Prometheus URL must be an http(s) URL, got "${prometheusUrl}"`);
  const gpu = resolveGpu(opts, opts.config?.SONIC_INFER_BACKEND, ['/tmp', STATE_DIR, KAFKA_CA_DIR, CACHE_DIR], bad);
  return {
    image: opts.image ?? DEFAULT_IMAGE,
    imagePullPolicy: opts.imagePullPolicy ?? 'IfNotPresent',
    namespace,
    metricsPort,
    drainMs,
    graceSeconds: Math.ceil(drainMs / 1000) + GRACE_MARGIN_SECONDS,
    renderDrainMs,
    renderGraceSeconds: Math.ceil(renderDrainMs / 1000) + GRACE_MARGIN_SECONDS,
    prometheusUrl,
    apiStateStorage,
    kafka,
    gpu,
    ...(opts.gpuStages ? { gpuStages: new Set(opts.gpuStages) } : {}),
  };
}

export function labels(component: string): Record<string, string> {
  return { [LABEL_NAME]: NAME, [LABEL_COMPONENT]: component };
}

export function metadata(name: string, component: string, r: Resolved, topology: Topology): ObjectMeta {
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

/** The API's resources, or a stage's: the options' override, else the declaration's, else a small default. */
export function resourcesFor(component: string, opts: RenderK8sOptions, gpu: boolean, declared?: ResourceSpec): ResourceRequirements {
  const own: ResourceRequirements | undefined = declared ? { requests: { ...declared.requests }, limits: { ...declared.limits } } : undefined;
  const base = opts.resources?.[component] ?? (component === 'api' ? API_RESOURCES : own) ?? FALLBACK_RESOURCES;
  const res: ResourceRequirements = { requests: { ...base.requests }, limits: { ...base.limits } };
  // an extended resource is requested through its limit (the request defaults to it and may not differ)
  if (gpu) res.limits[GPU_RESOURCE] = String(Math.max(1, declared?.gpus ?? 1));
  else delete res.limits[GPU_RESOURCE];
  delete res.requests[GPU_RESOURCE];
  return res;
}

export const POD_SECURITY = { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } };
// the root filesystem is read-only: /tmp is an emptyDir (stages work in temporary directories,
// ffmpeg and inference, and tsx caches there) and local state lives on the `state` volume
export const CONTAINER_SECURITY = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } };

/** The rendered Secret holding the Kafka SASL user name of a stage's principal, or the API's (`api`). */
export function kafkaSecretName(component: string): string {
  return `${NAME}-${component}-kafka`;
}

/**
 * The Secret holding that principal's password (key `password`): never rendered, the operator
 * makes it once, so applying the manifests again never touches a password.
 */
export function kafkaPasswordSecretName(component: string): string {
  return `${kafkaSecretName(component)}-password`;
}

/**
 * With SASL, SONIC_KAFKA_SASL_USERNAME from the component's rendered Kafka Secret and _PASSWORD
 * from its password Secret (required: the pod waits until the operator made it). Without SASL,
 * nothing: no Secret to make, and a pod that starts at once.
 */
export function kafkaCredentialsEnv(component: string, r: Resolved): Container['env'] {
  if (!r.kafka.sasl) return [];
  return [
    { name: 'SONIC_KAFKA_SASL_USERNAME', valueFrom: { secretKeyRef: { name: kafkaSecretName(component), key: 'username' } } },
    { name: 'SONIC_KAFKA_SASL_PASSWORD', valueFrom: { secretKeyRef: { name: kafkaPasswordSecretName(component), key: 'password' } } },
  ];
}

/** With a CA: the volume of the Secret `sonicflow-kafka-ca` (its `ca.crt` only). */
export function kafkaCaVolumes(r: Resolved): Volume[] {
  return r.kafka.caPem === undefined
    ? []
    : [{ name: KAFKA_CA_VOLUME, secret: { secretName: KAFKA_CA_SECRET, items: [{ key: KAFKA_CA_KEY, path: KAFKA_CA_KEY }] } }];
}

/** With a CA: its mount, read-only (the root filesystem is read-only too), where SONIC_KAFKA_SSL_CA_FILE points. */
export function kafkaCaMounts(r: Resolved): Container['volumeMounts'] {
  return r.kafka.caPem === undefined ? [] : [{ name: KAFKA_CA_VOLUME, mountPath: KAFKA_CA_DIR, readOnly: true }];
}

export function envFrom(): Container['envFrom'] {
  return [{ configMapRef: { name: CONFIG_MAP_NAME } }, { secretRef: { name: SECRET_NAME, optional: true } }];
}

/** SONIC_STATE_DIR on the state volume, and that volume's mount. */
export function stateEnv(): Container['env'] {
  return [{ name: 'SONIC_STATE_DIR', value: STATE_DIR }];
}
export const STATE_MOUNT = { name: STATE_VOLUME, mountPath: STATE_DIR };

export function probes(port: string): Pick<Container, 'livenessProbe' | 'readinessProbe'> {
  return {
    livenessProbe: { httpGet: { path: '/healthz', port }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
  };
}
