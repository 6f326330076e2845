/**
 * Portrait checks and conversion to the model's PNG. A phone photo taken upright is often stored
 * sideways with an EXIF orientation tag. Whether ffmpeg applies that tag depends on its version
 * and build (ffprobe always reports the stored size), so it is read here, ffmpeg's autorotation
 * is switched off, and the rotation is applied with explicit filters: the same result everywhere.
 */
import { open, stat } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { failureReason, runTool } from './exec.js';
import { probe } from './probe.js';
import { exifOrientation } from './exif.js';
import { sniff, type ImageFormat } from './sniff.js';

export { exifOrientation } from './exif.js';

/** An APP1 segment cannot exceed 64 KiB and must precede the image data, so this much suffices. */
const EXIF_SCAN_BYTES = 128 * 1024;

/** Options of {@link checkImage}. */
export interface CheckImageOptions {
  /** Smallest accepted short side in pixels; 256 by default. */
  minShort?: number;
  /** Largest accepted short side in pixels; 4096 by default. */
  maxShort?: number;
  signal?: AbortSignal;
}

/** What {@link checkImage} measured. */
export interface ImageInfo {
  format: ImageFormat;
  /** Pixels as displayed, i.e. after EXIF orientation (swapped for orientations 5–8). */
  width: number;
  height: number;
  /** EXIF orientation, 1..8 (1 when absent or not a JPEG). */
  orientation: number;
}

/**
 * Checks that a file is a decodable JPEG, PNG or WebP whose short side (after EXIF orientation)
 * lies within the limits.
 *
 * @throws SonicError `UNSUPPORTED_IMAGE_FORMAT` when the magic bytes are not JPEG, PNG or WebP;
 *   `IMAGE_DECODE_FAILED` when ffprobe cannot read it or finds no picture size; `IMAGE_TOO_SMALL` /
 *   `IMAGE_TOO_LARGE` when the short side is below `minShort` / above `maxShort` (the messages
 *   state the measured size and the limit).
 */
export async function checkImage(path: string, options: CheckImageOptions = {}): Promise<ImageInfo> {
  const { minShort = 256, maxShort = 4096, signal } = options;
  const head = await readHead(path, EXIF_SCAN_BYTES);
  const kind = sniff(head);
  if (kind?.kind !== 'image') {
    throw new SonicError('UNSUPPORTED_IMAGE_FORMAT', `${path} is not a JPEG, PNG or WebP image${kind ? ` (found ${kind.format})` : ''}`, { details: { path } });
  }
  const info = await probe(path, { signal, onError: 'IMAGE_DECODE_FAILED' });
  const v = info.video;
  if (!v || !(v.width > 0 && v.height > 0)) {
    throw new SonicError('IMAGE_DECODE_FAILED', `${path} has no decodable picture`, { details: { path } });
  }
  const orientation = kind.format === 'jpeg' ? exifOrientation(head) : 1;
  const [width, height] = orientation >= 5 ? [v.height, v.width] : [v.width, v.height];
  const short = Math.min(width, height);
  if (short < minShort) {
    throw new SonicError('IMAGE_TOO_SMALL', `image is ${width}×${height} px; its short side must be at least ${minShort} px`, { details: { width, height, minShort } });
  }
  if (short > maxShort) {
    throw new SonicError('IMAGE_TOO_LARGE', `image is ${width}×${height} px; its short side must be at most ${maxShort} px`, { details: { width, height, maxShort } });
  }
  return { format: kind.format, width, height, orientation };
}

/**
 * The ffmpeg filters that turn an image stored with EXIF orientation `o` upright (empty for 1).
 * `transpose=0` is the plain matrix transpose, `1` a clockwise and `2` a counter-clockwise
 * quarter turn, `3` the anti-diagonal transpose.
 */
export function orientationFilters(o: number): string[] {
  switch (o) {
    case 2: return ['hflip'];
    case 3: return ['hflip', 'vflip'];
    case 4: return ['vflip'];
    case 5: return ['transpose=0'];
    case 6: return ['transpose=1'];
    case 7: return ['transpose=3'];
    case 8: return ['transpose=2'];
    default: return [];
  }
}

/**
 * The filters that turn a picture file upright: from its EXIF orientation for a JPEG, none
 * otherwise. Use with ffmpeg's `-noautorotate` input option, or the rotation may apply twice.
 */
export async function uprightFilters(path: string): Promise<string[]> {
  const head = await readHead(path, EXIF_SCAN_BYTES);
  return sniff(head)?.format === 'jpeg' ? orientationFilters(exifOrientation(head)) : [];
}

/** Options of {@link toModelPng}. */
export interface ToModelPngOptions {
  /** Longest side of the output in pixels (smaller images are not enlarged); 2048 by default. */
  maxSide?: number;
  signal?: AbortSignal;
  /** Kills ffmpeg after this many milliseconds; no limit by default. */
  timeoutMs?: number;
}

/**
 * Converts a JPEG, PNG or WebP to the model's input: upright (EXIF orientation applied), scaled
 * down so that neither side exceeds `maxSide` (aspect kept), 8-bit RGB, one-frame PNG. Any
 * alpha channel is dropped.
 *
 * @returns the output size in pixels, as probed from the written file.
 * @throws SonicError `IMAGE_DECODE_FAILED` when ffmpeg fails, times out or writes nothing
 *   readable; `signal.reason` on abort.
 */
export async function toModelPng(input: string, output: string, options: ToModelPngOptions = {}): Promise<{ width: number; height: number }> {
  const { maxSide = 2048, signal, timeoutMs } = options;
  const filters = [
    ...(await uprightFilters(input)),
    `scale=w='min(iw,${maxSide})':h='min(ih,${maxSide})':force_original_aspect_ratio=decrease`,
    'format=rgb24',
  ];
  const res = await runTool('ffmpeg', [
    '-nostdin', '-v', 'error', '-y', '-noautorotate', '-i', input, '-map', '0:v:0', '-vf', filters.join(','), '-frames:v', '1', '-c:v', 'png', '-f', 'image2', '-update', '1', output,
  ], { signal, timeoutMs });
  if (res.code !== 0) {
    throw new SonicError('IMAGE_DECODE_FAILED', `cannot convert ${input} to PNG: ${failureReason('ffmpeg', res, timeoutMs)}`, { details: { input } });
  }
  const size = await stat(output).then((s) => s.size, () => 0);
  if (size === 0) throw new SonicError('IMAGE_DECODE_FAILED', `ffmpeg wrote no PNG for ${input}`, { details: { input, output } });
  const out = await probe(output, { signal, onError: 'IMAGE_DECODE_FAILED' });
  if (!out.video || !(out.video.width > 0)) throw new SonicError('IMAGE_DECODE_FAILED', `the PNG written for ${input} has no picture`, { details: { input, output } });
  return { width: out.video.width, height: out.video.height };
}

/** Reads up to `n` leading bytes of a file (fs errors, e.g. ENOENT, propagate: a missing local file is a bug). */
async function readHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
