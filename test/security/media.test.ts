/**
 * Hostile media against the real code, no mocks: decompression bombs, huge and lying
 * dimensions, truncated and corrupt files, empty files, videos posing as audio, polyglots,
 * lying headers and runaway tool runs. The edges are called directly where they are the
 * defence (inspectMedia, checkImage, the decoders), and a few cases go through the real pipeline
 * as JSON-referenced blobs (the path where validate is the only check): each must end FAILED
 * with its code, a client message free of paths and tool output, and no scratch left behind.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/blob/fs-store.js';
import { PlainProducer } from '../../src/kafka/io.js';
import { toModelWav } from '../../src/media/audio.js';
import { checkImage, toModelPng } from '../../src/media/image.js';
import { inspectMedia, type InspectLimits } from '../../src/media/inspect.js';
import { probe } from '../../src/media/probe.js';
import { decodeStill } from '../../src/media/render.js';
import { makePortrait, makeTone } from '../../src/media/samples.js';
import { valueSubject } from '../../src/serde/serde.js';
import { BuiltinBackend } from '../../src/stages/backends/builtin.js';
import { PARAM_DEFAULTS } from '../../src/domain/params.js';
import type { MediaRef, TaskRequest } from '../../src/domain/records.js';
import { expectSonicError, ffprobeJson } from '../fixtures/media/util.js';
import { testContext } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';
import { ff, greyPng, patchJpegSof, pngChunk, read, webpFrameChunk, webpVp8x, withPngChunk, withWavDataSize, zipOf } from '../unit/media/hostile-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'sonicflow-hostile-'));
const f = (name: string): string => join(dir, name);
const put = (name: string, data: Buffer): string => (writeFileSync(f(name), data), f(name));
const LIMITS: InspectLimits = { maxPixels: 25_000_000, maxSide: 8192, minShort: 256, maxShort: 4096 };
const image = (path: string) => inspectMedia('image', path, LIMITS);
const audio = (path: string) => inspectMedia('audio', path, LIMITS);
/** What a client must never read: paths, tool names, ffmpeg's log prefixes. */
const LEAK = /\/(tmp|home|var|srv|root|usr)\b|ffmpeg|ffprobe|\[\w+ @ 0x|Invalid data/i;

afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 3 }));

beforeAll(async () => {
  await Promise.all([
    makePortrait(f('face.jpg'), { width: 480, height: 600 }),
    makePortrait(f('face.png'), { width: 320, height: 400 }),
    makeTone(f('tone.wav'), 2),
  ]);
  ff('-f', 'lavfi', '-i', 'color=c=gray:s=4096x30000', '-frames:v', '1', '-compression_level', '9', f('bomb-4096x30000.png'));
  ff('-f', 'lavfi', '-i', 'color=c=gray:s=12000x4000', '-frames:v', '1', '-c:v', 'libwebp', '-lossless', '1', f('big.webp'));
  ff('-f', 'lavfi', '-i', 'color=c=gray:s=512x512', '-frames:v', '1', '-c:v', 'libwebp', '-lossless', '1', f('small.webp'));
  for (const [name, flags] of [
    ['moov-last.mp4', []],
    ['moov-first.mp4', ['-movflags', '+faststart']],
  ] as const) {
    ff(
      '-f',
      'lavfi',
      '-i',
      'testsrc=s=320x240:d=2',
      '-f',
      'lavfi',
      '-i',
      'sine=d=2',
      '-c:v',
      'libx264',
      '-preset',
      'ultrafast',
      '-c:a',
      'aac',
      ...flags,
      f(name),
    );
  }
  // three hours of silence in a few dozen KB: 330 MB of PCM at 16 kHz for whoever decodes it whole
  ff('-f', 'lavfi', '-i', 'anullsrc=r=8000:cl=mono', '-t', '10800', '-c:a', 'flac', '-frame_size', '65535', f('bomb-3h.flac'));
  const png = Buffer.from(read(f('face.png')));
  const idat = png.indexOf('IDAT');
  const len = png.readUInt32BE(idat - 4);
  for (let i = idat + 24; i < idat + len - 8; i++) png[i] = (png[i]! * 7 + 13) & 0xff;
  writeFileSync(
    f('corrupt-body.png'),
    Buffer.concat([png.subarray(0, idat - 4), pngChunk('IDAT', png.subarray(idat + 4, idat + 4 + len)), png.subarray(idat + 8 + len)]),
  );
  // a VP8X header naming a 512×512 canvas around a 12000×4000 lossless bitstream (48 MP)
  writeFileSync(f('lying.webp'), webpVp8x(512, 512, webpFrameChunk(read(f('big.webp')))));
  writeFileSync(f('lying.wav'), withWavDataSize(read(f('tone.wav')), 3600 * 88_200));
  writeFileSync(f('poly.jpg'), Buffer.concat([read(f('face.jpg')), zipOf('index.html', Buffer.from('<script>alert(1)</script>'))]));
  await makeTone(f('long.wav'), 40);
}, 120_000);

