/**
 * The bounds every ffmpeg/ffprobe run on task media gets: a decoder pixel limit (a picture whose
 * header lies about its size still cannot make a decoder allocate more), a cap on any single
 * allocation, and a deadline derived from configuration.
 */
import type { Config } from '../core/config.js';

/** Pixel bound of decoder runs whose caller names none: the default of SONIC_MAX_IMAGE_PIXELS. */
export const DEFAULT_MAX_PIXELS = 25_000_000;

/** Smallest per-allocation cap, bytes: enough for any audio decoder and for H.264 at 4K. */
const MIN_ALLOC_BYTES = 256 * 1024 * 1024;

/**
 * Options that bound what ffmpeg or ffprobe may allocate while decoding, for the start of an
 * argument list (ffmpeg applies `-max_pixels` to the decoders of each following input):
 * `-max_alloc` (the largest single allocation: a 16-bit RGBA frame of `maxPixels`, plus room)
 * and `-max_pixels`.
 */
export function decoderBounds(maxPixels: number = DEFAULT_MAX_PIXELS): string[] {
  const maxAlloc = Math.max(MIN_ALLOC_BYTES, maxPixels * 8 + 16 * 1024 * 1024);
  return ['-max_alloc', String(maxAlloc), '-max_pixels', String(Math.floor(maxPixels))];
}

/** The arguments every bounded ffmpeg run starts with: no stdin, errors only, the decoder bounds. */
export function ffmpegPrologue(maxPixels?: number): string[] {
  return ['-nostdin', '-v', 'error', ...decoderBounds(maxPixels)];
}

/**
 * The picture size a decoder refused because of `-max_pixels`, read from its stderr
 * ("Picture size 4096x30000 exceeds specified max pixel count ..."), or undefined.
 */
export function pixelLimitHit(stderr: string): { width: number; height: number } | undefined {
  const m = /Picture size (\d+)x(\d+) exceeds specified max pixel count/.exec(stderr);
  return m ? { width: Number(m[1]), height: Number(m[2]) } : undefined;
}

/**
 * The deadline of one media tool run, ms: SONIC_MEDIA_TIMEOUT_S, plus
 * SONIC_MEDIA_TIMEOUT_PER_AUDIO_S per second of audio for runs whose work grows with it.
 */
export function mediaDeadlineMs(c: Pick<Config, 'mediaTimeoutS' | 'mediaTimeoutPerAudioS'>, audioS = 0): number {
  return Math.round((c.mediaTimeoutS + c.mediaTimeoutPerAudioS * Math.max(0, audioS)) * 1000);
}
