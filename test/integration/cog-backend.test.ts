/**
 * The cog backend against a fixture Cog server (test/fixtures/cog-server.ts) that renders real
 * MP4s with ffmpeg or fails the way Sonic does. No Kafka: the backend is called directly.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { toModelWav } from '../../src/media/audio.js';
import { probe } from '../../src/media/probe.js';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { CogBackend } from '../../src/stages/backends/cog.js';
import type { InferInput } from '../../src/stages/backends/types.js';
import { PARAM_DEFAULTS } from '../../src/domain/params.js';
import { COG_STEPS, decodeDataUri, startCogServer, type CogServer } from '../fixtures/cog-server.js';

const NORMAL_STEPS = 20;
const dir = mkdtempSync(join(tmpdir(), 'sonicflow-cogtest-'));
const png = join(dir, 'face.png');
const wav16k = join(dir, 'speech16k.wav');
let audioS = 0;
const servers: CogServer[] = [];

async function server(options: Parameters<typeof startCogServer>[0] = {}): Promise<CogServer> {
  const s = await startCogServer(options);
  servers.push(s);
  return s;
}

/** A render request for the sample media; a fresh task id unless given. */
function request(
  over: { steps?: number; seed?: number | null; taskId?: string; attempt?: number; signal?: AbortSignal; onProgress?: (f: number) => void } = {},
): InferInput {
  const taskId = over.taskId ?? randomUUID();
  const attempt = over.attempt ?? 1;
  const work = mkdtempSync(join(dir, 'task-'));
  return {
    taskId,
    attempt,
    imagePng: png,
    audio16k: wav16k,
    audioOriginal: wav16k,
    durationS: audioS,
    params: {
      ...PARAM_DEFAULTS,
      min_resolution: 256,
      inference_steps: over.steps ?? NORMAL_STEPS,
      dynamic_scale: 1.2,
      expand_ratio: 0.6,
      seed: over.seed === undefined ? 42 : over.seed,
    },
    outputPath: join(work, 'rendered.mp4'),
    workDir: work,
    signal: over.signal ?? new AbortController().signal,
    onProgress: over.onProgress ?? (() => undefined),
  };
}