describe('hostile media at the edge (inspectMedia, checkImage, the decoders)', () => {
  it('PNG bombs: 4096×30000 in a few hundred KB, and 30000×30000, refused from the header in milliseconds', async () => {
    expect(read(f('bomb-4096x30000.png')).length).toBeLessThan(500_000);
    const t0 = performance.now();
    const err = await expectSonicError(image(f('bomb-4096x30000.png')), 'IMAGE_TOO_LARGE');
    expect(performance.now() - t0).toBeLessThan(250); // a decode would take seconds
    expect(err.details).toMatchObject({ width: 4096, height: 30000, pixels: 122_880_000 });
    await expectSonicError(image(put('bomb-30000.png', greyPng(30_000, 30_000, 16))), 'IMAGE_TOO_LARGE');
    // had a header check been skipped, the decoders would still refuse it unallocated
    expect((await probe(f('bomb-4096x30000.png'), { maxPixels: LIMITS.maxPixels })).overPixelLimit).toEqual({ width: 4096, height: 30000 });
    await expectSonicError(toModelPng(f('bomb-4096x30000.png'), f('out1.png'), { maxPixels: LIMITS.maxPixels }), 'IMAGE_TOO_LARGE');
  });

  it('a JPEG whose frame header claims 65000×65000, a WebP whose VP8X canvas is 16384×16384', async () => {
    await expectSonicError(image(put('huge-sof.jpg', patchJpegSof(read(f('face.jpg')), 65_000, 65_000))), 'IMAGE_TOO_LARGE');
    await expectSonicError(image(put('huge-canvas.webp', webpVp8x(16_384, 16_384, webpFrameChunk(read(f('small.webp')))))), 'IMAGE_TOO_LARGE');
  });

  it('a header that lies about the dimensions: refused by inspection, and by -max_pixels in every decoder', async () => {
    expect(read(f('lying.webp')).length).toBeLessThan(10_000);
    const err = await expectSonicError(image(f('lying.webp')), 'MEDIA_MISMATCH');
    expect(err.publicMessage).toBe('the image file claims a 512×512 px canvas but holds a 12000×4000 px picture');
    // the decoders see the bitstream's size, not the header's, and refuse it without allocating
    expect((await probe(f('lying.webp'), { maxPixels: LIMITS.maxPixels })).overPixelLimit).toEqual({ width: 12_000, height: 4000 });
    await expectSonicError(toModelPng(f('lying.webp'), f('out2.png'), { maxPixels: LIMITS.maxPixels }), 'IMAGE_TOO_LARGE');
    await expectSonicError(decodeStill(f('lying.webp'), 256, { maxPixels: LIMITS.maxPixels }), 'IMAGE_DECODE_FAILED');
  });

  it('zero-length files, and truncated PNG and JPEG headers', async () => {
    await expectSonicError(audio(put('empty.wav', Buffer.alloc(0))), 'AUDIO_DECODE_FAILED');
    await expectSonicError(image(put('empty.png', Buffer.alloc(0))), 'IMAGE_DECODE_FAILED');
    await expectSonicError(image(put('cut.png', read(f('face.png')).subarray(0, 18))), 'IMAGE_DECODE_FAILED');
    await expectSonicError(image(put('cut.jpg', read(f('face.jpg')).subarray(0, 300))), 'IMAGE_DECODE_FAILED');
  });

  it('a corrupt body behind a valid header (checksums fixed up) fails to decode', async () => {
    expect(ffprobeJson(f('corrupt-body.png'), 'stream=width').streams?.[0]?.width).toBe(320); // the header is fine
    const err = await expectSonicError(checkImage(f('corrupt-body.png')), 'IMAGE_DECODE_FAILED');
    expect(err.publicMessage).not.toMatch(LEAK);
  });

  it('an MP4 with a video track posing as audio, index first or last', async () => {
    for (const name of ['moov-first.mp4', 'moov-last.mp4']) {
      const err = await expectSonicError(audio(f(name)), 'MEDIA_MISMATCH');
      expect(err.publicMessage).toMatch(/^the audio file is an MP4 video/);
    }
  });

  it('polyglots: JPEG + ZIP, PNG + HTML (in a text chunk or after the end)', async () => {
    await expectSonicError(image(f('poly.jpg')), 'MEDIA_MISMATCH');
    const html = Buffer.from('<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>');
    await expectSonicError(
      image(put('poly-text.png', withPngChunk(read(f('face.png')), pngChunk('tEXt', Buffer.concat([Buffer.from('Comment\0'), html]))))),
      'MEDIA_MISMATCH',
    );
    await expectSonicError(image(put('poly-tail.png', Buffer.concat([read(f('face.png')), html]))), 'MEDIA_MISMATCH');
  });

  it('a WAV whose header announces an hour it does not hold', async () => {
    const err = await expectSonicError(audio(f('lying.wav')), 'MEDIA_MISMATCH');
    expect(err.publicMessage).toBe('the WAV header announces 3600.0 s of audio but the file holds 2.0 s; it is truncated or its header is wrong');
  });

  it('a tool run past its deadline is killed, and the builtin renderer stops at the inference budget', async () => {
    const t0 = Date.now();
    const slow = await expectSonicError(toModelWav(f('bomb-3h.flac'), f('3h.wav'), { timeoutMs: 300 }), 'AUDIO_DECODE_FAILED');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(slow.details.timedOut).toBe(true);
    expect(slow.publicMessage).toBe('decoding the audio took longer than allowed');
    const backend = new BuiltinBackend({ timeoutBaseS: 1, timeoutPerAudioS: 0 });
    const t1 = Date.now();
    const err = await expectSonicError(
      backend.render({
        taskId: randomUUID(),
        attempt: 1,
        imagePng: f('face.png'),
        audio16k: f('long.wav'),
        audioOriginal: f('long.wav'),
        durationS: 40,
        params: { ...PARAM_DEFAULTS, min_resolution: 1024 },
        outputPath: f('preview.mp4'),
        workDir: dir,
        signal: new AbortController().signal,
        onProgress: () => undefined,
      }),
      'INFERENCE_TIMEOUT',
    );
    expect(Date.now() - t1).toBeLessThan(10_000);
    expect(err.publicMessage).toBe('the preview renderer took longer than its budget of 1 s for 40.0 s of audio');
  });
});

