/**
 * The GPU path: Sonic loaded for every task (the command backend running Sonic's own demo.py, a
 * new Python process per task) against Sonic loaded once (the worker backend: one long-lived
 * ops/sonic/runner.py), on one "GPU", the same tasks in a row.
 *
 * Sonic is the stand-in (test/fixtures/sonic-standin: Sonic's API, standard library and ffmpeg),
 * told to take `loadS` to load its weights (default 20 s, the order of Sonic's real load: the
 * SVD-xt UNet, Sonic's 6.3 GB UNet, Whisper, YOLO face, RIFE) and `taskS` per render (default 2 s).
 * Both backends are driven directly, as the infer stage drives them (same inputs, same budget),
 * without Kafka: what differs between them is only how Sonic is run.
 *
 * Method: for each backend, create it (the worker starts its runner and loading begins), then
 * render `tasks` tasks one after another. wall = from creating the backend to the last render's
 * end, so the worker's one load is counted. GPU busy = the time the stand-in spent inside
 * `process()` (its log: a `process` line at the start, a `process_end` line when the video is
 * written), as a fraction of wall. tasks/min = tasks / wall. Also the loads (how often Sonic's
 * constructor ran) and the mean time from asking for a render to having it.
 *
 *   node --import tsx bench/gpu.ts [--tasks 20] [--load-s 20] [--task-s 2] [--backends command,worker]
 *   npm run bench:gpu
 */
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { makePortrait, synthSpeech } from '../src/media/samples.js';
import { PARAM_DEFAULTS } from '../src/domain/params.js';
import { CommandBackend } from '../src/stages/backends/command.js';
import type { InferBackend } from '../src/stages/backends/types.js';
import { WorkerBackend } from '../src/stages/backends/worker.js';
import { saveResults, table } from './lib.js';

const ROOT = join(import.meta.dirname, '..');
const STANDIN = join(ROOT, 'test', 'fixtures', 'sonic-standin');
/** Sonic's own CLI, as it is at the pinned commit (its demo.py, which the stand-in's directory holds a copy of). */
const DEMO = join(STANDIN, 'demo.py');

export type GpuBackend = 'command' | 'worker';

export interface GpuBenchOptions {
  tasks: number;
  loadS: number;
  taskS: number;
  backends: GpuBackend[];
}

export interface GpuBenchResult {
  backend: GpuBackend;
  tasks: number;
  loadS: number;
  taskS: number;
  wallS: number;
  tasksPerMinute: number;
  gpuBusyS: number;
  gpuBusyFraction: number;
  loads: number;
  meanRenderS: number;
  notes: string;
}

interface StandinCall {
  call: string;
  at: number;
  pid: number;
}

function build(backend: GpuBackend, budgetS: number): InferBackend {
  const timeouts = { timeoutBaseS: budgetS, timeoutPerAudioS: 0 };
  if (backend === 'command') return new CommandBackend(`python3 ${DEMO} {image} {audio} {output} --seed {seed}`, { cwd: STANDIN, ...timeouts });
  return new WorkerBackend({
    python: 'python3',
    runner: join(ROOT, 'ops', 'sonic', 'runner.py'),
    sonicDir: STANDIN,
    device: 0,
    interpolate: true,
    loadTimeoutMs: (budgetS + 60) * 1000,
    logger: pino({ level: 'silent' }),
    ...timeouts,
  });
}

