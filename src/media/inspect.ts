/**
 * Header-only inspection of an upload on local disk: what it is and how big it claims to be,
 * before any decoder sees it. No child process runs and every read is bounded (a fixed number of
 * reads of at most 64 KiB each), so a hostile file costs a few milliseconds whatever it holds.
 *
 * It refuses what must never reach ffmpeg: pictures whose header announces more pixels than the
 * limits (decompression bombs), truncated or corrupt headers, an MP4 video posing as audio, a WAV
 * header that lies about its length, and polyglots (a ZIP archive, PDF or HTML riding inside the
 * media file). The decoders still run with their own bounds afterwards (`-max_pixels`, deadlines),
 * since a header can lie in ways only decoding reveals.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import type { Config } from '../core/config.js';
import { SonicError, type ErrorCode } from '../core/errors.js';
import { tiffOrientation } from './exif.js';
import { sniff, type AudioFormat, type ImageFormat } from './sniff.js';

/** The size limits of a portrait, in pixels. */
export interface InspectLimits {
  /** Most pixels (width × height). */
  maxPixels: number;
  /** Longest accepted long side. */
  maxSide: number;
  /** Shortest accepted short side. */
  minShort: number;
  /** Longest accepted short side. */
  maxShort: number;
}

/** What {@link inspectMedia} found. */
export interface Inspected {
  kind: 'audio' | 'image';
  format: AudioFormat | ImageFormat;
  /** IANA content type of `format`, e.g. `image/png`. */
  contentType: string;
  /** Images only: pixels as displayed, i.e. after the EXIF orientation of a JPEG (swapped for 5–8). */
  width?: number;
  height?: number;
  /** Images only: EXIF orientation 1..8 (1 when absent or not a JPEG). */
  orientation?: number;
}

/** The portrait limits of a configuration (SONIC_MAX_IMAGE_PIXELS, SONIC_MAX_IMAGE_SIDE, SONIC_MIN/MAX_IMAGE_SHORT_SIDE). */
export function inspectLimits(c: Pick<Config, 'maxImagePixels' | 'maxImageSide' | 'minImageShortSide' | 'maxImageShortSide'>): InspectLimits {
  return { maxPixels: c.maxImagePixels, maxSide: c.maxImageSide, minShort: c.minImageShortSide, maxShort: c.maxImageShortSide };
}

/** Reads per file before the inspection gives up (a file of a million tiny boxes is refused, not walked). */
const MAX_READS = 2048;
/** Largest single read, bytes (the ZIP tail below is the largest). */
const MAX_READ = 96 * 1024;
/** How much of each end of a file is searched for HTML markup, bytes. */
const MARKUP_WINDOW = 64 * 1024;
/** Tail searched for a ZIP end-of-central-directory record (22 bytes + a comment of up to 64 KiB). */
const ZIP_TAIL = 22 + 0xffff;
/** Markers of active content that has no business inside audio or a picture (searched case-insensitively). */
const HTML_MARKERS = ['<html', '<script', '<!doctype html', '<iframe', '<body', '<svg', '<?php'];
const ACCEPTED = { audio: 'wav, mp3, m4a/aac, flac or ogg', image: 'jpeg, png or webp' } as const;

/**
 * Inspects the header of an uploaded audio or image file on local disk, without decoding it.
 *
 * Images: sniffs JPEG, PNG or WebP and reads the real dimensions from the header (PNG IHDR with
 * its CRC; JPEG SOFn after walking the segments, with the EXIF orientation applied; WebP VP8,
 * VP8L and VP8X, whose canvas must hold its frame). Audio: sniffs the format; walks the boxes of
 * an MP4/M4A (moov → trak → mdia → hdlr, seeking when moov comes last) and the chunks of a WAV.
 * Both: refuses a ZIP archive at the end, a PDF header or HTML/script markup at either end.
 *
 * Every error is client-safe (`publicError` shows its message; the path stays in `details`).
 *
 * @param kind what the file must be.
 * @param limits pixel limits (images only; see {@link inspectLimits}).
 * @throws SonicError `UNSUPPORTED_AUDIO_FORMAT` / `UNSUPPORTED_IMAGE_FORMAT` when the bytes are
 *   not an accepted format of `kind` (or an animated WebP); `AUDIO_DECODE_FAILED` /
 *   `IMAGE_DECODE_FAILED` for an empty file or a truncated or corrupt header; `IMAGE_TOO_LARGE`
 *   when the pixels, the long side or the short side exceed the limits; `IMAGE_TOO_SMALL` when the
 *   short side is below `minShort`; `MEDIA_MISMATCH` for an MP4 with a video track given as audio,
 *   a WAV announcing more samples than it holds, a header contradicting itself, or a polyglot.
 *   fs errors (ENOENT, ...) propagate: a missing local file is a bug, not bad input.
 */
