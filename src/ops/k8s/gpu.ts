/**
 * What the pods of a GPU stage (`infer` in the Sonic topology) get beyond any stage's, from the
 * GPU options of `render k8s`: their own image, the inference backend, Sonic's weights from a
 * PersistentVolumeClaim, writable caches for Python and torch, node selection and tolerations, and
 * a cap on their replicas from the GPUs the cluster has for sonicflow.
 *
 * Choices, with their reasons:
 * - SONIC_INFER_BACKEND is a container env entry of the GPU pods (`--infer-backend`), not a
 *   ConfigMap entry: the ConfigMap is shared by every pod, and the backend concerns the GPU stages
 *   only; an env entry wins over the ConfigMap's (envFrom), so a `config` entry stays the default.
 *   It is not implied by `--gpu-image`: an image may serve more than one backend.
 * - The weights (20+ GB) are never in an image: a claim mounted read-only where the runner looks
 *   (`<sonic dir>/checkpoints`, SONIC_WORKER_SONIC_DIR its parent). Read-only, so many pods may
 *   share one ReadOnlyMany claim and none can damage it.
 * - The root filesystem is read-only, and Python, torch, Hugging Face, matplotlib and numba write
 *   caches under HOME or their own variables: the pods of a backend that runs Sonic in the pod
 *   (`worker`, `command`), and the pods of a GPU image of their own (made to run Sonic: the worker
 *   image sets SONIC_INFER_BACKEND=worker in its own ENV, which the render cannot see), get an emptyDir for them, every variable pointing into it (a restarted
 *   container keeps it; a new pod starts empty, as these are only caches).
 * - Without `--gpu-toleration` the pods tolerate the usual GPU node taint (`nvidia.com/gpu`, any
 *   value, NoSchedule); the option replaces it, so a cluster with other taints carries no stray one.
 * - `--gpus` caps replicas, not requests: the scheduler already refuses a pod no GPU is free for,
 *   but an HPA that asks for more pods than GPUs leaves them Pending, and KEDA keeps asking. The
 *   GPUs are shared out one pod per GPU stage at a time (max-min fair), each stage up to what it
 *   could use anyway (its maxReplicas and partitions), so a stage capped lower leaves its share to
 *   the others.
 */
import { posix } from 'node:path';
import type { Container, Toleration, Volume } from './objects.js';

export const GPU_RESOURCE = 'nvidia.com/gpu';
export const DEFAULT_WEIGHTS_PATH = '/opt/Sonic/checkpoints';
const WEIGHTS_VOLUME = 'sonic-weights';
const CACHE_VOLUME = 'cache';
/** HOME and the caches of the GPU pods that run Sonic (an emptyDir). */
export const CACHE_DIR = '/var/cache/sonicflow';
/** The backends that run Python and torch inside the infer pod (the others: a CPU preview, or a Cog server elsewhere). */
const IN_POD_BACKENDS = ['worker', 'command'];
const TAINT_EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'];
export const DEFAULT_GPU_TOLERATIONS: readonly Toleration[] = [{ key: GPU_RESOURCE, operator: 'Exists', effect: 'NoSchedule' }];

/** The GPU options as `render k8s` takes them (part of RenderK8sOptions). */
export interface GpuOptions {
  /** Image of the GPU stage pods; default: `image`. */
  gpuImage?: string;
  /** SONIC_INFER_BACKEND of the GPU stage pods; default: none rendered (the ConfigMap's, else the product's default). */
  inferBackend?: string;
  /** PersistentVolumeClaim holding Sonic's weights, mounted read-only in the GPU stage pods at `weightsPath`. */
  weightsPvc?: string;
  /** Where the weights are mounted (default {@link DEFAULT_WEIGHTS_PATH}); SONIC_WORKER_SONIC_DIR is its parent. Needs `weightsPvc`. */
  weightsPath?: string;
  /** `key=value` node labels the GPU stage pods must run on. */
  gpuNodeSelector?: string[];
  /** `key[=value]:Effect` taints the GPU stage pods tolerate, replacing {@link DEFAULT_GPU_TOLERATIONS}. */
  gpuTolerations?: string[];
  /** GPUs the cluster has for sonicflow: caps the replicas of the GPU stages (see {@link shareGpus}). */
  gpus?: number;
}

/** The GPU options checked. */
export interface ResolvedGpu {
  image?: string;
  inferBackend?: string;
  weights?: { claim: string; path: string };
  nodeSelector?: Record<string, string>;
  tolerations: readonly Toleration[];
  gpus?: number;
  /** The backend runs Sonic in the pod: caches on an emptyDir. */
  cache: boolean;
}

const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$/;

/** A label or taint key: an optional DNS prefix and `/`, then a name of at most 63 characters. */
function validKey(key: string): boolean {
  const slash = key.lastIndexOf('/');
  return QUALIFIED_NAME.test(key) && key.length - slash - 1 <= 63 && slash <= 253;
}
const validValue = (value: string): boolean => value.length <= 63 && LABEL_VALUE.test(value);

