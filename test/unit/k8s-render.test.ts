import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  renderK8s,
  renderK8sObjects,
  toYaml,
  type ConfigMap,
  type Container,
  type Deployment,
  type K8sObject,
  type PodMonitor,
  type RenderK8sOptions,
  type ScaledObject,
  type Secret,
  type Service,
  type StatefulSet,
} from '../../src/ops/k8s/render.js';
import { defineTopology, type Topology } from '../../src/runtime/topology.js';
import { validateTopology } from '../../src/runtime/validate.js';
import { sonicTopology } from '../../topologies/sonic.js';

const DRAIN_MS = 30_000;
const BROKERS = ['kafka-0.kafka.svc:9092', 'kafka-1.kafka.svc:9092'];
// the consumer group KEDA watches, byte for byte as the stage processes join it (`<client id>.<prefix>.<stage>`)
const groupIdOf = (stage: string): string => `sonicflow.sonic.${stage}`;
const OPTS: RenderK8sOptions = { drainTimeoutMs: DRAIN_MS, brokers: BROKERS, clientId: 'sonicflow' };
const DNS_1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const topology = sonicTopology();
const STAGES = topology.stages.map((s) => s.name);
const objects = renderK8sObjects(topology, OPTS);

const deployments = (objs: K8sObject[]): Deployment[] => objs.filter((o): o is Deployment => o.kind === 'Deployment');
const statefulSets = (objs: K8sObject[]): StatefulSet[] => objs.filter((o): o is StatefulSet => o.kind === 'StatefulSet');
/** Every workload's pod template: the stage Deployments and the API StatefulSet. */
const workloads = (objs: K8sObject[]): (Deployment | StatefulSet)[] => [...deployments(objs), ...statefulSets(objs)];
const scaledObjects = (objs: K8sObject[]): ScaledObject[] => objs.filter((o): o is ScaledObject => o.kind === 'ScaledObject');
const services = (objs: K8sObject[]): Service[] => objs.filter((o): o is Service => o.kind === 'Service');
const podMonitors = (objs: K8sObject[]): PodMonitor[] => objs.filter((o): o is PodMonitor => o.kind === 'PodMonitor');
const configMaps = (objs: K8sObject[]): ConfigMap[] => objs.filter((o): o is ConfigMap => o.kind === 'ConfigMap');
const secrets = (objs: K8sObject[]): Secret[] => objs.filter((o): o is Secret => o.kind === 'Secret');
const component = (o: K8sObject): string | undefined => o.metadata.labels?.['app.kubernetes.io/component'];
const stageDeployment = (stage: string): Deployment => {
  const d = deployments(objects).find((x) => component(x) === stage);
  if (!d) throw new Error(`no Deployment for ${stage}`);
  return d;
};
const container = (d: Deployment | StatefulSet): Container => {
  const c = d.spec.template.spec.containers[0];
  if (!c) throw new Error(`${d.metadata.name} has no container`);
  return c;
};
/** Memory quantity in MiB (Mi and Gi suffixes only, which is what the renderer writes). */
const mib = (q: string | undefined): number => {
  const m = /^(\d+)(Mi|Gi)$/.exec(q ?? '');
  if (!m) throw new Error(`unexpected memory quantity ${q}`);
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1);
};

describe('k8s render: object inventory', () => {
  it('renders one Kafka Secret, Deployment and ScaledObject per stage, the API Secret, StatefulSet and its two Services, one PodMonitor and the ConfigMap', () => {
    expect(deployments(objects).map(component).sort()).toEqual([...STAGES].sort());
    expect(scaledObjects(objects).map(component).sort()).toEqual([...STAGES].sort());
    expect(statefulSets(objects).map((s) => s.metadata.name)).toEqual(['sonicflow-api']);
    expect(services(objects).map((s) => s.metadata.name)).toEqual(['sonicflow-api-headless', 'sonicflow-api']);
    expect(podMonitors(objects)).toHaveLength(1);
    expect(configMaps(objects).map((c) => c.metadata.name)).toEqual(['sonicflow-config']);
    expect(secrets(objects).map(component).sort()).toEqual([...STAGES, 'api'].sort());
    expect(objects).toHaveLength(STAGES.length * 3 + 4 + 1 + 1);
  });

  it('gives every object a valid name, the namespace and the sonicflow name label; names are unique per kind', () => {
    for (const o of objects) {
      expect(typeof o.apiVersion).toBe('string');
      expect(o.metadata.name).toMatch(DNS_1123_LABEL);
      expect(o.metadata.namespace).toBe('sonicflow');
      expect(o.metadata.labels?.['app.kubernetes.io/name']).toBe('sonicflow');
    }
    const keys = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(new Set(keys).size).toBe(keys.length);
    const custom = renderK8sObjects(topology, { ...OPTS, namespace: 'media', image: 'registry.example/sonic:1.2.3' });
    expect(custom.every((o) => o.metadata.namespace === 'media')).toBe(true);
    expect(workloads(custom).every((d) => container(d).image === 'registry.example/sonic:1.2.3')).toBe(true);
  });
});