export async function inspectMedia(kind: 'audio' | 'image', path: string, limits: InspectLimits): Promise<Inspected> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const r = new HeaderReader(fh, size, kind, path);
    if (size === 0) throw r.fail(decodeCode(kind), `the ${kind} file is empty`);
    const head = await r.at(0, 1024);
    const found = sniff(head);
    if (found?.kind !== kind) {
      const what = found ? `holds ${found.kind === 'image' ? 'an image' : 'audio'} (${found.format})` : 'is not in a recognised format';
      throw r.fail(kind === 'audio' ? 'UNSUPPORTED_AUDIO_FORMAT' : 'UNSUPPORTED_IMAGE_FORMAT', `the ${kind} file ${what}; send ${ACCEPTED[kind]}`);
    }
    const out: Inspected = { kind, format: found.format, contentType: found.contentType };
    if (found.kind === 'image') {
      const dims = found.format === 'png' ? await pngSize(r, head) : found.format === 'jpeg' ? await jpegSize(r) : await webpSize(r, head);
      const [width, height] = dims.orientation >= 5 ? [dims.height, dims.width] : [dims.width, dims.height];
      checkLimits(r, width, height, limits);
      Object.assign(out, { width, height, orientation: dims.orientation });
    } else if (found.format === 'm4a') {
      await mp4Tracks(r);
    } else if (found.format === 'wav') {
      await wavChunks(r);
    }
    await refusePolyglot(r, head);
    return out;
  } finally {
    await fh.close();
  }
}

/**
 * The EXIF orientation of an image file, read exactly as {@link inspectMedia} reads it: a JPEG's
 * marker segments walked up to the first scan (SOS) with the same bounded reads, however large
 * the segments before its Exif one (ICC profiles in APP2, XMP). The format and the sizes are not
 * checked again: this is for files {@link inspectMedia} has accepted.
 *
 * @returns 1..8; 1 for PNG, WebP and any other non-JPEG, and for a JPEG without a valid tag.
 * @throws SonicError `IMAGE_DECODE_FAILED` (client-safe) for a truncated or corrupt JPEG header,
 *   `MEDIA_MISMATCH` for a JPEG declaring two picture sizes; fs errors propagate.
 */
export async function imageOrientation(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const r = new HeaderReader(fh, (await fh.stat()).size, 'image', path);
    if (sniff(await r.at(0, 1024))?.format !== 'jpeg') return 1;
    return (await jpegSize(r)).orientation;
  } finally {
    await fh.close();
  }
}

function decodeCode(kind: 'audio' | 'image'): ErrorCode {
  return kind === 'audio' ? 'AUDIO_DECODE_FAILED' : 'IMAGE_DECODE_FAILED';
}

/** Bounded positioned reads, and the errors of one inspection. */
class HeaderReader {
  private reads = 0;

  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly kind: 'audio' | 'image',
    private readonly path: string,
  ) {}

  /** Up to `length` bytes at `offset` (fewer at the end of the file). */
  async at(offset: number, length: number): Promise<Buffer> {
    if (++this.reads > MAX_READS) throw this.fail(decodeCode(this.kind), `the ${this.kind} file has too many header structures to inspect`);
    const n = Math.max(0, Math.min(length, MAX_READ, this.size - offset));
    const buf = Buffer.alloc(n);
    const { bytesRead } = n > 0 ? await this.fh.read(buf, 0, n, offset) : { bytesRead: 0 };
    return buf.subarray(0, bytesRead);
  }

  fail(code: ErrorCode, message: string, details: Record<string, unknown> = {}): SonicError {
    return new SonicError(code, message, { safe: true, details: { field: this.kind, path: this.path, ...details } });
  }

  corrupt(why: string): SonicError {
    return this.fail(decodeCode(this.kind), `the ${this.kind} file ${why}`);
  }
}

