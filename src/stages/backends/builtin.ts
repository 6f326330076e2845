/**
 * The builtin backend: a CPU preview renderer that animates the portrait with the audio's
 * loudness (motion while speech is loud, a still frame in silence). It is not lip-sync; it lets
 * the whole pipeline run anywhere. Point the `command` or `cog` backend at Sonic for real output.
 */
import { renderPreview } from '../../media/render.js';
import type { InferBackend, InferInput, InferOutput } from './types.js';

export class BuiltinBackend implements InferBackend {
  readonly name = 'builtin' as const;

  async render(i: InferInput): Promise<InferOutput> {
    await renderPreview({
      image: i.imagePng,
      audio: i.audioOriginal,
      output: i.outputPath,
      size: i.params.min_resolution,
      fps: i.params.fps,
      motionScale: i.params.motion_scale * i.params.dynamic_scale,
      signal: i.signal,
      onProgress: i.onProgress,
    });
    return { seed: null };
  }
}
