/**
 * The builtin backend: a CPU preview renderer that moves the portrait's jaw and lips where
 * preprocess found them, with the audio's loudness and brightness (a still frame in silence),
 * and the head slightly while the voice goes on. It is a preview, not Sonic; it lets the whole
 * pipeline run anywhere. Point the `command`, `cog` or `worker` backend at Sonic for real output.
 *
 * Like the other backends it runs under the inference time budget (base + per audio second):
 * past it every tool it started is killed and the task fails with INFERENCE_TIMEOUT. It renders
 * from preprocess's 16 kHz cut of the speech, so its video lasts exactly as long as the speech
 * encode muxes.
 */
import { SonicError } from '../../core/errors.js';
import { renderPreview } from '../../media/render.js';
import { inferenceBudgetMs, type InferBackend, type InferInput, type InferOutput } from './types.js';

/** Options of {@link BuiltinBackend}. */
export interface BuiltinOptions {
  /** Time budget: this many seconds ... */
  timeoutBaseS: number;
  /** ... plus this many per second of audio. */
  timeoutPerAudioS: number;
  /** The decoder refuses a portrait of more pixels; the renderer's default otherwise. */
  maxPixels?: number;
}

export class BuiltinBackend implements InferBackend {
  readonly name = 'builtin' as const;

  constructor(private readonly opts: BuiltinOptions = { timeoutBaseS: 120, timeoutPerAudioS: 60 }) {}

  async render(i: InferInput): Promise<InferOutput> {
    const budgetMs = inferenceBudgetMs(i.durationS, this.opts.timeoutBaseS, this.opts.timeoutPerAudioS);
    const budget = new AbortController();
    const timer = setTimeout(() => {
      const s = Math.round(budgetMs / 1000);
      budget.abort(
        new SonicError('INFERENCE_TIMEOUT', `the preview renderer took longer than its budget of ${s} s for ${i.durationS.toFixed(1)} s of audio`, {
          safe: true,
        }),
      );
    }, budgetMs);
    try {
      await renderPreview({
        image: i.imagePng,
        audio: i.audio16k,
        output: i.outputPath,
        size: i.params.min_resolution,
        fps: i.params.fps,
        motionScale: i.params.motion_scale * i.params.dynamic_scale,
        signal: AbortSignal.any([i.signal, budget.signal]),
        onProgress: i.onProgress,
        timeoutMs: budgetMs,
        ...(i.face ? { face: i.face } : {}),
        ...(this.opts.maxPixels === undefined ? {} : { maxPixels: this.opts.maxPixels }),
      });
    } finally {
      clearTimeout(timer);
    }
    return { seed: null };
  }
}