function checkLimits(r: HeaderReader, width: number, height: number, l: InspectLimits): void {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const pixels = width * height;
  const size = `the image is ${width}×${height} px`;
  const details = { width, height, pixels };
  if (pixels > l.maxPixels)
    throw r.fail('IMAGE_TOO_LARGE', `${size} (${pixels} pixels); at most ${l.maxPixels} pixels are accepted`, { ...details, maxPixels: l.maxPixels });
  if (long > l.maxSide) throw r.fail('IMAGE_TOO_LARGE', `${size}; its long side must be at most ${l.maxSide} px`, { ...details, maxSide: l.maxSide });
  if (short > l.maxShort) throw r.fail('IMAGE_TOO_LARGE', `${size}; its short side must be at most ${l.maxShort} px`, { ...details, maxShort: l.maxShort });
  if (short < l.minShort) throw r.fail('IMAGE_TOO_SMALL', `${size}; its short side must be at least ${l.minShort} px`, { ...details, minShort: l.minShort });
}

interface Dims {
  width: number;
  height: number;
  orientation: number;
}

// PNG: signature, then the IHDR chunk (length 13) with a CRC over its type and data.
async function pngSize(r: HeaderReader, head: Buffer): Promise<Dims> {
  if (head.length < 33) throw r.corrupt('is truncated: its PNG header is incomplete');
  if (head.readUInt32BE(8) !== 13 || head.toString('latin1', 12, 16) !== 'IHDR') throw r.corrupt('does not start with a PNG header chunk');
  if (crc32(head.subarray(12, 29)) >>> 0 !== head.readUInt32BE(29)) throw r.corrupt('has a corrupt PNG header (checksum mismatch)');
  const width = head.readUInt32BE(16);
  const height = head.readUInt32BE(20);
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) throw r.corrupt(`has an invalid PNG size ${width}×${height}`);
  return { width, height, orientation: 1 };
}

/** SOF markers that carry a frame size: C0–CF except DHT (C4), JPG (C8) and DAC (CC). */
function isSof(m: number): boolean {
  return m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
}

// JPEG: walk the marker segments up to the first scan (SOS), reading only their headers, the
// frame header (SOFn) and an APP1 Exif segment.
async function jpegSize(r: HeaderReader): Promise<Dims> {
  let off = 2;
  let frame: { width: number; height: number } | undefined;
  let orientation: number | undefined;
  let scan = false;
  for (;;) {
    const h = await r.at(off, 4);
    if (h.length < 2) throw r.corrupt(`is truncated: its JPEG header ends before the image data`);
    if (h[0] !== 0xff) throw r.corrupt('has a corrupt JPEG header (no marker where one must be)');
    const marker = h[1] as number;
    if (marker === 0xff) {
      off += 1;
      continue;
    } // fill byte
    if (marker === 0xda || marker === 0xd9) {
      scan = marker === 0xda;
      break;
    } // start of scan, end of image
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      off += 2;
      continue;
    }
    if (marker === 0xd8 || h.length < 4) throw r.corrupt('has a corrupt or truncated JPEG header');
    const len = h.readUInt16BE(2);
    if (len < 2 || off + 2 + len > r.size) throw r.corrupt('is truncated or corrupt: a JPEG header segment runs past its end');
    if (isSof(marker)) {
      const sof = await r.at(off + 4, 6);
      if (sof.length < 6 || len < 8) throw r.corrupt('has a truncated JPEG frame header');
      const size = { height: sof.readUInt16BE(1), width: sof.readUInt16BE(3) };
      if (frame && (frame.width !== size.width || frame.height !== size.height)) {
        throw r.fail('MEDIA_MISMATCH', `the image file declares two picture sizes (${frame.width}×${frame.height} and ${size.width}×${size.height})`);
      }
      frame = size;
    } else if (marker === 0xe1 && orientation === undefined) {
      const seg = await r.at(off + 4, len - 2);
      if (seg.toString('latin1', 0, 6) === 'Exif\0\0') orientation = tiffOrientation(seg.subarray(6));
    }
    off += 2 + len;
  }
  if (!frame) throw r.corrupt('has no JPEG frame header before its image data');
  if (frame.width === 0 || frame.height === 0) throw r.corrupt(`declares a picture size of ${frame.width}×${frame.height}`);
  if (!scan || off + 2 >= r.size) throw r.corrupt('is truncated: it has no image data');
  return { ...frame, orientation: orientation ?? 1 };
}

