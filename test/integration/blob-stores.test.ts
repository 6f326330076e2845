/**
 * One behavioural suite, run against the filesystem store and against the S3 store on a real
 * S3-compatible server (the local S3Proxy of `stack.sh up`, or SONIC_S3_ENDPOINT).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import type { SonicError } from '../../src/core/errors.js';
import { S3BlobStore, createBlobStore, taskKey, type BlobStore } from '../../src/blob/index.js';
import { recordingServer } from '../helpers/http.js';

const work = mkdtempSync(join(tmpdir(), 'sonicflow-blob-'));
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

async function failure(p: Promise<unknown> | (() => unknown)): Promise<SonicError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err as SonicError;
  }
  throw new Error('expected a failure');
}

interface Subject {
  name: 'fs' | 's3';
  make(): BlobStore;
  uriPrefix: string;
  foreignUris: string[];
  cleanup(store: BlobStore): Promise<void>;
}

const env = { ...process.env, SONIC_LOG_LEVEL: 'warn' };
const bucket = `sonicflow-test-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

const subjects: Subject[] = [
  {
    name: 'fs',
    make: () => createBlobStore(loadConfig({ ...env, SONIC_BLOB_STORE: 'fs', SONIC_DATA_DIR: join(work, 'fs-root') })),
    uriPrefix: 'blob://',
    foreignUris: ['s3://sonicflow/tasks/t/s/n', 'file:///etc/passwd', 'blob://../etc/passwd', 'blob:///abs', 'blob://'],
    cleanup: async () => rmSync(join(work, 'fs-root'), { recursive: true, force: true }),
  },
  {
    name: 's3',
    make: () => createBlobStore(loadConfig({ ...env, SONIC_BLOB_STORE: 's3', SONIC_S3_BUCKET: bucket })),
    uriPrefix: `s3://${bucket}/`,
    foreignUris: ['s3://other-bucket/tasks/t/s/n', `s3://${bucket}`, `s3://${bucket}/../x`, 'blob://tasks/t/s/n', 'file:///etc/passwd'],
    cleanup: async () => {
      // the keys were deleted by the suite; the bucket itself goes here
      const c = loadConfig(env);
      const client = new S3Client({
        endpoint: c.s3Endpoint,
        region: c.s3Region,
        forcePathStyle: c.s3ForcePathStyle,
        credentials: { accessKeyId: c.s3AccessKeyId, secretAccessKey: c.s3SecretAccessKey },
      });
      await client.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => undefined);
      client.destroy();
    },
  },
];

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.each(subjects)('$name blob store', (subject) => {
  let store: BlobStore;
  const written = new Set<string>();
  const put: BlobStore['put'] = async (key, data, opts) => {
    written.add(key);
    return store.put(key, data, opts);
  };

  beforeAll(() => {
    store = subject.make();
    expect(store.kind).toBe(subject.name);
  });
  afterAll(async () => {
    for (const key of written) await store.delete(key);
    await store.close();
    await subject.cleanup(store);
  });

  it('stores a buffer and returns a reference with its uri, size, sha256 and content type', async () => {
    const data = Buffer.from('portrait bytes');
    const key = taskKey('t-buf', 'validate', 'image.png');
    const ref = await put(key, data, { contentType: 'image/png' });
    expect(ref).toEqual({ uri: `${subject.uriPrefix}${key}`, key, size_bytes: data.length, sha256: sha(data), content_type: 'image/png' });
    expect(await store.getBuffer(key)).toEqual(data);
  });

  it('streams a local file in and out (a few MiB), checksums intact', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const src = join(work, `${subject.name}-src.bin`);
    writeFileSync(src, data);
    const key = taskKey('t-file', 'encode', 'video.mp4');
    const ref = await put(key, src, { contentType: 'video/mp4' });
    expect(ref).toMatchObject({ key, size_bytes: data.length, sha256: sha(data), content_type: 'video/mp4' });
    const out = join(work, `${subject.name}-out`, 'nested', 'video.mp4');
    await store.download(key, out, { sha256: ref.sha256 });
    expect(sha(readFileSync(out))).toBe(ref.sha256);
    expect(readdirSync(join(work, `${subject.name}-out`, 'nested'))).toEqual(['video.mp4']);
  });

  it('stores an empty blob', async () => {
    const ref = await put('empty/zero.bin', Buffer.alloc(0));
    expect(ref).toMatchObject({ size_bytes: 0, sha256: sha('') });
    expect((await store.getBuffer('empty/zero.bin')).length).toBe(0);
    expect(await store.stat('empty/zero.bin')).toMatchObject({ size_bytes: 0, sha256: sha('') });
  });

  it('overwrites the same key: a redo replaces the object instead of adding one', async () => {
    const key = taskKey('t-redo', 'infer', 'frames.bin');
    await put(key, Buffer.from('first attempt, longer'), { contentType: 'application/octet-stream' });
    const second = await put(key, Buffer.from('redo'), { contentType: 'text/plain' });
    expect(second.sha256).toBe(sha('redo'));
    expect((await store.getBuffer(key)).toString()).toBe('redo');
    expect(await store.stat(key)).toEqual({ size_bytes: 4, sha256: sha('redo'), content_type: 'text/plain' });
  });

  it('stats what exists and answers undefined for what does not', async () => {
    const key = taskKey('t-stat', 'preprocess', 'audio.wav');
    await put(key, Buffer.from('RIFF....WAVE'), { contentType: 'audio/wav' });
    expect(await store.stat(key)).toEqual({ size_bytes: 12, sha256: sha('RIFF....WAVE'), content_type: 'audio/wav' });
    expect(await store.stat(taskKey('t-stat', 'preprocess', 'missing.wav'))).toBeUndefined();
  });

  it('answers INPUT_NOT_FOUND, not retryable, for a missing key on every read', async () => {
    const key = taskKey('t-missing', 'infer', 'nothing.bin');
    for (const e of [await failure(store.getBuffer(key)), await failure(store.download(key, join(work, `${subject.name}-missing.bin`)))]) {
      expect(e.code).toBe('INPUT_NOT_FOUND');
      expect(e.retryable).toBe(false);
      expect(e.message).toContain(key);
    }
    expect(existsSync(join(work, `${subject.name}-missing.bin`))).toBe(false);
    await store.delete(key); // deleting what is absent is fine
  });

  it('answers INPUT_NOT_FOUND when the local file to store does not exist', async () => {
    const e = await failure(store.put('never/written.bin', join(work, 'no-such-file.bin')));
    expect(e).toMatchObject({ code: 'INPUT_NOT_FOUND', retryable: false });
    expect(await store.stat('never/written.bin')).toBeUndefined();
  });

  it('verifies an expected sha256 and refuses a mismatch without leaving a partial file', async () => {
    const key = taskKey('t-sum', 'publish', 'out.mp4');
    const ref = await put(key, Buffer.from('the video'));
    expect((await store.getBuffer(key, { sha256: ref.sha256 })).toString()).toBe('the video');
    const wrong = sha('something else');
    const e1 = await failure(store.getBuffer(key, { sha256: wrong }));
    expect(e1).toMatchObject({ code: 'CHECKSUM_MISMATCH', retryable: false });
    const dir = join(work, `${subject.name}-sum`);
    const e2 = await failure(store.download(key, join(dir, 'out.mp4'), { sha256: wrong }));
    expect(e2.code).toBe('CHECKSUM_MISMATCH');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('streams a blob or an inclusive byte range of it, with the whole size', async () => {
    const data = randomBytes(200_000);
    const key = taskKey('t-range', 'publish', 'video.mp4');
    const ref = await put(key, data, { contentType: 'video/mp4' });
    const read = async (o: Awaited<ReturnType<BlobStore['openRead']>>): Promise<Buffer> => {
      const chunks: Buffer[] = [];
      for await (const c of o.stream) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    };
    const whole = await store.openRead(key);
    expect(whole).toMatchObject({ size: data.length, sha256: ref.sha256, content_type: 'video/mp4' });
    expect((await read(whole)).equals(data)).toBe(true);
    const mid = await store.openRead(key, { start: 1000, end: 1999 });
    expect(mid.size).toBe(data.length);
    expect((await read(mid)).equals(data.subarray(1000, 2000))).toBe(true);
    const tail = await store.openRead(key, { start: data.length - 1, end: data.length - 1 });
    expect((await read(tail)).equals(data.subarray(data.length - 1))).toBe(true);
    expect((await failure(store.openRead(taskKey('t-range', 'publish', 'absent.mp4')))).code).toBe('INPUT_NOT_FOUND');
  });

  it('deletes', async () => {
    const key = taskKey('t-del', 'notify', 'x.json');
    await put(key, Buffer.from('{}'), { contentType: 'application/json' });
    await store.delete(key);
    expect(await store.stat(key)).toBeUndefined();
    expect((await failure(store.getBuffer(key))).code).toBe('INPUT_NOT_FOUND');
  });

  it('copies a blob inside the store: content, sha256 and content type, and the copy outlives its source', async () => {
    const data = randomBytes(300_000);
    const from = `uploads/acme/${randomBytes(4).toString('hex')}`;
    const to = taskKey('t-copy', 'input', 'audio-1');
    const src = await put(from, data, { contentType: 'audio/wav' });
    written.add(to);
    const ref = await store.copy(from, to);
    expect(ref).toEqual({ uri: `${subject.uriPrefix}${to}`, key: to, size_bytes: data.length, sha256: src.sha256, content_type: 'audio/wav' });
    expect(await store.stat(to)).toEqual({ size_bytes: data.length, sha256: sha(data), content_type: 'audio/wav' });
    // the source is untouched
    expect(await store.stat(from)).toEqual({ size_bytes: data.length, sha256: sha(data), content_type: 'audio/wav' });
    await store.delete(from);
    expect(await store.stat(from)).toBeUndefined();
    expect((await store.getBuffer(to, { sha256: src.sha256 })).equals(data)).toBe(true);
    expect(await store.stat(to)).toEqual({ size_bytes: data.length, sha256: sha(data), content_type: 'audio/wav' });
  });

  it('copies over an existing blob, metadata included, and copies a blob without a content type', async () => {
    const from = 'copy-src/plain.bin';
    const to = taskKey('t-copy', 'input', 'over');
    await put(from, Buffer.from('new bytes'));
    await put(to, Buffer.from('older and longer bytes'), { contentType: 'image/png' });
    const ref = await store.copy(from, to);
    // S3 gives an object put without a type its default one (application/octet-stream): the copy has the source's, whatever it is
    const source = await store.stat(from);
    expect(ref).toEqual({ uri: `${subject.uriPrefix}${to}`, key: to, size_bytes: 9, sha256: sha('new bytes'), content_type: source?.content_type ?? null });
    expect((await store.getBuffer(to)).toString()).toBe('new bytes');
    expect(await store.stat(to)).toEqual(source);
  });

  it('answers INPUT_NOT_FOUND, not retryable, when the source of a copy is absent, and writes nothing', async () => {
    const to = taskKey('t-copy-missing', 'input', 'audio-1');
    const e = await failure(store.copy('uploads/acme/absent', to));
    expect(e).toMatchObject({ code: 'INPUT_NOT_FOUND', retryable: false });
    expect(e.message).toContain('uploads/acme/absent');
    expect(await store.stat(to)).toBeUndefined();
    const listed = [];
    for await (const x of store.list('tasks/t-copy-missing/')) listed.push(x.key);
    expect(listed).toEqual([]);
  });

  it('refuses to copy from or to an invalid key, or onto itself, before touching the store', async () => {
    const good = 'copy-src/valid.bin';
    await put(good, Buffer.from('x'));
    for (const bad of ['../x', 'tasks/../../x', '/etc/passwd', 'a//b', 'x.meta.json']) {
      expect((await failure(store.copy(good, bad))).code, `to ${bad}`).toBe('INVALID_REQUEST');
      expect((await failure(store.copy(bad, taskKey('t-copy', 'input', 'bad')))).code, `from ${bad}`).toBe('INVALID_REQUEST');
    }
    expect((await failure(store.copy(good, good))).code).toBe('INVALID_REQUEST');
    expect(await store.stat(good)).toMatchObject({ size_bytes: 1, sha256: sha('x') });
    expect(await store.stat(taskKey('t-copy', 'input', 'bad'))).toBeUndefined();
    expect(existsSync(join(work, 'x'))).toBe(false);
  });

  it('turns its own uris back into keys and refuses foreign ones with INPUT_NOT_FOUND', async () => {
    const key = taskKey('t-uri', 'validate', 'audio.mp3');
    const ref = await put(key, Buffer.from('ID3'));
    expect(ref.uri.startsWith(subject.uriPrefix)).toBe(true);
    expect(store.keyFromUri(ref.uri)).toBe(key);
    for (const uri of subject.foreignUris) {
      const e = await failure(() => store.keyFromUri(uri));
      expect(e.code, uri).toBe('INPUT_NOT_FOUND');
      expect(e.retryable).toBe(false);
    }
  });

  it('lists every blob under a folder prefix, with size and write time, and nothing outside it', async () => {
    const before = Date.now() - 60_000;
    await put(taskKey('t-list', 'preprocess', 'a.wav'), Buffer.from('aaa'));
    await put(taskKey('t-list', 'infer', 'b.mp4'), Buffer.from('bbbbb'));
    await put(taskKey('t-list2', 'infer', 'c.mp4'), Buffer.from('c'));
    const listed = async (prefix: string) => {
      const out = [];
      for await (const e of store.list(prefix)) out.push(e);
      return out.sort((a, b) => a.key.localeCompare(b.key));
    };
    const found = await listed('tasks/t-list/');
    expect(found.map((e) => [e.key, e.size_bytes])).toEqual([
      ['tasks/t-list/infer/b.mp4', 5],
      ['tasks/t-list/preprocess/a.wav', 3],
    ]);
    for (const e of found) expect(e.modified.getTime()).toBeGreaterThan(before);
    expect(await listed('tasks/absent/')).toEqual([]);
    expect((await listed('')).map((e) => e.key)).toEqual(expect.arrayContaining(['tasks/t-list2/infer/c.mp4', 'tasks/t-list/infer/b.mp4']));
    for (const prefix of ['tasks/t-list', '../', '/x/', 'a//']) {
      expect((await failure(listed(prefix))).code, prefix).toBe('INVALID_REQUEST');
    }
  });

  it('refuses keys that would leave the store, before touching it', async () => {
    expect((await failure(() => taskKey('t1', 'infer', '../x'))).code).toBe('INVALID_REQUEST');
    for (const key of ['../x', 'tasks/../../x', '/etc/passwd', 'a//b']) {
      expect((await failure(store.put(key, Buffer.from('x')))).code, key).toBe('INVALID_REQUEST');
      expect((await failure(store.getBuffer(key))).code, key).toBe('INVALID_REQUEST');
      expect((await failure(store.stat(key))).code, key).toBe('INVALID_REQUEST');
    }
    expect(existsSync(join(work, 'x'))).toBe(false);
  });
});

describe('S3 store against a server that trickles', () => {
  it('gives up on a read at its total deadline, though bytes keep coming (INPUT_FETCH_FAILED, nothing written)', async () => {
    const slow = await recordingServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '100000' });
      const t = setInterval(() => (res.writableEnded || res.destroyed ? clearInterval(t) : res.write('x')), 100);
      res.on('close', () => clearInterval(t));
      return 200;
    });
    const store = new S3BlobStore({
      endpoint: slow.url,
      bucket: 'b',
      region: 'us-east-1',
      accessKeyId: 'a',
      secretAccessKey: 's',
      forcePathStyle: true,
      timeoutMs: 1000,
    });
    const t0 = Date.now();
    const e = await failure(store.download('tasks/t/infer/x.mp4', join(work, 'slow', 'x.mp4')));
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(e.code).toBe('INPUT_FETCH_FAILED');
    expect(existsSync(join(work, 'slow', 'x.mp4'))).toBe(false);
    await store.close();
  });
});
