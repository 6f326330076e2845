/**
 * The filesystem blob store: one file per key under a root directory, written atomically, with a
 * `<file>.meta.json` sidecar holding its sha256 and content type. Suits one machine, or several
 * that share the directory (NFS and the like).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, readFile, readdir, rename, rm, stat as fsStat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { SonicError } from '../core/errors.js';
import { LocalIoError, errnoOf, hashFile, writeFileAtomically, type Digest } from './local-file.js';
import {
  META_SUFFIX,
  checkSha256,
  copyOntoItself,
  keyAfterPrefix,
  sha256Hex,
  validateKey,
  validatePrefix,
  type BlobEntry,
  type BlobRef,
  type BlobStat,
  type BlobStore,
  type ByteRange,
  type OpenedBlob,
  type PutOptions,
  type ReadOptions,
} from './store.js';

const URI_PREFIX = 'blob://';
// the temporary file of a write in progress (writeFileAtomically): `.<name>.<12 hex>.tmp`
const TEMPORARY = /^\..+\.[0-9a-f]{12}\.tmp$/;
// errno codes that mean "no blob under this key": absent, or a directory stands where it would be
const ABSENT = new Set(['ENOENT', 'ENOTDIR', 'EISDIR', 'ERR_FS_EISDIR']);
// errno codes of a hard link the filesystem cannot make (another filesystem, no hard links, too many): copy instead
const NO_LINK = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'ENOSYS']);

interface Sidecar {
  sha256: string;
  size_bytes: number;
  content_type: string | null;
}

function isSidecar(v: unknown): v is Sidecar {
  const s = v as Partial<Sidecar> | null;
  return typeof s?.sha256 === 'string' && typeof s.size_bytes === 'number' && (s.content_type === null || typeof s.content_type === 'string');
}

/** A {@link BlobStore} in a local (or shared) directory; uris are `blob://<key>`. */
export class FsBlobStore implements BlobStore {
  readonly kind = 'fs' as const;
  readonly #root: string;

  /** @param rootDir absolute directory that holds the blobs; created on first write. */
  constructor(rootDir: string) {
    if (!isAbsolute(rootDir)) {
      throw new SonicError('CONFIG_INVALID', `the blob store root must be an absolute path, got "${rootDir}"`, { details: { rootDir } });
    }
    this.#root = resolve(rootDir);
  }

  /** The root directory (for operators; never put it in a record). */
  get rootDir(): string {
    return this.#root;
  }

  async put(key: string, data: Buffer | string, opts: PutOptions = {}): Promise<BlobRef> {
    const path = this.#path(key);
    const sidecar = path + META_SUFFIX;
    let digest;
    try {
      digest = await writeFileAtomically(path, typeof data === 'string' ? createReadStream(data) : data, async () => {
        // dropped before the new content lands, so a crash in between leaves no sidecar rather than a wrong one
        await rm(sidecar, { force: true }).catch((err: unknown) => {
          throw new LocalIoError('target', err);
        });
      });
      const meta: Sidecar = { sha256: digest.sha256, size_bytes: digest.size_bytes, content_type: opts.contentType ?? null };
      await writeFileAtomically(sidecar, Buffer.from(JSON.stringify(meta)));
    } catch (err) {
      throw writeError(key, err, typeof data === 'string' ? data : undefined);
    }
    return { uri: URI_PREFIX + key, key, size_bytes: digest.size_bytes, sha256: digest.sha256, content_type: opts.contentType ?? null };
  }

