/**
 * Generated sample media for the demo and the tests: speech from espeak-ng, test tones from
 * ffmpeg's lavfi sources and a drawn portrait (portrait.ts). Nothing is downloaded.
 */
import { rm } from 'node:fs/promises';
import { extname } from 'node:path';
import { SonicError } from '../core/errors.js';
import { failureReason, runTool } from './exec.js';
import { drawPortrait, type PortraitGeometry } from './portrait.js';
import { probe } from './probe.js';

export type { PortraitGeometry } from './portrait.js';

/** Options shared by the sample generators. */
export interface SampleOptions {
  signal?: AbortSignal;
}

/** Options of {@link synthSpeech}. */
export interface SpeechOptions extends SampleOptions {
  /** espeak-ng voice, e.g. `en`, `en-us`, `de`; espeak-ng's default (English) otherwise. */
  voice?: string;
  /** Words per minute (espeak-ng `-s`, 80–450); espeak-ng's default (175) otherwise. */
  speed?: number;
}

/**
 * Speaks `text` with espeak-ng into a 16-bit mono WAV (22 050 Hz).
 *
 * @returns the duration in seconds.
 * @throws SonicError `INTERNAL` when espeak-ng is missing or fails; `signal.reason` on abort.
 */
export async function synthSpeech(text: string, outWav: string, options: SpeechOptions = {}): Promise<{ durationS: number }> {
  const args = ['-w', outWav];
  if (options.voice !== undefined) args.push('-v', options.voice);
  if (options.speed !== undefined) args.push('-s', String(Math.round(options.speed)));
  // a leading dash would be read as an option
  args.push(text.startsWith('-') ? ` ${text}` : text);
  const res = await runTool('espeak-ng', args, { signal: options.signal, timeoutMs: 60_000 });
  if (res.code !== 0) throw new SonicError('INTERNAL', `speech synthesis failed: ${failureReason('espeak-ng', res)}`);
  const info = await probe(outWav, { signal: options.signal });
  return { durationS: info.audio?.durationS ?? 0 };
}

/** Options of {@link speechWithSilence}. */
export interface SpeechWithSilenceOptions extends SpeechOptions {
  /** The two utterances, spoken before and after the gap. */
  speech: [string, string];
  /** Length of the digital-silence gap in seconds; 2 by default. */
  silenceS?: number;
}

/**
 * Writes one 16-bit mono WAV: the first utterance, then exactly `silenceS` seconds of digital
 * silence (all-zero samples), then the second utterance.
 *
 * @returns the silence interval in seconds from the start of the file, and the total duration.
 * @throws SonicError `INTERNAL` when espeak-ng or ffmpeg fails.
 */
export async function speechWithSilence(outWav: string, options: SpeechWithSilenceOptions): Promise<{ startS: number; endS: number; durationS: number }> {
  const { speech, silenceS = 2, signal } = options;
  const parts = [`${outWav}.part1.wav`, `${outWav}.part2.wav`] as const;
  try {
    await synthSpeech(speech[0], parts[0], options);
    await synthSpeech(speech[1], parts[1], options);
    const first = await probe(parts[0], { signal });
    const rate = first.audio?.sampleRate ?? 22_050;
    const startS = first.audio?.durationS ?? 0;
    const gapSamples = Math.round(silenceS * rate);
    await ffmpeg(
      [
        '-i',
        parts[0],
        '-f',
        'lavfi',
        '-i',
        `anullsrc=r=${rate}:cl=mono`,
        '-i',
        parts[1],
        '-filter_complex',
        `[1:a]atrim=end_sample=${gapSamples}[gap];[0:a][gap][2:a]concat=n=3:v=0:a=1[out]`,
        '-map',
        '[out]',
        '-ac',
        '1',
        '-ar',
        String(rate),
        '-c:a',
        'pcm_s16le',
        outWav,
      ],
      signal,
    );
    const total = await probe(outWav, { signal });
    return { startS, endS: startS + gapSamples / rate, durationS: total.audio?.durationS ?? 0 };
  } finally {
    await Promise.all(parts.map((p) => rm(p, { force: true })));
  }
}

/** Options of {@link makeTone}, {@link makeNoise} and {@link makeSilence}. */
export interface AudioSampleOptions extends SampleOptions {
  /** Hz; 44 100 by default. */
  sampleRate?: number;
}

