import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { SonicError } from '../../src/core/errors.js';
import { PARAM_DEFAULTS } from '../../src/domain/params.js';
import type { InferInput } from '../../src/stages/backends/types.js';
import { WorkerBackend, derivedSeed, type WorkerBackendOptions } from '../../src/stages/backends/worker.js';
import type { RunnerProcess } from '../../src/stages/backends/worker-process.js';
import { infer } from '../../src/stages/infer.js';
import { alive } from '../fixtures/alive.mjs';

const FAKE_RUNNER = join(import.meta.dirname, '..', 'fixtures', 'fake-runner.mjs');
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A directory for the fake runner's state (its "Sonic checkout") and the renders' files. */
function workDir(loadMode?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-worker-test-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  if (loadMode) writeFileSync(join(dir, 'load-mode'), loadMode);
  return dir;
}

function backend(dir: string, over: Partial<WorkerBackendOptions> = {}, Kind: typeof WorkerBackend = WorkerBackend): WorkerBackend {
  const b = new Kind({
    python: process.execPath,
    pythonArgs: [],
    runner: FAKE_RUNNER,
    sonicDir: dir,
    device: 3,
    interpolate: true,
    loadTimeoutMs: 5000,
    timeoutBaseS: 10,
    timeoutPerAudioS: 0,
    logger: pino({ level: 'silent' }),
    backoffMs: 200,
    maxBackoffMs: 400,
    exitGraceMs: 1000,
    ...over,
  });
  cleanups.push(() => b.close());
  return b;
}

/** A backend whose first runner takes 700 ms to die after its SIGKILL (a loader slow to let go of the GPU). */
class SlowToDie extends WorkerBackend {
  private spawned = 0;
  protected override spawnRunner(cmd: string, args: readonly string[]): RunnerProcess {
    const r = super.spawnRunner(cmd, args);
    if (this.spawned++ === 0) {
      const kill = r.kill.bind(r);
      r.kill = () => void setTimeout(kill, 700);
    }
    return r;
  }
}

/** A backend whose runners no SIGKILL ends (a process stuck in the kernel on a wedged GPU). */
class Undying extends WorkerBackend {
  protected override spawnRunner(cmd: string, args: readonly string[]): RunnerProcess {
    const r = super.spawnRunner(cmd, args);
    r.kill = () => undefined;
    return r;
  }
}

