/**
 * The long-lived Sonic runner (ops/sonic/runner.py) over its stdio protocol, and the Cog predictor
 * (ops/sonic/predict.py) behind a Cog-compatible shim, both on the Sonic stand-in
 * (test/fixtures/sonic-standin), which logs every call with the config values it really used.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CogBackend } from '../../src/stages/backends/cog.js';
import { classifyModelFailure } from '../../src/stages/backends/failures.js';
import { PARAM_DEFAULTS } from '../../src/domain/params.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const RUNNER = join(ROOT, 'ops/sonic/runner.py');
const STANDIN = join(ROOT, 'test/fixtures/sonic-standin');
const AUDIO_S = 1.2;
const TYPES = new Set(['ready', 'progress', 'done', 'failed', 'fatal']);

type Msg = { type: string; id?: string | null; [k: string]: unknown };
interface LogLine {
  call: string;
  pid: number;
  [k: string]: unknown;
}

let dir: string;
let face: string;
let noface: string;
let audio: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sonic-runner-'));
  face = join(dir, 'face.png');
  noface = join(dir, 'noface.png');
  audio = join(dir, 'speech.wav');
  await run('ffmpeg', ['-loglevel', 'error', '-f', 'lavfi', '-i', 'color=c=0x8866aa:s=320x240', '-frames:v', '1', face]);
  await copyFile(face, noface);
  await run('ffmpeg', ['-loglevel', 'error', '-f', 'lavfi', '-i', `sine=f=220:d=${AUDIO_S}`, '-ar', '16000', '-ac', '1', audio]);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** A runner process, with its protocol lines and anything else it wrote on stdout. */