describe('hostile media through the real pipeline (JSON-referenced blobs, validate is the only gate)', () => {
  let p: Pipeline;
  let store: FsBlobStore;
  const scratch = join(dir, 'scratch');

  beforeAll(async () => {
    p = await startPipeline({ SONIC_SCRATCH_DIR: scratch });
    store = new FsBlobStore(p.dataDir);
  }, 120_000);

  /** Stores the two files as a client's earlier uploads and enqueues a task referencing them. */
  async function enqueue(audioFile: Buffer, imageFile: Buffer, over: Partial<TaskRequest> = {}, tamper?: Buffer): Promise<string> {
    const id = randomUUID();
    const ref = async (kind: string, data: Buffer): Promise<MediaRef> => {
      const b = await store.put(`uploads/default/${id}/${kind}`, data);
      return { uri: b.uri, content_type: b.content_type, size_bytes: b.size_bytes, sha256: b.sha256 };
    };
    const audioRef = await ref('audio', audioFile);
    const imageRef = await ref('image', imageFile);
    if (tamper) writeFileSync(join(p.dataDir, 'uploads', 'default', id, 'image'), tamper); // changed after the reference was made
    const request: TaskRequest = {
      schema_version: 1,
      task_id: id,
      tenant_id: 'default',
      idempotency_key: null,
      created_at: new Date(),
      expires_at: null,
      image: imageRef,
      audio: audioRef,
      max_duration_s: 60,
      truncate_audio: false,
      params: { ...PARAM_DEFAULTS, min_resolution: 256 },
      callback: null,
      priority: 0,
      metadata: {},
      traceparent: null,
      ...over,
    };
    const topic = p.topic('tasks.requested');
    const producer = await new PlainProducer(testContext().kafka).connect();
    await producer.send(topic, [{ key: id, value: await testContext().serde.encode(valueSubject(topic), 'task-request', request) }]);
    await producer.close();
    return id;
  }

  it('each hostile task ends FAILED with its code, a clean client message and no scratch left', async () => {
    const png = read(f('face.png'));
    const wav = read(f('tone.wav'));
    const cases: [string, () => Promise<string>, string][] = [
      ['PNG bomb 4096×30000', () => enqueue(wav, read(f('bomb-4096x30000.png'))), 'IMAGE_TOO_LARGE'],
      ['header lying about dimensions', () => enqueue(wav, read(f('lying.webp'))), 'MEDIA_MISMATCH'],
      ['corrupt body behind a valid header', () => enqueue(wav, read(f('corrupt-body.png'))), 'IMAGE_DECODE_FAILED'],
      ['zero-length audio', () => enqueue(Buffer.alloc(0), png), 'AUDIO_DECODE_FAILED'],
      ['MP4 video posing as audio', () => enqueue(read(f('moov-first.mp4')), png), 'MEDIA_MISMATCH'],
      ['WAV announcing an hour', () => enqueue(read(f('lying.wav')), png), 'MEDIA_MISMATCH'],
      ['JPEG + ZIP polyglot', () => enqueue(wav, read(f('poly.jpg'))), 'MEDIA_MISMATCH'],
      ['3 h FLAC bomb without truncate_audio', () => enqueue(read(f('bomb-3h.flac')), png, { max_duration_s: 30 }), 'AUDIO_TOO_LONG'],
      ['bytes changed after the reference', () => enqueue(wav, png, {}, Buffer.from(png).fill(1, 200, 260)), 'CHECKSUM_MISMATCH'],
    ];
    const ids = await Promise.all(cases.map(([, run]) => run()));
    for (const [i, [name, , code]] of cases.entries()) {
      const s = await p.waitFor(ids[i]!, ['SUCCEEDED', 'FAILED'], 90_000);
      expect(s.state, name).toBe('FAILED');
      const error = s.error as { code: string; message: string };
      expect(error.code, name).toBe(code);
      expect(error.message, name).not.toMatch(LEAK);
      expect(error.message.length, name).toBeGreaterThan(10);
    }
    expect(readdirSync(scratch).flatMap((proc) => readdirSync(join(scratch, proc)))).toEqual([]);
  }, 150_000);

  it('the 3 h FLAC bomb with truncate_audio is cut, not decoded whole: SUCCEEDED with a 3 s video', async () => {
    const t0 = Date.now();
    const id = await enqueue(read(f('bomb-3h.flac')), read(f('face.png')), { max_duration_s: 3, truncate_audio: true });
    const s = await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 90_000);
    expect(s.state, JSON.stringify(s)).toBe('SUCCEEDED');
    expect(Date.now() - t0).toBeLessThan(60_000);
    const video = put('cut.mp4', Buffer.from(await (await fetch(String(s.video_url))).arrayBuffer()));
    expect(Number(ffprobeJson(video, 'format=duration').format?.duration)).toBeCloseTo(3, 0);
    expect(readdirSync(scratch).flatMap((proc) => readdirSync(join(scratch, proc)))).toEqual([]);
  }, 120_000);
});
