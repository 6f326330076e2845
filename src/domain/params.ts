/**
 * The checks of a task request that need no media: Sonic parameter ranges, limits, callback,
 * metadata. Shared by the API (answers 4xx before anything is enqueued) and the validate stage
 * (so that a request written by another producer is held to the same rules).
 */
import { SonicError } from '../core/errors.js';
import type { SonicParams } from './records.gen.js';

export type { SonicParams } from './records.gen.js';

interface Range {
  min: number;
  max: number;
  integer?: boolean;
  step?: number;
}

/** Accepted ranges (Sonic's own and its Replicate/ComfyUI wrappers'); see docs/api.md. */
export const PARAM_RANGES: Record<Exclude<keyof SonicParams, 'seed' | 'crop_to_face'>, Range> & { seed: Range } = {
  min_resolution: { min: 256, max: 1024, integer: true, step: 64 },
  expand_ratio: { min: 0.1, max: 1.0 },
  inference_steps: { min: 1, max: 100, integer: true },
  dynamic_scale: { min: 0.5, max: 2.0 },
  motion_scale: { min: 0.5, max: 2.0 },
  seed: { min: 0, max: 2 ** 31 - 1, integer: true },
  // Sonic generates 12.5 fps and interpolates to 25; other rates would break lip sync
  fps: { min: 25, max: 25, integer: true },
};

export const PARAM_DEFAULTS: SonicParams = {
  min_resolution: 512,
  expand_ratio: 0.5,
  inference_steps: 25,
  dynamic_scale: 1.0,
  motion_scale: 1.0,
  seed: null,
  fps: 25,
  crop_to_face: true,
};

export const HARD_MAX_AUDIO_S = 400;
const IDEMPOTENCY_KEY = /^[A-Za-z0-9_:.-]{1,255}$/;

function outOfRange(field: string, value: unknown, r: Range): SonicError {
  const step = r.step ? `, a multiple of ${r.step}` : '';
  const kind = r.integer ? 'an integer' : 'a number';
  return new SonicError('PARAMS_OUT_OF_RANGE', `${field} must be ${kind} from ${r.min} to ${r.max}${step}; got ${JSON.stringify(value)}`, {
    safe: true,
    details: { field, value, min: r.min, max: r.max, ...(r.step ? { step: r.step } : {}) },
  });
}

function checkRange(field: string, value: unknown, r: Range): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < r.min || value > r.max) throw outOfRange(field, value, r);
  if (r.integer && !Number.isInteger(value)) throw outOfRange(field, value, r);
  if (r.step && value % r.step !== 0) throw outOfRange(field, value, r);
}

/** Throws PARAMS_OUT_OF_RANGE naming the first parameter outside its range. */
export function checkParams(p: SonicParams): void {
  for (const [field, range] of Object.entries(PARAM_RANGES)) {
    const value = p[field as keyof SonicParams];
    if (field === 'seed' && value === null) continue;
    checkRange(field, value, range);
  }
}

export interface RequestLimits {
  max_duration_s: number;
  priority: number;
  metadata: Record<string, string>;
  callback: { url: string } | null;
  idempotency_key: string | null;
}

/** Throws IDEMPOTENCY_KEY_INVALID unless `key` is 1-255 characters of [A-Za-z0-9_:.-]. */
export function checkIdempotencyKey(key: string): void {
  if (!IDEMPOTENCY_KEY.test(key)) {
    throw new SonicError('IDEMPOTENCY_KEY_INVALID', 'Idempotency-Key must be 1-255 characters of [A-Za-z0-9_:.-]', {
      safe: true,
      details: { field: 'idempotency_key' },
    });
  }
}

/** Throws PARAMS_OUT_OF_RANGE / INVALID_REQUEST for request fields outside their rules. */
export function checkRequestFields(r: RequestLimits): void {
  checkRange('max_duration_s', r.max_duration_s, { min: 1, max: HARD_MAX_AUDIO_S });
  checkRange('priority', r.priority, { min: 0, max: 9, integer: true });
  const entries = Object.entries(r.metadata);
  if (entries.length > 16)
    throw new SonicError('PARAMS_OUT_OF_RANGE', `metadata has ${entries.length} entries; at most 16`, { safe: true, details: { field: 'metadata' } });
  for (const [k, v] of entries) {
    if (k.length > 256 || v.length > 256)
      throw new SonicError('PARAMS_OUT_OF_RANGE', `metadata entry "${k.slice(0, 40)}" is longer than 256 characters`, {
        safe: true,
        details: { field: 'metadata' },
      });
  }
  if (r.callback) {
    if (r.callback.url.length > 2048)
      throw new SonicError('INVALID_REQUEST', 'callback.url is longer than 2048 characters', { safe: true, details: { field: 'callback_url' } });
    let u: URL;
    try {
      u = new URL(r.callback.url);
    } catch {
      throw new SonicError('INVALID_REQUEST', `callback.url is not a URL: ${JSON.stringify(r.callback.url)}`, {
        safe: true,
        details: { field: 'callback_url' },
      });
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      throw new SonicError('INVALID_REQUEST', `callback.url must be http(s), got ${u.protocol}`, { safe: true, details: { field: 'callback_url' } });
    }
  }
  if (r.idempotency_key !== null) checkIdempotencyKey(r.idempotency_key);
}
