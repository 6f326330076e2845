/**
 * The builtin CPU preview renderer: a stand-in for the Sonic model when no GPU is available
 * (demo, tests, smoke runs). It is NOT Sonic: it moves the jaw and lips of the portrait with the
 * speech's loudness and brightness (warp.ts), at the face's landmarks.
 */
import { stat } from 'node:fs/promises';
import { once } from 'node:events';
import { SonicError } from '../core/errors.js';
import { frameCount, speechFeatures, type SpeechFeatures } from './audio.js';
import { decodeRgb } from './decode.js';
import { failureReason, startTool } from './exec.js';
import { probe } from './probe.js';
import { centredRig, FaceAnimator, rigFromLandmarks, type Pose, type RgbImage } from './warp.js';

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
  /** The decoder refuses a portrait of more pixels (`-max_pixels`); the default of bounds.ts otherwise. */
  maxPixels?: number;
  /**
   * The face's landmarks in pixels of `image` (upright), from the face detector; without them the
   * renderer assumes a centred portrait (mouth in the middle, two thirds down).
   */
  face?: FaceShape;
}

/** The landmarks the renderer uses. */
export type FaceShape = Parameters<typeof rigFromLandmarks>[0];

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
 * Renders a preview talking-head video, not Sonic: each frame is the portrait with its mouth
 * opened by that frame's loudness, rounded or widened by the sound's brightness, and the head
 * nodding and tilting slightly while the voice goes on (all × `motionScale`); the rest of the
 * face stays put. Frames within two frames of silence (below -50 dBFS) are exactly the still
 * portrait. The video has `ceil(audio duration × fps)` frames and no audio
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

  const decoded = await decodeRgb(image, { fit: stillFit(size), signal, timeoutMs, maxPixels });
  const still = { width: decoded.width, height: decoded.height, rgb: decoded.rgb };
  const rig = options.face ? rigFromLandmarks(options.face, still.width / decoded.sourceWidth) : centredRig(still.width, still.height);
  const animator = new FaceAnimator(still, rig);
  const speech = await speechFeatures(audio, fps, { frames, signal, timeoutMs });
  const poses = posesFromSpeech(speech, fps, motionScale);
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
      const frame = animator.frame(poses[i] ?? NEUTRAL);
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
 *   more than `maxPixels`, the default of bounds.ts otherwise, is not decoded at all).
 */
export async function decodeStill(
  image: string,
  size: number,
  options: { signal?: AbortSignal; timeoutMs?: number; maxPixels?: number } = {},
): Promise<RgbImage> {
  const { width, height, rgb } = await decodeRgb(image, { ...options, fit: stillFit(size) });
  return { width, height, rgb };
}

/** The still's size: the short side `size`, the long side scaled alike and rounded to even. */
function stillFit(size: number): (w: number, h: number) => { width: number; height: number } {
  const even = (n: number): number => Math.max(2, Math.round(n / 2) * 2);
  return (w, h) => {
    const scale = size / Math.min(w, h);
    return { width: w <= h ? size : even(w * scale), height: w <= h ? even(h * scale) : size };
  };
}

const NEUTRAL: Pose = { open: 0, shape: 0, nod: 0, tilt: 0 };
/** Largest nod (share of the face height) and tilt (radians) of the head while speaking. */
const NOD = 0.012;
const TILT = 0.026;

/**
 * One pose per frame from the speech: the mouth opens with the loudness (lightly smoothed over
 * three frames) and is wide for bright sounds, rounded for dark ones; the head nods and tilts on
 * two slow, unrelated rhythms whose amplitude follows the loudness over five frames, so it comes
 * to rest two frames into a silence.
 */
export function posesFromSpeech(f: SpeechFeatures, fps: number, motionScale: number): Pose[] {
  const n = f.level.length;
  const at = (v: number[], i: number): number => v[Math.min(n - 1, Math.max(0, i))] ?? 0;
  const poses: Pose[] = [];
  for (let i = 0; i < n; i++) {
    const open = (0.25 * at(f.level, i - 1) + 0.5 * at(f.level, i) + 0.25 * at(f.level, i + 1)) * motionScale;
    let env = 0;
    for (let k = -2; k <= 2; k++) env += at(f.level, i + k) / 5;
    env = Math.min(1, env * motionScale);
    if (!(open > 0) && !(env > 0)) {
      poses.push(NEUTRAL);
      continue;
    }
    const bright = 0.25 * at(f.brightness, i - 1) + 0.5 * at(f.brightness, i) + 0.25 * at(f.brightness, i + 1);
    const t = i / fps;
    poses.push({
      open: Math.min(1.5, open * 1.4),
      shape: Math.max(-1, Math.min(1, (bright - 0.2) * 4)) * Math.min(1, open * 2),
      nod: NOD * env * (0.6 * Math.sin(2 * Math.PI * 0.43 * t) + 0.4 * Math.sin(2 * Math.PI * 1.1 * t + 1)),
      tilt: TILT * env * Math.sin(2 * Math.PI * 0.27 * t + 0.5),
    });
  }
  return poses;
}