// WebP: RIFF 'WEBP', then a lossy (VP8), lossless (VP8L) or extended (VP8X) first chunk; an
// extended file names a canvas and holds its frame in a later chunk.
async function webpSize(r: HeaderReader, head: Buffer): Promise<Dims> {
  if (head.length < 30) throw r.corrupt('is truncated: its WebP header is incomplete');
  if (head.readUInt32LE(4) + 8 > r.size + 1) throw r.corrupt('is truncated: it is shorter than its WebP header says');
  const first = head.toString('latin1', 12, 16);
  if (first !== 'VP8X') return { ...webpFrame(r, first, head.subarray(20)), orientation: 1 };
  const flags = head[20] as number;
  if (flags & 0x02) throw r.fail('UNSUPPORTED_IMAGE_FORMAT', 'the image is an animated WebP; send a still jpeg, png or webp');
  const canvas = { width: head.readUIntLE(24, 3) + 1, height: head.readUIntLE(27, 3) + 1 };
  const vp8xLen = head.readUInt32LE(16);
  let off = 20 + vp8xLen + (vp8xLen & 1);
  for (let i = 0; i < 64 && off + 8 <= r.size; i++) {
    const chunk = await r.at(off, 8 + 16);
    if (chunk.length < 8) break;
    const fourcc = chunk.toString('latin1', 0, 4);
    if (fourcc === 'VP8 ' || fourcc === 'VP8L') {
      const frame = webpFrame(r, fourcc, chunk.subarray(8));
      if (frame.width > canvas.width || frame.height > canvas.height) {
        throw r.fail(
          'MEDIA_MISMATCH',
          `the image file claims a ${canvas.width}×${canvas.height} px canvas but holds a ${frame.width}×${frame.height} px picture`,
          { width: frame.width, height: frame.height },
        );
      }
      return { ...canvas, orientation: 1 };
    }
    const len = chunk.readUInt32LE(4);
    off += 8 + len + (len & 1);
  }
  throw r.corrupt('is truncated or corrupt: its WebP header names no picture');
}