/** `key=value` as a node selector entry; CONFIG_INVALID (through `bad`) when it is not one. */
export function parseNodeSelector(entry: string, bad: (message: string) => never): [string, string] {
  const eq = entry.indexOf('=');
  const key = eq < 0 ? entry : entry.slice(0, eq);
  const value = eq < 0 ? '' : entry.slice(eq + 1);
  if (eq < 0 || !validKey(key) || !validValue(value))
    bad(`--gpu-node-selector "${entry}" is not key=value with a Kubernetes label key and value (e.g. nvidia.com/gpu.product=NVIDIA-A10G)`);
  return [key, value];
}

/** `key[=value]:Effect` as a toleration (Exists without a value, Equal with one); CONFIG_INVALID (through `bad`) when it is not one. */
export function parseToleration(entry: string, bad: (message: string) => never): Toleration {
  const usage = `--gpu-toleration "${entry}" is not key[=value]:Effect with a Kubernetes taint key, value and an effect of ${TAINT_EFFECTS.join(', ')} (e.g. nvidia.com/gpu:NoSchedule)`;
  const colon = entry.lastIndexOf(':');
  if (colon < 0) return bad(usage);
  const effect = entry.slice(colon + 1);
  const taint = entry.slice(0, colon);
  const eq = taint.indexOf('=');
  const key = eq < 0 ? taint : taint.slice(0, eq);
  const value = eq < 0 ? undefined : taint.slice(eq + 1);
  if (!TAINT_EFFECTS.includes(effect) || !validKey(key) || (value !== undefined && (value === '' || !validValue(value)))) return bad(usage);
  return value === undefined ? { key, operator: 'Exists', effect } : { key, operator: 'Equal', value, effect };
}

/**
 * The GPU options checked (CONFIG_INVALID through `bad`). `configBackend` is the ConfigMap's
 * SONIC_INFER_BACKEND, the backend when `inferBackend` is absent; `reserved` are the pods' other
 * mount paths, which the weights may not sit on or over.
 */
export function resolveGpu(opts: GpuOptions, configBackend: string | undefined, reserved: string[], bad: (message: string) => never): ResolvedGpu {
  if (opts.gpuImage !== undefined && !/^\S+$/.test(opts.gpuImage)) bad(`--gpu-image must be an image reference, got "${opts.gpuImage}"`);
  if (opts.inferBackend !== undefined && !/^[a-z][a-z0-9-]*$/.test(opts.inferBackend))
    bad(`--infer-backend must be a backend name (builtin, command, cog, worker, ...), got "${opts.inferBackend}"`);
  if (opts.weightsPath !== undefined && opts.weightsPvc === undefined) bad('--weights-path needs --weights-pvc: without a claim nothing is mounted there');
  let weights: ResolvedGpu['weights'];
  if (opts.weightsPvc !== undefined) {
    if (!DNS_SUBDOMAIN.test(opts.weightsPvc)) bad(`--weights-pvc "${opts.weightsPvc}" is not a valid PersistentVolumeClaim name`);
    const path = opts.weightsPath ?? DEFAULT_WEIGHTS_PATH;
    if (!path.startsWith('/') || posix.normalize(path) !== path || path.endsWith('/') || posix.dirname(path) === '/')
      bad(`--weights-path must be a normalised absolute path below a directory (the Sonic checkout), e.g. ${DEFAULT_WEIGHTS_PATH}; got "${path}"`);
    const clash = reserved.find((dir) => dir === path || dir.startsWith(`${path}/`) || path.startsWith(`${dir}/`));
    if (clash !== undefined) bad(`--weights-path ${path} would sit on or over the pods' ${clash} mount`);
    weights = { claim: opts.weightsPvc, path };
  }
  const nodeSelector: Record<string, string> = {};
  for (const entry of opts.gpuNodeSelector ?? []) {
    const [key, value] = parseNodeSelector(entry, bad);
    if (key in nodeSelector && nodeSelector[key] !== value) bad(`--gpu-node-selector gives ${key} two values (${nodeSelector[key]}, ${value}): a node has one`);
    nodeSelector[key] = value;
  }
  const tolerations = (opts.gpuTolerations ?? []).map((t) => parseToleration(t, bad));
  if (opts.gpus !== undefined && !(Number.isInteger(opts.gpus) && opts.gpus >= 1))
    bad(`--gpus must be a whole number of GPUs >= 1 (the GPU stages need one pod each), got ${opts.gpus}`);
  const backend = opts.inferBackend ?? configBackend;
  return {
    ...(opts.gpuImage !== undefined ? { image: opts.gpuImage } : {}),
    ...(opts.inferBackend !== undefined ? { inferBackend: opts.inferBackend } : {}),
    ...(weights ? { weights } : {}),
    ...(Object.keys(nodeSelector).length > 0 ? { nodeSelector } : {}),
    tolerations: tolerations.length > 0 ? tolerations : DEFAULT_GPU_TOLERATIONS,
    ...(opts.gpus !== undefined ? { gpus: opts.gpus } : {}),
    // a GPU image of its own is there to run Sonic in the pod (the worker image sets SONIC_INFER_BACKEND=worker itself)
    cache: (backend !== undefined && IN_POD_BACKENDS.includes(backend)) || opts.gpuImage !== undefined,
  };
}

