/**
 * Harness for end-to-end tests of the Sonic pipeline on the real broker, registry, blob store
 * and ffmpeg: deploys the Sonic topology under a unique prefix, starts the API and every stage of
 * it (`sonicflow api`, `sonicflow run <each stage>` in one process) as child processes, and talks
 * HTTP.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publicApiUrl } from '../../src/core/config.js';
import type { Context } from '../../src/app/context.js';
import { AclAdmin } from '../../src/kafka/acls.js';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { deriveAcls } from '../../src/runtime/acls.js';
import type { Topology } from '../../src/runtime/topology.js';
import { sonicTopology } from '../../topologies/sonic.js';
import {
  LISTENING,
  deployTopology,
  listeningPort,
  onCleanup,
  removeTopologyOnCleanup,
  sonicflow,
  startSonicflow,
  testContext,
  uniqueName,
  type SonicflowProcess,
} from './infra.js';
import { waitConsumedToEnd } from './wait.js';

export interface Pipeline {
  prefix: string;
  api: string;
  dataDir: string;
  env: Record<string, string>;
  logs(): { api: string; stages: string };
  submit(
    form: Record<string, string | { data: Buffer; name: string }>,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  /**
   * Submits a sample task: `text` spoken (synthesised speech) and a 320x400 portrait, at
   * min_resolution 256; the files are in the returned `dir`.
   */
  submitSample(text: string): Promise<{ status: number; body: Record<string, unknown>; dir: string }>;
  status(taskId: string): Promise<Record<string, unknown>>;
  waitFor(taskId: string, states?: string[], timeoutMs?: number): Promise<Record<string, unknown>>;
  topic(name: string): string;
  topology: Topology;
  /** Waits until every stage has committed its inputs to the log end: nothing in flight, nothing more to come. */
  drained(timeoutMs?: number): Promise<void>;
  /** The process of a stage started in a process of its own (`ownProcess`, or every stage with a secured broker). */
  process(stage: string): SonicflowProcess;
}

export interface PipelineOptions {
  /** A broker that enforces ACLs: every stage then runs in a process of its own, as its own principal. */
  secured?: SecuredBroker;
  /** Stages to run in a process of their own (so a test can signal one); the rest share one process. */
  ownProcess?: string[];
}

/** The stages the pipeline runs (`sonicflow run` with all of them, one process): every stage of the topology, in its order. */
export function pipelineStages(topology: Topology): string[] {
  return topology.stages.map((s) => s.name);
}

/**
 * A broker that enforces ACLs (test/helpers/private-broker.ts `startSaslBroker`, or the secured
 * stack with test/helpers/secure-stack.ts `createSecureUsers`): the pipeline deploys its topics and
 * the ACLs derived from the topology with `sonicflow topology deploy --acls --principal-prefix`
 * as the super user `admin` (both removed after the file's tests), and runs the API and each stage
 * in a process of its own, each as its own principal (`<principalPrefix>-<name>`).
 */
export interface SecuredBroker {
  /** A Context of the super user `admin`. */
  ctx: Context;
  /** The environment of a sonicflow process connecting as `user` (`admin`, or `<principalPrefix>-<name>`). */
  env(user: string): Record<string, string>;
  principalPrefix: string;
}

/**
 * `topology deploy --acls` (of the Sonic topology, or the topology `file`) as the super user; the
 * topics, subjects and ACLs are removed after the file's tests. Returns what the command printed.
 */
