import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import type { SonicError } from '../../src/core/errors.js';
import { FsBlobStore, S3BlobStore, createBlobStore, taskKey, validateKey } from '../../src/blob/index.js';
import { LocalIoError, hashFile, writeFileAtomically } from '../../src/blob/local-file.js';

const root = mkdtempSync(join(tmpdir(), 'sonicflow-blob-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function failure(p: Promise<unknown> | (() => unknown)): Promise<SonicError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err as SonicError;
  }
  throw new Error('expected a failure');
}

/** Every file under a directory, relative paths. */
function walk(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`]));
}

describe('blob keys', () => {
  it('builds task keys and refuses parts that could leave the task folder', async () => {
    expect(taskKey('t-01.a_b', 'preprocess', 'face.png')).toBe('tasks/t-01.a_b/preprocess/face.png');
    for (const [task, stage, name] of [
      ['t1', 'infer', '../x'],
      ['..', 'infer', 'x'],
      ['t1', 'a/b', 'x'],
      ['t1', '', 'x'],
      ['t1', 'infer', 'a b'],
      ['t1', 'infer', '.'],
      ['t1', 'infer', 'x.meta.json'],
    ] as const) {
      const e = await failure(() => taskKey(task, stage, name));
      expect(e.code, `${task}/${stage}/${name}`).toBe('INVALID_REQUEST');
      expect(e.retryable).toBe(false);
    }
  });

  it('accepts plain keys and refuses empty segments, traversal, odd characters and the sidecar suffix', () => {
    expect(validateKey('uploads/tenant-1/abc.wav')).toBe('uploads/tenant-1/abc.wav');
    for (const bad of ['', '/abs', 'a//b', 'a/', '../x', 'a/../../x', 'a/./b', 'a\\b', 'a?b', 'ünï', 'x.meta.json', 'a'.repeat(1025)]) {
      expect(() => validateKey(bad), bad).toThrow(/invalid blob key/);
    }
  });
});

describe('atomic local writes', () => {
  it('hashes while writing and blames a failing source, leaving nothing behind', async () => {
    const dir = join(root, 'atomic');
    const d = await writeFileAtomically(join(dir, 'ok.bin'), Readable.from([Buffer.from('ab'), Buffer.from('c')]));
    expect(d).toEqual({ sha256: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', size_bytes: 3 });
    expect(await hashFile(join(dir, 'ok.bin'))).toEqual(d);
    async function* broken() {
      yield Buffer.from('partial');
      throw new Error('connection reset');
    }
    const e = await failure(writeFileAtomically(join(dir, 'broken.bin'), Readable.from(broken())));
    expect(e).toBeInstanceOf(LocalIoError);
    expect((e as unknown as LocalIoError).side).toBe('source');
    expect(readdirSync(dir)).toEqual(['ok.bin']);
  });

  it('blames the target when the destination cannot be made', async () => {
    writeFileSync(join(root, 'a-file'), 'x');
    const e = (await failure(writeFileAtomically(join(root, 'a-file', 'below.bin'), Readable.from([Buffer.from('x')])))) as unknown as LocalIoError;
    expect(e.side).toBe('target');
    expect(['ENOTDIR', 'EEXIST']).toContain(e.errno);
  });
});

describe('filesystem blob store', () => {
  const store = new FsBlobStore(join(root, 'store'));

  it('writes the file and a sidecar, leaving no temporary files behind', async () => {
    const ref = await store.put('tasks/t1/validate/audio.wav', Buffer.from('RIFF'), { contentType: 'audio/wav' });
    expect(ref.uri).toBe('blob://tasks/t1/validate/audio.wav');
    expect(walk(join(root, 'store')).sort()).toEqual(['tasks/t1/validate/audio.wav', 'tasks/t1/validate/audio.wav.meta.json']);
    const meta = JSON.parse(readFileSync(join(root, 'store', 'tasks/t1/validate/audio.wav.meta.json'), 'utf8')) as unknown;
    expect(meta).toEqual({ sha256: ref.sha256, size_bytes: 4, content_type: 'audio/wav' });
  });

  it('reports no checksum when the sidecar no longer matches the file', async () => {
    await store.put('stale/x.bin', Buffer.from('abc'));
    writeFileSync(join(root, 'store', 'stale/x.bin'), 'longer content');
    expect(await store.stat('stale/x.bin')).toEqual({ size_bytes: 14 });
  });

  it('treats a directory as no blob and cleans up after a failed download', async () => {
    await store.put('dir/inner/x.bin', Buffer.from('x'));
    expect(await store.stat('dir/inner')).toBeUndefined();
    expect((await failure(store.getBuffer('dir/inner'))).code).toBe('INPUT_NOT_FOUND');
    const out = join(root, 'out');
    expect((await failure(store.download('dir/inner', join(out, 'y.bin')))).code).toBe('INPUT_NOT_FOUND');
    expect(readdirSync(out)).toEqual([]);
  });

  it('refuses a file where a directory of the key must be, without retrying', async () => {
    await store.put('clash', Buffer.from('x'));
    const e = await failure(store.put('clash/below', Buffer.from('y')));
    expect(e.code).toBe('STORAGE_WRITE_FAILED');
    expect(e.retryable).toBe(false);
  });

  it('lists blobs without their sidecars or the temporary files of writes in progress', async () => {
    await store.put('listing/one.bin', Buffer.from('1'));
    await store.put('listing/deeper/two.bin', Buffer.from('22'));
    writeFileSync(join(root, 'store', 'listing', '.one.bin.0123456789ab.tmp'), 'partial');
    const keys = [];
    for await (const e of store.list('listing/')) keys.push(`${e.key}:${e.size_bytes}`);
    expect(keys.sort()).toEqual(['listing/deeper/two.bin:2', 'listing/one.bin:1']);
    const none = [];
    for await (const e of store.list('nothing-here/')) none.push(e);
    expect(none).toEqual([]);
  });

  it('copies by a hard link: the same file under the new key, its own sidecar, no temporary file; either key can go', async () => {
    const src = await store.put('uploads/acme/portrait', Buffer.from('PNG bytes'), { contentType: 'image/png' });
    const ref = await store.copy('uploads/acme/portrait', 'tasks/t-link/input/image-1');
    expect(ref).toEqual({ ...src, uri: 'blob://tasks/t-link/input/image-1', key: 'tasks/t-link/input/image-1' });
    const [a, b] = [join(root, 'store', 'uploads/acme/portrait'), join(root, 'store', 'tasks/t-link/input/image-1')];
    expect(statSync(b).ino).toBe(statSync(a).ino);
    expect(statSync(b).nlink).toBe(2);
    expect(walk(join(root, 'store', 'tasks/t-link')).sort()).toEqual(['input/image-1', 'input/image-1.meta.json']);
    expect(JSON.parse(readFileSync(`${b}.meta.json`, 'utf8'))).toEqual({ sha256: src.sha256, size_bytes: 9, content_type: 'image/png' });
    await store.delete('uploads/acme/portrait');
    expect(readFileSync(b, 'utf8')).toBe('PNG bytes');
    expect(await store.stat('tasks/t-link/input/image-1')).toEqual({ size_bytes: 9, sha256: src.sha256, content_type: 'image/png' });
  });

  it('hashes the copy when the source has no sidecar that fits it (written outside the store)', async () => {
    await store.put('uploads/acme/edited', Buffer.from('abc'), { contentType: 'audio/wav' });
    writeFileSync(join(root, 'store', 'uploads/acme/edited'), 'edited in place');
    const ref = await store.copy('uploads/acme/edited', 'tasks/t-edited/input/audio-1');
    const sum = createHash('sha256').update('edited in place').digest('hex');
    expect(ref).toMatchObject({ size_bytes: 15, sha256: sum, content_type: null });
    expect(await store.stat('tasks/t-edited/input/audio-1')).toEqual({ size_bytes: 15, sha256: sum });
  });

  const otherFs = '/dev/shm';
  const crossDevice = existsSync(otherFs) && statSync(otherFs).dev !== statSync(root).dev;
  it.skipIf(!crossDevice)('copies by streaming when the two keys are on different filesystems (no hard link possible)', async () => {
    const far = mkdtempSync(join(otherFs, 'sonicflow-blob-unit-'));
    try {
      const xroot = join(root, 'cross');
      mkdirSync(join(xroot, 'uploads'), { recursive: true });
      // tasks/ lives on another filesystem, as when an operator mounts it elsewhere
      symlinkSync(far, join(xroot, 'tasks'));
      const x = new FsBlobStore(xroot);
      const data = Buffer.alloc(1024 * 1024 + 3, 7);
      const src = await x.put('uploads/acme/speech', data, { contentType: 'audio/wav' });
      const ref = await x.copy('uploads/acme/speech', 'tasks/t-x/input/audio-1');
      expect(ref).toMatchObject({ size_bytes: data.length, sha256: src.sha256, content_type: 'audio/wav' });
      expect(statSync(join(far, 't-x/input/audio-1')).ino).not.toBe(statSync(join(xroot, 'uploads/acme/speech')).ino);
      expect(readdirSync(join(far, 't-x/input')).sort()).toEqual(['audio-1', 'audio-1.meta.json']);
      await x.delete('uploads/acme/speech');
      expect(await x.stat('tasks/t-x/input/audio-1')).toEqual({ size_bytes: data.length, sha256: src.sha256, content_type: 'audio/wav' });
    } finally {
      rmSync(far, { recursive: true, force: true });
    }
  });

  it('needs an absolute root', () => {
    expect(() => new FsBlobStore('relative/dir')).toThrow(/absolute/);
  });

  it('keeps its files readable by the owner', async () => {
    await store.put('mode/x.bin', Buffer.from('x'));
    expect(statSync(join(root, 'store', 'mode/x.bin')).mode & 0o600).toBe(0o600);
  });
});

describe('createBlobStore', () => {
  it('picks the store from the configuration and keeps the S3 secret out of its serialised form', async () => {
    const fs = createBlobStore(loadConfig({ SONIC_DATA_DIR: join(root, 'cfg') }));
    expect(fs.kind).toBe('fs');
    expect((fs as FsBlobStore).rootDir).toBe(join(root, 'cfg'));
    const s3 = createBlobStore(loadConfig({ SONIC_BLOB_STORE: 's3', SONIC_S3_BUCKET: 'media', SONIC_S3_SECRET_ACCESS_KEY: 'very-secret-value' }));
    expect(s3.kind).toBe('s3');
    expect(s3.keyFromUri('s3://media/tasks/t/s/n')).toBe('tasks/t/s/n');
    const { inspect } = await import('node:util');
    expect(JSON.stringify(s3)).not.toContain('very-secret-value');
    expect(inspect(s3, { depth: 5 })).not.toContain('very-secret-value');
    await s3.close();
  });

  it('maps an unreachable S3 endpoint to retryable failures that do not name the secret', async () => {
    const s3 = new S3BlobStore({
      endpoint: 'http://127.0.0.1:1',
      bucket: 'media',
      region: 'us-east-1',
      accessKeyId: 'id',
      secretAccessKey: 'very-secret-value',
      forcePathStyle: true,
    });
    try {
      const read = await failure(s3.getBuffer('a/b'));
      expect(read).toMatchObject({ code: 'INPUT_FETCH_FAILED', retryable: true });
      const write = await failure(s3.put('a/b', Buffer.from('x')));
      expect(write).toMatchObject({ code: 'STORAGE_WRITE_FAILED', retryable: true });
      for (const e of [read, write]) {
        expect(e.message).toContain('127.0.0.1:1');
        expect(JSON.stringify(e)).not.toContain('very-secret-value');
      }
    } finally {
      await s3.close();
    }
  }, 30_000);
});
