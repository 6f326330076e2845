import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/blob/index.js';
import { publishedKey } from '../../src/domain/paths.js';
import { hasFaststart } from '../../src/media/encode.js';
import { probe } from '../../src/media/probe.js';
import { makePortrait, speechWithSilence } from '../../src/media/samples.js';
import { readAll } from '../helpers/chain.js';
import { LISTENING, listeningPort, onCleanup, startSonicflow } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

/** Freeze intervals (s) found by ffmpeg's freezedetect. */
function freezes(video: string): { start: number; end: number }[] {
  const r = spawnSync('ffmpeg', ['-nostdin', '-v', 'info', '-i', video, '-vf', 'freezedetect=n=0.0005:d=0.4', '-map', '0:v', '-f', 'null', '-'], {
    encoding: 'utf8',
  });
  const starts = [...r.stderr.matchAll(/freeze_start: ([\d.]+)/g)].map((m) => Number(m[1]));
  const ends = [...r.stderr.matchAll(/freeze_end: ([\d.]+)/g)].map((m) => Number(m[1]));
  return starts.map((start, i) => ({ start, end: ends[i] ?? Number.POSITIVE_INFINITY }));
}

describe('the Sonic pipeline end to end (real broker, registry, filesystem store, ffmpeg)', () => {
  let p: Pipeline;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-e2e-'));
  let silence: { startS: number; endS: number; durationS: number };
  beforeAll(async () => {
    p = await startPipeline();
    silence = await speechWithSilence(join(dir, 'speech.wav'), {
      speech: ['Hello, I am your virtual presenter for today.', 'After a short pause, I keep on talking to you.'],
      silenceS: 2.5,
    });
    await makePortrait(join(dir, 'portrait.jpg'), { width: 512, height: 640 });
  }, 120_000);

  const files = () => ({
    audio: { data: readFileSync(join(dir, 'speech.wav')), name: 'speech.wav' },
    image: { data: readFileSync(join(dir, 'portrait.jpg')), name: 'portrait.jpg' },
  });

  it('submit answers 202 at once; the task goes QUEUED → … → SUCCEEDED and the MP4 is h264/yuv420p/aac, as long as the audio, frozen in silence and moving in speech', async () => {
    const t0 = Date.now();
    const r = await p.submit({ ...files(), min_resolution: '256', metadata: '{"campaign":"e2e"}' });
    const submitMs = Date.now() - t0;
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id = String(r.body.task_id);
    expect(r.body.status_url).toBe(`${p.api}/v1/tasks/${id}`);
    expect(submitMs).toBeLessThan(10_000); // generous: it never waits for a stage

    // follow the server-sent events while the task runs
    const events: string[] = [];
    const res = await fetch(`${p.api}/v1/tasks/${id}/events`);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text(); // the stream ends when the task does
    for (const m of text.matchAll(/data: (.*)\n/g)) events.push(String((JSON.parse(m[1]!) as { state: string }).state));
    expect(events[events.length - 1]).toBe('SUCCEEDED');
    const order = ['QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED'];
    const ranks = events.map((s) => order.indexOf(s));
    expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
    expect(new Set(events).size).toBeGreaterThanOrEqual(3);

    const s = await p.status(id);
    expect(s).toMatchObject({ task_id: id, state: 'SUCCEEDED', error: null, video_url: `${p.api}/v1/tasks/${id}/video` });
    const video = await fetch(String(s.video_url));
    expect(video.status).toBe(200);
    expect(video.headers.get('content-type')).toBe('video/mp4');
    const mp4 = join(dir, 'out.mp4');
    writeFileSync(mp4, Buffer.from(await video.arrayBuffer()));

    const info = await probe(mp4);
    expect(info.video).toMatchObject({ codec: 'h264', pixFmt: 'yuv420p', fps: 25 });
    expect(info.audio?.codec).toBe('aac');
    expect(Math.abs(info.durationS - silence.durationS)).toBeLessThanOrEqual(0.2);
    expect(await hasFaststart(mp4)).toBe(true);

    const frozen = freezes(mp4);
    const inSilence = frozen.find((f) => f.start <= silence.startS + 0.5 && f.end >= silence.endS - 0.5);
    expect(inSilence, `freezes ${JSON.stringify(frozen)} vs silence ${JSON.stringify(silence)}`).toBeDefined();
    const speechS = silence.durationS - (silence.endS - silence.startS);
    const frozenOutside = frozen.filter((f) => f !== inSilence).reduce((a, f) => a + (Math.min(f.end, silence.durationS) - f.start), 0);
    expect(frozenOutside).toBeLessThan(speechS * 0.5); // the video moves while there is speech

    // players seek: byte ranges, validators, and a clear 416 past the end
    const whole = readFileSync(mp4);
    expect(video.headers.get('accept-ranges')).toBe('bytes');
    expect(Number(video.headers.get('content-length'))).toBe(whole.length);
    const etag = video.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    const mid = await fetch(String(s.video_url), { headers: { range: 'bytes=100-1099' } });
    expect(mid.status).toBe(206);
    expect(mid.headers.get('content-range')).toBe(`bytes 100-1099/${whole.length}`);
    expect(Buffer.from(await mid.arrayBuffer()).equals(whole.subarray(100, 1100))).toBe(true);
    const tail = await fetch(String(s.video_url), { headers: { range: 'bytes=-500' } });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer()).equals(whole.subarray(whole.length - 500))).toBe(true);
    const past = await fetch(String(s.video_url), { headers: { range: `bytes=${whole.length}-` } });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${whole.length}`);
    expect(((await past.json()) as { code: string }).code).toBe('RANGE_NOT_SATISFIABLE');
    const stale = await fetch(String(s.video_url), { headers: { range: 'bytes=0-9', 'if-range': '"another-version"' } });
    expect(stale.status).toBe(200);
    expect(Buffer.from(await stale.arrayBuffer()).length).toBe(whole.length);
    expect((await fetch(String(s.video_url), { headers: { 'if-none-match': etag } })).status).toBe(304);
  }, 180_000);

  it('the same Idempotency-Key twice gives one task and one video; once it succeeded, only its inputs and the video stay in the store', async () => {
    const key = `campaign-42:item-${Date.now()}`;
    const first = await p.submit({ ...files(), min_resolution: '256' }, { 'idempotency-key': key });
    const second = await p.submit({ ...files(), min_resolution: '256' }, { 'idempotency-key': key });
    expect(first.status).toBe(202);
    expect(second.status).toBe(200);
    expect(second.body).toMatchObject({ task_id: first.body.task_id, idempotent_replay: true });
    const id = String(first.body.task_id);
    expect((await p.waitFor(id)).state).toBe('SUCCEEDED');
    const third = await p.submit({ ...files(), min_resolution: '256' }, { 'idempotency-key': key });
    expect(third.body).toMatchObject({ task_id: id, status: 'SUCCEEDED', idempotent_replay: true });
    // every stage has committed its inputs to the log end: no second request or completion can come
    await p.drained();
    const requested = (await readAll(p.topic('tasks.requested'))).filter((r) => r.key === id);
    const completed = (await readAll(p.topic('tasks.completed'))).filter((r) => r.key === id);
    expect(requested).toHaveLength(1);
    expect(completed).toHaveLength(1);
    // notify has committed the completed record too (drained): the intermediates are gone
    const store = new FsBlobStore(p.dataDir);
    const kept: string[] = [];
    for await (const e of store.list(`tasks/${id}/`)) kept.push(e.key.split('/')[2]!);
    expect([...new Set(kept)]).toEqual(['input']);
    expect((await store.stat(publishedKey(id)))?.size_bytes).toBeGreaterThan(1000);
  }, 180_000);

  it('two API replicas taking the same Idempotency-Key at the same instant make one task and one video: validate drops the second request', async () => {
    const other = startSonicflow(['api'], { ...p.env, SONIC_API_INSTANCE_ID: `${p.prefix}-b` });
    onCleanup(async () => {
      other.proc.kill('SIGTERM');
      await other.exited;
    });
    const otherBase = `http://127.0.0.1:${await listeningPort(other, LISTENING.api)}`;
    const submitTo = async (base: string, key: string) => {
      const fd = new FormData();
      const f = files();
      fd.set('audio', new Blob([f.audio.data]), f.audio.name);
      fd.set('image', new Blob([f.image.data]), f.image.name);
      fd.set('min_resolution', '256');
      const res = await fetch(`${base}/v1/tasks`, { method: 'POST', body: fd, headers: { 'idempotency-key': key } });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const keys = [1, 2, 3].map((i) => `race-${Date.now()}-${i}`);
    const answers = await Promise.all(keys.flatMap((k) => [submitTo(p.api, k), submitTo(otherBase, k)]));
    for (const a of answers) expect([200, 202], JSON.stringify(a.body)).toContain(a.status);
    const ids = [...new Set(answers.map((a) => String(a.body.task_id)))];
    expect(ids).toHaveLength(keys.length);
    for (const id of ids) expect((await p.waitFor(id)).state).toBe('SUCCEEDED');
    await p.drained();
    const requested = await readAll(p.topic('tasks.requested'));
    const completed = await readAll(p.topic('tasks.completed'));
    // both replicas enqueued (the race happened) ...
    expect(ids.some((id) => requested.filter((r) => r.key === id).length === 2)).toBe(true);
    // ... and each task was made once
    for (const id of ids) expect(completed.filter((r) => r.key === id)).toHaveLength(1);
    expect(p.logs().stages).toMatch(/duplicate request of a task dropped/);
  }, 240_000);

  it('serves its OpenAPI description at /docs, health, readiness and Prometheus metrics', async () => {
    const spec = (await (await fetch(`${p.api}/docs/json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(spec.openapi).toMatch(/^3\./);
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(['/v1/tasks', '/v1/tasks/{id}', '/v1/tasks/{id}/events', '/v1/tasks/{id}/video']));
    expect((await fetch(`${p.api}/docs/`)).status).toBe(200);
    expect(await (await fetch(`${p.api}/healthz`)).json()).toEqual({ status: 'ok' });
    expect(await (await fetch(`${p.api}/readyz`)).json()).toEqual({ ready: true, checks: { broker: true, registry: true, status_view: true } });
    const metrics = await (await fetch(`${p.api}/metrics`)).text();
    expect(metrics).toMatch(/sonicflow_http_requests_total\{route="\/v1\/tasks",status="202",service="api"\} [1-9]/);
  });
});
