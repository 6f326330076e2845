/**
 * Hostile suite, part 5: what leaks. Clients get a code and a safe message, never the store's
 * endpoint, a path or a tool's output; the CLI never hands its API key to another origin.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../bench/lib.js';
import { downloadVideo } from '../../src/ops/submit.js';
import { KEYS, bearer, expectRefused, raw, sampleMedia, startApiOnly } from '../helpers/api.js';
import { recordingServer } from '../helpers/http.js';

describe('nothing leaks to clients (real API, broker, registry)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-sec-leaks-'));
  let form: { body: Buffer; contentType: string };
  beforeAll(async () => {
    ({ form } = await sampleMedia());
  }, 60_000);

  it('a store that fails answers 503 STORAGE_WRITE_FAILED without its endpoint, bucket or path; nothing enqueued', async () => {
    // an S3 endpoint on a port where nothing listens: every write fails
    const deadPort = await freePort();
    const api = await startApiOnly({ SONIC_BLOB_STORE: 's3', SONIC_S3_ENDPOINT: `http://127.0.0.1:${deadPort}`, SONIC_S3_BUCKET: 'secret-bucket-name' });
    const r = await expectRefused(
      api,
      () => raw(api.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': form.contentType }, form.body),
      503,
      'STORAGE_WRITE_FAILED',
    );
    expect(r.text).not.toContain(String(deadPort));
    expect(r.text).not.toMatch(/secret-bucket-name|127\.0\.0\.1|tasks\/|\/tmp\/|ECONNREFUSED/);
    // operators get the detail in the log
    await expect.poll(() => api.proc.logs(), { timeout: 5000 }).toMatch(/secret-bucket-name|ECONNREFUSED/);
    api.proc.proc.kill('SIGTERM');
  }, 90_000);

  it('the CLI sends its API key to the API only: not to a CDN video_url, not after a redirect to another origin', async () => {
    const cdn = await recordingServer((_req, res) => (res.writeHead(200, { 'content-type': 'video/mp4' }).end('MP4-BYTES'), 200));
    const api = await recordingServer((req, res) => {
      if (!req.url?.endsWith('/video')) return 404;
      res.writeHead(302, { location: `${cdn.url}/videos/t2.mp4` }).end();
      return 302;
    });
    const o = { api: api.url, apiKey: 'k-cli-secret-key-1234' };
    await downloadVideo(o, { task_id: 't1', state: 'SUCCEEDED', progress: 1, video_url: `${cdn.url}/videos/t1.mp4` } as never, join(dir, 'v1.mp4'));
    await downloadVideo(o, { task_id: 't2', state: 'SUCCEEDED', progress: 1, video_url: null } as never, join(dir, 'v2.mp4'));
    expect(readFileSync(join(dir, 'v1.mp4'), 'utf8')).toBe('MP4-BYTES');
    expect(readFileSync(join(dir, 'v2.mp4'), 'utf8')).toBe('MP4-BYTES');
    expect(cdn.seen.map((s) => s.path)).toEqual(['/videos/t1.mp4', '/videos/t2.mp4']);
    for (const s of cdn.seen) expect(s.headers.authorization).toBeUndefined();
    expect(api.seen).toHaveLength(1);
    expect(api.seen[0]!.headers.authorization).toBe('Bearer k-cli-secret-key-1234');
  });
});