/**
 * Writes a sine tone (440 Hz by default) of `seconds`. The codec follows the extension: `.wav`
 * (PCM s16le), `.mp3` (libmp3lame), `.m4a` (AAC in MP4), `.aac` (ADTS), `.flac`, `.ogg`
 * (Vorbis), `.opus`.
 *
 * @throws SonicError `INTERNAL` for another extension or when ffmpeg fails.
 */
export async function makeTone(out: string, seconds: number, options: AudioSampleOptions & { frequency?: number } = {}): Promise<void> {
  await makeAudio(out, `sine=f=${options.frequency ?? 440}:r=${options.sampleRate ?? 44_100}:d=${seconds}`, options.signal);
}

/** Writes white noise of `seconds` at `amplitude` (0–1, 0.3 by default); codecs as {@link makeTone}. */
export async function makeNoise(out: string, seconds: number, options: AudioSampleOptions & { amplitude?: number } = {}): Promise<void> {
  await makeAudio(out, `anoisesrc=c=white:a=${options.amplitude ?? 0.3}:r=${options.sampleRate ?? 44_100}:d=${seconds}`, options.signal);
}

/** Writes digital silence of `seconds`; codecs as {@link makeTone}. */
export async function makeSilence(out: string, seconds: number, options: AudioSampleOptions = {}): Promise<void> {
  await makeAudio(out, `anullsrc=r=${options.sampleRate ?? 44_100}:cl=mono,atrim=duration=${seconds}`, options.signal);
}

const AUDIO_CODECS: Record<string, string[]> = {
  '.wav': ['-c:a', 'pcm_s16le'],
  '.mp3': ['-c:a', 'libmp3lame', '-b:a', '96k'],
  '.m4a': ['-c:a', 'aac', '-b:a', '96k'],
  '.aac': ['-c:a', 'aac', '-b:a', '96k', '-f', 'adts'],
  '.flac': ['-c:a', 'flac'],
  '.ogg': ['-c:a', 'libvorbis'],
  '.opus': ['-c:a', 'libopus', '-ar', '48000'],
};

async function makeAudio(out: string, source: string, signal: AbortSignal | undefined): Promise<void> {
  const codec = AUDIO_CODECS[extname(out).toLowerCase()];
  if (!codec) throw new SonicError('INTERNAL', `no sample audio codec for ${out} (use ${Object.keys(AUDIO_CODECS).join(', ')})`);
  await ffmpeg(['-f', 'lavfi', '-i', source, '-ac', '1', ...codec, out], signal);
}

/** Options of {@link makePortrait}. */
export interface PortraitOptions extends SampleOptions {
  /** Pixels; 640 by default. */
  width?: number;
  /** Pixels; 800 by default. */
  height?: number;
}

/**
 * Writes the generated portrait ({@link drawPortrait}: a shaded frontal face, head and shoulders,
 * that a face detector finds from 160×200 px up) at `width` × `height`. The format follows the
 * extension: `.png`, `.jpg`/`.jpeg` or `.webp`.
 *
 * @returns where the face, mouth and eyes were drawn.
 * @throws SonicError `INTERNAL` for another extension or when ffmpeg fails.
 */
export async function makePortrait(out: string, options: PortraitOptions = {}): Promise<PortraitGeometry> {
  const { width = 640, height = 800, signal } = options;
  const ext = extname(out).toLowerCase();
  const codec =
    ext === '.png'
      ? ['-c:v', 'png']
      : ext === '.jpg' || ext === '.jpeg'
        ? ['-c:v', 'mjpeg', '-q:v', '2']
        : ext === '.webp'
          ? ['-c:v', 'libwebp', '-quality', '90']
          : undefined;
  if (!codec) throw new SonicError('INTERNAL', `no portrait format for ${out} (use .png, .jpg or .webp)`);
  const portrait = drawPortrait(width, height);
  await ffmpeg(
    ['-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-i', '-', '-frames:v', '1', ...codec, '-f', 'image2', '-update', '1', out],
    signal,
    portrait.rgb,
  );
  return portrait.geometry;
}

async function ffmpeg(args: string[], signal: AbortSignal | undefined, input?: Buffer): Promise<void> {
  const res = await runTool('ffmpeg', [...(input ? [] : ['-nostdin']), '-v', 'error', '-y', ...args], {
    signal,
    timeoutMs: 120_000,
    ...(input ? { input } : {}),
  });
  if (res.code !== 0) throw new SonicError('INTERNAL', `sample generation failed: ${failureReason('ffmpeg', res)}`);
}
