/**
 * `sonicflow gc` against the real broker, registry and a filesystem blob store: status events and
 * blobs are written as the pipeline writes them, then `gc --dry-run` must list exactly the ended
 * tasks past retention and delete nothing, and `gc` must delete their blobs and leave tombstones
 * on the status topic, while a young task, a task that never ended and a fresh upload stay. gc
 * reads through the API's status view: in a temporary store it removes, or in a kept `--view-dir`
 * that the next run resumes from (reading only what is new), never in a store another process holds.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { StatusView } from '../../src/app/status-view.js';
import { FsBlobStore } from '../../src/blob/index.js';
import { publishedKey } from '../../src/domain/paths.js';
import { PlainProducer, readTopic } from '../../src/kafka/io.js';
import { valueSubject } from '../../src/serde/wire.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { deployTopology, onCleanup, sonicflow, testContext, uniqueName } from '../helpers/infra.js';

const HOUR = 3_600_000;

describe('sonicflow gc removes ended tasks past retention and old uploads (real broker, registry, fs store)', () => {
  const prefix = uniqueName('gc').replace(/-/g, '_');
  const topology = sonicTopology({ prefix });
  const dataDir = mkdtempSync(join(tmpdir(), 'sonicflow-gc-'));
  const store = new FsBlobStore(dataDir);
  // gc's temporary view stores go here, so that the test sees them removed
  const tmp = mkdtempSync(join(tmpdir(), 'sonicflow-gc-tmp-'));
  const env = { SONIC_TOPIC_PREFIX: prefix, SONIC_DATA_DIR: dataDir, SONIC_BLOB_STORE: 'fs', TMPDIR: tmp };
  // a view store kept from one run to the next
  const viewDir = join(mkdtempSync(join(tmpdir(), 'sonicflow-gc-kept-')), 'view');
  const ids = { oldSucceeded: randomUUID(), oldFailed: randomUUID(), young: randomUUID(), stuck: randomUUID(), gone: randomUUID() };
  const blobsOf = (id: string) => [`tasks/${id}/input/audio-1`, `tasks/${id}/preprocess/image.png`, `tasks/${id}/infer/rendered.mp4`, publishedKey(id)];
  const oldUpload = `uploads/acme/${randomUUID()}`;
  const freshUpload = `uploads/acme/${randomUUID()}`;

  beforeAll(async () => {
    const ctx = testContext();
    await deployTopology(topology);
    const now = Date.now();
    const event = (id: string, state: string, agoMs: number) => ({
      task_id: id,
      state,
      stage: state === 'QUEUED' ? null : 'publish',
      tenant_id: 'acme',
      at: new Date(now - agoMs),
    });
    // each task's history, oldest first; the old SUCCEEDED one also got a late, stale progress event
    const events = [
      event(ids.oldSucceeded, 'QUEUED', 3 * HOUR),
      event(ids.oldSucceeded, 'SUCCEEDED', 2 * HOUR),
      { ...event(ids.oldSucceeded, 'INFERRING', 2.5 * HOUR), progress: 0.5 },
      event(ids.oldFailed, 'FAILED', 5 * HOUR),
      event(ids.young, 'SUCCEEDED', 1000),
      event(ids.stuck, 'INFERRING', 4 * HOUR),
      event(ids.gone, 'SUCCEEDED', 6 * HOUR),
    ];
    const producer = await new PlainProducer(ctx.kafka).connect();
    onCleanup(() => producer.close());
    const status = topology.statusTopic;
    for (const e of events) await producer.send(status, [{ key: e.task_id, value: await ctx.serde.encode(valueSubject(status), 'task-status', e) }]);
    // removed before: its tombstone is the last word
    await producer.send(status, [{ key: ids.gone, value: null }]);
    for (const id of [ids.oldSucceeded, ids.oldFailed, ids.young, ids.stuck]) for (const key of blobsOf(id)) await store.put(key, Buffer.from(key));
    await store.put(oldUpload, Buffer.from('old upload'), { contentType: 'audio/wav' });
    await store.put(freshUpload, Buffer.from('fresh upload'), { contentType: 'audio/wav' });
    const twoDaysAgo = new Date(now - 48 * HOUR);
    utimesSync(join(dataDir, oldUpload), twoDaysAgo, twoDaysAgo);
  }, 120_000);

  const present = async (id: string) => {
    const out: string[] = [];
    for (const key of blobsOf(id)) if (await store.stat(key)) out.push(key);
    return out;
  };

  // the expired tasks' table comes first, before its summary line
  const listedIn = (stdout: string) =>
    stdout
      .slice(0, stdout.indexOf('expired task(s)'))
      .split('\n')
      .filter((l) => /^[0-9a-f-]{36} /.test(l));

  it('--dry-run lists the two ended tasks past retention and the old upload, and deletes nothing', async () => {
    const r = sonicflow(['gc', '--dry-run', '--older-than', '1h'], env);
    expect(r.code, r.stderr).toBe(0);
    const listed = listedIn(r.stdout);
    expect(listed.map((l) => l.split(/\s+/).slice(0, 3))).toEqual([
      [ids.oldFailed, 'acme', 'FAILED'],
      [ids.oldSucceeded, 'acme', 'SUCCEEDED'],
    ]);
    expect(listed[0]).toMatch(/ 5h\d+m\s+4\s+\d+$/);
    expect(r.stdout).toContain('2 expired task(s) would be removed (8 blob(s)');
    expect(r.stdout).toContain(oldUpload);
    expect(r.stdout).not.toContain(freshUpload);
    expect(r.stdout).toContain(`1 task(s) past retention never ended and are kept`);
    expect(r.stdout).toMatch(new RegExp(`${ids.stuck}\\s+acme\\s+INFERRING`));
    expect(r.stdout).not.toContain(ids.gone);
    for (const id of [ids.oldSucceeded, ids.oldFailed, ids.young, ids.stuck]) expect(await present(id)).toEqual(blobsOf(id));
    expect(await store.stat(oldUpload)).toBeDefined();
    // read through a status view in a temporary store (7 events and a tombstone), removed at the end
    expect(r.stdout).toContain('status view: 8 record(s) read, 4 task(s) known (temporary store)');
    expect(readdirSync(tmp).filter((f) => f.startsWith('sonicflow-gc-view-'))).toEqual([]);
  });

  it('with --view-dir the store is kept: the next run resumes from it, reads nothing again and lists the same tasks', () => {
    const first = sonicflow(['gc', '--dry-run', '--older-than', '1h', '--view-dir', viewDir], env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`status view: 8 record(s) read, 4 task(s) known (store ${viewDir}, kept)`);
    const again = sonicflow(['gc', '--dry-run', '--older-than', '1h', '--view-dir', viewDir], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`status view: 0 record(s) read, 4 task(s) known (store ${viewDir}, kept)`);
    expect(listedIn(again.stdout).map((l) => l.split(/\s+/)[0])).toEqual([ids.oldFailed, ids.oldSucceeded]);
    expect(again.stdout).toMatch(new RegExp(`${ids.stuck}\\s+acme\\s+INFERRING`));
  });

  it('a view store in use by another process (an API, another gc) is refused, and nothing is removed', async () => {
    const ctx = testContext();
    // what a running API (or a gc still running) holds: the store's directory lock
    const held = new StatusView({
      topic: topology.statusTopic,
      schema: 'task-status',
      keys: { topic: `${prefix}.tasks.keys`, schema: 'task-key' },
      kafka: ctx.kafka,
      codec: ctx.serde,
      logger: ctx.logger,
      groupPrefix: `${prefix}.test-view`,
      dir: viewDir,
    });
    try {
      const r = sonicflow(['gc', '--older-than', '1h', '--view-dir', viewDir], env);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toContain(`the status view store ${viewDir} is in use by process ${process.pid}`);
      expect(r.stdout + r.stderr).toContain('--view-dir of its own');
      expect(await present(ids.oldSucceeded)).toEqual(blobsOf(ids.oldSucceeded));
    } finally {
      await held.stop();
    }
  });

  it('gc deletes their blobs and the old upload, then tombstones them; the young and the unfinished task keep everything', async () => {
    const r = sonicflow(['gc', '--older-than', '1h'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('2 expired task(s) removed (8 blob(s)');
    expect(r.stdout).toContain('2 tombstone(s) written');
    expect(r.stdout).toContain('1 expired upload(s) removed');
    expect(await present(ids.oldSucceeded)).toEqual([]);
    expect(await present(ids.oldFailed)).toEqual([]);
    expect(await present(ids.young)).toEqual(blobsOf(ids.young));
    expect(await present(ids.stuck)).toEqual(blobsOf(ids.stuck));
    expect(await store.stat(oldUpload)).toBeUndefined();
    expect(await store.stat(freshUpload)).toBeDefined();
    const records = await readTopic(testContext().kafka, topology.statusTopic, { isolation: 'read_committed', idleMs: 1500 });
    const last = new Map(records.map((rec) => [rec.key, rec.value]));
    expect(last.get(ids.oldSucceeded)).toBeNull();
    expect(last.get(ids.oldFailed)).toBeNull();
    expect(last.get(ids.young)).not.toBeNull();
    expect(last.get(ids.stuck)).not.toBeNull();
    // and their idempotency keys go with them (tombstoned before the status)
    const keys = await readTopic(testContext().kafka, `${prefix}.tasks.keys`, { isolation: 'read_committed', idleMs: 1500 });
    expect(keys.map((rec) => [rec.key, rec.value]).sort()).toEqual(
      [
        [ids.oldFailed, null],
        [ids.oldSucceeded, null],
      ].sort(),
    );
    // a second run finds nothing more to do
    const again = sonicflow(['gc', '--older-than', '1h'], env);
    expect(again.stdout).toContain('0 expired task(s) removed');
  });

  it('a kept view resumes past what another run removed: it reads only the new tombstones, and the removed tasks are gone from it', () => {
    const r = sonicflow(['gc', '--older-than', '1h', '--view-dir', viewDir], env);
    expect(r.code, r.stderr).toBe(0);
    // two status tombstones and two idempotency-key tombstones since the kept store's last run
    expect(r.stdout).toContain(`status view: 4 record(s) read, 2 task(s) known (store ${viewDir}, kept)`);
    expect(r.stdout).toContain('0 expired task(s) removed');
    expect(r.stdout).toMatch(new RegExp(`${ids.stuck}\\s+acme\\s+INFERRING`));
  });
});
