/**
 * The deliverable: the rendered video muxed with the original speech as a web-friendly MP4
 * (H.264 yuv420p + AAC, moov atom first), verified by probing before anyone publishes it.
 */
import { open, stat } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { ffmpegPrologue } from './bounds.js';
import { failureReason, runTool } from './exec.js';
import { probe, type ProbeResult } from './probe.js';

/** Options of {@link encodeDeliverable}. */
export interface EncodeOptions {
  /** The rendered video (its audio, if any, is ignored). */
  video: string;
  /** The speech (preprocess's cut of the upload): the video must last as long. */
  audio: string;
  /** The MP4 to write. */
  output: string;
  /** Output frame rate; 25 by default. */
  fps?: number;
  /** x264 constant rate factor (0–51, lower is better); 18 by default. */
  crf?: number;
  /** Largest accepted gap in seconds between the video, the output audio and the source audio; 0.2 by default. */
  toleranceS?: number;
  signal?: AbortSignal;
  /** Kills each ffmpeg/ffprobe run after this many milliseconds; the tool runner's default (10 min) otherwise. */
  timeoutMs?: number;
  /** The decoder refuses a rendered video of larger frames (`-max_pixels`); the default of decoderBounds (bounds.ts). */
  maxPixels?: number;
}

/** What {@link encodeDeliverable} wrote, as probed. */
export interface EncodeResult {
  /** Container duration in seconds. */
  durationS: number;
  videoDurationS: number;
  audioDurationS: number;
  width: number;
  height: number;
  /** Bytes. */
  sizeBytes: number;
}

/**
 * Muxes `video` and `audio` into an H.264 (yuv420p, `crf`, `fps`) + AAC (128 kb/s, 48 kHz) MP4
 * with `+faststart`, cut to the shorter input, then probes it.
 *
 * @throws SonicError `ENCODE_FAILED` (retryable) when ffmpeg exits non-zero or times out, writes
 *   no file, or the output is not h264/yuv420p/aac, or its video duration differs from its audio
 *   duration or from the source audio's by more than `toleranceS`; the message gives the reason.
 * @throws SonicError `AUDIO_DECODE_FAILED` when the source audio cannot be probed;
 *   `PARAMS_OUT_OF_RANGE` for `fps <= 0` or `crf` outside [0, 51]; `signal.reason` on abort.
 */
export async function encodeDeliverable(options: EncodeOptions): Promise<EncodeResult> {
  const { video, audio, output, fps = 25, crf = 18, toleranceS = 0.2, signal, timeoutMs, maxPixels } = options;
  if (!(fps > 0) || !(crf >= 0 && crf <= 51)) {
    throw new SonicError('PARAMS_OUT_OF_RANGE', `encode needs fps > 0 and crf in [0, 51], got fps ${fps}, crf ${crf}`, { details: { fps, crf } });
  }
  const source = await probe(audio, { signal, onError: 'AUDIO_DECODE_FAILED', timeoutMs });
  const sourceS = source.audio?.durationS ?? 0;
  const fail = (reason: string, details: Record<string, unknown> = {}): SonicError =>
    new SonicError('ENCODE_FAILED', `encoding ${output} failed: ${reason}`, { details: { output, ...details } });

  const res = await runTool(
    'ffmpeg',
    [
      ...ffmpegPrologue(maxPixels),
      '-y',
      '-i',
      video,
      '-i',
      audio,
      '-map',
      '0:v:0',
      '-map',
      '1:a:0',
      '-c:v',
      'libx264',
      '-preset',
      'medium',
      '-crf',
      String(crf),
      '-pix_fmt',
      'yuv420p',
      '-r',
      String(fps),
      '-c:a',
      'aac',
      '-b:a',
      '128k',
      '-ar',
      '48000',
      '-shortest',
      '-movflags',
      '+faststart',
      output,
    ],
    { signal, timeoutMs },
  );
  if (res.code !== 0) throw fail(failureReason('ffmpeg', res, timeoutMs), { exitCode: res.code, timedOut: res.timedOut });
  const sizeBytes = await stat(output).then(
    (s) => s.size,
    () => 0,
  );
  if (sizeBytes === 0) throw fail('ffmpeg exited 0 but wrote no file');

  const info: ProbeResult = await probe(output, { signal, onError: 'ENCODE_FAILED', timeoutMs, maxPixels });
  const v = info.video;
  const a = info.audio;
  if (!v) throw fail('the output has no video stream');
  if (!a) throw fail('the output has no audio stream');
  if (v.codec !== 'h264' || v.pixFmt !== 'yuv420p') throw fail(`the video is ${v.codec}/${v.pixFmt}, not h264/yuv420p`);
  if (a.codec !== 'aac') throw fail(`the audio is ${a.codec}, not aac`);
  const gap = Math.abs(v.durationS - a.durationS);
  if (!(gap <= toleranceS)) {
    throw fail(`video lasts ${v.durationS.toFixed(3)} s and audio ${a.durationS.toFixed(3)} s (more than ${toleranceS} s apart)`, {
      videoDurationS: v.durationS,
      audioDurationS: a.durationS,
    });
  }
  // -shortest hides a video shorter than the speech by cutting the speech: refuse that too
  if (sourceS > 0 && !(Math.abs(v.durationS - sourceS) <= toleranceS)) {
    throw fail(`video lasts ${v.durationS.toFixed(3)} s but the source audio ${sourceS.toFixed(3)} s (more than ${toleranceS} s apart)`, {
      videoDurationS: v.durationS,
      sourceAudioS: sourceS,
    });
  }
  return { durationS: info.durationS, videoDurationS: v.durationS, audioDurationS: a.durationS, width: v.width, height: v.height, sizeBytes };
}

/**
 * True when an MP4's `moov` box comes before its `mdat` box at the top level ("fast start": a
 * player can begin before the download ends). Reads only the box headers.
 *
 * @returns false when `mdat` comes first, or either box is missing, or the box sequence is broken.
 * @throws the fs error when the file cannot be opened.
 */
export async function hasFaststart(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const header = Buffer.alloc(16);
    let off = 0;
    while (off + 8 <= size) {
      const { bytesRead } = await fh.read(header, 0, 16, off);
      if (bytesRead < 8) return false;
      const type = header.toString('latin1', 4, 8);
      if (type === 'moov') return true;
      if (type === 'mdat') return false;
      let boxSize = header.readUInt32BE(0);
      if (boxSize === 1) {
        if (bytesRead < 16) return false;
        boxSize = Number(header.readBigUInt64BE(8));
      } else if (boxSize === 0) {
        return false; // the box runs to the end of the file, and it was neither moov nor mdat
      }
      if (boxSize < 8) return false;
      off += boxSize;
    }
    return false;
  } finally {
    await fh.close();
  }
}