  async getBuffer(key: string, opts: ReadOptions = {}): Promise<Buffer> {
    const path = this.#path(key);
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      throw readError(key, err);
    }
    checkSha256(key, opts.sha256, sha256Hex(data));
    return data;
  }

  async openRead(key: string, range?: ByteRange): Promise<OpenedBlob> {
    const st = await this.stat(key);
    if (!st) throw readError(key, Object.assign(new Error('absent'), { code: 'ENOENT' }));
    const path = this.#path(key);
    const stream = createReadStream(path, range ? { start: range.start, end: range.end } : {});
    // opening fails asynchronously (a delete in between): surface it as a read error
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', (err) => reject(readError(key, err)));
    });
    return { stream, size: st.size_bytes, ...(st.sha256 ? { sha256: st.sha256 } : {}), ...(st.content_type ? { content_type: st.content_type } : {}) };
  }

  async download(key: string, toPath: string, opts: ReadOptions = {}): Promise<void> {
    const path = this.#path(key);
    try {
      await writeFileAtomically(toPath, createReadStream(path), (d) => checkSha256(key, opts.sha256, d.sha256));
    } catch (err) {
      if (err instanceof LocalIoError && err.side === 'target') throw writeError(key, err, undefined, toPath);
      throw readError(key, err);
    }
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    const path = this.#path(key);
    let size: number;
    try {
      const st = await fsStat(path);
      if (!st.isFile()) return undefined;
      size = st.size;
    } catch (err) {
      if (ABSENT.has(errnoOf(err) ?? '')) return undefined;
      throw readError(key, err);
    }
    const out: BlobStat = { size_bytes: size };
    const meta = await this.#sidecar(path, size);
    if (meta) {
      out.sha256 = meta.sha256;
      if (meta.content_type !== null) out.content_type = meta.content_type;
    }
    return out;
  }

  /**
   * A hard link when both keys are on one filesystem (no byte is read or written), else a streamed
   * copy, hashed on the way; either way through a temporary file and a rename, so the copy appears
   * complete or not at all, and its sidecar is written after it as `put` does. Blobs are never
   * changed in place (`put` renames a new file over the key), so sharing the file is safe, and
   * deleting either key leaves the other. The source's sidecar is taken only when the linked file
   * is the one the sidecar was read beside (same inode before and after); otherwise, or without a
   * sidecar, the copy is hashed, so its sidecar always describes its own content.
   */
  async copy(fromKey: string, toKey: string): Promise<BlobRef> {
    const from = this.#path(fromKey);
    const to = this.#path(toKey);
    if (from === to) throw copyOntoItself(fromKey);
    let before;
    try {
      before = await fsStat(from);
    } catch (err) {
      throw readError(fromKey, err);
    }
    if (!before.isFile()) throw readError(fromKey, Object.assign(new Error('not a file'), { code: 'EISDIR' }));
    const meta = await this.#sidecar(from, before.size);
    const sidecar = to + META_SUFFIX;
    const tmp = join(dirname(to), `.${basename(to)}.${randomBytes(6).toString('hex')}.tmp`);
    let digest: Digest;
    try {
      try {
        await mkdir(dirname(to), { recursive: true });
      } catch (err) {
        throw new LocalIoError('target', err);
      }
      let linked = true;
      try {
        await link(from, tmp);
      } catch (err) {
        const errno = errnoOf(err);
        if (ABSENT.has(errno ?? '')) throw new LocalIoError('source', err);
        if (!NO_LINK.has(errno ?? '')) throw new LocalIoError('target', err);
        linked = false;
      }
      if (linked) {
        try {
          const after = await fsStat(tmp);
          // the same file as the sidecar was read beside: its checksum holds; else hash what was linked
          digest =
            meta !== undefined && after.ino === before.ino && after.dev === before.dev && after.size === meta.size_bytes
              ? { sha256: meta.sha256, size_bytes: meta.size_bytes }
              : await hashFile(tmp);
          await rm(sidecar, { force: true }).catch((err: unknown) => {
            throw new LocalIoError('target', err);
          });
          await rename(tmp, to).catch((err: unknown) => {
            throw new LocalIoError('target', err);
          });
        } finally {
          await rm(tmp, { force: true }).catch(() => undefined);
        }
      } else {
        digest = await writeFileAtomically(to, createReadStream(from), async () => {
          await rm(sidecar, { force: true }).catch((err: unknown) => {
            throw new LocalIoError('target', err);
          });
        });
      }
      const out: Sidecar = { sha256: digest.sha256, size_bytes: digest.size_bytes, content_type: meta?.content_type ?? null };
      await writeFileAtomically(sidecar, Buffer.from(JSON.stringify(out)));
      return { uri: URI_PREFIX + toKey, key: toKey, size_bytes: out.size_bytes, sha256: out.sha256, content_type: out.content_type };
    } catch (err) {
      if (err instanceof LocalIoError && err.side === 'source') throw readError(fromKey, err);
      throw writeError(toKey, err);
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.#path(key);
    try {
      await rm(path, { force: true });
      await rm(path + META_SUFFIX, { force: true });
    } catch (err) {
      throw writeError(key, err);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobEntry> {
    validatePrefix(prefix);
    const dir = prefix === '' ? this.#root : this.#path(prefix.slice(0, -1));
    let names: string[];
    try {
      names = (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name));
    } catch (err) {
      if (ABSENT.has(errnoOf(err) ?? '')) return;
      throw readError(prefix, err);
    }
    for (const path of names) {
      const name = path.slice(path.lastIndexOf(sep) + 1);
      if (name.endsWith(META_SUFFIX) || TEMPORARY.test(name)) continue;
      const key = relative(this.#root, path).split(sep).join('/');
      const st = await fsStat(path).catch(() => undefined);
      // removed since the directory was read
      if (!st) continue;
      yield { key, size_bytes: st.size, modified: st.mtime };
    }
  }

  keyFromUri(uri: string): string {
    return keyAfterPrefix(uri, URI_PREFIX, 'filesystem blob store');
  }

  async close(): Promise<void> {}

  /** The sidecar of the file at `path`, when there is one for content of `size` bytes. */
  async #sidecar(path: string, size: number): Promise<Sidecar | undefined> {
    const meta = await readFile(path + META_SUFFIX, 'utf8')
      .then((text) => JSON.parse(text) as unknown)
      .catch(() => undefined);
    // a sidecar of another size belongs to other content (written outside this store)
    return isSidecar(meta) && meta.size_bytes === size ? meta : undefined;
  }

  #path(key: string): string {
    validateKey(key);
    const path = resolve(this.#root, key);
    // validateKey already forbids '..'; this guards the invariant itself
    if (!path.startsWith(this.#root + sep)) {
      throw new SonicError('INVALID_REQUEST', `blob key "${key}" leaves the store root`, { details: { key } });
    }
    return path;
  }
}

function unwrap(err: unknown): unknown {
  return err instanceof LocalIoError ? err.error : err;
}

function readError(key: string, err: unknown): SonicError {
  if (err instanceof SonicError) return err;
  const cause = unwrap(err);
  const errno = errnoOf(cause);
  if (ABSENT.has(errno ?? '')) {
    return new SonicError('INPUT_NOT_FOUND', `blob "${key}" does not exist`, { cause, details: { key, store: 'fs' } });
  }
  return new SonicError('INPUT_FETCH_FAILED', `blob "${key}" could not be read: ${errno ?? String(cause)}`, {
    cause,
    details: { key, store: 'fs', errno },
  });
}

function writeError(key: string, err: unknown, sourcePath?: string, targetPath?: string): SonicError {
  if (err instanceof SonicError) return err;
  const cause = unwrap(err);
  const errno = errnoOf(cause);
  if (err instanceof LocalIoError && err.side === 'source' && sourcePath !== undefined && ABSENT.has(errno ?? '')) {
    return new SonicError('INPUT_NOT_FOUND', `the file to store as blob "${key}" does not exist: ${sourcePath}`, {
      cause,
      details: { key, store: 'fs', path: sourcePath },
    });
  }
  const what = targetPath === undefined ? `blob "${key}" could not be written` : `blob "${key}" could not be downloaded to ${targetPath}`;
  return new SonicError('STORAGE_WRITE_FAILED', `${what}: ${errno ?? String(cause)}`, {
    cause,
    // a file standing where a directory must be (or the reverse) does not heal by retrying
    retryable: !['ENOTDIR', 'EISDIR', 'ERR_FS_EISDIR', 'EEXIST'].includes(errno ?? ''),
    details: { key, store: 'fs', errno, ...(targetPath === undefined ? {} : { path: targetPath }) },
  });
}
