import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import { publicError } from '../../../src/core/errors.js';
import { decodeRgb } from '../../../src/media/decode.js';
import { checkImage, imageOrientation, toModelPng } from '../../../src/media/image.js';
import { probe } from '../../../src/media/probe.js';
import { decodeStill } from '../../../src/media/render.js';
import { makePortrait } from '../../../src/media/samples.js';
import { expectSonicError, ffprobeJson, tempDir } from '../../fixtures/media/util.js';

const dir = tempDir('image');
const f = (name: string): string => join(dir, name);

/** An APP1 Exif segment whose IFD0 holds one Orientation entry (SHORT), in either byte order. */
function exifSegment(orientation: number, order: 'II' | 'MM'): Buffer {
  const tiff = Buffer.alloc(8 + 2 + 12 + 4);
  const le = order === 'II';
  const u16 = (v: number, o: number): number => (le ? tiff.writeUInt16LE(v, o) : tiff.writeUInt16BE(v, o));
  const u32 = (v: number, o: number): number => (le ? tiff.writeUInt32LE(v, o) : tiff.writeUInt32BE(v, o));
  tiff.write(order, 0, 'latin1');
  u16(42, 2);
  u32(8, 4); // IFD0 right after the header
  u16(1, 8); // one entry
  u16(0x0112, 10); // Orientation
  u16(3, 12); // SHORT
  u32(1, 14); // count
  u16(orientation, 18); // value, left-justified in the 4-byte field
  u32(0, 22); // no next IFD
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
}

/** Inserts `segment` right after the SOI marker of a JPEG. */
function withSegment(jpeg: Buffer, segment: Buffer): Buffer {
  return Buffer.concat([jpeg.subarray(0, 2), segment, jpeg.subarray(2)]);
}

/** `count` APP2 segments of the largest size (an ICC profile split in chunks, as large profiles are), of random bytes. */
function app2Segments(count: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 1; i <= count; i++) {
    const payload = Buffer.concat([Buffer.from('ICC_PROFILE\0', 'latin1'), Buffer.from([i, count]), randomBytes(0xffff - 2 - 14)]);
    const head = Buffer.from([0xff, 0xe2, 0, 0]);
    head.writeUInt16BE(payload.length + 2, 2);
    parts.push(head, payload);
  }
  return Buffer.concat(parts);
}

/** Decodes a picture (with ffmpeg, not our code) and returns a pixel reader. */
function pixels(png: string, width: number): (x: number, y: number) => [number, number, number] {
  const raw = execFileSync('ffmpeg', ['-v', 'error', '-i', png, '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-']);
  return (x, y) => {
    const o = (y * width + x) * 3;
    return [raw[o] as number, raw[o + 1] as number, raw[o + 2] as number];
  };
}

const isRed = ([r, g, b]: [number, number, number]): boolean => r > 200 && g < 60 && b < 60;

beforeAll(async () => {
  await Promise.all([
    makePortrait(f('face.jpg')),
    makePortrait(f('face.webp'), { width: 300, height: 400 }),
    makePortrait(f('tiny.png'), { width: 100, height: 100 }),
  ]);
  // landscape 480×320 with a red block in the stored top-left corner
  execFileSync('ffmpeg', [
    '-v',
    'error',
    '-f',
    'lavfi',
    '-i',
    'color=c=white:s=480x320:r=1:d=1',
    '-vf',
    'drawbox=x=0:y=0:w=120:h=80:color=red:t=fill',
    '-frames:v',
    '1',
    '-q:v',
    '2',
    f('land.jpg'),
  ]);
  const land = await readFile(f('land.jpg'));
  for (let o = 1; o <= 8; o++) await writeFile(f(`rot${o}.jpg`), withSegment(land, exifSegment(o, o % 2 ? 'II' : 'MM')));
  // 192 KiB of APP2 before the Exif APP1: the orientation lies past the first 128 KiB
  await writeFile(f('icc-rot6.jpg'), withSegment(land, Buffer.concat([app2Segments(3), exifSegment(6, 'MM')])));
  const png = await readFile(f('tiny.png'));
  await writeFile(f('truncated.png'), png.subarray(0, 40));
  await writeFile(f('text.png'), 'plain text\n');
});

