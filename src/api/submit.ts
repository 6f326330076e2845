/**
 * Task submission without touching Kafka: the fields of a request (parameters, limits, callback),
 * task ids for idempotent submits, and the rules for media a JSON request references (only the
 * caller's own upload area). Anything wrong is a SonicError with a code the API maps to a 4xx.
 */
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { SonicError } from '../core/errors.js';
import type { BlobStore } from '../blob/store.js';
import { PARAM_DEFAULTS, checkParams, checkRequestFields, type SonicParams } from '../domain/params.js';
import type { MediaRef, TaskRequest } from '../domain/records.js';

export interface SubmitFields {
  params: Partial<Record<keyof SonicParams, unknown>>;
  max_duration_s?: unknown;
  truncate_audio?: unknown;
  callback_url?: unknown;
  callback_secret_ref?: unknown;
  priority?: unknown;
  metadata?: unknown;
}

/** Sonic parameters a form may carry as fields of their own. */
export const PARAM_FIELDS = ['min_resolution', 'expand_ratio', 'inference_steps', 'dynamic_scale', 'motion_scale', 'seed', 'fps', 'crop_to_face'] as const;
/** The other text fields of a submit. */
export const REQUEST_FIELDS = ['max_duration_s', 'truncate_audio', 'callback_url', 'callback_secret_ref', 'priority', 'metadata'] as const;

export interface Limits {
  maxAudioBytes: number;
  maxImageBytes: number;
  maxAudioSeconds: number;
}

const NAMESPACE = 'sonicflow-idempotency-v2';

/**
 * The task id of an idempotent submit: an HMAC-SHA256 of tenant and Idempotency-Key under the
 * server secret, shaped as a UUID (version 8). A retried submit maps to the same task; without
 * the secret nobody can compute another tenant's ids.
 */
export function idempotentTaskId(secret: Buffer, tenant: string, key: string): string {
  const h = createHmac('sha256', secret).update(NAMESPACE).update('\u0000').update(tenant).update('\u0000').update(key).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The blob key prefix of a tenant's uploads: the only place a JSON submit may reference. */
export function uploadArea(tenant: string): string {
  return `uploads/${tenant}/`;
}

/** A fresh key in the tenant's upload area. */
export function newUploadKey(tenant: string): string {
  return `${uploadArea(tenant)}${randomUUID()}`;
}

function num(field: string, v: unknown, fallback: number): number {
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isFinite(n))
    throw new SonicError('INVALID_REQUEST', `${field} must be a number, got ${JSON.stringify(v).slice(0, 60)}`, { safe: true, details: { field } });
  return n;
}

function bool(field: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined || v === null || v === '') return fallback;
  if (v === true || v === 'true' || v === '1') return true;
  if (v === false || v === 'false' || v === '0') return false;
  throw new SonicError('INVALID_REQUEST', `${field} must be true or false, got ${JSON.stringify(v).slice(0, 60)}`, { safe: true, details: { field } });
}

function str(field: string, v: unknown): string | null {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'string') throw new SonicError('INVALID_REQUEST', `${field} must be a string`, { safe: true, details: { field } });
  return v;
}

/** Sonic parameters from form fields or JSON, defaults applied; throws on wrong types or ranges. */
export function parseParams(p: SubmitFields['params']): SonicParams {
  if (typeof p !== 'object' || p === null || Array.isArray(p))
    throw new SonicError('INVALID_REQUEST', 'params must be an object', { safe: true, details: { field: 'params' } });
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
    throw new SonicError(
      'PARAMS_OUT_OF_RANGE',
      `max_duration_s must be at most ${a.limits.maxAudioSeconds} on this deployment; got ${request.max_duration_s}`,
      {
        safe: true,
        details: { field: 'max_duration_s', max: a.limits.maxAudioSeconds },
      },
    );
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
      throw new SonicError('INVALID_REQUEST', 'metadata must be a JSON object of strings', { safe: true, details: { field: 'metadata' } });
    }
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m) || Object.values(m).some((x) => typeof x !== 'string')) {
    throw new SonicError('INVALID_REQUEST', 'metadata must be an object of string values', { safe: true, details: { field: 'metadata' } });
  }
  // a plain copy: no prototype tricks ride along
  return Object.fromEntries(Object.entries(m as Record<string, string>));
}

