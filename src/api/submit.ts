/**
 * Task submission: checks a request without touching Kafka (sizes, content sniffed from the
 * bytes, parameter ranges, required fields), stores the media, and writes the task request plus
 * its QUEUED status. Anything wrong is a SonicError with a code the API maps to a 4xx.
 */
import { createHash } from 'node:crypto';
import { SonicError } from '../core/errors.js';
import type { BlobRef, BlobStore } from '../blob/store.js';
import { taskKey } from '../blob/store.js';
import { sniff } from '../media/sniff.js';
import { PARAM_DEFAULTS, checkParams, checkRequestFields, type SonicParams } from '../stages/params.js';
import type { MediaRef, TaskRequest } from '../stages/records.js';

export interface SubmitFields {
  params: Partial<Record<keyof SonicParams, unknown>>;
  max_duration_s?: unknown;
  truncate_audio?: unknown;
  callback_url?: unknown;
  callback_secret_ref?: unknown;
  priority?: unknown;
  metadata?: unknown;
}

export interface Limits {
  maxAudioBytes: number;
  maxImageBytes: number;
  maxAudioSeconds: number;
}

const NAMESPACE = 'sonicflow-idempotency-v1';

/** A task id derived from tenant and Idempotency-Key (UUID v5 style), so a retried submit maps to the same task. */
export function idempotentTaskId(tenant: string, key: string): string {
  const h = createHash('sha1').update(NAMESPACE).update('\u0000').update(tenant).update('\u0000').update(key).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function num(field: string, v: unknown, fallback: number): number {
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'number' ? v : Number(v);
  if (typeof v === 'boolean' || !Number.isFinite(n)) throw new SonicError('INVALID_REQUEST', `${field} must be a number, got ${JSON.stringify(v)}`, { details: { field } });
  return n;
}

function bool(field: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined || v === null || v === '') return fallback;
  if (v === true || v === 'true' || v === '1') return true;
  if (v === false || v === 'false' || v === '0') return false;
  throw new SonicError('INVALID_REQUEST', `${field} must be true or false, got ${JSON.stringify(v)}`, { details: { field } });
}

function str(field: string, v: unknown): string | null {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'string') throw new SonicError('INVALID_REQUEST', `${field} must be a string`, { details: { field } });
  return v;
}

/** Sonic parameters from form fields or JSON, defaults applied; throws on wrong types or ranges. */
export function parseParams(p: SubmitFields['params']): SonicParams {
  const seed = p.seed === undefined || p.seed === null || p.seed === '' ? null : num('seed', p.seed, 0);
  const params: SonicParams = {
    min_resolution: num('min_resolution', p.min_resolution, PARAM_DEFAULTS.min_resolution),
    expand_ratio: num('expand_ratio', p.expand_ratio, PARAM_DEFAULTS.expand_ratio),
    inference_steps: num('inference_steps', p.inference_steps, PARAM_DEFAULTS.inference_steps),
    dynamic_scale: num('dynamic_scale', p.dynamic_scale, PARAM_DEFAULTS.dynamic_scale),
    motion_scale: num('motion_scale', p.motion_scale, PARAM_DEFAULTS.motion_scale),
    seed,
    fps: num('fps', p.fps, PARAM_DEFAULTS.fps),
    crop_to_face: bool('crop_to_face', p.crop_to_face, PARAM_DEFAULTS.crop_to_face),
  };
  checkParams(params);
  return params;
}

/** Checks an uploaded file's size and sniffed type; returns its content type. */
export function checkUpload(kind: 'audio' | 'image', data: Buffer, limits: Limits): string {
  const max = kind === 'audio' ? limits.maxAudioBytes : limits.maxImageBytes;
  if (data.length > max) throw new SonicError('PAYLOAD_TOO_LARGE', `${kind} is ${data.length} bytes; at most ${max}`, { details: { field: kind } });
  if (data.length === 0) throw new SonicError('INVALID_REQUEST', `${kind} is empty`, { details: { field: kind } });
  const found = sniff(data.subarray(0, 64));
  if (found?.kind !== kind) {
    const code = kind === 'audio' ? 'UNSUPPORTED_AUDIO_FORMAT' : 'UNSUPPORTED_IMAGE_FORMAT';
    const accepted = kind === 'audio' ? 'wav, mp3, m4a/aac, flac or ogg' : 'jpeg, png or webp';
    throw new SonicError(code, `the ${kind} file is ${found ? `${found.format} (${found.kind})` : 'not a recognised format'}; send ${accepted} (the type is read from the bytes, not the name)`, {
      details: { field: kind },
    });
  }
  return found.contentType;
}

