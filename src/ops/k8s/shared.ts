/**
 * The objects every stage shares: the ConfigMap all pods read, the HTTP API (Deployment +
 * Service) and the PodMonitor that scrapes every sonicflow pod.
 */
import type { Topology } from '../../runtime/topology.js';
import {
  API_PORT,
  CONFIG_MAP_NAME,
  CONTAINER_SECURITY,
  LABEL_NAME,
  NAME,
  POD_SECURITY,
  envFrom,
  kafkaCredentialsEnv,
  labels,
  metadata,
  probes,
  resourcesFor,
  type RenderK8sOptions,
  type Resolved,
} from './common.js';
import type { ConfigMap, Deployment, PodMonitor, Service } from './objects.js';

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
    },
  };
}

export function apiObjects(topology: Topology, opts: RenderK8sOptions, r: Resolved): [Deployment, Service] {
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
              env: [{ name: 'SONIC_API_HOST', value: '0.0.0.0' }, { name: 'SONIC_API_PORT', value: String(API_PORT) }, ...kafkaCredentialsEnv('api')],
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
