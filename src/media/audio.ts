/**
 * Audio checks and conversions: duration limits, the model's 16 kHz mono WAV, and a per-frame
 * loudness envelope that drives the preview renderer.
 */
import { stat } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { failureReason, runTool } from './exec.js';
import { probe, type ProbeResult } from './probe.js';

/** Sample rate (Hz) of the model input and of the loudness analysis. */
export const MODEL_SAMPLE_RATE = 16_000;

/** Loudness mapping: at or below this level (dBFS) a frame is silent (0). */
export const SILENCE_DBFS = -50;
/** Loudness mapping: at or above this level (dBFS) a frame is at full loudness (1). */
export const FULL_DBFS = -10;

/** Options of {@link checkAudio}. */
export interface CheckAudioOptions {
  /** Shortest accepted duration in seconds; 1 by default. */
  minS?: number;
  /** Longest accepted duration in seconds; unlimited by default. */
  maxS?: number;
  signal?: AbortSignal;
}

/**
 * Probes an audio file and enforces the duration limits.
 *
 * @returns the probe result, whose `audio` is set.
 * @throws SonicError `AUDIO_DECODE_FAILED` when ffprobe cannot read the file, it has no audio
 *   stream or its duration is unknown; `AUDIO_TOO_SHORT` below `minS`; `AUDIO_TOO_LONG` above
 *   `maxS` (messages state the measured and allowed values).
 */
export async function checkAudio(path: string, options: CheckAudioOptions = {}): Promise<ProbeResult & { audio: NonNullable<ProbeResult['audio']> }> {
  const { minS = 1, maxS } = options;
  const info = await probe(path, { signal: options.signal, onError: 'AUDIO_DECODE_FAILED' });
  const audio = info.audio;
  if (!audio) throw new SonicError('AUDIO_DECODE_FAILED', `${path} has no audio stream (container ${info.formatName})`, { details: { path } });
  const d = audio.durationS;
  if (!(d > 0)) throw new SonicError('AUDIO_DECODE_FAILED', `the duration of ${path} cannot be determined`, { details: { path } });
  if (d < minS) {
    throw new SonicError('AUDIO_TOO_SHORT', `audio is ${d.toFixed(2)} s; at least ${minS} s is needed`, { details: { durationS: d, minS } });
  }
  if (maxS !== undefined && d > maxS) {
    throw new SonicError('AUDIO_TOO_LONG', `audio is ${d.toFixed(2)} s; at most ${maxS} s is allowed`, { details: { durationS: d, maxS } });
  }
  return { ...info, audio };
}

/** Options of {@link toModelWav}. */
export interface ToModelWavOptions {
  /** Cuts the output at this many seconds; the whole input by default. */
  maxS?: number;
  signal?: AbortSignal;
  /** Kills ffmpeg after this many milliseconds; no limit by default. */
  timeoutMs?: number;
}

/**
 * Converts the first audio stream of any decodable file to the model's input: 16 kHz mono
 * 16-bit PCM WAV.
 *
 * @throws SonicError `AUDIO_DECODE_FAILED` when ffmpeg fails (exit code, timeout, no audio
 *   stream) or writes no output; `signal.reason` on abort.
 */
export async function toModelWav(input: string, output: string, options: ToModelWavOptions = {}): Promise<void> {
  const { maxS, signal, timeoutMs } = options;
  const args = ['-nostdin', '-v', 'error', '-y', '-i', input, '-map', '0:a:0', '-vn', '-ac', '1', '-ar', String(MODEL_SAMPLE_RATE), '-c:a', 'pcm_s16le'];
  if (maxS !== undefined) args.push('-t', String(maxS));
  args.push(output);
  const res = await runTool('ffmpeg', args, { signal, timeoutMs });
  if (res.code !== 0) {
    throw new SonicError('AUDIO_DECODE_FAILED', `cannot convert ${input} to WAV: ${failureReason('ffmpeg', res, timeoutMs)}`, { details: { input } });
  }
  // a 44-byte WAV is a header without samples
  const size = await stat(output).then((s) => s.size, () => 0);
  if (size <= 44) throw new SonicError('AUDIO_DECODE_FAILED', `ffmpeg wrote no audio samples from ${input}`, { details: { input, output, size } });
}

/** Options of {@link loudness}. */
export interface LoudnessOptions {
  /** Pads with 0 or truncates the result to exactly this many frames; by default one per started frame of decoded audio. */
  frames?: number;
  signal?: AbortSignal;
  /** Kills ffmpeg after this many milliseconds; no limit by default. */
  timeoutMs?: number;
}

/**
 * The loudness of each video frame of an audio file, in [0, 1]: the RMS level of the samples in
 * each 1/fps window, mapped linearly from {@link SILENCE_DBFS} (0) to {@link FULL_DBFS} (1).
 * Decoded to 16 kHz mono by ffmpeg.
 *
 * @param fps video frames per second (> 0).
 * @throws SonicError `AUDIO_DECODE_FAILED` when ffmpeg cannot decode the audio; `signal.reason` on abort.
 */
export async function loudness(input: string, fps: number, options: LoudnessOptions = {}): Promise<number[]> {
  if (!(fps > 0)) throw new SonicError('INTERNAL', `loudness needs fps > 0, got ${fps}`);
  const { signal, timeoutMs } = options;
  const res = await runTool('ffmpeg', [
    '-nostdin', '-v', 'error', '-i', input, '-map', '0:a:0', '-vn', '-ac', '1', '-ar', String(MODEL_SAMPLE_RATE), '-f', 's16le', '-c:a', 'pcm_s16le', '-',
  ], { signal, timeoutMs });
  if (res.code !== 0) {
    throw new SonicError('AUDIO_DECODE_FAILED', `cannot decode ${input}: ${failureReason('ffmpeg', res, timeoutMs)}`, { details: { input } });
  }
  const pcm = res.stdout;
  const samples = Math.floor(pcm.length / 2);
  const perFrame = MODEL_SAMPLE_RATE / fps;
  const count = options.frames ?? frameCount(samples / MODEL_SAMPLE_RATE, fps);
  const levels: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = Math.min(samples, Math.round(i * perFrame));
    const end = Math.min(samples, Math.round((i + 1) * perFrame));
    let sum = 0;
    for (let s = start; s < end; s++) {
      const v = pcm.readInt16LE(s * 2) / 32768;
      sum += v * v;
    }
    levels.push(end > start ? dbfsToLevel(10 * Math.log10(sum / (end - start))) : 0);
  }
  return levels;
}

/** Maps a level in dBFS to [0, 1] as {@link loudness} does (-Infinity, i.e. digital silence, gives 0). */
export function dbfsToLevel(db: number): number {
  if (!(db > SILENCE_DBFS)) return 0;
  if (db >= FULL_DBFS) return 1;
  return (db - SILENCE_DBFS) / (FULL_DBFS - SILENCE_DBFS);
}

/**
 * Number of video frames covering `durationS` seconds at `fps`: `ceil(durationS × fps)`, with a
 * tolerance of 1 µs so that floating-point noise (2.2 × 25 = 55.000000000000007) adds no frame.
 */
export function frameCount(durationS: number, fps: number): number {
  return Math.max(0, Math.ceil(durationS * fps - 1e-6));
}