/** Builds and checks the TaskRequest. */
export function buildRequest(a: {
  taskId: string;
  tenant: string;
  idempotencyKey: string | null;
  image: MediaRef;
  audio: MediaRef;
  fields: SubmitFields;
  limits: Limits;
  traceparent: string | null;
  now: Date;
}): TaskRequest {
  const f = a.fields;
  const metadata = parseMetadata(f.metadata);
  const callbackUrl = str('callback_url', f.callback_url);
  const request: TaskRequest = {
    schema_version: 1,
    task_id: a.taskId,
    tenant_id: a.tenant,
    idempotency_key: a.idempotencyKey,
    created_at: a.now,
    expires_at: null,
    image: a.image,
    audio: a.audio,
    max_duration_s: num('max_duration_s', f.max_duration_s, a.limits.maxAudioSeconds),
    truncate_audio: bool('truncate_audio', f.truncate_audio, false),
    params: parseParams(f.params),
    callback: callbackUrl ? { url: callbackUrl, secret_ref: str('callback_secret_ref', f.callback_secret_ref) } : null,
    priority: num('priority', f.priority, 0),
    metadata,
    traceparent: a.traceparent,
  };
  checkRequestFields(request);
  if (request.max_duration_s > a.limits.maxAudioSeconds) {
    throw new SonicError('PARAMS_OUT_OF_RANGE', `max_duration_s must be at most ${a.limits.maxAudioSeconds} on this deployment; got ${request.max_duration_s}`, {
      details: { field: 'max_duration_s' },
    });
  }
  return request;
}

function parseMetadata(v: unknown): Record<string, string> {
  if (v === undefined || v === null || v === '') return {};
  let m = v;
  if (typeof v === 'string') {
    try {
      m = JSON.parse(v);
    } catch {
      throw new SonicError('INVALID_REQUEST', 'metadata must be a JSON object of strings', { details: { field: 'metadata' } });
    }
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m) || Object.values(m).some((x) => typeof x !== 'string')) {
    throw new SonicError('INVALID_REQUEST', 'metadata must be an object of string values', { details: { field: 'metadata' } });
  }
  return m as Record<string, string>;
}

/** Stores an upload under the task's input folder (same key on a retried submit). */
export async function storeUpload(blob: BlobStore, taskId: string, kind: 'audio' | 'image', data: Buffer, contentType: string): Promise<MediaRef> {
  const ref: BlobRef = await blob.put(taskKey(taskId, 'input', kind), data, { contentType });
  return { uri: ref.uri, content_type: ref.content_type, size_bytes: ref.size_bytes, sha256: ref.sha256 };
}

/** Resolves a JSON reference to a blob already in the store: it must exist and respect the size limit. */
export async function referencedBlob(blob: BlobStore, kind: 'audio' | 'image', v: unknown, limits: Limits): Promise<MediaRef> {
  const uri = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as { uri?: unknown }).uri : undefined;
  if (typeof uri !== 'string' || uri === '') throw new SonicError('INVALID_REQUEST', `${kind} is required: a file upload, or {"uri": "..."} of a stored blob`, { details: { field: kind } });
  let key: string;
  try {
    key = blob.keyFromUri(uri);
  } catch {
    throw new SonicError('INPUT_NOT_FOUND', `${kind}.uri ${uri} is not a blob of this store`, { details: { field: kind } });
  }
  const st = await blob.stat(key);
  if (!st) throw new SonicError('INPUT_NOT_FOUND', `${kind} ${uri} does not exist`, { details: { field: kind } });
  const max = kind === 'audio' ? limits.maxAudioBytes : limits.maxImageBytes;
  if (st.size_bytes > max) throw new SonicError('PAYLOAD_TOO_LARGE', `${kind} is ${st.size_bytes} bytes; at most ${max}`, { details: { field: kind } });
  return { uri, content_type: st.content_type ?? null, size_bytes: st.size_bytes, sha256: st.sha256 ?? null };
}
