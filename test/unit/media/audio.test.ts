import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkAudio, dbfsToLevel, frameCount, loudness, toModelWav, toSpeechFlac } from '../../../src/media/audio.js';
import { publicError } from '../../../src/core/errors.js';
import { countFrames, probe } from '../../../src/media/probe.js';
import { makeNoise, makePortrait, makeSilence, makeTone } from '../../../src/media/samples.js';
import { expectSonicError, ffprobeJson, tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('audio');
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  await Promise.all([
    makeTone(f('tone2.m4a'), 2),
    makeTone(f('tone2.mp3'), 2),
    makeTone(f('tone2.wav'), 2),
    makeTone(f('short.wav'), 0.5),
    makeTone(f('long.ogg'), 3),
    makeNoise(f('noise.flac'), 1.2, { amplitude: 0.5 }),
    makeSilence(f('silence.wav'), 1),
    makePortrait(f('face.png'), { width: 64, height: 64 }),
  ]);
  // a 2 s M4A written without faststart keeps its index (moov) at the end; cutting it off leaves nothing decodable
  const whole = await readFile(f('tone2.m4a'));
  await writeFile(f('truncated.m4a'), whole.subarray(0, Math.floor(whole.length / 2)));
  await writeFile(f('text.wav'), 'not audio at all\n');
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'sine=d=2:r=96000', '-ac', '6', '-c:a', 'pcm_s24le', f('six-96k.wav')]);
  // an hour of silence in about 8 KB: a decompression bomb for anything that decodes it whole
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'anullsrc=r=8000:cl=mono', '-t', '3600', '-c:a', 'flac', '-frame_size', '65535', f('hour.flac')]);
});

describe('probe', () => {
  it('reports container, audio stream and duration', async () => {
    const p = await probe(f('tone2.m4a'));
    expect(p.formatName).toContain('mp4');
    expect(p.audio).toMatchObject({ codec: 'aac', sampleRate: 44_100, channels: 1 });
    expect(p.audio?.durationS).toBeCloseTo(2, 1);
    expect(p.video).toBeUndefined();
  });

  it('throws the caller-chosen code with ffprobe stderr for an unreadable file', async () => {
    const err = await expectSonicError(probe(f('text.wav'), { onError: 'AUDIO_DECODE_FAILED' }), 'AUDIO_DECODE_FAILED');
    expect(err.message).toMatch(/Invalid data found/);
    await expectSonicError(probe(f('text.wav')), 'INTERNAL');
    await expectSonicError(countFrames(f('tone2.m4a')), 'INTERNAL'); // no video stream
  });
});

describe('checkAudio', () => {
  it('accepts audio within the limits and returns its probe', async () => {
    const p = await checkAudio(f('tone2.mp3'), { minS: 1, maxS: 10 });
    expect(p.audio.codec).toBe('mp3');
    expect(p.audio.durationS).toBeGreaterThan(1.9);
  });

  it('refuses audio shorter than minS, stating both values', async () => {
    const err = await expectSonicError(checkAudio(f('short.wav')), 'AUDIO_TOO_SHORT');
    expect(err.message).toBe('the audio is 0.50 s; at least 1 s is needed');
    expect(publicError(err)).toMatchObject({ message: err.message, details: { field: 'audio', durationS: 0.5, minS: 1 } });
    expect(err.retryable).toBe(false);
  });

  it('refuses audio longer than maxS, stating both values', async () => {
    const err = await expectSonicError(checkAudio(f('long.ogg'), { maxS: 2 }), 'AUDIO_TOO_LONG');
    expect(err.message).toMatch(/^the audio is 3\.0\d s; at most 2 s is allowed$/);
  });

  it('reports a truncated file, a text file and an image as AUDIO_DECODE_FAILED', async () => {
    expect(execFileSync('ffprobe', ['-v', 'quiet', f('tone2.m4a')]).length).toBe(0); // sanity: the original is fine
    await expectSonicError(checkAudio(f('truncated.m4a')), 'AUDIO_DECODE_FAILED');
    await expectSonicError(checkAudio(f('text.wav')), 'AUDIO_DECODE_FAILED');
    const err = await expectSonicError(checkAudio(f('face.png')), 'AUDIO_DECODE_FAILED');
    expect(err.message).toMatch(/no audio stream/);
  });
});

describe('toModelWav', () => {
  it('writes 16 kHz mono 16-bit PCM WAV', async () => {
    await toModelWav(f('tone2.mp3'), f('model.wav'));
    const { streams, format } = ffprobeJson(f('model.wav'), 'format=format_name,duration:stream=codec_name,sample_rate,channels');
    expect(format?.format_name).toBe('wav');
    expect(streams?.[0]).toMatchObject({ codec_name: 'pcm_s16le', sample_rate: '16000', channels: 1 });
    expect(Number(format?.duration)).toBeGreaterThan(1.9);
  });

  it('cuts at maxS', async () => {
    await toModelWav(f('long.ogg'), f('cut.wav'), { maxS: 1.5 });
    expect((await probe(f('cut.wav'))).audio?.durationS).toBeCloseTo(1.5, 2);
  });

  it('throws AUDIO_DECODE_FAILED for a file ffmpeg cannot decode or without audio', async () => {
    await expectSonicError(toModelWav(f('truncated.m4a'), f('x.wav')), 'AUDIO_DECODE_FAILED');
    await expectSonicError(toModelWav(f('face.png'), f('y.wav')), 'AUDIO_DECODE_FAILED');
  });
});

