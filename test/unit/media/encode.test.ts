import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeDeliverable, hasFaststart } from '../../../src/media/encode.js';
import { renderPreview } from '../../../src/media/render.js';
import { makePortrait, makeTone } from '../../../src/media/samples.js';
import { expectSonicError, ffprobeJson, tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('encode');
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  await Promise.all([makePortrait(f('face.png'), { width: 160, height: 200 }), makeTone(f('speech.m4a'), 3.3)]);
  await renderPreview({ image: f('face.png'), audio: f('speech.m4a'), output: f('render.mp4'), size: 128 });
  // an MP4 as ffmpeg writes it by default: mdat first, moov at the end
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=s=128x96:r=25:d=1', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', f('short.mp4')]);
  await writeFile(f('corrupt.mp4'), Buffer.concat([Buffer.from([0, 0, 0, 0x18]), Buffer.from('ftypisom'), randomBytes(20_000)]));
});

describe('encodeDeliverable', () => {
  it('writes H.264 yuv420p + AAC, as long as the audio, with the moov atom first', async () => {
    const r = await encodeDeliverable({ video: f('render.mp4'), audio: f('speech.m4a'), output: f('final.mp4') });
    const { streams, format } = ffprobeJson(f('final.mp4'), 'format=duration:stream=codec_type,codec_name,pix_fmt,sample_rate,avg_frame_rate,duration');
    const video = streams?.find((s) => s.codec_type === 'video');
    const audio = streams?.find((s) => s.codec_type === 'audio');
    expect(video).toMatchObject({ codec_name: 'h264', pix_fmt: 'yuv420p', avg_frame_rate: '25/1' });
    expect(audio).toMatchObject({ codec_name: 'aac', sample_rate: '48000' });
    const sourceS = Number(ffprobeJson(f('speech.m4a'), 'format=duration').format?.duration);
    expect(Math.abs(Number(video?.duration) - sourceS)).toBeLessThanOrEqual(0.2);
    expect(Math.abs(Number(audio?.duration) - sourceS)).toBeLessThanOrEqual(0.2);
    expect(Number(format?.duration)).toBeCloseTo(r.durationS, 3);
    expect(r).toMatchObject({ width: 128, height: 160 });
    expect(await hasFaststart(f('final.mp4'))).toBe(true);
  });

  it('fails with a retryable ENCODE_FAILED for a corrupt video input', async () => {
    const err = await expectSonicError(encodeDeliverable({ video: f('corrupt.mp4'), audio: f('speech.m4a'), output: f('bad.mp4') }), 'ENCODE_FAILED');
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/ffmpeg exited with code \d+/);
  });

  it('fails with ENCODE_FAILED when the video is much shorter than the speech', async () => {
    const err = await expectSonicError(encodeDeliverable({ video: f('short.mp4'), audio: f('speech.m4a'), output: f('cut.mp4') }), 'ENCODE_FAILED');
    expect(err.message).toMatch(/video lasts 1\.0\d+ s but the source audio 3\.3\d+ s/);
    expect(err.retryable).toBe(true);
  });
});

describe('hasFaststart', () => {
  it('is false when mdat precedes moov, and for files that are not MP4', async () => {
    expect(await hasFaststart(f('short.mp4'))).toBe(false);
    expect(await hasFaststart(f('render.mp4'))).toBe(true);
    expect(await hasFaststart(f('face.png'))).toBe(false);
    expect(await hasFaststart(f('corrupt.mp4'))).toBe(false);
  });
});