/**
 * Resolves a JSON reference to media the caller uploaded: it must name a blob of this store
 * inside the caller's own upload area (403 FORBIDDEN otherwise, whatever else it names), exist,
 * hold the right kind of media (as sniffed at upload) and respect the size limit.
 */
export async function referencedBlob(blob: BlobStore, tenant: string, kind: 'audio' | 'image', v: unknown, limits: Limits): Promise<MediaRef> {
  const field = kind;
  const uri = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as { uri?: unknown }).uri : undefined;
  if (typeof uri !== 'string' || uri === '') {
    throw new SonicError('INVALID_REQUEST', `${kind} is required: {"uri": "..."} of a file uploaded with POST /v1/uploads`, { safe: true, details: { field } });
  }
  let key: string;
  try {
    key = blob.keyFromUri(uri);
  } catch {
    throw new SonicError('FORBIDDEN', `${kind}.uri is not a file of your upload area: upload it with POST /v1/uploads and use the uri it returns`, {
      safe: true,
      details: { field },
    });
  }
  if (!key.startsWith(uploadArea(tenant))) {
    throw new SonicError('FORBIDDEN', `${kind}.uri is not a file of your upload area: upload it with POST /v1/uploads and use the uri it returns`, {
      safe: true,
      details: { field },
    });
  }
  const st = await blob.stat(key);
  if (!st) throw new SonicError('INPUT_NOT_FOUND', `${kind} ${uri.slice(0, 200)} does not exist (uploads expire)`, { safe: true, details: { field } });
  if (!st.content_type?.startsWith(`${kind}/`)) {
    const code = kind === 'audio' ? 'UNSUPPORTED_AUDIO_FORMAT' : 'UNSUPPORTED_IMAGE_FORMAT';
    throw new SonicError(code, `${kind}.uri names ${st.content_type ? `a ${st.content_type} file` : 'a file of unknown type'}, not ${kind}`, {
      safe: true,
      details: { field },
    });
  }
  const max = kind === 'audio' ? limits.maxAudioBytes : limits.maxImageBytes;
  if (st.size_bytes > max)
    throw new SonicError('PAYLOAD_TOO_LARGE', `${kind} is ${st.size_bytes} bytes; at most ${max}`, { safe: true, details: { field, maxBytes: max } });
  return { uri, content_type: st.content_type ?? null, size_bytes: st.size_bytes, sha256: st.sha256 ?? null };
}

/**
 * Claims a referenced upload (resolved by {@link referencedBlob} as `ref`) for a task: copies it
 * inside the store to `key`, one of the task's own input keys, so the task lives on when the
 * upload expires; the upload itself stays. `key` is appended to `stored` before anything is
 * written, so a failed submit removes the copy. The copy must be the file `ref` describes: a
 * copy of another size, checksum or type (the upload replaced in between) fails the submit with
 * 409 CHECKSUM_MISMATCH, which a retry resolves; an upload gone in between is INPUT_NOT_FOUND.
 * Returns the reference to the copy, with the same checksum (so the request's fingerprint is
 * the same as for the upload).
 */
