/**
 * The one error taxonomy of sonicflow. Every failure carries a `code` from {@link ERROR_CODES}
 * and a `retryable` flag; the runtime's classifier, the API's 4xx answers and the DLQ headers
 * all read these two fields and nothing else.
 */

/** Catalogue of error codes: whether each is retryable by default, and what it means. */
export const ERROR_CODES = {
  // request and media validation (permanent)
  INVALID_REQUEST: { retryable: false, doc: 'The request is malformed or misses a required field.' },
  PARAMS_OUT_OF_RANGE: { retryable: false, doc: 'A Sonic parameter lies outside its documented range.' },
  INPUT_NOT_FOUND: { retryable: false, doc: 'A referenced blob does not exist.' },
  CHECKSUM_MISMATCH: { retryable: false, doc: 'A blob does not match its recorded sha256.' },
  UNSUPPORTED_AUDIO_FORMAT: { retryable: false, doc: 'The audio container or codec is not accepted.' },
  AUDIO_DECODE_FAILED: { retryable: false, doc: 'The audio could not be decoded.' },
  AUDIO_TOO_SHORT: { retryable: false, doc: 'The audio is shorter than 1 s.' },
  AUDIO_TOO_LONG: { retryable: false, doc: 'The audio is longer than the configured maximum.' },
  UNSUPPORTED_IMAGE_FORMAT: { retryable: false, doc: 'The image is not JPEG, PNG or WebP.' },
  IMAGE_DECODE_FAILED: { retryable: false, doc: 'The image could not be decoded.' },
  IMAGE_TOO_SMALL: { retryable: false, doc: 'The image short side is below the minimum.' },
  IMAGE_TOO_LARGE: { retryable: false, doc: 'The image has more pixels, a longer side or a longer short side than allowed.' },
  NO_FACE_DETECTED: { retryable: false, doc: 'No face was found in the portrait (preprocess, before any GPU work).' },
  MULTIPLE_FACES: {
    retryable: false,
    doc: 'The portrait shows several faces of similar size (the second at least half the area of the largest); Sonic animates one face.',
  },
  FACE_TOO_SMALL: { retryable: false, doc: "The face's box is smaller than min_resolution / 8 px: its crop would be enlarged more than 4× for the model." },
  MEDIA_MISMATCH: { retryable: false, doc: 'A file is not what its field says: a video where audio belongs, or a file whose header lies about its content.' },
  // transient
  INPUT_FETCH_FAILED: { retryable: true, doc: 'A blob could not be read (timeout, 5xx).' },
  GPU_OOM: { retryable: true, maxAttempts: 3, doc: 'The GPU ran out of memory.' },
  CUDA_ERROR: { retryable: true, doc: 'The GPU runtime failed.' },
  INFERENCE_FAILED: { retryable: true, maxAttempts: 2, doc: 'The inference backend failed for an unrecognised reason (retried once).' },
  INFERENCE_TIMEOUT: { retryable: true, maxAttempts: 2, doc: 'Inference exceeded its time budget (retried once).' },
  ENCODE_FAILED: { retryable: true, maxAttempts: 2, doc: 'ffmpeg failed to encode or the output did not probe (retried once).' },
  STORAGE_WRITE_FAILED: { retryable: true, doc: 'A blob could not be written.' },
  CALLBACK_DELIVERY_FAILED: { retryable: true, doc: 'A webhook delivery failed.' },
  CALLBACK_URL_REFUSED: { retryable: false, doc: 'A callback URL resolves to a refused address.' },
  // pipeline and infrastructure
  DESERIALIZATION_FAILED: { retryable: false, doc: 'A record could not be decoded (bad bytes, unknown schema).' },
  SCHEMA_INCOMPATIBLE: { retryable: false, doc: 'The registry refused a schema under the subject compatibility.' },
  SCHEMA_NOT_FOUND: { retryable: false, doc: 'A schema file or subject is missing.' },
  REGISTRY_UNAVAILABLE: { retryable: true, doc: 'The schema registry could not be reached.' },
  BROKER_UNAVAILABLE: { retryable: true, doc: 'The Kafka broker could not be reached.' },
  KAFKA_AUTH_FAILED: { retryable: false, doc: 'The broker refused the SASL credentials: wrong user name or password.' },
  KAFKA_TLS_UNTRUSTED: {
    retryable: false,
    doc: "The broker's TLS certificate is not trusted by the configured CA (SONIC_KAFKA_SSL_CA_FILE, else the system CAs) or does not name the broker's host.",
  },
  KAFKA_PROTOCOL_MISMATCH: {
    retryable: false,
    doc: "The broker's listener speaks another security protocol than configured: TLS or not (SONIC_KAFKA_SSL), SASL or not, or another SASL mechanism; or the broker lacks a request version the configured client needs (TxnOffsetCommit v3, Kafka 2.5, for SONIC_KAFKA_CLIENT=platformatic).",
  },
  KAFKA_NOT_AUTHORIZED: {
    retryable: false,
    doc: "The broker's authorizer refused this principal a topic, group or transactional id: an ACL is missing (a configuration error; `sonicflow topology deploy --acls`).",
  },
  TOPOLOGY_INVALID: { retryable: false, doc: 'The topology declaration is inconsistent.' },
  CONFIG_INVALID: { retryable: false, doc: 'A configuration value is invalid.' },
  MODEL_UNAVAILABLE: {
    retryable: true,
    stopsStage: true,
    doc: "The stage's model cannot be loaded or its runner is wedged (missing weights, a bad volume, a runner of another protocol, a stuck GPU): a deployment fault, not the task's. The stage stops, neither retrying nor dead-lettering the task; it stays uncommitted and is redone once a stage can load the model.",
  },
  FACE_DETECTION_FAILED: {
    retryable: true,
    maxAttempts: 2,
    doc: 'Face detection failed unexpectedly on this picture. Retried once. The model cannot be reloaded within the process, so the next detection first runs it on its check portrait; a failed check, or a second fault in the same process, is MODEL_UNAVAILABLE (the stage stops; restarting the process reloads the model).',
  },
  INTERNAL: { retryable: false, doc: 'A bug: an unexpected exception.' },
  // HTTP API answers
  UNAUTHORIZED: { retryable: false, doc: 'The API key is missing or wrong.' },
  FORBIDDEN: {
    retryable: false,
    doc: "The resource belongs to another tenant or lies outside the caller's own upload area, or the key's role does not allow the request (a read-only key submitting or uploading, a non-admin key replaying).",
  },
  TASK_NOT_FOUND: { retryable: false, doc: 'No task has this id.' },
  VIDEO_NOT_READY: { retryable: true, doc: 'The task has not succeeded (yet).' },
  PAYLOAD_TOO_LARGE: { retryable: false, doc: 'An upload exceeds its size limit.' },
  RATE_LIMITED: { retryable: true, doc: 'Too many requests for this API key; retry after the indicated time.' },
  IDEMPOTENCY_KEY_INVALID: { retryable: false, doc: 'The Idempotency-Key header is not 1-255 characters of [A-Za-z0-9_:.-].' },
  IDEMPOTENCY_KEY_REUSED: { retryable: false, doc: 'The Idempotency-Key was first used with another request body; a new request needs a new key.' },
  CALLBACK_SECRET_UNKNOWN: { retryable: false, doc: "The callback secret_ref names no signing secret of the caller's tenant." },
  API_OVERLOADED: { retryable: true, doc: 'The API is at its limit of concurrent uploads or event streams; retry after the indicated time.' },
  RANGE_NOT_SATISFIABLE: { retryable: false, doc: 'The requested byte range lies outside the video.' },
  DLQ_SELECTION_CHANGED: {
    retryable: false,
    doc: 'A confirmed replay names dead letters the dry run would no longer pick (gone from the DLQ, or their task is no longer FAILED); run the dry run again.',
  },
  SHUTDOWN: { retryable: true, doc: 'The worker stopped or lost the partition mid-task; the next owner redoes it.' },
} as const satisfies Record<string, { retryable: boolean; maxAttempts?: number; stopsStage?: true; doc: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface SonicErrorOptions {
  /** Overrides the catalogue's default for this one error. */
  retryable?: boolean;
  cause?: unknown;
  /** Structured context (subject, field, path, ...), logged and carried in headers; clients see only {@link PUBLIC_DETAIL_KEYS}. */
  details?: Record<string, unknown>;
  /**
   * What a client (API answer, task status, webhook) may read: `true` when `message` itself is
   * safe, or a safe text of its own. Safe means no file paths, hosts, endpoints or tool output.
   * Without it, clients read the catalogue's text for the code; operators always get `message`
   * (logs, DLQ headers).
   */
  safe?: true | string;
}

/**
 * Detail keys a client may see (the field at fault and measured limits); every other detail
 * (paths, endpoints, exit codes, keys of the store) stays in logs and DLQ headers.
 */
export const PUBLIC_DETAIL_KEYS: ReadonlySet<string> = new Set([
  'field',
  'max',
  'min',
  'step',
  'limit',
  'width',
  'height',
  'pixels',
  'maxPixels',
  'maxSide',
  'minShort',
  'maxShort',
  'durationS',
  'minS',
  'maxS',
  'sizeBytes',
  'maxBytes',
  'retryAfterS',
]);

/** What a client is told about an error: its code, whether to retry, a safe message and safe details. */
export interface PublicError {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  details?: Record<string, unknown>;
}

/** An error with a stable machine-readable code and a retryable flag. */
export class SonicError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;
  /** The message a client may read (see {@link SonicErrorOptions.safe}). */
  readonly publicMessage: string;

  constructor(code: ErrorCode, message: string, options: SonicErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SonicError';
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    this.details = options.details ?? {};
    this.publicMessage = options.safe === true ? message : (options.safe ?? ERROR_CODES[code].doc);
    // enumerable so that pino and JSON.stringify show them
    Object.defineProperty(this, 'message', { enumerable: true, value: message });
  }

  toJSON(): { code: ErrorCode; message: string; retryable: boolean; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

/** The most attempts (first try included) a code allows, when the catalogue limits it. */
export function maxAttemptsFor(code: ErrorCode): number | undefined {
  const def = ERROR_CODES[code] as { maxAttempts?: number };
  return def.maxAttempts;
}

/**
 * True for an error whose code stops the stage (`stopsStage` in the catalogue): a deployment
 * fault such as a model that cannot load. The runtime neither retries nor dead-letters the record
 * at hand; it stops the stage with the batch uncommitted, and the process exits non-zero.
 */
export function stopsStage(err: unknown): boolean {
  if (!isSonicError(err)) return false;
  const def = ERROR_CODES[err.code] as { stopsStage?: true };
  return def.stopsStage === true;
}

/** True when `code` names an entry of the catalogue. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** Narrowing helper that also accepts SonicErrors crossing module copies (by shape). */
export function isSonicError(err: unknown): err is SonicError {
  return (
    err instanceof SonicError ||
    (err instanceof Error && isErrorCode((err as { code?: unknown }).code) && typeof (err as { retryable?: unknown }).retryable === 'boolean')
  );
}

/** Turns anything thrown into a SonicError; unknown exceptions become non-retryable `INTERNAL`. */
export function toSonicError(err: unknown): SonicError {
  if (isSonicError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SonicError('INTERNAL', message, { cause: err });
}

/**
 * What a client may be told about an error (API answers, task status, webhooks): its code, the
 * retryable flag, the safe message and the public details only. Works on SonicErrors from another
 * copy of this module too (by shape); anything else is an `INTERNAL` with the catalogue's text.
 */
export function publicError(err: unknown): PublicError {
  const e = toSonicError(err);
  const message = typeof (e as Partial<SonicError>).publicMessage === 'string' ? e.publicMessage : ERROR_CODES[e.code].doc;
  const details = Object.fromEntries(Object.entries(e.details ?? {}).filter(([k]) => PUBLIC_DETAIL_KEYS.has(k)));
  return { code: e.code, message, retryable: e.retryable, ...(Object.keys(details).length ? { details } : {}) };
}

const lastSegment = (path: string): string =>
  path
    .replace(/[\\/]+$/, '')
    .split(/[\\/]/)
    .pop() || '[path]';

/**
 * A text cleaned of the machine's internals, for what operators read outside logs (the console's
 * dead letters: error messages and every string of a decoded record): an `s3://bucket/key` URI
 * becomes the blob key, a `file:` URI or an absolute path (POSIX, `~/…`, `C:\…`) its last segment,
 * a URL's user and password `[credentials]`, a `host:port` (brokers, registries, runners) `[host]`,
 * and a traceback or stack trace is cut to `[traceback]`. Logs and DLQ headers keep the original.
 */
export function scrubInternals(text: string): string {
  return (
    text
      // a Python traceback (a runner's stderr) and JavaScript stack frames: everything after them
      .replace(/\s*Traceback \(most recent call last\)[\s\S]*$/, ' [traceback]')
      .replace(/\r?\n\s+at\s[\s\S]*$/, ' [traceback]')
      .replace(/\bs3a?:\/\/[^/\s'"]*\/?([^\s'"]*)/gi, (_, key: string) => key || '[bucket]')
      .replace(/\bfile:(?:\/\/)?([^\s'"]*)/gi, (_, path: string) => lastSegment(path))
      .replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"]*@/gi, '$1[credentials]@')
      .replace(/(?<![\w.-])(?:\[[0-9a-f:.]+\]|\d{1,3}(?:\.\d{1,3}){3}|[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)*):\d{2,5}\b/gi, '[host]')
      .replace(/(?<![\w.:/\]~-])~?(?:\/[^\s/'"`,;:()|<>]+)+\/?/g, lastSegment)
      .replace(/(?<![\w])[a-z]:\\[^\s'"`,;|<>]+/gi, lastSegment)
  );
}

/** The client-safe text of an error code read back from a record (DLQ headers); unknown codes read as INTERNAL. */
export function publicMessageOf(code: string): string {
  return isErrorCode(code) ? ERROR_CODES[code].doc : ERROR_CODES.INTERNAL.doc;
}