describe('toSpeechFlac', () => {
  it('cuts the speech to 16-bit FLAC, mono or stereo up to 48 kHz, and reports the probed duration', async () => {
    expect(await toSpeechFlac(f('six-96k.wav'), f('six.flac'), { maxS: 1.25 })).toEqual({ durationS: 1.25 });
    const s = ffprobeJson(f('six.flac'), 'stream=codec_name,sample_rate,channels,sample_fmt').streams?.[0];
    expect(s).toMatchObject({ codec_name: 'flac', sample_rate: '48000', channels: 2, sample_fmt: 's16' });
    expect(await toSpeechFlac(f('tone2.mp3'), f('mp3.flac'), { maxS: 60 })).toEqual({ durationS: expect.closeTo(2, 1) as number });
    expect(ffprobeJson(f('mp3.flac'), 'stream=sample_rate,channels').streams?.[0]).toMatchObject({ sample_rate: '44100', channels: 1 });
  });

  it('decodes no more than the cut of a decompression bomb', async () => {
    expect(ffprobeJson(f('hour.flac'), 'format=duration').format?.duration).toBe('3600.000000');
    const t0 = Date.now();
    expect(await toSpeechFlac(f('hour.flac'), f('bomb.flac'), { maxS: 5 })).toEqual({ durationS: 5 });
    expect(Date.now() - t0).toBeLessThan(3000);
    // the loudness of a few frames decodes only those frames' audio
    expect(await loudness(f('hour.flac'), 25, { frames: 50 })).toEqual(Array(50).fill(0));
  });

  it('fails with a client-safe AUDIO_DECODE_FAILED, and stops at its deadline', async () => {
    const err = await expectSonicError(toSpeechFlac(f('text.wav'), f('text.flac'), { maxS: 10 }), 'AUDIO_DECODE_FAILED');
    expect(publicError(err).message).toBe('the audio could not be decoded: its data is corrupt or truncated');
    expect(err.message).toContain(f('text.wav')); // operators see the file and ffmpeg's words
    const slow = await expectSonicError(toModelWav(f('hour.flac'), f('hour.wav'), { timeoutMs: 100 }), 'AUDIO_DECODE_FAILED');
    expect(slow.details).toMatchObject({ timedOut: true });
    expect(publicError(slow).message).toBe('decoding the audio took longer than allowed');
  });
});

describe('loudness', () => {
  it('gives one value per video frame: 0 for digital silence, high for a loud signal', async () => {
    const silent = await loudness(f('silence.wav'), 25);
    expect(silent).toHaveLength(25);
    expect(silent.every((v) => v === 0)).toBe(true);

    const noise = await loudness(f('noise.flac'), 25);
    expect(noise).toHaveLength(30);
    expect(Math.min(...noise)).toBeGreaterThan(0.7);
    expect(Math.max(...noise)).toBeLessThanOrEqual(1);

    // lavfi's sine has amplitude 1/8: RMS 0.125/√2 = -21.07 dBFS, i.e. (50 - 21.07) / 40 = 0.723
    const tone = await loudness(f('tone2.wav'), 25);
    expect(tone).toHaveLength(50);
    for (const v of tone.slice(2, 48)) expect(v).toBeCloseTo(0.723, 2);
    // fps that does not divide the sample rate: ceil(2 s × 30) windows
    expect(await loudness(f('tone2.wav'), 30)).toHaveLength(60);
  });

  it('pads or truncates to a requested frame count', async () => {
    expect(await loudness(f('silence.wav'), 10, { frames: 12 })).toEqual(Array(12).fill(0));
    expect(await loudness(f('noise.flac'), 25, { frames: 5 })).toHaveLength(5);
  });

  it('maps dBFS linearly from -50 (0) to -10 (1)', () => {
    expect(dbfsToLevel(-Infinity)).toBe(0);
    expect(dbfsToLevel(-60)).toBe(0);
    expect(dbfsToLevel(-30)).toBeCloseTo(0.5);
    expect(dbfsToLevel(-3)).toBe(1);
    expect(frameCount(2.2, 25)).toBe(55);
    expect(frameCount(2.201, 25)).toBe(56);
  });

  it('throws AUDIO_DECODE_FAILED for undecodable input', async () => {
    await expectSonicError(loudness(f('text.wav'), 25), 'AUDIO_DECODE_FAILED');
  });
});