describe('imageOrientation', () => {
  it('reads the tag in both byte orders and defaults to 1', async () => {
    expect(await imageOrientation(f('land.jpg'))).toBe(1);
    for (const order of ['II', 'MM'] as const) {
      for (let o = 1; o <= 8; o++) {
        await writeFile(f('o.jpg'), withSegment(await readFile(f('land.jpg')), exifSegment(o, order)));
        expect(await imageOrientation(f('o.jpg'))).toBe(o);
      }
    }
    await writeFile(f('o9.jpg'), withSegment(await readFile(f('land.jpg')), exifSegment(9, 'II')));
    expect(await imageOrientation(f('o9.jpg'))).toBe(1);
    expect(await imageOrientation(f('tiny.png'))).toBe(1);
    await writeFile(f('cut.jpg'), withSegment(await readFile(f('land.jpg')), exifSegment(6, 'MM')).subarray(0, 20));
    await expectSonicError(imageOrientation(f('cut.jpg')), 'IMAGE_DECODE_FAILED');
  });

  it('finds the Exif segment behind 192 KiB of APP2 (ICC profile) segments, as validation does', async () => {
    expect((await readFile(f('icc-rot6.jpg'))).indexOf('Exif\0\0', 0, 'latin1')).toBeGreaterThan(128 * 1024);
    expect(await imageOrientation(f('icc-rot6.jpg'))).toBe(6);
    expect(await checkImage(f('icc-rot6.jpg'))).toMatchObject({ width: 320, height: 480, orientation: 6 });
  });
});

describe('checkImage', () => {
  it('measures JPEG and WebP portraits', async () => {
    expect(await checkImage(f('face.jpg'))).toEqual({ format: 'jpeg', width: 640, height: 800, orientation: 1 });
    expect(await checkImage(f('face.webp'))).toMatchObject({ format: 'webp', width: 300, height: 400 });
  });

  it('refuses a 100×100 image as too small and a large one as too large, with sizes in the message', async () => {
    const small = await expectSonicError(checkImage(f('tiny.png')), 'IMAGE_TOO_SMALL');
    expect(small.message).toBe('the image is 100×100 px; its short side must be at least 256 px');
    const large = await expectSonicError(checkImage(f('face.jpg'), { maxShort: 512 }), 'IMAGE_TOO_LARGE');
    expect(large.message).toBe('the image is 640×800 px; its short side must be at most 512 px');
  });

  it('swaps width and height for EXIF orientation 6 and 8 but not 3', async () => {
    expect(await checkImage(f('land.jpg'))).toMatchObject({ width: 480, height: 320, orientation: 1 });
    expect(await checkImage(f('rot6.jpg'))).toMatchObject({ width: 320, height: 480, orientation: 6 });
    expect(await checkImage(f('rot8.jpg'))).toMatchObject({ width: 320, height: 480, orientation: 8 });
    expect(await checkImage(f('rot3.jpg'))).toMatchObject({ width: 480, height: 320, orientation: 3 });
  });

  it('decodes the picture: a corrupt body behind a valid header is a client-safe IMAGE_DECODE_FAILED', async () => {
    const png = Buffer.from(await readFile(f('tiny.png')));
    const idat = png.indexOf('IDAT');
    const len = png.readUInt32BE(idat - 4);
    for (let i = idat + 10; i < idat + 4 + len - 4; i++) png[i] = (png[i]! * 7 + 13) & 0xff;
    png.writeUInt32BE(crc32(png.subarray(idat, idat + 4 + len)) >>> 0, idat + 4 + len); // chunk checksum kept valid
    await writeFile(f('body.png'), png);
    expect(
      execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=width', '-of', 'csv=p=0', f('body.png')])
        .toString()
        .trim(),
    ).toBe('100'); // ffprobe alone is fooled
    const err = await expectSonicError(checkImage(f('body.png'), { minShort: 1 }), 'IMAGE_DECODE_FAILED');
    expect(publicError(err).message).toBe('the image could not be decoded: its data is corrupt or truncated');
    expect(err.message).toContain('inflate'); // zlib's complaint, for operators
  });

  it('refuses more pixels than maxPixels in every decoder run (IMAGE_TOO_LARGE), header or not', async () => {
    const large = await expectSonicError(checkImage(f('face.jpg'), { maxPixels: 100_000 }), 'IMAGE_TOO_LARGE');
    expect(large.details).toMatchObject({ width: 640, height: 800, maxPixels: 100_000 });
    const conv = await expectSonicError(toModelPng(f('face.jpg'), f('big.png'), { maxPixels: 100_000 }), 'IMAGE_TOO_LARGE');
    expect(publicError(conv)).toMatchObject({
      message: 'the picture decodes to 640×800 px (512000 pixels); at most 100000 pixels are accepted',
      details: { width: 640, height: 800 },
    });
    await expectSonicError(decodeStill(f('face.jpg'), 256, { maxPixels: 100_000 }), 'IMAGE_DECODE_FAILED');
    expect((await probe(f('face.jpg'), { maxPixels: 100_000 })).overPixelLimit).toEqual({ width: 640, height: 800 });
  });

  it('refuses non-images and undecodable images', async () => {
    await expectSonicError(checkImage(f('text.png')), 'UNSUPPORTED_IMAGE_FORMAT');
    await expectSonicError(checkImage(f('truncated.png'), { minShort: 1 }), 'IMAGE_DECODE_FAILED');
  });
});

