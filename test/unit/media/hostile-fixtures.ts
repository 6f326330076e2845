/**
 * Builders of hostile media for the inspection unit tests and the security suite: lying headers,
 * bombs, polyglots. Everything is generated (ffmpeg or Buffer code); nothing large is committed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { crc32, deflateSync } from 'node:zlib';

/** Runs ffmpeg quietly (throws with its stderr on failure). */
export function ff(...args: string[]): void {
  execFileSync('ffmpeg', ['-nostdin', '-v', 'error', '-y', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** One PNG chunk with its CRC. */
export function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/** An 8-bit grey PNG of the given size with valid CRCs whose IDAT holds `rows` zero rows (all of them by default). */
export function greyPng(width: number, height: number, rows = height): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // depth 8, grey, deflate, adaptive filters, no interlace
  const raw = Buffer.alloc((width + 1) * Math.min(rows, height));
  return Buffer.concat([PNG_SIGNATURE, pngChunk('IHDR', ihdr), pngChunk('IDAT', deflateSync(raw, { level: 9 })), pngChunk('IEND', Buffer.alloc(0))]);
}

export const PNG_SIGNATURE = Buffer.from('89504e470d0a1a0a', 'hex');

/** A PNG with `chunk` inserted right after IHDR. */
export function withPngChunk(png: Buffer, chunk: Buffer): Buffer {
  return Buffer.concat([png.subarray(0, 33), chunk, png.subarray(33)]);
}

/** A JPEG whose first frame header (SOFn) claims another size; the data stays what it was. */
export function patchJpegSof(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  let off = 2;
  while (off + 4 <= out.length) {
    const marker = out[off + 1] as number;
    const len = out.readUInt16BE(off + 2);
    if (marker >= 0xc0 && marker <= 0xc2) {
      out.writeUInt16BE(height, off + 5);
      out.writeUInt16BE(width, off + 7);
      return out;
    }
    off += 2 + len;
  }
  throw new Error('no SOF in this JPEG');
}

/** The first chunk (fourcc, size, payload) of a simple WebP file (a `VP8 ` or `VP8L` picture). */
export function webpFrameChunk(webp: Buffer): Buffer {
  const len = webp.readUInt32LE(16);
  return webp.subarray(12, 20 + len + (len & 1));
}

/** An extended WebP: a VP8X header naming a canvas of `w`×`h`, then `frame` (a `VP8 `/`VP8L` chunk). */
export function webpVp8x(w: number, h: number, frame: Buffer, flags = 0): Buffer {
  const vp8x = Buffer.alloc(18);
  vp8x.write('VP8X', 0, 'latin1');
  vp8x.writeUInt32LE(10, 4);
  vp8x[8] = flags;
  vp8x.writeUIntLE(w - 1, 12, 3);
  vp8x.writeUIntLE(h - 1, 15, 3);
  const body = Buffer.concat([Buffer.from('WEBP', 'latin1'), vp8x, frame]);
  const riff = Buffer.alloc(8);
  riff.write('RIFF', 0, 'latin1');
  riff.writeUInt32LE(body.length, 4);
  return Buffer.concat([riff, body]);
}

/** A ZIP archive with one stored file. */
export function zipOf(name: string, data: Buffer): Buffer {
  const n = Buffer.from(name, 'latin1');
  const crc = crc32(data) >>> 0;
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(data.length, 18);
  local.writeUInt32LE(data.length, 22);
  local.writeUInt16LE(n.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(20, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt32LE(crc, 16);
  central.writeUInt32LE(data.length, 20);
  central.writeUInt32LE(data.length, 24);
  central.writeUInt16LE(n.length, 28);
  const localPart = Buffer.concat([local, n, data]);
  const centralPart = Buffer.concat([central, n]);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(centralPart.length, 12);
  end.writeUInt32LE(localPart.length, 16);
  return Buffer.concat([localPart, centralPart, end]);
}

/** A WAV whose `data` chunk announces `bytes` bytes of samples, whatever it holds. */
export function withWavDataSize(wav: Buffer, bytes: number): Buffer {
  const out = Buffer.from(wav);
  let off = 12;
  while (off + 8 <= out.length) {
    const len = out.readUInt32LE(off + 4);
    if (out.toString('latin1', off, off + 4) === 'data') {
      out.writeUInt32LE(bytes, off + 4);
      return out;
    }
    off += 8 + len + (len & 1);
  }
  throw new Error('no data chunk in this WAV');
}

/** Reads a file (shorthand). */
export const read = (path: string): Buffer => readFileSync(path);

/** An APP1 Exif segment whose IFD0 holds one Orientation entry (big-endian TIFF). */
export function exifApp1(orientation: number): Buffer {
  const tiff = Buffer.alloc(26);
  tiff.write('MM', 0, 'latin1');
  tiff.writeUInt16BE(42, 2);
  tiff.writeUInt32BE(8, 4);
  tiff.writeUInt16BE(1, 8);
  tiff.writeUInt16BE(0x0112, 10);
  tiff.writeUInt16BE(3, 12);
  tiff.writeUInt32BE(1, 14);
  tiff.writeUInt16BE(orientation, 18);
  return jpegSegment(0xe1, Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]));
}

/** One JPEG marker segment (marker, length, payload). */
export function jpegSegment(marker: number, payload: Buffer): Buffer {
  const head = Buffer.from([0xff, marker, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
}

/** A JPEG with `segments` inserted right after its SOI marker. */
export function withJpegSegments(jpeg: Buffer, ...segments: Buffer[]): Buffer {
  return Buffer.concat([jpeg.subarray(0, 2), ...segments, jpeg.subarray(2)]);
}
