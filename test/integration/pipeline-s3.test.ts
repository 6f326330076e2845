import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { S3BlobStore } from '../../src/blob/index.js';
import { taskKey } from '../../src/blob/store.js';
import { probe } from '../../src/media/probe.js';
import { loadConfig } from '../../src/core/config.js';
import type { TaskRequest } from '../../src/domain/records.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { readAll } from '../helpers/chain.js';
import { testContext } from '../helpers/infra.js';
import { startPipeline } from '../helpers/pipeline.js';

describe('the pipeline on an S3-compatible store (local S3Proxy)', () => {
  it('submit → SUCCEEDED with its inputs and video in the bucket, its intermediates removed, and the MP4 probes as h264/aac', async () => {
    const bucket = `sonicflow-e2e-${Date.now().toString(36)}`;
    const p = await startPipeline({ SONIC_BLOB_STORE: 's3', SONIC_S3_BUCKET: bucket });
    const r = await p.submitSample('Stored in an S3 compatible bucket.');
    const { dir } = r;
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id = String(r.body.task_id);
    const s = await p.waitFor(id);
    expect(s.state, JSON.stringify(s)).toBe('SUCCEEDED');
    const video = await fetch(String(s.video_url));
    expect(video.status).toBe(200);
    writeFileSync(join(dir, 'out.mp4'), Buffer.from(await video.arrayBuffer()));
    const info = await probe(join(dir, 'out.mp4'));
    expect(info.video?.codec).toBe('h264');
    expect(info.audio?.codec).toBe('aac');

    const c = loadConfig({ SONIC_S3_BUCKET: bucket });
    const s3 = new S3BlobStore({
      endpoint: c.s3Endpoint,
      bucket,
      region: c.s3Region,
      accessKeyId: c.s3AccessKeyId,
      secretAccessKey: c.s3SecretAccessKey,
      forcePathStyle: c.s3ForcePathStyle,
    });
    try {
      // the submitted audio, where the request record says it is
      const topic = p.topic('tasks.requested');
      const record = (await readAll(topic)).find((x) => x.key === id)!;
      const request = (await testContext().serde.decode<TaskRequest>(record.value!, sonicTopology({ prefix: p.prefix }).topics[topic]!.valueSchema!)).value;
      expect(request.audio.uri.startsWith(`s3://${bucket}/tasks/${id}/input/`)).toBe(true);
      for (const key of [s3.keyFromUri(request.audio.uri), `videos/${id}.mp4`]) {
        const st = await s3.stat(key);
        expect(st?.size_bytes, key).toBeGreaterThan(0);
        expect(st?.sha256, key).toMatch(/^[0-9a-f]{64}$/);
      }
      // once notify has read the SUCCEEDED record, the intermediates are gone from the bucket
      await p.drained();
      for (const key of [taskKey(id, 'preprocess', 'audio16k.wav'), taskKey(id, 'infer', 'rendered.mp4'), taskKey(id, 'encode', 'video.mp4')]) {
        expect(await s3.stat(key), key).toBeUndefined();
      }
      const left: string[] = [];
      for await (const e of s3.list(`tasks/${id}/`)) left.push(e.key);
      expect(left.length).toBeGreaterThanOrEqual(2);
      for (const key of left) expect(key.startsWith(`tasks/${id}/input/`), key).toBe(true);
    } finally {
      await s3.close();
    }
    expect(readdirSync(p.dataDir)).toEqual([]); // nothing went to the filesystem store
  }, 180_000);
});
