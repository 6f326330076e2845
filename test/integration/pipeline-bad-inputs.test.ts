import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { TaskPrepared } from '../../src/domain/records.js';
import { HEADERS } from '../../src/runtime/headers.js';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { astronautPng, landscape, twoAstronauts } from '../fixtures/media/photos.js';
import { readAll } from '../helpers/chain.js';
import { testContext } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

const KEY = 'k-acme-1234';
const auth = { authorization: `Bearer ${KEY}` };

interface File {
  data: Buffer;
  name: string;
}

describe('bad input gets a clear error and loses nothing (real pipeline)', () => {
  let p: Pipeline;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-bad-'));
  const f: Record<string, File> = {};
  const file = (name: string): File => ({ data: readFileSync(join(dir, name)), name });
  const ff = (...args: string[]) => {
    const r = spawnSync('ffmpeg', ['-nostdin', '-v', 'error', '-y', ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
  };

  beforeAll(async () => {
    p = await startPipeline({
      SONIC_API_AUTH: 'required',
      SONIC_API_KEYS: `acme:${KEY},other:k-other-5678,burst:k-burst-0000`,
      SONIC_MAX_AUDIO_BYTES: String(2 * 1024 * 1024),
      SONIC_API_RATE_LIMIT_PER_MINUTE: '200',
    });
    await synthSpeech('Good morning. This is a perfectly fine recording.', join(dir, 'ok.wav'));
    await makePortrait(join(dir, 'ok.png'), { width: 400, height: 500 });
    f.ok_wav = file('ok.wav');
    f.ok_png = file('ok.png');
    ff('-f', 'lavfi', '-i', 'sine=frequency=300:duration=0.5', join(dir, 'short.wav'));
    ff('-f', 'lavfi', '-i', 'anoisesrc=d=600:a=0.1:r=8000', '-ac', '1', '-c:a', 'libmp3lame', '-b:a', '8k', join(dir, 'ten-minutes.mp3'));
    ff('-f', 'lavfi', '-i', 'color=c=red:s=100x100', '-frames:v', '1', join(dir, 'tiny.png'));
    const wav = readFileSync(join(dir, 'ok.wav'));
    writeFileSync(join(dir, 'truncated.wav'), wav.subarray(0, 30)); // RIFF/WAVE magic, the format chunk cut short
    writeFileSync(join(dir, 'corrupt.png'), Buffer.concat([readFileSync(join(dir, 'ok.png')).subarray(0, 16), Buffer.alloc(4000, 7)]));
    writeFileSync(join(dir, 'big.wav'), Buffer.concat([wav.subarray(0, 44), Buffer.alloc(3 * 1024 * 1024)]));
    // headers that pass inspection, contents that do not decode: only the validate stage finds out
    const png = readFileSync(join(dir, 'ok.png'));
    const idat = Buffer.concat([Buffer.from([0, 0, 0, 100]), Buffer.from('IDAT'), Buffer.alloc(100, 7), Buffer.alloc(4)]);
    writeFileSync(join(dir, 'bad-pixels.png'), Buffer.concat([png.subarray(0, 33), idat, png.subarray(png.length - 12)]));
    writeFileSync(join(dir, 'garbage.mp3'), Buffer.concat([Buffer.from('ID3\x04\x00\x00\x00\x00\x00\x00', 'latin1'), Buffer.alloc(5000, 0x55)]));
    landscape(join(dir, 'landscape.png'));
    twoAstronauts(join(dir, 'two.png'));
    f.astronaut = { data: readFileSync(astronautPng()), name: 'astronaut.png' };
  }, 120_000);

  const submit = (form: Record<string, string | File>, headers: Record<string, string> = auth) => p.submit(form, headers);

  // --- answered 4xx by the API, nothing enqueued -------------------------------------------
  const api4xx: [string, () => Promise<{ status: number; body: Record<string, unknown> }>, number, string][] = [
    ['an image renamed to .wav', () => submit({ audio: { ...f.ok_png!, name: 'speech.wav' }, image: f.ok_png! }), 415, 'UNSUPPORTED_AUDIO_FORMAT'],
    [
      'a text file as the image',
      () => submit({ audio: f.ok_wav!, image: { data: Buffer.from('hello, not an image at all'), name: 'face.jpg' } }),
      415,
      'UNSUPPORTED_IMAGE_FORMAT',
    ],
    ['min_resolution not a multiple of 64', () => submit({ audio: f.ok_wav!, image: f.ok_png!, min_resolution: '300' }), 422, 'PARAMS_OUT_OF_RANGE'],
    ['inference_steps 0', () => submit({ audio: f.ok_wav!, image: f.ok_png!, inference_steps: '0' }), 422, 'PARAMS_OUT_OF_RANGE'],
    ['dynamic_scale 3.5', () => submit({ audio: f.ok_wav!, image: f.ok_png!, dynamic_scale: '3.5' }), 422, 'PARAMS_OUT_OF_RANGE'],
    ['a parameter that is not a number', () => submit({ audio: f.ok_wav!, image: f.ok_png!, expand_ratio: 'wide' }), 400, 'INVALID_REQUEST'],
    ['the image field missing', () => submit({ audio: f.ok_wav! }), 400, 'INVALID_REQUEST'],
    ['an oversize upload', () => submit({ audio: { data: readFileSync(join(dir, 'big.wav')), name: 'big.wav' }, image: f.ok_png! }), 413, 'PAYLOAD_TOO_LARGE'],
    ['a WAV whose header is cut short', () => submit({ audio: file('truncated.wav'), image: f.ok_png! }), 422, 'AUDIO_DECODE_FAILED'],
    ['a 100×100 image', () => submit({ audio: f.ok_wav!, image: file('tiny.png') }), 422, 'IMAGE_TOO_SMALL'],
    ['a PNG with a corrupt header', () => submit({ audio: f.ok_wav!, image: file('corrupt.png') }), 422, 'IMAGE_DECODE_FAILED'],
    ['no API key', () => submit({ audio: f.ok_wav!, image: f.ok_png! }, {}), 401, 'UNAUTHORIZED'],
    ['a wrong API key', () => submit({ audio: f.ok_wav!, image: f.ok_png! }, { authorization: 'Bearer nope' }), 401, 'UNAUTHORIZED'],
    [
      'an invalid Idempotency-Key',
      () => submit({ audio: f.ok_wav!, image: f.ok_png! }, { ...auth, 'idempotency-key': 'has spaces in it' }),
      422,
      'IDEMPOTENCY_KEY_INVALID',
    ],
    ['a callback that is not http(s)', () => submit({ audio: f.ok_wav!, image: f.ok_png!, callback_url: 'ftp://example.com/hook' }), 400, 'INVALID_REQUEST'],
    ['metadata that is not an object of strings', () => submit({ audio: f.ok_wav!, image: f.ok_png!, metadata: '{"n": 1}' }), 400, 'INVALID_REQUEST'],
    [
      'malformed JSON',
      async () => {
        const r = await fetch(`${p.api}/v1/tasks`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"audio": {"uri": ' });
        return { status: r.status, body: (await r.json()) as Record<string, unknown> };
      },
      400,
      'INVALID_REQUEST',
    ],
    [
      'JSON referencing an upload that does not exist',
      async () => {
        const r = await fetch(`${p.api}/v1/tasks`, {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json' },
          body: JSON.stringify({
            audio: { uri: 'blob://uploads/acme/00000000-0000-4000-8000-000000000001' },
            image: { uri: 'blob://uploads/acme/00000000-0000-4000-8000-000000000002' },
          }),
        });
        return { status: r.status, body: (await r.json()) as Record<string, unknown> };
      },
      422,
      'INPUT_NOT_FOUND',
    ],
    [
      'an unknown task id',
      async () => {
        const r = await fetch(`${p.api}/v1/tasks/00000000-0000-4000-8000-000000000000`, { headers: auth });
        return { status: r.status, body: (await r.json()) as Record<string, unknown> };
      },
      404,
      'TASK_NOT_FOUND',
    ],
  ];

  it.each(api4xx.map(([name, call, status, code]) => ({ name, call, status, code })))(
    '$name → $status $code, nothing enqueued',
    async ({ call, status, code }) => {
      const before = (await readAll(p.topic('tasks.requested'), 300)).length;
      const r = await call();
      expect(r.status, JSON.stringify(r.body)).toBe(status);
      expect(r.body.code).toBe(code);
      expect(typeof r.body.message).toBe('string');
      expect(String(r.body.message).length).toBeGreaterThan(10);
      expect((await readAll(p.topic('tasks.requested'), 300)).length).toBe(before);
    },
    60_000,
  );

  // --- accepted, then failed by the validate stage: DLQ with the code, status FAILED ----------
  const dlq: [string, () => Record<string, string | File>, string][] = [
    ['an MP3 whose frames are garbage', () => ({ audio: file('garbage.mp3'), image: f.ok_png! }), 'AUDIO_DECODE_FAILED'],
    ['0.5 s of audio', () => ({ audio: file('short.wav'), image: f.ok_png! }), 'AUDIO_TOO_SHORT'],
    ['10 minutes of audio', () => ({ audio: file('ten-minutes.mp3'), image: f.ok_png! }), 'AUDIO_TOO_LONG'],
    ['a PNG whose pixel data does not decode', () => ({ audio: f.ok_wav!, image: file('bad-pixels.png') }), 'IMAGE_DECODE_FAILED'],
  ];

  it.each(dlq.map(([name, form, code]) => ({ name, form, code })))(
    '$name → DLQ $code, task FAILED with that code',
    async ({ form, code }) => {
      const r = await submit(form());
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      const id = String(r.body.task_id);
      const s = await p.waitFor(id);
      expect(s.state).toBe('FAILED');
      expect(s.error).toMatchObject({ code, retryable: false });
      const dead = (await readAll(p.topic('validate.dlq'), 500)).find((d) => d.key === id);
      expect(dead?.headers[HEADERS.errorCode]).toBe(code);
      expect(dead?.headers[HEADERS.dlqReason]).toBe('permanent');
      // the failure is an outcome too (for webhooks)
      expect((await readAll(p.topic('tasks.completed'), 500)).some((c) => c.key === id)).toBe(true);
    },
    120_000,
  );

  // --- accepted, then failed by preprocess's face rules: before infer, never retried --------------
  const faceless: [string, () => Record<string, string | File>, string][] = [
    ['a landscape without a face', () => ({ audio: f.ok_wav!, image: file('landscape.png') }), 'NO_FACE_DETECTED'],
    ['two faces of one size', () => ({ audio: f.ok_wav!, image: file('two.png'), min_resolution: '256' }), 'MULTIPLE_FACES'],
    ['a face too small for min_resolution 768', () => ({ audio: f.ok_wav!, image: f.astronaut!, min_resolution: '768' }), 'FACE_TOO_SMALL'],
  ];

  // submitted together: each waits for preprocess, which takes them in parallel
  it(`${faceless.map(([name, , code]) => `${name} → ${code}`).join('; ')}: FAILED at preprocess, not retried, infer never called`, async () => {
    const ids = await Promise.all(
      faceless.map(async ([, form]) => {
        const r = await submit(form());
        expect(r.status, JSON.stringify(r.body)).toBe(202);
        return String(r.body.task_id);
      }),
    );
    const statuses = await Promise.all(ids.map((id) => p.waitFor(id)));
    const [dead, retried, prepared, dispatched] = await Promise.all(
      ['preprocess.dlq', 'preprocess.retry.1', 'tasks.prepared', 'tasks.dispatched'].map((t) => readAll(p.topic(t), 500)),
    );
    faceless.forEach(([name, , code], i) => {
      const id = ids[i]!;
      expect(statuses[i], name).toMatchObject({ state: 'FAILED', stage: 'preprocess', attempt: 1, error: { code, retryable: false } });
      const letters = dead!.filter((d) => d.key === id);
      expect(letters, name).toHaveLength(1);
      expect(letters[0]!.headers[HEADERS.errorCode]).toBe(code);
      expect(letters[0]!.headers[HEADERS.dlqReason]).toBe('permanent');
      expect(
        retried!.some((d) => d.key === id),
        name,
      ).toBe(false);
      // nothing reached the GPU stage: no prepared record, none dispatched to infer
      expect(
        prepared!.some((d) => d.key === id),
        name,
      ).toBe(false);
      expect(
        dispatched!.some((d) => d.key === id),
        name,
      ).toBe(false);
    });
    expect(String((statuses[2]!.error as { message: string }).message)).toMatch(/at min_resolution 768 it must be at least 96 px/);
  }, 120_000);

  it('crops a real photograph around its face: the box and crop in tasks.prepared and the task details, a square PNG of min_resolution', async () => {
    const r = await submit({ audio: f.ok_wav!, image: f.astronaut!, min_resolution: '256', expand_ratio: '0.5' });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id = String(r.body.task_id);
    const s = await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 120_000);
    expect(s.state, JSON.stringify(s)).toBe('SUCCEEDED');
    const face = s.face as { box: { x: number; y: number; width: number; height: number }; crop: { x: number; y: number; width: number; height: number } };
    expect(s.face).toMatchObject({ faces: 1, picture_width: 512, picture_height: 512 });
    expect(face.box.x).toBeGreaterThan(160);
    expect(face.box.x).toBeLessThan(200);
    expect(face.crop.width).toBe(face.crop.height);
    expect(face.crop.width).toBeCloseTo(2 * Math.min(face.box.width, face.box.height), -1);
    const ctx = testContext();
    const topic = p.topic('tasks.prepared');
    const record = (await readAll(topic, 500)).find((d) => d.key === id)!;
    const prepared = (await ctx.serde.decode<TaskPrepared>(record.value!, p.topology.topics[topic]!.valueSchema!)).value;
    expect(prepared.face).toEqual(s.face);
    expect(prepared).toMatchObject({ width: 256, height: 256 });
    expect(prepared.landmarks?.lips_outer).toHaveLength(20);
    // the landmarks lie in the uploaded picture, inside the crop
    for (const pt of prepared.landmarks!.lips_outer) {
      expect(pt.x).toBeGreaterThan(face.crop.x);
      expect(pt.x).toBeLessThan(face.crop.x + face.crop.width);
    }
  }, 180_000);

  it('keeps tenants apart and rate-limits per key', async () => {
    const r = await submit({ audio: f.ok_wav!, image: f.ok_png! });
    expect(r.status).toBe(202);
    const id = String(r.body.task_id);
    const other = await fetch(`${p.api}/v1/tasks/${id}`, { headers: { authorization: 'Bearer k-other-5678' } });
    expect(other.status).toBe(404); // another tenant's task looks missing
    const burst = await Promise.all(Array.from({ length: 230 }, () => fetch(`${p.api}/v1/tasks/${id}`, { headers: { authorization: 'Bearer k-burst-0000' } })));
    const limited = burst.filter((x) => x.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    expect(((await limited[0]!.json()) as { code: string }).code).toBe('RATE_LIMITED');
    expect((await fetch(`${p.api}/v1/tasks/${id}`, { headers: auth })).status).toBe(200); // other keys unaffected
    expect((await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 120_000)).state).toBe('SUCCEEDED');
  }, 180_000);

  it('leaves no accepted task in a non-terminal state', async () => {
    const accepted = [...new Set((await readAll(p.topic('tasks.requested'))).map((r) => r.key!))];
    expect(accepted.length).toBeGreaterThanOrEqual(5);
    for (const id of accepted) expect(['SUCCEEDED', 'FAILED']).toContain((await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 60_000)).state);
  }, 180_000);
});
