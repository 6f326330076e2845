import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../../src/blob/fs-store.js';
import { publicError } from '../../../src/core/errors.js';
import { fetchTo, mediaRef } from '../../../src/stages/common.js';
import { expectSonicError, tempDir } from '../../fixtures/media/util.js';

describe('fetchTo', () => {
  const dir = tempDir('fetch');
  const store = new FsBlobStore(join(dir, 'store'));

  it('verifies a fetched blob against the sha256 of its reference', async () => {
    const ref = mediaRef(await store.put('tasks/t1/input/audio', Buffer.from('the submitted bytes')));
    expect(readFileSync(await fetchTo(store, ref, dir, 'ok'), 'utf8')).toBe('the submitted bytes');
    // the stored object changed after submission (or the reference names other bytes)
    writeFileSync(join(dir, 'store', 'tasks', 't1', 'input', 'audio'), 'other bytes, same key');
    const err = await expectSonicError(fetchTo(store, ref, dir, 'tampered'), 'CHECKSUM_MISMATCH');
    expect(err.retryable).toBe(false);
    expect(existsSync(join(dir, 'tampered'))).toBe(false); // nothing half-verified is left to decode
    expect(publicError(err).message).not.toMatch(/tasks\/|\//);
    // a reference without a checksum (an older record) is fetched as is
    expect(readFileSync(await fetchTo(store, { ...ref, sha256: null }, dir, 'unchecked'), 'utf8')).toBe('other bytes, same key');
  });
});
