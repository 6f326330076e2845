/**
 * The blob store contract. Media never rides in Kafka: a record carries a {@link BlobRef} whose
 * `uri` names the blob in a store-neutral way (`blob://<key>` or `s3://<bucket>/<key>`), never a
 * machine path, so any worker with the same store configuration can read it.
 */
import { createHash, type Hash } from 'node:crypto';
import { SonicError } from '../core/errors.js';

/** What a record carries about a stored blob. */
export interface BlobRef {
  /** `blob://<key>` (filesystem store) or `s3://<bucket>/<key>`. */
  uri: string;
  key: string;
  size_bytes: number;
  /** Lowercase hex sha256 of the content. */
  sha256: string;
  content_type: string | null;
}

/** What {@link BlobStore.stat} knows about a stored blob. */
export interface BlobStat {
  size_bytes: number;
  /** Present when the blob was written through a BlobStore. */
  sha256?: string;
  content_type?: string;
}

/** One blob as {@link BlobStore.list} finds it. */
export interface BlobEntry {
  key: string;
  size_bytes: number;
  /** When the blob was last written. */
  modified: Date;
}

/** Options of {@link BlobStore.put}. */
export interface PutOptions {
  contentType?: string;
}

/** Options of the reads: a checksum to verify, usually the `sha256` of the record's BlobRef. */
export interface ReadOptions {
  /** When set, a blob whose content hashes otherwise fails with `CHECKSUM_MISMATCH`. */
  sha256?: string;
}

/** An inclusive byte range of a blob (as in HTTP `Range: bytes=start-end`). */
export interface ByteRange {
  start: number;
  end: number;
}

/** A blob opened for streaming (see {@link BlobStore.openRead}). */
export interface OpenedBlob {
  /** The bytes of the range (or the whole blob); destroy it when the reader goes away. */
  stream: import('node:stream').Readable;
  /** Size of the whole blob in bytes. */
  size: number;
  sha256?: string;
  content_type?: string;
}

/**
 * A place for media. Failures are SonicErrors: a missing key is `INPUT_NOT_FOUND` (permanent),
 * other read failures `INPUT_FETCH_FAILED`, write failures `STORAGE_WRITE_FAILED`, an invalid key
 * `INVALID_REQUEST`.
 */
