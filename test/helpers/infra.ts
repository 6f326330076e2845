/**
 * Integration-test plumbing: a Context on the real broker and registry (from the environment,
 * defaulting to the local stack), unique names per test, and cleanup registered as soon as a
 * resource is created.
 */
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { TopicAdmin, type NewTopic } from '../../src/kafka/admin.js';
import { Context } from '../../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology, storePartitionedTopics } from '../../src/ops/deploy.js';
import type { Topology } from '../../src/runtime/topology.js';

export const ROOT = join(import.meta.dirname, '..', '..');

/** A short random suffix for topic, group and subject names. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

let shared: Context | undefined;
/** One Context per test file, quiet unless SONIC_LOG_LEVEL says otherwise. */
export function testContext(): Context {
  shared ??= new Context({ ...process.env, SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'warn' }, 'test');
  return shared;
}

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  cleanups.length = 0;
});

/** Registers a cleanup to run after the file's tests. */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

/** Creates topics (deleted after the file's tests). */
export async function createTopics(topics: (Partial<NewTopic> & { name: string })[]): Promise<void> {
  const admin = await new TopicAdmin(testContext().kafka).connect();
  try {
    await admin.create(topics.map((t) => ({ partitions: 1, replicationFactor: 1, configs: {}, ...t })));
  } finally {
    await admin.close();
  }
  onCleanup(async () => {
    const a = await new TopicAdmin(testContext().kafka).connect();
    try {
      await a.delete(topics.map((t) => t.name));
    } finally {
      await a.close();
    }
  });
}

/** Deploys every topic and subject of a topology (on the shared broker unless `ctx` says otherwise); both are removed after the file's tests. */
export async function deployTopology(topology: Topology, ctx: Context = testContext()): Promise<void> {
  const admin = await new TopicAdmin(ctx.kafka).connect();
  try {
    await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin, storePartitionedTopics(topology)), admin, ctx.registryAdmin);
  } finally {
    await admin.close();
  }
  removeTopologyOnCleanup(topology, ctx);
}

/** Removes the topics and subjects of a topology (deployed some other way, e.g. by `topology deploy`) after the file's tests. */
export function removeTopologyOnCleanup(topology: Topology, ctx: Context = testContext()): void {
  onCleanup(async () => {
    const a = await new TopicAdmin(ctx.kafka).connect();
    try {
      await removeTopology(topology, a, ctx.registryAdmin);
    } finally {
      await a.close();
    }
  });
}

/** Runs one of Kafka's own command-line tools (through the stack script) and returns stdout. */
export function kafkaTool(tool: string, args: string[]): string {
  const r = spawnSync('bash', [join(ROOT, 'ops/stack/stack.sh'), 'tool', tool, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kafka tool ${tool} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Runs the sonicflow CLI as a child process. */
export function sonicflow(args: string[], env: NodeJS.ProcessEnv = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/sonicflow.mjs'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, SONIC_LOG_LEVEL: 'warn', ...env },
    timeout: 120_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export interface SonicflowProcess {
  proc: ChildProcess;
  /** What it printed so far (JSON logs on stderr, output on stdout). */
  logs(): string;
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
}

/**
 * What sonicflow's servers print on stdout, whatever the log level, once they listen: the port
 * they got (each test starts them on port 0).
 */
export const LISTENING = {
  /** `sonicflow api`: `API listening on http://127.0.0.1:<port> (OpenAPI at ...)`. */
  api: /API listening on \S+:(\d+) \(/,
  /** `sonicflow run`: `metrics on :<port>/metrics`. */
  metrics: /metrics on :(\d+)\/metrics/,
};

/** The port `p` printed (`LISTENING.api` or `.metrics`); rejects when it exits first or says nothing within `timeoutMs`. */
export async function listeningPort(p: SonicflowProcess, pattern: RegExp, timeoutMs = 60_000): Promise<number> {
  const printed = p.waitForLog(pattern, timeoutMs);
  const exited = p.exited.then((code) => {
    throw new Error(`exited (${code}) before it listened; output:\n${p.logs().slice(-3000)}`);
  });
  // whichever loses the race must not be an unhandled rejection
  printed.catch(() => undefined);
  exited.catch(() => undefined);
  await Promise.race([printed, exited]);
  return Number(pattern.exec(p.logs())![1]);
}

/** Starts `sonicflow <args>` as a child process; it is killed after the file's tests if still running. */
export function startSonicflow(args: string[], env: Record<string, string> = {}): SonicflowProcess {
  const proc = spawn(process.execPath, [join(ROOT, 'bin/sonicflow.mjs'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const onData = (d: Buffer): void => {
    buf = (buf + d.toString()).slice(-2_000_000);
    for (const w of [...waiters]) {
      if (!w.pattern.test(buf)) continue;
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  onCleanup(async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]); // at most 10 s to drain, then SIGKILL
    proc.kill('SIGKILL');
  });
  return {
    proc,
    logs: () => buf,
    waitForLog: (pattern, timeoutMs = 60_000) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(buf)) return resolve();
        const t = setTimeout(() => reject(new Error(`no log line matching ${pattern} within ${timeoutMs} ms; logs:\n${buf.slice(-3000)}`)), timeoutMs);
        waiters.push({ pattern, resolve: () => (clearTimeout(t), resolve()) });
      }),
    exited,
  };
}
