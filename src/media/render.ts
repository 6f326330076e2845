/**
 * The builtin CPU preview renderer: a stand-in for the Sonic model when no GPU is available
 * (demo, tests, smoke runs). It is NOT lip-sync.
 */
import { stat } from 'node:fs/promises';
import { once } from 'node:events';
import { SonicError } from '../core/errors.js';
import { frameCount, loudness } from './audio.js';
import { DEFAULT_MAX_PIXELS, ffmpegPrologue } from './bounds.js';
import { failureReason, runTool, startTool } from './exec.js';
import { uprightFilters } from './image.js';
import { probe } from './probe.js';
import { animateFrame, type RgbImage } from './warp.js';

/** Options of {@link renderPreview}. */
export interface RenderPreviewOptions {
  /** The portrait, any format ffmpeg decodes (normally the model PNG from `toModelPng`). */
  image: string;
  /** The speech, any format ffmpeg decodes; only its loudness and duration are used. */
  audio: string;
  /** The MP4 to write (H.264, yuv420p, no audio track). */
  output: string;
  /** Short side of the video in pixels: an even integer ≥ 16 (e.g. 512). The long side keeps the aspect, rounded to even. */
  size: number;
  /** Frames per second; 25 by default. */
  fps?: number;
  /** Multiplies the motion (0 freezes the portrait); 1 by default. */
  motionScale?: number;
  /** x264 constant rate factor, 0–51; 18 by default (0 is lossless, which makes silent frames decode identically). */
  crf?: number;
  signal?: AbortSignal;
  /** Called with the fraction of frames written, from 0 to 1 (1 once the video is complete). */
  onProgress?: (fraction: number) => void;
  /** Kills each ffmpeg/ffprobe run after this many milliseconds; the tool runner's default (10 min) otherwise. */
  timeoutMs?: number;
  /** The decoder refuses a portrait of more pixels (`-max_pixels`); {@link DEFAULT_MAX_PIXELS} by default. */
  maxPixels?: number;
}

/** What {@link renderPreview} wrote. */
export interface RenderResult {
  /** `ceil(audio duration × fps)`. */
  frames: number;
  fps: number;
  /** Duration of the video in seconds (`frames / fps`). */
  durationS: number;
  /** Duration of the audio in seconds. */
  audioDurationS: number;
  width: number;
  height: number;
}

/**
 * Renders a preview talking-head video WITHOUT lip-sync: each frame is the portrait deformed by
 * the loudness of that frame's audio (a "jaw" stretch of the lower middle plus a small zoom and
 * nod, proportional to loudness × `motionScale`). Frames whose audio is silent (below -50 dBFS)
 * are exactly the still portrait. The video has `ceil(audio duration × fps)` frames and no audio
 * track; mux the audio with `encodeDeliverable`.
 *
 * Silent frames are identical as written; after lossy coding (any `crf` > 0) they decode to
 * frames within a fraction of a grey level of each other, since x264 keeps refining a static
 * picture.
 *
 * @throws SonicError `PARAMS_OUT_OF_RANGE` for an odd or tiny `size`, `fps` outside (0, 120], a
 *   negative `motionScale` or `crf` outside [0, 51]; `AUDIO_DECODE_FAILED` /
 *   `IMAGE_DECODE_FAILED` when an input cannot be read; `ENCODE_FAILED` (retryable) when the
 *   encoder fails or its output does not hold exactly the expected frames; `signal.reason` on abort.
 */
