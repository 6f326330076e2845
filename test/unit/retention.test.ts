/**
 * Retention logic on a real filesystem store: the order (blobs, then tombstone) that makes a
 * crash or a failed delete harmless, and the janitor's timer (never two runs at once).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectGarbage, startJanitor, type ExpiredTask, type RetentionSource } from '../../src/app/retention.js';
import { FsBlobStore, type BlobStore } from '../../src/blob/index.js';
import { SonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import type { OutRecord } from '../../src/kafka/io.js';

const logger = createLogger('test', 'silent');
const old = (id: string): ExpiredTask => ({ task_id: id, tenant_id: 'acme', state: 'SUCCEEDED', updated_at: new Date(0) });
const source = (tasks: ExpiredTask[]): RetentionSource => ({ expired: async (_before, limit) => tasks.slice(0, limit) });
/** Where the tombstones went, in order. */
const sink = () => {
  const sent: { topic: string; records: OutRecord[] }[] = [];
  return { sent, send: async (topic: string, records: OutRecord[]) => void sent.push({ topic, records }) };
};

describe('collectGarbage', () => {
  it('deletes every blob of an expired task before its tombstone, and gives no tombstone to a task whose blobs could not all go', async () => {
    const fs = new FsBlobStore(mkdtempSync(join(tmpdir(), 'sonicflow-ret-')));
    for (const id of ['a', 'b']) {
      await fs.put(`tasks/${id}/infer/rendered.mp4`, Buffer.from('x'));
      await fs.put(`videos/${id}.mp4`, Buffer.from('yy'));
    }
    // b's video cannot be deleted (functions bound to the store: its private fields need it as `this`)
    const store = new Proxy(fs, {
      get: (t, p) =>
        p === 'delete'
          ? async (key: string) => {
              if (key === 'videos/b.mp4') throw new SonicError('STORAGE_WRITE_FAILED', 'no');
              return t.delete(key);
            }
          : ((v: unknown) => (typeof v === 'function' ? (v as () => unknown).bind(t) : v))(Reflect.get(t, p, t)),
    }) as BlobStore;
    const tombstones = sink();
    const r = await collectGarbage({
      source: source([old('a'), old('b')]),
      blob: store,
      tombstones,
      statusTopic: 's.status',
      retentionS: 60,
      limit: 10,
      logger,
    });
    expect(r.tasks.map((t) => [t.task_id, t.blobs, t.bytes])).toEqual([
      ['a', 2, 3],
      ['b', 2, 3],
    ]);
    expect(r.failed).toEqual(['b']);
    expect(tombstones.sent).toEqual([{ topic: 's.status', records: [{ key: 'a', value: null }] }]);
    expect(await fs.stat('videos/a.mp4')).toBeUndefined();
    expect(await fs.stat('videos/b.mp4')).toBeDefined();
  });

  it('writes tombstones in batches and, dry, touches nothing', async () => {
    const fs = new FsBlobStore(mkdtempSync(join(tmpdir(), 'sonicflow-ret-')));
    const ids = Array.from({ length: 5 }, (_, i) => `t${i}`);
    for (const id of ids) await fs.put(`tasks/${id}/input/audio-1`, Buffer.from('a'));
    const dry = sink();
    const d = await collectGarbage({
      source: source(ids.map(old)),
      blob: fs,
      tombstones: dry,
      statusTopic: 's',
      retentionS: 1,
      limit: 10,
      dryRun: true,
      logger,
    });
    expect([d.tasks.length, d.blobsDeleted, dry.sent.length]).toEqual([5, 0, 0]);
    expect(await fs.stat('tasks/t0/input/audio-1')).toBeDefined();
    const wet = sink();
    const r = await collectGarbage({
      source: source(ids.map(old)),
      blob: fs,
      tombstones: wet,
      statusTopic: 's',
      retentionS: 1,
      limit: 10,
      logger,
      tombstoneBatch: 2,
    });
    expect([r.blobsDeleted, r.tombstones]).toEqual([5, 5]);
    expect(wet.sent.map((s) => s.records.length)).toEqual([2, 2, 1]);
  });
});

