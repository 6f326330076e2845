/**
 * The state store (src/runtime/store.ts) on a real LMDB environment in a temporary directory:
 * tables, prefix scans with cursors, atomic transactions with the offsets checkpoint, and a
 * reopen that finds everything (what a restart resumes from).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StateStore } from '../../src/runtime/store.js';

const dirs: string[] = [];
const fresh = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-store-'));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Row {
  state: string;
  at: Date;
}

describe('state store', () => {
  it('keeps rows with their types (Dates included) and counts them', async () => {
    const store = StateStore.open({ path: fresh() });
    const rows = store.table<Row>('tasks');
    await rows.put('a', { state: 'QUEUED', at: new Date(1000) });
    await rows.put('b', { state: 'FAILED', at: new Date(2000) });
    await rows.remove('b');
    expect(rows.get('a')).toEqual({ state: 'QUEUED', at: new Date(1000) });
    expect(rows.get('b')).toBeUndefined();
    expect(rows.count()).toBe(1);
    await store.close();
  });

  it('scans a prefix in key order, page by page with a cursor, and nothing beyond the prefix', async () => {
    const store = StateStore.open({ path: fresh() });
    const byTenant = store.table<number>('by-tenant');
    store.transaction(() => {
      for (const tenant of ['acme', 'acmex', 'other']) for (let i = 0; i < 5; i++) void byTenant.put(`${tenant}/${String(i).padStart(3, '0')}`, i);
    });
    const first = byTenant.scan('acme/', { limit: 2 });
    expect(first.map((e) => e.key)).toEqual(['acme/000', 'acme/001']);
    const second = byTenant.scan('acme/', { limit: 2, after: first.at(-1)!.key });
    expect(second.map((e) => e.key)).toEqual(['acme/002', 'acme/003']);
    expect(byTenant.scan('acme/', { after: 'acme/003' }).map((e) => e.value)).toEqual([4]);
    expect(byTenant.scan('acme/').every((e) => e.key.startsWith('acme/'))).toBe(true);
    // a cursor from before the prefix starts at the prefix
    expect(byTenant.scan('other/', { limit: 1, after: 'acme/004' }).map((e) => e.key)).toEqual(['other/000']);
    await store.close();
  });

  it('scans backwards and from a lower bound, newest first, without leaving the prefix whatever the cursor names', async () => {
    const store = StateStore.open({ path: fresh() });
    const t = store.table<number>('by-time');
    store.transaction(() => {
      for (const tenant of ['acme', 'acmf', 'acmd']) for (let i = 0; i < 5; i++) void t.put(`${tenant}/${String(i).padStart(3, '0')}`, i);
    });
    expect(t.scan('acme/', { reverse: true }).map((e) => e.value)).toEqual([4, 3, 2, 1, 0]);
    const page = t.scan('acme/', { reverse: true, limit: 2 });
    expect(t.scan('acme/', { reverse: true, limit: 2, after: page.at(-1)!.key }).map((e) => e.value)).toEqual([2, 1]);
    // a lower bound: entries at or above it, in either order
    expect(t.scan('acme/', { from: 'acme/002' }).map((e) => e.value)).toEqual([2, 3, 4]);
    expect(t.scan('acme/', { from: 'acme/002', reverse: true }).map((e) => e.value)).toEqual([4, 3, 2]);
    // a cursor of another prefix, above or below, never reaches past this one's entries
    expect(t.scan('acme/', { reverse: true, after: 'acmf/003' }).map((e) => e.value)).toEqual([4, 3, 2, 1, 0]);
    expect(t.scan('acme/', { reverse: true, after: 'acmd/003' })).toEqual([]);
    expect(t.scan('acme/', { after: 'acmf/000' })).toEqual([]);
    await store.close();
  });

  it('writes rows, an index entry and the offsets checkpoint together, or none of them when the transaction throws', async () => {
    const store = StateStore.open({ path: fresh() });
    const rows = store.table<Row>('tasks');
    const index = store.table<string>('tasks-by-state');
    store.transaction(() => {
      void rows.put('t1', { state: 'QUEUED', at: new Date(0) });
      void index.put('QUEUED/t1', 't1');
      store.commitOffset('sonic.tasks.status', 3, 42n);
    });
    expect(() =>
      store.transaction(() => {
        void rows.put('t1', { state: 'SUCCEEDED', at: new Date(1) });
        void index.remove('QUEUED/t1');
        store.commitOffset('sonic.tasks.status', 3, 43n);
        throw new Error('crash between the writes');
      }),
    ).toThrow('crash between the writes');
    expect(rows.get('t1')?.state).toBe('QUEUED');
    expect(index.get('QUEUED/t1')).toBe('t1');
    expect(store.offset('sonic.tasks.status', 3)).toBe(42n);
    expect(store.offset('sonic.tasks.status', 4)).toBeUndefined();
    await store.close();
  });

  it('finds its rows and checkpoint again after a reopen, where a restart resumes', async () => {
    const path = fresh();
    const before = StateStore.open({ path });
    before.transaction(() => {
      for (let i = 0; i < 1000; i++) void before.table<number>('t').put(`k${String(i).padStart(4, '0')}`, i);
      before.commitOffset('in', 0, 1000n);
    });
    await before.flushed();
    await before.close();
    const after = StateStore.open({ path });
    expect(after.offset('in', 0)).toBe(1000n);
    expect(after.table<number>('t').count()).toBe(1000);
    expect(after.table<number>('t').get('k0999')).toBe(999);
    await after.close();
  });

  it('refuses the reserved name of the offsets table, and says where it could not open', async () => {
    const store = StateStore.open({ path: fresh() });
    expect(() => store.table('__offsets')).toThrow('reserved');
    await store.close();
    const file = join(fresh(), 'a-file');
    writeFileSync(file, '');
    expect(() => StateStore.open({ path: join(file, 'store') })).toThrow(`cannot open the state store at ${join(file, 'store')}`);
  });
});
