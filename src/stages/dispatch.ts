/**
 * dispatch: holds the backlog of prepared tasks and hands each to an infer worker (a GPU) when
 * that worker is free, instead of letting partition ownership decide who renders what (see
 * src/runtime/dispatcher.ts and docs/architecture.md, "How work reaches a GPU"). Waiting tasks go
 * in order of their request's priority (0–9, raised by waiting: SONIC_DISPATCH_AGING_MS), then the
 * longest estimated render first.
 */
import type { TaskPrepared } from '../domain/records.js';
import { defineDispatch } from '../runtime/stage.js';
import { TOPICS } from './topics.js';

/**
 * GPU-seconds per second of output at Sonic's defaults (512 px, 25 steps): the middle of the
 * 18–45 measured on 24–32 GB cards. What the dispatcher orders by and the autoscaler sums is
 * this estimate; its scale matters only for the autoscaler, which compares it with each stage's
 * targetDrainSeconds.
 */
export const GPU_SECONDS_PER_AUDIO_SECOND = 30;
/** Loading the inputs, face detection and the VAE decode: paid by every task, however short. */
const FIXED_GPU_SECONDS = 5;

/**
 * A task's estimated render time, GPU-seconds: frames grow with the audio, the diffusion's work
 * with the steps and with the pixels of a frame (the square of `min_resolution`).
 */
export function estimatedGpuSeconds(v: Pick<TaskPrepared, 'audio_duration_s' | 'request'>): number {
  const p = v.request.params;
  const steps = Number.isFinite(p.inference_steps) && p.inference_steps > 0 ? p.inference_steps / 25 : 1;
  const pixels = Number.isFinite(p.min_resolution) && p.min_resolution > 0 ? (p.min_resolution / 512) ** 2 : 1;
  const seconds = Number.isFinite(v.audio_duration_s) && v.audio_duration_s > 0 ? v.audio_duration_s : 0;
  return FIXED_GPU_SECONDS + seconds * GPU_SECONDS_PER_AUDIO_SECOND * steps * pixels;
}

/** The dispatch stage, declared once: the topology composes it by this name, between preprocess and infer. */
export const dispatch = defineDispatch({
  name: 'dispatch',
  doc: 'Holds the backlog of prepared tasks; each goes to an infer worker when one is free (priority, then longest first).',
  input: TOPICS.prepared,
  sinks: { workers: TOPICS.dispatched },
  dispatch: {
    workers: 'infer',
    cost: estimatedGpuSeconds,
    priority: (v) => v.request.priority,
  },
  // a few records of bytes each: the backlog is in its store, not in memory only
  resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } },
});
