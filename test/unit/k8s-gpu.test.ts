import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  renderK8s,
  renderK8sObjects,
  renderK8sWarnings,
  type Container,
  type Deployment,
  type K8sObject,
  type RenderK8sOptions,
  type ScaledObject,
} from '../../src/ops/k8s/render.js';
import { defineTopology, type Topology } from '../../src/runtime/topology.js';
import { sonicTopology } from '../../topologies/sonic.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DRAIN_MS = 30_000;
const OPTS: RenderK8sOptions = { drainTimeoutMs: DRAIN_MS, brokers: ['kafka-0.kafka.svc:9092'], clientId: 'sonicflow' };
/** Every GPU option at once, as an operator running the Sonic worker would give them. */
const WORKER: RenderK8sOptions = {
  ...OPTS,
  gpuImage: 'registry.example/sonic-worker:1.0',
  inferBackend: 'worker',
  weightsPvc: 'sonic-weights',
  gpuNodeSelector: ['nvidia.com/gpu.product=NVIDIA-A10G', 'pool=gpu'],
  gpuTolerations: ['nvidia.com/gpu:NoSchedule', 'dedicated=sonic:NoExecute'],
  gpus: 3,
};
const SMALL = { requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '2', memory: '2Gi' } };
const CACHE_VARS = ['HOME', 'XDG_CACHE_HOME', 'TORCH_HOME', 'HF_HOME', 'MPLCONFIGDIR', 'NUMBA_CACHE_DIR'];
const GPU_ENV = ['SONIC_INFER_BACKEND', 'SONIC_WORKER_SONIC_DIR', ...CACHE_VARS];

const topology = sonicTopology();
const plain = renderK8sObjects(topology, OPTS);
const worker = renderK8sObjects(topology, WORKER);

const component = (o: K8sObject): string | undefined => o.metadata.labels?.['app.kubernetes.io/component'];
const deploymentOf = (objs: K8sObject[], stage: string): Deployment => {
  const d = objs.find((o): o is Deployment => o.kind === 'Deployment' && component(o) === stage);
  if (!d) throw new Error(`no Deployment for ${stage}`);
  return d;
};
const scaledObjectOf = (objs: K8sObject[], stage: string): ScaledObject | undefined =>
  objs.find((o): o is ScaledObject => o.kind === 'ScaledObject' && component(o) === stage);
const container = (d: Deployment): Container => d.spec.template.spec.containers[0]!;
const envValue = (c: Container, name: string): string | undefined => {
  const e = c.env.find((x) => x.name === name);
  return e && 'value' in e ? e.value : undefined;
};
/** The error a render throws, or a failure when it renders. */
const refused = (opts: RenderK8sOptions, t: Topology = topology): unknown => {
  try {
    renderK8sObjects(t, opts);
  } catch (err) {
    return err;
  }
  throw new Error('rendered');
};
/** Whether `dir` lies under a writable mount of an emptyDir the pod declares (the root filesystem is read-only). */
const onWritableEmptyDir = (d: Deployment, dir: string): boolean => {
  const emptyDirs = new Set(d.spec.template.spec.volumes.filter((v) => 'emptyDir' in v).map((v) => v.name));
  return container(d).volumeMounts.some((m) => !m.readOnly && emptyDirs.has(m.name) && (dir === m.mountPath || dir.startsWith(`${m.mountPath}/`)));
};

