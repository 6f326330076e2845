import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  renderK8s,
  renderK8sObjects,
  toYaml,
  type ConfigMap,
  type Container,
  type Deployment,
  type K8sObject,
  type KafkaTrigger,
  type PodMonitor,
  type PrometheusTrigger,
  type RenderK8sOptions,
  type ScaledObject,
  type Secret,
  type Service,
  type StatefulSet,
  type TriggerAuthentication,
} from '../../src/ops/k8s/render.js';
import { longestRenderMs } from '../../src/core/config.js';
import { deriveAcls } from '../../src/runtime/acls.js';
import { defineTopology, type Topology } from '../../src/runtime/topology.js';
import { validateTopology } from '../../src/runtime/validate.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { burstTopology } from '../../bench/fixtures/burst.js';

const DRAIN_MS = 30_000;
const BROKERS = ['kafka-0.kafka.svc:9092', 'kafka-1.kafka.svc:9092'];
// the consumer group KEDA watches, byte for byte as the stage processes join it (`<client id>.<prefix>.<stage>`)
const groupIdOf = (stage: string): string => `sonicflow.sonic.${stage}`;
const OPTS: RenderK8sOptions = { drainTimeoutMs: DRAIN_MS, brokers: BROKERS, clientId: 'sonicflow' };
const DNS_1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const topology = sonicTopology();
const STAGES = topology.stages.map((s) => s.name);
/** The stages KEDA scales: all but a dispatcher, whose replicas are fixed (one active, one standby). */
const SCALED = topology.stages.filter((s) => !s.dispatch).map((s) => s.name);
const objects = renderK8sObjects(topology, OPTS);
/** The longest render the default configuration allows: (SONIC_INFER_TIMEOUT_BASE_S 120 + SONIC_INFER_TIMEOUT_PER_AUDIO_S 60 × SONIC_MAX_AUDIO_SECONDS 60) s. */
const LONGEST_RENDER_MS = (120 + 60 * 60) * 1000;
/** The stages whose pods may hold a render (a GPU, or the workers of a dispatcher): infer. */
const RENDERS = ['infer'];
const drainOf = (stage: string): number => (RENDERS.includes(stage) ? LONGEST_RENDER_MS + DRAIN_MS : DRAIN_MS);

// a secured cluster: TLS with a private CA and SCRAM, as SONIC_KAFKA_SSL, _SSL_CA_FILE and _SASL_MECHANISM give them
const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUfakeCAfakeCAfakeCAfakeCA=\n-----END CERTIFICATE-----\n';
const CA_DIR = mkdtempSync(join(tmpdir(), 'k8s-render-'));
const CA_FILE = join(CA_DIR, 'ca.pem');
writeFileSync(CA_FILE, CA_PEM);
const SECURED: RenderK8sOptions = { ...OPTS, kafkaSsl: true, kafkaSslCaFile: CA_FILE, kafkaSaslMechanism: 'scram-sha-512' };
const secured = renderK8sObjects(topology, SECURED);

