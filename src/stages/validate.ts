/**
 * validate: checks every parameter, then the audio and the portrait: their headers first
 * (`inspectMedia`: formats, decompression bombs, videos posing as audio, lying headers,
 * polyglots), then ffprobe and one decode of the picture, every tool run bounded by a deadline
 * and `-max_pixels`. Permanent failures (wrong format, undecodable, too short or long, too small
 * or large, parameters out of range) go to the DLQ at once; a store that cannot be read is
 * retried (INPUT_FETCH_FAILED); a blob whose bytes are not the ones submitted is CHECKSUM_MISMATCH.
 *
 * Exactly one task per task id: the store `seen` remembers the first request validated per task
 * id; a later `tasks.requested` record with that id (two API replicas raced on one idempotency
 * key, an in-doubt submit enqueued again) is dropped — no output, no status event — and counted
 * (`sonicflow_records_skipped_total{stage="validate",reason="duplicate"}`). A DLQ replay
 * (`sonicflow.replay.of` header) is let through: an operator asked for it. A request whose
 * validation failed leaves no entry (a failed record keeps no store writes), so a later copy of
 * it is validated again. The window is `SONIC_DEDUP_WINDOW` (15 minutes), measured between the
 * requests' `created_at`: duplicates are made within seconds to minutes of each other, while a key
 * makes the same task id again only after the task was removed (retention, `gc`), far later. An
 * entry older than the window is replaced when its task id comes again, and every entry goes a day
 * after it was written (the store's retention), so `seen` holds about a day of task ids.
 */
import { SonicError } from '../core/errors.js';
import { checkAudio } from '../media/audio.js';
import { mediaDeadlineMs } from '../media/bounds.js';
import { checkImage } from '../media/image.js';
import { inspectLimits, inspectMedia } from '../media/inspect.js';
import { HEADERS } from '../runtime/headers.js';
import type { KeyValueStore, StageRecord } from '../runtime/stage.js';
import { TOPICS } from './topics.js';
import { fetchTo, taskStage, withScratch } from './common.js';
import { HARD_MAX_AUDIO_S, checkParams, checkRequestFields } from '../domain/params.js';
import type { TaskRequest, TaskValidated } from '../domain/records.js';

/** The longest audio this task may have: its own limit, capped by configuration and Sonic's 400 s. */
export function audioLimit(request: TaskRequest, configuredMaxS: number): number {
  return Math.min(request.max_duration_s, configuredMaxS, HARD_MAX_AUDIO_S);
}

/** What `seen` keeps of the first request validated per task id, to log a dropped duplicate with it. */
export interface SeenRequest {
  topic: string;
  partition: number;
  offset: string;
  idempotency_key: string | null;
  /** ISO-8601 (store values are JSON). */
  created_at: string;
}

/**
 * The first request validated for `rec`'s task id, when `rec` is a later copy of it that must be
 * dropped; undefined when `rec` goes on (marking it seen, replacing an entry older than the
 * window). Replays always go on, and so does a request created more than `windowMs` after the
 * first one (`SONIC_DEDUP_WINDOW`): duplicates come within seconds to minutes, and a task id comes
 * again later only when its idempotency key makes a new task after the first one was removed.
 */
export function firstOf(rec: StageRecord<TaskRequest>, seen: KeyValueStore, windowMs = Number.POSITIVE_INFINITY): SeenRequest | undefined {
  const first = seen.get(rec.key) as SeenRequest | undefined;
  const fresh = first !== undefined && rec.value.created_at.getTime() - Date.parse(first.created_at) <= windowMs;
  if (first && fresh && rec.headers[HEADERS.replayOf] === undefined) return first;
  const entry: SeenRequest = {
    topic: rec.topic,
    partition: rec.partition,
    offset: rec.offset,
    idempotency_key: rec.value.idempotency_key,
    created_at: rec.value.created_at.toISOString(),
  };
  seen.put(rec.key, entry);
  return undefined;
}

/** The validate stage, declared once: the topology composes it by this name. */
export const validate = taskStage({
  name: 'validate',
  doc: 'Probes the audio and the image and checks every parameter.',
  state: 'VALIDATING',
  input: TOPICS.requested,
  sinks: { validated: TOPICS.validated, failed: TOPICS.completed },
  concurrency: 4,
  scaling: { maxReplicas: 4, lagThreshold: 50, targetDrainSeconds: 60 },
  resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } },
  // a day: far longer than the duplicate window (SONIC_DEDUP_WINDOW, at most 12 h)
  stores: { seen: { doc: 'The first request validated per task id (a later one is a duplicate).', retentionMs: 86_400_000 } },
  create: (deps) => ({
    async handle(rec, ctx) {
      const request = rec.value;
      const first = firstOf(rec, ctx.stores.seen!, deps.config.dedupWindowS * 1000);
      if (first) {
        ctx.logger.warn(
          {
            first,
            duplicate: {
              topic: rec.topic,
              partition: rec.partition,
              offset: rec.offset,
              idempotency_key: request.idempotency_key,
              created_at: request.created_at,
            },
          },
          'duplicate request of a task dropped',
        );
        return { skip: 'duplicate' };
      }
      checkParams(request.params);
      checkRequestFields(request);
      if (request.expires_at && request.expires_at.getTime() < ctx.now().getTime()) {
        throw new SonicError('INVALID_REQUEST', `the task expired at ${request.expires_at.toISOString()}`, { safe: true });
      }
      return withScratch(rec.key, 'validate', async (dir) => {
        const audioPath = await fetchTo(deps.blob, request.audio, dir, 'audio');
        const imagePath = await fetchTo(deps.blob, request.image, dir, 'image');
        // headers first, without a decoder: formats, bombs, videos posing as audio, polyglots
        const limits = inspectLimits(deps.config);
        const audioKind = await inspectMedia('audio', audioPath, limits);
        await inspectMedia('image', imagePath, limits);
        const maxS = audioLimit(request, deps.config.maxAudioSeconds);
        const timeoutMs = mediaDeadlineMs(deps.config);
        // with truncate_audio, longer audio is cut at maxS by preprocess instead of refused
        const audio = await checkAudio(audioPath, {
          minS: 1,
          maxS: request.truncate_audio ? Number.POSITIVE_INFINITY : maxS,
          signal: ctx.signal,
          timeoutMs,
          maxPixels: limits.maxPixels,
        });
        const image = await checkImage(imagePath, { ...limits, signal: ctx.signal, timeoutMs });
        ctx.signal.throwIfAborted();
        const out: TaskValidated = {
          task_id: rec.key,
          request,
          audio_probe: {
            format: audioKind.format,
            codec: audio.audio?.codec ?? 'unknown',
            duration_s: Math.min(audio.durationS, request.truncate_audio ? maxS : audio.durationS),
            sample_rate: audio.audio?.sampleRate ?? 0,
            channels: audio.audio?.channels ?? 0,
          },
          image_probe: { format: image.format, width: image.width, height: image.height },
          validated_at: ctx.now(),
        };
        return { emit: [{ sink: 'validated', value: out }] };
      });
    },
  }),
});
