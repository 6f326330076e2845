/**
 * The worker backend end to end: the Sonic pipeline with SONIC_INFER_BACKEND=worker, infer in a
 * process of its own running ops/sonic/runner.py over the stand-in Sonic
 * (test/fixtures/sonic-standin), whose log says what Sonic was asked and when.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { HEADERS } from '../../src/runtime/headers.js';
import { derivedSeed } from '../../src/stages/backends/worker.js';
import { readAll } from '../helpers/chain.js';
import { ROOT, testContext } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';
import { alive } from '../fixtures/alive.mjs';

/** One line of the stand-in's log (SONIC_STANDIN_LOG). */
interface Call {
  call: 'init' | 'preprocess' | 'crop_image' | 'process' | 'process_end';
  pid: number;
  at: number;
  image_path?: string;
  output_path?: string;
  output_image_path?: string;
  expand_ratio?: number;
  min_resolution?: number;
  inference_steps?: number;
  dynamic_scale?: number;
  seed_arg?: number | null;
  used?: { seed: number; num_inference_steps: number; motion_bucket_scale: number };
}

describe('the worker backend: Sonic loaded once per infer process, every parameter honoured', () => {
  let p: Pipeline;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-worker-'));
  const log = join(dir, 'standin.jsonl');
  const scriptFile = join(dir, 'script.json');
  const calls = (): Call[] =>
    existsSync(log)
      ? readFileSync(log, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Call)
      : [];
  /** The behaviours of the next process() calls (the stand-in consumes one per call). */
  const script = (steps: string[]): void => writeFileSync(scriptFile, JSON.stringify(steps));
  /** The calls made for one task: infer's scratch directory is named after the task id's first 8 characters. */
  const callsOf = (id: string, kind: Call['call']): Call[] =>
    calls().filter((c) => c.call === kind && (c.output_path ?? '').includes(`infer-${id.slice(0, 8)}`));
  const inits = (): Call[] => calls().filter((c) => c.call === 'init');

  beforeAll(async () => {
    script([]);
    p = await startPipeline(
      {
        SONIC_INFER_BACKEND: 'worker',
        SONIC_WORKER_SONIC_DIR: join(ROOT, 'test/fixtures/sonic-standin'),
        SONIC_STANDIN_LOG: log,
        SONIC_STANDIN_SCRIPT: scriptFile,
        SONIC_STANDIN_LOAD_S: '1',
        SONIC_STANDIN_TASK_S: '0.2',
        // the budget of every render: a hung one is killed after 20 s
        SONIC_INFER_TIMEOUT_BASE_S: '20',
        SONIC_INFER_TIMEOUT_PER_AUDIO_S: '0',
        SONIC_DRAIN_TIMEOUT_MS: '60000',
      },
      { ownProcess: ['infer'] },
    );
    await synthSpeech('The worker keeps Sonic loaded between tasks.', join(dir, 'speech.wav'));
    await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
  }, 120_000);

  const submit = (params: Record<string, string>) =>
    p.submit({
      audio: { data: readFileSync(join(dir, 'speech.wav')), name: 'speech.wav' },
      image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
      min_resolution: '256',
      ...params,
    });

  it('ten tasks: one load, and each task reaches Sonic with its own parameters, seed 0 included', async () => {
    const tasks = Array.from({ length: 10 }, (_, i) => ({
      inference_steps: 11 + i,
      min_resolution: i % 2 ? 320 : 256,
      dynamic_scale: 0.5 + i * 0.1,
      expand_ratio: 0.2 + i * 0.05,
      crop: i % 3 !== 0,
      // seed 0 first, then a seed, then the default: the 123 must not leak into the tasks after it
      seed: i === 0 ? 0 : i === 1 ? 123 : null,
    }));
    const ids: string[] = [];
    for (const t of tasks) {
      const r = await submit({
        inference_steps: String(t.inference_steps),
        min_resolution: String(t.min_resolution),
        dynamic_scale: t.dynamic_scale.toFixed(2),
        expand_ratio: t.expand_ratio.toFixed(2),
        crop_to_face: String(t.crop),
        ...(t.seed === null ? {} : { seed: String(t.seed) }),
      });
      expect(r.status).toBe(202);
      ids.push(String(r.body.task_id));
    }
    for (const id of ids) expect((await p.waitFor(id)).state).toBe('SUCCEEDED');

    expect(inits()).toHaveLength(1);
    for (const [i, t] of tasks.entries()) {
      const id = ids[i]!;
      const [proc, ...more] = callsOf(id, 'process');
      expect(more).toHaveLength(0);
      expect(proc).toMatchObject({ pid: inits()[0]!.pid, inference_steps: t.inference_steps, min_resolution: t.min_resolution });
      expect(proc!.dynamic_scale).toBeCloseTo(t.dynamic_scale, 5);
      expect(proc!.used).toMatchObject({ seed: t.seed ?? derivedSeed(id), num_inference_steps: t.inference_steps });
      // Sonic's own face detection (the face box, expanded by expand_ratio) ran on this task's image;
      // sonicflow's preprocess already made Sonic's crop when crop_to_face is on, so the runner is
      // told not to crop again (crop: false) and Sonic renders the picture it was given
      const work = `infer-${id.slice(0, 8)}`;
      const pre = calls().filter((c) => c.call === 'preprocess' && (c.image_path ?? '').includes(work));
      expect(pre).toHaveLength(1);
      expect(pre[0]!.expand_ratio).toBeCloseTo(t.expand_ratio, 5);
      const crops = calls().filter((c) => c.call === 'crop_image' && (c.output_image_path ?? '').includes(work));
      expect(crops).toHaveLength(0);
      expect(proc!.image_path!.endsWith('.crop.png')).toBe(false);
      // ... and with crop_to_face the status shows the crop preprocess made
      const status = await p.status(id);
      if (t.crop) expect((status.face as { crop: { width: number; height: number } }).crop.width).toBeGreaterThan(0);
      else expect((status.face as { crop: unknown }).crop).toBeNull();
      // the seed actually used is on the record
      const rendered = (await readAll(p.topic('tasks.rendered'))).filter((r) => r.key === id);
      expect(rendered).toHaveLength(1);
      const value = (await testContext().serde.decode<{ seed: number | null }>(rendered[0]!.value!)).value;
      expect(value.seed).toBe(t.seed ?? derivedSeed(id));
    }
  }, 180_000);

  it('no face: FAILED with NO_FACE_DETECTED at once, never retried, and the runner stays', async () => {
    const before = inits().length;
    script(['noface']);
    const id = String((await submit({})).body.task_id);
    const s = await p.waitFor(id);
    expect(s.state).toBe('FAILED');
    expect(s.error).toMatchObject({ code: 'NO_FACE_DETECTED', retryable: false });
    expect((await readAll(p.topic('infer.retry.1'), 500)).filter((r) => r.key === id)).toHaveLength(0);
    expect((await readAll(p.topic('infer.dlq'))).find((r) => r.key === id)?.headers[HEADERS.dlqReason]).toBe('permanent');
    expect(callsOf(id, 'process')).toHaveLength(1);
    expect(inits()).toHaveLength(before);
  }, 120_000);

  it('GPU out of memory: the runner is replaced (Sonic loaded anew) and the retry succeeds', async () => {
    const before = inits();
    script(['oom']);
    const id = String((await submit({})).body.task_id);
    expect((await p.waitFor(id)).state).toBe('SUCCEEDED');
    const retries = (await readAll(p.topic('infer.retry.1'))).filter((r) => r.key === id);
    expect(retries).toHaveLength(1);
    expect(retries[0]!.headers[HEADERS.errorCode]).toBe('GPU_OOM');
    const [first, second, ...more] = callsOf(id, 'process');
    expect(more).toHaveLength(0);
    // the OOM on the old runner, the retry on a new one that loaded Sonic again
    expect(second!.pid).not.toBe(first!.pid);
    expect(inits()).toHaveLength(before.length + 1);
    expect(inits().at(-1)!.pid).toBe(second!.pid);
    expect(alive(first!.pid)).toBe(false);
  }, 120_000);

  it('a hung render is killed at its budget (INFERENCE_TIMEOUT), and the retry on a new runner succeeds', async () => {
    script(['hang']);
    const id = String((await submit({})).body.task_id);
    expect((await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 150_000)).state).toBe('SUCCEEDED');
    const retries = (await readAll(p.topic('infer.retry.1'))).filter((r) => r.key === id);
    expect(retries).toHaveLength(1);
    expect(retries[0]!.headers[HEADERS.errorCode]).toBe('INFERENCE_TIMEOUT');
    const [hung, retried] = callsOf(id, 'process');
    expect(retried!.pid).not.toBe(hung!.pid);
    // killed at the 20 s budget: the retry started after it, not before
    expect(retried!.at - hung!.at).toBeGreaterThanOrEqual(19);
    expect(alive(hung!.pid)).toBe(false);
  }, 180_000);

  it('SIGTERM during a render: the render finishes and commits, once, and the runner exits with the stage', async () => {
    script(['slow:6']);
    const id = String((await submit({})).body.task_id);
    const until = Date.now() + 60_000;
    while (callsOf(id, 'process').length === 0) {
      if (Date.now() > until) throw new Error(`the render did not start:\n${p.logs().stages.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100)); // poll interval
    }
    const infer = p.process('infer');
    infer.proc.kill('SIGTERM');
    expect(await infer.exited).toBe(0);
    // the rest of the pipeline (another process) finishes the task from what infer committed
    expect((await p.waitFor(id)).state).toBe('SUCCEEDED');
    const [render, ...more] = callsOf(id, 'process');
    expect(more).toHaveLength(0);
    expect(callsOf(id, 'process_end')).toHaveLength(1);
    expect((await readAll(p.topic('tasks.rendered'))).filter((r) => r.key === id)).toHaveLength(1);
    expect((await readAll(p.topic('infer.retry.1'), 500)).filter((r) => r.key === id)).toHaveLength(0);
    expect(alive(render!.pid)).toBe(false);
  }, 180_000);
});
