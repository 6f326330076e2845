/**
 * Hostile suite, part 3: requests built to exhaust the API — odd and oversized forms, slow
 * clients, floods of uploads and event streams — against the real API process and broker. Each
 * refused request gets its exact status and code, enqueues nothing and leaves no spool file.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/blob/fs-store.js';
import { PlainProducer } from '../../src/kafka/io.js';
import { valueSubject } from '../../src/serde/wire.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { KEYS, bearer, expectRefused, multipart, raw, sampleMedia, startApiOnly, type ApiUnderTest } from '../helpers/api.js';
import { testContext } from '../helpers/infra.js';
import { ff, greyPng, withWavDataSize, zipOf } from '../unit/media/hostile-fixtures.js';
import { statusEvent } from '../../src/domain/status-event.js';

describe('no request exhausts the API (real API, broker, registry)', () => {
  let api: ApiUnderTest;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-sec-inputs-'));
  let wav: Buffer;
  let png: Buffer;
  let mp4: Buffer;
  const sockets: Socket[] = [];
  afterAll(() => sockets.forEach((s) => s.destroy()));

  beforeAll(async () => {
    api = await startApiOnly({
      SONIC_MAX_AUDIO_BYTES: String(400_000),
      SONIC_MAX_IMAGE_BYTES: String(300_000),
      SONIC_API_REQUEST_TIMEOUT_MS: '3000',
      SONIC_API_HEADERS_TIMEOUT_MS: '2000',
      SONIC_API_MAX_CONCURRENT_UPLOADS: '2',
      SONIC_API_MAX_UPLOADS_PER_KEY: '1',
      SONIC_API_IDLE_TIMEOUT_MS: '2000',
      SONIC_API_MAX_STREAMS_PER_KEY: '2',
      SONIC_API_MAX_STREAMS: '3',
    });
    ({ wav, png } = await sampleMedia());
    ff(
      '-f',
      'lavfi',
      '-i',
      'testsrc=s=160x120:d=1',
      '-f',
      'lavfi',
      '-i',
      'sine=d=1',
      '-c:v',
      'libx264',
      '-preset',
      'ultrafast',
      '-c:a',
      'aac',
      '-movflags',
      '+faststart',
      join(dir, 'v.mp4'),
    );
    mp4 = readFileSync(join(dir, 'v.mp4'));
  }, 120_000);

  const send = (parts: Parameters<typeof multipart>[0], headers: Record<string, string> = {}) => {
    const f = multipart(parts);
    return raw(api.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': f.contentType, ...headers }, f.body);
  };
  const media = () => [
    { name: 'audio', filename: 'a.wav', data: wav },
    { name: 'image', filename: 'p.png', data: png },
  ];

  const forms: [string, () => Parameters<typeof multipart>[0], number, string][] = [
    ['a field named params', () => [...media(), { name: 'params', data: '{"seed": 1}' }], 400, 'INVALID_REQUEST'],
    ['a field named __proto__', () => [...media(), { name: '__proto__', data: '{"tenant_id": "other"}' }], 400, 'INVALID_REQUEST'],
    ['a field named constructor', () => [...media(), { name: 'constructor', data: 'x' }], 400, 'INVALID_REQUEST'],
    ['a field named tenant_id', () => [...media(), { name: 'tenant_id', data: 'other' }], 400, 'INVALID_REQUEST'],
    ['an unexpected file field', () => [{ name: 'video', filename: 'v.mp4', data: wav }, ...media()], 400, 'INVALID_REQUEST'],
    ['a third file after audio and image', () => [...media(), { name: 'video', filename: 'v.mp4', data: wav }], 413, 'PAYLOAD_TOO_LARGE'],
    ['a file where a parameter belongs', () => [{ name: 'seed', filename: 's', data: '1' }, ...media()], 400, 'INVALID_REQUEST'],
    ['the audio file twice', () => [media()[0]!, { name: 'audio', filename: 'b.wav', data: wav }, media()[1]!], 400, 'INVALID_REQUEST'],
    ['the same parameter twice', () => [{ name: 'seed', data: '1' }, { name: 'seed', data: '2' }, ...media()], 400, 'INVALID_REQUEST'],
    ['a zero-length audio file', () => [{ name: 'audio', filename: 'a.wav', data: Buffer.alloc(0) }, media()[1]!], 400, 'INVALID_REQUEST'],
    [
      'an image over its limit (the audio limit is larger)',
      () => [media()[0]!, { name: 'image', filename: 'p.png', data: Buffer.concat([png, Buffer.alloc(350_000)]) }],
      413,
      'PAYLOAD_TOO_LARGE',
    ],
    [
      'an audio file over its limit',
      () => [{ name: 'audio', filename: 'a.wav', data: Buffer.concat([wav, Buffer.alloc(500_000)]) }, media()[1]!],
      413,
      'PAYLOAD_TOO_LARGE',
    ],
    ['a 20 000-character metadata field', () => [...media(), { name: 'metadata', data: JSON.stringify({ a: 'x'.repeat(20_000) }) }], 413, 'PAYLOAD_TOO_LARGE'],
    [
      'more fields than a submit has',
      () => [
        ...[
          'min_resolution',
          'expand_ratio',
          'inference_steps',
          'dynamic_scale',
          'motion_scale',
          'seed',
          'fps',
          'crop_to_face',
          'max_duration_s',
          'truncate_audio',
          'priority',
          'metadata',
          'callback_secret_ref',
          'callback_url',
          'extra1',
        ].map((name) => ({ name, data: '' })),
        ...media(),
      ],
      413,
      'PAYLOAD_TOO_LARGE',
    ],
    ['300 file parts', () => Array.from({ length: 300 }, (_, i) => ({ name: `f${i}`, filename: 'x', data: 'x' })), 400, 'INVALID_REQUEST'],
    ['300 empty text parts', () => Array.from({ length: 300 }, () => ({ name: 'seed', data: '' })), 400, 'INVALID_REQUEST'],
    ['a text file as the image', () => [media()[0]!, { name: 'image', filename: 'p.png', data: 'not an image, just text' }], 415, 'UNSUPPORTED_IMAGE_FORMAT'],
    ['an image as the audio', () => [{ name: 'audio', filename: 'a.wav', data: png }, media()[1]!], 415, 'UNSUPPORTED_AUDIO_FORMAT'],
    [
      'a PNG bomb (4096×30000 declared, a few KB sent)',
      () => [media()[0]!, { name: 'image', filename: 'p.png', data: greyPng(4096, 30_000, 16) }],
      422,
      'IMAGE_TOO_LARGE',
    ],
    ['a 30000×30000 PNG', () => [media()[0]!, { name: 'image', filename: 'p.png', data: greyPng(30_000, 30_000, 4) }], 422, 'IMAGE_TOO_LARGE'],
    ['a PNG whose header is cut off', () => [media()[0]!, { name: 'image', filename: 'p.png', data: png.subarray(0, 20) }], 422, 'IMAGE_DECODE_FAILED'],
    ['an MP4 with a video track as the audio', () => [{ name: 'audio', filename: 'a.m4a', data: mp4 }, media()[1]!], 415, 'MEDIA_MISMATCH'],
    [
      'a PNG with a ZIP appended (polyglot)',
      () => [media()[0]!, { name: 'image', filename: 'p.png', data: Buffer.concat([png, zipOf('index.html', Buffer.from('<script>alert(1)</script>'))]) }],
      415,
      'MEDIA_MISMATCH',
    ],
    [
      'a WAV announcing an hour it does not hold',
      () => [{ name: 'audio', filename: 'a.wav', data: withWavDataSize(wav, 3600 * 88_200) }, media()[1]!],
      415,
      'MEDIA_MISMATCH',
    ],
  ];
  it.each(forms.map(([name, parts, status, code]) => ({ name, parts, status, code })))(
    'a form with $name → $status $code, nothing enqueued, nothing spooled',
    async ({ parts, status, code }) => {
      await expectRefused(api, () => send(parts()), status, code);
      await waitFor(() => api.spooled().length === 0, 3000, 'spool files removed');
    },
  );

  const bodies: [string, Record<string, string>, Buffer | string, number, string][] = [
    [
      'a JSON body over 64 KiB',
      { 'content-type': 'application/json' },
      JSON.stringify({ audio: { uri: 'x' }, pad: 'x'.repeat(70_000) }),
      413,
      'PAYLOAD_TOO_LARGE',
    ],
    [
      'a gzip-encoded JSON body',
      { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      gzipSync(JSON.stringify({ a: 1 })),
      400,
      'INVALID_REQUEST',
    ],
    ['a text/plain body', { 'content-type': 'text/plain' }, 'audio=x', 400, 'INVALID_REQUEST'],
    ['an XML body', { 'content-type': 'application/xml' }, '<task/>', 400, 'INVALID_REQUEST'],
    ['a JSON array', { 'content-type': 'application/json' }, '[1,2,3]', 400, 'INVALID_REQUEST'],
    [
      'JSON params that are a string',
      { 'content-type': 'application/json' },
      JSON.stringify({ params: 'x', audio: { uri: 'blob://uploads/acme/x' }, image: { uri: 'blob://uploads/acme/y' } }),
      400,
      'INVALID_REQUEST',
    ],
    ['a multipart body without a boundary', { 'content-type': 'multipart/form-data' }, 'x', 400, 'INVALID_REQUEST'],
    [
      'a multipart body cut short',
      { 'content-type': 'multipart/form-data; boundary=abc' },
      '--abc\r\ncontent-disposition: form-data; name="audio"; filename="a"\r\n\r\nRIFF',
      400,
      'INVALID_REQUEST',
    ],
  ];
  it.each(bodies.map(([name, headers, body, status, code]) => ({ name, headers, body, status, code })))(
    '$name → $status $code, nothing enqueued',
    async ({ headers, body, status, code }) => {
      await expectRefused(api, () => raw(api.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), ...headers }, body), status, code);
    },
  );

  /** Opens a connection that sends the headers and the start of an upload, then one byte every `everyMs`. */
  const trickle = (everyMs: number, key = KEYS.acme, path = '/v1/tasks'): { socket: Socket; closed: Promise<{ afterMs: number; answer: string }> } => {
    const started = Date.now();
    const socket = connect(api.port, '127.0.0.1');
    sockets.push(socket);
    let answer = '';
    socket.on('data', (d) => (answer += d.toString()));
    socket.on('error', () => undefined);
    const closed = new Promise<{ afterMs: number; answer: string }>((resolve) => socket.on('close', () => resolve({ afterMs: Date.now() - started, answer })));
    socket.write(
      `POST ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\ncontent-type: multipart/form-data; boundary=abc\r\ncontent-length: 100000\r\n\r\n--abc\r\ncontent-disposition: form-data; name="audio"; filename="a.wav"\r\n\r\nRIFF`,
    );
    const t = setInterval(() => (socket.writable ? socket.write('x') : clearInterval(t)), everyMs);
    socket.on('close', () => clearInterval(t));
    return { socket, closed };
  };

  it('POST /v1/uploads inspects like a submit: a PNG bomb → 422 IMAGE_TOO_LARGE, nothing stored', async () => {
    const f = multipart([{ name: 'image', filename: 'p.png', data: greyPng(4096, 30_000, 16) }]);
    await expectRefused(
      api,
      () => raw(api.port, 'POST', '/v1/uploads', { ...bearer(KEYS.acme), 'content-type': f.contentType }, f.body),
      422,
      'IMAGE_TOO_LARGE',
    );
    const g = multipart([
      { name: 'audio', filename: 'a.wav', data: wav },
      { name: 'image', filename: 'p.png', data: png },
    ]);
    await expectRefused(
      api,
      () => raw(api.port, 'POST', '/v1/uploads', { ...bearer(KEYS.acme), 'content-type': g.contentType }, g.body),
      400,
      'INVALID_REQUEST',
    );
    expect(readdirSync(api.dataDir).filter((d) => d === 'uploads')).toEqual([]);
  });

  it('a slow-loris upload is cut off at the request deadline; nothing is enqueued or left spooled', async () => {
    const before = await api.requestedEnd();
    const { closed } = trickle(300);
    const { afterMs, answer } = await closed;
    expect(afterMs).toBeLessThan(3000 + 2500);
    expect(answer === '' || /^HTTP\/1\.1 (408|400)/.test(answer), answer).toBe(true);
    expect(await api.requestedEnd()).toBe(before);
    await waitFor(() => api.spooled().length === 0, 3000, 'spool files removed');
  }, 20_000);

  it('slow headers are cut off at the headers deadline', async () => {
    const socket = connect(api.port, '127.0.0.1');
    sockets.push(socket);
    const started = Date.now();
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - started)));
    socket.on('error', () => undefined);
    socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\n');
    const t = setInterval(() => socket.writable && socket.write('x-a: b\r\n'), 300);
    expect(await closed).toBeLessThan(2000 + 2500);
    clearInterval(t);
  }, 20_000);

  it("one key cannot take every upload slot: its second upload is refused with 429, another key's goes through", async () => {
    const slow = trickle(200);
    await waitFor(async () => (await api.gauge('sonicflow_api_uploads_in_progress')) === 1, 3000, 'the slow upload holds its slot');
    const r = await expectRefused(api, () => send(media()), 429, 'RATE_LIMITED');
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    const f = multipart(media());
    const other = await raw(api.port, 'POST', '/v1/tasks', { ...bearer(KEYS.other), 'content-type': f.contentType }, f.body);
    expect(other.status, other.text).toBe(202);
    await slow.closed;
    // the server sees the cut connection a moment after the client does
    await waitFor(async () => (await send(media())).status === 202, 3000, "acme's upload slot is released");
  }, 30_000);

  it('past the cap on concurrent uploads a submit is refused at once with 503 API_OVERLOADED and Retry-After; the slots come back', async () => {
    const slow = [trickle(200, KEYS.other), trickle(200, KEYS.third)];
    await waitFor(async () => (await api.gauge('sonicflow_api_uploads_in_progress')) === 2, 3000, 'the slow uploads hold both slots');
    const r = await expectRefused(api, () => send(media()), 503, 'API_OVERLOADED');
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    await Promise.all(slow.map((s) => s.closed));
    // the server sees the cut connections a moment after the client does
    await waitFor(async () => (await send(media())).status === 202, 3000, 'the upload slots are released');
  }, 30_000);

  it('a client that stops reading a video is cut off after the idle timeout; the connection and the file go', async () => {
    // a succeeded task of acme's, with a 48 MB video in the store: more than socket buffers hold
    const id = randomUUID();
    await new FsBlobStore(api.dataDir).put(`videos/${id}.mp4`, Buffer.alloc(48 * 1024 * 1024, 1), { contentType: 'video/mp4' });
    const ctx = testContext();
    const topic = api.topic('tasks.status');
    const now = new Date();
    const event = statusEvent({ task_id: id, state: 'SUCCEEDED', stage: 'publish', progress: 1, tenant_id: 'acme', created_at: now, at: now });
    const producer = await new PlainProducer(ctx.kafka).connect();
    await producer.send(topic, [
      { key: id, value: await ctx.serde.encode(valueSubject(topic), sonicTopology({ prefix: api.prefix }).topics[topic]!.valueSchema!, event) },
    ]);
    await producer.close();
    await waitFor(
      async () => (await raw(api.port, 'GET', `/v1/tasks/${id}`, bearer(KEYS.acme))).json.state === 'SUCCEEDED',
      10_000,
      'the task succeeded in the view',
    );

    const socket = connect(api.port, '127.0.0.1');
    sockets.push(socket);
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('connect', r));
    socket.write(`GET /v1/tasks/${id}/video HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEYS.acme}\r\n\r\n`);
    await new Promise((r) => socket.once('data', r));
    socket.pause(); // read the first bytes, then nothing more
    // a paused client hears nothing: watch the server's end of the connection instead
    const serverEnd = (): string =>
      spawnSync('ss', ['-tanH', 'state', 'established', `( sport = :${api.port} and dport = :${socket.localPort} )`], { encoding: 'utf8' }).stdout.trim();
    expect(serverEnd()).not.toBe('');
    const t0 = Date.now();
    await waitFor(() => serverEnd() === '', 2000 + 4000, 'the server closed the stalled connection');
    expect(Date.now() - t0).toBeGreaterThan(1000); // the idle timeout, not an error at once
  }, 30_000);

  it('a stream on a pipelined connection that dies gives its slot back', async () => {
    const ok = await send(media());
    const id = String(ok.json.task_id);
    const socket = connect(api.port, '127.0.0.1');
    sockets.push(socket);
    socket.on('error', () => undefined);
    const get = `GET /v1/tasks/${id}/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEYS.acme}\r\n\r\n`;
    const streams = (): Promise<number> => api.gauge('sonicflow_api_event_streams');
    expect(await streams()).toBe(0);
    socket.write(get + get); // the second's response waits behind the first, which never ends
    await waitFor(async () => (await streams()) === 2, 3000, "both streams are open, acme's two slots taken");
    socket.destroy();
    // the server sees the dead connection a moment after the client killed it
    await waitFor(async () => (await streams()) === 0, 3000, "the dead connection's stream is released");
    // both of acme's two slots are free again
    const a = await fetch(`${api.base}/v1/tasks/${id}/events`, { headers: bearer(KEYS.acme) });
    const b = await fetch(`${api.base}/v1/tasks/${id}/events`, { headers: bearer(KEYS.acme) });
    expect([a.status, b.status]).toEqual([200, 200]);
    await a.body?.cancel();
    await b.body?.cancel();
    await waitFor(async () => (await streams()) === 0, 3000, 'the cancelled streams are released');
  });

  it('event streams are capped per key (429) and in all (503); other keys keep theirs', async () => {
    const ok = await send(media());
    const id = String(ok.json.task_id);
    const open = (key: string) => fetch(`${api.base}/v1/tasks/${id}/events`, { headers: bearer(key) });
    const s1 = await open(KEYS.acme);
    const s2 = await open(KEYS.acme);
    expect([s1.status, s2.status]).toEqual([200, 200]);
    const third = await open(KEYS.acme);
    expect(third.status).toBe(429);
    expect(((await third.json()) as { code: string }).code).toBe('RATE_LIMITED');
    // the other tenant may not see acme's task at all; its streams are its own
    expect((await open(KEYS.other)).status).toBe(404);
    streams.push(s1, s2);
  });

  const streams: Response[] = [];
  it('shutdown ends every open event stream at once and the API exits 0', async () => {
    expect(streams).toHaveLength(2);
    const ended = streams.map(async (s) => {
      const reader = s.body!.getReader();
      for (;;) if ((await reader.read().catch(() => ({ done: true }))).done) return Date.now();
    });
    const t0 = Date.now();
    api.proc.proc.kill('SIGTERM');
    const times = await Promise.all(ended);
    for (const t of times) expect(t - t0).toBeLessThan(3000);
    expect(await api.proc.exited).toBe(0);
  }, 20_000);
});

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50)); // poll interval
  }
}
