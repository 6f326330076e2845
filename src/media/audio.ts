/**
 * Audio checks and conversions: duration limits, the model's 16 kHz mono WAV, and a per-frame
 * loudness envelope that drives the preview renderer.
 */
import { stat } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { ffmpegPrologue } from './bounds.js';
import { failureReason, runTool, type ToolResult } from './exec.js';
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
  /** Deadline of the ffprobe run, ms; 60 000 by default. */
  timeoutMs?: number;
  /** Pixel bound of the decoders ffprobe opens (cover art is a picture too); the default of decoderBounds (bounds.ts). */
  maxPixels?: number;
}

/**
 * Probes an audio file and enforces the duration limits.
 *
 * @returns the probe result, whose `audio` is set.
 * @throws SonicError `AUDIO_DECODE_FAILED` when ffprobe cannot read the file (or runs past
 *   `timeoutMs`), it has no audio stream or its duration is unknown; `AUDIO_TOO_SHORT` below
 *   `minS`; `AUDIO_TOO_LONG` above `maxS` (client-safe messages with the measured and allowed values).
 */
export async function checkAudio(path: string, options: CheckAudioOptions = {}): Promise<ProbeResult & { audio: NonNullable<ProbeResult['audio']> }> {
  const { minS = 1, maxS } = options;
  const info = await probe(path, { signal: options.signal, onError: 'AUDIO_DECODE_FAILED', timeoutMs: options.timeoutMs, maxPixels: options.maxPixels });
  const audio = info.audio;
  if (!audio) {
    throw new SonicError('AUDIO_DECODE_FAILED', `${path} has no audio stream (container ${info.formatName})`, {
      details: { path, field: 'audio' },
      safe: 'the audio file holds no audio stream',
    });
  }
  checkDuration(audio.durationS, minS, maxS);
  return { ...info, audio };
}

/**
 * Enforces the duration limits on a measured duration.
 *
 * @throws SonicError `AUDIO_DECODE_FAILED` when `durationS` is not positive; `AUDIO_TOO_SHORT` /
 *   `AUDIO_TOO_LONG` outside [minS, maxS] (client-safe messages with both values).
 */
export function checkDuration(durationS: number, minS: number, maxS?: number): void {
  const d = durationS;
  if (!(d > 0)) throw new SonicError('AUDIO_DECODE_FAILED', 'the duration of the audio cannot be determined', { safe: true, details: { field: 'audio' } });
  if (d < minS) {
    throw new SonicError('AUDIO_TOO_SHORT', `the audio is ${d.toFixed(2)} s; at least ${minS} s is needed`, {
      safe: true,
      details: { field: 'audio', durationS: d, minS },
    });
  }
  if (maxS !== undefined && d > maxS) {
    throw new SonicError('AUDIO_TOO_LONG', `the audio is ${d.toFixed(2)} s; at most ${maxS} s is allowed`, {
      safe: true,
      details: { field: 'audio', durationS: d, maxS },
    });
  }
}

/** Options of {@link toModelWav}. */
export interface ToModelWavOptions {
  /** Cuts the output at this many seconds; the whole input by default. */
  maxS?: number;
  signal?: AbortSignal;
  /** Kills ffmpeg after this many milliseconds; {@link DEFAULT_CONVERT_TIMEOUT_MS} by default. */
  timeoutMs?: number;
}

/** Deadline of an audio conversion whose caller names none, ms. */
export const DEFAULT_CONVERT_TIMEOUT_MS = 120_000;

/**
 * Converts the first audio stream of any decodable file to the model's input: 16 kHz mono
 * 16-bit PCM WAV.
 *
 * @throws SonicError `AUDIO_DECODE_FAILED` when ffmpeg fails (exit code, timeout, no audio
 *   stream) or writes no output; `signal.reason` on abort.
 */
export async function toModelWav(input: string, output: string, options: ToModelWavOptions = {}): Promise<void> {
  const { maxS, signal, timeoutMs = DEFAULT_CONVERT_TIMEOUT_MS } = options;
  const args = [...ffmpegPrologue(), '-y', '-i', input, '-map', '0:a:0', '-vn', '-ac', '1', '-ar', String(MODEL_SAMPLE_RATE), '-c:a', 'pcm_s16le'];
  if (maxS !== undefined) args.push('-t', String(maxS));
  args.push(output);
  const res = await runTool('ffmpeg', args, { signal, timeoutMs });
  if (res.code !== 0) throw decodeFailed(`cannot convert ${input} to WAV`, res, timeoutMs, input);
  // a 44-byte WAV is a header without samples
  const size = await stat(output).then(
    (s) => s.size,
    () => 0,
  );
  if (size <= 44)
    throw new SonicError('AUDIO_DECODE_FAILED', `ffmpeg wrote no audio samples from ${input}`, {
      details: { input, output, size },
      safe: 'no audio could be decoded from the file',
    });
}

/** Options of {@link toSpeechFlac}. */
export interface ToSpeechFlacOptions {
  /** Cuts the output at this many seconds (decoding stops there). */
  maxS: number;
  signal?: AbortSignal;
  /** Kills ffmpeg (and the ffprobe of the result) after this many milliseconds; {@link DEFAULT_CONVERT_TIMEOUT_MS} by default. */
  timeoutMs?: number;
}

/** Sample rates the speech keeps (the nearest is chosen; above 48 kHz nothing is gained for speech). */
const SPEECH_RATES = '8000|11025|12000|16000|22050|24000|32000|44100|48000';