describe('toModelPng', () => {
  it('writes an upright rgb24 PNG for EXIF orientation 6 (rotated clockwise)', async () => {
    expect(await toModelPng(f('rot6.jpg'), f('rot6.png'))).toEqual({ width: 320, height: 480 });
    const s = ffprobeJson(f('rot6.png'), 'stream=codec_name,width,height,pix_fmt').streams?.[0];
    expect(s).toMatchObject({ codec_name: 'png', width: 320, height: 480, pix_fmt: 'rgb24' });
    // the stored top-left block ends up top-right
    const at = pixels(f('rot6.png'), 320);
    expect(isRed(at(300, 20))).toBe(true);
    expect(isRed(at(20, 20))).toBe(false);
  });

  // where the stored top-left corner is displayed, per EXIF orientation (TIFF 6.0 / Exif 2.3)
  const CORNER = {
    1: 'top-left',
    2: 'top-right',
    3: 'bottom-right',
    4: 'bottom-left',
    5: 'top-left',
    6: 'top-right',
    7: 'bottom-right',
    8: 'bottom-left',
  } as const;
  it.each(Object.entries(CORNER))('puts the stored top-left corner of orientation %s at the %s', async (o, corner) => {
    const out = f(`rot${o}.png`);
    const { width, height } = await toModelPng(f(`rot${o}.jpg`), out);
    expect([width, height]).toEqual(Number(o) >= 5 ? [320, 480] : [480, 320]);
    const x = corner.endsWith('left') ? 10 : width - 10;
    const y = corner.startsWith('top') ? 10 : height - 10;
    const at = pixels(out, width);
    expect(isRed(at(x, y))).toBe(true);
    expect(isRed(at(width - 1 - x, height - 1 - y))).toBe(false);
  });

  it('turns a JPEG upright whose orientation comes after more than 128 KiB of APP2, for the model PNG and the face detector alike', async () => {
    expect(await toModelPng(f('icc-rot6.jpg'), f('icc-rot6.png'))).toEqual({ width: 320, height: 480 });
    const at = pixels(f('icc-rot6.png'), 320);
    expect(isRed(at(300, 20))).toBe(true);
    expect(isRed(at(20, 20))).toBe(false);
    const fit = (w: number, h: number): { width: number; height: number } => ({ width: w / 4, height: h / 4 });
    expect(await decodeRgb(f('icc-rot6.jpg'), { fit })).toMatchObject({ sourceWidth: 320, sourceHeight: 480, width: 80, height: 120 });
  });

  it('scales down to maxSide keeping the aspect, never up', async () => {
    expect(await toModelPng(f('face.webp'), f('webp.png'), { maxSide: 200 })).toEqual({ width: 150, height: 200 });
    expect(await toModelPng(f('face.jpg'), f('same.png'))).toEqual({ width: 640, height: 800 });
  });

  it('throws IMAGE_DECODE_FAILED for an undecodable input', async () => {
    await expectSonicError(toModelPng(f('truncated.png'), f('bad.png')), 'IMAGE_DECODE_FAILED');
    await expectSonicError(toModelPng(f('text.png'), f('bad2.png')), 'IMAGE_DECODE_FAILED');
  });
});