export interface BlobStore {
  readonly kind: 'fs' | 's3';
  /**
   * Stores `data` (bytes, or the path of a local file, which is streamed) under `key`. Overwrites:
   * the same key names the same object, so a redone stage rewrites rather than duplicates.
   */
  put(key: string, data: Buffer | string, opts?: PutOptions): Promise<BlobRef>;
  /** The whole blob in memory. */
  getBuffer(key: string, opts?: ReadOptions): Promise<Buffer>;
  /**
   * Streams the blob, or the inclusive byte `range` of it (the caller checks the range against
   * {@link stat}'s size first). Nothing is held in memory; `INPUT_NOT_FOUND` when absent.
   */
  openRead(key: string, range?: ByteRange): Promise<OpenedBlob>;
  /** Streams the blob to a local file; the file appears complete or not at all. */
  download(key: string, toPath: string, opts?: ReadOptions): Promise<void>;
  /** Size, checksum and content type, or undefined when the key is absent. */
  stat(key: string): Promise<BlobStat | undefined>;
  /**
   * Copies the blob `fromKey` to `toKey` (overwriting, like {@link put}) inside the store, content
   * and metadata (sha256, content type) together, without the content passing through this
   * process: a hard link or a copy on the filesystem, a server-side copy on S3. The copy is a blob
   * of its own: deleting the source later leaves it intact. Both keys are validated;
   * `INPUT_NOT_FOUND` when the source is absent, `STORAGE_WRITE_FAILED` (or `INPUT_FETCH_FAILED`
   * for a source that cannot be read) otherwise. The reference describes the copy as written.
   */
  copy(fromKey: string, toKey: string): Promise<BlobRef>;
  /** Removes the blob; removing an absent key is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Every blob whose key starts with `prefix`, a folder (`tasks/<id>/`, ending in `/`) or `''`
   * for the whole store, in no particular order; blobs being written are not listed. A prefix
   * that is not a folder is `INVALID_REQUEST`; a store that cannot be listed `INPUT_FETCH_FAILED`.
   */
  list(prefix: string): AsyncIterable<BlobEntry>;
  /** The key of a `uri` of this store (inverse of {@link BlobRef.uri}); `INPUT_NOT_FOUND` for a foreign uri. */
  keyFromUri(uri: string): string;
  close(): Promise<void>;
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;
/** The fs store keeps its sidecars under this suffix, so no key may end with it in either store. */
export const META_SUFFIX = '.meta.json';
const MAX_KEY_LENGTH = 1024;

function segmentProblem(segment: string): string | undefined {
  if (!SEGMENT.test(segment)) return 'may contain only A-Z a-z 0-9 . _ -';
  if (segment === '.' || segment.includes('..')) return "may not be '.' or contain '..'";
  return undefined;
}

/**
 * The blob key of a stage artefact: `tasks/<taskId>/<stage>/<name>`. Each part must be
 * non-empty `[A-Za-z0-9._-]` without `..`; otherwise throws `INVALID_REQUEST`.
 */
export function taskKey(taskId: string, stage: string, name: string): string {
  for (const [field, value] of [
    ['taskId', taskId],
    ['stage', stage],
    ['name', name],
  ] as const) {
    const problem = segmentProblem(value);
    if (problem !== undefined) {
      throw new SonicError('INVALID_REQUEST', `blob key part ${field} "${value}" ${problem}`, { details: { field, value } });
    }
  }
  return validateKey(`tasks/${taskId}/${stage}/${name}`);
}

/**
 * Checks a key: `/`-separated segments of `[A-Za-z0-9._-]`, none `.` or containing `..`, at most
 * 1024 characters, not ending in {@link META_SUFFIX}. Returns it, or throws `INVALID_REQUEST`.
 * Such keys need no escaping in a URI and cannot leave the store's root.
 */
export function validateKey(key: string): string {
  const fail = (why: string): never => {
    throw new SonicError('INVALID_REQUEST', `invalid blob key "${key.slice(0, 200)}": ${why}`, { details: { key: key.slice(0, 200) } });
  };
  if (key.length === 0 || key.length > MAX_KEY_LENGTH) fail(`length must be 1..${MAX_KEY_LENGTH}`);
  if (key.endsWith(META_SUFFIX)) fail(`the suffix ${META_SUFFIX} is reserved`);
  for (const segment of key.split('/')) {
    if (segment === '') fail('empty path segment');
    const problem = segmentProblem(segment);
    if (problem !== undefined) fail(`segment "${segment}" ${problem}`);
  }
  return key;
}

/** Checks a {@link BlobStore.list} prefix: `''` or a valid key followed by `/`. Returns it, or throws `INVALID_REQUEST`. */
export function validatePrefix(prefix: string): string {
  if (prefix === '') return prefix;
  if (!prefix.endsWith('/')) {
    throw new SonicError('INVALID_REQUEST', `invalid blob prefix "${prefix.slice(0, 200)}": it must end with /`, { details: { prefix: prefix.slice(0, 200) } });
  }
  validateKey(prefix.slice(0, -1));
  return prefix;
}

/**
 * The key after `prefix` in `uri`, or `INPUT_NOT_FOUND` when the uri does not start with it or
 * names no valid key: a reference to another store cannot be found in this one.
 */
export function keyAfterPrefix(uri: string, prefix: string, store: string): string {
  const notOurs = () =>
    new SonicError('INPUT_NOT_FOUND', `blob uri "${uri.slice(0, 300)}" does not belong to the ${store}`, { details: { uri: uri.slice(0, 300) } });
  if (!uri.startsWith(prefix)) throw notOurs();
  try {
    return validateKey(uri.slice(prefix.length));
  } catch {
    throw notOurs();
  }
}

/** The error of a {@link BlobStore.copy} onto its own key, refused by every store. */
export function copyOntoItself(key: string): SonicError {
  return new SonicError('INVALID_REQUEST', `blob "${key.slice(0, 200)}" cannot be copied onto itself`, { details: { key: key.slice(0, 200) } });
}

/** A fresh sha256 hasher. */
export function sha256Hasher(): Hash {
  return createHash('sha256');
}

/** Lowercase hex sha256 of a buffer. */
export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Throws `CHECKSUM_MISMATCH` when an expected checksum is given and differs from the actual one. */
export function checkSha256(key: string, expected: string | undefined, actual: string): void {
  if (expected !== undefined && expected.toLowerCase() !== actual) {
    throw new SonicError('CHECKSUM_MISMATCH', `blob "${key}" has sha256 ${actual}, expected ${expected}`, {
      details: { key, expected, actual },
    });
  }
}
