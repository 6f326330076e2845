/**
 * A task submitted by reference to uploads outlives them: the submit copies each upload into the
 * task's own inputs, so a task that waits in a backlog past SONIC_UPLOAD_RETENTION (here: the
 * stages are not running yet while `sonicflow gc` removes the uploads) still succeeds. Real API
 * and stage processes, broker, registry, filesystem store, builtin backend.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/blob/index.js';
import type { TaskRequest } from '../../src/domain/records.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { KEYS, bearer, multipart, raw, sampleMedia, startApiOnly, type ApiUnderTest } from '../helpers/api.js';
import { readAll } from '../helpers/chain.js';
import { sonicflow, startSonicflow, testContext } from '../helpers/infra.js';
import { pipelineStages } from '../helpers/pipeline.js';
import { waitUntil } from '../helpers/wait.js';

describe('a task submitted by reference outlives its uploads (real API, stages, broker, registry, fs store)', () => {
  let api: ApiUnderTest;
  let store: FsBlobStore;
  const uploads: Record<'audio' | 'image', { uri: string; sha256: string; size_bytes: number }> = {} as never;
  const tasks: string[] = [];

  const submit = (headers: Record<string, string> = {}) =>
    raw(
      api.port,
      'POST',
      '/v1/tasks',
      { ...bearer(KEYS.acme), 'content-type': 'application/json', ...headers },
      JSON.stringify({ audio: { uri: uploads.audio.uri }, image: { uri: uploads.image.uri }, params: { min_resolution: 256 } }),
    );
  const requestOf = async (id: string): Promise<TaskRequest> => {
    const topic = api.topic('tasks.requested');
    const record = (await readAll(topic, 500)).find((r) => r.key === id);
    expect(record, `the request of ${id}`).toBeDefined();
    return (await testContext().serde.decode<TaskRequest>(record!.value!, sonicTopology({ prefix: api.prefix }).topics[topic]!.valueSchema!)).value;
  };
  const inputsOf = async (id: string): Promise<string[]> => {
    const keys: string[] = [];
    for await (const e of store.list(`tasks/${id}/input/`)) keys.push(e.key);
    return keys.sort();
  };

  beforeAll(async () => {
    api = await startApiOnly({ SONIC_LOG_LEVEL: 'info' });
    store = new FsBlobStore(api.dataDir);
    const { wav, png } = await sampleMedia();
    for (const [field, data] of [
      ['audio', wav],
      ['image', png],
    ] as const) {
      const f = multipart([{ name: field, filename: 'x', data }]);
      const r = await raw(api.port, 'POST', '/v1/uploads', { ...bearer(KEYS.acme), 'content-type': f.contentType }, f.body);
      expect(r.status, r.text).toBe(201);
      uploads[field] = { uri: String(r.json.uri), sha256: String(r.json.sha256), size_bytes: Number(r.json.size_bytes) };
    }
  }, 120_000);

  it("copies the referenced uploads into each task's own inputs at submit; a replay copies nothing", async () => {
    const first = await submit({ 'idempotency-key': 'claim-1' });
    expect(first.status, first.text).toBe(202);
    // one upload serves any number of tasks
    const second = await submit();
    expect(second.status, second.text).toBe(202);
    tasks.push(String(first.json.task_id), String(second.json.task_id));
    for (const id of tasks) {
      const request = await requestOf(id);
      for (const kind of ['audio', 'image'] as const) {
        const ref = request[kind];
        expect(ref.uri, kind).toMatch(new RegExp(`^blob://tasks/${id}/input/${kind}-[0-9a-f]{8}$`));
        // the copy is the upload: same checksum, same size
        expect(ref).toMatchObject({ sha256: uploads[kind].sha256, size_bytes: uploads[kind].size_bytes });
        expect(await store.stat(store.keyFromUri(ref.uri))).toMatchObject({ sha256: uploads[kind].sha256, size_bytes: uploads[kind].size_bytes });
      }
      expect(await inputsOf(id)).toHaveLength(2);
    }
    // a retry of the first submit is a replay (the fingerprint took the uploads' checksums), and copies nothing
    const replay = await submit({ 'idempotency-key': 'claim-1' });
    expect(replay.status, replay.text).toBe(200);
    expect(replay.json).toMatchObject({ task_id: tasks[0], idempotent_replay: true });
    expect(await inputsOf(tasks[0]!)).toHaveLength(2);
    // the uploads themselves stay
    for (const kind of ['audio', 'image'] as const) expect(await store.stat(store.keyFromUri(uploads[kind].uri)), kind).toBeDefined();
  });

  it('the tasks still succeed after retention removed the uploads while they waited in the backlog', async () => {
    // the backlog: no stage runs yet; the uploads pass their retention (1 s here) and gc removes them
    await new Promise((r) => setTimeout(r, 1500));
    const gc = sonicflow(['gc', '--uploads-older-than', '1s'], api.env);
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.stdout).toContain('2 expired upload(s) removed');
    for (const kind of ['audio', 'image'] as const) expect(await store.stat(store.keyFromUri(uploads[kind].uri)), kind).toBeUndefined();

    // the GPUs come back
    const stages = startSonicflow(['run', ...pipelineStages(sonicTopology({ prefix: api.prefix }))], {
      ...api.env,
      SONIC_API_PORT: String(api.port),
      SONIC_METRICS_PORT: '0',
      SONIC_RETRY_DELAY_SCALE: '0.02',
      SONIC_SESSION_TIMEOUT_MS: '10000',
      SONIC_HEARTBEAT_INTERVAL_MS: '1000',
    });
    const state = async (id: string) => (await raw(api.port, 'GET', `/v1/tasks/${id}`, bearer(KEYS.acme))).json;
    await waitUntil(
      async () => {
        for (const id of tasks) if (!['SUCCEEDED', 'FAILED'].includes(String((await state(id)).state))) return false;
        return true;
      },
      150_000,
      'both tasks to end',
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${stages.logs().slice(-3000)}`);
    });
    for (const id of tasks) {
      const s = await state(id);
      expect(s.state, JSON.stringify(s)).toBe('SUCCEEDED');
      const video = await raw(api.port, 'GET', `/v1/tasks/${id}/video`, bearer(KEYS.acme));
      expect(video.status).toBe(200);
      expect(video.headers['content-type']).toBe('video/mp4');
    }
  }, 180_000);
});