/**
 * What `render k8s` should tell the operator on stderr (never in the manifests): a GPU stage with
 * the worker backend and no weights claim cannot load Sonic.
 */
export function gpuWarnings(g: ResolvedGpu, configBackend: string | undefined, gpuStages: string[]): string[] {
  const backend = g.inferBackend ?? configBackend;
  if (gpuStages.length === 0) return [];
  if (backend === undefined && g.image !== undefined) {
    // the image's own ENV decides, which the render cannot see
    return [
      `the ${gpuStages.join(', ')} pods run ${g.image} without --infer-backend: the image's own SONIC_INFER_BACKEND applies (the worker image's is worker)` +
        (g.weights ? '' : `, and with no --weights-pvc a worker backend there will fail to load Sonic`),
    ];
  }
  if (backend !== 'worker' || g.weights) return [];
  return [
    `the ${gpuStages.join(', ')} pods use SONIC_INFER_BACKEND=worker but get no weights volume (no --weights-pvc): they will fail to load Sonic unless their image holds its checkpoints`,
  ];
}

/** The GPU pods' env entries beyond every stage's: the backend, the Sonic checkout of the weights, the caches. */
export function gpuEnv(g: ResolvedGpu): Container['env'] {
  return [
    ...(g.inferBackend !== undefined ? [{ name: 'SONIC_INFER_BACKEND', value: g.inferBackend }] : []),
    ...(g.weights ? [{ name: 'SONIC_WORKER_SONIC_DIR', value: posix.dirname(g.weights.path) }] : []),
    ...(g.cache
      ? [
          { name: 'HOME', value: CACHE_DIR },
          { name: 'XDG_CACHE_HOME', value: `${CACHE_DIR}/.cache` },
          { name: 'TORCH_HOME', value: `${CACHE_DIR}/.cache/torch` },
          { name: 'HF_HOME', value: `${CACHE_DIR}/.cache/huggingface` },
          { name: 'MPLCONFIGDIR', value: `${CACHE_DIR}/.config/matplotlib` },
          { name: 'NUMBA_CACHE_DIR', value: `${CACHE_DIR}/.cache/numba` },
        ]
      : []),
  ];
}

export function gpuVolumes(g: ResolvedGpu): Volume[] {
  return [
    ...(g.weights ? [{ name: WEIGHTS_VOLUME, persistentVolumeClaim: { claimName: g.weights.claim, readOnly: true } }] : []),
    ...(g.cache ? [{ name: CACHE_VOLUME, emptyDir: {} }] : []),
  ];
}

export function gpuMounts(g: ResolvedGpu): Container['volumeMounts'] {
  return [
    ...(g.weights ? [{ name: WEIGHTS_VOLUME, mountPath: g.weights.path, readOnly: true }] : []),
    ...(g.cache ? [{ name: CACHE_VOLUME, mountPath: CACHE_DIR }] : []),
  ];
}

/** A GPU stage as {@link shareGpus} sees it. */
export interface GpuDemand {
  stage: string;
  /** GPUs each of its pods takes. */
  gpusPerPod: number;
  /** The most replicas it could use without the GPU cap (its maxReplicas, partitions, fixed count). */
  replicas: number;
}

/**
 * The replicas each GPU stage may run on `gpus` GPUs: one pod per stage in turn while a pod still
 * fits and the stage could use it (max-min fair), so one stage alone gets min(replicas,
 * floor(gpus / gpusPerPod)). CONFIG_INVALID (through `bad`) when not every stage gets one pod.
 */
export function shareGpus(gpus: number, demands: GpuDemand[], bad: (message: string) => never): Map<string, number> {
  const given = new Map(demands.map((d) => [d.stage, 0]));
  let left = gpus;
  for (let progress = true; progress;) {
    progress = false;
    for (const d of demands) {
      const n = given.get(d.stage)!;
      if (n < d.replicas && d.gpusPerPod <= left) {
        given.set(d.stage, n + 1);
        left -= d.gpusPerPod;
        progress = true;
      }
    }
  }
  const starved = demands.filter((d) => given.get(d.stage) === 0);
  if (starved.length > 0) {
    const need = demands.map((d) => `${d.stage} ${d.gpusPerPod}`).join(', ');
    bad(`--gpus ${gpus} cannot run one pod of every GPU stage (GPUs per pod: ${need}); ${starved.map((d) => d.stage).join(', ')} would get none`);
  }
  return given;
}
