/**
 * Submit latency and end-to-end latency of the Sonic pipeline on this machine (builtin backend).
 * Starts the API and every stage of the topology (one process each) under a fresh topic prefix, then
 *  1. measures submit → SUCCEEDED for single tasks run one at a time: median (min–max);
 *  2. submits the sample N times (multipart upload, sequential) while the stages work through
 *     them on the same 2 cores: submit latency under load, p50/p99;
 *  3. stops the stages and submits N more: submit latency of the API alone, p50/p99.
 *
 *   node --import tsx bench/pipeline-latency.ts [--submits 200] [--e2e 3]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TopicAdmin } from '../src/kafka/admin.js';
import { makePortrait, speechWithSilence } from '../src/media/samples.js';
import { Context } from '../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology } from '../src/ops/deploy.js';
import { sonicTopology } from '../topologies/sonic.js';
import { API_LISTENING, fmt, percentile, printed, saveResults, startNode, summarise, table } from './lib.js';

const { values: args } = parseArgs({ options: { submits: { type: 'string', default: '200' }, e2e: { type: 'string', default: '3' } } });
const ROOT = join(import.meta.dirname, '..');
const prefix = `bench_${randomUUID().slice(0, 8)}`;
const dir = mkdtempSync(join(tmpdir(), 'sonicflow-bench-'));
const env = {
  ...process.env,
  SONIC_TOPIC_PREFIX: prefix,
  SONIC_API_AUTH: 'disabled',
  // a free port, which the API prints once it listens
  SONIC_API_PORT: '0',
  SONIC_DATA_DIR: join(dir, 'data'),
  SONIC_METRICS_PORT: '0',
  SONIC_LOG_LEVEL: 'warn',
  SONIC_API_RATE_LIMIT_PER_MINUTE: '1000000',
};
const ctx = new Context({ ...env, SONIC_LOG_LEVEL: 'error' }, 'bench');
const topology = sonicTopology({ prefix });
const admin = await new TopicAdmin(ctx.kafka).connect();
await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);

const procs: ChildProcess[] = [];
const start = (args: string[], more: Record<string, string> = {}): ChildProcess => {
  const p = spawn(process.execPath, [join(ROOT, 'bin/sonicflow.mjs'), ...args], { env: { ...env, ...more }, stdio: 'ignore' });
  procs.push(p);
  return p;
};
const apiProc = startNode([join(ROOT, 'bin/sonicflow.mjs'), 'api'], env, join(dir, 'api.log'));
procs.push(apiProc.proc);
const stages: ChildProcess[] = [];
try {
  const port = await printed(apiProc, API_LISTENING, { timeoutMs: 90_000, what: 'the API did not start' });
  const api = `http://127.0.0.1:${port}`;
  // the stages' video links name the API's port
  stages.push(...topology.stages.map((s) => start(['run', s.name], { SONIC_API_PORT: port })));
  const until = Date.now() + 60_000;
  while (
    !(await fetch(`${api}/readyz`).then(
      (r) => r.ok,
      () => false,
    ))
  ) {
    if (Date.now() > until) throw new Error('the API did not become ready');
    await new Promise((r) => setTimeout(r, 300));
  }
  await new Promise((r) => setTimeout(r, 8000)); // let every stage join its group
  await speechWithSilence(join(dir, 'speech.wav'), {
    speech: ['Hello! I am a talking head made by sonic flow.', 'After a short pause, I keep talking.'],
    silenceS: 1,
  });
  await makePortrait(join(dir, 'portrait.jpg'), { width: 640, height: 800 });
  const audio = readFileSync(join(dir, 'speech.wav'));
  const image = readFileSync(join(dir, 'portrait.jpg'));
  const submit = async (): Promise<{ ms: number; id: string }> => {
    const fd = new FormData();
    fd.set('audio', new Blob([audio]), 'speech.wav');
    fd.set('image', new Blob([image]), 'portrait.jpg');
    fd.set('min_resolution', '512');
    const t0 = performance.now();
    const res = await fetch(`${api}/v1/tasks`, { method: 'POST', body: fd });
    const body = (await res.json()) as { task_id: string };
    if (res.status !== 202) throw new Error(`submit answered ${res.status}`);
    return { ms: performance.now() - t0, id: body.task_id };
  };
  const waitDone = async (id: string): Promise<string> => {
    for (;;) {
      const s = (await (await fetch(`${api}/v1/tasks/${id}`)).json()) as { state?: string };
      if (s.state === 'SUCCEEDED' || s.state === 'FAILED') return s.state;
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  // end to end, one task at a time on an idle pipeline
  const e2e: number[] = [];
  for (let i = 0; i < Number(args.e2e); i++) {
    const t0 = performance.now();
    const { id } = await submit();
    if ((await waitDone(id)) !== 'SUCCEEDED') throw new Error(`task ${id} failed`);
    e2e.push((performance.now() - t0) / 1000);
  }
  const measure = async (): Promise<{ p50: number; p99: number; max: number; n: number }> => {
    const ms: number[] = [];
    for (let i = 0; i < Number(args.submits); i++) ms.push((await submit()).ms);
    return { p50: percentile(ms, 50), p99: percentile(ms, 99), max: Math.max(...ms), n: ms.length };
  };
  const underLoad = await measure();
  await Promise.all(stages.map((p) => new Promise((r) => (p.once('exit', r), p.kill('SIGTERM')))));
  await new Promise((r) => setTimeout(r, 2000));
  const alone = await measure();

  const results = {
    sample: { audio_bytes: audio.length, image_bytes: image.length },
    e2e_seconds: summarise(e2e),
    submit_ms_under_load: underLoad,
    submit_ms_api_alone: alone,
  };
  console.log(
    `\nSonic pipeline latency (builtin backend, one process per stage; ${(audio.length / 1024).toFixed(0)} KiB speech + ${(image.length / 1024).toFixed(0)} KiB portrait)\n`,
  );
  console.log(
    table(
      ['measure', 'value'],
      [
        [`submit → SUCCEEDED, s (median (min–max) of ${e2e.length})`, fmt(results.e2e_seconds, 2)],
        [`submit (multipart upload → 202), API alone: p50 / p99, ms (n=${alone.n})`, `${alone.p50.toFixed(1)} / ${alone.p99.toFixed(1)}`],
        [`submit while the stages render on the same 2 cores: p50 / p99, ms (n=${underLoad.n})`, `${underLoad.p50.toFixed(1)} / ${underLoad.p99.toFixed(1)}`],
      ],
    ),
  );
  console.log(`\nsaved ${saveResults('pipeline-latency', results)}`);
} finally {
  procs.forEach((p) => p.kill('SIGTERM'));
  await new Promise((r) => setTimeout(r, 3000));
  try {
    await removeTopology(topology, admin, ctx.registryAdmin);
  } finally {
    await admin.close();
  }
}
process.exit(0);
