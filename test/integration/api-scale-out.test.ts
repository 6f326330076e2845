/**
 * The API as several replicas over one deployment: each keeps its status view in a store of its
 * own, a task one replica accepted is found on the other at once (not 404), an Idempotency-Key
 * used on one is a replay on the other, a tenant lists its own tasks page by page, and a restart
 * resumes from the store's checkpoint instead of replaying the status topic. Real API processes,
 * broker and registry.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PlainProducer, readTopic } from '../../src/kafka/io.js';
import { valueSubject } from '../../src/serde/wire.js';
import { KEYS, bearer, multipart, raw, sampleMedia, startApiOnly, type ApiUnderTest, type RawResponse } from '../helpers/api.js';
import { LISTENING, listeningPort, onCleanup, startSonicflow, testContext, type SonicflowProcess } from '../helpers/infra.js';
import { waitUntil } from '../helpers/wait.js';
import { statusEvent } from '../../src/domain/status-event.js';

interface Replica {
  port: number;
  proc: SonicflowProcess;
}

describe('API replicas on stores (real API processes, broker, registry)', () => {
  let a: ApiUnderTest;
  let b: Replica;
  const uploads: Record<string, string> = {};

  /** Another API process of the same deployment (same topics, same secret), its own view store. */
  const replica = async (instance: string, env: Record<string, string> = {}): Promise<Replica> => {
    const proc = startSonicflow(['api'], { ...a.env, SONIC_API_INSTANCE_ID: instance, ...env });
    onCleanup(async () => {
      proc.proc.kill('SIGTERM');
      await proc.exited;
    });
    return { port: await listeningPort(proc, LISTENING.api), proc };
  };
  const submit = (port: number, key: string, headers: Record<string, string> = {}): Promise<RawResponse> =>
    raw(
      port,
      'POST',
      '/v1/tasks',
      { ...bearer(key), 'content-type': 'application/json', ...headers },
      JSON.stringify({ audio: { uri: uploads[`${key}.audio`] }, image: { uri: uploads[`${key}.image`] } }),
    );
  const get = (port: number, key: string, path: string): Promise<RawResponse> => raw(port, 'GET', path, bearer(key));

  beforeAll(async () => {
    a = await startApiOnly({ SONIC_LOG_LEVEL: 'info' });
    b = await replica('replica-b', { SONIC_LOG_LEVEL: 'info' });
    const { wav, png } = await sampleMedia();
    for (const key of [KEYS.acme, KEYS.other]) {
      for (const [field, data] of [
        ['audio', wav],
        ['image', png],
      ] as const) {
        const f = multipart([{ name: field, filename: 'x', data }]);
        const r = await raw(a.port, 'POST', '/v1/uploads', { ...bearer(key), 'content-type': f.contentType }, f.body);
        expect(r.status, r.text).toBe(201);
        uploads[`${key}.${field}`] = String(r.json.uri);
      }
    }
  }, 120_000);

  it('a task accepted by one replica is found on the other at once, every time', async () => {
    for (let i = 0; i < 15; i++) {
      const [from, to] = i % 2 === 0 ? [a.port, b.port] : [b.port, a.port];
      const s = await submit(from, KEYS.acme);
      expect(s.status, s.text).toBe(202);
      const g = await get(to, KEYS.acme, `/v1/tasks/${String(s.json.task_id)}`);
      expect(g.status, g.text).toBe(200);
      expect(g.json.state).toBe('QUEUED');
    }
    // an id nobody submitted is still 404, and soon: the view is there well before the wait's bound
    const t0 = Date.now();
    const missing = await get(b.port, KEYS.acme, '/v1/tasks/00000000-0000-4000-8000-000000000000');
    expect(missing.status).toBe(404);
    expect(Date.now() - t0).toBeLessThan(1900);
  });

  it('an Idempotency-Key used on one replica is a replay on the other', async () => {
    const first = await submit(a.port, KEYS.acme, { 'idempotency-key': 'scale-out-key-1' });
    expect(first.status, first.text).toBe(202);
    const again = await submit(b.port, KEYS.acme, { 'idempotency-key': 'scale-out-key-1' });
    expect(again.status, again.text).toBe(200);
    expect(again.json.task_id).toBe(first.json.task_id);
    expect(again.json.idempotent_replay).toBe(true);
  });

  it('a retry with the same Idempotency-Key and another body is 422 IDEMPOTENCY_KEY_REUSED on every replica, and enqueues nothing', async () => {
    const key = { 'idempotency-key': 'scale-out-key-2' };
    const body = (params: Record<string, unknown>) =>
      JSON.stringify({ audio: { uri: uploads[`${KEYS.acme}.audio`] }, image: { uri: uploads[`${KEYS.acme}.image`] }, params });
    const json = { ...bearer(KEYS.acme), 'content-type': 'application/json', ...key };
    const first = await raw(a.port, 'POST', '/v1/tasks', json, body({ seed: 7 }));
    expect(first.status, first.text).toBe(202);
    // the same request, with a default spelled out, is the same request
    expect((await raw(b.port, 'POST', '/v1/tasks', json, body({ seed: 7, crop_to_face: true }))).status).toBe(200);
    const before = await a.requestedEnd();
    for (const port of [a.port, b.port]) {
      const r = await raw(port, 'POST', '/v1/tasks', json, body({ seed: 8 }));
      expect(r.status, r.text).toBe(422);
      expect(r.json.code).toBe('IDEMPOTENCY_KEY_REUSED');
    }
    // a multipart retry is compared by its files' content: the same files replay, another file is refused
    const { wav, png } = await sampleMedia();
    const form = (audio: Buffer) =>
      multipart([
        { name: 'audio', filename: 'a.wav', data: audio },
        { name: 'image', filename: 'p.png', data: png },
      ]);
    const mkey = { 'idempotency-key': 'scale-out-key-3' };
    const f1 = form(wav);
    expect((await raw(a.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': f1.contentType, ...mkey }, f1.body)).status).toBe(202);
    const f2 = form(wav);
    expect((await raw(b.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': f2.contentType, ...mkey }, f2.body)).status).toBe(200);
    const other = Buffer.from(wav);
    other[other.length - 1] = other[other.length - 1]! ^ 1;
    const f3 = form(other);
    const before3 = await a.requestedEnd();
    const r3 = await raw(b.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': f3.contentType, ...mkey }, f3.body);
    expect(r3.status, r3.text).toBe(422);
    expect(r3.json.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await a.requestedEnd()).toBe(before3);
    expect(before3).toBeGreaterThan(before);
  });

  it("lists a tenant's own tasks newest first, page by page, by state and time, and refuses a bad query", async () => {
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) {
      mine.push(String((await submit(a.port, KEYS.other)).json.task_id));
      // accepted by replica a a moment ago, first on replica b's listing
      const newest = await get(b.port, KEYS.other, '/v1/tasks?limit=1');
      expect((newest.json.tasks as { task_id: string }[]).map((t) => t.task_id)).toEqual([mine.at(-1)]);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: RawResponse = await get(b.port, KEYS.other, `/v1/tasks?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status, r.text).toBe(200);
      const tasks = r.json.tasks as { task_id: string; created_at: string }[];
      expect(tasks.length).toBeLessThanOrEqual(2);
      seen.push(...tasks.map((t) => t.task_id));
      cursor = r.json.next_cursor as string | null;
      pages += 1;
    } while (cursor && pages < 10);
    expect(seen).toEqual([...mine].reverse());
    const asc = await get(b.port, KEYS.other, '/v1/tasks?order=asc&limit=100');
    expect((asc.json.tasks as { task_id: string }[]).map((t) => t.task_id)).toEqual(mine);
    const queued = await get(b.port, KEYS.other, '/v1/tasks?state=QUEUED&limit=100');
    expect((queued.json.tasks as unknown[]).length).toBe(5);
    expect((await get(b.port, KEYS.other, '/v1/tasks?state=SUCCEEDED')).json.tasks).toEqual([]);
    expect((await get(b.port, KEYS.other, `/v1/tasks?since=${new Date(Date.now() + 60_000).toISOString()}`)).json.tasks).toEqual([]);
    const since = (asc.json.tasks as { created_at: string }[])[2]!.created_at;
    expect((await get(b.port, KEYS.other, `/v1/tasks?order=asc&since=${since}`)).json.tasks).toHaveLength(3);
    // acme's listing holds none of them, and another listing's cursor is refused
    const acme = await get(b.port, KEYS.acme, '/v1/tasks?limit=100');
    expect((acme.json.tasks as { task_id: string }[]).some((t) => mine.includes(t.task_id))).toBe(false);
    const otherCursor = (await get(b.port, KEYS.other, '/v1/tasks?limit=1')).json.next_cursor as string;
    for (const q of ['state=BOGUS', 'limit=0', 'limit=101', 'limit=1e2', 'since=yesterday', 'order=sideways', 'cursor=%2F%2F', `cursor=${otherCursor}`]) {
      const r = await get(b.port, KEYS.acme, `/v1/tasks?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.json.code, q).toBe('INVALID_REQUEST');
    }
  });

  it("a replica's janitor removes an ended task past retention: its blobs, its key and its status (tombstones), and every replica forgets it", async () => {
    const c = await replica('replica-janitor', { SONIC_TASK_RETENTION: '1s', SONIC_JANITOR_INTERVAL_MS: '500' });
    const { form } = await sampleMedia();
    const sub = await raw(a.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': form.contentType, 'idempotency-key': 'janitor-1' }, form.body);
    expect(sub.status, sub.text).toBe(202);
    const id = String(sub.json.task_id);
    const inputs = (): string[] => (existsSync(join(a.dataDir, 'tasks', id)) ? readdirSync(join(a.dataDir, 'tasks', id), { recursive: true }).map(String) : []);
    expect(inputs().some((f) => /input\/audio-/.test(f))).toBe(true);
    // the task ends (as publish would say it), ten seconds ago
    const ctx = testContext();
    const status = a.topic('tasks.status');
    const producer = await new PlainProducer(ctx.kafka).connect();
    const at = new Date(Date.now() - 10_000);
    const ended = statusEvent({ task_id: id, state: 'SUCCEEDED', stage: 'publish', progress: 1, tenant_id: 'acme', created_at: at, at });
    await producer.send(status, [{ key: id, value: await ctx.serde.encode(valueSubject(status), 'task-status', ended) }]);
    await producer.close();
    await waitUntil(async () => (await get(c.port, KEYS.acme, `/v1/tasks/${id}`)).status === 404, 20_000, 'the janitor to remove the task');
    expect(inputs().filter((f) => /input\//.test(f) && !f.endsWith('input'))).toEqual([]);
    // tombstones: every replica forgets the task, and its key is free again
    await waitUntil(async () => (await get(b.port, KEYS.acme, `/v1/tasks/${id}`)).status === 404, 10_000, 'the other replica to drop the task');
    const keys = await readTopic(ctx.kafka, a.topic('tasks.keys'), { idleMs: 1500 });
    expect(keys.filter((r) => r.key === id).at(-1)?.value).toBeNull();
    const again = await raw(b.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': form.contentType, 'idempotency-key': 'janitor-1' }, form.body);
    expect(again.status, again.text).toBe(202);
  });

  it('a restarted replica resumes from its store (no replay) and knows every task; a second process on its store refuses to start', async () => {
    const s = await submit(a.port, KEYS.acme);
    expect((await get(b.port, KEYS.acme, `/v1/tasks/${String(s.json.task_id)}`)).status).toBe(200);
    const twin = startSonicflow(['api'], { ...a.env, SONIC_API_INSTANCE_ID: 'replica-b' });
    expect(await twin.exited).not.toBe(0);
    expect(twin.logs()).toMatch(/CONFIG_INVALID|in use by process/);
    b.proc.proc.kill('SIGTERM');
    await b.proc.exited;
    const again = await replica('replica-b', { SONIC_LOG_LEVEL: 'info' });
    await again.proc.waitForLog(/status view resumes from its store/);
    const resumed = again.proc
      .logs()
      .split('\n')
      .find((l) => l.includes('status view resumes from its store'));
    const line = JSON.parse(resumed!) as { tasks: number; resumed_partitions: number };
    // the store held every task before a single record was read again
    expect(line.resumed_partitions).toBeGreaterThan(0);
    expect(line.tasks).toBeGreaterThanOrEqual(22);
    // and read nothing again: every partition was sought to its checkpoint before the first fetch
    await again.proc.waitForLog(/status view caught up/);
    const caught = JSON.parse(
      again.proc
        .logs()
        .split('\n')
        .find((l) => l.includes('status view caught up'))!,
    ) as { records_read: number };
    expect(caught.records_read).toBe(0);
    expect((await get(again.port, KEYS.acme, `/v1/tasks/${String(s.json.task_id)}`)).json.state).toBe('QUEUED');
    // the first request of a key is kept too
    const reused = await raw(
      again.port,
      'POST',
      '/v1/tasks',
      { ...bearer(KEYS.acme), 'content-type': 'application/json', 'idempotency-key': 'scale-out-key-2' },
      JSON.stringify({ audio: { uri: uploads[`${KEYS.acme}.audio`] }, image: { uri: uploads[`${KEYS.acme}.image`] }, params: { seed: 9 } }),
    );
    expect(reused.json.code).toBe('IDEMPOTENCY_KEY_REUSED');
  });
});