export async function deployWithAcls(topology: Topology, secured: SecuredBroker, file?: string): Promise<string> {
  const r = sonicflow(['topology', 'deploy', '--acls', '--principal-prefix', secured.principalPrefix, ...(file ? ['--file', file] : [])], {
    ...secured.env('admin'),
    SONIC_TOPIC_PREFIX: topology.prefix,
  });
  removeTopologyOnCleanup(topology, secured.ctx);
  const bindings = deriveAcls(topology, { clientId: 'sonicflow', principalPrefix: secured.principalPrefix }).flatMap((p) => p.bindings);
  onCleanup(async () => {
    const acls = await new AclAdmin(secured.ctx.kafka).connect();
    try {
      await acls.delete(bindings);
    } finally {
      await acls.close();
    }
  });
  if (r.code !== 0 || !r.stdout.includes('Applied.')) throw new Error(`topology deploy --acls failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Starts a whole pipeline; `env` overrides settings (backend, blob store, webhook secret, ...). */
export async function startPipeline(env: Record<string, string> = {}, options: PipelineOptions = {}): Promise<Pipeline> {
  const { secured, ownProcess = [] } = options;
  const prefix = uniqueName('sonic').replace(/-/g, '_');
  const dataDir = mkdtempSync(join(tmpdir(), 'sonicflow-data-'));
  const fullEnv: Record<string, string> = {
    SONIC_TOPIC_PREFIX: prefix,
    SONIC_API_AUTH: 'disabled',
    // a free port, which the API prints once it listens
    SONIC_API_PORT: '0',
    SONIC_DATA_DIR: dataDir,
    SONIC_METRICS_PORT: '0',
    SONIC_LOG_LEVEL: 'info',
    SONIC_RETRY_DELAY_SCALE: '0.02',
    SONIC_SESSION_TIMEOUT_MS: '10000',
    SONIC_HEARTBEAT_INTERVAL_MS: '1000',
    SONIC_WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    ...env,
  };
  const topology = sonicTopology({ prefix });
  if (secured) await deployWithAcls(topology, secured);
  else await deployTopology(topology);
  const as = (name: string): Record<string, string> => (secured ? secured.env(`${secured.principalPrefix}-${name}`) : {});
  const api = startSonicflow(['api'], { ...fullEnv, ...as('api') });
  const port = await listeningPort(api, LISTENING.api).catch((err: unknown) => {
    throw new Error(`the API did not start: ${(err as Error).message}`);
  });
  const stageNames = pipelineStages(topology);
  // the API's links (status, video) name the port it got; the stages' video links must name it too
  const alone = secured ? stageNames : stageNames.filter((n) => ownProcess.includes(n));
  const shared = stageNames.filter((n) => !alone.includes(n));
  const own = new Map(alone.map((name) => [name, startSonicflow(['run', name], { ...fullEnv, SONIC_API_PORT: String(port), ...as(name) })]));
  const processes = [...own.values(), ...(shared.length ? [startSonicflow(['run', ...shared], { ...fullEnv, SONIC_API_PORT: String(port) })] : [])];
  const stages = {
    logs: (): string => processes.map((x) => x.logs()).join('\n'),
    proc: {
      get exitCode(): number | null {
        return processes.find((x) => x.proc.exitCode !== null)?.proc.exitCode ?? null;
      },
    },
  };
  const base = publicApiUrl({ apiPublicUrl: fullEnv.SONIC_API_PUBLIC_URL ?? '', apiPort: port });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    // tests need every stage's group joined before they submit
    if (
      ok &&
      (stages.logs().match(/"msg":"stage running"/g) ?? []).length >= processes.length &&
      (stages.logs().match(/"msg":"partitions assigned"/g) ?? []).length >= stageNames.length
    )
      break;
    if (Date.now() > deadline) throw new Error(`pipeline did not start:\n${api.logs().slice(-2000)}\n${stages.logs().slice(-2000)}`);
    if (api.proc.exitCode !== null || stages.proc.exitCode !== null)
      throw new Error(`a pipeline process exited:\n${api.logs().slice(-3000)}\n${stages.logs().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 300)); // poll interval
  }
  const p: Pipeline = {
    prefix,
    api: base,
    dataDir,
    env: fullEnv,
    logs: () => ({ api: api.logs(), stages: stages.logs() }),
    topic: (name) => `${prefix}.${name}`,
    topology,
    drained: (timeoutMs = 60_000) => waitConsumedToEnd(secured?.ctx ?? testContext(), topology, stageNames, timeoutMs),
    process(stage) {
      const proc = own.get(stage);
      if (!proc) throw new Error(`stage ${stage} does not run in a process of its own (startPipeline's ownProcess)`);
      return proc;
    },
    async submit(form, headers = {}) {
      const fd = new FormData();
      for (const [k, v] of Object.entries(form)) {
        if (typeof v === 'string') fd.set(k, v);
        else fd.set(k, new Blob([v.data]), v.name);
      }
      const res = await fetch(`${base}/v1/tasks`, { method: 'POST', body: fd, headers });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    async submitSample(text) {
      const dir = mkdtempSync(join(tmpdir(), 'sonicflow-sample-'));
      await synthSpeech(text, join(dir, 'speech.wav'));
      await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
      const r = await p.submit({
        audio: { data: readFileSync(join(dir, 'speech.wav')), name: 'speech.wav' },
        image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
        min_resolution: '256',
      });
      return { ...r, dir };
    },
    async status(taskId) {
      const key = fullEnv.SONIC_API_KEYS?.split(',')[0]?.split(';')[0]?.split(':')[1];
      return (await (await fetch(`${base}/v1/tasks/${taskId}`, key ? { headers: { authorization: `Bearer ${key}` } } : {})).json()) as Record<string, unknown>;
    },
    async waitFor(taskId, states = ['SUCCEEDED', 'FAILED'], timeoutMs = 120_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const s = await p.status(taskId);
        if (states.includes(String(s.state))) return s;
        if (Date.now() > until) throw new Error(`task ${taskId} is ${String(s.state)} after ${timeoutMs} ms; stage logs:\n${stages.logs().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 300)); // poll interval
      }
    },
  };
  return p;
}