describe('k8s render: GPU options reach the GPU stage pods only', () => {
  it('leaves every object but the GPU stage (infer) Deployment and ScaledObject exactly as without the options', () => {
    expect(worker.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(plain.map((o) => `${o.kind}/${o.metadata.name}`));
    const changed = worker.filter((o, i) => JSON.stringify(o) !== JSON.stringify(plain[i])).map((o) => `${o.kind}/${component(o)}`);
    expect(changed).toEqual(['Deployment/infer', 'ScaledObject/infer']);
    // the ScaledObject: only the cap moves
    expect({ ...scaledObjectOf(worker, 'infer')!.spec, maxReplicaCount: 8 }).toEqual(scaledObjectOf(plain, 'infer')!.spec);
  });

  it('gives the infer pods the GPU image, the worker backend, the weights claim read-only, the caches, node selector and tolerations', () => {
    const d = deploymentOf(worker, 'infer');
    const c = container(d);
    expect(c.image).toBe('registry.example/sonic-worker:1.0');
    expect(c.command).toEqual(['sonicflow', 'run', 'infer']);
    expect(envValue(c, 'SONIC_INFER_BACKEND')).toBe('worker');
    expect(envValue(c, 'SONIC_WORKER_SONIC_DIR')).toBe('/opt/Sonic');
    expect(d.spec.template.spec.volumes).toContainEqual({ name: 'sonic-weights', persistentVolumeClaim: { claimName: 'sonic-weights', readOnly: true } });
    expect(c.volumeMounts).toContainEqual({ name: 'sonic-weights', mountPath: '/opt/Sonic/checkpoints', readOnly: true });
    // the runner loads <SONIC_WORKER_SONIC_DIR>/checkpoints: exactly where the claim is
    expect(`${envValue(c, 'SONIC_WORKER_SONIC_DIR')}/checkpoints`).toBe(c.volumeMounts.find((m) => m.name === 'sonic-weights')!.mountPath);
    expect(d.spec.template.spec.nodeSelector).toEqual({ 'nvidia.com/gpu.product': 'NVIDIA-A10G', pool: 'gpu' });
    expect(d.spec.template.spec.tolerations).toEqual([
      { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
      { key: 'dedicated', operator: 'Equal', value: 'sonic', effect: 'NoExecute' },
    ]);
    // the GPU image runs the same sonicflow command, so the drain, probes and resources are as before
    expect(c.resources).toEqual(container(deploymentOf(plain, 'infer')).resources);
  });

  it('points every cache Python, torch, Hugging Face, matplotlib and numba write at a writable emptyDir (the root filesystem is read-only), never at the weights', () => {
    const d = deploymentOf(worker, 'infer');
    const c = container(d);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    for (const name of CACHE_VARS) {
      const dir = envValue(c, name);
      expect(dir, name).toBeDefined();
      expect(onWritableEmptyDir(d, dir!), `${name}=${dir} is writable`).toBe(true);
      expect(dir!.startsWith('/opt/Sonic/checkpoints')).toBe(false);
    }
    // the weights mount is not writable
    expect(onWritableEmptyDir(d, '/opt/Sonic/checkpoints/Sonic')).toBe(false);
    // the command backend runs Sonic's CLI in the pod too; cog and builtin run nothing of it there
    const command = container(deploymentOf(renderK8sObjects(topology, { ...OPTS, inferBackend: 'command' }), 'infer'));
    expect(command.env.map((e) => e.name)).toEqual(expect.arrayContaining(CACHE_VARS));
    const cog = container(deploymentOf(renderK8sObjects(topology, { ...OPTS, inferBackend: 'cog' }), 'infer'));
    expect(cog.env.filter((e) => CACHE_VARS.includes(e.name))).toEqual([]);
    expect(envValue(cog, 'SONIC_INFER_BACKEND')).toBe('cog');
  });

  it('renders nothing of them without the options: no backend, weights, caches or node selector, the usual GPU toleration', () => {
    const d = deploymentOf(plain, 'infer');
    expect(container(d).image).toBe('ghcr.io/sonicflow/sonicflow:latest');
    expect(container(d).env.filter((e) => GPU_ENV.includes(e.name))).toEqual([]);
    expect(d.spec.template.spec.volumes.map((v) => v.name)).toEqual(['tmp']);
    expect(d.spec.template.spec.nodeSelector).toBeUndefined();
    expect(d.spec.template.spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(renderK8s(topology, OPTS)).not.toMatch(/nodeSelector|persistentVolumeClaim:|SONIC_WORKER_SONIC_DIR|SONIC_INFER_BACKEND|TORCH_HOME/);
    expect(renderK8sWarnings(topology, OPTS)).toEqual([]);
  });

  it('gives CPU stages nothing of them, and no pod at all when no stage has a GPU', () => {
    for (const stage of topology.stages.filter((s) => s.name !== 'infer')) {
      const d = deploymentOf(worker, stage.name);
      expect(container(d).image).toBe('ghcr.io/sonicflow/sonicflow:latest');
      expect(d.spec.template.spec.nodeSelector).toBeUndefined();
      expect(d.spec.template.spec.tolerations).toBeUndefined();
      expect(container(d).env.filter((e) => GPU_ENV.includes(e.name))).toEqual([]);
    }
    const cpuOnly = renderK8sObjects(topology, { ...WORKER, gpuStages: [] });
    expect(cpuOnly).toEqual(renderK8sObjects(topology, { ...OPTS, gpuStages: [] }));
    expect(renderK8sWarnings(topology, { ...OPTS, inferBackend: 'worker', gpuStages: [] })).toEqual([]);
  });

  it('mounts the weights at --weights-path, with SONIC_WORKER_SONIC_DIR its parent', () => {
    const c = container(deploymentOf(renderK8sObjects(topology, { ...WORKER, weightsPath: '/models/sonic/checkpoints' }), 'infer'));
    expect(c.volumeMounts).toContainEqual({ name: 'sonic-weights', mountPath: '/models/sonic/checkpoints', readOnly: true });
    expect(envValue(c, 'SONIC_WORKER_SONIC_DIR')).toBe('/models/sonic');
  });
});

describe('k8s render: the missing-weights warning', () => {
  it('warns, outside the manifests, when GPU pods use the worker backend with no weights claim', () => {
    const opts: RenderK8sOptions = { ...OPTS, inferBackend: 'worker' };
    const [warning, ...more] = renderK8sWarnings(topology, opts);
    expect(more).toEqual([]);
    expect(warning).toMatch(/infer pods .*worker.*--weights-pvc.*fail to load Sonic/);
    expect(renderK8s(topology, opts)).not.toMatch(/weights-pvc|fail to load/);
    // the ConfigMap's backend counts as well; a claim, another backend or a CPU stage alone: no warning
    expect(renderK8sWarnings(topology, { ...OPTS, config: { SONIC_INFER_BACKEND: 'worker' } })).toHaveLength(1);
    expect(renderK8sWarnings(topology, { ...opts, weightsPvc: 'sonic-weights' })).toEqual([]);
    expect(renderK8sWarnings(topology, { ...OPTS, inferBackend: 'command' })).toEqual([]);
    expect(renderK8sWarnings(topology, { ...opts, stage: 'encode' })).toEqual([]);
  });

  it('gives a GPU image of its own the caches even without --infer-backend, and says the image decides the backend', () => {
    // the worker image sets SONIC_INFER_BACKEND=worker in its own ENV, which the render cannot see
    const opts: RenderK8sOptions = { ...OPTS, gpuImage: 'ghcr.io/sonicflow/sonic-worker:1' };
    const d = deploymentOf(renderK8sObjects(topology, opts), 'infer');
    for (const name of CACHE_VARS) expect(onWritableEmptyDir(d, envValue(container(d), name)!), name).toBe(true);
    expect(envValue(container(d), 'SONIC_INFER_BACKEND')).toBeUndefined();
    const [warning, ...more] = renderK8sWarnings(topology, opts);
    expect(more).toEqual([]);
    expect(warning).toMatch(/sonic-worker:1 without --infer-backend.*image's own SONIC_INFER_BACKEND.*no --weights-pvc/);
    expect(renderK8sWarnings(topology, { ...opts, weightsPvc: 'sonic-weights' })[0]).not.toMatch(/weights-pvc/);
    expect(renderK8sWarnings(topology, { ...opts, inferBackend: 'worker', weightsPvc: 'sonic-weights' })).toEqual([]);
  });

  it('`render k8s` prints it on stderr and the YAML alone on stdout', () => {
    const run = (...args: string[]): ReturnType<typeof spawnSync> =>
      spawnSync(process.execPath, [join(ROOT, 'bin/sonicflow.mjs'), 'render', 'k8s', '--stage', 'infer', ...args], { encoding: 'utf8', cwd: ROOT });
    const r = run('--infer-backend', 'worker', '--gpus', '3');
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^warning: the infer pods use SONIC_INFER_BACKEND=worker .*fail to load Sonic/);
    expect(r.stdout).toMatch(/^apiVersion: apps\/v1\n/);
    expect(r.stdout).toContain('maxReplicaCount: 3\n');
    expect(r.stdout).not.toContain('warning');
    const bad = run('--gpu-toleration', 'nvidia.com/gpu:Sometimes');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^error \[CONFIG_INVALID\]: --gpu-toleration "nvidia.com\/gpu:Sometimes"/);
    expect(bad.stdout).toBe('');
  });
});

describe('k8s render: --gpus caps the GPU stages', () => {
  const maxOf = (objs: K8sObject[], stage: string): number => scaledObjectOf(objs, stage)!.spec.maxReplicaCount;
  /** Two GPU stages behind each other: `one` (1 GPU a pod, up to `oneMax`) and `two` (2 GPUs a pod, up to 8). */
  const twoGpuStages = (oneMax: number, partitions = 12): Topology =>
    defineTopology({
      name: 'gpus',
      prefix: 'gpus',
      status: 'status',
      topics: {
        in: { valueSchema: 'task-request', partitions, external: { producers: ['api'] }, doc: 'input' },
        mid: { valueSchema: 'task-request', partitions, doc: 'between' },
        out: { valueSchema: 'task-validated', external: { consumers: ['someone'] }, doc: 'output' },
        status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
      },
      stages: {
        one: { doc: 'a GPU each', input: 'in', outputs: { result: 'mid' }, scaling: { maxReplicas: oneMax }, resources: { ...SMALL, gpus: 1 } },
        two: { doc: 'two GPUs each', input: 'mid', outputs: { result: 'out' }, scaling: { maxReplicas: 8 }, resources: { ...SMALL, gpus: 2 } },
      },
    });

  it('caps infer at the GPUs (3 of maxReplicas 8 → 3), never above maxReplicas or the partitions', () => {
    expect(maxOf(plain, 'infer')).toBe(8);
    expect(maxOf(worker, 'infer')).toBe(3);
    expect(maxOf(renderK8sObjects(topology, { ...OPTS, gpus: 1 }), 'infer')).toBe(1);
    expect(maxOf(renderK8sObjects(topology, { ...OPTS, gpus: 100 }), 'infer')).toBe(8);
    // 4 slots (tasks.dispatched partitions) bound infer below 6 GPUs
    expect(maxOf(renderK8sObjects(sonicTopology({ slots: 4 }), { ...OPTS, gpus: 6 }), 'infer')).toBe(4);
    // the minimum follows a lower maximum
    const so = scaledObjectOf(renderK8sObjects(topology, { ...OPTS, gpus: 1 }), 'infer')!;
    expect(so.spec.minReplicaCount).toBeLessThanOrEqual(so.spec.maxReplicaCount);
  });

  it('shares the GPUs fairly between GPU stages, counting GPUs per pod, and gives what one cannot use to the other', () => {
    const both = renderK8sObjects(twoGpuStages(8), { ...OPTS, gpus: 7 });
    // one pod each in turn: one 3 × 1 GPU + two 2 × 2 GPUs = 7
    expect([maxOf(both, 'one'), maxOf(both, 'two')]).toEqual([3, 2]);
    const capped = renderK8sObjects(twoGpuStages(1), { ...OPTS, gpus: 7 });
    expect([maxOf(capped, 'one'), maxOf(capped, 'two')]).toEqual([1, 3]);
    // the same share when one stage is rendered alone
    expect(maxOf(renderK8sObjects(twoGpuStages(8), { ...OPTS, gpus: 7, stage: 'two' }), 'two')).toBe(2);
    // the GPUs in use never exceed the budget
    for (const gpus of [3, 4, 5, 6, 9, 10, 20, 25]) {
      const objs = renderK8sObjects(twoGpuStages(8), { ...OPTS, gpus });
      expect(maxOf(objs, 'one') * 1 + maxOf(objs, 'two') * 2, `--gpus ${gpus}`).toBeLessThanOrEqual(gpus);
    }
    expect(refused({ ...OPTS, gpus: 2 }, twoGpuStages(8))).toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/--gpus 2 .*two would get none/),
    });
  });

  it('caps a fixed replica count too (a dispatcher of fixed size made a GPU stage)', () => {
    const replicas = (gpus?: number): number | undefined =>
      deploymentOf(renderK8sObjects(topology, { ...OPTS, gpuStages: ['dispatch'], ...(gpus ? { gpus } : {}) }), 'dispatch').spec.replicas;
    expect(replicas()).toBe(2);
    expect(replicas(1)).toBe(1);
    expect(replicas(5)).toBe(2);
  });

  it('refuses no GPUs, a fraction or not a number (CONFIG_INVALID)', () => {
    for (const gpus of [0, -1, 2.5, Number.NaN]) {
      expect(refused({ ...OPTS, gpus }), String(gpus)).toMatchObject({ code: 'CONFIG_INVALID', retryable: false, message: expect.stringContaining('--gpus') });
    }
  });
});