describe('k8s render: Deployments', () => {
  it('has the fields of an apps/v1 Deployment or StatefulSet, with the selector equal to the pod template labels', () => {
    const all = workloads(objects);
    expect(all).toHaveLength(topology.stages.length + 1); // every stage and the API
    for (const d of all) {
      expect(d.apiVersion).toBe('apps/v1');
      expect(d.kind).toBe(component(d) === 'api' ? 'StatefulSet' : 'Deployment');
      expect(Object.keys(d.spec.selector.matchLabels).length).toBeGreaterThan(0);
      expect(d.spec.selector.matchLabels).toEqual(d.spec.template.metadata.labels);
      expect(d.spec.template.spec.containers).toHaveLength(1);
      const c = container(d);
      expect(c.name).toMatch(DNS_1123_LABEL);
      expect(c.image).toBe('ghcr.io/sonicflow/sonicflow:latest');
      expect(Array.isArray(c.command)).toBe(true);
      expect(c.command.every((x) => typeof x === 'string')).toBe(true);
      expect(c.ports.length).toBeGreaterThan(0);
      for (const p of c.ports) {
        expect(Number.isInteger(p.containerPort)).toBe(true);
        expect(p.name.length).toBeLessThanOrEqual(15);
      }
      const portNames = c.ports.map((p) => p.name);
      expect(portNames).toContain(c.livenessProbe.httpGet.port);
      expect(portNames).toContain(c.readinessProbe.httpGet.port);
      expect(c.livenessProbe.httpGet.path).toBe('/healthz');
      expect(c.readinessProbe.httpGet.path).toBe('/readyz');
      // env values must be strings or the API server rejects the object
      expect(c.env.every((e) => typeof e.name === 'string' && ('value' in e ? typeof e.value === 'string' : typeof e.valueFrom === 'object'))).toBe(true);
      expect(c.envFrom).toContainEqual({ configMapRef: { name: 'sonicflow-config' } });
      expect(c.envFrom).toContainEqual({ secretRef: { name: 'sonicflow-secrets', optional: true } });
      expect(Object.keys(c.resources.requests)).toEqual(expect.arrayContaining(['cpu', 'memory']));
      expect(Object.keys(c.resources.limits)).toEqual(expect.arrayContaining(['memory']));
      expect(mib(c.resources.requests.memory)).toBeLessThanOrEqual(mib(c.resources.limits.memory));
    }
  });

  it('runs `sonicflow run <stage>` with the metrics port, probes and drain timeout, and leaves replicas to KEDA', () => {
    for (const stage of STAGES) {
      const d = stageDeployment(stage);
      expect(d.metadata.name).toBe(`sonicflow-${stage}`);
      expect(d.spec.template.metadata.labels).toEqual({ 'app.kubernetes.io/name': 'sonicflow', 'app.kubernetes.io/component': stage });
      expect(d.spec.replicas).toBeUndefined();
      const c = container(d);
      expect(c.command).toEqual(['sonicflow', 'run', stage]);
      expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9464, protocol: 'TCP' }]);
      expect(c.livenessProbe.httpGet.port).toBe('metrics');
      expect(c.readinessProbe.httpGet.port).toBe('metrics');
      expect(c.env).toContainEqual({ name: 'SONIC_METRICS_PORT', value: '9464' });
      expect(c.env).toContainEqual({ name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(DRAIN_MS) });
    }
    const other = renderK8sObjects(topology, { ...OPTS, metricsPort: 9500 });
    const c = container(deployments(other).find((d) => component(d) === 'encode')!);
    expect(c.ports[0]?.containerPort).toBe(9500);
    expect(c.env).toContainEqual({ name: 'SONIC_METRICS_PORT', value: '9500' });
  });

  it('gives infer one GPU (in limits), a GPU toleration and more memory; no other stage gets a GPU', () => {
    const infer = container(stageDeployment('infer'));
    expect(infer.resources.limits['nvidia.com/gpu']).toBe('1');
    expect(stageDeployment('infer').spec.template.spec.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
    for (const stage of STAGES.filter((s) => s !== 'infer')) {
      const c = container(stageDeployment(stage));
      expect(c.resources.limits['nvidia.com/gpu']).toBeUndefined();
      expect(c.resources.requests['nvidia.com/gpu']).toBeUndefined();
      expect(mib(infer.resources.requests.memory)).toBeGreaterThan(mib(c.resources.requests.memory));
    }
    const cpuOnly = renderK8sObjects(topology, { ...OPTS, gpuStages: [] });
    const c = container(deployments(cpuOnly).find((d) => component(d) === 'infer')!);
    expect(c.resources.limits['nvidia.com/gpu']).toBeUndefined();
  });

  it('gives a stage the resource table does not name the default requests and limits, without a GPU', () => {
    const extended: Topology = defineTopology({
      name: 'extended',
      prefix: 'extended',
      status: 'status',
      topics: {
        in: { valueSchema: 'task-request', external: { producers: ['api'] }, doc: 'input' },
        out: { valueSchema: 'task-validated', external: { consumers: ['someone'] }, doc: 'output' },
        status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
      },
      stages: { transcribe: { doc: 'a stage no table knows', input: 'in', outputs: { result: 'out' } } },
    });
    const rendered = renderK8sObjects(extended, OPTS);
    expect(scaledObjects(rendered).map(component)).toEqual(['transcribe']);
    const c = container(deployments(rendered).find((d) => component(d) === 'transcribe')!);
    expect(c.command).toEqual(['sonicflow', 'run', 'transcribe']);
    expect(Object.keys(c.resources.requests).sort()).toEqual(['cpu', 'memory']);
    expect(Object.keys(c.resources.limits).sort()).toEqual(['cpu', 'memory']);
    expect(mib(c.resources.requests.memory)).toBeLessThanOrEqual(mib(c.resources.limits.memory));
    const given = { requests: { cpu: '3', memory: '3Gi' }, limits: { cpu: '4', memory: '4Gi' } };
    const tuned = renderK8sObjects(extended, { ...OPTS, resources: { transcribe: given } });
    expect(container(deployments(tuned).find((d) => component(d) === 'transcribe')!).resources).toEqual(given);
  });

  it('sets terminationGracePeriodSeconds above the drain timeout', () => {
    for (const d of deployments(objects).filter((x) => component(x) !== 'api')) {
      const grace = d.spec.template.spec.terminationGracePeriodSeconds;
      expect(Number.isInteger(grace)).toBe(true);
      expect(grace).toBeGreaterThan(DRAIN_MS / 1000);
      expect(grace).toBe(Math.ceil(DRAIN_MS / 1000) + 15);
    }
    const odd = renderK8sObjects(topology, { ...OPTS, drainTimeoutMs: 45_500, stage: 'infer' });
    const grace = deployments(odd)[0]?.spec.template.spec.terminationGracePeriodSeconds;
    expect(grace).toBe(46 + 15);
  });

  it('runs the API as `sonicflow api` behind a Service on port 8080 that selects exactly its pods', () => {
    const api = statefulSets(objects)[0]!;
    const c = container(api);
    expect(c.command).toEqual(['sonicflow', 'api']);
    expect(c.ports).toEqual([{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
    expect(c.env).toContainEqual({ name: 'SONIC_API_HOST', value: '0.0.0.0' });
    const svc = services(objects).find((x) => x.metadata.name === 'sonicflow-api')!;
    expect(svc.apiVersion).toBe('v1');
    expect(svc.spec.clusterIP).toBeUndefined();
    expect(svc.spec.selector).toEqual(api.spec.template.metadata.labels);
    expect(svc.spec.ports).toEqual([{ name: 'http', port: 8080, targetPort: 'http', protocol: 'TCP' }]);
    expect(c.ports.map((p) => p.name)).toContain(svc.spec.ports[0]?.targetPort);
    // the Service must not select stage pods
    for (const stage of STAGES) expect(stageDeployment(stage).spec.template.metadata.labels).not.toEqual(svc.spec.selector);
  });
});

describe('k8s render: local state on a writable volume', () => {
  type Workload = Deployment | StatefulSet;
  /** The directory SONIC_STATE_DIR names in a container, when it is set to a literal. */
  const stateDirOf = (c: Container): string | undefined =>
    c.env.find((e): e is { name: string; value: string } => e.name === 'SONIC_STATE_DIR' && 'value' in e)?.value;
  /**
   * Whether `dir` lies on a volume the container may write: the root filesystem is read-only, so
   * it must be under a mount (not read-only) of a volume the pod declares or a claim template of
   * its StatefulSet.
   */
  const writable = (w: Workload, c: Container, dir: string): boolean => {
    if (c.securityContext.readOnlyRootFilesystem !== true) return true;
    const volumes = new Set([
      ...w.spec.template.spec.volumes.map((v) => v.name),
      ...(w.kind === 'StatefulSet' ? w.spec.volumeClaimTemplates.map((t) => t.metadata.name) : []),
    ]);
    return c.volumeMounts.some(
      (m) => !(m as { readOnly?: boolean }).readOnly && volumes.has(m.name) && (dir === m.mountPath || dir.startsWith(`${m.mountPath}/`)),
    );
  };
  /** The containers that open a state store: the API (its status view) and every stage that declares stores. */
  const storeOpeners = (t: Topology, objs: K8sObject[]): [Workload, Container][] =>
    workloads(objs)
      .filter((w) => component(w) === 'api' || (t.stages.find((s) => s.name === component(w))?.stores.length ?? 0) > 0)
      .map((w) => [w, container(w)]);

  it('gives every container that opens a store SONIC_STATE_DIR on a writable mount (the API and validate here)', () => {
    const openers = storeOpeners(topology, objects);
    expect(openers.map(([w]) => component(w)).sort()).toEqual(['api', 'validate']);
    for (const [w, c] of openers) {
      const dir = stateDirOf(c);
      expect(dir, `${w.metadata.name} sets SONIC_STATE_DIR`).toBeDefined();
      expect(dir!.startsWith('/'), `${w.metadata.name}: ${dir} is absolute`).toBe(true);
      // not the scratch directory, which holds only temporary files
      expect(dir === '/tmp' || dir!.startsWith('/tmp/')).toBe(false);
      expect(writable(w, c, dir!), `${w.metadata.name}: ${dir} is on a writable mount`).toBe(true);
      expect(c.env.some((e) => e.name === 'SONIC_API_VIEW_DIR')).toBe(false);
    }
    // the same for one stage rendered alone
    const only = renderK8sObjects(topology, { ...OPTS, stage: 'validate' });
    const [w, c] = storeOpeners(topology, only)[0]!;
    expect(writable(w, c, stateDirOf(c)!)).toBe(true);
  });

  it('gives a stage with stores an emptyDir state volume and a stage without none', () => {
    const stateful: Topology = defineTopology({
      name: 'stateful',
      prefix: 'stateful',
      status: 'status',
      topics: {
        in: { valueSchema: 'task-request', external: { producers: ['api'] }, doc: 'input' },
        mid: { valueSchema: 'task-request', doc: 'between' },
        out: { valueSchema: 'task-validated', external: { consumers: ['someone'] }, doc: 'output' },
        status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
      },
      stages: {
        dedupe: { doc: 'keeps state', input: 'in', outputs: { result: 'mid' }, stores: { seen: { doc: 'seen ids' }, counts: { doc: 'counts' } } },
        forward: { doc: 'keeps none', input: 'mid', outputs: { result: 'out' } },
      },
    });
    const rendered = renderK8sObjects(stateful, OPTS);
    expect(
      storeOpeners(stateful, rendered)
        .map(([w]) => component(w))
        .sort(),
    ).toEqual(['api', 'dedupe']);
    for (const [w, c] of storeOpeners(stateful, rendered)) expect(writable(w, c, stateDirOf(c)!)).toBe(true);
    const dedupe = deployments(rendered).find((d) => component(d) === 'dedupe')!;
    expect(dedupe.spec.template.spec.volumes).toContainEqual({ name: 'state', emptyDir: {} });
    expect(container(dedupe).volumeMounts).toContainEqual({ name: 'state', mountPath: stateDirOf(container(dedupe)) });
    const forward = deployments(rendered).find((d) => component(d) === 'forward')!;
    expect(stateDirOf(container(forward))).toBeUndefined();
    expect(forward.spec.template.spec.volumes.map((v) => v.name)).toEqual(['tmp']);
  });

  it('runs the API as a StatefulSet: a claim per replica, the pod name as instance id, the shared secret required', () => {
    const api = statefulSets(objects)[0]!;
    expect(api.spec.replicas).toBe(2);
    expect(api.spec.selector.matchLabels).toEqual(api.spec.template.metadata.labels);
    const headless = services(objects).find((x) => x.metadata.name === api.spec.serviceName)!;
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.selector).toEqual(api.spec.template.metadata.labels);
    const [claim] = api.spec.volumeClaimTemplates;
    expect(api.spec.volumeClaimTemplates).toHaveLength(1);
    expect(claim!.spec.accessModes).toEqual(['ReadWriteOnce']);
    expect(claim!.spec.resources.requests.storage).toBe('2Gi');
    expect(claim!.spec.storageClassName).toBeUndefined();
    const c = container(api);
    expect(c.volumeMounts).toContainEqual({ name: claim!.metadata.name, mountPath: stateDirOf(c) });
    // the claim is no pod volume as well (a volume of the same name would shadow it)
    expect(api.spec.template.spec.volumes.map((v) => v.name)).not.toContain(claim!.metadata.name);
    expect(c.env).toContainEqual({ name: 'SONIC_API_INSTANCE_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
    // every replica keys task ids with the same secret: never one generated per replica volume
    expect(c.env).toContainEqual({ name: 'SONIC_API_SECRET', valueFrom: { secretKeyRef: { name: 'sonicflow-secrets', key: 'SONIC_API_SECRET' } } });
    // the pod's fsGroup makes the claim writable by the non-root user
    expect(api.spec.template.spec.securityContext.fsGroup).toBe(api.spec.template.spec.securityContext.runAsGroup);
    const tuned = statefulSets(renderK8sObjects(topology, { ...OPTS, apiReplicas: 3, apiStateStorage: '10Gi', storageClass: 'fast-ssd' }))[0]!;
    expect(tuned.spec.replicas).toBe(3);
    expect(tuned.spec.volumeClaimTemplates[0]!.spec).toMatchObject({ storageClassName: 'fast-ssd', resources: { requests: { storage: '10Gi' } } });
    expect(() => renderK8sObjects(topology, { ...OPTS, apiStateStorage: 'lots' })).toThrow(/API state storage/);
    expect(() => renderK8sObjects(topology, { ...OPTS, storageClass: 'Bad Class' })).toThrow(/storage class/);
  });
});

describe('k8s render: KEDA ScaledObjects', () => {
  it('scales each stage Deployment on its consumer group lag, one kafka trigger per consumed topic', () => {
    const deploymentNames = new Set(deployments(objects).map((d) => d.metadata.name));
    const all = scaledObjects(objects);
    expect(all).toHaveLength(topology.stages.length);
    for (const so of all) {
      const stage = topology.stages.find((s) => s.name === component(so))!;
      expect(so.apiVersion).toBe('keda.sh/v1alpha1');
      expect(so.kind).toBe('ScaledObject');
      expect(so.spec.scaleTargetRef.kind).toBe('Deployment');
      expect(deploymentNames.has(so.spec.scaleTargetRef.name)).toBe(true);
      expect(so.spec.scaleTargetRef.name).toBe(`sonicflow-${stage.name}`);
      expect(so.spec.triggers.map((t) => t.metadata.topic)).toEqual([stage.input, ...stage.retry.topics]);
      expect(so.spec.triggers.length).toBeGreaterThan(1);
      for (const t of so.spec.triggers) {
        expect(t.type).toBe('kafka');
        // KEDA metadata is a map of strings
        for (const v of Object.values(t.metadata)) expect(typeof v).toBe('string');
        expect(t.metadata.bootstrapServers).toBe(BROKERS.join(','));
        expect(t.metadata.consumerGroup).toBe(groupIdOf(stage.name));
        expect(t.metadata.lagThreshold).toMatch(/^[1-9]\d*$/);
        expect(Number(t.metadata.lagThreshold)).toBe(stage.scaling.lagThreshold);
        expect(t.metadata.activationLagThreshold).toMatch(/^\d+$/);
        expect(Number(t.metadata.activationLagThreshold)).toBe(stage.scaling.activationLagThreshold);
        expect(t.metadata.offsetResetPolicy).toBe('earliest');
        expect(t.metadata.allowIdleConsumers).toBe('false');
      }
    }
  });

  it('keeps minReplicaCount <= maxReplicaCount <= the input partitions, with the topology bounds', () => {
    for (const so of scaledObjects(objects)) {
      const stage = topology.stages.find((s) => s.name === component(so))!;
      const partitions = topology.topics[stage.input]!.partitions;
      const { minReplicaCount, maxReplicaCount } = so.spec;
      expect(Number.isInteger(minReplicaCount) && Number.isInteger(maxReplicaCount)).toBe(true);
      expect(minReplicaCount).toBeGreaterThanOrEqual(0);
      expect(minReplicaCount).toBeLessThanOrEqual(maxReplicaCount);
      expect(maxReplicaCount).toBeLessThanOrEqual(partitions);
      expect(minReplicaCount).toBe(stage.scaling.minReplicas);
      expect(maxReplicaCount).toBe(stage.scaling.maxReplicas);
    }
    expect(scaledObjects(objects).find((s) => component(s) === 'infer')?.spec.maxReplicaCount).toBe(8);
  });

  it('damps scale-down with a stabilization window and sets polling and cooldown', () => {
    for (const so of scaledObjects(objects)) {
      const behavior = so.spec.advanced.horizontalPodAutoscalerConfig.behavior;
      expect(behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(120);
      expect(behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThan(behavior.scaleUp.stabilizationWindowSeconds);
      expect(behavior.scaleDown.policies.length).toBeGreaterThan(0);
      expect(so.spec.pollingInterval).toBeGreaterThan(0);
      expect(so.spec.cooldownPeriod).toBeGreaterThan(0);
    }
  });

  it('clamps maxReplicaCount to the input partitions when the topology asks for more', () => {
    const greedy: Topology = defineTopology({
      name: 'greedy',
      prefix: 'greedy',
      status: 'status',
      defaults: { partitions: 3 },
      topics: {
        in: { valueSchema: 'task-request', external: { producers: ['api'] }, doc: 'input' },
        out: { valueSchema: 'task-validated', external: { consumers: ['someone'] }, doc: 'output' },
        status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
      },
      stages: { work: { doc: 'work', input: 'in', outputs: { result: 'out' }, scaling: { minReplicas: 5, maxReplicas: 8 } } },
    });
    // the validator refuses this topology; the renderer clamps anyway
    expect(validateTopology(greedy).some((p) => p.node === 'stage:work')).toBe(true);
    const so = scaledObjects(renderK8sObjects(greedy, OPTS))[0]!;
    expect(so.spec.maxReplicaCount).toBe(3);
    expect(so.spec.minReplicaCount).toBe(3);
    expect(so.spec.triggers.map((t) => t.metadata.topic)).toContain('greedy.in');
    expect(so.spec.triggers.every((t) => t.metadata.consumerGroup === 'sonicflow.greedy.work')).toBe(true);
  });
});

describe('k8s render: PodMonitor and ConfigMap', () => {
  it('selects every sonicflow pod and scrapes the stage metrics port and the API', () => {
    const pm = podMonitors(objects)[0]!;
    expect(pm.apiVersion).toBe('monitoring.coreos.com/v1');
    const selector = Object.entries(pm.spec.selector.matchLabels);
    expect(selector.length).toBeGreaterThan(0);
    for (const d of workloads(objects)) {
      for (const [k, v] of selector) expect(d.spec.template.metadata.labels[k]).toBe(v);
    }
    const ports = pm.spec.podMetricsEndpoints.map((e) => e.port);
    expect(ports).toContain('metrics');
    expect(ports).toContain('http');
    expect(pm.spec.podMetricsEndpoints.every((e) => e.path === '/metrics')).toBe(true);
    expect(pm.spec.namespaceSelector.matchNames).toEqual(['sonicflow']);
  });

  it('puts the brokers, prefix, client id and optional registry in the ConfigMap, never a secret', () => {
    const cm = configMaps(objects)[0]!;
    expect(cm.data.KAFKA_BROKERS).toBe(BROKERS.join(','));
    expect(cm.data.SONIC_TOPIC_PREFIX).toBe('sonic');
    // the client id the ScaledObjects' groups were formed with: the pods join the groups KEDA watches
    expect(cm.data.SONIC_CLIENT_ID).toBe('sonicflow');
    expect(cm.data.SCHEMA_REGISTRY_URL).toBeUndefined();
    expect(Object.keys(cm.data).some((k) => /SECRET|KEYS?$/.test(k))).toBe(false);
    const full = configMaps(
      renderK8sObjects(topology, {
        ...OPTS,
        clientId: 'acme',
        schemaRegistryUrl: 'http://registry:8080/apis/ccompat/v7',
        config: { SONIC_S3_BUCKET: 'media', KAFKA_BROKERS: 'elsewhere:1' },
      }),
    )[0]!;
    expect(full.data).toMatchObject({ SONIC_CLIENT_ID: 'acme', SCHEMA_REGISTRY_URL: 'http://registry:8080/apis/ccompat/v7', SONIC_S3_BUCKET: 'media' });
    expect(scaledObjects(renderK8sObjects(topology, { ...OPTS, clientId: 'acme' }))[0]!.spec.triggers[0]!.metadata.consumerGroup).toBe('acme.sonic.validate');
    // the brokers KEDA watches win over a conflicting extra entry
    expect(full.data.KAFKA_BROKERS).toBe(BROKERS.join(','));
  });
});

describe('k8s render: Kafka principals', () => {
  it('gives each stage and the API a Secret with its own SASL user, and reads its password from a Secret never rendered (re-applying never resets it)', () => {
    for (const who of [...STAGES, 'api']) {
      const secret = secrets(objects).find((x) => component(x) === who)!;
      expect(secret.metadata.name).toBe(`sonicflow-${who}-kafka`);
      expect(secret.type).toBe('Opaque');
      expect(secret.stringData).toEqual({ username: `sonic-${who}` });
      expect(secret.metadata.annotations?.['sonicflow.io/password-secret']).toMatch(new RegExp(`^sonicflow-${who}-kafka-password `));
      expect(secret.metadata.annotations?.['sonicflow.io/kafka-principal']).toBe(`User:sonic-${who}`);
      const d = who === 'api' ? statefulSets(objects)[0]! : stageDeployment(who);
      expect(container(d).env).toContainEqual({
        name: 'SONIC_KAFKA_SASL_USERNAME',
        valueFrom: { secretKeyRef: { name: secret.metadata.name, key: 'username' } },
      });
      expect(container(d).env).toContainEqual({
        name: 'SONIC_KAFKA_SASL_PASSWORD',
        valueFrom: { secretKeyRef: { name: `${secret.metadata.name}-password`, key: 'password' } },
      });
    }
    // no workload reads another's Kafka credentials
    const refs = workloads(objects).flatMap((d) =>
      container(d).env.flatMap((e) =>
        'valueFrom' in e && 'secretKeyRef' in e.valueFrom && /-kafka(-password)?$/.test(e.valueFrom.secretKeyRef.name)
          ? [`${component(d)}:${e.valueFrom.secretKeyRef.name}`]
          : [],
      ),
    );
    expect(refs).toHaveLength(2 * (STAGES.length + 1));
    for (const ref of refs) expect(ref).toMatch(/^([a-z]+):sonicflow-\1-kafka(-password)?$/);
    // no rendered object holds a password
    expect(renderK8s(topology, OPTS)).not.toMatch(/password: /);
    const prod = secrets(renderK8sObjects(topology, { ...OPTS, principalPrefix: 'prod', stage: 'infer' }));
    expect(prod.map((x) => x.stringData.username)).toEqual(['prod-infer']);
  });
});

describe('k8s render: one stage', () => {
  it("renders only encode's Secret, Deployment and ScaledObject for stage 'encode'", () => {
    const only = renderK8sObjects(topology, { ...OPTS, stage: 'encode' });
    expect(only.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      'Secret/sonicflow-encode-kafka',
      'Deployment/sonicflow-encode',
      'ScaledObject/sonicflow-encode',
    ]);
    expect(only.every((o) => component(o) === 'encode')).toBe(true);
    const text = renderK8s(topology, { ...OPTS, stage: 'encode' });
    expect(text).not.toMatch(/validate|preprocess|infer|publish|notify|PodMonitor|kind: Service/);
  });

  it('refuses an unknown stage and bad options', () => {
    expect(() => renderK8sObjects(topology, { ...OPTS, stage: 'nope' })).toThrow(/no stage named "nope"/);
    expect(() => renderK8sObjects(topology, { ...OPTS, brokers: [] })).toThrow(/brokers/);
    expect(() => renderK8sObjects(topology, { ...OPTS, metricsPort: 0 })).toThrow(/metrics port/);
    expect(() => renderK8sObjects(topology, { ...OPTS, drainTimeoutMs: Number.NaN })).toThrow(/drain timeout/);
    expect(() => renderK8sObjects(topology, { ...OPTS, namespace: 'Bad_NS' })).toThrow(/namespace/);
  });
});

describe('k8s render: YAML text', () => {
  const text = renderK8s(topology, OPTS);
  const docs = text.split(/^---$/m).map((d) => d.replace(/^\n/, ''));

  it('is one document per object, each starting with apiVersion and its kind', () => {
    expect(docs).toHaveLength(objects.length);
    docs.forEach((doc, i) => {
      const o = objects[i]!;
      expect(doc.startsWith(`apiVersion: ${o.apiVersion}\nkind: ${o.kind}\n`)).toBe(true);
      expect(doc).toContain(`\n  name: ${o.metadata.name}\n`);
      expect(doc.endsWith('\n')).toBe(true);
      expect(doc).not.toMatch(/\t/);
    });
  });

  it('quotes what YAML would read as a number or boolean, and keeps the values findable', () => {
    const keda = docs.filter((d) => /^kind: ScaledObject$/m.test(d));
    expect(keda).toHaveLength(topology.stages.length);
    expect(text).toContain('lagThreshold: "50"');
    expect(text).toContain('lagThreshold: "2"');
    expect(text).toContain('allowIdleConsumers: "false"');
    expect(text).toContain('offsetResetPolicy: earliest');
    expect(text).toContain('nvidia.com/gpu: "1"');
    expect(text).toContain('value: "9464"');
    expect(text).toContain('maxReplicaCount: 8');
    expect(text).toMatch(/command:\n {12}- sonicflow\n {12}- run\n {12}- infer\n/);
    // KEDA metadata values are strings: never a bare number or boolean
    expect(text).not.toMatch(/^\s+(lagThreshold|activationLagThreshold|allowIdleConsumers|scaleToZeroOnInvalidOffset): [^"\s]/m);
  });

  const py = spawnSync('python3', ['-c', 'import yaml'], { encoding: 'utf8' });
  const hasPyYaml = py.status === 0;
  it.skipIf(!hasPyYaml)(
    `parses back to the same objects with a real YAML parser (PyYAML)${hasPyYaml ? '' : ' — skipped: python3 with PyYAML not found'}`,
    () => {
      const r = spawnSync('python3', ['-c', 'import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))'], {
        input: text,
        encoding: 'utf8',
      });
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual(JSON.parse(JSON.stringify(objects)));
    },
  );
});

describe('toYaml', () => {
  const tricky = [
    'true',
    'False',
    'yes',
    'No',
    'on',
    'OFF',
    'y',
    'n',
    'null',
    '~',
    '',
    ' lead',
    'trail ',
    '1',
    '-1',
    '1.5',
    '1e3',
    '0x1F',
    '0o17',
    '012',
    '1_000',
    '.inf',
    '.NaN',
    '2024-01-01',
    '12:30',
    'a: b',
    'a #b',
    '#c',
    '- x',
    '[x]',
    '{x}',
    '*ref',
    '&anchor',
    '!tag',
    '%dir',
    '@at',
    '`tick',
    '"q"',
    "'s'",
    'multi\nline',
    'tab\there',
    'bell\u0007',
    'del\u007f',
    'é ü 漢字',
    'end:',
    '<<',
    '=',
    '?',
    '|',
    '>',
  ];

  it('writes nested maps and lists in block style, empty ones in flow style, and skips undefined keys', () => {
    expect(toYaml({ a: 1, b: 'x', c: [1, { d: true, e: [] }, ['z']], f: {}, g: undefined, h: null })).toBe(
      ['a: 1', 'b: x', 'c:', '  - 1', '  - d: true', '    e: []', '  - - z', 'f: {}', 'h: null', ''].join('\n'),
    );
    expect(toYaml('plain')).toBe('plain\n');
    expect(toYaml([])).toBe('[]\n');
  });

  it('quotes every ambiguous string and leaves safe ones plain', () => {
    for (const s of tricky) expect(toYaml({ k: s }), JSON.stringify(s)).toMatch(/^k: "/);
    for (const s of ['sonicflow', 'app.kubernetes.io/name', 'ghcr.io/sonicflow/sonicflow:latest', '/healthz', 'http://kafka:9092', 'earliest']) {
      expect(toYaml({ k: s })).toBe(`k: ${s}\n`);
    }
    expect(toYaml({ true: 1, 'a b': 3, y: 4 })).toBe('"true": 1\n"a b": 3\n"y": 4\n');
  });

  it('refuses values it cannot write faithfully', () => {
    expect(() => toYaml({ a: Number.NaN })).toThrow(/\$\.a/);
    expect(() => toYaml({ a: [Infinity] })).toThrow(/\$\.a\[0\]/);
    expect(() => toYaml({ a: new Date(0) })).toThrow(/Date/);
    expect(() => toYaml({ a: [undefined] })).toThrow(/undefined/);
    expect(() => toYaml(undefined)).toThrow();
  });

  const py = spawnSync('python3', ['-c', 'import yaml'], { encoding: 'utf8' });
  it.skipIf(py.status !== 0)('round-trips tricky strings through PyYAML (YAML 1.1 rules)', () => {
    const value = { list: tricky, map: Object.fromEntries(tricky.map((s, i) => [s || `empty${i}`, s])), n: [0, -3, 2.5, 1e21, true, false, null] };
    const r = spawnSync('python3', ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: toYaml(value), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual(value);
  });
});
