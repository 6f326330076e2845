/**
 * Claiming a referenced upload for a task (claimUpload, on a real filesystem store): the copy is
 * the task's own, with the upload's checksum, and a copy that is not the file the submit checked
 * (the upload replaced in between) or an upload gone in between fails the submit with a clear,
 * client-safe error, the copy's key already in `stored` for the submit to remove.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { claimUpload, referencedBlob, requestFingerprint, buildRequest, type Limits } from '../../src/api/submit.js';
import { FsBlobStore, taskKey, type BlobStore } from '../../src/blob/index.js';
import { SonicError } from '../../src/core/errors.js';
import type { MediaRef } from '../../src/domain/records.js';

const root = mkdtempSync(join(tmpdir(), 'sonicflow-claim-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const limits: Limits = { maxAudioBytes: 1e6, maxImageBytes: 1e6, maxAudioSeconds: 60 };
const TASK = '00000000-0000-4000-8000-0000000000c1';

async function failure(p: Promise<unknown>): Promise<SonicError> {
  try {
    await p;
  } catch (err) {
    return err as SonicError;
  }
  throw new Error('expected a failure');
}

/** The store with its `copy` preceded by `before` (what a concurrent writer does in between). */
function racing(store: FsBlobStore, before: () => Promise<void>, copy?: BlobStore['copy']): BlobStore {
  return new Proxy(store, {
    get: (t, p) =>
      p === 'copy'
        ? async (from: string, to: string) => {
            await before();
            return (copy ?? t.copy.bind(t))(from, to);
          }
        : ((v: unknown) => (typeof v === 'function' ? (v as () => unknown).bind(t) : v))(Reflect.get(t, p, t)),
  }) as BlobStore;
}

describe('claimUpload', () => {
  const store = new FsBlobStore(join(root, 'store'));
  const upload = async (name: string, data: string, contentType = 'audio/wav'): Promise<MediaRef> => {
    const ref = await store.put(`uploads/acme/${name}`, Buffer.from(data), { contentType });
    return referencedBlob(store, 'acme', 'audio', { uri: ref.uri }, limits);
  };

  it("copies the upload under the task's input key with its checksum; the upload stays, and the fingerprint does not move", async () => {
    const ref = await upload('u1', 'RIFF speech');
    const stored: string[] = [];
    const key = taskKey(TASK, 'input', 'audio-a1');
    const claimed = await claimUpload(store, 'audio', ref, key, stored);
    expect(claimed).toEqual({ ...ref, uri: `blob://${key}` });
    expect(stored).toEqual([key]);
    expect(await store.stat(key)).toEqual({ size_bytes: 11, sha256: ref.sha256, content_type: 'audio/wav' });
    expect(await store.stat('uploads/acme/u1')).toBeDefined();
    const request = (audio: MediaRef) =>
      buildRequest({
        taskId: TASK,
        tenant: 'acme',
        idempotencyKey: 'k',
        audio,
        image: ref,
        fields: { params: {} },
        limits,
        traceparent: null,
        now: new Date(0),
      });
    expect(requestFingerprint(request(claimed), {})).toBe(requestFingerprint(request(ref), {}));
  });

  it('refuses a copy of an upload replaced after the submit checked it (409 CHECKSUM_MISMATCH, retryable), its key left for removal', async () => {
    const ref = await upload('u2', 'first content');
    const replaced = racing(store, async () => void (await store.put('uploads/acme/u2', Buffer.from('other content'), { contentType: 'audio/wav' })));
    const stored: string[] = [];
    const e = await failure(claimUpload(replaced, 'audio', ref, taskKey(TASK, 'input', 'audio-a2'), stored));
    expect(e).toBeInstanceOf(SonicError);
    expect(e).toMatchObject({ code: 'CHECKSUM_MISMATCH', retryable: true });
    expect(e.publicMessage).toMatch(/changed while it was being copied/);
    expect(e.publicMessage).not.toContain(root);
    expect(stored).toEqual([taskKey(TASK, 'input', 'audio-a2')]);
  });

  it('refuses an upload whose type changed in between, same bytes or not', async () => {
    const ref = await upload('u3', 'same bytes');
    const retyped = racing(store, async () => void (await store.put('uploads/acme/u3', Buffer.from('same bytes'), { contentType: 'image/png' })));
    expect((await failure(claimUpload(retyped, 'audio', ref, taskKey(TASK, 'input', 'audio-a3'), []))).code).toBe('CHECKSUM_MISMATCH');
  });

  it('says so when a copy fails because the source changed under it (as S3 answers 412), and keeps other store errors as they are', async () => {
    const ref = await upload('u4', 'before');
    const refused = (): Promise<never> => Promise.reject(new SonicError('INPUT_FETCH_FAILED', 'copy refused'));
    const changed = racing(store, async () => void (await store.put('uploads/acme/u4', Buffer.from('after!'), { contentType: 'audio/wav' })), refused);
    expect((await failure(claimUpload(changed, 'audio', ref, taskKey(TASK, 'input', 'audio-a4'), []))).code).toBe('CHECKSUM_MISMATCH');
    const ref5 = await upload('u5', 'unchanged');
    const down = racing(store, async () => undefined, refused);
    expect(await failure(claimUpload(down, 'audio', ref5, taskKey(TASK, 'input', 'audio-a5'), []))).toMatchObject({
      code: 'INPUT_FETCH_FAILED',
      message: 'copy refused',
    });
  });

  it('answers INPUT_NOT_FOUND, client-safe, for an upload that expired between the check and the copy', async () => {
    const ref = await upload('u6', 'soon gone');
    const expired = racing(store, () => store.delete('uploads/acme/u6'));
    const stored: string[] = [];
    const e = await failure(claimUpload(expired, 'audio', ref, taskKey(TASK, 'input', 'audio-a6'), stored));
    expect(e).toMatchObject({ code: 'INPUT_NOT_FOUND', retryable: false });
    expect(e.publicMessage).toMatch(/does not exist \(uploads expire\)/);
    expect(await store.stat(taskKey(TASK, 'input', 'audio-a6'))).toBeUndefined();
  });
});
