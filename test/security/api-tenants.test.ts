/**
 * Hostile suite, part 2: one tenant reaching another's data — blob references outside the own
 * upload area, other tenants' tasks, their streams and videos, and task ids guessed from an
 * Idempotency-Key. Real API, broker and registry; nothing refused may enqueue anything.
 */
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { KEYS, bearer, expectRefused, multipart, raw, sampleMedia, startApiOnly, type ApiUnderTest, type RawResponse } from '../helpers/api.js';
import { waitUntil } from '../helpers/wait.js';

/** The unkeyed id scheme sonicflow used before (UUID v5 style over tenant and key): anyone could compute it. */
function guessableId(tenant: string, key: string): string {
  const h = createHash('sha1').update('sonicflow-idempotency-v1').update('\u0000').update(tenant).update('\u0000').update(key).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

describe("no tenant reaches another tenant's data (real API, broker, registry)", () => {
  let api: ApiUnderTest;
  const files: Record<string, Buffer> = {};
  const uploads: Record<string, string> = {};
  let acmeTask = '';

  const upload = async (key: string, field: 'audio' | 'image', data: Buffer): Promise<RawResponse> => {
    const f = multipart([{ name: field, filename: 'x', data }]);
    return raw(api.port, 'POST', '/v1/uploads', { ...bearer(key), 'content-type': f.contentType }, f.body);
  };
  const submitJson = (key: string, body: unknown, headers: Record<string, string> = {}) =>
    raw(api.port, 'POST', '/v1/tasks', { ...bearer(key), 'content-type': 'application/json', ...headers }, JSON.stringify(body));
  const submitForm = (key: string, headers: Record<string, string> = {}) => {
    const f = multipart([
      { name: 'audio', filename: 'a.wav', data: files.wav! },
      { name: 'image', filename: 'p.png', data: files.png! },
    ]);
    return raw(api.port, 'POST', '/v1/tasks', { ...bearer(key), 'content-type': f.contentType, ...headers }, f.body);
  };

  beforeAll(async () => {
    api = await startApiOnly();
    ({ wav: files.wav, png: files.png } = await sampleMedia());
    for (const [tenant, key] of [
      ['acme', KEYS.acme],
      ['other', KEYS.other],
    ] as const) {
      const a = await upload(key, 'audio', files.wav);
      const i = await upload(key, 'image', files.png);
      expect(a.status, a.text).toBe(201);
      expect(i.status, i.text).toBe(201);
      expect(String(a.json.uri)).toMatch(new RegExp(`^blob://uploads/${tenant}/[0-9a-f-]{36}$`));
      uploads[`${tenant}.audio`] = String(a.json.uri);
      uploads[`${tenant}.image`] = String(i.json.uri);
    }
    const r = await submitForm(KEYS.acme);
    expect(r.status, r.text).toBe(202);
    acmeTask = String(r.json.task_id);
  }, 120_000);

  it("an upload answers with a uri in the caller's own area, its size and sha256", async () => {
    const r = await upload(KEYS.acme, 'image', files.png!);
    expect(r.status).toBe(201);
    expect(r.json).toMatchObject({
      kind: 'image',
      content_type: 'image/png',
      size_bytes: files.png!.length,
      sha256: createHash('sha256').update(files.png!).digest('hex'),
    });
  });

  it("a JSON submit of the caller's own uploads is accepted", async () => {
    const before = await api.requestedEnd();
    const r = await submitJson(KEYS.acme, { audio: { uri: uploads['acme.audio'] }, image: { uri: uploads['acme.image'] } });
    expect(r.status, r.text).toBe(202);
    expect(await api.requestedEnd()).toBeGreaterThan(before);
  });

  const references: [string, () => Record<string, unknown>, number, string][] = [
    ["another tenant's upload", () => ({ audio: { uri: uploads['other.audio'] }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    [
      "another task's stored input",
      () => ({ audio: { uri: uploads['acme.audio'] }, image: { uri: `blob://tasks/${acmeTask}/input/image` } }),
      403,
      'FORBIDDEN',
    ],
    ['a published video as audio', () => ({ audio: { uri: `blob://videos/${acmeTask}.mp4` }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    [
      'a path that climbs out of the area',
      () => ({ audio: { uri: 'blob://uploads/acme/../other/x' }, image: { uri: uploads['acme.image'] } }),
      403,
      'FORBIDDEN',
    ],
    ['a percent-encoded climb', () => ({ audio: { uri: 'blob://uploads/acme/%2e%2e/other/x' }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    [
      'the area of a tenant whose name starts alike',
      () => ({ audio: { uri: uploads['acme.audio']!.replace('/acme/', '/acme2/') }, image: { uri: uploads['acme.image'] } }),
      403,
      'FORBIDDEN',
    ],
    ['the area itself, no file', () => ({ audio: { uri: 'blob://uploads/acme' }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    ['a local file', () => ({ audio: { uri: 'file:///etc/passwd' }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    ['another store', () => ({ audio: { uri: 's3://other-bucket/uploads/acme/x' }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    ['an absolute path in a blob uri', () => ({ audio: { uri: 'blob:///etc/passwd' }, image: { uri: uploads['acme.image'] } }), 403, 'FORBIDDEN'],
    [
      'an own image referenced as audio',
      () => ({ audio: { uri: uploads['acme.image'] }, image: { uri: uploads['acme.image'] } }),
      415,
      'UNSUPPORTED_AUDIO_FORMAT',
    ],
    [
      'an own upload that does not exist',
      () => ({ audio: { uri: 'blob://uploads/acme/00000000-0000-4000-8000-000000000009' }, image: { uri: uploads['acme.image'] } }),
      422,
      'INPUT_NOT_FOUND',
    ],
    ['a uri that is not a string', () => ({ audio: { uri: { $ne: null } }, image: { uri: uploads['acme.image'] } }), 400, 'INVALID_REQUEST'],
  ];
  it.each(references.map(([name, body, status, code]) => ({ name, body, status, code })))(
    'a JSON reference to $name → $status $code, nothing enqueued',
    async ({ body, status, code }) => {
      await expectRefused(api, () => submitJson(KEYS.acme, body()), status, code);
    },
  );

  it("another tenant's task, its events and its video look exactly like a missing task", async () => {
    const missing = await raw(api.port, 'GET', '/v1/tasks/00000000-0000-4000-8000-00000000dead', bearer(KEYS.other));
    for (const path of [`/v1/tasks/${acmeTask}`, `/v1/tasks/${acmeTask}/events`, `/v1/tasks/${acmeTask}/video`]) {
      const r = await raw(api.port, 'GET', path, bearer(KEYS.other));
      expect(r.status, path).toBe(404);
      expect(r.json.code, path).toBe('TASK_NOT_FOUND');
      expect(r.text.replace(acmeTask, 'ID')).toBe(missing.text.replace('00000000-0000-4000-8000-00000000dead', 'ID'));
    }
    expect((await raw(api.port, 'GET', `/v1/tasks/${acmeTask}`, bearer(KEYS.acme))).status).toBe(200);
  });

  it('idempotent task ids cannot be computed from tenant and key, and one key in two tenants makes two tasks', async () => {
    const a = await submitForm(KEYS.other, { 'idempotency-key': 'order-1' });
    expect(a.status, a.text).toBe(202);
    const id = String(a.json.task_id);
    expect(id).not.toBe(guessableId('other', 'order-1'));
    // the same key from another tenant is another task, and cannot read the first
    const b = await submitForm(KEYS.acme, { 'idempotency-key': 'order-1' });
    expect(b.status).toBe(202);
    expect(b.json.task_id).not.toBe(id);
    expect((await raw(api.port, 'GET', `/v1/tasks/${id}`, bearer(KEYS.acme))).status).toBe(404);
    // the owner's retry is a replay of the same task, enqueued once
    const before = await api.requestedEnd();
    const again = await submitForm(KEYS.other, { 'idempotency-key': 'order-1' });
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ task_id: id, idempotent_replay: true });
    expect(await api.requestedEnd()).toBe(before);
  });

  it('concurrent submits with one Idempotency-Key make one task even when the first of them fails', async () => {
    const key = `race-${Date.now()}`;
    // the first: a multipart submit that takes its time, then ends without its image (400)
    const socket = connect(api.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let first = '';
    socket.on('data', (d) => (first += d.toString()));
    const firstDone = new Promise((r) => socket.on('data', () => /\r\n\r\n\{.*\}$/s.test(first) && r(undefined)));
    const head = `--abc\r\ncontent-disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n`;
    const tail = `\r\n--abc--\r\n`;
    const body = Buffer.concat([Buffer.from(head), files.wav!, Buffer.from(tail)]);
    socket.write(
      `POST /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEYS.acme}\r\nidempotency-key: ${key}\r\ncontent-type: multipart/form-data; boundary=abc\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`,
    );
    socket.write(body.subarray(0, 100));
    // the first has claimed the task id once it holds an upload slot
    await waitUntil(async () => (await api.gauge('sonicflow_api_uploads_in_progress')) === 1, 10_000, 'the first submit under way', 50);
    // two more with the same key wait for it
    const before = await api.requestedEnd();
    const json = { audio: { uri: uploads['acme.audio'] }, image: { uri: uploads['acme.image'] } };
    const others = [submitJson(KEYS.acme, json, { 'idempotency-key': key }), submitJson(KEYS.acme, json, { 'idempotency-key': key })];
    await waitUntil(async () => (await api.gauge('sonicflow_api_submits_waiting')) === 2, 10_000, 'both to wait for the first', 50);
    socket.write(body.subarray(100));
    await firstDone;
    socket.destroy();
    expect(first).toMatch(/^HTTP\/1\.1 400/);
    const answers = await Promise.all(others);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 202]);
    expect(answers[0]!.json.task_id).toBe(answers[1]!.json.task_id);
    // one task: its request and QUEUED status, nothing more
    expect(await api.requestedEnd()).toBe(before + 2n);
  });

  it('an Idempotency-Key sent twice in one request → 422 IDEMPOTENCY_KEY_INVALID, nothing enqueued', async () => {
    const f = multipart([
      { name: 'audio', filename: 'a.wav', data: files.wav! },
      { name: 'image', filename: 'p.png', data: files.png! },
    ]);
    await expectRefused(
      api,
      () => raw(api.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': f.contentType, 'idempotency-key': 'a, b' }, f.body),
      422,
      'IDEMPOTENCY_KEY_INVALID',
    );
  });
});
