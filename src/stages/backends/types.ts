/** The inference backend interface of the `infer` stage. */
import type { SonicParams } from '../../domain/params.js';
import type { FaceShape } from '../../media/render.js';

export interface InferInput {
  taskId: string;
  attempt: number;
  /** Local paths: the model PNG, the 16 kHz mono WAV, and the speech cut at the task's limit (FLAC); both audio files last `durationS`. */
  imagePng: string;
  audio16k: string;
  audioOriginal: string;
  /** Seconds of speech (after preprocess's cut); the video must last as long, and the time budget follows it. */
  durationS: number;
  params: SonicParams;
  /** The face's landmarks in pixels of `imagePng`, when preprocess found them (the builtin preview animates them). */
  face?: FaceShape;
  /** Where the backend must leave the rendered video (with or without audio: encode re-muxes). */
  outputPath: string;
  workDir: string;
  signal: AbortSignal;
  onProgress(fraction: number): void;
}

export interface InferOutput {
  /** Seed actually used, when the backend reports one. */
  seed: number | null;
}

export interface InferBackend {
  readonly name: 'builtin' | 'command' | 'cog' | 'worker';
  render(input: InferInput): Promise<InferOutput>;
  /** Releases what the backend holds (the `worker` backend's runner process) when the stage stops. */
  close?(): Promise<void>;
}

/** Time budget of one inference, for every backend: a base plus a per-second-of-audio allowance, ms. */
export function inferenceBudgetMs(durationS: number, baseS: number, perAudioS: number): number {
  return Math.round((baseS + perAudioS * durationS) * 1000);
}
