/**
 * Maps what Sonic (or any model process) says when it fails to our error codes, for the command
 * and Cog backends alike. See docs/inference.md for the table.
 */
import { SonicError } from '../../core/errors.js';

const RULES: { pattern: RegExp; code: 'GPU_OOM' | 'CUDA_ERROR' | 'NO_FACE_DETECTED' }[] = [
  { pattern: /OutOfMemoryError|CUDA out of memory|out of memory|Allocation on device|Invalid buffer size/i, code: 'GPU_OOM' },
  { pattern: /CUDA error|cudaError|device-side assert|illegal memory access|NCCL error/i, code: 'CUDA_ERROR' },
  { pattern: /bbox_s|no face|face not found|face_num|NO_FACE/i, code: 'NO_FACE_DETECTED' },
];

/** The error for a failed inference, from its log text (stderr or Cog's error and logs). */
export function classifyModelFailure(text: string, context: string): SonicError {
  const tail = text.trim().split('\n').slice(-5).join('\n').slice(-800);
  for (const r of RULES) {
    if (r.pattern.test(text)) return new SonicError(r.code, `${context}: ${tail}`, { details: { backend_log_tail: tail } });
  }
  return new SonicError('INFERENCE_FAILED', `${context}: ${tail || 'no output'}`, { details: { backend_log_tail: tail } });
}

/** The last percentage in a chunk of progress output (tqdm prints "37%|###   |"), as 0..1. */
export function lastPercent(text: string): number | undefined {
  const all = [...text.matchAll(/(\d{1,3})%/g)];
  const last = all[all.length - 1];
  if (!last) return undefined;
  const n = Number(last[1]);
  return n >= 0 && n <= 100 ? n / 100 : undefined;
}
