/**
 * infer: renders the talking head with the configured backend — builtin (CPU preview, not
 * lip-sync), command (Sonic's CLI or any script), cog (a Cog model server) or worker (one
 * long-lived Sonic runner per process, weights loaded once) — from
 * preprocess's outputs (the speech already cut at the task's limit), each under the inference
 * time budget. One task per GPU: the topology runs it with concurrency 1 and one record per
 * transaction.
 */
import { join } from 'node:path';
import { taskKey } from '../blob/store.js';
import { mediaDeadlineMs } from '../media/bounds.js';
import { probe } from '../media/probe.js';
import { BuiltinBackend } from './backends/builtin.js';
import { CogBackend } from './backends/cog.js';
import { CommandBackend } from './backends/command.js';
import type { InferBackend } from './backends/types.js';
import { WorkerBackend } from './backends/worker.js';
import { TOPICS } from './topics.js';
import { fetchTo, taskStage, mediaRef, withScratch, type StageDeps } from './common.js';
import type { Point, TaskPrepared, TaskRendered } from '../domain/records.js';
import type { FaceShape } from '../media/render.js';

/** The backend chosen by SONIC_INFER_BACKEND. */
export function createBackend(deps: StageDeps): InferBackend {
  const c = deps.config;
  const timeouts = { timeoutBaseS: c.inferTimeoutBaseS, timeoutPerAudioS: c.inferTimeoutPerAudioS };
  if (c.inferBackend === 'command') return new CommandBackend(c.inferCommand, { cwd: c.inferCwd, ...timeouts });
  if (c.inferBackend === 'cog') return new CogBackend(c.cogUrl, { ...timeouts, mode: c.cogMode });
  if (c.inferBackend === 'worker') {
    return new WorkerBackend({
      ...timeouts,
      python: c.workerPython,
      runner: c.workerRunner,
      sonicDir: c.workerSonicDir,
      device: c.workerDevice,
      interpolate: c.workerInterpolate,
      loadTimeoutMs: c.workerLoadTimeoutS * 1000,
      scratchRoot: c.scratchDir,
      logger: deps.logger.child({ stage: 'infer', backend: 'worker' }),
    });
  }
  return new BuiltinBackend({ ...timeouts, maxPixels: c.maxImagePixels });
}

/** The infer stage, declared once: the topology composes it by this name. */
export const infer = taskStage({
  name: 'infer',
  doc: 'Renders the talking head (builtin preview, Sonic CLI, a Cog server, or a long-lived Sonic runner); one task per GPU.',
  state: 'INFERRING',
  input: TOPICS.dispatched,
  sinks: { rendered: TOPICS.rendered, failed: TOPICS.completed },
  concurrency: 1,
  // a GPU worker killed mid-render (SIGKILL, a lost node): its partitions, and the render it held,
  // go to another worker after 6 s, not 30 (heartbeats go on while it renders, so a long render is fine)
  sessionTimeoutMs: 6000,
  retry: { delaysMs: [10_000, 60_000, 300_000], maxAttempts: 3 },
  batch: { maxRecords: 1, maxWaitMs: 0 },
  scaling: { maxReplicas: 8, lagThreshold: 2, targetDrainSeconds: 600 },
  // the model, its weights and decoded frames, on one GPU
  resources: { requests: { cpu: '2', memory: '8Gi' }, limits: { cpu: '8', memory: '16Gi' }, gpus: 1 },
  create: (deps) => {
    const backend = createBackend(deps);
    return {
      reportStart: true,
      close: async () => backend.close?.(),
      async handle(rec, ctx) {
        const v = rec.value;
        const started = Date.now();
        return withScratch(rec.key, 'infer', async (dir) => {
          const output = join(dir, 'rendered.mp4');
          const result = await backend.render({
            taskId: rec.key,
            attempt: rec.attempt,
            imagePng: await fetchTo(deps.blob, v.image_png, dir, 'image.png'),
            audio16k: await fetchTo(deps.blob, v.audio_16k, dir, 'audio16k.wav'),
            audioOriginal: await fetchTo(deps.blob, v.audio_original, dir, 'speech.flac'),
            durationS: v.audio_duration_s,
            // preprocess already made Sonic's crop: a backend that crops again would crop the crop
            params: v.face?.crop ? { ...v.request.params, crop_to_face: false } : v.request.params,
            ...faceInImage(v),
            outputPath: output,
            workDir: dir,
            signal: ctx.signal,
            onProgress: (f) => ctx.progress(f),
          });
          const video = await probe(output, {
            onError: 'INFERENCE_FAILED',
            signal: ctx.signal,
            timeoutMs: mediaDeadlineMs(deps.config),
            maxPixels: deps.config.maxImagePixels,
          });
          const stored = await deps.blob.put(taskKey(rec.key, 'infer', 'rendered.mp4'), output, { contentType: 'video/mp4' });
          const out: TaskRendered = {
            task_id: rec.key,
            request: v.request,
            video: mediaRef(stored),
            audio_original: v.audio_original,
            audio_duration_s: v.audio_duration_s,
            backend: backend.name,
            seed: result.seed,
            frames: video.video?.frames ?? Math.round((video.video?.fps ?? 25) * video.durationS),
            fps: video.video?.fps ?? v.request.params.fps,
            infer_ms: Date.now() - started,
            rendered_at: ctx.now(),
          };
          return { emit: [{ sink: 'rendered', value: out }] };
        });
      },
    };
  },
});

/**
 * The landmarks of a prepared task in pixels of its model PNG: they are recorded in pixels of the
 * uploaded picture, and the PNG is Sonic's crop of it (resized), or the whole picture (scaled).
 */
export function faceInImage(v: TaskPrepared): { face?: FaceShape } {
  if (!v.face || !v.landmarks) return {};
  const region = v.face.crop ?? { x: 0, y: 0, width: v.face.picture_width, height: v.face.picture_height };
  const sx = v.width / region.width;
  const sy = v.height / region.height;
  const map = (p: Point): Point => ({ x: (p.x - region.x) * sx, y: (p.y - region.y) * sy });
  const l = v.landmarks;
  return {
    face: {
      face_oval: l.face_oval.map(map),
      lips_outer: l.lips_outer.map(map),
      lips_inner: l.lips_inner.map(map),
      nose_tip: map(l.nose_tip),
      chin: map(l.chin),
    },
  };
}