function webpFrame(r: HeaderReader, fourcc: string, p: Buffer): { width: number; height: number } {
  if (fourcc === 'VP8 ') {
    if (p.length < 10 || p[3] !== 0x9d || p[4] !== 0x01 || p[5] !== 0x2a) throw r.corrupt('has a corrupt WebP (VP8) frame header');
    return { width: p.readUInt16LE(6) & 0x3fff, height: p.readUInt16LE(8) & 0x3fff };
  }
  if (fourcc === 'VP8L') {
    if (p.length < 5 || p[0] !== 0x2f) throw r.corrupt('has a corrupt WebP (VP8L) frame header');
    const bits = p.readUInt32LE(1);
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  throw r.corrupt(`has an unknown WebP chunk "${fourcc.replace(/[^\x20-\x7e]/g, '?')}" where the picture belongs`);
}

/** One ISO-BMFF box header. */
interface Box {
  type: string;
  start: number;
  /** Offset of the payload. */
  body: number;
  end: number;
}

/** The boxes between `from` and `to`, read header by header (seeking past each payload). */
async function* boxes(r: HeaderReader, from: number, to: number): AsyncGenerator<Box> {
  let off = from;
  while (off + 8 <= to) {
    const h = await r.at(off, 16);
    if (h.length < 8) throw r.corrupt('is truncated: an MP4 box header is cut off');
    let size = h.readUInt32BE(0);
    let body = off + 8;
    if (size === 1) {
      if (h.length < 16) throw r.corrupt('is truncated: an MP4 box header is cut off');
      size = Number(h.readBigUInt64BE(8));
      body = off + 16;
    } else if (size === 0) {
      size = to - off; // runs to the end of its parent
    }
    if (size < body - off || off + size > to) throw r.corrupt('is truncated or corrupt: an MP4 box runs past its end');
    yield { type: h.toString('latin1', 4, 8), start: off, body, end: off + size };
    off += size;
  }
}

async function child(r: HeaderReader, parent: Box, type: string): Promise<Box | undefined> {
  for await (const b of boxes(r, parent.body, parent.end)) if (b.type === type) return b;
  return undefined;
}

// MP4/M4A: every track's handler (moov → trak → mdia → hdlr); `vide` on an enabled track is a
// video posing as audio. Chapter pictures of podcasts sit on disabled video tracks and pass.
async function mp4Tracks(r: HeaderReader): Promise<void> {
  let moov: Box | undefined;
  for await (const b of boxes(r, 0, r.size))
    if (b.type === 'moov') {
      moov = b;
      break;
    }
  if (!moov) throw r.corrupt('has no MP4 index (moov box): it is truncated or not an audio file');
  let audio = 0;
  for await (const trak of boxes(r, moov.body, moov.end)) {
    if (trak.type !== 'trak') continue;
    const mdia = await child(r, trak, 'mdia');
    const hdlr = mdia && (await child(r, mdia, 'hdlr'));
    if (!hdlr) throw r.corrupt('has an MP4 track without a handler');
    const handler = (await r.at(hdlr.body + 8, 4)).toString('latin1');
    const tkhd = await child(r, trak, 'tkhd');
    const enabled = tkhd ? (((await r.at(tkhd.body, 4))[3] ?? 0) & 1) === 1 : true;
    if (handler === 'vide' && enabled) throw r.fail('MEDIA_MISMATCH', 'the audio file is an MP4 video; send the speech alone (wav, mp3, m4a/aac, flac or ogg)');
    if (handler === 'soun') audio++;
  }
  if (audio === 0) throw r.corrupt('holds no audio track');
}

// WAV: the chunks up to `data`; `fmt ` must come first and be sane, and `data` must not announce
// more bytes than the file holds (ffprobe would report the announced duration).
async function wavChunks(r: HeaderReader): Promise<void> {
  let fmt: { byteRate: number } | undefined;
  let ds64Data: number | undefined;
  let off = 12;
  for (let i = 0; i < 64; i++) {
    const h = await r.at(off, 8 + 16);
    if (h.length < 8) break;
    const id = h.toString('latin1', 0, 4);
    const len = h.readUInt32LE(4);
    if (id === 'ds64' && h.length >= 24) ds64Data = Number(h.readBigUInt64LE(16));
    if (id === 'fmt ') {
      if (len < 16 || h.length < 24) throw r.corrupt('has a truncated WAV format header');
      const channels = h.readUInt16LE(10);
      const rate = h.readUInt32LE(12);
      const byteRate = h.readUInt32LE(16);
      const blockAlign = h.readUInt16LE(20);
      if (channels === 0 || rate === 0 || byteRate === 0 || blockAlign === 0) throw r.corrupt('has an invalid WAV format header');
      fmt = { byteRate };
    }
    if (id === 'data') {
      if (!fmt) throw r.corrupt('has its WAV samples before their format header');
      const held = r.size - (off + 8);
      const announced = len === 0xffffffff && ds64Data !== undefined ? ds64Data : len;
      // 0 and 0xFFFFFFFF: written by a streaming encoder that could not go back: "to the end"
      const unknown = announced === 0 || announced === 0xffffffff;
      const slack = Math.max(4096, fmt.byteRate / 2);
      if (!unknown && announced > held + slack) {
        const s = (bytes: number): string => (bytes / fmt!.byteRate).toFixed(1);
        throw r.fail(
          'MEDIA_MISMATCH',
          `the WAV header announces ${s(announced)} s of audio but the file holds ${s(held)} s; it is truncated or its header is wrong`,
        );
      }
      return;
    }
    off += 8 + len + (len & 1);
  }
  throw r.corrupt(fmt ? 'is truncated: it has no WAV samples' : 'is truncated: it has no WAV format header');
}

// Polyglots: a ZIP end record in the last 64 KiB that a ZIP reader would accept (its comment
// reaches the end of the file, or its central directory sits right before it), a PDF header in
// the first KiB (where PDF readers look for one), or HTML at either end.
async function refusePolyglot(r: HeaderReader, head: Buffer): Promise<void> {
  const tail = r.size <= head.length ? head : await r.at(Math.max(0, r.size - ZIP_TAIL), ZIP_TAIL);
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail[i] !== 0x50 || tail.readUInt32LE(i) !== 0x06054b50) continue;
    const cdSize = tail.readUInt32LE(i + 12);
    const exactEnd = i + 22 + tail.readUInt16LE(i + 20) === tail.length;
    const directory = cdSize >= 46 && cdSize <= i && tail.readUInt32LE(i - cdSize) === 0x02014b50;
    if (exactEnd || directory) throw polyglot(r, 'a ZIP archive');
  }
  if (head.indexOf('%PDF-', 1, 'latin1') > 0) throw polyglot(r, 'a PDF document');
  const start = r.size <= head.length ? head : await r.at(0, MARKUP_WINDOW);
  for (const part of [start, tail.subarray(-MARKUP_WINDOW)]) {
    const text = part.toString('latin1').toLowerCase();
    const marker = HTML_MARKERS.find((m) => text.includes(m));
    if (marker) throw polyglot(r, 'HTML or script markup');
  }
}

function polyglot(r: HeaderReader, what: string): SonicError {
  return r.fail('MEDIA_MISMATCH', `the ${r.kind} file also holds ${what} (a polyglot file); send a plain ${r.kind} file`);
}
