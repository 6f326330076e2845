/**
 * publish: puts the MP4 at its public location (`videos/<task_id>.mp4` in the store, served by a
 * CDN at SONIC_PUBLIC_BASE_URL or by the API), writes the completed record and marks the task
 * SUCCEEDED. The key derives from the task id only, so a redo overwrites the same object.
 */
import { TOPICS } from './topics.js';
import { fetchTo, taskStage, mediaRef, withScratch } from './common.js';
import { publishedKey, videoUrl } from '../domain/paths.js';
import type { TaskCompleted } from '../domain/records.js';

/** The publish stage, declared once: the topology composes it by this name. */
export const publish = taskStage({
  name: 'publish',
  doc: 'Moves the MP4 to its public location and marks the task SUCCEEDED.',
  state: 'PUBLISHING',
  input: TOPICS.encoded,
  sinks: { completed: TOPICS.completed, failed: TOPICS.completed },
  concurrency: 4,
  scaling: { maxReplicas: 2, lagThreshold: 50, targetDrainSeconds: 60 },
  resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { cpu: '500m', memory: '512Mi' } },
  create: (deps) => {
    // the video links must name a reachable API: refuse at start, not at the first task
    videoUrl(deps.config, '00000000-0000-0000-0000-000000000000');
    return {
      async handle(rec, ctx) {
        const v = rec.value;
        const stored = await withScratch(rec.key, 'publish', async (dir) => {
          const local = await fetchTo(deps.blob, v.video, dir, 'video.mp4');
          return deps.blob.put(publishedKey(rec.key), local, { contentType: 'video/mp4' });
        });
        const url = videoUrl(deps.config, rec.key);
        const out: TaskCompleted = {
          task_id: rec.key,
          request: v.request,
          outcome: 'SUCCEEDED',
          video: mediaRef(stored),
          video_url: url,
          duration_s: v.duration_s,
          error: null,
          completed_at: ctx.now(),
        };
        return { emit: [{ sink: 'completed', value: out }], status: { result_url: url, progress: 1 } };
      },
    };
  },
});