/** Runs `tasks` renders on one backend; the stand-in's controls are set in this process's environment, which both backends' children inherit. */
async function runOne(backend: GpuBackend, o: GpuBenchOptions, inputs: { image: string; audio: string; durationS: number }): Promise<GpuBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), `sonicflow-gpu-${backend}-`));
  const log = join(dir, 'standin.jsonl');
  process.env.SONIC_STANDIN_LOAD_S = String(o.loadS);
  process.env.SONIC_STANDIN_TASK_S = String(o.taskS);
  process.env.SONIC_STANDIN_LOG = log;
  delete process.env.SONIC_STANDIN_SCRIPT;
  const budgetS = Math.ceil(o.loadS + o.taskS * 3 + 60);
  const started = Date.now();
  const b = build(backend, budgetS);
  const renderMs: number[] = [];
  try {
    for (let i = 0; i < o.tasks; i++) {
      const t0 = Date.now();
      await b.render({
        taskId: `gpu-bench-${backend}-${i}`,
        attempt: 1,
        imagePng: inputs.image,
        audio16k: inputs.audio,
        audioOriginal: inputs.audio,
        durationS: inputs.durationS,
        params: { ...PARAM_DEFAULTS, seed: i },
        outputPath: join(dir, `out-${i}.mp4`),
        workDir: dir,
        signal: AbortSignal.timeout(budgetS * 2000),
        onProgress: () => undefined,
      });
      renderMs.push(Date.now() - t0);
      if (!existsSync(join(dir, `out-${i}.mp4`))) throw new Error(`${backend}: render ${i} left no video`);
    }
  } finally {
    await b.close?.();
  }
  const wallS = (Date.now() - started) / 1000;
  const calls = readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as StandinCall);
  // each process() call's start, paired with the next process_end of the same process
  let busyS = 0;
  const open = new Map<number, number>();
  for (const c of calls) {
    if (c.call === 'process') open.set(c.pid, c.at);
    if (c.call === 'process_end' && open.has(c.pid)) {
      busyS += c.at - open.get(c.pid)!;
      open.delete(c.pid);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return {
    backend,
    tasks: o.tasks,
    loadS: o.loadS,
    taskS: o.taskS,
    wallS,
    tasksPerMinute: o.tasks / (wallS / 60),
    gpuBusyS: busyS,
    gpuBusyFraction: busyS / wallS,
    loads: calls.filter((c) => c.call === 'init').length,
    meanRenderS: renderMs.reduce((a, x) => a + x, 0) / renderMs.length / 1000,
    notes:
      backend === 'command'
        ? "SONIC_INFER_BACKEND=command running Sonic's demo.py: a new Python process per task, Sonic loaded every time"
        : 'SONIC_INFER_BACKEND=worker: one ops/sonic/runner.py, Sonic loaded once (counted in wall)',
  };
}

export async function gpuBench(o: GpuBenchOptions, progress: (s: string) => void = () => undefined): Promise<GpuBenchResult[]> {
  const inputs = mkdtempSync(join(tmpdir(), 'sonicflow-gpu-inputs-'));
  try {
    const audio = join(inputs, 'speech.wav');
    const { durationS } = await synthSpeech('A talking head, rendered on one GPU.', audio);
    const image = join(inputs, 'face.png');
    await makePortrait(image, { width: 320, height: 400 });
    const results: GpuBenchResult[] = [];
    for (const backend of o.backends) {
      progress(`${backend}: ${o.tasks} tasks, load ${o.loadS} s, ${o.taskS} s per task`);
      results.push(await runOne(backend, o, { image, audio, durationS }));
    }
    return results;
  } finally {
    rmSync(inputs, { recursive: true, force: true });
  }
}

export function gpuTable(results: GpuBenchResult[]): string {
  return table(
    ['backend', 'tasks', 'load, s', 'per task, s', 'wall, s', 'tasks/min', 'GPU busy', 'Sonic loads', 'mean render, s'],
    results.map((r) => [
      r.backend,
      String(r.tasks),
      String(r.loadS),
      String(r.taskS),
      r.wallS.toFixed(1),
      r.tasksPerMinute.toFixed(2),
      `${(r.gpuBusyFraction * 100).toFixed(1)} %`,
      String(r.loads),
      r.meanRenderS.toFixed(2),
    ]),
  );
}

if (import.meta.filename === process.argv[1]) {
  const { values: a } = parseArgs({
    options: {
      tasks: { type: 'string', default: '20' },
      'load-s': { type: 'string', default: '20' },
      'task-s': { type: 'string', default: '2' },
      backends: { type: 'string', default: 'command,worker' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (a.help) {
    console.log(`usage: node --import tsx bench/gpu.ts [--tasks 20] [--load-s 20] [--task-s 2] [--backends command,worker]

Sonic loaded per task (command backend, demo.py) against Sonic loaded once (worker backend), on
the stand-in Sonic (test/fixtures/sonic-standin) with the given load and render times; one GPU,
tasks in a row; needs python3 and ffmpeg, not Kafka. Saves bench/results/gpu.json.`);
    process.exit(0);
  }
  const o: GpuBenchOptions = {
    tasks: Number(a.tasks),
    loadS: Number(a['load-s']),
    taskS: Number(a['task-s']),
    backends: a.backends.split(',') as GpuBackend[],
  };
  const results = await gpuBench(o, (s) => console.error(`gpu bench: ${s}`));
  console.log(`GPU path: ${o.tasks} tasks in a row on one GPU, Sonic (stand-in) loading in ${o.loadS} s and rendering in ${o.taskS} s`);
  console.log(gpuTable(results));
  console.log(`saved ${saveResults('gpu', { options: o, results })}`);
}