export async function claimUpload(blob: BlobStore, kind: 'audio' | 'image', ref: MediaRef, key: string, stored: string[]): Promise<MediaRef> {
  const field = kind;
  const from = blob.keyFromUri(ref.uri);
  const same = (st: { size_bytes: number; sha256?: string; content_type?: string } | undefined): boolean =>
    st !== undefined && st.size_bytes === ref.size_bytes && (st.content_type ?? null) === ref.content_type && (ref.sha256 === null || st.sha256 === ref.sha256);
  const changed = () =>
    new SonicError('CHECKSUM_MISMATCH', `${kind} ${ref.uri.slice(0, 200)} changed while it was being copied for the task; submit again`, {
      safe: true,
      retryable: true,
      details: { field, key, from },
    });
  stored.push(key);
  let copy: MediaRef;
  try {
    const c = await blob.copy(from, key);
    copy = { uri: c.uri, content_type: c.content_type, size_bytes: c.size_bytes, sha256: c.sha256 };
  } catch (err) {
    const gone = () =>
      new SonicError('INPUT_NOT_FOUND', `${kind} ${ref.uri.slice(0, 200)} does not exist (uploads expire)`, { safe: true, cause: err, details: { field } });
    if ((err as SonicError).code === 'INPUT_NOT_FOUND') throw gone();
    // a copy refused because its source changed under it (S3: 412 on the ETag) says so; a store that cannot be read keeps its own error
    const now = await blob.stat(from).then(
      (st) => ({ st }),
      () => undefined,
    );
    if (now && !now.st) throw gone();
    if (now && !same(now.st)) throw changed();
    throw err;
  }
  // what was copied, as the store now describes it, must be what was checked
  if (!same(await blob.stat(key))) throw changed();
  return { uri: copy.uri, content_type: ref.content_type, size_bytes: ref.size_bytes, sha256: ref.sha256 ?? copy.sha256 };
}

/** The version prefix of fingerprints made by {@link requestFingerprint} (older ones have none). */
const FINGERPRINT_V2 = 'v2:';

/**
 * The fingerprint of a request, for an Idempotency-Key's retries: SHA-256 over its canonical form
 * (parameters with Sonic's defaults applied, limits, callback, priority, metadata by key, and each
 * medium by its SHA-256, or its uri when the store has no checksum). Whether media came as
 * uploads or as references to the same files does not change it; another value anywhere does.
 * `max_duration_s` counts as the client sent it (`sent`): its default is the deployment's limit
 * (SONIC_MAX_AUDIO_S), which an operator may change between a request and its retry.
 */
export function requestFingerprint(r: TaskRequest, sent: Pick<SubmitFields, 'max_duration_s'>): string {
  // absent however it is spelled: left out, JSON null, an empty form field (num() reads them alike)
  const absent = sent.max_duration_s === undefined || sent.max_duration_s === null || sent.max_duration_s === '';
  return FINGERPRINT_V2 + fingerprintOf(r, absent ? null : r.max_duration_s);
}

/**
 * Whether `r` (sent with `sent`) is the request whose fingerprint is `first`: one made by
 * {@link requestFingerprint}, or by the first version, which took the defaulted max_duration_s.
 */
export function sameFingerprint(first: string, r: TaskRequest, sent: Pick<SubmitFields, 'max_duration_s'>): boolean {
  return first.startsWith(FINGERPRINT_V2) ? first === requestFingerprint(r, sent) : first === fingerprintOf(r, r.max_duration_s);
}

function fingerprintOf(r: TaskRequest, maxDurationS: number | null): string {
  const media = (m: MediaRef): string => (m.sha256 ? `sha256:${m.sha256}` : `uri:${m.uri}`);
  const canonical = {
    params: Object.fromEntries(Object.entries(r.params).sort(([a], [b]) => (a < b ? -1 : 1))),
    max_duration_s: maxDurationS,
    truncate_audio: r.truncate_audio,
    callback: r.callback ? { url: r.callback.url, secret_ref: r.callback.secret_ref } : null,
    priority: r.priority,
    metadata: Object.entries(r.metadata).sort(([a], [b]) => (a < b ? -1 : 1)),
    audio: media(r.audio),
    image: media(r.image),
  };
  return createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

/** Lowercase hex SHA-256 of a local file, streamed. */
export async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}