/** The error `p` rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the render succeeded');
}

async function sonicError(p: Promise<unknown>): Promise<SonicError> {
  const err = await rejection(p);
  expect(err).toBeInstanceOf(SonicError);
  return err as SonicError;
}

const fast = { timeoutBaseS: 30, timeoutPerAudioS: 0, pollMs: 100, mode: 'poll' as const };

describe('the cog backend with a Cog-compatible server', () => {
  let cog: CogServer;

  beforeAll(async () => {
    await makePortrait(png, { width: 320, height: 400 });
    await synthSpeech('Hello from the Cog backend test.', join(dir, 'speech.wav'));
    await toModelWav(join(dir, 'speech.wav'), wav16k);
    audioS = (await probe(wav16k)).audio?.durationS ?? 0;
    expect(audioS).toBeGreaterThan(1);
    cog = await server();
  }, 60_000);

  it('renders a playable MP4 to outputPath and reports increasing progress up to completion', async () => {
    const progress: number[] = [];
    const req = request({ onProgress: (f) => progress.push(f) });
    const result = await new CogBackend(cog.url, fast).render(req);
    expect(result).toEqual({ seed: 42 });

    const info = await probe(req.outputPath);
    expect(info.video?.codec).toBe('h264');
    expect(info.audio?.codec).toBe('aac');
    expect(Math.abs(info.durationS - audioS)).toBeLessThan(0.3);
    // exactly the bytes the model produced: the data URI was decoded, not mangled
    const rec = cog.predictions.get(`${req.taskId}-1`);
    expect(rec?.status).toBe('succeeded');
    expect(readFileSync(req.outputPath).equals(rec?.video ?? Buffer.alloc(0))).toBe(true);

    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1] ?? 0);
    expect(new Set(progress).size).toBeGreaterThanOrEqual(2);
    expect(Math.max(...progress)).toBeGreaterThanOrEqual(0.5);
    expect(progress.every((f) => f >= 0 && f <= 1)).toBe(true);
    expect(cog.cancelled).not.toContain(rec?.id);
  });

  it('sends the inputs as data URIs of exactly the input bytes, the numeric parameters, the crop flag, and the seed only when set', async () => {
    const req = request({ seed: 42 });
    await new CogBackend(cog.url, fast).render(req);
    const rec = cog.predictions.get(`${req.taskId}-1`);
    expect(rec).toBeDefined();
    expect(rec?.bodyId).toBe(`${req.taskId}-1`);
    expect(rec?.prefer).toBe('respond-async');
    expect(rec?.contentType).toMatch(/^application\/json/);
    const image = decodeDataUri(rec?.input.image);
    const audio = decodeDataUri(rec?.input.audio);
    expect(image?.type).toBe('image/png');
    expect(audio?.type).toBe('audio/wav');
    expect(image?.data.equals(readFileSync(png))).toBe(true);
    expect(audio?.data.equals(readFileSync(wav16k))).toBe(true);
    const { image: _i, audio: _a, ...numeric } = rec?.input ?? {};
    expect(numeric).toEqual({ min_resolution: 256, inference_steps: NORMAL_STEPS, dynamic_scale: 1.2, expand_ratio: 0.6, crop: true, seed: 42 });

    // a picture preprocess already cropped (infer then sets crop_to_face false) is not cropped again
    const precropped = request();
    precropped.params = { ...precropped.params, crop_to_face: false };
    await new CogBackend(cog.url, fast).render(precropped);
    expect(cog.predictions.get(`${precropped.taskId}-1`)?.input).toMatchObject({ crop: false });

    // without a seed the model picks one: the field is left out, not sent as null
    const unseeded = request({ seed: null, steps: COG_STEPS.oom });
    await rejection(new CogBackend(cog.url, fast).render(unseeded));
    expect(cog.predictions.get(`${unseeded.taskId}-1`)?.input).not.toHaveProperty('seed');
  });

  it('downloads the output when the server answers a URL instead of a data URI', async () => {
    const byUrl = await server({ outputAsUrl: true });
    const req = request();
    await new CogBackend(byUrl.url, fast).render(req);
    const rec = byUrl.predictions.get(`${req.taskId}-1`);
    expect(rec?.output).toBe(`${byUrl.url}/files/${req.taskId}-1.mp4`);
    expect(readFileSync(req.outputPath).equals(rec?.video ?? Buffer.alloc(0))).toBe(true);
    expect((await probe(req.outputPath)).video?.codec).toBe('h264');
  });

  it('CUDA out of memory fails as GPU_OOM, retryable, with no output and no cancel', async () => {
    const req = request({ steps: COG_STEPS.oom });
    const err = await sonicError(new CogBackend(cog.url, fast).render(req));
    expect(err.code).toBe('GPU_OOM');
    expect(err.retryable).toBe(true);
    expect(existsSync(req.outputPath)).toBe(false);
    expect(cog.cancelled).not.toContain(`${req.taskId}-1`);
  });

  it("the 'bbox_s' traceback of a faceless portrait fails as NO_FACE_DETECTED, permanent", async () => {
    const req = request({ steps: COG_STEPS.noFace });
    const err = await sonicError(new CogBackend(cog.url, fast).render(req));
    expect(err.code).toBe('NO_FACE_DETECTED');
    expect(err.retryable).toBe(false);
    expect(String(err.details.backend_log_tail)).toContain('bbox_s');
  });

  it('a prediction that outlives its budget fails as INFERENCE_TIMEOUT and is cancelled on the server', async () => {
    const req = request({ steps: COG_STEPS.stuck });
    const started = Date.now();
    const err = await sonicError(new CogBackend(cog.url, { timeoutBaseS: 1, timeoutPerAudioS: 0, pollMs: 100, mode: 'poll' as const }).render(req));
    const elapsed = Date.now() - started;
    expect(err.code).toBe('INFERENCE_TIMEOUT');
    expect(err.retryable).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(3000);
    const id = `${req.taskId}-1`;
    expect(cog.cancelled).toContain(id);
    expect(cog.predictions.get(id)?.status).toBe('canceled');
    expect(existsSync(req.outputPath)).toBe(false);
  });

  it('the budget also bounds a poll the server never answers', async () => {
    const req = request({ steps: COG_STEPS.stallPolls });
    const started = Date.now();
    const err = await sonicError(new CogBackend(cog.url, { timeoutBaseS: 1, timeoutPerAudioS: 0, pollMs: 100, mode: 'poll' as const }).render(req));
    expect(err.code).toBe('INFERENCE_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(3000);
    expect(cog.predictions.get(`${req.taskId}-1`)?.polls).toBeGreaterThanOrEqual(1);
    expect(cog.cancelled).toContain(`${req.taskId}-1`);
  }, 10_000);

  it('aborting mid-run rejects with the abort reason promptly, cancels the prediction and writes nothing', async () => {
    const ac = new AbortController();
    const req = request({ signal: ac.signal });
    const id = `${req.taskId}-1`;
    // a long poll interval: the abort must not wait for the next poll
    const rendering = rejection(new CogBackend(cog.url, { ...fast, pollMs: 5000 }).render(req));
    await expect.poll(() => cog.predictions.get(id)?.status, { timeout: 5000 }).toBe('processing');
    const reason = new SonicError('SHUTDOWN', 'partition revoked');
    const abortedAt = Date.now();
    ac.abort(reason);
    expect(await rendering).toBe(reason);
    expect(Date.now() - abortedAt).toBeLessThan(1000);
    expect(cog.cancelled).toContain(id);
    expect(cog.predictions.get(id)?.status).toBe('canceled');
    expect(existsSync(req.outputPath)).toBe(false);
  });

  it('aborting while the create request is in flight still cancels the prediction it started', async () => {
    const slow = await server({ createDelayMs: 1500 });
    const ac = new AbortController();
    const req = request({ steps: COG_STEPS.stuck, signal: ac.signal });
    const id = `${req.taskId}-1`;
    const rendering = rejection(new CogBackend(slow.url, fast).render(req));
    // the prediction runs while the server holds back its answer to the create request (1.5 s)
    await expect.poll(() => slow.predictions.get(id)?.status, { timeout: 1000 }).toBe('processing');
    const reason = new SonicError('SHUTDOWN', 'stage is stopping');
    ac.abort(reason);
    expect(await rendering).toBe(reason);
    expect(slow.cancelled).toContain(id);
    expect(slow.predictions.get(id)?.status).toBe('canceled');
  });

  it('the same task and attempt submitted twice runs one prediction; another attempt runs another', async () => {
    const taskId = randomUUID();
    const backend = new CogBackend(cog.url, fast);
    const a = request({ taskId });
    const b = request({ taskId });
    await Promise.all([backend.render(a), backend.render(b)]);
    const rec = cog.predictions.get(`${taskId}-1`);
    expect(rec?.puts).toBe(2);
    expect(rec?.runs).toBe(1);
    expect(readFileSync(a.outputPath).equals(readFileSync(b.outputPath))).toBe(true);

    // redelivered after the render finished (e.g. a crash before the commit): no second run either
    const again = request({ taskId });
    await backend.render(again);
    expect(rec?.puts).toBe(3);
    expect(rec?.runs).toBe(1);
    expect(readFileSync(again.outputPath).equals(readFileSync(a.outputPath))).toBe(true);

    await backend.render(request({ taskId, attempt: 2 }));
    expect([...cog.predictions.keys()].filter((k) => k.startsWith(taskId)).sort()).toEqual([`${taskId}-1`, `${taskId}-2`]);
    expect(cog.predictions.get(`${taskId}-2`)?.runs).toBe(1);
  });

  it('a server busy with another prediction (409) is a retryable INFERENCE_FAILED', async () => {
    const single = await server({ concurrency: 1 });
    const other = await fetch(`${single.url}/predictions/other-1`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', prefer: 'respond-async' },
      body: JSON.stringify({ id: 'other-1', input: { ...inputsAsDataUris(), inference_steps: COG_STEPS.stuck } }),
    });
    expect(other.status).toBe(202);
    const req = request();
    const err = await sonicError(new CogBackend(single.url, fast).render(req));
    expect(err.code).toBe('INFERENCE_FAILED');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain('409');
    expect(single.predictions.has(`${req.taskId}-1`)).toBe(false);
    expect(single.predictions.get('other-1')?.status).toBe('processing');
  });

  it('an unreachable server is a retryable INFERENCE_FAILED', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const err = await sonicError(new CogBackend(`http://127.0.0.1:${port}`, fast).render(request()));
    expect(err.code).toBe('INFERENCE_FAILED');
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/unreachable/);
  });
});

function inputsAsDataUris(): { image: string; audio: string } {
  return {
    image: `data:image/png;base64,${readFileSync(png).toString('base64')}`,
    audio: `data:audio/wav;base64,${readFileSync(wav16k).toString('base64')}`,
  };
}

describe('the cog backend in sync mode (one blocking request, as stock Cog serves it)', () => {
  const sync = { timeoutBaseS: 30, timeoutPerAudioS: 0, mode: 'sync' as const };
  let cog: CogServer;
  beforeAll(async () => {
    cog = await server();
  });

  it('renders with one blocking PUT and no polling', async () => {
    const req = request();
    await new CogBackend(cog.url, sync).render(req);
    const rec = cog.predictions.get(`${req.taskId}-1`);
    expect(rec?.prefer ?? null).toBeNull();
    expect(rec?.polls).toBe(0);
    expect((await probe(req.outputPath)).video?.codec).toBe('h264');
  });

  it('maps a failed blocking prediction like the asynchronous one (GPU_OOM, retryable)', async () => {
    const err = await sonicError(new CogBackend(cog.url, sync).render(request({ steps: COG_STEPS.oom })));
    expect(err).toMatchObject({ code: 'GPU_OOM', retryable: true });
  });

  it('times out a blocking prediction that outlives its budget and cancels it', async () => {
    const req = request({ steps: COG_STEPS.stuck });
    const err = await sonicError(new CogBackend(cog.url, { ...sync, timeoutBaseS: 1 }).render(req));
    expect(err.code).toBe('INFERENCE_TIMEOUT');
    expect(cog.cancelled).toContain(`${req.taskId}-1`);
  });
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});
