/**
 * preprocess: audio to 16 kHz mono PCM WAV for the model (the original is kept for muxing), and
 * the portrait to an orientation-corrected, bounded RGB PNG. Outputs are stored under
 * `tasks/<id>/preprocess/`, so a redone stage overwrites its own objects.
 */
import { join } from 'node:path';
import { taskKey } from '../blob/store.js';
import { toModelWav } from '../media/audio.js';
import { checkImage, toModelPng } from '../media/image.js';
import { defineStage } from '../runtime/stage.js';
import { failedOutcome, fetchTo, initScratch, mediaRef, statusOf, withScratch, type StageDeps } from './common.js';
import type { TaskPrepared, TaskValidated } from './records.js';

export function preprocessStage(deps: StageDeps) {
  initScratch(deps);
  return defineStage<TaskValidated>({
    name: 'preprocess',
    runningState: 'PREPROCESSING',
    doneState: 'INFERRING',
    statusOf,
    onFailure: (rec, error) => failedOutcome(rec, error, Date.now()),
    async handle(rec, ctx) {
      const v = rec.value;
      return withScratch(rec.taskId, 'preprocess', async (dir) => {
        const audioIn = await fetchTo(deps.blob, v.request.audio, dir, 'audio');
        const imageIn = await fetchTo(deps.blob, v.request.image, dir, 'image');
        const wav = join(dir, 'audio16k.wav');
        const png = join(dir, 'image.png');
        await toModelWav(audioIn, wav, { maxS: v.audio_probe.duration_s, signal: ctx.signal });
        await toModelPng(imageIn, png, { maxSide: 2048, signal: ctx.signal });
        const image = await checkImage(png, { minShort: 1, maxShort: 100_000 });
        const audio16k = await deps.blob.put(taskKey(rec.taskId, 'preprocess', 'audio16k.wav'), wav, { contentType: 'audio/wav' });
        const imagePng = await deps.blob.put(taskKey(rec.taskId, 'preprocess', 'image.png'), png, { contentType: 'image/png' });
        const out: TaskPrepared = {
          task_id: rec.taskId,
          request: v.request,
          audio_16k: mediaRef(audio16k),
          audio_original: v.request.audio,
          image_png: mediaRef(imagePng),
          audio_duration_s: v.audio_probe.duration_s,
          width: image.width,
          height: image.height,
          prepared_at: ctx.now(),
        };
        return { emit: [{ sink: 'prepared', value: out }] };
      });
    },
  });
}
