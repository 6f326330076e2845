/**
 * Reads container and stream facts with ffprobe. A file ffprobe cannot open is reported with the
 * error code the caller chooses, since only the caller knows whether it was audio, an image or
 * our own output.
 */
import { SonicError, type ErrorCode } from '../core/errors.js';
import { decoderBounds, pixelLimitHit } from './bounds.js';
import { failureReason, runTool } from './exec.js';

/** The first audio stream of a file. */
export interface AudioStreamInfo {
  codec: string;
  /** Hz. */
  sampleRate: number;
  channels: number;
  /** Seconds; the container's duration when the stream has none. */
  durationS: number;
}

/** The first video (or image) stream of a file; cover art attached to audio is skipped. */
export interface VideoStreamInfo {
  codec: string;
  /** Pixels, as stored (EXIF orientation not applied). */
  width: number;
  height: number;
  pixFmt: string;
  /** Frames per second from `avg_frame_rate`; 0 when unknown (still images). */
  fps: number;
  /** Frame count when the container records it (MP4 does, raw streams do not). */
  frames?: number;
  /** Seconds; 0 when unknown (still images). */
  durationS: number;
}

/** What {@link probe} found. */
export interface ProbeResult {
  /** ffprobe's demuxer name(s), e.g. `wav`, `mov,mp4,m4a,3gp,3g2,mj2`, `png_pipe`. */
  formatName: string;
  /** Container duration in seconds; 0 when unknown (still images). */
  durationS: number;
  audio?: AudioStreamInfo;
  video?: VideoStreamInfo;
  /**
   * Set when a picture stream was refused by the `maxPixels` bound: the size it announced. Its
   * decoder never allocated it, and `video` then reports 0×0 (or is absent).
   */
  overPixelLimit?: { width: number; height: number };
}

/** Options of {@link probe} and {@link countFrames}. */
export interface ProbeOptions {
  signal?: AbortSignal;
  /** Error code thrown when ffprobe cannot read the file; `INTERNAL` by default. */
  onError?: ErrorCode;
  /** Kills ffprobe after this many milliseconds; 60 000 by default. */
  timeoutMs?: number;
  /** Decoders refuse pictures of more pixels (`-max_pixels`); {@link DEFAULT_MAX_PIXELS} by default. */
  maxPixels?: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;
/** ffprobe's JSON for a few streams is small; a file of thousands of streams is refused. */
const PROBE_STDOUT_BYTES = 4 * 1024 * 1024;

interface RawStream {
  codec_type?: string;
  codec_name?: string;
  sample_rate?: string;
  channels?: number;
  width?: number;
  height?: number;
  pix_fmt?: string;
  avg_frame_rate?: string;
  nb_frames?: string;
  nb_read_frames?: string;
  duration?: string;
  disposition?: { attached_pic?: number };
}

interface RawProbe {
  format?: { format_name?: string; duration?: string };
  streams?: RawStream[];
}

/**
 * Probes a media file with ffprobe.
 *
 * @throws SonicError with code `options.onError` (default `INTERNAL`) when ffprobe exits non-zero,
 *   times out or prints unreadable JSON; the message carries ffprobe's stderr.
 * @throws SonicError `INTERNAL` when ffprobe is not installed; `signal.reason` on abort.
 */
export async function probe(path: string, options: ProbeOptions = {}): Promise<ProbeResult> {
  const { raw, stderr } = await ffprobeJson(
    path,
    [
      '-show_entries',
      'format=duration,format_name:stream=index,codec_type,codec_name,sample_rate,channels,width,height,pix_fmt,avg_frame_rate,nb_frames,duration:stream_disposition=attached_pic',
    ],
    options,
  );
  const formatDuration = num(raw.format?.duration);
  const streams = raw.streams ?? [];
  const a = streams.find((s) => s.codec_type === 'audio');
  const v = streams.find((s) => s.codec_type === 'video' && s.disposition?.attached_pic !== 1);
  const result: ProbeResult = { formatName: raw.format?.format_name ?? '', durationS: formatDuration };
  const over = pixelLimitHit(stderr);
  if (over) result.overPixelLimit = over;
  if (a) {
    result.audio = {
      codec: a.codec_name ?? '',
      sampleRate: num(a.sample_rate),
      channels: a.channels ?? 0,
      durationS: num(a.duration) || formatDuration,
    };
  }
  if (v) {
    const frames = num(v.nb_frames);
    result.video = {
      codec: v.codec_name ?? '',
      width: v.width ?? 0,
      height: v.height ?? 0,
      pixFmt: v.pix_fmt ?? '',
      fps: rate(v.avg_frame_rate),
      durationS: num(v.duration) || (rate(v.avg_frame_rate) > 0 ? formatDuration : 0),
      ...(frames > 0 ? { frames } : {}),
    };
  }
  return result;
}

/**
 * Counts the frames of the first video stream by decoding it (`-count_frames`), for containers
 * that do not record a count or when the recorded count must not be trusted.
 *
 * @throws SonicError `options.onError` (default `INTERNAL`) when ffprobe fails or finds no video stream.
 */
export async function countFrames(path: string, options: ProbeOptions = {}): Promise<number> {
  const { raw } = await ffprobeJson(path, ['-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=nb_read_frames'], options);
  const n = raw.streams?.[0]?.nb_read_frames;
  if (n === undefined || !/^\d+$/.test(n)) {
    throw new SonicError(options.onError ?? 'INTERNAL', `ffprobe found no video frames to count in ${path}`, {
      details: { path },
      safe: 'no video frames could be counted',
    });
  }
  return Number(n);
}

async function ffprobeJson(path: string, entries: string[], options: ProbeOptions): Promise<{ raw: RawProbe; stderr: string }> {
  const code = options.onError ?? 'INTERNAL';
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const res = await runTool('ffprobe', ['-v', 'error', ...decoderBounds(options.maxPixels), ...entries, '-of', 'json', '--', path], {
    signal: options.signal,
    timeoutMs,
    maxStdoutBytes: PROBE_STDOUT_BYTES,
  });
  if (res.code !== 0) {
    throw new SonicError(code, `cannot read ${path}: ${failureReason('ffprobe', res, timeoutMs)}`, {
      details: { path, exitCode: res.code, timedOut: res.timedOut },
    });
  }
  try {
    return { raw: JSON.parse(res.stdout.toString('utf8')) as RawProbe, stderr: res.stderr };
  } catch (err) {
    throw new SonicError(code, `ffprobe printed unreadable JSON for ${path}`, { cause: err, details: { path } });
  }
}

function num(s: string | undefined): number {
  const n = s === undefined ? NaN : Number(s);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

function rate(s: string | undefined): number {
  const [n, d] = (s ?? '').split('/').map(Number);
  return n !== undefined && d !== undefined && d > 0 && Number.isFinite(n / d) ? n / d : 0;
}