class Runner {
  readonly msgs: Msg[] = [];
  readonly noise: string[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  readonly log: string;
  readonly script: string;
  private buf = '';
  private waiters: (() => void)[] = [];

  constructor(
    readonly proc: ChildProcessWithoutNullStreams,
    files: { log: string; script: string },
  ) {
    this.log = files.log;
    this.script = files.script;
    proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      this.buf += chunk;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        try {
          const m = JSON.parse(line) as Msg;
          if (TYPES.has(m.type)) this.msgs.push(m);
          else this.noise.push(line);
        } catch {
          this.noise.push(line);
        }
        this.waiters.splice(0).forEach((w) => w());
      }
    });
    proc.stderr.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    this.exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
    this.exited.then(() => this.waiters.splice(0).forEach((w) => w()));
  }

  /** The first message (from index `from`) matching `pred`, waiting up to `ms`. */
  async next(pred: (m: Msg) => boolean, ms = 10_000, from = 0): Promise<Msg> {
    const until = Date.now() + ms;
    for (;;) {
      const found = this.msgs.slice(from).find(pred);
      if (found) return found;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null || Date.now() > until)
        throw new Error(`no such message; got ${JSON.stringify(this.msgs)}; stderr: ${this.stderr.slice(-500)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  send(msg: unknown): void {
    this.proc.stdin.write(typeof msg === 'string' ? msg : `${JSON.stringify(msg)}\n`);
  }

  /** Sends a render and waits for its done or failed. */
  async render(over: { id?: string; image?: string; params?: Record<string, unknown> } = {}, ms = 15_000): Promise<Msg> {
    const req = request(over);
    const from = this.msgs.length;
    this.send(req);
    return this.next((m) => (m.type === 'done' || m.type === 'failed') && m.id === req.id, ms, from);
  }

  async calls(call?: string): Promise<LogLine[]> {
    const text = await readFile(this.log, 'utf8').catch(() => '');
    const all = text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as LogLine);
    return call ? all.filter((l) => l.call === call) : all;
  }

  async exitWithin(ms: number): Promise<{ code: number | null; signal: string | null }> {
    return Promise.race([this.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`still running after ${ms} ms`)), ms))]);
  }
}

const started: Runner[] = [];

async function startRunner(env: Record<string, string> = {}, script: string[] = []): Promise<Runner> {
  const k = ++n;
  const files = { log: join(dir, `log-${k}.jsonl`), script: join(dir, `script-${k}.json`) };
  await writeFile(files.script, JSON.stringify(script));
  const proc = spawn('python3', ['-u', RUNNER, '--sonic-dir', STANDIN, '--device', '0'], {
    detached: true,
    env: {
      ...process.env,
      PYTHONDONTWRITEBYTECODE: '1',
      SONIC_STANDIN_LOG: files.log,
      SONIC_STANDIN_SCRIPT: files.script,
      SONIC_STANDIN_TASK_S: '0.1',
      ...env,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const r = new Runner(proc, files);
  started.push(r);
  return r;
}

afterEach(() => {
  for (const r of started.splice(0)) {
    if (r.proc.exitCode === null && r.proc.signalCode === null && r.proc.pid) {
      try {
        process.kill(-r.proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

function request(over: { id?: string; image?: string; params?: Record<string, unknown> } = {}) {
  const id = over.id ?? `task-${++n}-1`;
  return {
    type: 'render',
    id,
    image: over.image ?? face,
    audio,
    output: join(dir, `${id}.mp4`),
    work_dir: join(dir, `work-${id}`),
    params: { min_resolution: 128, inference_steps: 4, dynamic_scale: 1.0, expand_ratio: 0.5, crop: true, seed: null, ...over.params },
  };
}

async function probe(path: string): Promise<{ width: number; height: number; fps: string; duration: number }> {
  const { stdout } = await run('ffprobe', [
    '-v',
    'error',
    '-select_streams',
    'v:0',
    '-show_entries',
    'stream=width,height,r_frame_rate:format=duration',
    '-of',
    'json',
    path,
  ]);
  const j = JSON.parse(stdout) as { streams: { width: number; height: number; r_frame_rate: string }[]; format: { duration: string } };
  return { width: j.streams[0]!.width, height: j.streams[0]!.height, fps: j.streams[0]!.r_frame_rate, duration: Number(j.format.duration) };
}

describe('sonic runner (stdio protocol 1, on the stand-in)', () => {
  it('loads the weights once and renders ten tasks in the same process, with nothing but JSON lines on stdout', async () => {
    const r = await startRunner();
    const ready = await r.next((m) => m.type === 'ready');
    expect(ready).toMatchObject({ protocol: 1, device: 0, sonic: 'standin', pid: r.proc.pid });
    for (let i = 0; i < 10; i++) expect(await r.render()).toMatchObject({ type: 'done' });
    const inits = await r.calls('init');
    const processes = await r.calls('process');
    expect(inits).toHaveLength(1);
    expect(processes).toHaveLength(10);
    expect(new Set(processes.map((p) => p.pid))).toEqual(new Set([r.proc.pid]));
    // Sonic's os.system(ffmpeg) inherits fd 0: it must not be the protocol pipe, or ffmpeg eats requests
    expect(processes.filter((p) => p.stdin_kind === 'socket' || p.stdin_kind === 'fifo')).toEqual([]);
    expect(r.msgs.filter((m) => m.type === 'done')).toHaveLength(10);
    // the stand-in prints to stdout (print and raw fd 1): it must land on stderr
    expect(r.stderr).toContain('init done');
    expect(r.stderr).toContain('raw fd 1');
    expect(r.noise).toEqual([]);
    expect(r.msgs[0]!.type).toBe('ready');
  });

  it('passes seed 0 to Sonic as 0, and a seed or step count of one task does not leak into the next', async () => {
    const r = await startRunner();
    const a = await r.render({ params: { seed: 1234, inference_steps: 7, dynamic_scale: 1.7 } });
    const b = await r.render({ params: { seed: null, inference_steps: 3, dynamic_scale: 0.8 } });
    const c = await r.render({ params: { seed: 0 } });
    const used = (await r.calls('process')).map((p) => p.used as Record<string, unknown>);
    expect(used[0]).toMatchObject({ seed: 1234, num_inference_steps: 7, motion_bucket_scale: 1.7 });
    expect(used[1]).toMatchObject({ seed: 72589, num_inference_steps: 3, motion_bucket_scale: 0.8 });
    expect(used[2]).toMatchObject({ seed: 0 });
    expect([a.seed, b.seed, c.seed]).toEqual([1234, 72589, 0]);
  });

  it('gives every parameter to preprocess/crop/process and writes a video as long as the speech, reporting progress', async () => {
    const r = await startRunner();
    const req = request({ params: { min_resolution: 192, inference_steps: 5, dynamic_scale: 1.3, expand_ratio: 0.3, crop: true } });
    r.send(req);
    const done = await r.next((m) => m.id === req.id && m.type === 'done');
    const progress = r.msgs.filter((m) => m.type === 'progress' && m.id === req.id).map((m) => m.fraction);
    expect(progress).toEqual([0.2, 0.4, 0.6, 0.8, 1]);
    expect(r.msgs.indexOf(done)).toBeGreaterThan(r.msgs.findIndex((m) => m.type === 'progress'));
    const [pre] = await r.calls('preprocess');
    const [crop] = await r.calls('crop_image');
    const [proc] = await r.calls('process');
    expect(pre).toMatchObject({ image_path: face, expand_ratio: 0.3 });
    expect(crop).toMatchObject({ input_image_path: face });
    expect(proc).toMatchObject({
      image_path: crop!.output_image_path,
      audio_path: audio,
      output_path: req.output,
      min_resolution: 192,
      inference_steps: 5,
      dynamic_scale: 1.3,
    });
    expect((await stat(String(crop!.output_image_path))).size).toBeGreaterThan(0);
    const v = await probe(req.output);
    expect({ width: v.width, height: v.height, fps: v.fps }).toEqual({ width: 192, height: 192, fps: '25/1' });
    expect(Math.abs(v.duration - AUDIO_S)).toBeLessThan(0.1);

    // crop off: no crop_image call, the original image is rendered (320x240 scaled to a 192 short side)
    const plain = request({ params: { min_resolution: 192, crop: false } });
    r.send(plain);
    await r.next((m) => m.id === plain.id && m.type === 'done');
    expect(await r.calls('crop_image')).toHaveLength(1);
    expect((await r.calls('process'))[1]).toMatchObject({ image_path: face });
    expect(await probe(plain.output)).toMatchObject({ width: 256, height: 192 });
  });

  it('answers a faceless image with NO_FACE_DETECTED and keeps serving', async () => {
    const r = await startRunner({}, ['ok', 'noface']);
    // the stand-in's preprocess() fails as Sonic's does: UnboundLocalError on bbox_s
    expect(await r.render({ image: noface })).toMatchObject({
      type: 'failed',
      code: 'NO_FACE_DETECTED',
      restart: false,
      message: expect.stringMatching(/UnboundLocalError: .*'bbox_s'/),
    });
    expect(await r.calls('preprocess')).toHaveLength(1);
    expect(await r.calls('process')).toHaveLength(0); // preprocess found no face: Sonic's process() is spared
    expect(await r.render()).toMatchObject({ type: 'done' });
    // process() itself finding no face returns -1 (no file)
    expect(await r.render()).toMatchObject({ type: 'failed', code: 'NO_FACE_DETECTED', restart: false });
    expect(await r.render()).toMatchObject({ type: 'done' });
    expect(r.proc.exitCode).toBeNull();
  });

  it.each([
    ['oom', 'GPU_OOM'],
    ['cuda', 'CUDA_ERROR'],
  ])('answers "%s" with %s restart:true, then exits 3', async (behaviour, code) => {
    const r = await startRunner({}, [behaviour]);
    expect(await r.render()).toMatchObject({ type: 'failed', code, restart: true });
    expect(await r.exitWithin(3000)).toEqual({ code: 3, signal: null });
  });

  it('answers "invalid configuration argument" (Sonic at min_resolution 1024) with INFERENCE_FAILED restart:true, not as a CUDA fault', async () => {
    const r = await startRunner({}, ['cudaconfig']);
    const failed = await r.render();
    expect(failed).toMatchObject({
      type: 'failed',
      code: 'INFERENCE_FAILED',
      restart: true,
      message: expect.stringContaining('invalid configuration argument'),
    });
    // the cog backend classifies predict.py's message text: it must not read as a CUDA error either
    expect(classifyModelFailure(String(failed.message), 'Cog prediction failed').code).toBe('INFERENCE_FAILED');
    expect(await r.exitWithin(3000)).toEqual({ code: 3, signal: null });
  });

  it('fails a render whose video Sonic did not write (its ffmpeg exit code is ignored) with INFERENCE_FAILED', async () => {
    const r = await startRunner({}, ['nomux']);
    expect(await r.render()).toMatchObject({ type: 'failed', code: 'INFERENCE_FAILED', restart: false, message: expect.stringContaining('wrote no video') });
    expect(await r.render()).toMatchObject({ type: 'done' });
  });

  it("refuses paths that would break or inject into Sonic's double-quoted ffmpeg line, running nothing", async () => {
    const marker = join(dir, 'injected');
    const good = request();
    const cases: [string, Record<string, string>][] = [
      ['a " in the work dir', { work_dir: join(dir, 'work"dir') }],
      ['$(...) in the output', { output: join(dir, `out$(touch ${marker}).mp4`) }],
      ['a backtick in the audio', { audio: join(dir, `speech\`touch ${marker}\`.wav`) }],
      ['$(...) in the image', { image: join(dir, `face$(touch ${marker}).png`) }],
      ['a newline in the output', { output: join(dir, 'a\nb.mp4') }],
      ['.mp4 twice in the output', { output: join(dir, 'clip.mp4', 'out.mp4') }],
    ];
    const r = await startRunner();
    for (const [what, over] of cases) {
      const req = { ...request(), ...over };
      const from = r.msgs.length;
      r.send(req);
      const reply = await r.next((m) => m.id === req.id && (m.type === 'failed' || m.type === 'done'), 10_000, from);
      expect(reply, what).toMatchObject({ type: 'failed', code: 'INPUT_INVALID', restart: false });
    }
    r.send(good);
    expect(await r.next((m) => m.id === good.id && m.type !== 'progress')).toMatchObject({ type: 'done' });
    // only the good request reached Sonic, and no shell ran the injected command
    expect((await r.calls('preprocess')).map((c) => c.image_path)).toEqual([face]);
    expect(await r.calls('process')).toHaveLength(1);
    await expect(stat(marker)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('the stand-in muxes as Sonic does: an output path holding $(...), given to it directly, runs the command', async () => {
    // the refusal above is only worth something if the path really injects past the runner
    const marker = join(dir, 'injected-directly');
    const output = join(dir, `direct$(touch ${marker}).mp4`);
    const code = [
      'import sys',
      `sys.path.insert(0, ${JSON.stringify(STANDIN)})`,
      'from sonic import Sonic',
      `Sonic(0).process(${JSON.stringify(face)}, ${JSON.stringify(audio)}, ${JSON.stringify(output)}, min_resolution=128, inference_steps=1)`,
    ].join('\n');
    await run('python3', ['-c', code], { cwd: dir, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', SONIC_STANDIN_TASK_S: '0' } });
    expect((await stat(marker)).isFile()).toBe(true);
  });

  it('dies without a reply when Sonic crashes the process', async () => {
    const r = await startRunner({}, ['crash']);
    await r.next((m) => m.type === 'ready');
    r.send(request());
    expect((await r.exitWithin(5000)).code).toBe(139);
    expect(r.msgs.filter((m) => m.type === 'done' || m.type === 'failed')).toEqual([]);
  });

  it('refuses a malformed line and a second concurrent render with INPUT_INVALID, and finishes the first', async () => {
    const r = await startRunner({ SONIC_STANDIN_TASK_S: '1' });
    await r.next((m) => m.type === 'ready');
    r.send('{not json\n');
    expect(await r.next((m) => m.type === 'failed')).toMatchObject({ id: null, code: 'INPUT_INVALID' });
    r.send({ ...request({ id: 'bad-1' }), output: 'relative.mp4' });
    expect(await r.next((m) => m.id === 'bad-1')).toMatchObject({ type: 'failed', code: 'INPUT_INVALID', restart: false });
    const first = request();
    const second = request();
    r.send(first);
    await r.next((m) => m.type === 'progress' && m.id === first.id);
    r.send(second);
    expect(await r.next((m) => m.id === second.id)).toMatchObject({ type: 'failed', code: 'INPUT_INVALID' });
    expect(await r.next((m) => m.id === first.id && m.type !== 'progress')).toMatchObject({ type: 'done' });
  });

  it('on shutdown (or SIGTERM) finishes the render in progress, then exits 0; ignores SIGINT', async () => {
    for (const how of ['shutdown', 'SIGTERM'] as const) {
      const r = await startRunner({ SONIC_STANDIN_TASK_S: '1.5' });
      const req = request();
      await r.next((m) => m.type === 'ready');
      r.send(req);
      await r.next((m) => m.type === 'progress');
      r.proc.kill('SIGINT');
      if (how === 'shutdown') r.send({ type: 'shutdown' });
      else r.proc.kill('SIGTERM');
      expect(await r.exitWithin(8000)).toEqual({ code: 0, signal: null });
      expect(r.msgs.at(-1)).toMatchObject({ type: 'done', id: req.id });
      expect((await stat(req.output)).size).toBeGreaterThan(0);
    }
  });

  it.each(['shutdown', 'SIGTERM'] as const)('on %s while Sonic loads, exits 0 at once without a ready line', async (how) => {
    const r = await startRunner({ SONIC_STANDIN_LOAD_S: '3' });
    for (let i = 0; i < 100 && (await r.calls('init')).length === 0; i++) await new Promise((res) => setTimeout(res, 30));
    expect(await r.calls('init')).toHaveLength(1); // the stand-in's constructor is sleeping ("loading weights")
    const t0 = Date.now();
    if (how === 'shutdown') {
      // a render line ahead of it must not hold the shutdown back until the load ends
      r.send(request());
      r.send({ type: 'shutdown' });
    } else r.proc.kill('SIGTERM');
    expect(await r.exitWithin(4000)).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(r.msgs).toEqual([]);
    expect(await r.calls('preprocess')).toEqual([]);
  });

  it('answers a line sent while Sonic loads only after ready', async () => {
    const r = await startRunner({ SONIC_STANDIN_LOAD_S: '0.5' });
    r.send('{not json\n');
    const failed = await r.next((m) => m.type === 'failed');
    expect(failed).toMatchObject({ id: null, code: 'INPUT_INVALID' });
    expect(r.msgs.map((m) => m.type)).toEqual(['ready', 'failed']);
  });

  it('exits at once when its stdin closes, even in the middle of a render', async () => {
    const r = await startRunner({}, ['hang']);
    await r.next((m) => m.type === 'ready');
    r.send(request());
    for (let i = 0; i < 100 && (await r.calls('process')).length === 0; i++) await new Promise((res) => setTimeout(res, 50));
    expect(await r.calls('process')).toHaveLength(1);
    r.proc.stdin.end();
    expect(await r.exitWithin(1500)).toEqual({ code: 0, signal: null });
  });

  it('reports a load failure as fatal and exits 2', async () => {
    const r = await startRunner({ SONIC_STANDIN_LOAD_FAIL: 'checkpoints/Sonic/unet.pth not found' });
    expect(await r.next((m) => m.type === 'fatal')).toMatchObject({ message: expect.stringContaining('unet.pth') });
    expect(await r.exitWithin(3000)).toEqual({ code: 2, signal: null });
  });
});

describe('Cog predictor (ops/sonic/predict.py) behind the Cog shim', () => {
  it('renders a task for the cog backend, fails a faceless one as NO_FACE_DETECTED, serves on after an OOM and reports UNHEALTHY after a CUDA error', async () => {
    const script = join(dir, 'cog-script.json');
    await writeFile(script, '[]');
    const shim = new Runner(
      spawn('python3', ['-u', join(ROOT, 'test/fixtures/cog_shim/server.py'), '--predictor', `${join(ROOT, 'ops/sonic/predict.py')}:Predictor`], {
        detached: true,
        env: {
          ...process.env,
          PYTHONDONTWRITEBYTECODE: '1',
          PYTHONPATH: join(ROOT, 'test/fixtures/cog_shim'),
          SONIC_DIR: STANDIN,
          SONIC_STANDIN_SCRIPT: script,
          SONIC_STANDIN_LOG: join(dir, 'cog-log.jsonl'),
          SONIC_STANDIN_TASK_S: '0.1',
        },
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
      { log: join(dir, 'cog-log.jsonl'), script },
    );
    started.push(shim);
    for (let i = 0; i < 100 && !shim.noise.some((l) => l.startsWith('COG_SHIM_PORT=')); i++) await new Promise((res) => setTimeout(res, 50));
    const port = shim.noise.find((l) => l.startsWith('COG_SHIM_PORT='))?.split('=')[1];
    expect(port, shim.stderr).toBeDefined();
    const base = `http://127.0.0.1:${port}`;
    const uri = async (p: string, type: string) => `data:${type};base64,${(await readFile(p)).toString('base64')}`;
    const input = {
      image: await uri(face, 'image/png'),
      audio: await uri(audio, 'audio/wav'),
      min_resolution: 256,
      inference_steps: 3,
      dynamic_scale: 1,
      expand_ratio: 0.5,
      seed: 0,
    };
    const put = async (id: string) => {
      const res = await fetch(`${base}/predictions/${id}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ id, input }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { status: string; output?: string; error?: string };
    };

    const ok = await put('p-1');
    expect(ok.status).toBe('succeeded');
    expect(ok.output).toMatch(/^data:video\/mp4;base64,/);
    const mp4 = join(dir, 'cog.mp4');
    await writeFile(mp4, Buffer.from(ok.output!.slice(ok.output!.indexOf(',') + 1), 'base64'));
    expect(Math.abs((await probe(mp4)).duration - AUDIO_S)).toBeLessThan(0.1);

    // the inputs the cog backend really sends are the ones predict() takes
    const outputPath = join(dir, 'cog-backend.mp4');
    const backend = new CogBackend(base, { timeoutBaseS: 30, timeoutPerAudioS: 0 });
    const common = {
      attempt: 1,
      imagePng: face,
      audio16k: audio,
      audioOriginal: audio,
      durationS: AUDIO_S,
      workDir: dir,
      signal: new AbortController().signal,
      onProgress: () => undefined,
    };
    await backend.render({ ...common, taskId: 'cog-1', params: { ...PARAM_DEFAULTS, min_resolution: 256, inference_steps: 3 }, outputPath });
    expect((await probe(outputPath)).width).toBe(256);

    await writeFile(script, JSON.stringify(['noface']));
    const failed = await put('p-2');
    expect(failed.status).toBe('failed');
    expect(classifyModelFailure(failed.error ?? '', 'Cog prediction failed').code).toBe('NO_FACE_DETECTED');
    await writeFile(script, JSON.stringify(['noface']));
    await expect(backend.render({ ...common, taskId: 'cog-2', params: PARAM_DEFAULTS, outputPath })).rejects.toMatchObject({ code: 'NO_FACE_DETECTED' });

    // Cog does not restart a predictor process that dies, so the predictor never exits: after an
    // OOM it frees memory and keeps serving; after a CUDA error it refuses work and reports
    // itself UNHEALTHY on /health-check, for the liveness probe to restart the container
    const health = async () => ((await (await fetch(`${base}/health-check`)).json()) as { status: string }).status;
    await writeFile(script, JSON.stringify(['oom']));
    const oom = await put('p-3');
    expect(classifyModelFailure(oom.error ?? '', 'Cog prediction failed').code).toBe('GPU_OOM');
    expect(await health()).toBe('READY');
    expect(await put('p-4')).toMatchObject({ status: 'succeeded' });
    await writeFile(script, JSON.stringify(['cuda']));
    const cuda = await put('p-5');
    expect(classifyModelFailure(cuda.error ?? '', 'Cog prediction failed').code).toBe('CUDA_ERROR');
    expect(await health()).toBe('UNHEALTHY');
    const rendersBefore = (await shim.calls('process')).length;
    const refused = await put('p-6');
    expect(refused.status).toBe('failed');
    expect(classifyModelFailure(refused.error ?? '', 'Cog prediction failed').code).toBe('CUDA_ERROR');
    expect(await shim.calls('process')).toHaveLength(rendersBefore); // Sonic was not called on the faulted GPU
    await new Promise((res) => setTimeout(res, 2500)); // the old predictor ended its process 2 s after a CUDA error
    expect(shim.proc.exitCode).toBeNull();
  });
});
