/**
 * Portrait checks and conversion to the model's PNG. A phone photo taken upright is often stored
 * sideways with an EXIF orientation tag. Whether ffmpeg applies that tag depends on its version
 * and build (ffprobe always reports the stored size), so it is read here, ffmpeg's autorotation
 * is switched off, and the rotation is applied with explicit filters: the same result everywhere.
 */
import { stat } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { DEFAULT_MAX_PIXELS, ffmpegPrologue, pixelLimitHit } from './bounds.js';
import { failureReason, runTool } from './exec.js';
import { imageOrientation, inspectMedia } from './inspect.js';
import { probe } from './probe.js';
import type { ImageFormat } from './sniff.js';

export { imageOrientation } from './inspect.js';

/** Options of {@link checkImage}. */
export interface CheckImageOptions {
  /** Smallest accepted short side in pixels; 256 by default. */
  minShort?: number;
  /** Largest accepted short side in pixels; 4096 by default. */
  maxShort?: number;
  /** Largest accepted long side in pixels; 8192 by default. */
  maxSide?: number;
  /** Most pixels, from the header and for the decoders (`-max_pixels`); {@link DEFAULT_MAX_PIXELS} by default. */
  maxPixels?: number;
  signal?: AbortSignal;
  /** Deadline of each ffprobe/ffmpeg run, ms; 60 000 by default. */
  timeoutMs?: number;
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
 * Checks that a file is a JPEG, PNG or WebP within the size limits that really decodes: first
 * its header ({@link inspectMedia}: format, announced size, bombs, polyglots), then ffprobe and
 * one decode of the picture, both bounded by `-max_pixels`, and the size ffprobe finds must be
 * the one the header announced.
 *
 * @throws SonicError with the codes of {@link inspectMedia}; `IMAGE_TOO_LARGE` when a decoder
 *   refuses the picture for its pixels (a header that lied); `MEDIA_MISMATCH` when the decoded
 *   size differs from the header's; `IMAGE_DECODE_FAILED` when ffprobe or ffmpeg cannot decode
 *   it or runs past `timeoutMs`; `signal.reason` on abort.
 */
export async function checkImage(path: string, options: CheckImageOptions = {}): Promise<ImageInfo> {
  const { minShort = 256, maxShort = 4096, maxSide = 8192, maxPixels = DEFAULT_MAX_PIXELS, signal, timeoutMs = 60_000 } = options;
  const header = await inspectMedia('image', path, { minShort, maxShort, maxSide, maxPixels });
  const info = await probe(path, { signal, onError: 'IMAGE_DECODE_FAILED', maxPixels, timeoutMs });
  if (info.overPixelLimit) throw tooManyPixels(path, info.overPixelLimit, maxPixels);
  const v = info.video;
  if (!v || !(v.width > 0 && v.height > 0)) {
    throw new SonicError('IMAGE_DECODE_FAILED', `${path} has no decodable picture`, {
      details: { path, field: 'image' },
      safe: 'the image holds no decodable picture',
    });
  }
  const orientation = header.orientation ?? 1;
  const [width, height] = orientation >= 5 ? [v.height, v.width] : [v.width, v.height];
  if (width !== header.width || height !== header.height) {
    throw new SonicError(
      'MEDIA_MISMATCH',
      `the image header of ${path} declares ${header.width}×${header.height} px but its picture is ${width}×${height} px`,
      {
        details: { path, field: 'image', width, height },
        safe: `the image header declares ${header.width}×${header.height} px but its picture is ${width}×${height} px`,
      },
    );
  }
  await decodeOnce(path, { maxPixels, signal, timeoutMs });
  return { format: header.format as ImageFormat, width, height, orientation };
}

/** Decodes the first picture to an 8×8 thumbnail: a corrupt body behind a valid header fails here. */
async function decodeOnce(path: string, o: { maxPixels: number; signal?: AbortSignal; timeoutMs: number }): Promise<void> {
  const res = await runTool(
    'ffmpeg',
    [...ffmpegPrologue(o.maxPixels), '-noautorotate', '-i', path, '-map', '0:v:0', '-frames:v', '1', '-vf', 'scale=8:8,format=gray', '-f', 'rawvideo', '-'],
    { signal: o.signal, timeoutMs: o.timeoutMs, maxStdoutBytes: 1024 },
  );
  const over = pixelLimitHit(res.stderr);
  if (over) throw tooManyPixels(path, over, o.maxPixels);
  if (res.code !== 0 || res.stdout.length !== 64) {
    throw new SonicError('IMAGE_DECODE_FAILED', `cannot decode ${path}: ${failureReason('ffmpeg', res, o.timeoutMs)}`, {
      details: { path, field: 'image', exitCode: res.code, timedOut: res.timedOut },
      safe: res.timedOut ? 'decoding the image took longer than allowed' : 'the image could not be decoded: its data is corrupt or truncated',
    });
  }
}

function tooManyPixels(path: string, size: { width: number; height: number }, maxPixels: number): SonicError {
  const { width, height } = size;
  const text = `the picture decodes to ${width}×${height} px (${width * height} pixels); at most ${maxPixels} pixels are accepted`;
  return new SonicError('IMAGE_TOO_LARGE', `${text} (${path})`, {
    details: { path, field: 'image', width, height, pixels: width * height, maxPixels },
    safe: text,
  });
}

/**
 * The ffmpeg filters that turn an image stored with EXIF orientation `o` upright (empty for 1).
 * `transpose=0` is the plain matrix transpose, `1` a clockwise and `2` a counter-clockwise
 * quarter turn, `3` the anti-diagonal transpose.
 */
export function orientationFilters(o: number): string[] {
  switch (o) {
    case 2:
      return ['hflip'];
    case 3:
      return ['hflip', 'vflip'];
    case 4:
      return ['vflip'];
    case 5:
      return ['transpose=0'];
    case 6:
      return ['transpose=1'];
    case 7:
      return ['transpose=3'];
    case 8:
      return ['transpose=2'];
    default:
      return [];
  }
}

/**
 * The filters that turn a picture file upright: from its EXIF orientation for a JPEG (read by
 * {@link imageOrientation}, the same walk as validation's), none otherwise. Use with ffmpeg's
 * `-noautorotate` input option, or the rotation may apply twice.
 *
 * @throws SonicError as {@link imageOrientation} for a corrupt JPEG header.
 */
export async function uprightFilters(path: string): Promise<string[]> {
  return orientationFilters(await imageOrientation(path));
}

/** Options of {@link toModelPng}. */
export interface ToModelPngOptions {
  /** Longest side of the output in pixels (smaller images are not enlarged); 2048 by default. */
  maxSide?: number;
  /** The decoder refuses an input of more pixels (`-max_pixels`); {@link DEFAULT_MAX_PIXELS} by default. */
  maxPixels?: number;
  signal?: AbortSignal;
  /** Kills each ffmpeg/ffprobe run after this many milliseconds; 60 000 by default. */
  timeoutMs?: number;
  /** Keeps only this rectangle of the upright picture (pixels; it must lie inside the picture). */
  crop?: { x: number; y: number; width: number; height: number };
  /** Scales the (cropped) picture to exactly this size (Lanczos) instead of bounding it by `maxSide`. */
  size?: { width: number; height: number };
}

/**
 * Converts a JPEG, PNG or WebP to the model's input: upright (EXIF orientation applied),
 * optionally cropped (`crop`), scaled down so that neither side exceeds `maxSide` (aspect kept)
 * or to exactly `size`, 8-bit RGB, one-frame PNG. Any alpha channel is dropped.
 *
 * @returns the output size in pixels, as probed from the written file.
 * @throws SonicError `IMAGE_DECODE_FAILED` when ffmpeg fails, times out or writes nothing
 *   readable; `IMAGE_TOO_LARGE` when the decoder refuses the input for its pixels;
 *   `signal.reason` on abort.
 */
export async function toModelPng(input: string, output: string, options: ToModelPngOptions = {}): Promise<{ width: number; height: number }> {
  const { maxSide = 2048, maxPixels = DEFAULT_MAX_PIXELS, signal, timeoutMs = 60_000, crop, size } = options;
  const filters = [
    ...(await uprightFilters(input)),
    ...(crop ? [`crop=${crop.width}:${crop.height}:${crop.x}:${crop.y}:exact=1`] : []),
    size ? `scale=${size.width}:${size.height}:flags=lanczos` : `scale=w='min(iw,${maxSide})':h='min(ih,${maxSide})':force_original_aspect_ratio=decrease`,
    'format=rgb24',
  ];
  const res = await runTool(
    'ffmpeg',
    [
      ...ffmpegPrologue(maxPixels),
      '-y',
      '-noautorotate',
      '-i',
      input,
      '-map',
      '0:v:0',
      '-vf',
      filters.join(','),
      '-frames:v',
      '1',
      '-c:v',
      'png',
      '-f',
      'image2',
      '-update',
      '1',
      output,
    ],
    { signal, timeoutMs },
  );
  const over = pixelLimitHit(res.stderr);
  if (over) throw tooManyPixels(input, over, maxPixels);
  if (res.code !== 0) {
    throw new SonicError('IMAGE_DECODE_FAILED', `cannot convert ${input} to PNG: ${failureReason('ffmpeg', res, timeoutMs)}`, {
      details: { input, field: 'image', timedOut: res.timedOut },
      safe: res.timedOut ? 'converting the image took longer than allowed' : 'the image could not be decoded',
    });
  }
  const bytes = await stat(output).then(
    (s) => s.size,
    () => 0,
  );
  if (bytes === 0) throw new SonicError('IMAGE_DECODE_FAILED', `ffmpeg wrote no PNG for ${input}`, { details: { input, output } });
  const out = await probe(output, { signal, onError: 'IMAGE_DECODE_FAILED', timeoutMs });
  if (!out.video || !(out.video.width > 0))
    throw new SonicError('IMAGE_DECODE_FAILED', `the PNG written for ${input} has no picture`, { details: { input, output } });
  return { width: out.video.width, height: out.video.height };
}