export async function renderPreview(options: RenderPreviewOptions): Promise<RenderResult> {
  const { image, audio, output, size, fps = 25, motionScale = 1, crf = 18, signal, onProgress, timeoutMs, maxPixels } = options;
  if (!Number.isInteger(size) || size < 16 || size % 2 !== 0) {
    throw new SonicError('PARAMS_OUT_OF_RANGE', `size must be an even integer of at least 16 px, got ${size}`, { details: { size } });
  }
  if (!(fps > 0 && fps <= 120)) throw new SonicError('PARAMS_OUT_OF_RANGE', `fps must lie in (0, 120], got ${fps}`, { details: { fps } });
  if (!(motionScale >= 0)) throw new SonicError('PARAMS_OUT_OF_RANGE', `motionScale must be ≥ 0, got ${motionScale}`, { details: { motionScale } });
  if (!(crf >= 0 && crf <= 51)) throw new SonicError('PARAMS_OUT_OF_RANGE', `crf must lie in [0, 51], got ${crf}`, { details: { crf } });

  const audioInfo = await probe(audio, { signal, onError: 'AUDIO_DECODE_FAILED', timeoutMs });
  const audioDurationS = audioInfo.audio?.durationS ?? 0;
  if (!(audioDurationS > 0)) throw new SonicError('AUDIO_DECODE_FAILED', `${audio} has no audio of known duration`, { details: { audio } });
  const frames = frameCount(audioDurationS, fps);

  const still = await decodeStill(image, size, { signal, timeoutMs, maxPixels });
  const levels = await loudness(audio, fps, { frames, signal, timeoutMs });
  onProgress?.(0);

  const encoder = startTool(
    'ffmpeg',
    [
      '-v',
      'error',
      '-y',
      '-f',
      'rawvideo',
      '-pix_fmt',
      'rgb24',
      '-s',
      `${still.width}x${still.height}`,
      '-r',
      String(fps),
      '-i',
      '-',
      '-an',
      '-c:v',
      'libx264',
      '-preset',
      'veryfast',
      '-crf',
      String(crf),
      '-pix_fmt',
      'yuv420p',
      '-movflags',
      '+faststart',
      output,
    ],
    { signal, timeoutMs },
  );
  let exited = false;
  const ended = encoder.result.then(
    () => {
      exited = true;
    },
    () => {
      exited = true;
    },
  );
  const step = Math.max(1, Math.floor(frames / 100));
  try {
    for (let i = 0; i < frames && !exited && !encoder.stdin.destroyed && !signal?.aborted; i++) {
      const frame = animateFrame(still, (levels[i] ?? 0) * motionScale);
      if (!encoder.stdin.write(frame)) await Promise.race([once(encoder.stdin, 'drain').catch(() => undefined), ended]);
      if (onProgress && (i + 1) % step === 0 && i + 1 < frames) onProgress((i + 1) / frames);
    }
  } catch (err) {
    // e.g. onProgress threw: do not leave the encoder waiting for frames
    encoder.kill();
    await ended;
    throw err;
  }
  encoder.stdin.end();
  const res = await encoder.result;
  if (res.code !== 0) {
    throw new SonicError('ENCODE_FAILED', `preview encoding failed: ${failureReason('ffmpeg', res, timeoutMs)}`, { details: { output } });
  }
  const written = await stat(output).then(
    (s) => s.size,
    () => 0,
  );
  if (written === 0) throw new SonicError('ENCODE_FAILED', `ffmpeg wrote no preview video to ${output}`, { details: { output } });
  const info = await probe(output, { signal, onError: 'ENCODE_FAILED', timeoutMs });
  if (info.video?.frames !== frames) {
    throw new SonicError('ENCODE_FAILED', `the preview has ${info.video?.frames ?? 'no'} frames; ${frames} were written`, { details: { output, frames } });
  }
  onProgress?.(1);
  return { frames, fps, durationS: frames / fps, audioDurationS, width: still.width, height: still.height };
}

/**
 * Decodes a picture to raw RGB, upright (EXIF orientation applied), with its short side scaled
 * to `size` (long side rounded to even).
 *
 * @throws SonicError `IMAGE_DECODE_FAILED` when ffprobe or ffmpeg cannot decode it (a picture of
 *   more than `maxPixels`, {@link DEFAULT_MAX_PIXELS} by default, is not decoded at all).
 */
export async function decodeStill(
  image: string,
  size: number,
  options: { signal?: AbortSignal; timeoutMs?: number; maxPixels?: number } = {},
): Promise<RgbImage> {
  const { signal, timeoutMs, maxPixels = DEFAULT_MAX_PIXELS } = options;
  const info = await probe(image, { signal, onError: 'IMAGE_DECODE_FAILED', timeoutMs, maxPixels });
  const v = info.video;
  if (!v || !(v.width > 0 && v.height > 0)) throw new SonicError('IMAGE_DECODE_FAILED', `${image} has no decodable picture`, { details: { image } });
  const upright = await uprightFilters(image);
  // probe reports the stored size; a quarter turn swaps it
  const quarterTurn = upright.some((f) => f.startsWith('transpose'));
  const [w, h] = quarterTurn ? [v.height, v.width] : [v.width, v.height];
  const scale = size / Math.min(w, h);
  const even = (n: number): number => Math.max(2, Math.round(n / 2) * 2);
  const width = w <= h ? size : even(w * scale);
  const height = w <= h ? even(h * scale) : size;
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
      [...upright, `scale=${width}:${height}:flags=lanczos`, 'format=rgb24'].join(','),
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
  return { width, height, rgb: res.stdout };
}
