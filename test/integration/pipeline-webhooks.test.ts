import { mkdtempSync, readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import standardwebhooks from 'standardwebhooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { HEADERS } from '../../src/runtime/headers.js';
import { isPublicAddress } from '../../src/domain/callbacks.js';
import { makePortrait, makeTone, synthSpeech } from '../../src/media/samples.js';
import { readAll, waitUntil } from '../helpers/chain.js';
import { recordingServer, type Recorded } from '../helpers/http.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

describe('webhooks (Standard Webhooks, notify stage with its own retry tiers)', () => {
  let p: Pipeline;
  let base = '';
  let deliveries: Recorded[] = [];
  const failFirst = new Map<string, number>(); // path -> failures left
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-hooks-'));

  beforeAll(async () => {
    const receiver = await recordingServer((req) => {
      const left = failFirst.get(req.url ?? '') ?? 0;
      if (left > 0) failFirst.set(req.url ?? '', left - 1);
      return left > 0 ? 503 : 204;
    });
    base = receiver.url;
    deliveries = receiver.seen;
    p = await startPipeline({ SONIC_WEBHOOK_SECRET: SECRET, SONIC_WEBHOOK_ALLOW_HOSTS: '127.0.0.1' });
    await synthSpeech('The video is ready, the webhook should tell you.', join(dir, 'speech.wav'));
    await makeTone(join(dir, 'short.wav'), 0.4);
    await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
  }, 120_000);

  const form = (audio: string, callback: string) => ({
    audio: { data: readFileSync(join(dir, audio)), name: audio },
    image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
    min_resolution: '256',
    callback_url: callback,
    metadata: '{"order":"A-17"}',
  });

  it('a receiver failing three times then succeeding gets the same event again with the same webhook-id, and every signature verifies', async () => {
    failFirst.set('/flaky', 3);
    const r = await p.submit(form('speech.wav', `${base}/flaky`));
    const id = String(r.body.task_id);
    expect((await p.waitFor(id)).state).toBe('SUCCEEDED');
    await waitUntil(() => deliveries.filter((d) => d.path === '/flaky').length >= 4, 60_000, 'four deliveries');
    // notify has committed its input and retry tiers to the log end: no fifth delivery can come
    await p.drained();
    const mine = deliveries.filter((d) => d.path === '/flaky');
    expect(mine.map((d) => d.answered)).toEqual([503, 503, 503, 204]);
    expect(new Set(mine.map((d) => d.headers['webhook-id']))).toEqual(new Set([`msg_${id}_succeeded`]));
    const wh = new standardwebhooks.Webhook(SECRET);
    for (const d of mine) {
      const event = wh.verify(d.body, d.headers as Record<string, string>) as { type: string; data: Record<string, unknown> };
      expect(event.type).toBe('video.succeeded');
      expect(event.data).toMatchObject({ task_id: id, status: 'SUCCEEDED', video_url: `${p.api}/v1/tasks/${id}/video`, metadata: { order: 'A-17' } });
    }
    // a signature made with another secret does not verify
    expect(() =>
      new standardwebhooks.Webhook('whsec_' + Buffer.from('another secret!!').toString('base64')).verify(
        mine[0]!.body,
        mine[0]!.headers as Record<string, string>,
      ),
    ).toThrow();
    // the retries went through the notify tiers, and the task never stopped being SUCCEEDED
    expect((await readAll(p.topic('notify.retry.1'), 500)).filter((x) => x.key === id)).toHaveLength(1);
    expect((await readAll(p.topic('notify.retry.3'), 500)).filter((x) => x.key === id)).toHaveLength(1);
    expect((await p.status(id)).state).toBe('SUCCEEDED');
  }, 180_000);

  it('a failed task sends video.failed with the error', async () => {
    const r = await p.submit(form('short.wav', `${base}/failed`));
    const id = String(r.body.task_id);
    expect((await p.waitFor(id)).state).toBe('FAILED');
    await waitUntil(() => deliveries.some((d) => d.path === '/failed'), 60_000, 'the failure webhook');
    const d = deliveries.find((x) => x.path === '/failed')!;
    const event = new standardwebhooks.Webhook(SECRET).verify(d.body, d.headers as Record<string, string>) as {
      type: string;
      data: { error: { code: string; message: string } };
    };
    expect(event.type).toBe('video.failed');
    expect(event.data.error.code).toBe('AUDIO_TOO_SHORT');
    // the client-safe error only, exactly as the status endpoint shows it: no paths, tools or hosts
    expect(event.data.error).toEqual((await p.status(id)).error);
    expect(event.data.error.message).not.toMatch(/\/tmp|ffprobe|ffmpeg|sonicflow-/);
    expect(d.headers['webhook-id']).toBe(`msg_${id}_failed`);
  }, 120_000);

  it('a private address or localhost as the callback is refused at submit: 422 CALLBACK_URL_REFUSED, no task', async () => {
    for (const url of ['http://10.1.2.3:9/hook', `http://localhost:${new URL(base).port}/sneaky`, `http://[::ffff:127.0.0.1]:${new URL(base).port}/sneaky`]) {
      const r = await p.submit(form('speech.wav', url));
      expect(r.status, url).toBe(422);
      expect(r.body.code, url).toBe('CALLBACK_URL_REFUSED');
    }
  });

  it('a host name that resolves to a loopback address is refused when notify connects, without a request; the task still succeeds', async () => {
    // the machine's own name passes the submit check (it is no IP literal and not localhost) but
    // resolves to a loopback or private address on any ordinary host
    const host = hostname();
    const addresses = await lookup(host, { all: true });
    expect(
      addresses.some((a) => !isPublicAddress(a.address)),
      `${host} resolves to ${JSON.stringify(addresses)}`,
    ).toBe(true);
    const before = deliveries.length;
    const r = await p.submit(form('speech.wav', `http://${host}:${new URL(base).port}/sneaky`));
    expect(r.status).toBe(202);
    expect((await p.waitFor(String(r.body.task_id))).state).toBe('SUCCEEDED');
    await waitUntil(
      async () => (await readAll(p.topic('notify.dlq'), 500)).some((x) => x.key === r.body.task_id),
      60_000,
      'the refused callback in the notify DLQ',
    );
    const d = (await readAll(p.topic('notify.dlq'))).find((x) => x.key === r.body.task_id);
    expect(d?.headers[HEADERS.errorCode]).toBe('CALLBACK_URL_REFUSED');
    expect(d?.headers[HEADERS.dlqReason]).toBe('permanent');
    expect(deliveries.slice(before).some((x) => x.path === '/sneaky')).toBe(false);
  }, 180_000);
});
