/**
 * validate: probes the audio and the portrait and checks every parameter. Permanent failures
 * (wrong format, undecodable, too short or long, too small or large, parameters out of range)
 * go to the DLQ at once; a store that cannot be read is retried (INPUT_FETCH_FAILED).
 */
import { open } from 'node:fs/promises';
import { SonicError } from '../core/errors.js';
import { checkAudio } from '../media/audio.js';
import { checkImage } from '../media/image.js';
import { sniff } from '../media/sniff.js';
import { defineStage } from '../runtime/stage.js';
import { failedOutcome, fetchTo, statusOf, withScratch, type StageDeps } from './common.js';
import { HARD_MAX_AUDIO_S, checkParams, checkRequestFields } from './params.js';
import type { TaskRequest, TaskValidated } from './records.js';

async function head(path: string): Promise<Buffer> {
  const f = await open(path, 'r');
  try {
    const buf = Buffer.alloc(64);
    const { bytesRead } = await f.read(buf, 0, 64, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await f.close();
  }
}

/** The longest audio this task may have: its own limit, capped by configuration and Sonic's 400 s. */
export function audioLimit(request: TaskRequest, configuredMaxS: number): number {
  return Math.min(request.max_duration_s, configuredMaxS, HARD_MAX_AUDIO_S);
}

export function validateStage(deps: StageDeps) {
  return defineStage<TaskRequest>({
    name: 'validate',
    runningState: 'VALIDATING',
    doneState: 'PREPROCESSING',
    statusOf,
    onFailure: (rec, error) => failedOutcome(rec, error, Date.now()),
    async handle(rec, ctx) {
      const request = rec.value;
      checkParams(request.params);
      checkRequestFields(request);
      if (request.expires_at && request.expires_at.getTime() < Date.now()) {
        throw new SonicError('INVALID_REQUEST', `the task expired at ${request.expires_at.toISOString()}`);
      }
      return withScratch(rec.taskId, 'validate', async (dir) => {
        const audioPath = await fetchTo(deps.blob, request.audio, dir, 'audio');
        const imagePath = await fetchTo(deps.blob, request.image, dir, 'image');
        const audioKind = sniff(await head(audioPath));
        if (audioKind?.kind !== 'audio') {
          throw new SonicError('UNSUPPORTED_AUDIO_FORMAT', `the audio is ${audioKind ? `a ${audioKind.format} image` : 'not a recognised format'}; send wav, mp3, m4a/aac, flac or ogg`);
        }
        const imageKind = sniff(await head(imagePath));
        if (imageKind?.kind !== 'image') {
          throw new SonicError('UNSUPPORTED_IMAGE_FORMAT', `the image is ${imageKind ? `${imageKind.format} audio` : 'not a recognised format'}; send jpeg, png or webp`);
        }
        const maxS = audioLimit(request, deps.config.maxAudioSeconds);
        // with truncate_audio, longer audio is cut at maxS by preprocess instead of refused
        const audio = await checkAudio(audioPath, { minS: 1, maxS: request.truncate_audio ? Number.POSITIVE_INFINITY : maxS });
        const image = await checkImage(imagePath, { minShort: 256, maxShort: 4096 });
        ctx.signal.throwIfAborted();
        const out: TaskValidated = {
          task_id: rec.taskId,
          request,
          audio_probe: {
            format: audioKind.format,
            codec: audio.audio?.codec ?? 'unknown',
            duration_s: Math.min(audio.durationS, request.truncate_audio ? maxS : audio.durationS),
            sample_rate: audio.audio?.sampleRate ?? 0,
            channels: audio.audio?.channels ?? 0,
          },
          image_probe: { format: imageKind.format, width: image.width, height: image.height },
          validated_at: ctx.now(),
        };
        return { emit: [{ sink: 'validated', value: out }] };
      });
    },
  });
}