/**
 * The speech as every later step uses it: the first audio stream of any decodable file, cut at
 * `maxS` seconds, as 16-bit FLAC (lossless from the decoded samples) in mono or stereo (more
 * channels are downmixed) at its own rate up to 48 kHz. Decoding stops at the cut, so a
 * decompression bomb (hours of silence in a tiny file) costs no more than `maxS` of audio.
 *
 * @returns the duration of the written file in seconds, as probed (not as the input's header claims).
 * @throws SonicError `AUDIO_DECODE_FAILED` when ffmpeg fails or runs past `timeoutMs`, or no
 *   sample could be decoded; `signal.reason` on abort.
 */
export async function toSpeechFlac(input: string, output: string, options: ToSpeechFlacOptions): Promise<{ durationS: number }> {
  const { maxS, signal, timeoutMs = DEFAULT_CONVERT_TIMEOUT_MS } = options;
  const res = await runTool(
    'ffmpeg',
    [
      ...ffmpegPrologue(),
      '-y',
      '-i',
      input,
      '-map',
      '0:a:0',
      '-vn',
      '-sn',
      '-dn',
      '-t',
      String(maxS),
      '-af',
      `aformat=sample_fmts=s16:sample_rates=${SPEECH_RATES}:channel_layouts=mono|stereo`,
      '-c:a',
      'flac',
      '-f',
      'flac',
      output,
    ],
    { signal, timeoutMs },
  );
  if (res.code !== 0) throw decodeFailed(`cannot cut ${input} to FLAC`, res, timeoutMs, input);
  const info = await probe(output, { signal, onError: 'AUDIO_DECODE_FAILED', timeoutMs });
  const durationS = info.audio?.durationS ?? 0;
  if (!(durationS > 0)) {
    throw new SonicError('AUDIO_DECODE_FAILED', `ffmpeg decoded no audio samples from ${input}`, {
      details: { input, field: 'audio' },
      safe: 'no audio could be decoded from the file',
    });
  }
  return { durationS };
}

function decodeFailed(what: string, res: ToolResult, timeoutMs: number, input: string): SonicError {
  return new SonicError('AUDIO_DECODE_FAILED', `${what}: ${failureReason('ffmpeg', res, timeoutMs)}`, {
    details: { input, field: 'audio', exitCode: res.code, timedOut: res.timedOut },
    safe: res.timedOut ? 'decoding the audio took longer than allowed' : 'the audio could not be decoded: its data is corrupt or truncated',
  });
}

/** Options of {@link loudness}. */
export interface LoudnessOptions {
  /**
   * Pads with 0 or truncates the result to exactly this many frames (and decodes no more audio
   * than they cover); by default one per started frame of decoded audio, at most the default
   * stdout cap of the tool runner (about 35 minutes of 16 kHz PCM).
   */
  frames?: number;
  signal?: AbortSignal;
  /** Kills ffmpeg after this many milliseconds; {@link DEFAULT_CONVERT_TIMEOUT_MS} by default. */
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
  return (await speechFeatures(input, fps, options)).level;
}

/** Per video frame: {@link loudness}'s level and a brightness of the sound. */
export interface SpeechFeatures {
  level: number[];
  /**
   * The share of the frame's energy in its sample-to-sample differences, 0..1 (0 in silence): a
   * cheap spectral tilt, low for vowels such as "o" and "u", high for "s", "f", "i" and "e".
   */
  brightness: number[];
}

/**
 * The per-frame features of speech the preview renderer animates a mouth with: {@link loudness}
 * and a brightness ({@link SpeechFeatures}). Options and errors as {@link loudness}.
 */
export async function speechFeatures(input: string, fps: number, options: LoudnessOptions = {}): Promise<SpeechFeatures> {
  if (!(fps > 0)) throw new SonicError('INTERNAL', `loudness needs fps > 0, got ${fps}`);
  const { signal, timeoutMs = DEFAULT_CONVERT_TIMEOUT_MS } = options;
  // with a frame count, only the audio those frames cover is decoded (and held in memory)
  const seconds = options.frames === undefined ? undefined : options.frames / fps;
  const res = await runTool(
    'ffmpeg',
    [
      ...ffmpegPrologue(),
      '-i',
      input,
      '-map',
      '0:a:0',
      '-vn',
      ...(seconds === undefined ? [] : ['-t', String(seconds)]),
      '-ac',
      '1',
      '-ar',
      String(MODEL_SAMPLE_RATE),
      '-f',
      's16le',
      '-c:a',
      'pcm_s16le',
      '-',
    ],
    { signal, timeoutMs, ...(seconds === undefined ? {} : { maxStdoutBytes: Math.ceil(seconds * MODEL_SAMPLE_RATE) * 2 + 65_536 }) },
  );
  if (res.code !== 0) throw decodeFailed(`cannot decode ${input}`, res, timeoutMs, input);
  const pcm = res.stdout;
  const samples = Math.floor(pcm.length / 2);
  const perFrame = MODEL_SAMPLE_RATE / fps;
  const count = options.frames ?? frameCount(samples / MODEL_SAMPLE_RATE, fps);
  const level: number[] = [];
  const brightness: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = Math.min(samples, Math.round(i * perFrame));
    const end = Math.min(samples, Math.round((i + 1) * perFrame));
    let sum = 0;
    let diff = 0;
    let prev = start > 0 ? pcm.readInt16LE((start - 1) * 2) / 32768 : 0;
    for (let s = start; s < end; s++) {
      const v = pcm.readInt16LE(s * 2) / 32768;
      sum += v * v;
      diff += (v - prev) * (v - prev);
      prev = v;
    }
    const l = end > start ? dbfsToLevel(10 * Math.log10(sum / (end - start))) : 0;
    level.push(l);
    brightness.push(l > 0 ? Math.min(1, diff / (4 * sum)) : 0);
  }
  return { level, brightness };
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
