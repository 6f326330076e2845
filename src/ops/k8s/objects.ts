/** The Kubernetes objects sonicflow renders, as far as it fills them in (`render.ts`). */

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

interface HttpProbe {
  httpGet: { path: string; port: string };
  initialDelaySeconds?: number;
  periodSeconds: number;
  timeoutSeconds: number;
  failureThreshold: number;
}

/** A container's environment entry: a literal value, or one read from a Secret or the pod itself. */
export type EnvVar =
  | { name: string; value: string }
  | { name: string; valueFrom: { secretKeyRef: { name: string; key: string; optional?: boolean } } | { fieldRef: { fieldPath: string } } };

export interface Container {
  name: string;
  image: string;
  imagePullPolicy: string;
  command: string[];
  env: EnvVar[];
  envFrom: ({ configMapRef: { name: string; optional?: boolean } } | { secretRef: { name: string; optional?: boolean } })[];
  ports: { name: string; containerPort: number; protocol: 'TCP' }[];
  livenessProbe: HttpProbe;
  readinessProbe: HttpProbe;
  resources: ResourceRequirements;
  securityContext: Record<string, unknown>;
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
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
        nodeSelector?: Record<string, string>;
        tolerations?: Toleration[];
        containers: Container[];
        volumes: Volume[];
      };
    };
  };
}

/** A pod volume: an emptyDir, the keys of a Secret as files (read-only), or a PersistentVolumeClaim. */
export type Volume =
  | { name: string; emptyDir: Record<string, string> }
  | { name: string; secret: { secretName: string; items: { key: string; path: string }[] } }
  | { name: string; persistentVolumeClaim: { claimName: string; readOnly?: boolean } };

/** A pod's toleration of a node taint: `Exists` (any value) or `Equal` to `value`. */
export type Toleration = { key: string; operator: 'Exists'; effect: string } | { key: string; operator: 'Equal'; value: string; effect: string };

export interface PersistentVolumeClaimTemplate {
  metadata: { name: string; labels?: Record<string, string> };
  spec: {
    accessModes: ['ReadWriteOnce'];
    storageClassName?: string;
    resources: { requests: { storage: string } };
  };
}

export interface StatefulSet {
  apiVersion: 'apps/v1';
  kind: 'StatefulSet';
  metadata: ObjectMeta;
  spec: {
    replicas: number;
    serviceName: string;
    podManagementPolicy: 'OrderedReady' | 'Parallel';
    revisionHistoryLimit: number;
    selector: { matchLabels: Record<string, string> };
    updateStrategy: { type: 'RollingUpdate'; rollingUpdate: { partition: number } };
    persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain' | 'Delete'; whenScaled: 'Retain' | 'Delete' };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        securityContext: Record<string, unknown>;
        containers: Container[];
        volumes: Volume[];
      };
    };
    volumeClaimTemplates: PersistentVolumeClaimTemplate[];
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
  /** The TriggerAuthentication holding the scaler's TLS and SASL settings (a secured cluster). */
  authenticationRef?: { name: string };
}

/**
 * KEDA's prometheus trigger: replicas = ceil(query result / threshold) (AverageValue), for the
 * workers of a dispatcher stage, scaled on the estimated worker-seconds it holds.
 */
export interface PrometheusTrigger {
  type: 'prometheus';
  metricType: 'AverageValue';
  metadata: {
    serverAddress: string;
    /** Must return one sample (a `sum`). */
    query: string;
    threshold: string;
    activationThreshold: string;
    /** 'false': an empty result is a scaler error (KEDA's fallback replicas), not zero work. */
    ignoreNullValues: 'true' | 'false';
  };
}

/** KEDA's TriggerAuthentication: trigger parameters read from Secret keys. */
export interface TriggerAuthentication {
  apiVersion: 'keda.sh/v1alpha1';
  kind: 'TriggerAuthentication';
  metadata: ObjectMeta;
  spec: { secretTargetRef: { parameter: string; name: string; key: string }[] };
}

interface HpaScalingRules {
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
    /**
     * What the HPA gets from a scaler that failed `failureThreshold` polls in a row. `behavior`
     * (KEDA 2.17+; an older KEDA drops the field and acts as `static`): `static` (default) asks for
     * `replicas`; `currentReplicasIfHigher` for the current count when it is higher, so it never shrinks.
     */
    fallback: {
      failureThreshold: number;
      replicas: number;
      behavior?: 'static' | 'currentReplicas' | 'currentReplicasIfHigher' | 'currentReplicasIfLower';
    };
    advanced: {
      restoreToOriginalReplicaCount: boolean;
      horizontalPodAutoscalerConfig: { behavior: { scaleUp: HpaScalingRules; scaleDown: HpaScalingRules } };
    };
    triggers: (KafkaTrigger | PrometheusTrigger)[];
  };
}

interface PodMetricsEndpoint {
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
    /** `None`: a headless Service (the StatefulSet's governing Service). */
    clusterIP?: 'None';
    publishNotReadyAddresses?: boolean;
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

export interface Secret {
  apiVersion: 'v1';
  kind: 'Secret';
  metadata: ObjectMeta;
  type: 'Opaque';
  stringData: Record<string, string>;
}

export type K8sObject = Deployment | StatefulSet | ScaledObject | TriggerAuthentication | PodMonitor | Service | ConfigMap | Secret;
