/**
 * A stage's objects: its Deployment (`sonicflow run <stage>`) and the KEDA ScaledObject that
 * scales it on the consumer group's lag (the workers of a dispatcher stage: on the work the
 * dispatcher holds, through Prometheus).
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
 * - `terminationGracePeriodSeconds` is the pod's drain timeout (SONIC_DRAIN_TIMEOUT_MS) plus a
 *   margin, so Kubernetes never kills a pod that is still finishing and committing in-flight work
 *   after SIGTERM. The global drain timeout (30 s by default) is far shorter than a render (infer's
 *   budget is SONIC_INFER_TIMEOUT_BASE_S + SONIC_INFER_TIMEOUT_PER_AUDIO_S per second of audio,
 *   up to SONIC_MAX_AUDIO_SECONDS: 3720 s with the defaults), so the pods of a stage with GPUs
 *   and of the workers of a dispatcher get the longest render plus the drain timeout instead:
 *   a scale-down (KEDA's, a rollout's) then lets the render in progress finish rather than
 *   abandoning it to be redone from the start. The busy floor below bounds the count, not which pod
 *   the ReplicaSet deletes (not the idle one first), so this drain is what saves a busy pod's render. An operator who sets SONIC_DRAIN_TIMEOUT_MS when
 *   rendering gets that value in every pod.
 * - `spec.replicas` is left out of the stage Deployments: KEDA owns it, and an apply that sets it
 *   would reset the scaler's choice.
 * - A stage that declares state stores gets SONIC_STATE_DIR on an emptyDir (the root filesystem is
 *   read-only): the changelog topics are the truth, so a new pod restores its stores from them and a
 *   restarted container resumes from the copy it left.
 * - On a secured cluster (TLS or SASL) every trigger references KEDA's TriggerAuthentication
 *   (`kafka.ts`): the scaler connects as its own principal, which may only DESCRIBE the groups and
 *   consumed topics.
 * - GPU stages (`infer` by default) get `nvidia.com/gpu: 1` and a toleration for the usual GPU
 *   node taint, and roll with `maxSurge: 0` (a surge pod would wait for a spare GPU). The GPU
 *   options (`--gpu-image`, `--infer-backend`, `--weights-pvc`, `--gpu-node-selector`,
 *   `--gpu-toleration`, `--gpus`) change their pods and replica caps only (`gpu.ts`).
 * - The workers of a dispatcher stage (`dispatcher.ts`) are scaled by a prometheus trigger, not by
 *   their input's lag: that lag stays at 1 + queuePerWorker per worker by design (the backlog waits
 *   in the dispatcher), so it would never scale them up. The query is the estimated worker-seconds
 *   the dispatcher holds, waiting and dispatched-not-done (`sonicflow_dispatch_backlog_seconds` +
 *   `sonicflow_dispatch_outstanding_seconds`, summed over its replicas: a standby reports 0), on
 *   the series the rendered PodMonitor scrapes (its `job`, this namespace, the dispatcher's
 *   `stage`); the threshold is the workers' `targetDrainSeconds`, so KEDA asks for
 *   ceil(seconds / target) workers, but never fewer than the busy workers: the query is those
 *   seconds or, when higher, `sonicflow_dispatch_busy_workers` × target (4 workers each on a 300 s
 *   render with nothing waiting are 1200 s, 2 workers at a 600 s target: KEDA would stop two of
 *   them mid-render). Any count is useful up to the partitions of the dispatcher's
 *   sink (each worker holds one or more), which cap `maxReplicaCount`. Their retry tiers keep
 *   kafka triggers: the workers read those directly, outside the dispatcher's count.
 * - KEDA's `fallback` (the scaler failed 3 polls in a row: Prometheus away) holds at least one
 *   replica. For the workers of a dispatcher it never shrinks them (`behavior:
 *   currentReplicasIfHigher`, KEDA 2.17+): a static count would drain GPUs in the middle of their
 *   renders because the monitoring is down. An older KEDA drops the field and falls back to
 *   `replicas` (minReplicaCount).
 * - A dispatcher stage whose min and max replicas are equal (by default 2: one active, one standby)
 *   gets no ScaledObject: there is nothing to scale, so its Deployment sets `replicas` itself.
 */
import { SonicError } from '../../core/errors.js';
import { groupId } from '../../runtime/names.js';
import type { StageSpec, Topology } from '../../runtime/topology.js';
import {
  CONTAINER_SECURITY,
  KEDA_TRIGGER_AUTH,
  NAME,
  POD_SECURITY,
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
  stageObjectName,
  stateEnv,
  STAGES_JOB,
  type RenderK8sOptions,
  type Resolved,
} from './common.js';
import { gpuEnv, gpuMounts, gpuVolumes, shareGpus } from './gpu.js';
import type { Deployment, KafkaTrigger, PrometheusTrigger, ScaledObject } from './objects.js';

const SCALE_DOWN_STABILIZATION_SECONDS = 300;
const SCALE_UP_STABILIZATION_SECONDS = 30;
const POLLING_INTERVAL_SECONDS = 15;
/** KEDA waits this long after the last active trigger before scaling to zero (only when minReplicas is 0). */
const COOLDOWN_PERIOD_SECONDS = 300;

