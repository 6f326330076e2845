import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { HEADERS } from '../../src/runtime/headers.js';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { readAll } from '../helpers/chain.js';
import { ROOT } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

describe("the command backend with a script that behaves like Sonic's CLI", () => {
  let p: Pipeline;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-cmd-'));
  beforeAll(async () => {
    p = await startPipeline({
      SONIC_INFER_BACKEND: 'command',
      SONIC_INFER_COMMAND: `${process.execPath} ${join(ROOT, 'test/fixtures/fake-sonic.mjs')} {image} {audio} {output} --inference_steps {inference_steps} --attempt {attempt} --seed {seed}`,
    });
    await synthSpeech('Rendering through the command backend.', join(dir, 'speech.wav'));
    await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
  }, 120_000);

  const submit = (steps: number) =>
    p.submit({
      audio: { data: readFileSync(join(dir, 'speech.wav')), name: 'speech.wav' },
      image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
      min_resolution: '256',
      inference_steps: String(steps),
      seed: '7',
    });

  it('GPU out of memory, then success: one video after one retry', async () => {
    const id = String((await submit(13)).body.task_id);
    const s = await p.waitFor(id);
    expect(s.state).toBe('SUCCEEDED');
    const retries = (await readAll(p.topic('infer.retry.1'))).filter((r) => r.key === id);
    expect(retries).toHaveLength(1);
    expect(retries[0]!.headers[HEADERS.errorCode]).toBe('GPU_OOM');
    expect((await readAll(p.topic('tasks.rendered'))).filter((r) => r.key === id)).toHaveLength(1);
    expect((await readAll(p.topic('tasks.completed'))).filter((r) => r.key === id)).toHaveLength(1);
    expect((await fetch(String(s.video_url))).status).toBe(200);
  }, 120_000);

  it.each([
    [14, "UnboundLocalError 'bbox_s'"],
    [15, 'exit 0 without a video'],
  ])(
    'no face (%i: %s) goes to the DLQ at once as NO_FACE_DETECTED',
    async (steps) => {
      const id = String((await submit(steps)).body.task_id);
      const s = await p.waitFor(id);
      expect(s.state).toBe('FAILED');
      expect(s.error).toMatchObject({ code: 'NO_FACE_DETECTED', retryable: false });
      expect((await readAll(p.topic('infer.retry.1'), 500)).filter((r) => r.key === id)).toHaveLength(0);
      const dead = (await readAll(p.topic('infer.dlq'))).find((r) => r.key === id);
      expect(dead?.headers[HEADERS.dlqReason]).toBe('permanent');
    },
    120_000,
  );
});