describe('collectGarbage against a changing source', () => {
  it('keeps a task that changed after it was listed (made again with its key, replayed): no blob deleted, no tombstone; the key topic goes before the status', async () => {
    const fs = new FsBlobStore(mkdtempSync(join(tmpdir(), 'sonicflow-ret-')));
    for (const id of ['a', 'b', 'c']) await fs.put(`tasks/${id}/input/audio-1`, Buffer.from('a'));
    const rows = new Map(['a', 'b', 'c'].map((id) => [id, old(id)]));
    // b is made again before its blobs go; c between its blobs and its tombstone
    let asked = 0;
    const changing: RetentionSource = {
      expired: async () => [...rows.values()],
      current: async (id) => {
        asked += 1;
        if (id === 'b') return { ...old('b'), state: 'QUEUED', updated_at: new Date(5) };
        if (id === 'c' && asked > 3) return { ...old('c'), updated_at: new Date(9) };
        return rows.get(id);
      },
    };
    const tombstones = sink();
    const r = await collectGarbage({ source: changing, blob: fs, tombstones, statusTopic: 's', alsoTombstone: ['k'], retentionS: 1, limit: 10, logger });
    expect(await fs.stat('tasks/b/input/audio-1')).toBeDefined();
    expect(await fs.stat('tasks/a/input/audio-1')).toBeUndefined();
    expect(r.tombstones).toBe(1);
    expect(tombstones.sent).toEqual([
      { topic: 'k', records: [{ key: 'a', value: null }] },
      { topic: 's', records: [{ key: 'a', value: null }] },
    ]);
  });

  it('passes over the tasks it is told to skip, and still fills the batch', async () => {
    const fs = new FsBlobStore(mkdtempSync(join(tmpdir(), 'sonicflow-ret-')));
    const r = await collectGarbage({
      source: source(['x', 'y', 'z'].map(old)),
      blob: fs,
      tombstones: sink(),
      statusTopic: 's',
      retentionS: 1,
      limit: 2,
      skip: new Set(['x']),
      logger,
    });
    expect(r.tasks.map((t) => t.task_id)).toEqual(['y', 'z']);
  });
});

describe('startJanitor', () => {
  it('takes batch after batch while full ones come back (a backlog), within its budget', async () => {
    const left = new Set(Array.from({ length: 25 }, (_, i) => `t${i}`));
    const fs = new FsBlobStore(mkdtempSync(join(tmpdir(), 'sonicflow-ret-')));
    const reports: number[] = [];
    const tombstones = { send: async (_topic: string, records: OutRecord[]) => records.forEach((rec) => left.delete(rec.key!)) };
    const j = startJanitor({
      source: { expired: async (_b, limit) => [...left].slice(0, limit).map(old) },
      blob: fs,
      tombstones,
      statusTopic: 's',
      retentionS: 1,
      limit: 10,
      logger,
      intervalMs: 3_600_000,
      firstRunMs: 1,
      onReport: (rep) => reports.push(rep.tasks.length),
    });
    for (let i = 0; i < 100 && reports.length < 3; i++) await new Promise((res) => setTimeout(res, 20));
    await j.stop();
    // one run, three batches: 10, 10, then 5 (not full: the run ends)
    expect(reports).toEqual([10, 10, 5]);
    expect(left.size).toBe(0);
  });

  it('runs on its interval, never two runs at once, and stop() waits for the run in progress', async () => {
    let active = 0;
    let most = 0;
    let runs = 0;
    const slow: RetentionSource = {
      expired: async () => {
        active += 1;
        most = Math.max(most, active);
        await new Promise((r) => setTimeout(r, 30));
        active -= 1;
        runs += 1;
        return [];
      },
    };
    const fs = new FsBlobStore(mkdtempSync(join(tmpdir(), 'sonicflow-ret-')));
    const j = startJanitor({ source: slow, blob: fs, tombstones: sink(), statusTopic: 's', retentionS: 1, limit: 1, logger, intervalMs: 5, firstRunMs: 0 });
    while (runs < 3) await new Promise((r) => setTimeout(r, 10));
    await j.stop();
    const after = runs;
    await new Promise((r) => setTimeout(r, 60));
    expect(most).toBe(1);
    expect(active).toBe(0);
    expect(runs).toBe(after);
  });
});
