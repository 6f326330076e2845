import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, publicError } from '../../../src/core/errors.js';
import { inspectMedia, type InspectLimits } from '../../../src/media/inspect.js';
import { makePortrait, makeTone } from '../../../src/media/samples.js';
import { expectSonicError, ffprobeJson, tempDir } from '../../fixtures/media/util.js';
import {
  exifApp1,
  ff,
  greyPng,
  jpegSegment,
  patchJpegSof,
  pngChunk,
  read,
  webpFrameChunk,
  webpVp8x,
  withJpegSegments,
  withPngChunk,
  withWavDataSize,
  zipOf,
} from './hostile-fixtures.js';

const dir = tempDir('inspect');
const f = (name: string): string => join(dir, name);
const put = (name: string, data: Buffer): string => (writeFileSync(f(name), data), f(name));
const LIMITS: InspectLimits = { maxPixels: 25_000_000, maxSide: 8192, minShort: 256, maxShort: 4096 };
const image = (path: string, limits: Partial<InspectLimits> = {}) => inspectMedia('image', path, { ...LIMITS, ...limits });
const audio = (path: string) => inspectMedia('audio', path, LIMITS);

beforeAll(async () => {
  await Promise.all([
    makePortrait(f('face.png'), { width: 300, height: 400 }),
    makePortrait(f('face.jpg'), { width: 480, height: 320 }),
    makePortrait(f('face.webp'), { width: 320, height: 400 }),
    ...['wav', 'mp3', 'm4a', 'aac', 'flac', 'ogg'].map((ext) => makeTone(f(`tone.${ext}`), 1.5)),
  ]);
  ff('-f', 'lavfi', '-i', 'color=c=gray:s=512x384', '-frames:v', '1', '-c:v', 'libwebp', '-lossless', '1', f('lossless.webp'));
  ff('-f', 'lavfi', '-i', 'color=c=red@0.5:s=384x512,format=rgba', '-frames:v', '1', '-c:v', 'libwebp', f('alpha.webp'));
  ff('-f', 'lavfi', '-i', 'testsrc=s=320x240:d=1', '-f', 'lavfi', '-i', 'sine=d=1', '-c:v', 'libx264', '-preset', 'ultrafast', '-c:a', 'aac', f('video.mp4'));
  ff('-f', 'lavfi', '-i', 'sine=d=1', '-c:a', 'aac', '-movflags', '+faststart', f('tone-faststart.m4a'));
});

