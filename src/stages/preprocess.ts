/**
 * preprocess: the speech cut at the task's limit (16-bit FLAC, `speech.flac`: what infer and
 * encode use instead of the upload, with its measured duration), the model's 16 kHz mono PCM
 * WAV made from it, and the portrait as an orientation-corrected, bounded RGB PNG. Outputs are
 * stored under `tasks/<id>/preprocess/`, so a redone stage overwrites its own objects.
 *
 * With `truncate_audio`, audio longer than the limit is cut there; without it, decoding still
 * stops at the limit, and audio that reaches it although its header announced less (a lying
 * header, a decompression bomb) is refused as AUDIO_TOO_LONG. Every tool run has a deadline.
 *
 * The portrait's face is found here, on the CPU, before any GPU is held (see src/media/face.ts):
 * first, so that no usable face fails the task at once, before the audio is converted
 * (NO_FACE_DETECTED, MULTIPLE_FACES, FACE_TOO_SMALL, rules
 * in src/media/face-crop.ts). With `crop_to_face` the model PNG is Sonic's square crop around the
 * face, resized to min_resolution; the face, its crop and its landmarks travel in tasks.prepared,
 * and the face and crop in the task's status.
 */
import { join } from 'node:path';
import { taskKey } from '../blob/store.js';
import { SonicError } from '../core/errors.js';
import { checkDuration, toModelWav, toSpeechFlac } from '../media/audio.js';
import { mediaDeadlineMs } from '../media/bounds.js';
import { FaceDetector, type DetectedFace, type FaceScan } from '../media/face.js';
import { chooseFace, modelSize, sonicCrop } from '../media/face-crop.js';
import { toModelPng } from '../media/image.js';
import { TOPICS } from './topics.js';
import { fetchTo, taskStage, mediaRef, withScratch } from './common.js';
import type { FaceLandmarks, FaceRegion, SonicParams, TaskPrepared } from '../domain/records.js';
import { audioLimit } from './validate.js';

/** How much shorter than the limit a header may claim before audio reaching the limit counts as a lie, s. */
const HEADER_SLACK_S = 0.5;

/** The preprocess stage, declared once: the topology composes it by this name. */
export const preprocess = taskStage({
  name: 'preprocess',
  doc: "Converts audio to 16 kHz mono PCM, finds the portrait's face and crops the portrait around it as Sonic does (a bounded RGB PNG).",
  state: 'PREPROCESSING',
  input: TOPICS.validated,
  sinks: { prepared: TOPICS.prepared, failed: TOPICS.completed },
  concurrency: 4,
  scaling: { maxReplicas: 4, lagThreshold: 50, targetDrainSeconds: 60 },
  // ffmpeg resampling and image conversion, and the face detector (about 220 MB resident with its
  // model loaded; docs/performance.md, bench/face.ts)
  resources: { requests: { cpu: '500m', memory: '512Mi' }, limits: { cpu: '2', memory: '1Gi' } },
  create: (deps) => {
    const c = deps.config;
    // load the detector now, not with the first task; a failure surfaces (and stops the stage) there
    FaceDetector.shared().catch(() => undefined);
    return {
      async handle(rec, ctx) {
        const v = rec.value;
        const maxS = audioLimit(v.request, c.maxAudioSeconds);
        return withScratch(rec.key, 'preprocess', async (dir) => {
          // the face first: a portrait without a usable one fails before the audio is converted
          const imageIn = await fetchTo(deps.blob, v.request.image, dir, 'image');
          const detector = await FaceDetector.shared();
          const scan = await detector.detect(imageIn, { signal: ctx.signal, timeoutMs: mediaDeadlineMs(c), maxPixels: c.maxImagePixels });
          ctx.logger.debug({ faces: scan.faces.length, detect_ms: Math.round(scan.detectMs) }, 'faces detected');
          const face = chooseFace(scan, v.request.params.min_resolution);
          const region = faceRegion(scan, face, v.request.params);
          const audioIn = await fetchTo(deps.blob, v.request.audio, dir, 'audio');
          const flac = join(dir, 'speech.flac');
          const wav = join(dir, 'audio16k.wav');
          const png = join(dir, 'image.png');
          const { durationS } = await toSpeechFlac(audioIn, flac, { maxS, signal: ctx.signal, timeoutMs: mediaDeadlineMs(c, maxS) });
          if (!v.request.truncate_audio && durationS >= maxS - 0.001 && v.audio_probe.duration_s < maxS - HEADER_SLACK_S) {
            throw new SonicError(
              'AUDIO_TOO_LONG',
              `the audio decodes to more than ${maxS} s although its header says ${v.audio_probe.duration_s.toFixed(2)} s`,
              {
                safe: `the audio is longer than ${maxS} s (its header claims ${v.audio_probe.duration_s.toFixed(2)} s); at most ${maxS} s is allowed`,
                details: { field: 'audio', maxS },
              },
            );
          }
          checkDuration(durationS, 1, maxS);
          await toModelWav(flac, wav, { maxS, signal: ctx.signal, timeoutMs: mediaDeadlineMs(c, durationS) });
          const crop = region.crop ?? undefined;
          const image = await toModelPng(imageIn, png, {
            maxSide: 2048,
            maxPixels: c.maxImagePixels,
            signal: ctx.signal,
            timeoutMs: mediaDeadlineMs(c),
            ...(crop ? { crop, size: modelSize(crop.width, crop.height, v.request.params.min_resolution) } : {}),
          });
          const speech = await deps.blob.put(taskKey(rec.key, 'preprocess', 'speech.flac'), flac, { contentType: 'audio/flac' });
          const audio16k = await deps.blob.put(taskKey(rec.key, 'preprocess', 'audio16k.wav'), wav, { contentType: 'audio/wav' });
          const imagePng = await deps.blob.put(taskKey(rec.key, 'preprocess', 'image.png'), png, { contentType: 'image/png' });
          const out: TaskPrepared = {
            task_id: rec.key,
            request: v.request,
            audio_16k: mediaRef(audio16k),
            audio_original: mediaRef(speech),
            image_png: mediaRef(imagePng),
            audio_duration_s: durationS,
            width: image.width,
            height: image.height,
            prepared_at: ctx.now(),
            face: region,
            landmarks: landmarksOf(face),
          };
          return { emit: [{ sink: 'prepared', value: out }], status: { face: region } };
        });
      },
    };
  },
});

/** What detected the faces, as recorded with them. */
const DETECTOR = 'BlazeFace + FaceMesh (@vladmandic/human, TensorFlow.js WebAssembly)';

/** The chosen face and, with `crop_to_face`, Sonic's crop around it, as recorded in tasks.prepared and the status. */
function faceRegion(scan: FaceScan, face: DetectedFace, params: SonicParams): FaceRegion {
  const r = (n: number): number => Math.round(n * 10) / 10;
  return {
    box: { x: r(face.box.x), y: r(face.box.y), width: r(face.box.width), height: r(face.box.height) },
    score: face.score,
    faces: scan.faces.length,
    crop: params.crop_to_face ? sonicCrop(face.box, params.expand_ratio, scan.width, scan.height) : null,
    picture_width: scan.width,
    picture_height: scan.height,
    detector: DETECTOR,
  };
}

function landmarksOf(face: DetectedFace): FaceLandmarks {
  return face.landmarks;
}
