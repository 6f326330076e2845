/**
 * Multipart uploads without holding files in memory: each file part is streamed to a spool file
 * with its own size limit (audio and image differ), text fields are taken only when their name
 * is expected, and a limited number of uploads run at once. The spooled files are inspected from
 * their headers, stored in the blob store, and removed when the request ends, whatever happens.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyRequest } from 'fastify';
import { SonicError } from '../core/errors.js';

/** A file part, spooled to local disk. */
export interface SpooledFile {
  field: string;
  path: string;
  size: number;
}

/** What {@link readMultipart} reads. */
export interface MultipartSpec {
  /** File fields and their size limits in bytes. */
  files: Record<string, number>;
  /** Text fields that may appear (any other is refused). */
  fields: readonly string[];
  /** Longest text field value, bytes. */
  maxFieldBytes: number;
  /** Directory under which the request's spool directory is made. */
  spoolRoot: string;
}

/** A read multipart body; `cleanup()` removes the spool files (call it in a finally). */
export interface MultipartBody {
  files: Map<string, SpooledFile>;
  fields: Record<string, string>;
  cleanup(): Promise<void>;
}

const tooLarge = (field: string, maxBytes: number): SonicError =>
  new SonicError('PAYLOAD_TOO_LARGE', `${field} is larger than ${maxBytes} bytes`, { safe: true, details: { field, maxBytes } });

/**
 * Reads a multipart body part by part. Throws INVALID_REQUEST for an unexpected or repeated
 * field, PAYLOAD_TOO_LARGE when a file or a field value passes its limit (reading stops there);
 * busboy's own limits (parts, files, fields) surface as fastify errors the error handler maps.
 */
export async function readMultipart(req: FastifyRequest, spec: MultipartSpec): Promise<MultipartBody> {
  await mkdir(spec.spoolRoot, { recursive: true });
  const dir = await mkdtemp(join(spec.spoolRoot, 'upload-'));
  const body: MultipartBody = { files: new Map(), fields: {}, cleanup: () => rm(dir, { recursive: true, force: true }) };
  const largest = Math.max(...Object.values(spec.files));
  const seen = new Set<string>();
  try {
    const parts = req.parts({
      limits: {
        fileSize: largest + 1,
        files: Object.keys(spec.files).length,
        fields: spec.fields.length,
        parts: Object.keys(spec.files).length + spec.fields.length,
        fieldSize: spec.maxFieldBytes,
        fieldNameSize: 64,
        headerPairs: 16,
      },
    });
    for await (const part of parts) {
      if (seen.has(part.fieldname)) {
        if (part.type === 'file') part.file.resume();
        throw new SonicError('INVALID_REQUEST', `the field "${part.fieldname.slice(0, 64)}" appears twice`, {
          safe: true,
          details: { field: part.fieldname.slice(0, 64) },
        });
      }
      seen.add(part.fieldname);
      if (part.type === 'file') {
        const max = Object.hasOwn(spec.files, part.fieldname) ? spec.files[part.fieldname] : undefined;
        if (max === undefined) {
          part.file.resume();
          throw new SonicError('INVALID_REQUEST', `unexpected file field "${part.fieldname.slice(0, 64)}": send ${Object.keys(spec.files).join(' and ')}`, {
            safe: true,
          });
        }
        const path = join(dir, `file-${seen.size}`);
        let size = 0;
        const limit = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            size += chunk.length;
            cb(size > max ? tooLarge(part.fieldname, max) : null, chunk);
          },
        });
        await pipeline(part.file, limit, createWriteStream(path, { flags: 'wx' }));
        // busboy's own limit ends the stream early instead of failing it
        if (part.file.truncated) throw tooLarge(part.fieldname, max);
        body.files.set(part.fieldname, { field: part.fieldname, path, size });
      } else {
        if (!spec.fields.includes(part.fieldname)) {
          throw new SonicError('INVALID_REQUEST', `unexpected field "${part.fieldname.slice(0, 64)}" (fields: ${spec.fields.join(', ')})`, { safe: true });
        }
        if (part.valueTruncated) throw tooLarge(part.fieldname, spec.maxFieldBytes);
        body.fields[part.fieldname] = typeof part.value === 'string' ? part.value : String(part.value);
      }
    }
    return body;
  } catch (err) {
    await body.cleanup();
    throw asRequestError(err);
  }
}

const LOCAL_DISK_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE', 'ENOENT']);

/** Our errors and fastify's limit errors pass; a local disk failure is ours (503); anything else is a malformed body. */
function asRequestError(err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  if (err instanceof SonicError || (typeof code === 'string' && code.startsWith('FST_'))) return err;
  if (typeof code === 'string' && LOCAL_DISK_ERRORS.has(code)) {
    return new SonicError('STORAGE_WRITE_FAILED', `spooling the upload failed: ${code}`, { cause: err, safe: 'the upload could not be stored; retry later' });
  }
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
    return new SonicError('INVALID_REQUEST', 'the client went away during the upload', { cause: err, safe: 'the upload ended before the form was complete' });
  }
  return new SonicError('INVALID_REQUEST', `the multipart body is malformed: ${(err as Error).message}`, {
    cause: err,
    safe: 'the multipart body is malformed',
  });
}

/**
 * Counting semaphores without a queue, in all and per owner (an API key): an upload either gets a
 * slot now or is refused (503 API_OVERLOADED in all, 429 RATE_LIMITED for one key), so a flood of
 * slow uploads cannot pile up memory, disk or file descriptors, and one tenant cannot take every
 * slot.
 */
export class UploadSlots {
  private used = 0;
  private readonly byOwner = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly perOwner: number = max,
  ) {}

  /** A release function (idempotent), or throws API_OVERLOADED / RATE_LIMITED. */
  acquire(owner: string): () => void {
    if (this.used >= this.max) {
      throw new SonicError('API_OVERLOADED', `${this.max} uploads are in progress; retry in a moment`, {
        safe: true,
        details: { limit: this.max, retryAfterS: 1 },
      });
    }
    const mine = this.byOwner.get(owner) ?? 0;
    if (mine >= this.perOwner) {
      throw new SonicError('RATE_LIMITED', `${this.perOwner} uploads of this API key are in progress; wait for one to finish`, {
        safe: true,
        details: { limit: this.perOwner, retryAfterS: 1 },
      });
    }
    this.used += 1;
    this.byOwner.set(owner, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= 1;
      const left = (this.byOwner.get(owner) ?? 1) - 1;
      if (left <= 0) this.byOwner.delete(owner);
      else this.byOwner.set(owner, left);
    };
  }

  get inUse(): number {
    return this.used;
  }
}