describe('inspectMedia: pictures', () => {
  it('reads the size of PNG, JPEG and WebP (VP8, VP8L, VP8X) from the header, as ffprobe decodes it', async () => {
    for (const name of ['face.png', 'face.jpg', 'face.webp', 'lossless.webp', 'alpha.webp']) {
      const s = ffprobeJson(f(name), 'stream=width,height').streams?.[0];
      const got = await image(f(name), { minShort: 1 });
      expect({ width: got.width, height: got.height }, name).toEqual({ width: s?.width, height: s?.height });
    }
    expect(read(f('alpha.webp')).toString('latin1', 12, 16)).toBe('VP8X'); // the extended layout is covered
    expect(await image(f('face.png'))).toEqual({ kind: 'image', format: 'png', contentType: 'image/png', width: 300, height: 400, orientation: 1 });
  });

  it('applies the EXIF orientation, and finds the frame header behind large metadata segments', async () => {
    const jpeg = read(f('face.jpg'));
    const icc = Array.from({ length: 6 }, () => jpegSegment(0xe2, Buffer.alloc(65_000, 1)));
    expect(await image(put('rot6.jpg', withJpegSegments(jpeg, exifApp1(6), ...icc)))).toMatchObject({ width: 320, height: 480, orientation: 6 });
    expect(await image(put('rot3.jpg', withJpegSegments(jpeg, exifApp1(3))))).toMatchObject({ width: 480, height: 320, orientation: 3 });
  });

  it('enforces each limit with a client-safe message and public details', async () => {
    const png = f('face.png');
    const cases: [Partial<InspectLimits>, string, string, Record<string, number>][] = [
      [{ maxPixels: 100_000 }, 'IMAGE_TOO_LARGE', 'the image is 300×400 px (120000 pixels); at most 100000 pixels are accepted', { maxPixels: 100_000 }],
      [{ maxSide: 350 }, 'IMAGE_TOO_LARGE', 'the image is 300×400 px; its long side must be at most 350 px', { maxSide: 350 }],
      [{ maxShort: 299 }, 'IMAGE_TOO_LARGE', 'the image is 300×400 px; its short side must be at most 299 px', { maxShort: 299 }],
      [{ minShort: 301 }, 'IMAGE_TOO_SMALL', 'the image is 300×400 px; its short side must be at least 301 px', { minShort: 301 }],
    ];
    for (const [limits, code, message, limit] of cases) {
      const err = await expectSonicError(image(png, limits), code as 'IMAGE_TOO_LARGE');
      expect(publicError(err)).toEqual({ code, message, retryable: false, details: { field: 'image', width: 300, height: 400, pixels: 120_000, ...limit } });
      expect(err.details.path).toBe(png); // operators still see which file
    }
  });

  it('refuses a wrong kind, an unknown format and an empty file', async () => {
    const err = await expectSonicError(image(f('tone.wav')), 'UNSUPPORTED_IMAGE_FORMAT');
    expect(publicError(err).message).toBe('the image file holds audio (wav); send jpeg, png or webp');
    await expectSonicError(image(put('text.png', Buffer.from('hello'))), 'UNSUPPORTED_IMAGE_FORMAT');
    expect(publicError(await expectSonicError(image(put('empty.png', Buffer.alloc(0))), 'IMAGE_DECODE_FAILED')).message).toBe('the image file is empty');
  });

  it('refuses corrupt and self-contradicting headers', async () => {
    const png = read(f('face.png'));
    const badCrc = Buffer.from(png);
    badCrc[20] = (badCrc[20] as number) ^ 0x40; // height changed, checksum not
    await expectSonicError(image(put('crc.png', badCrc)), 'IMAGE_DECODE_FAILED');
    await expectSonicError(image(put('cut.png', png.subarray(0, 20))), 'IMAGE_DECODE_FAILED');
    const jpeg = read(f('face.jpg'));
    await expectSonicError(image(put('cut.jpg', jpeg.subarray(0, 100))), 'IMAGE_DECODE_FAILED');
    const sos = jpeg.indexOf(Buffer.from([0xff, 0xda]));
    await expectSonicError(image(put('noscan.jpg', Buffer.concat([jpeg.subarray(0, sos), Buffer.from([0xff, 0xd9])]))), 'IMAGE_DECODE_FAILED');
    // two frame headers of different sizes before the scan
    const sof = jpeg.indexOf(Buffer.from([0xff, 0xc0]));
    const sofSeg = jpeg.subarray(sof, sof + 2 + jpeg.readUInt16BE(sof + 2));
    const second = patchJpegSof(Buffer.concat([Buffer.from([0xff, 0xd8]), sofSeg]), 300, 300).subarray(2);
    await expectSonicError(image(put('twosof.jpg', withJpegSegments(jpeg, second))), 'MEDIA_MISMATCH');
    const frame = webpFrameChunk(read(f('lossless.webp')));
    await expectSonicError(image(put('anim.webp', webpVp8x(512, 384, frame, 0x02))), 'UNSUPPORTED_IMAGE_FORMAT');
    await expectSonicError(image(put('canvas.webp', webpVp8x(300, 300, frame))), 'MEDIA_MISMATCH');
    expect(await image(put('vp8x.webp', webpVp8x(512, 384, frame)))).toMatchObject({ width: 512, height: 384 });
  });

  it('refuses a decompression bomb from its header alone, in milliseconds', async () => {
    const bomb = put('bomb.png', greyPng(20_000, 20_000, 64));
    const t0 = performance.now();
    const err = await expectSonicError(image(bomb), 'IMAGE_TOO_LARGE');
    expect(performance.now() - t0).toBeLessThan(250);
    expect(err.details).toMatchObject({ width: 20_000, height: 20_000, maxPixels: 25_000_000 });
  });
});