/** The dispatcher stage whose workers `stage` is, if any. */
export function dispatcherOf(topology: Topology, stage: StageSpec): StageSpec | undefined {
  return topology.stages.find((d) => d.dispatch?.workers === stage.name);
}

/** Whether KEDA scales the stage: every stage but a dispatcher with a fixed replica count. */
export function scaledByKeda(stage: StageSpec): boolean {
  return !(stage.dispatch && stage.scaling.minReplicas === stage.scaling.maxReplicas);
}

/** Whether the stage's pods get GPUs: the options' GPU stages when they name them, else the stage's declaration. */
export function isGpuStage(stage: StageSpec, r: Resolved): boolean {
  return r.gpuStages ? r.gpuStages.has(stage.name) : (stage.resources?.gpus ?? 0) > 0;
}

/**
 * The most replicas a stage runs before the GPU cap: a fixed dispatcher's count, else its
 * maxReplicas capped by its input's partitions (behind a dispatcher: the dispatcher's sink's).
 */
function uncappedReplicas(topology: Topology, stage: StageSpec): number {
  if (!scaledByKeda(stage)) return Math.max(1, stage.scaling.minReplicas);
  const front = dispatcherOf(topology, stage);
  // behind a dispatcher, a worker per partition of its sink at most (the sink is the workers' input)
  const sink = topology.topics[front ? (Object.values(front.outputs)[0] ?? '') : stage.input];
  if (!sink) {
    const why = front
      ? `dispatcher ${front.name} has no sink the topology declares`
      : `stage ${stage.name} reads topic ${stage.input}, which the topology does not declare`;
    throw new SonicError('TOPOLOGY_INVALID', why);
  }
  return Math.max(1, Math.min(stage.scaling.maxReplicas, sink.partitions));
}

/** The most replicas a stage runs: {@link uncappedReplicas}, and for a GPU stage with `--gpus` its share of the GPUs over every GPU stage of the topology. */
function replicaCap(topology: Topology, stage: StageSpec, r: Resolved): number {
  const own = uncappedReplicas(topology, stage);
  if (r.gpu.gpus === undefined || !isGpuStage(stage, r)) return own;
  const demands = topology.stages
    .filter((s) => isGpuStage(s, r))
    .map((s) => ({ stage: s.name, gpusPerPod: Math.max(1, s.resources?.gpus ?? 1), replicas: uncappedReplicas(topology, s) }));
  const shares = shareGpus(r.gpu.gpus, demands, (message) => {
    throw new SonicError('CONFIG_INVALID', message);
  });
  return shares.get(stage.name) ?? own;
}

export function stageDeployment(topology: Topology, stage: StageSpec, opts: RenderK8sOptions, r: Resolved): Deployment {
  const gpu = isGpuStage(stage, r);
  // a GPU stage's records (and a dispatcher's workers': GPU work by design) may take the longest
  // render: their drain covers it, unless the operator set the drain timeout
  const renders = gpu || dispatcherOf(topology, stage) !== undefined;
  const drainMs = renders ? r.renderDrainMs : r.drainMs;
  const podLabels = labels(stage.name);
  // a stage with state stores keeps their local copies under SONIC_STATE_DIR/stores: an emptyDir
  // (the changelog topics are the truth; a new pod restores from them, a restarted container resumes).
  // A dispatcher's backlog is held in memory and restored from its changelog: no local copy.
  const stores = stage.stores.length > 0 && !stage.dispatch;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(stageObjectName(stage.name), stage.name, r, topology),
    spec: {
      // no ScaledObject (a dispatcher of fixed size): the Deployment holds the count itself
      ...(scaledByKeda(stage) ? {} : { replicas: replicaCap(topology, stage, r) }),
      revisionHistoryLimit: 5,
      selector: { matchLabels: { ...podLabels } },
      strategy: { type: 'RollingUpdate', rollingUpdate: gpu ? { maxSurge: 0, maxUnavailable: 1 } : { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { ...podLabels } },
        spec: {
          // the pod's drain timeout plus a margin. A scale-down (KEDA's, as any) sends SIGTERM to a
          // pod and the drain lets its in-flight record finish and commit: for a GPU stage, a render
          // in progress is finished rather than abandoned, its drain timeout being the longest
          // render the configuration allows (beyond it the record is dispatched again and redone)
          terminationGracePeriodSeconds: renders ? r.renderGraceSeconds : r.graceSeconds,
          securityContext: POD_SECURITY,
          ...(gpu && r.gpu.nodeSelector ? { nodeSelector: { ...r.gpu.nodeSelector } } : {}),
          ...(gpu ? { tolerations: r.gpu.tolerations.map((t) => ({ ...t })) } : {}),
          containers: [
            {
              name: stage.name,
              image: (gpu ? r.gpu.image : undefined) ?? r.image,
              imagePullPolicy: r.imagePullPolicy,
              command: [NAME, 'run', stage.name],
              env: [
                { name: 'SONIC_METRICS_PORT', value: String(r.metricsPort) },
                { name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(drainMs) },
                ...kafkaCredentialsEnv(stage.name, r),
                ...(stores ? stateEnv() : []),
                ...(gpu ? gpuEnv(r.gpu) : []),
              ],
              envFrom: envFrom(),
              ports: [{ name: 'metrics', containerPort: r.metricsPort, protocol: 'TCP' }],
              ...probes('metrics'),
              resources: resourcesFor(stage.name, opts, gpu, stage.resources),
              securityContext: CONTAINER_SECURITY,
              volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }, ...(stores ? [STATE_MOUNT] : []), ...kafkaCaMounts(r), ...(gpu ? gpuMounts(r.gpu) : [])],
            },
          ],
          volumes: [
            { name: 'tmp', emptyDir: {} },
            ...(stores ? [{ name: STATE_VOLUME, emptyDir: {} }] : []),
            ...kafkaCaVolumes(r),
            ...(gpu ? gpuVolumes(r.gpu) : []),
          ],
        },
      },
    },
  };
}

