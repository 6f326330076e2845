/**
 * Serving a video from the blob store as a stream, with HTTP range requests (RFC 9110 §14):
 * players seek, and nothing is held in memory whatever the size.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { SonicError } from '../core/errors.js';
import type { BlobStore, ByteRange } from '../blob/store.js';

/**
 * The byte range a `Range` header asks for, for a blob of `size` bytes. One range only
 * (`bytes=a-b`, `bytes=a-`, `bytes=-n`); anything else — several ranges, another unit, bad
 * syntax — is ignored as the RFC allows (the whole blob is sent).
 *
 * @returns the inclusive range, `undefined` for the whole blob, or `'unsatisfiable'`.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined; // syntactically invalid: ignored
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/**
 * Answers with the blob under `key`: 200 with the whole of it, 206 with the requested range, or
 * 416 RANGE_NOT_SATISFIABLE. `If-Range` with another validator than the blob's ETag sends the
 * whole blob, as the RFC says.
 */
export async function sendBlob(
  req: FastifyRequest,
  reply: FastifyReply,
  blob: BlobStore,
  key: string,
  o: { contentType: string; filename: string },
): Promise<FastifyReply> {
  const st = await blob.stat(key);
  if (!st) throw new SonicError('INPUT_NOT_FOUND', `blob ${key} is missing`, { safe: 'the video is no longer stored' });
  const etag = st.sha256 ? `"${st.sha256}"` : undefined;
  const ifRange = req.headers['if-range'];
  const wanted = ifRange !== undefined && ifRange !== etag ? undefined : parseRange(req.headers.range, st.size_bytes);
  void reply
    .header('accept-ranges', 'bytes')
    .header('content-type', o.contentType)
    .header('content-disposition', `inline; filename="${o.filename}"`)
    .header('x-content-type-options', 'nosniff')
    .header('cache-control', 'private, max-age=3600');
  if (etag) void reply.header('etag', etag);
  if (wanted === 'unsatisfiable') {
    void reply.header('content-range', `bytes */${st.size_bytes}`);
    throw new SonicError('RANGE_NOT_SATISFIABLE', `the range ${String(req.headers.range).slice(0, 60)} lies outside the ${st.size_bytes} bytes of the video`, {
      safe: true,
      details: { sizeBytes: st.size_bytes },
    });
  }
  if (etag && req.headers['if-none-match'] === etag) return reply.status(304).send();
  const opened = await blob.openRead(key, wanted);
  if (wanted) {
    return reply
      .status(206)
      .header('content-range', `bytes ${wanted.start}-${wanted.end}/${opened.size}`)
      .header('content-length', String(wanted.end - wanted.start + 1))
      .send(opened.stream);
  }
  return reply.status(200).header('content-length', String(opened.size)).send(opened.stream);
}
