/**
 * `sonicflow demo`: the whole system on one machine. Deploys the topology, starts the API and
 * every stage as separate processes, makes a sample locally (speech from espeak-ng, a generated
 * portrait — nothing downloaded), submits it, shows progress, and prints the MP4's path and its
 * ffprobe summary. Ctrl-C (or the end of the demo) stops every process it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { publicApiUrl } from '../core/config.js';
import { SonicError } from '../core/errors.js';
import { TopicAdmin } from '../kafka/admin.js';
import { probe } from '../media/probe.js';
import { makePortrait, speechWithSilence } from '../media/samples.js';
import type { Context } from '../app/context.js';
import type { Topology } from '../runtime/topology.js';
import { applyDeploy, formatPlan, planDeploy, storePartitionedTopics } from './deploy.js';
import { describeFace, downloadVideo, submitTask, waitForTask } from './submit.js';

const BIN = fileURLToPath(new URL('../../bin/sonicflow.mjs', import.meta.url));

/** The stages the demo starts, one process each: every stage of the topology, in its order. */
export function demoStages(topology: Topology): string[] {
  return topology.stages.map((s) => s.name);
}

interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
  ready: Promise<void>;
  /** The port of its metrics endpoint, once its start-up log line has named it (`sonicflow run`). */
  metricsPort?: number;
}

/** The port a stage process's metrics endpoint listens on, from its start-up log line. */
export function metricsPortOf(p: Pick<Proc, 'name' | 'metricsPort'>): number {
  if (p.metricsPort === undefined) throw new SonicError('INTERNAL', `${p.name} did not say where its metrics endpoint listens`);
  return p.metricsPort;
}

export async function runDemo(ctx: Context, opts: { keep: boolean; out: (s: string) => void }): Promise<number> {
  const { out } = opts;
  const dir = join(ctx.config.dataDir, 'demo');
  mkdirSync(dir, { recursive: true });
  const topology = await ctx.topology();
  const stages = demoStages(topology);
  out(`== deploying topology ${topology.name} (prefix ${topology.prefix})\n`);
  const admin = await new TopicAdmin(ctx.kafka).connect();
  try {
    const plan = await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin, storePartitionedTopics(topology));
    out(formatPlan(plan));
    await applyDeploy(plan, admin, ctx.registryAdmin);
  } finally {
    await admin.close();
  }

  // the demo is local: auth is disabled explicitly here, never by default
  // children inherit this process's environment (their configuration), plus the demo's choices
  const env = { ...process.env, SONIC_API_AUTH: 'disabled', SONIC_LOG_LEVEL: ctx.config.logLevel };
  const procs: Proc[] = [];
  const start = (name: string, args: string[], extra: Record<string, string>, readyLine: RegExp): Proc => {
    const log = join(dir, `${name}.log`);
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
    const file = createWriteStream(log);
    let seen = '';
    const p: Proc = { name, child, log, ready: Promise.resolve() };
    p.ready = new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        file.write(d);
        seen = (seen + d.toString()).slice(-20_000);
        p.metricsPort ??= Number(/"metrics_port":(\d+)/.exec(seen)?.[1] ?? NaN) || undefined;
        if (readyLine.test(seen)) resolve();
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.on('exit', (code) => reject(new SonicError('INTERNAL', `${name} exited with ${code} during start-up; see ${log}:\n${seen.slice(-1500)}`)));
    });
    p.ready.catch(() => undefined);
    procs.push(p);
    return p;
  };
  let stopping: Promise<void> | undefined;
  const stopAll = (): Promise<void> =>
    (stopping ??= (async () => {
      out('\n== stopping every process the demo started\n');
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((resolve) => {
              if (p.child.exitCode !== null) return resolve();
              const t = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
              p.child.once('exit', () => (clearTimeout(t), resolve()));
              p.child.kill('SIGTERM');
            }),
        ),
      );
    })());
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  process.once('SIGTERM', () => void stopAll().then(() => process.exit(143)));

  try {
    out(`== starting ${stages.length} stage processes and the API (logs in ${dir})\n`);
    // the stages first: each picks a free port for its /metrics, which the API's console overview
    // then reads (SONIC_CONSOLE_METRICS_URLS), so `--keep` shows records/s, handler times and in flight
    const staged = stages.map((s) => start(s, ['run', s], { SONIC_METRICS_PORT: '0' }, /"msg":"partitions assigned"/));
    await Promise.all(staged.map((p) => p.ready));
    const metricsUrls = staged.map((p) => `http://127.0.0.1:${metricsPortOf(p)}/metrics`);
    const api = start('api', ['api'], { SONIC_CONSOLE_METRICS_URLS: metricsUrls.join(',') }, /API listening on/);
    await api.ready;
    const apiUrl = publicApiUrl(ctx.config);
    out(
      `   API ${apiUrl} (OpenAPI at ${apiUrl}/docs); stages: ${procs
        .filter((p) => p.name !== 'api')
        .map((p) => `${p.name} (pid ${p.child.pid})`)
        .join(', ')}\n`,
    );

    out('== making a sample: speech from espeak-ng (with a pause) and a generated portrait\n');
    const audio = join(dir, 'speech.wav');
    const image = join(dir, 'portrait.jpg');
    await speechWithSilence(audio, {
      speech: [
        'Hello! I am a talking head made by sonic flow, from one picture and this recording.',
        'After a short pause, I keep talking, and my face keeps moving.',
      ],
      silenceS: 1.5,
    });
    await makePortrait(image, { width: 640, height: 800 });

    out('== submitting\n');
    const t0 = Date.now();
    const taskId = await submitTask({ api: apiUrl, audio, image, params: { min_resolution: '512' }, wait: true, progress: process.stderr });
    const submitted = Date.now() - t0;
    out(`   task ${taskId} accepted in ${submitted} ms\n`);
    const status = await waitForTask({ api: apiUrl, progress: process.stderr }, taskId, 600_000);
    const total = Date.now() - t0;
    if (status.state !== 'SUCCEEDED') {
      out(`task ${taskId} ${status.state}: ${status.error?.code ?? ''} ${status.error?.message ?? ''}\n`);
      return 1;
    }
    if (status.face) out(`   ${describeFace(status.face)}\n`);
    const mp4 = join(dir, 'sonicflow-demo.mp4');
    await downloadVideo({ api: apiUrl }, status, mp4);
    const info = await probe(mp4);
    out(`== done in ${(total / 1000).toFixed(1)} s from submit to SUCCEEDED\n`);
    out(`MP4: ${mp4}\n`);
    out(
      `ffprobe: ${info.formatName}, ${info.durationS.toFixed(2)} s; video ${info.video?.codec} ${info.video?.width}x${info.video?.height} ${info.video?.pixFmt} ${info.video?.fps} fps; audio ${info.audio?.codec} ${info.audio?.sampleRate} Hz ${info.audio?.channels} ch\n`,
    );
    out(
      `(the builtin backend is a CPU preview renderer that moves the jaw and lips at the face preprocess found; it is not Sonic: see docs/inference.md to use Sonic on a GPU)\n`,
    );
    if (opts.keep) {
      out(`\nConsole: ${apiUrl}/console/tasks/${taskId} (the demo task's timeline and video; auth is disabled in the demo)\n`);
      out('The pipeline keeps running; Ctrl-C stops every process the demo started.\n');
      await new Promise<void>(() => undefined);
    }
    return 0;
  } finally {
    await stopAll();
  }
}
