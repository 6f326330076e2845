/**
 * encode: the deliverable MP4 — H.264 yuv420p, AAC, 25 fps, +faststart, the speech muxed (the
 * cut preprocess made, so the rendered video and the speech last the same) — probed after ffmpeg
 * (exit code checked, codecs and duration verified), every run under a deadline that grows with
 * the audio. ENCODE_FAILED is retried once.
 */
import { join } from 'node:path';
import { taskKey } from '../blob/store.js';
import { mediaDeadlineMs } from '../media/bounds.js';
import { encodeDeliverable } from '../media/encode.js';
import { TOPICS } from './topics.js';
import { fetchTo, taskStage, mediaRef, withScratch } from './common.js';
import type { TaskEncoded } from '../domain/records.js';

/** The encode stage, declared once: the topology composes it by this name. */
export const encode = taskStage({
  name: 'encode',
  doc: 'Muxes the original audio into an H.264/AAC faststart MP4 and probes it.',
  state: 'ENCODING',
  input: TOPICS.rendered,
  sinks: { encoded: TOPICS.encoded, failed: TOPICS.completed },
  concurrency: 2,
  scaling: { maxReplicas: 4, lagThreshold: 10, targetDrainSeconds: 120 },
  // ffmpeg H.264/AAC encoding
  resources: { requests: { cpu: '1', memory: '512Mi' }, limits: { cpu: '2', memory: '2Gi' } },
  create: (deps) => ({
    async handle(rec, ctx) {
      const v = rec.value;
      return withScratch(rec.key, 'encode', async (dir) => {
        const output = join(dir, 'video.mp4');
        const result = await encodeDeliverable({
          video: await fetchTo(deps.blob, v.video, dir, 'rendered.mp4'),
          audio: await fetchTo(deps.blob, v.audio_original, dir, 'speech.flac'),
          output,
          fps: v.request.params.fps,
          signal: ctx.signal,
          timeoutMs: mediaDeadlineMs(deps.config, v.audio_duration_s),
          maxPixels: deps.config.maxImagePixels,
        });
        const stored = await deps.blob.put(taskKey(rec.key, 'encode', 'video.mp4'), output, { contentType: 'video/mp4' });
        const out: TaskEncoded = {
          task_id: rec.key,
          request: v.request,
          video: mediaRef(stored),
          duration_s: result.durationS,
          width: result.width,
          height: result.height,
          encoded_at: ctx.now(),
        };
        return { emit: [{ sink: 'encoded', value: out }] };
      });
    },
  }),
});
