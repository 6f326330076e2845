/**
 * The objects every stage shares: the ConfigMap all pods read, the HTTP API (StatefulSet +
 * Services) and the PodMonitor that scrapes every sonicflow pod.
 */
import type { Topology } from '../../runtime/topology.js';
import {
  API_PORT,
  CONFIG_MAP_NAME,
  CONTAINER_SECURITY,
  KAFKA_CA_PATH,
  LABEL_NAME,
  NAME,
  POD_SECURITY,
  SECRET_NAME,
  STAGES_JOB,
  STATE_MOUNT,
  STATE_VOLUME,
  envFrom,
  kafkaCaMounts,
  kafkaCaVolumes,
  kafkaCredentialsEnv,
  labels,
  metadata,
  probes,
  resourcesFor,
  stateEnv,
  type RenderK8sOptions,
  type Resolved,
} from './common.js';
import type { ConfigMap, PodMonitor, Service, StatefulSet } from './objects.js';

export function podMonitor(topology: Topology, r: Resolved): PodMonitor {
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
            { action: 'replace', targetLabel: 'job', replacement: STAGES_JOB },
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

export function configMap(topology: Topology, opts: RenderK8sOptions, r: Resolved): ConfigMap {
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
      SONIC_CLIENT_ID: opts.clientId,
      // the pods connect as KEDA's TriggerAuthentication does; the user name and password are per pod
      ...(r.kafka.ssl ? { SONIC_KAFKA_SSL: 'true' } : {}),
      ...(r.kafka.caPem !== undefined ? { SONIC_KAFKA_SSL_CA_FILE: KAFKA_CA_PATH } : {}),
      ...(r.kafka.sasl ? { SONIC_KAFKA_SASL_MECHANISM: r.kafka.sasl } : {}),
    },
  };
}

/**
 * The API: a StatefulSet, so that each replica keeps its own state volume (a PersistentVolumeClaim
 * per replica) and its name: a restarted or rescheduled pod resumes its status view from the
 * store's checkpoint instead of rebuilding it from the status topic, and keeps its instance id
 * (SONIC_API_INSTANCE_ID = the pod name, `sonicflow-api-0`, ...), so that it fences its
 * predecessor's open transaction. The governing Service is headless; clients use the ClusterIP
 * Service `sonicflow-api`.
 *
 * SONIC_API_SECRET is required from the Secret `sonicflow-secrets`: a replica without it would
 * generate its own into its own volume, and replicas with different secrets give one idempotency
 * key different task ids. A pod waits (CreateContainerConfigError) until the Secret has the key.
 */
export function apiObjects(topology: Topology, opts: RenderK8sOptions, r: Resolved): [Service, StatefulSet, Service] {
  const podLabels = labels('api');
  const name = `${NAME}-api`;
  const headlessName = `${name}-headless`;
  const headless: Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(headlessName, 'api', r, topology),
    spec: { type: 'ClusterIP', clusterIP: 'None', selector: { ...podLabels }, ports: [{ name: 'http', port: API_PORT, targetPort: 'http', protocol: 'TCP' }] },
  };
  const statefulSet: StatefulSet = {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: metadata(name, 'api', r, topology),
    spec: {
      replicas: opts.apiReplicas ?? 2,
      serviceName: headlessName,
      // the replicas do not depend on each other: start and replace them all at once
      podManagementPolicy: 'Parallel',
      revisionHistoryLimit: 5,
      selector: { matchLabels: { ...podLabels } },
      // one pod at a time, highest ordinal first; the others keep serving
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
      // a replica scaled away leaves a view nobody resumes: its claim goes; deleting the set keeps them
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Delete' },
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
                ...stateEnv(),
                { name: 'SONIC_API_INSTANCE_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                { name: 'SONIC_API_SECRET', valueFrom: { secretKeyRef: { name: SECRET_NAME, key: 'SONIC_API_SECRET' } } },
                ...kafkaCredentialsEnv('api', r),
              ],
              envFrom: envFrom(),
              ports: [{ name: 'http', containerPort: API_PORT, protocol: 'TCP' }],
              ...probes('http'),
              resources: resourcesFor('api', opts, false),
              securityContext: CONTAINER_SECURITY,
              volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }, STATE_MOUNT, ...kafkaCaMounts(r)],
            },
          ],
          volumes: [{ name: 'tmp', emptyDir: {} }, ...kafkaCaVolumes(r)],
        },
      },
      volumeClaimTemplates: [
        {
          metadata: { name: STATE_VOLUME, labels: { ...podLabels } },
          spec: {
            accessModes: ['ReadWriteOnce'],
            ...(opts.storageClass === undefined ? {} : { storageClassName: opts.storageClass }),
            resources: { requests: { storage: r.apiStateStorage } },
          },
        },
      ],
    },
  };
  const service: Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(name, 'api', r, topology),
    spec: { type: 'ClusterIP', selector: { ...podLabels }, ports: [{ name: 'http', port: API_PORT, targetPort: 'http', protocol: 'TCP' }] },
  };
  return [headless, statefulSet, service];
}