describe('k8s render: GPU option syntax', () => {
  it('refuses a bad node selector, toleration, weights claim or path, and backend, naming the option (CONFIG_INVALID)', () => {
    const cases: [Partial<RenderK8sOptions>, string][] = [
      [{ gpuNodeSelector: ['pool'] }, '--gpu-node-selector "pool"'],
      [{ gpuNodeSelector: ['=gpu'] }, '--gpu-node-selector'],
      [{ gpuNodeSelector: ['bad key=x'] }, '--gpu-node-selector'],
      [{ gpuNodeSelector: ['pool=a b'] }, '--gpu-node-selector'],
      [{ gpuNodeSelector: ['pool=a', 'pool=b'] }, 'two values'],
      [{ gpuTolerations: ['nvidia.com/gpu'] }, '--gpu-toleration "nvidia.com/gpu"'],
      [{ gpuTolerations: ['nvidia.com/gpu:Sometimes'] }, '--gpu-toleration'],
      [{ gpuTolerations: ['gpu=:NoSchedule'] }, '--gpu-toleration'],
      [{ gpuTolerations: [':NoSchedule'] }, '--gpu-toleration'],
      [{ gpuTolerations: ['a b:NoSchedule'] }, '--gpu-toleration'],
      [{ weightsPvc: 'Bad_Claim' }, '--weights-pvc'],
      [{ weightsPath: '/opt/Sonic/checkpoints' }, '--weights-path needs --weights-pvc'],
      [{ weightsPvc: 'w', weightsPath: 'checkpoints' }, '--weights-path'],
      [{ weightsPvc: 'w', weightsPath: '/checkpoints' }, '--weights-path'],
      [{ weightsPvc: 'w', weightsPath: '/opt/Sonic/../x' }, '--weights-path'],
      [{ weightsPvc: 'w', weightsPath: '/tmp/checkpoints' }, '/tmp'],
      [{ gpuImage: 'two words' }, '--gpu-image'],
      [{ inferBackend: 'Worker!' }, '--infer-backend'],
    ];
    for (const [opts, message] of cases) {
      expect(refused({ ...OPTS, ...opts }), JSON.stringify(opts)).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining(message) });
    }
  });

  it('reads key=value selectors and key[=value]:Effect tolerations as Kubernetes does (Exists without a value, Equal with one)', () => {
    const d = deploymentOf(
      renderK8sObjects(topology, {
        ...OPTS,
        gpuNodeSelector: ['cloud.google.com/gke-accelerator=nvidia-l4', 'pool=gpu', 'pool=gpu'],
        gpuTolerations: ['gpu:PreferNoSchedule', 'example.com/team=media_1.a:NoExecute'],
      }),
      'infer',
    );
    expect(d.spec.template.spec.nodeSelector).toEqual({ 'cloud.google.com/gke-accelerator': 'nvidia-l4', pool: 'gpu' });
    expect(d.spec.template.spec.tolerations).toEqual([
      { key: 'gpu', operator: 'Exists', effect: 'PreferNoSchedule' },
      { key: 'example.com/team', operator: 'Equal', value: 'media_1.a', effect: 'NoExecute' },
    ]);
  });
});

describe('k8s render: a GPU pod outlives the longest render', () => {
  it('gives the worker pods a grace period of the longest render plus the drain timeout plus the 15 s margin (the runner stops after the render in flight)', () => {
    for (const longestRenderMs of [3_720_000, 24_120_000]) {
      const d = deploymentOf(renderK8sObjects(topology, { ...WORKER, longestRenderMs }), 'infer');
      const grace = d.spec.template.spec.terminationGracePeriodSeconds;
      expect(grace).toBe(Math.ceil((longestRenderMs + DRAIN_MS) / 1000) + 15);
      // the pod's own drain (SONIC_DRAIN_TIMEOUT_MS) covers the render, and Kubernetes waits longer than it
      const drainMs = Number(envValue(container(d), 'SONIC_DRAIN_TIMEOUT_MS'));
      expect(drainMs).toBeGreaterThanOrEqual(longestRenderMs + DRAIN_MS);
      expect(grace * 1000).toBeGreaterThan(drainMs);
    }
  });
});
