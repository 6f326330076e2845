/**
 * Local-file plumbing shared by the stores: atomic writes that hash while they write, and
 * streamed hashing of a file. Errors come back as {@link LocalIoError} naming the side that
 * failed, so each store can map them to its own error codes.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sha256Hasher } from './store.js';

/** A failure of the source stream or of the local target file. */
export class LocalIoError extends Error {
  constructor(
    readonly side: 'source' | 'target',
    readonly error: unknown,
  ) {
    super(error instanceof Error ? error.message : String(error), { cause: error });
    this.name = 'LocalIoError';
  }

  /** The errno code of the underlying error (ENOENT, ...), if any. */
  get errno(): string | undefined {
    return errnoOf(this.error);
  }
}

/** The errno code of a Node.js system error. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Content digest and length. */
export interface Digest {
  sha256: string;
  size_bytes: number;
}

function hashingPassThrough(onDone: (d: Digest) => void): Transform {
  const hash = sha256Hasher();
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
    flush(callback) {
      onDone({ sha256: hash.digest('hex'), size_bytes: size });
      callback();
    },
  });
}

/**
 * Writes `source` to `toPath` through a temporary file in the same directory and a rename, so
 * readers see the old content or the new, never a part. The content is hashed on the way and
 * flushed to disk before the rename. `beforeRename`, when given, sees the digest first and may
 * throw to abandon the write (its error passes through unwrapped).
 */
export async function writeFileAtomically(toPath: string, source: Readable | Buffer, beforeRename?: (digest: Digest) => void | Promise<void>): Promise<Digest> {
  const tmp = join(dirname(toPath), `.${basename(toPath)}.${randomBytes(6).toString('hex')}.tmp`);
  let digest: Digest | undefined;
  // The first stream to fail is the culprit: pipeline then destroys the others with the same error.
  let failed: { side: 'source' | 'target'; error: unknown } | undefined;
  const blame = (side: 'source' | 'target') => (error: unknown) => void (failed ??= { side, error });
  // listen at once: a file stream may fail to open while we still await the directory
  if (!Buffer.isBuffer(source)) source.on('error', blame('source'));
  try {
    await mkdir(dirname(toPath), { recursive: true });
    if (Buffer.isBuffer(source)) {
      digest = { sha256: sha256Hasher().update(source).digest('hex'), size_bytes: source.length };
      await writeFile(tmp, source, { flag: 'wx', flush: true });
    } else {
      const target = createWriteStream(tmp, { flags: 'wx', flush: true }).on('error', blame('target'));
      await pipeline(
        source,
        hashingPassThrough((d) => (digest = d)),
        target,
      );
    }
  } catch (err) {
    if (!Buffer.isBuffer(source)) source.destroy();
    await rm(tmp, { force: true }).catch(() => undefined);
    throw failed === undefined ? new LocalIoError('target', err) : new LocalIoError(failed.side, failed.error);
  }
  if (digest === undefined) throw new LocalIoError('source', new Error('the stream ended without flushing'));
  try {
    await beforeRename?.(digest);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  try {
    await rename(tmp, toPath);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new LocalIoError('target', err);
  }
  return digest;
}

/** sha256 and size of a local file, streamed (the file is never held in memory). */
export async function hashFile(path: string): Promise<Digest> {
  const hash = sha256Hasher();
  let size = 0;
  try {
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
    }
  } catch (err) {
    throw new LocalIoError('source', err);
  }
  return { sha256: hash.digest('hex'), size_bytes: size };
}
