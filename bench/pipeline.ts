/**
 * The whole Sonic pipeline on this machine, for the benchmarks that measure it end to end
 * (bench/pipeline-latency.ts, bench/pipeline-overhead.ts): deploys the topology under a fresh
 * prefix, starts the API and every stage as separate processes (builtin backend, the topology's
 * default settings; the API's rate and upload limits raised), and removes the topology again
 * when stopped.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Context } from '../src/app/context.js';
import { TopicAdmin } from '../src/kafka/admin.js';
import { applyDeploy, planDeploy, removeTopology } from '../src/ops/deploy.js';
import type { Topology } from '../src/runtime/topology.js';
import { sonicTopology } from '../topologies/sonic.js';
import { API_LISTENING, printed, startNode, stopProcess, waitFor, type Managed } from './lib.js';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/sonicflow.mjs');

export interface Pipeline {
  /** The API's base URL (auth disabled, rate limit out of the way). */
  api: string;
  prefix: string;
  topology: Topology;
  /** A context of this bench's own (same prefix and services as the processes). */
  ctx: Context;
  /** Scratch directory: the processes' data directory and logs. */
  dir: string;
  /** Each stage's `/metrics` port, by stage name. */
  metricsPorts: Record<string, number>;
  /** Stops every stage process (the API keeps running). */
  stopStages(): Promise<void>;
  /** Stops every process and removes the topology's topics and subjects. */
  stop(): Promise<void>;
}

/** Deploys the topology under a fresh prefix and starts the API and one process per stage; resolves once every stage holds its partitions. */
export async function startPipeline(): Promise<Pipeline> {
  const prefix = `bench_${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-bench-'));
  const env = {
    ...process.env,
    SONIC_TOPIC_PREFIX: prefix,
    SONIC_API_AUTH: 'disabled',
    // free ports, which the API and each stage print once they listen
    SONIC_API_PORT: '0',
    SONIC_METRICS_PORT: '0',
    SONIC_DATA_DIR: join(dir, 'data'),
    // info: the stages say when they hold their partitions
    SONIC_LOG_LEVEL: 'info',
    // the API's admission limits out of the way: a burst is submitted at once
    SONIC_API_RATE_LIMIT_PER_MINUTE: '1000000',
    SONIC_API_MAX_CONCURRENT_UPLOADS: '1000',
    SONIC_API_MAX_UPLOADS_PER_KEY: '1000',
  };
  const ctx = new Context({ ...env, SONIC_LOG_LEVEL: 'error' }, 'bench');
  const topology = sonicTopology({ prefix });
  const admin = await new TopicAdmin(ctx.kafka).connect();
  await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);

  const procs: Managed[] = [];
  const stages: Managed[] = [];
  const stopAll = async (list: Managed[]): Promise<void> => {
    await Promise.all(list.map((m) => stopProcess(m.proc)));
  };
  const stop = async (): Promise<void> => {
    await stopAll(procs);
    try {
      await removeTopology(topology, admin, ctx.registryAdmin);
    } finally {
      await admin.close();
    }
  };
  try {
    const apiProc = startNode([BIN, 'api'], env, join(dir, 'api.log'));
    procs.push(apiProc);
    const port = await printed(apiProc, API_LISTENING, { timeoutMs: 90_000, what: 'the API did not start' });
    const api = `http://127.0.0.1:${port}`;
    // the stages' video links name the API's port
    for (const s of topology.stages) stages.push(startNode([BIN, 'run', s.name], { ...env, SONIC_API_PORT: port }, join(dir, `${s.name}.log`)));
    procs.push(...stages);
    const metricsPorts: Record<string, number> = {};
    await Promise.all(
      topology.stages.map(async (s, i) => {
        const m = stages[i]!;
        metricsPorts[s.name] = Number(await printed(m, /metrics on :(\d+)\/metrics/, { timeoutMs: 90_000, what: `stage ${s.name} did not start` }));
        await printed(m, /"msg":"(partitions assigned)"/, { timeoutMs: 90_000, what: `stage ${s.name} did not join its group` });
      }),
    );
    await waitFor(
      () =>
        fetch(`${api}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      { timeoutMs: 60_000, what: 'the API did not become ready', everyMs: 300 },
    );
    return { api, prefix, topology, ctx, dir, metricsPorts, stopStages: () => stopAll(stages), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