describe('inspectMedia: audio', () => {
  it('accepts wav, mp3, m4a (index first or last), aac, flac and ogg', async () => {
    for (const ext of ['wav', 'mp3', 'm4a', 'aac', 'flac', 'ogg']) expect((await audio(f(`tone.${ext}`))).format, ext).toBe(ext);
    expect(await audio(f('tone-faststart.m4a'))).toEqual({ kind: 'audio', format: 'm4a', contentType: 'audio/mp4' });
  });

  it('refuses an MP4 video as audio, but not one whose video track is disabled (podcast chapter art)', async () => {
    const err = await expectSonicError(audio(f('video.mp4')), 'MEDIA_MISMATCH');
    expect(publicError(err).message).toMatch(/^the audio file is an MP4 video/);
    const mp4 = Buffer.from(read(f('video.mp4')));
    const tkhds: number[] = [];
    for (let i = mp4.indexOf('tkhd'); i >= 0; i = mp4.indexOf('tkhd', i + 1)) tkhds.push(i);
    const videoTkhd = tkhds.find((i) => mp4.indexOf('vide', i) < (tkhds.find((j) => j > i) ?? mp4.length));
    mp4[videoTkhd! + 7] = 0; // clear track_enabled
    expect((await audio(put('chapters.m4a', mp4))).format).toBe('m4a');
  });

  it('refuses a truncated M4A, a WAV without its format header and a WAV announcing more than it holds', async () => {
    const m4a = read(f('tone.m4a'));
    await expectSonicError(audio(put('cut.m4a', m4a.subarray(0, Math.floor(m4a.length / 2)))), 'AUDIO_DECODE_FAILED');
    const wav = read(f('tone.wav'));
    await expectSonicError(audio(put('cut.wav', wav.subarray(0, 30))), 'AUDIO_DECODE_FAILED');
    const lie = await expectSonicError(audio(put('lie.wav', withWavDataSize(wav, 2_000_000_000))), 'MEDIA_MISMATCH');
    expect(publicError(lie).message).toBe('the WAV header announces 22675.7 s of audio but the file holds 1.5 s; it is truncated or its header is wrong');
    // a streaming encoder's "unknown size" is no lie
    expect((await audio(put('stream.wav', withWavDataSize(wav, 0xffffffff)))).format).toBe('wav');
  });

  it('walks a bounded number of boxes: a million empty boxes are refused, fast', async () => {
    const free = Buffer.alloc(8);
    free.writeUInt32BE(8);
    free.write('free', 4, 'latin1');
    const m4a = read(f('tone.m4a'));
    const ftypLen = m4a.readUInt32BE(0);
    const many = Buffer.concat([m4a.subarray(0, ftypLen), Buffer.concat(Array.from({ length: 1_000_000 }, () => free)), m4a.subarray(ftypLen)]);
    const t0 = performance.now();
    await expectSonicError(audio(put('boxes.m4a', many)), 'AUDIO_DECODE_FAILED');
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe('inspectMedia: polyglots', () => {
  it('refuses a ZIP archive, a PDF or HTML riding in an image or audio file', async () => {
    const jpeg = read(f('face.jpg'));
    const png = read(f('face.png'));
    const zip = zipOf('payload.html', Buffer.from('<p>hello</p>'));
    const err = await expectSonicError(image(put('zip.jpg', Buffer.concat([jpeg, zip]))), 'MEDIA_MISMATCH');
    expect(publicError(err).message).toBe('the image file also holds a ZIP archive (a polyglot file); send a plain image file');
    await expectSonicError(
      image(put('html.png', withPngChunk(png, pngChunk('tEXt', Buffer.from('Comment\0<html><script>alert(1)</script>'))))),
      'MEDIA_MISMATCH',
    );
    await expectSonicError(image(put('pdf.jpg', withJpegSegments(jpeg, jpegSegment(0xfe, Buffer.from('%PDF-1.7\n1 0 obj'))))), 'MEDIA_MISMATCH');
    await expectSonicError(audio(put('zip.wav', Buffer.concat([read(f('tone.wav')), zip]))), 'MEDIA_MISMATCH');
    // junk after the archive does not hide it from readers that search for the end record
    await expectSonicError(image(put('zip-junk.jpg', Buffer.concat([jpeg, zip, Buffer.alloc(300, 0x20)]))), 'MEDIA_MISMATCH');
  });

  it('does not mistake stray ZIP signatures, or XMP metadata, for a polyglot', async () => {
    const jpeg = read(f('face.jpg'));
    const xmp = Buffer.from(
      'http://ns.adobe.com/xap/1.0/\0<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>',
    );
    // ZIP signatures whose records no ZIP reader would accept (as random data holds them now and then)
    const mid = Buffer.concat([
      Buffer.from('PK\x03\x04', 'latin1'),
      Buffer.alloc(40, 7),
      Buffer.from('PK\x05\x06', 'latin1'),
      Buffer.alloc(18, 0xff),
      Buffer.from('trailing bytes'),
    ]);
    expect((await image(put('xmp.jpg', withJpegSegments(jpeg, jpegSegment(0xe1, xmp), jpegSegment(0xfe, mid))))).format).toBe('jpeg');
    expect(ERROR_CODES.MEDIA_MISMATCH.retryable).toBe(false);
  });
});