export function stageScaledObject(topology: Topology, stage: StageSpec, opts: RenderK8sOptions, r: Resolved): ScaledObject {
  const input = topology.topics[stage.input];
  if (!input) throw new SonicError('TOPOLOGY_INVALID', `stage ${stage.name} reads topic ${stage.input}, which the topology does not declare`);
  const { minReplicas, lagThreshold, activationLagThreshold } = stage.scaling;
  if (!(lagThreshold > 0)) throw new SonicError('TOPOLOGY_INVALID', `stage ${stage.name} lagThreshold must be > 0 for KEDA, got ${lagThreshold}`);
  const front = dispatcherOf(topology, stage);
  // never above the input's partitions (behind a dispatcher: its sink's), nor a GPU stage's share of `--gpus`
  const maxReplicaCount = replicaCap(topology, stage, r);
  const minReplicaCount = Math.max(0, Math.min(minReplicas, maxReplicaCount));
  const consumerGroup = groupId(opts.clientId, topology, stage);
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
    // on a secured cluster KEDA connects as its own principal, with TLS and the CA (`kafka.ts`)
    ...(r.kafka.ssl || r.kafka.sasl ? { authenticationRef: { name: KEDA_TRIGGER_AUTH } } : {}),
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
      // when the scaler cannot read its metric (broker or Prometheus down), hold at least one
      // replica; the workers of a dispatcher keep their count (GPUs mid-render) if it is higher
      fallback: {
        failureThreshold: 3,
        replicas: Math.max(1, minReplicaCount),
        ...(front ? { behavior: 'currentReplicasIfHigher' as const } : {}),
      },
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
      triggers: front ? [workTrigger(stage, front, r), ...stage.retry.topics.map(trigger)] : [stage.input, ...stage.retry.topics].map(trigger),
    },
  };
}

/**
 * The PromQL the workers of a dispatcher scale on: the estimated worker-seconds it holds (waiting
 * and dispatched-not-done, X), or the busy workers × `targetDrainSeconds` (Y) when that is higher,
 * over its replicas, so that KEDA's ceil(result / targetDrainSeconds) is never below the busy
 * workers. `X > Y or Y or X`: each `sum` without `by` is a vector of one sample with no labels (or
 * none, when no series matches); `X > Y` keeps X where it is above Y, `or Y` adds Y when the left
 * side is empty (X not above it), and `or X` keeps X when Y has no series (a dispatcher from before
 * the busy gauge, in a rolling upgrade). No series at all stays an empty result: a scaler error,
 * which KEDA's fallback answers, not zero work.
 */
export function dispatchWorkQuery(dispatcher: string, namespace: string, targetDrainSeconds: number): string {
  const sel = `{job="${STAGES_JOB}",namespace="${namespace}",stage="${dispatcher}"}`;
  const seconds = `(sum(sonicflow_dispatch_backlog_seconds${sel}) + sum(sonicflow_dispatch_outstanding_seconds${sel}))`;
  const busy = `(sum(sonicflow_dispatch_busy_workers${sel}) * ${targetDrainSeconds})`;
  return `${seconds} > ${busy} or ${busy} or ${seconds}`;
}

/** The workers' prometheus trigger: ceil(worker-seconds held by the dispatcher / targetDrainSeconds) replicas, at least the busy ones. */
function workTrigger(stage: StageSpec, front: StageSpec, r: Resolved): PrometheusTrigger {
  const target = stage.scaling.targetDrainSeconds;
  if (!(target > 0)) throw new SonicError('TOPOLOGY_INVALID', `stage ${stage.name} targetDrainSeconds must be > 0 for KEDA, got ${target}`);
  return {
    type: 'prometheus',
    metricType: 'AverageValue',
    metadata: {
      serverAddress: r.prometheusUrl,
      query: dispatchWorkQuery(front.name, r.namespace, target),
      threshold: String(target),
      // active (above minReplicaCount, from zero) as soon as any work is held
      activationThreshold: '0',
      ignoreNullValues: 'false',
    },
  };
}
