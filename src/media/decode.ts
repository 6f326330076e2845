/**
 * Decoding a picture to raw RGB pixels with ffmpeg, upright (EXIF orientation applied), scaled to
 * a size chosen from its own, optionally padded: what the preview renderer and the face detector
 * read.
 */
import { SonicError } from '../core/errors.js';
import { DEFAULT_MAX_PIXELS, ffmpegPrologue } from './bounds.js';
import { failureReason, runTool } from './exec.js';
import { uprightFilters } from './image.js';
import { probe } from './probe.js';
import type { RgbImage } from './geometry.js';

/** Options of {@link decodeRgb}. */
export interface DecodeRgbOptions {
  /** The picture's pixels after scaling, from its upright size. */
  fit: (width: number, height: number) => { width: number; height: number };
  /** Pads the scaled picture at its right and bottom to this size (grey), e.g. to make it square. */
  pad?: (width: number, height: number) => { width: number; height: number };
  signal?: AbortSignal;
  timeoutMs?: number;
  /** The decoder refuses a picture of more pixels (`-max_pixels`); {@link DEFAULT_MAX_PIXELS} by default. */
  maxPixels?: number;
}

/** A decoded picture and the upright size of its source. */
export interface DecodedRgb extends RgbImage {
  /** The picture's own size, upright (after EXIF orientation), before scaling. */
  sourceWidth: number;
  sourceHeight: number;
}

/**
 * Decodes the first picture of `image` to 8-bit RGB, upright, scaled (Lanczos) to `fit`'s size
 * and padded to `pad`'s.
 *
 * @throws SonicError `IMAGE_DECODE_FAILED` when ffprobe or ffmpeg cannot decode it (a picture of
 *   more than `maxPixels` is not decoded at all); `signal.reason` on abort.
 */
export async function decodeRgb(image: string, options: DecodeRgbOptions): Promise<DecodedRgb> {
  const { signal, timeoutMs, maxPixels = DEFAULT_MAX_PIXELS } = options;
  const info = await probe(image, { signal, onError: 'IMAGE_DECODE_FAILED', timeoutMs, maxPixels });
  const v = info.video;
  if (!v || !(v.width > 0 && v.height > 0)) throw new SonicError('IMAGE_DECODE_FAILED', `${image} has no decodable picture`, { details: { image } });
  const upright = await uprightFilters(image);
  // probe reports the stored size; a quarter turn swaps it
  const quarterTurn = upright.some((f) => f.startsWith('transpose'));
  const [sourceWidth, sourceHeight] = quarterTurn ? [v.height, v.width] : [v.width, v.height];
  const scaled = options.fit(sourceWidth, sourceHeight);
  const { width, height } = options.pad ? options.pad(scaled.width, scaled.height) : scaled;
  const filters = [...upright, `scale=${scaled.width}:${scaled.height}:flags=lanczos`];
  if (width !== scaled.width || height !== scaled.height) filters.push(`pad=${width}:${height}:0:0:color=gray`);
  filters.push('format=rgb24');
  const res = await runTool(
    'ffmpeg',
    [
      ...ffmpegPrologue(maxPixels),
      '-noautorotate',
      '-i',
      image,
      '-map',
      '0:v:0',
      '-frames:v',
      '1',
      '-vf',
      filters.join(','),
      '-f',
      'rawvideo',
      '-pix_fmt',
      'rgb24',
      '-',
    ],
    { signal, timeoutMs, maxStdoutBytes: width * height * 3 },
  );
  if (res.code !== 0) {
    throw new SonicError('IMAGE_DECODE_FAILED', `cannot decode ${image}: ${failureReason('ffmpeg', res, timeoutMs)}`, { details: { image } });
  }
  if (res.stdout.length !== width * height * 3) {
    throw new SonicError('IMAGE_DECODE_FAILED', `decoding ${image} gave ${res.stdout.length} bytes, expected ${width * height * 3}`, { details: { image } });
  }
  return { width, height, rgb: res.stdout, sourceWidth, sourceHeight };
}