function backendOf(Kind: typeof WorkerBackend, dir: string, over: Partial<WorkerBackendOptions>): WorkerBackend {
  return backend(dir, over, Kind);
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** Renders an `ok` task (unseeded): done, with the seed derived from its task id. */
async function renders(b: WorkerBackend, dir: string): Promise<void> {
  const i = input(dir, 'ok');
  await expect(b.render(i)).resolves.toEqual({ seed: derivedSeed(i.taskId) });
}

let n = 0;
function input(dir: string, behaviour: string, over: Partial<InferInput> = {}): InferInput {
  n += 1;
  return {
    taskId: `task-${n}`,
    attempt: 1,
    imagePng: join(dir, `${behaviour}-${n}.png`),
    audio16k: join(dir, 'audio16k.wav'),
    audioOriginal: join(dir, 'speech.flac'),
    durationS: 1,
    params: PARAM_DEFAULTS,
    outputPath: join(dir, `out-${n}.mp4`),
    workDir: dir,
    signal: new AbortController().signal,
    onProgress: () => undefined,
    ...over,
  };
}

const starts = (dir: string): number[] => readFileSync(join(dir, 'starts'), 'utf8').trim().split('\n').map(Number);
const requests = (dir: string): { type: string; [k: string]: unknown }[] =>
  readFileSync(join(dir, 'requests.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string });

async function until(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('worker backend (runner protocol 1)', () => {
  it('renders several tasks through one runner started once, relaying progress and passing params, seed 0 included', async () => {
    const dir = workDir();
    const b = backend(dir, { interpolate: false });
    const seen: number[] = [];
    const params = { ...PARAM_DEFAULTS, seed: 0, crop_to_face: false, inference_steps: 17 };
    // a relative image path reaches the runner absolute
    const first = input(dir, 'ok', { onProgress: (f) => seen.push(f), params });
    const absImage = first.imagePng;
    first.imagePng = relative(process.cwd(), absImage);
    expect(await b.render(first)).toEqual({ seed: 0 });
    expect(seen).toEqual([0.25, 0.5, 1]);
    expect(readFileSync(first.outputPath, 'utf8')).toBe('not really a video');
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(1);
    const [argv] = readFileSync(join(dir, 'argv.jsonl'), 'utf8').trim().split('\n');
    expect(JSON.parse(argv!)).toEqual(['--sonic-dir', dir, '--device', '3', '--no-interpolate']);
    const [render] = requests(dir);
    expect(render).toMatchObject({
      type: 'render',
      id: `${first.taskId}-1`,
      image: absImage,
      output: first.outputPath,
      work_dir: dir,
      params: { min_resolution: PARAM_DEFAULTS.min_resolution, inference_steps: 17, crop: false, seed: 0 },
    });
  });

  it('sends an unseeded task a seed derived from its task id: the same on every attempt, another for another task', async () => {
    const dir = workDir();
    const b = backend(dir);
    const first = input(dir, 'ok', { taskId: '3f2c9a1e-0000-4000-8000-000000000001' });
    expect(first.params.seed).toBeNull();
    await b.render(first);
    await b.render(input(dir, 'ok', { taskId: first.taskId, attempt: 2 }));
    await b.render(input(dir, 'ok', { taskId: '3f2c9a1e-0000-4000-8000-000000000002' }));
    const sent = requests(dir).map((r) => (r.params as { seed: unknown }).seed);
    // sha256 of the task id, first 4 bytes big-endian, top bit cleared
    expect(sent[0]).toBe(derivedSeed(first.taskId));
    expect(sent[0]).toBe(createHash('sha256').update(first.taskId).digest().readUInt32BE(0) & 0x7fffffff);
    expect(sent[1]).toBe(sent[0]);
    expect(sent[2]).not.toBe(sent[0]);
    for (const seed of sent) expect(Number.isInteger(seed) && (seed as number) >= 0 && (seed as number) < 2 ** 31).toBe(true);
    expect(sent).not.toContain(72589);
  });

  it('runs a second render only after the first ends (the runner refuses a second one in flight)', async () => {
    const dir = workDir();
    const b = backend(dir);
    const inputs = [input(dir, 'ok'), input(dir, 'ok'), input(dir, 'ok')];
    const results = await Promise.all(inputs.map((i) => b.render(i)));
    expect(results).toEqual(inputs.map((i) => ({ seed: derivedSeed(i.taskId) })));
    expect(starts(dir)).toHaveLength(1);
  });

  it('fails a render the runner fails without restart with its code, and keeps the runner', async () => {
    const dir = workDir();
    const b = backend(dir);
    await expect(b.render(input(dir, 'noface'))).rejects.toMatchObject({
      code: 'NO_FACE_DETECTED',
      retryable: false,
      message: expect.stringContaining('no face'),
    });
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(1);
  });

  it('starts a new runner after a failed with restart: GPU_OOM, retryable', async () => {
    const dir = workDir();
    const b = backend(dir);
    await expect(b.render(input(dir, 'oom'))).rejects.toMatchObject({ code: 'GPU_OOM', retryable: true });
    await renders(b, dir);
    const pids = starts(dir);
    expect(pids).toHaveLength(2);
    expect(alive(pids[0]!)).toBe(false);
  });

  it('fails a render whose runner crashes with INFERENCE_FAILED naming the exit and stderr, then starts a new runner', async () => {
    const dir = workDir();
    const b = backend(dir);
    const err = await b.render(input(dir, 'crash')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INFERENCE_FAILED', retryable: true });
    expect((err as Error).message).toContain('exited with code 5');
    expect((err as Error).message).toContain('Segmentation fault in the fake kernel');
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
  });

  it('kills a runner past the budget, its process group included: INFERENCE_TIMEOUT, then a new runner', async () => {
    const dir = workDir();
    const b = backend(dir, { timeoutBaseS: 0.5 });
    await b.render(input(dir, 'ok')); // loaded: the budget counts the render only
    const t0 = Date.now();
    await expect(b.render(input(dir, 'hang'))).rejects.toMatchObject({ code: 'INFERENCE_TIMEOUT' });
    expect(Date.now() - t0).toBeLessThan(2000);
    const [old] = starts(dir);
    const grandchild = Number(readFileSync(join(dir, 'grandchild'), 'utf8'));
    await until('the old runner and its child to be gone', () => !alive(old!) && !alive(grandchild));
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
  });

  it('kills the runner when the task is aborted mid-render and rethrows the abort reason', async () => {
    const dir = workDir();
    const b = backend(dir);
    const ac = new AbortController();
    const rendering = b.render(input(dir, 'hang', { signal: ac.signal }));
    await until('the render to reach the runner', () => existsSync(join(dir, 'grandchild')));
    const reason = new Error('partition revoked');
    ac.abort(reason);
    await expect(rendering).rejects.toBe(reason);
    await until('the runner to be gone', () => !alive(starts(dir)[0]!));
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
  });

  it('kills the runner on a SHUTDOWN abort (drain timeout, revocation) and starts none until a render asks', async () => {
    const dir = workDir();
    const b = backend(dir);
    const ac = new AbortController();
    const rendering = b.render(input(dir, 'hang', { signal: ac.signal }));
    await until('the render to reach the runner', () => existsSync(join(dir, 'grandchild')));
    const reason = new SonicError('SHUTDOWN', 'stage is stopping');
    ac.abort(reason);
    await expect(rendering).rejects.toBe(reason);
    await until('the runner to be gone', () => !alive(starts(dir)[0]!));
    // a terminating pod never starts loading the weights again
    await new Promise((r) => setTimeout(r, 500));
    expect(starts(dir)).toHaveLength(1);
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
  });

  it('waits through failed starts with their backoff, then throws MODEL_UNAVAILABLE after three, naming the load failure', async () => {
    const dir = workDir('never');
    const b = backend(dir, { loadTimeoutMs: 300, backoffMs: 200, maxBackoffMs: 400 });
    const t0 = Date.now();
    const err = await b.render(input(dir, 'ok')).catch((e: unknown) => e);
    // starts at 0, 0.5 s and 1.2 s, each given up after 0.3 s
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(err).toMatchObject({ code: 'MODEL_UNAVAILABLE', message: expect.stringContaining('failed to load 3 times in a row') });
    expect((err as Error).message).toContain('did not report ready');
    expect((err as Error).message).toContain('loading'); // its stderr tail
    expect(starts(dir)).toHaveLength(3);
    expect(existsSync(join(dir, 'overlap'))).toBe(false);
    // for good: the stage stops, no further start
    const t1 = Date.now();
    await expect(b.render(input(dir, 'ok'))).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE' });
    expect(Date.now() - t1).toBeLessThan(100);
    expect(starts(dir)).toHaveLength(3);
  });

  it('a render waiting for a runner to load gives up when its task is aborted', async () => {
    const dir = workDir('never');
    const b = backend(dir, { loadTimeoutMs: 5000 });
    const ac = new AbortController();
    const rendering = b.render(input(dir, 'ok', { signal: ac.signal }));
    await until('the runner to start', () => existsSync(join(dir, 'starts')));
    const reason = new Error('partition revoked');
    ac.abort(reason);
    await expect(rendering).rejects.toBe(reason);
  });

  it('names a fatal load failure and its stderr in MODEL_UNAVAILABLE', async () => {
    const dir = workDir('fatal');
    const b = backend(dir, { backoffMs: 50, maxBackoffMs: 50 });
    const err = await b.render(input(dir, 'ok')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'MODEL_UNAVAILABLE', message: expect.stringContaining('cannot import Sonic') });
    expect((err as Error).message).toContain('No module named torch');
    expect(starts(dir)).toHaveLength(3);
  });

  it('a render waits through a fatal load failure and renders once a later start loads', async () => {
    const dir = workDir('fatal-first');
    const b = backend(dir, { backoffMs: 200 });
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
    expect(existsSync(join(dir, 'overlap'))).toBe(false);
  });

  it('throws MODEL_UNAVAILABLE when the interpreter cannot be started', async () => {
    const dir = workDir();
    const b = backend(dir, { python: join(dir, 'no-such-python'), backoffMs: 50, maxBackoffMs: 50 });
    await expect(b.render(input(dir, 'ok'))).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE', message: expect.stringContaining('could not be started') });
  });

  it('refuses a runner of another protocol version with MODEL_UNAVAILABLE at once, starting it no more', async () => {
    const dir = workDir('protocol2');
    const b = backend(dir);
    await expect(b.render(input(dir, 'ok'))).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE', message: expect.stringContaining('protocol 2') });
    await expect(b.render(input(dir, 'ok'))).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE' });
    expect(existsSync(join(dir, 'requests.jsonl'))).toBe(false);
    expect(starts(dir)).toHaveLength(1);
  });

  it('a runner that crashes leaving its pipes to an escaped grandchild fails its render at once, and the next render gets a new runner', async () => {
    const dir = workDir();
    const b = backend(dir);
    const t0 = Date.now();
    const err = await b.render(input(dir, 'escape')).catch((e: unknown) => e);
    const escaped = Number(readFileSync(join(dir, 'escaped'), 'utf8'));
    cleanups.push(() => kill(escaped));
    expect(err).toMatchObject({ code: 'INFERENCE_FAILED', message: expect.stringContaining('exited with code 7 mid-render') });
    // not the render's budget (10 s): the exit, plus a short wait for its pipes
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(alive(escaped)).toBe(true);
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
  });

  it('starts again after a failed start only once the runner that failed is gone (it may be slow to die)', async () => {
    const dir = workDir('never');
    const b = backendOf(SlowToDie, dir, { loadTimeoutMs: 300, backoffMs: 100, maxBackoffMs: 100 });
    await expect(b.render(input(dir, 'ok'))).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE' });
    expect(starts(dir)).toHaveLength(3);
    expect(existsSync(join(dir, 'overlap')) ? readFileSync(join(dir, 'overlap'), 'utf8') : '').toBe('');
  });

  it('a runner that cannot be reaped makes the model unavailable, and no runner starts beside it', async () => {
    const dir = workDir('never');
    const b = backendOf(Undying, dir, { loadTimeoutMs: 300, exitGraceMs: 200, reapTimeoutMs: 300 });
    const t0 = Date.now();
    const err = await b.render(input(dir, 'ok')).catch((e: unknown) => e);
    cleanups.push(() => starts(dir).forEach((pid) => kill(-pid)));
    expect(err).toMatchObject({ code: 'MODEL_UNAVAILABLE', message: expect.stringContaining('cannot be reaped') });
    // the load timeout, then the exit grace and the reap timeout
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(starts(dir)).toHaveLength(1);
    // close() does not wait for it for ever either
    const t1 = Date.now();
    await b.close();
    expect(Date.now() - t1).toBeLessThan(1000);
  });

  it('a render refused because the runner is shutting down is retryable (INFERENCE_FAILED); a malformed request is a bug (INTERNAL)', async () => {
    const dir = workDir();
    const b = backend(dir);
    await expect(b.render(input(dir, 'refused-stopping'))).rejects.toMatchObject({ code: 'INFERENCE_FAILED', retryable: true });
    await expect(b.render(input(dir, 'refused-bad'))).rejects.toMatchObject({ code: 'INTERNAL', retryable: false, message: expect.stringContaining('.mp4') });
    await renders(b, dir);
    expect(starts(dir)).toHaveLength(2);
  });

  it('refuses at construction a scratch root the runner would refuse in every path: CONFIG_INVALID, no runner started', () => {
    const dir = workDir();
    for (const root of [join(dir, 'scr$atch'), join(dir, 'a"b'), join(dir, 'x\\y'), join(dir, 'videos.mp4', 'scratch')]) {
      expect(() => backend(dir, { scratchRoot: root }), root).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringContaining('SONIC_SCRATCH_DIR') }),
      );
    }
    expect(existsSync(join(dir, 'starts'))).toBe(false);
    expect(() => backend(dir, { scratchRoot: join(dir, 'plain scratch-dir_1') })).not.toThrow();
  });

  it('fails a render the runner reports done without a video', async () => {
    const dir = workDir();
    const b = backend(dir);
    await expect(b.render(input(dir, 'empty'))).rejects.toMatchObject({ code: 'INFERENCE_FAILED', message: expect.stringContaining('wrote no video') });
  });

  it('close() shuts the runner down, and SIGKILLs one that ignores shutdown after the grace', async () => {
    const dir = workDir();
    const b = backend(dir);
    await b.render(input(dir, 'ok'));
    await b.close();
    const [pid] = starts(dir);
    expect(readFileSync(join(dir, `exit-${pid}`), 'utf8')).toBe('shutdown');
    expect(alive(pid!)).toBe(false);
    await expect(b.render(input(dir, 'ok'))).rejects.toMatchObject({ code: 'SHUTDOWN' });

    const deafDir = workDir('deaf');
    const deaf = backend(deafDir, { exitGraceMs: 300 });
    await deaf.render(input(deafDir, 'ok'));
    const t0 = Date.now();
    await deaf.close();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(alive(starts(deafDir)[0]!)).toBe(false);
    expect(existsSync(join(deafDir, `exit-${starts(deafDir)[0]!}`))).toBe(false);
  });
});

describe('infer stage with SONIC_INFER_BACKEND=worker', () => {
  it('starts the runner when its handler is built, before any task, and stops it on close()', async () => {
    const dir = workDir();
    // the interpreter is called as `<python> -u <runner> ...`: a wrapper drops the Python flag for node
    const python = join(dir, 'python');
    writeFileSync(python, `#!/bin/sh\n[ "$1" = "-u" ] && shift\nexec "${process.execPath}" "$@"\n`, { mode: 0o755 });
    const config = loadConfig({
      SONIC_INFER_BACKEND: 'worker',
      SONIC_WORKER_PYTHON: python,
      SONIC_WORKER_RUNNER: FAKE_RUNNER,
      SONIC_WORKER_SONIC_DIR: dir,
      SONIC_WORKER_DEVICE: '2',
      SONIC_SCRATCH_DIR: join(dir, 'scratch'),
    });
    const handler = infer.create!({ config, blob: {} as never, logger: pino({ level: 'silent' }) });
    await until('the runner to start', () => existsSync(join(dir, 'starts')));
    const [pid] = starts(dir);
    const [argv] = readFileSync(join(dir, 'argv.jsonl'), 'utf8').trim().split('\n');
    expect(JSON.parse(argv!)).toEqual(['--sonic-dir', dir, '--device', '2']);
    // once it is ready, close() asks it to shut down (before, it is killed)
    await until('the runner to be ready', () => existsSync(join(dir, `ready-${pid}`)));
    await new Promise((r) => setTimeout(r, 50));
    await handler.close!();
    expect(readFileSync(join(dir, `exit-${pid}`), 'utf8')).toBe('shutdown');
    expect(alive(pid!)).toBe(false);
  });
});
