/**
 * Media a client sends: inspected from its header on the spool (type read from the bytes, image
 * size bounded before anything decodes it, a video posing as audio refused), then stored. Also
 * `POST /v1/uploads`, which fills the caller's upload area — the only place a JSON submit may
 * reference.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';
import { refuseReadOnly } from './auth.js';
import type { BlobStore } from '../blob/store.js';
import { inspectLimits, inspectMedia } from '../media/inspect.js';
import type { MediaRef } from '../domain/records.js';
import { newUploadKey } from './submit.js';
import { readMultipart, type SpooledFile, type UploadSlots } from './uploads.js';

/**
 * Inspects a spooled file as `kind`, then stores it under `key` (appended to `stored` first, so
 * a failure later in the request removes it).
 *
 * @throws SonicError 4xx codes from the inspection (415 wrong type, 422 image too large, ...).
 */
export async function storeInspected(
  blob: BlobStore,
  config: Config,
  kind: 'audio' | 'image',
  file: SpooledFile,
  key: string,
  stored: string[],
): Promise<MediaRef> {
  if (file.size === 0) throw new SonicError('INVALID_REQUEST', `the ${kind} file is empty`, { safe: true, details: { field: kind } });
  const found = await inspectMedia(kind, file.path, inspectLimits(config));
  stored.push(key);
  const ref = await blob.put(key, file.path, { contentType: found.contentType });
  return { uri: ref.uri, content_type: ref.content_type, size_bytes: ref.size_bytes, sha256: ref.sha256 };
}

export interface UploadRouteDeps {
  config: Config;
  blob: BlobStore;
  slots: UploadSlots;
  spoolRoot: string;
}

/** `POST /v1/uploads`: one file, field `audio` or `image`; answers 201 with the uri to reference. */
export function uploadRoutes(deps: UploadRouteDeps): FastifyPluginAsync {
  return async (app: FastifyInstance) => {
    app.post(
      '/uploads',
      {
        onRequest: refuseReadOnly,
        schema: {
          summary: 'Upload a file to reference in a JSON submit',
          description:
            "multipart/form-data with exactly one file, in field `audio` or `image`. The answer's `uri` may be used as `audio.uri` / `image.uri` of `POST /v1/tasks` by the same tenant only.",
          response: { 201: { type: 'object', additionalProperties: true } },
        },
      },
      async (req, reply) => {
        if (!req.isMultipart()) throw new SonicError('INVALID_REQUEST', 'send multipart/form-data with one file in field "audio" or "image"', { safe: true });
        const release = deps.slots.acquire(req.keyId ?? req.ip);
        const stored: string[] = [];
        let ok = false;
        try {
          const form = await readMultipart(req, {
            files: { audio: deps.config.maxAudioBytes, image: deps.config.maxImageBytes },
            fields: [],
            maxFieldBytes: 1024,
            spoolRoot: deps.spoolRoot,
          });
          try {
            const entries = [...form.files.values()];
            if (entries.length !== 1) throw new SonicError('INVALID_REQUEST', 'send exactly one file, in field "audio" or "image"', { safe: true });
            const file = entries[0]!;
            const kind = file.field as 'audio' | 'image';
            const ref = await storeInspected(deps.blob, deps.config, kind, file, newUploadKey(req.tenant), stored);
            ok = true;
            return reply.status(201).send({ uri: ref.uri, kind, content_type: ref.content_type, size_bytes: ref.size_bytes, sha256: ref.sha256 });
          } finally {
            await form.cleanup();
          }
        } finally {
          release();
          if (!ok) for (const key of stored) await deps.blob.delete(key).catch(() => undefined);
        }
      },
    );
  };
}