const deployments = (objs: K8sObject[]): Deployment[] => objs.filter((o): o is Deployment => o.kind === 'Deployment');
const statefulSets = (objs: K8sObject[]): StatefulSet[] => objs.filter((o): o is StatefulSet => o.kind === 'StatefulSet');
/** Every workload's pod template: the stage Deployments and the API StatefulSet. */
const workloads = (objs: K8sObject[]): (Deployment | StatefulSet)[] => [...deployments(objs), ...statefulSets(objs)];
const scaledObjects = (objs: K8sObject[]): ScaledObject[] => objs.filter((o): o is ScaledObject => o.kind === 'ScaledObject');
const kafkaTriggers = (so: ScaledObject): KafkaTrigger[] => so.spec.triggers.filter((t): t is KafkaTrigger => t.type === 'kafka');
const services = (objs: K8sObject[]): Service[] => objs.filter((o): o is Service => o.kind === 'Service');
const podMonitors = (objs: K8sObject[]): PodMonitor[] => objs.filter((o): o is PodMonitor => o.kind === 'PodMonitor');
const configMaps = (objs: K8sObject[]): ConfigMap[] => objs.filter((o): o is ConfigMap => o.kind === 'ConfigMap');
const secrets = (objs: K8sObject[]): Secret[] => objs.filter((o): o is Secret => o.kind === 'Secret');
const triggerAuths = (objs: K8sObject[]): TriggerAuthentication[] => objs.filter((o): o is TriggerAuthentication => o.kind === 'TriggerAuthentication');
/** The principals' Secrets (`sonicflow-<who>-kafka`), by who they are for. */
const kafkaSecrets = (objs: K8sObject[]): Secret[] => secrets(objs).filter((x) => /^sonicflow-[a-z]+-kafka$/.test(x.metadata.name));
const secretNamed = (objs: K8sObject[], name: string): Secret | undefined => secrets(objs).find((x) => x.metadata.name === name);
const envNames = (d: Deployment | StatefulSet): string[] => container(d).env.map((e) => e.name);
const component = (o: K8sObject): string | undefined => o.metadata.labels?.['app.kubernetes.io/component'];
const stageDeployment = (stage: string, objs: K8sObject[] = objects): Deployment => {
  const d = deployments(objs).find((x) => component(x) === stage);
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
  it('renders a Deployment and ScaledObject per stage, the StatefulSet and its two Services, one PodMonitor and the ConfigMap; no Secret on a plaintext cluster', () => {
    expect(deployments(objects).map(component).sort()).toEqual([...STAGES].sort());
    expect(scaledObjects(objects).map(component).sort()).toEqual([...SCALED].sort());
    expect(statefulSets(objects).map((s) => s.metadata.name)).toEqual(['sonicflow-api']);
    expect(services(objects).map((s) => s.metadata.name)).toEqual(['sonicflow-api-headless', 'sonicflow-api']);
    expect(podMonitors(objects)).toHaveLength(1);
    expect(configMaps(objects).map((c) => c.metadata.name)).toEqual(['sonicflow-config']);
    expect(secrets(objects)).toEqual([]);
    expect(objects).toHaveLength(STAGES.length + SCALED.length + 4 + 1);
  });

  it("adds, on a secured cluster, a Kafka Secret per stage and the API, the CA Secret, and KEDA's Secret and TriggerAuthentication, each before what uses it", () => {
    expect(kafkaSecrets(secured).map(component).sort()).toEqual([...STAGES, 'api', 'keda'].sort());
    expect(secrets(secured).map((x) => x.metadata.name)).toContain('sonicflow-kafka-ca');
    expect(triggerAuths(secured).map((a) => a.metadata.name)).toEqual(['sonicflow-keda-kafka']);
    expect(secured).toHaveLength(objects.length + STAGES.length + 1 + 1 + 2);
    const at = (kind: string, name: string): number => secured.findIndex((o) => o.kind === kind && o.metadata.name === name);
    for (const so of scaledObjects(secured)) expect(at('TriggerAuthentication', 'sonicflow-keda-kafka')).toBeLessThan(secured.indexOf(so));
    expect(at('Secret', 'sonicflow-keda-kafka')).toBeLessThan(at('TriggerAuthentication', 'sonicflow-keda-kafka'));
    for (const d of workloads(secured)) {
      expect(at('Secret', 'sonicflow-kafka-ca')).toBeLessThan(secured.indexOf(d));
      expect(at('Secret', `sonicflow-${component(d)}-kafka`)).toBeLessThan(secured.indexOf(d));
    }
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
      // KEDA sets a scaled stage's replicas; a dispatcher's Deployment sets its own
      if (SCALED.includes(stage)) expect(d.spec.replicas).toBeUndefined();
      else expect(d.spec.replicas).toBe(topology.stages.find((s) => s.name === stage)!.scaling.maxReplicas);
      const c = container(d);
      expect(c.command).toEqual(['sonicflow', 'run', stage]);
      expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9464, protocol: 'TCP' }]);
      expect(c.livenessProbe.httpGet.port).toBe('metrics');
      expect(c.readinessProbe.httpGet.port).toBe('metrics');
      expect(c.env).toContainEqual({ name: 'SONIC_METRICS_PORT', value: '9464' });
      expect(c.env).toContainEqual({ name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(drainOf(stage)) });
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
      expect(grace).toBeGreaterThan(drainOf(component(d)!) / 1000);
      expect(grace).toBe(Math.ceil(drainOf(component(d)!) / 1000) + 15);
    }
    const odd = renderK8sObjects(topology, { ...OPTS, drainTimeoutMs: 45_500, drainTimeoutExplicit: true, stage: 'infer' });
    const grace = deployments(odd)[0]?.spec.template.spec.terminationGracePeriodSeconds;
    expect(grace).toBe(46 + 15);
  });

  it("drains a GPU stage's pods for the longest render the configuration allows, unless the drain timeout is set", () => {
    const infer = stageDeployment('infer');
    // a render in progress when KEDA scales down may take the whole budget: the pod outlives it, not just the 30 s drain
    expect(infer.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(LONGEST_RENDER_MS / 1000 + 15);
    expect(container(infer).env).toContainEqual({ name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(LONGEST_RENDER_MS + DRAIN_MS) });
    // the CPU stages keep the drain timeout
    expect(stageDeployment('encode').spec.template.spec.terminationGracePeriodSeconds).toBe(30 + 15);
    // the longest render from the configuration (SONIC_MAX_AUDIO_SECONDS=400 and the default budget)
    const longest = longestRenderMs({ inferTimeoutBaseS: 120, inferTimeoutPerAudioS: 60, maxAudioSeconds: 400 });
    expect(longest).toBe(24_120_000);
    const long = deployments(renderK8sObjects(topology, { ...OPTS, longestRenderMs: longest, stage: 'infer' }))[0]!;
    expect(long.spec.template.spec.terminationGracePeriodSeconds).toBe(24_120 + 30 + 15);
    expect(container(long).env).toContainEqual({ name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(24_150_000) });
    // as without a GPU: the backend is the CPU builtin, the drain still covers its render budget
    const cpuOnly = renderK8sObjects(topology, { ...OPTS, gpuStages: [], stage: 'infer' });
    expect(deployments(cpuOnly)[0]!.spec.template.spec.terminationGracePeriodSeconds).toBe(3750 + 15);
    // the operator's SONIC_DRAIN_TIMEOUT_MS is taken as it is
    const explicit = deployments(renderK8sObjects(topology, { ...OPTS, drainTimeoutExplicit: true, stage: 'infer' }))[0]!;
    expect(explicit.spec.template.spec.terminationGracePeriodSeconds).toBe(30 + 15);
    expect(container(explicit).env).toContainEqual({ name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(DRAIN_MS) });
    // beyond what SONIC_DRAIN_TIMEOUT_MS takes (Node's longest timer): refused, saying what to lower
    expect(() => renderK8sObjects(topology, { ...OPTS, longestRenderMs: 2 ** 31 })).toThrow(/SONIC_MAX_AUDIO_SECONDS/);
  });

  it('falls back to at least one replica, statically, for the stages scaled on their lag', () => {
    for (const so of scaledObjects(objects).filter((x) => component(x) !== 'infer')) {
      expect(so.spec.fallback).toEqual({ failureThreshold: 3, replicas: Math.max(1, so.spec.minReplicaCount) });
    }
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
  /** The containers that open a state store: the API (its status view) and every stage that declares stores (a dispatcher keeps its backlog in memory). */
  const storeOpeners = (t: Topology, objs: K8sObject[]): [Workload, Container][] =>
    workloads(objs)
      .filter((w) => {
        const stage = t.stages.find((s) => s.name === component(w));
        return component(w) === 'api' || (stage !== undefined && stage.stores.length > 0 && !stage.dispatch);
      })
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
  it('scales each stage Deployment on its consumer group lag, one kafka trigger per consumed topic (infer on the dispatcher GPU-seconds)', () => {
    const deploymentNames = new Set(deployments(objects).map((d) => d.metadata.name));
    const all = scaledObjects(objects);
    // every stage but the dispatcher, whose replica count is fixed (one active, one standby)
    expect(all.map(component).sort()).toEqual(
      topology.stages
        .filter((s) => !s.dispatch)
        .map((s) => s.name)
        .sort(),
    );
    for (const so of all) {
      const stage = topology.stages.find((s) => s.name === component(so))!;
      expect(so.apiVersion).toBe('keda.sh/v1alpha1');
      expect(so.kind).toBe('ScaledObject');
      expect(so.spec.scaleTargetRef.kind).toBe('Deployment');
      expect(deploymentNames.has(so.spec.scaleTargetRef.name)).toBe(true);
      expect(so.spec.scaleTargetRef.name).toBe(`sonicflow-${stage.name}`);
      const workersOf = topology.stages.find((d) => d.dispatch?.workers === stage.name);
      // a dispatcher's workers scale on its GPU-seconds (prometheus), and on their own retry tiers' lag
      expect(kafkaTriggers(so).map((t) => t.metadata.topic)).toEqual(workersOf ? stage.retry.topics : [stage.input, ...stage.retry.topics]);
      expect(so.spec.triggers.filter((t) => t.type === 'prometheus')).toHaveLength(workersOf ? 1 : 0);
      for (const t of kafkaTriggers(so)) {
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
    expect(kafkaTriggers(so).map((t) => t.metadata.topic)).toContain('greedy.in');
    expect(kafkaTriggers(so).every((t) => t.metadata.consumerGroup === 'sonicflow.greedy.work')).toBe(true);
  });
});

describe('k8s render: the workers of a dispatcher', () => {
  // 4 partitions upstream, 24 slots (partitions of the dispatcher's sink, the workers' input)
  const burst = burstTopology({ prefix: 't', dispatch: true, slots: 24 });
  const rendered = renderK8sObjects(burst, OPTS);
  const soOf = (stage: string, objs: K8sObject[] = rendered): ScaledObject | undefined => scaledObjects(objs).find((so) => component(so) === stage);
  const promTriggers = (so: ScaledObject): PrometheusTrigger[] => so.spec.triggers.filter((t): t is PrometheusTrigger => t.type === 'prometheus');

  it("scales infer on the dispatcher's backlog and outstanding seconds through Prometheus, threshold its targetDrainSeconds", () => {
    const infer = burst.stages.find((s) => s.name === 'infer')!;
    const so = soOf('infer')!;
    const [prom, ...others] = so.spec.triggers;
    expect(prom).toEqual({
      type: 'prometheus',
      metricType: 'AverageValue',
      metadata: {
        serverAddress: 'http://prometheus-operated.monitoring.svc:9090',
        // the GPU-seconds (X), or the busy workers × the target (Y) when higher: X > Y or Y or X
        query:
          '(sum(sonicflow_dispatch_backlog_seconds{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"})' +
          ' + sum(sonicflow_dispatch_outstanding_seconds{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}))' +
          ' > (sum(sonicflow_dispatch_busy_workers{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}) * 10)' +
          ' or (sum(sonicflow_dispatch_busy_workers{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}) * 10)' +
          ' or (sum(sonicflow_dispatch_backlog_seconds{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"})' +
          ' + sum(sonicflow_dispatch_outstanding_seconds{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}))',
        threshold: String(infer.scaling.targetDrainSeconds),
        activationThreshold: '0',
        ignoreNullValues: 'false',
      },
    });
    expect(infer.scaling.targetDrainSeconds).toBe(10);
    // no kafka trigger on its input (its lag is 2 per worker at most); its retry tiers keep theirs
    expect(others.every((t) => t.type === 'kafka')).toBe(true);
    expect(kafkaTriggers(so).map((t) => t.metadata.topic)).toEqual(infer.retry.topics);
    expect(kafkaTriggers(so).map((t) => t.metadata.topic)).not.toContain('t.dispatched');
    for (const v of Object.values(promTriggers(so)[0]!.metadata)) expect(typeof v).toBe('string');
  });

  it("caps maxReplicaCount at the dispatcher sink's partitions (the slots), not the upstream partitions", () => {
    expect(burst.topics['t.prepared']!.partitions).toBe(4);
    expect(soOf('infer')!.spec.maxReplicaCount).toBe(24);
    expect(soOf('infer')!.spec.minReplicaCount).toBe(1);
    // 3 slots for a stage that allows 4: 3
    const few = burstTopology({ prefix: 't', dispatch: true, slots: 3 });
    expect(few.stages.find((s) => s.name === 'infer')!.scaling.maxReplicas).toBe(4);
    expect(soOf('infer', renderK8sObjects(few, OPTS))!.spec.maxReplicaCount).toBe(3);
  });

  it('keeps kafka triggers for the other stages; the dispatcher (2 = 2 replicas) gets no ScaledObject and sets its replicas', () => {
    const prep = soOf('prep')!;
    expect(prep.spec.triggers.every((t) => t.type === 'kafka')).toBe(true);
    expect(kafkaTriggers(prep)[0]!.metadata.topic).toBe('t.in');
    expect(soOf('dispatch')).toBeUndefined();
    expect(stageDeployment('dispatch', rendered).spec.replicas).toBe(2);
    expect(stageDeployment('infer', rendered).spec.replicas).toBeUndefined();
    expect(stageDeployment('prep', rendered).spec.replicas).toBeUndefined();
    expect(renderK8sObjects(burst, { ...OPTS, stage: 'dispatch' }).map((o) => o.kind)).toEqual(['Deployment']);
    // a dispatcher that may scale keeps its ScaledObject
    const elastic = burstTopology({ prefix: 't', dispatch: true });
    const d = elastic.stages.find((s) => s.name === 'dispatch')!;
    d.scaling = { ...d.scaling, minReplicas: 1, maxReplicas: 2 };
    expect(soOf('dispatch', renderK8sObjects(elastic, OPTS))).toBeDefined();
  });

  it('floors the workers at the busy ones: KEDA asks for ceil(result / target), and the result is at least busy × target', () => {
    const infer = burst.stages.find((s) => s.name === 'infer')!;
    const target = infer.scaling.targetDrainSeconds;
    const query = promTriggers(soOf('infer')!)[0]!.metadata.query;
    const [seconds, busy] = [
      '(sum(sonicflow_dispatch_backlog_seconds{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}) + sum(sonicflow_dispatch_outstanding_seconds{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}))',
      `(sum(sonicflow_dispatch_busy_workers{job="sonicflow-stages",namespace="sonicflow",stage="dispatch"}) * ${target})`,
    ];
    expect(query).toBe(`${seconds} > ${busy} or ${busy} or ${seconds}`);
    // the query, evaluated as PromQL does on label-less one-sample vectors (undefined: no series)
    const evaluate = (x: number | undefined, busyWorkers: number | undefined): number | undefined => {
      const y = busyWorkers === undefined ? undefined : busyWorkers * target;
      const above = x !== undefined && y !== undefined && x > y ? x : undefined;
      return above ?? y ?? x;
    };
    const replicas = (x: number | undefined, b: number | undefined): number | undefined => {
      const v = evaluate(x, b);
      return v === undefined ? undefined : Math.ceil(v / target);
    };
    // 4 workers each on a render of half the target (300 s at 600), nothing waiting: 4, not the 2 the seconds give
    expect(replicas(4 * 0.5 * target, 4)).toBe(4);
    expect(Math.ceil((4 * 0.5 * target) / target)).toBe(2);
    // more work waiting than the busy workers cover: the seconds decide
    expect(replicas(10 * target, 4)).toBe(10);
    // a dispatcher without the busy gauge (rolling upgrade): the seconds alone
    expect(replicas(3 * target, undefined)).toBe(3);
    // no series at all: an empty result, a scaler error for KEDA's fallback, not zero work
    expect(replicas(undefined, undefined)).toBeUndefined();
  });

  it("never shrinks the workers on KEDA's fallback (Prometheus away): currentReplicasIfHigher, at least minReplicaCount", () => {
    const so = soOf('infer')!;
    expect(so.spec.fallback).toEqual({ failureThreshold: 3, replicas: Math.max(1, so.spec.minReplicaCount), behavior: 'currentReplicasIfHigher' });
    const elastic = burstTopology({ prefix: 't', dispatch: true, slots: 24 });
    const infer = elastic.stages.find((s) => s.name === 'infer')!;
    infer.scaling = { ...infer.scaling, minReplicas: 3 };
    expect(soOf('infer', renderK8sObjects(elastic, OPTS))!.spec.fallback).toEqual({ failureThreshold: 3, replicas: 3, behavior: 'currentReplicasIfHigher' });
    // the stages on their lag keep the static fallback
    expect(soOf('prep')!.spec.fallback.behavior).toBeUndefined();
  });

  it('gives the workers a grace period that covers the longest render, so a KEDA scale-down lets a render finish', () => {
    const spec = stageDeployment('infer', rendered).spec.template.spec;
    expect(spec.terminationGracePeriodSeconds).toBe((LONGEST_RENDER_MS + DRAIN_MS) / 1000 + 15);
    expect(container(stageDeployment('infer', rendered)).env).toContainEqual({ name: 'SONIC_DRAIN_TIMEOUT_MS', value: String(LONGEST_RENDER_MS + DRAIN_MS) });
    // the workers of a dispatcher drain for a render even when rendered without a GPU
    const noGpu = renderK8sObjects(burst, { ...OPTS, gpuStages: [] });
    expect(stageDeployment('infer', noGpu).spec.template.spec.terminationGracePeriodSeconds).toBe((LONGEST_RENDER_MS + DRAIN_MS) / 1000 + 15);
    expect(stageDeployment('prep', noGpu).spec.template.spec.terminationGracePeriodSeconds).toBe(DRAIN_MS / 1000 + 15);
  });

  it('takes the Prometheus address and namespace from the options, and refuses an address that is not a URL', () => {
    const custom = renderK8sObjects(burst, { ...OPTS, namespace: 'gpu', prometheusUrl: 'https://prom.example:9443/api' });
    const t = promTriggers(soOf('infer', custom)!)[0]!;
    expect(t.metadata.serverAddress).toBe('https://prom.example:9443/api');
    expect(t.metadata.query).toContain('namespace="gpu",stage="dispatch"');
    expect(() => renderK8sObjects(burst, { ...OPTS, prometheusUrl: 'prometheus:9090' })).toThrow(/Prometheus URL/);
    // the query carries the labels the PodMonitor gives the series
    const pm = podMonitors(rendered)[0]!;
    expect(pm.spec.podMetricsEndpoints[0]!.relabelings).toContainEqual({ action: 'replace', targetLabel: 'job', replacement: 'sonicflow-stages' });
    expect(pm.spec.namespaceSelector.matchNames).toEqual(['sonicflow']);
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
    expect(kafkaTriggers(scaledObjects(renderK8sObjects(topology, { ...OPTS, clientId: 'acme' }))[0]!)[0]!.metadata.consumerGroup).toBe('acme.sonic.validate');
    // the brokers KEDA watches win over a conflicting extra entry
    expect(full.data.KAFKA_BROKERS).toBe(BROKERS.join(','));
  });
});

describe('k8s render: Kafka principals', () => {
  it('gives each stage and the API a Secret with its own SASL user, and reads its password from a Secret never rendered (re-applying never resets it)', () => {
    for (const who of [...STAGES, 'api']) {
      const secret = kafkaSecrets(secured).find((x) => component(x) === who)!;
      expect(secret.metadata.name).toBe(`sonicflow-${who}-kafka`);
      expect(secret.type).toBe('Opaque');
      expect(secret.stringData).toEqual({ username: `sonic-${who}` });
      expect(secret.metadata.annotations?.['sonicflow.io/password-secret']).toMatch(new RegExp(`^sonicflow-${who}-kafka-password `));
      expect(secret.metadata.annotations?.['sonicflow.io/kafka-principal']).toBe(`User:sonic-${who}`);
      const d = who === 'api' ? statefulSets(secured)[0]! : stageDeployment(who, secured);
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
    const refs = workloads(secured).flatMap((d) =>
      container(d).env.flatMap((e) =>
        'valueFrom' in e && 'secretKeyRef' in e.valueFrom && /-kafka(-password)?$/.test(e.valueFrom.secretKeyRef.name)
          ? [`${component(d)}:${e.valueFrom.secretKeyRef.name}`]
          : [],
      ),
    );
    expect(refs).toHaveLength(2 * (STAGES.length + 1));
    for (const ref of refs) expect(ref).toMatch(/^([a-z]+):sonicflow-\1-kafka(-password)?$/);
    // no rendered object holds a password
    expect(renderK8s(topology, SECURED)).not.toMatch(/password: /);
    const prod = secrets(renderK8sObjects(topology, { ...SECURED, principalPrefix: 'prod', stage: 'infer' }));
    expect(prod.map((x) => x.stringData.username)).toEqual(['prod-infer']);
  });
});

describe('k8s render: Kafka security', () => {
  const KAFKA_ENV = /^SONIC_KAFKA_(SSL|SASL)/;
  const caVolume = (d: Deployment | StatefulSet): unknown => d.spec.template.spec.volumes.find((v) => v.name === 'kafka-ca');

  it('renders a plaintext cluster with no Kafka Secret, no SASL env, no CA and no authenticationRef', () => {
    expect(secrets(objects)).toEqual([]);
    expect(triggerAuths(objects)).toEqual([]);
    for (const d of workloads(objects)) {
      expect(envNames(d).filter((n) => KAFKA_ENV.test(n))).toEqual([]);
      expect(caVolume(d)).toBeUndefined();
      expect(container(d).volumeMounts.map((m) => m.name)).not.toContain('kafka-ca');
    }
    for (const so of scaledObjects(objects)) for (const t of kafkaTriggers(so)) expect(t.authenticationRef).toBeUndefined();
    expect(Object.keys(configMaps(objects)[0]!.data).filter((k) => KAFKA_ENV.test(k))).toEqual([]);
    expect(renderK8s(topology, OPTS)).not.toMatch(/SASL|kafka-password|authenticationRef|TriggerAuthentication/);
  });

  it('puts TLS, the mechanism and the mounted CA path in the ConfigMap; the CA PEM in the Secret sonicflow-kafka-ca', () => {
    const cm = configMaps(secured)[0]!;
    expect(cm.data).toMatchObject({
      SONIC_KAFKA_SSL: 'true',
      SONIC_KAFKA_SASL_MECHANISM: 'scram-sha-512',
      SONIC_KAFKA_SSL_CA_FILE: '/etc/sonicflow/kafka-ca/ca.crt',
    });
    // the user name and password are each pod's own, never shared
    expect(Object.keys(cm.data).some((k) => /SASL_(USERNAME|PASSWORD)/.test(k))).toBe(false);
    expect(secretNamed(secured, 'sonicflow-kafka-ca')!.stringData).toEqual({ 'ca.crt': CA_PEM });
  });

  it('mounts the CA read-only into every sonicflow pod (stages and API) where SONIC_KAFKA_SSL_CA_FILE points; the root filesystem stays read-only', () => {
    const caFile = configMaps(secured)[0]!.data.SONIC_KAFKA_SSL_CA_FILE!;
    expect(workloads(secured)).toHaveLength(STAGES.length + 1);
    for (const d of workloads(secured)) {
      expect(caVolume(d)).toEqual({ name: 'kafka-ca', secret: { secretName: 'sonicflow-kafka-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
      const mount = container(d).volumeMounts.find((m) => m.name === 'kafka-ca');
      expect(mount).toEqual({ name: 'kafka-ca', mountPath: '/etc/sonicflow/kafka-ca', readOnly: true });
      expect(caFile).toBe(`${mount!.mountPath}/ca.crt`);
      expect(container(d).securityContext.readOnlyRootFilesystem).toBe(true);
      expect(container(d).envFrom).toContainEqual({ configMapRef: { name: 'sonicflow-config' } });
    }
  });

  it('references one TriggerAuthentication from every ScaledObject trigger, with tls, ca, sasl, username and password from the right Secrets', () => {
    const [auth] = triggerAuths(secured);
    expect(auth!.apiVersion).toBe('keda.sh/v1alpha1');
    const refs = Object.fromEntries(auth!.spec.secretTargetRef.map((r) => [r.parameter, `${r.name}/${r.key}`]));
    expect(refs).toEqual({
      tls: 'sonicflow-keda-kafka/tls',
      ca: 'sonicflow-kafka-ca/ca.crt',
      sasl: 'sonicflow-keda-kafka/sasl',
      username: 'sonicflow-keda-kafka/username',
      password: 'sonicflow-keda-kafka-password/password',
    });
    // what KEDA reads: every reference resolves to a rendered key, but the password, which the operator makes
    const value = (ref: { name: string; key: string }): string | undefined => secretNamed(secured, ref.name)?.stringData[ref.key];
    const values = Object.fromEntries(auth!.spec.secretTargetRef.map((r) => [r.parameter, value(r)]));
    expect(values).toEqual({ tls: 'enable', ca: CA_PEM, sasl: 'scram_sha512', username: 'sonic-keda', password: undefined });
    expect(scaledObjects(secured)).toHaveLength(SCALED.length);
    for (const so of scaledObjects(secured)) {
      expect(kafkaTriggers(so).length).toBeGreaterThan(0);
      for (const t of kafkaTriggers(so)) {
        expect(t.authenticationRef).toEqual({ name: auth!.metadata.name });
        // KEDA refuses tls or sasl given both in the trigger and in its TriggerAuthentication
        expect(Object.keys(t.metadata).some((k) => k === 'tls' || k === 'sasl')).toBe(false);
      }
    }
  });

  it('gives KEDA its own principal, the one `topology acls` derives: a Secret with its user name, its password in one the operator makes', () => {
    for (const principalPrefix of [undefined, 'prod']) {
      const objs = renderK8sObjects(topology, { ...SECURED, ...(principalPrefix ? { principalPrefix } : {}) });
      const keda = deriveAcls(topology, { clientId: 'sonicflow', ...(principalPrefix ? { principalPrefix } : {}) }).find((p) => p.role === 'keda')!;
      const secret = secretNamed(objs, 'sonicflow-keda-kafka')!;
      expect(secret.stringData.username).toBe(keda.username);
      expect(secret.metadata.annotations?.['sonicflow.io/kafka-principal']).toBe(keda.principal);
      expect(secret.metadata.annotations?.['sonicflow.io/password-secret']).toMatch(/^sonicflow-keda-kafka-password /);
    }
  });

  it("maps each SASL mechanism to KEDA's name for it", () => {
    for (const [mechanism, keda] of [
      ['plain', 'plaintext'],
      ['scram-sha-256', 'scram_sha256'],
      ['scram-sha-512', 'scram_sha512'],
    ] as const) {
      const objs = renderK8sObjects(topology, { ...SECURED, kafkaSaslMechanism: mechanism });
      expect(secretNamed(objs, 'sonicflow-keda-kafka')!.stringData.sasl).toBe(keda);
      expect(configMaps(objs)[0]!.data.SONIC_KAFKA_SASL_MECHANISM).toBe(mechanism);
    }
  });

  it('with TLS and no SASL: no principal Secrets or SASL env, KEDA gets tls and the CA only; with SASL and no TLS: no tls, no CA', () => {
    const tlsOnly = renderK8sObjects(topology, { ...OPTS, kafkaSsl: true, kafkaSslCaFile: CA_FILE });
    expect(kafkaSecrets(tlsOnly).map((x) => x.metadata.name)).toEqual(['sonicflow-keda-kafka']);
    expect(secretNamed(tlsOnly, 'sonicflow-keda-kafka')!.stringData).toEqual({ tls: 'enable' });
    expect(triggerAuths(tlsOnly)[0]!.spec.secretTargetRef.map((r) => r.parameter)).toEqual(['tls', 'ca']);
    for (const d of workloads(tlsOnly)) {
      expect(envNames(d).filter((n) => KAFKA_ENV.test(n))).toEqual([]);
      expect(caVolume(d)).toBeDefined();
    }
    expect(configMaps(tlsOnly)[0]!.data.SONIC_KAFKA_SASL_MECHANISM).toBeUndefined();
    expect(renderK8s(topology, { ...OPTS, kafkaSsl: true, kafkaSslCaFile: CA_FILE })).not.toMatch(/SASL|kafka-password/);

    const systemCas = renderK8sObjects(topology, { ...OPTS, kafkaSsl: true, kafkaSaslMechanism: 'plain' });
    expect(secretNamed(systemCas, 'sonicflow-kafka-ca')).toBeUndefined();
    expect(workloads(systemCas).every((d) => caVolume(d) === undefined)).toBe(true);
    expect(configMaps(systemCas)[0]!.data.SONIC_KAFKA_SSL_CA_FILE).toBeUndefined();
    expect(triggerAuths(systemCas)[0]!.spec.secretTargetRef.map((r) => r.parameter)).toEqual(['tls', 'sasl', 'username', 'password']);

    const saslOnly = renderK8sObjects(topology, { ...OPTS, kafkaSaslMechanism: 'scram-sha-256' });
    expect(configMaps(saslOnly)[0]!.data.SONIC_KAFKA_SSL).toBeUndefined();
    expect(triggerAuths(saslOnly)[0]!.spec.secretTargetRef.map((r) => r.parameter)).toEqual(['sasl', 'username', 'password']);
    expect(secretNamed(saslOnly, 'sonicflow-keda-kafka')!.stringData).toEqual({ username: 'sonic-keda', sasl: 'scram_sha256' });
  });

  it('refuses a CA file it cannot read or that holds no certificate, a CA without TLS, and security settings through `config` (CONFIG_INVALID)', () => {
    const refused = (opts: RenderK8sOptions): unknown => {
      try {
        renderK8sObjects(topology, opts);
      } catch (err) {
        return err;
      }
      throw new Error('rendered');
    };
    const missing = refused({ ...SECURED, kafkaSslCaFile: join(CA_DIR, 'nope.pem') });
    expect(missing).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('SONIC_KAFKA_SSL_CA_FILE') });
    const notPem = join(CA_DIR, 'not.pem');
    writeFileSync(notPem, 'hello');
    expect(refused({ ...SECURED, kafkaSslCaFile: notPem })).toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringContaining('SONIC_KAFKA_SSL_CA_FILE'),
    });
    expect(refused({ ...SECURED, kafkaSslCaFile: CA_DIR })).toMatchObject({ code: 'CONFIG_INVALID' });
    expect(refused({ ...SECURED, kafkaSsl: false })).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('SONIC_KAFKA_SSL is not true') });
    expect(refused({ ...OPTS, config: { SONIC_KAFKA_SSL: 'true' } })).toMatchObject({ code: 'CONFIG_INVALID' });
    expect(refused({ ...OPTS, config: { SONIC_KAFKA_SASL_PASSWORD: 'x' } })).toMatchObject({ code: 'CONFIG_INVALID' });
    expect(refused({ ...OPTS, kafkaSaslMechanism: 'gssapi' as never })).toMatchObject({ code: 'CONFIG_INVALID' });
  });

  const py = spawnSync('python3', ['-c', 'import yaml'], { encoding: 'utf8' });
  it.skipIf(py.status !== 0)('writes the secured manifests (the CA PEM included) as YAML that parses back to the same objects', () => {
    const r = spawnSync('python3', ['-c', 'import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))'], {
      input: renderK8s(topology, SECURED),
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(JSON.stringify(secured)));
  });
});

describe('k8s render: one stage', () => {
  it("renders only encode's Deployment and ScaledObject for stage 'encode', and its Secret on a secured cluster", () => {
    const plain = renderK8sObjects(topology, { ...OPTS, stage: 'encode' });
    expect(plain.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(['Deployment/sonicflow-encode', 'ScaledObject/sonicflow-encode']);
    const only = renderK8sObjects(topology, { ...SECURED, stage: 'encode' });
    expect(only.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      'Secret/sonicflow-encode-kafka',
      'Deployment/sonicflow-encode',
      'ScaledObject/sonicflow-encode',
    ]);
    expect(only.every((o) => component(o) === 'encode')).toBe(true);
    const text = renderK8s(topology, { ...OPTS, stage: 'encode' });
    expect(text).not.toMatch(/validate|preprocess|infer|publish|notify|PodMonitor|kind: Service/);
  });

  it('is complete for the stage on a secured cluster: the same Deployment and ScaledObject as the full render (credentials, CA mount, authenticationRef)', () => {
    for (const stage of STAGES) {
      const only = renderK8sObjects(topology, { ...SECURED, stage });
      expect(only).toEqual(secured.filter((o) => component(o) === stage));
      const d = deployments(only)[0]!;
      expect(envNames(d)).toEqual(expect.arrayContaining(['SONIC_KAFKA_SASL_USERNAME', 'SONIC_KAFKA_SASL_PASSWORD']));
      expect(container(d).volumeMounts).toContainEqual({ name: 'kafka-ca', mountPath: '/etc/sonicflow/kafka-ca', readOnly: true });
      if (SCALED.includes(stage)) expect(kafkaTriggers(scaledObjects(only)[0]!).every((t) => t.authenticationRef?.name === 'sonicflow-keda-kafka')).toBe(true);
      else expect(scaledObjects(only)).toEqual([]);
    }
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
    expect(keda).toHaveLength(SCALED.length);
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
