/**
 * Task routes: submit (multipart upload or JSON references to the caller's uploads), status from
 * the materialised view, server-sent status events, and the video. Registered inside the `/v1`
 * scope, so authentication and the rate limit apply to each of them (see auth.ts).
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Gauge, type Registry } from 'prom-client';
import { publicApiUrl, type Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';
import { refuseReadOnly } from './auth.js';
import type { Logger } from '../core/logger.js';
import { taskKey, type BlobStore } from '../blob/store.js';
import { childTraceparent } from '../runtime/headers.js';
import { isTaskId } from '../domain/ids.js';
import { publishedKey, videoUrl } from '../domain/paths.js';
import type { MediaRef, TaskKey, TaskRequest } from '../domain/records.js';
import type { EventStreams } from './events.js';
import { storeInspected } from './media.js';
import { TASK_STATES, TERMINAL, toView, type ListQuery, type StatusEvent, type StatusView, type TaskView } from '../app/status-view.js';
import { checkIdempotencyKey } from '../domain/params.js';
import {
  PARAM_FIELDS,
  REQUEST_FIELDS,
  buildRequest,
  claimUpload,
  fileSha256,
  idempotentTaskId,
  referencedBlob,
  requestFingerprint,
  sameFingerprint,
  type Limits,
  type SubmitFields,
} from './submit.js';
import { readMultipart, type SpooledFile, type UploadSlots } from './uploads.js';
import { sendBlob } from './video.js';
import { statusEvent } from '../domain/status-event.js';

export interface TaskRouteDeps {
  config: Config;
  logger: Logger;
  blob: BlobStore;
  view: StatusView;
  /**
   * Writes the request, its QUEUED status and (idempotent submits) the key record in one
   * transaction; throws BROKER_UNAVAILABLE past `timeoutMs`.
   */
  enqueue(request: TaskRequest, queued: StatusEvent, timeoutMs: number, key?: TaskKey): Promise<void>;
  /** Keys the idempotent task ids. */
  secret: Buffer;
  streams: EventStreams;
  slots: UploadSlots;
  /** Checks a callback (URL, signing secret) before anything is stored; throws a 4xx SonicError. */
  checkCallback?(tenant: string, callback: { url: string; secret_ref: string | null }): void;
  /** Directory for spooled uploads. */
  spoolRoot: string;
  /** Where the routes' own metrics go. */
  registry?: Registry;
}

const PLACEHOLDER: MediaRef = { uri: 'pending:', content_type: null, size_bytes: null, sha256: null };

const rectSchema = {
  type: 'object',
  properties: { x: { type: 'number' }, y: { type: 'number' }, width: { type: 'number' }, height: { type: 'number' } },
};
const faceSchema = {
  type: ['object', 'null'],
  description: 'The face preprocess found and the crop around it, in pixels of the upright uploaded picture; null before preprocess.',
  properties: {
    box: rectSchema,
    score: { type: 'number' },
    faces: { type: 'integer' },
    crop: { ...rectSchema, type: ['object', 'null'] },
    picture_width: { type: 'integer' },
    picture_height: { type: 'integer' },
    detector: { type: 'string' },
  },
};
const taskViewSchema = {
  type: 'object',
  properties: {
    task_id: { type: 'string', format: 'uuid' },
    state: { type: 'string', enum: ['QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED', 'FAILED'] },
    stage: { type: ['string', 'null'] },
    progress: { type: ['number', 'null'] },
    attempt: { type: 'integer' },
    error: { type: ['object', 'null'], properties: { code: { type: 'string' }, message: { type: 'string' }, retryable: { type: 'boolean' } } },
    result_url: { type: ['string', 'null'] },
    video_url: { type: ['string', 'null'] },
    created_at: { type: ['string', 'null'] },
    updated_at: { type: 'string' },
    face: faceSchema,
  },
};
export const errorSchema = {
  type: 'object',
  properties: {
    code: { type: 'string' },
    message: { type: 'string' },
    retryable: { type: 'boolean' },
    details: { type: 'object', additionalProperties: true },
  },
};

const bad = (field: string, message: string): SonicError => new SonicError('INVALID_REQUEST', message, { safe: true, details: { field } });

/** The query of `GET /v1/tasks`, checked: a wrong value is 400 INVALID_REQUEST naming the field. */
export function listQuery(q: Record<string, unknown>): Omit<ListQuery, 'tenant'> {
  const one = (field: string): string | undefined => {
    const v = q[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw bad(field, `${field} may be given once`);
    return v;
  };
  const out: Omit<ListQuery, 'tenant'> = { limit: 20 };
  const state = one('state');
  if (state !== undefined) {
    if (!(TASK_STATES as readonly string[]).includes(state)) throw bad('state', `state must be one of ${TASK_STATES.join(', ')}`);
    out.state = state as ListQuery['state'];
  }
  const since = one('since');
  if (since !== undefined) {
    const t = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?$/.test(since) ? Date.parse(since) : NaN;
    if (!Number.isFinite(t)) throw bad('since', 'since must be an ISO-8601 date or instant, e.g. 2026-11-30T12:00:00Z');
    out.since = new Date(t);
  }
  const limit = one('limit');
  if (limit !== undefined) {
    if (!/^\d{1,3}$/.test(limit) || Number(limit) < 1 || Number(limit) > 100) throw bad('limit', 'limit must be a whole number from 1 to 100');
    out.limit = Number(limit);
  }
  const cursor = one('cursor');
  if (cursor !== undefined) {
    if (!/^[A-Za-z0-9_-]{1,512}$/.test(cursor)) throw bad('cursor', 'cursor must be the next_cursor of an earlier page');
    out.cursor = cursor;
  }
  const order = one('order');
  if (order !== undefined) {
    if (order !== 'asc' && order !== 'desc') throw bad('order', 'order must be asc or desc');
    out.order = order;
  }
  return out;
}

export function taskRoutes(deps: TaskRouteDeps): FastifyPluginAsync {
  const { config, blob, view } = deps;
  const limits: Limits = { maxAudioBytes: config.maxAudioBytes, maxImageBytes: config.maxImageBytes, maxAudioSeconds: config.maxAudioSeconds };
  /** Tasks accepted by this process whose QUEUED event the view may not show yet. */
  const recent = new Map<string, Promise<void>>();
  const waiting =
    deps.registry &&
    new Gauge({ name: 'sonicflow_api_submits_waiting', help: 'Submits waiting for an earlier submit of the same task id to end.', registers: [deps.registry] });

  /** The task, waiting a moment for the view when it does not know the id (another replica may have accepted it). */
  const visible = async (req: FastifyRequest, id: string): Promise<StatusEvent> => {
    const e = isTaskId(id) ? await view.find(id, config.apiReadWaitMs) : undefined;
    // another tenant's task looks exactly like a missing one
    if (!e || (config.apiAuth === 'required' && e.tenant_id !== req.tenant))
      throw new SonicError('TASK_NOT_FOUND', `no task ${id.slice(0, 64)}`, { safe: true });
    return e;
  };
  const present = (e: StatusEvent): TaskView & { video_url: string | null } => ({
    ...toView(e),
    video_url: e.state === 'SUCCEEDED' ? videoUrl(config, e.task_id) : null,
  });
  const accepted = (id: string, replay: boolean) => ({
    task_id: id,
    status: view.get(id)?.state ?? 'QUEUED',
    status_url: `${publicApiUrl(config)}/v1/tasks/${id}`,
    events_url: `${publicApiUrl(config)}/v1/tasks/${id}/events`,
    idempotent_replay: replay,
  });

  /**
   * Reads the submit's media and fields; `stored` collects what was written to the store, for
   * removal when the submit fails. `audio`/`image` are the task's own copies (multipart files
   * stored, referenced uploads claimed), `sent` the media as the client named them (for the
   * fingerprint).
   */
  const readSubmit = async (
    req: FastifyRequest,
    taskId: string,
    stored: string[],
    /** `hash`: only the fingerprint is wanted (a replay): uploaded files are hashed, not stored; referenced uploads are not copied. */
    mode: 'store' | 'hash' = 'store',
  ): Promise<{ fields: SubmitFields; audio: MediaRef; image: MediaRef; sent: { audio: MediaRef; image: MediaRef } }> => {
    const fields: SubmitFields = { params: {} };
    if (!req.isMultipart()) {
      const body = req.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body))
        throw new SonicError('INVALID_REQUEST', 'send a JSON object or a multipart form', { safe: true });
      const b = body as Record<string, unknown>;
      Object.assign(fields, {
        params: b.params ?? {},
        max_duration_s: b.max_duration_s,
        truncate_audio: b.truncate_audio,
        priority: b.priority,
        metadata: b.metadata,
        callback_url: (b.callback as { url?: unknown } | undefined)?.url ?? b.callback_url,
        callback_secret_ref: (b.callback as { secret_ref?: unknown } | undefined)?.secret_ref ?? b.callback_secret_ref,
      });
      check(req, taskId, fields);
      const audio = await referencedBlob(blob, req.tenant, 'audio', b.audio, limits);
      const image = await referencedBlob(blob, req.tenant, 'image', b.image, limits);
      if (mode === 'hash') return { fields, audio, image, sent: { audio, image } };
      // claimed: copied to the task's own inputs, so the task outlives the uploads' retention
      // (one key per request, as for multipart files below)
      const attempt = randomUUID().slice(0, 8);
      return {
        fields,
        audio: await claimUpload(blob, 'audio', audio, taskKey(taskId, 'input', `audio-${attempt}`), stored),
        image: await claimUpload(blob, 'image', image, taskKey(taskId, 'input', `image-${attempt}`), stored),
        sent: { audio, image },
      };
    }
    const release = deps.slots.acquire(req.keyId ?? req.ip);
    const form = await readMultipart(req, {
      files: { audio: config.maxAudioBytes, image: config.maxImageBytes },
      fields: [...PARAM_FIELDS, ...REQUEST_FIELDS],
      maxFieldBytes: 16_384,
      spoolRoot: deps.spoolRoot,
    }).catch((err: unknown) => {
      release();
      throw err;
    });
    try {
      for (const [name, value] of Object.entries(form.fields)) {
        if ((PARAM_FIELDS as readonly string[]).includes(name)) (fields.params as Record<string, unknown>)[name] = value;
        else (fields as unknown as Record<string, unknown>)[name] = value;
      }
      const files = { audio: form.files.get('audio'), image: form.files.get('image') };
      for (const kind of ['audio', 'image'] as const) {
        if (!files[kind])
          throw new SonicError('INVALID_REQUEST', `the ${kind} file is missing (multipart field "${kind}")`, { safe: true, details: { field: kind } });
      }
      check(req, taskId, fields);
      // keys of this request alone: a retry of the same task (after an in-doubt 503) never
      // overwrites, nor on failure deletes, what an earlier attempt that did commit points at
      const attempt = randomUUID().slice(0, 8);
      if (mode === 'hash') {
        const hashed = async (f: SpooledFile): Promise<MediaRef> => ({
          uri: 'spooled:',
          content_type: null,
          size_bytes: f.size,
          sha256: await fileSha256(f.path),
        });
        const [audio, image] = [await hashed(files.audio!), await hashed(files.image!)];
        return { fields, audio, image, sent: { audio, image } };
      }
      const audio = await storeInspected(blob, config, 'audio', files.audio!, taskKey(taskId, 'input', `audio-${attempt}`), stored);
      const image = await storeInspected(blob, config, 'image', files.image!, taskKey(taskId, 'input', `image-${attempt}`), stored);
      return { fields, audio, image, sent: { audio, image } };
    } finally {
      release();
      await form.cleanup();
    }
  };

  /**
   * A retry with an Idempotency-Key must be the request the key was first used with (IETF
   * Idempotency-Key draft): its body is read (files hashed, nothing stored) and its fingerprint
   * compared with the first one's; another body is 422 IDEMPOTENCY_KEY_REUSED. A task made
   * before fingerprints were kept has none to compare, and replays.
   */
  const sameRequest = async (req: FastifyRequest, taskId: string, idemKey: string): Promise<void> => {
    const first = await view.findKey(taskId, config.apiReadWaitMs);
    if (!first) return;
    const { fields, audio, image } = await readSubmit(req, taskId, [], 'hash');
    const request = buildRequest({ taskId, tenant: req.tenant, idempotencyKey: idemKey, image, audio, fields, limits, traceparent: null, now: new Date() });
    if (!sameFingerprint(first.fingerprint, request, fields)) {
      throw new SonicError(
        'IDEMPOTENCY_KEY_REUSED',
        `this Idempotency-Key was first used with another request (task ${taskId}); use a new key for a new request`,
        { safe: true, details: { field: 'idempotency-key' } },
      );
    }
  };

  /** The checks that need no media, made before anything is stored. */
  const check = (req: FastifyRequest, taskId: string, fields: SubmitFields): void => {
    const r = buildRequest({
      taskId,
      tenant: req.tenant,
      idempotencyKey: null,
      image: PLACEHOLDER,
      audio: PLACEHOLDER,
      fields,
      limits,
      traceparent: null,
      now: new Date(),
    });
    if (r.callback) deps.checkCallback?.(req.tenant, r.callback);
  };

  /** `waitedMs`: time already spent waiting on the broker for this submit, taken off the enqueue deadline. */
  const submit = async (req: FastifyRequest, taskId: string, idemKey: string | null, waitedMs: number): Promise<void> => {
    const stored: string[] = [];
    let keep = false;
    try {
      const { fields, audio, image, sent } = await readSubmit(req, taskId, stored);
      const now = new Date();
      const traceparent = childTraceparent(typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined);
      const request = buildRequest({ taskId, tenant: req.tenant, idempotencyKey: idemKey, image, audio, fields, limits, traceparent, now });
      const queued: StatusEvent = statusEvent({ task_id: taskId, state: 'QUEUED', tenant_id: req.tenant, created_at: now, at: now });
      // of the media as the client named them: a claimed upload's copy has the upload's checksum, not its uri
      const first: TaskKey | undefined = idemKey
        ? {
            task_id: taskId,
            tenant_id: req.tenant,
            idempotency_key: idemKey,
            fingerprint: requestFingerprint({ ...request, ...sent }, fields),
            created_at: now,
          }
        : undefined;
      try {
        await deps.enqueue(request, queued, Math.max(1, config.apiEnqueueTimeoutMs - waitedMs), first);
      } catch (err) {
        // a commit of unknown outcome may still have enqueued the task: its inputs stay
        keep = (err as SonicError).details?.inDoubt === true;
        throw err;
      }
      keep = true;
      view.apply(queued);
    } finally {
      if (!keep) {
        for (const key of stored) await blob.delete(key).catch((err: unknown) => deps.logger.warn({ err, key }, 'upload of a refused submit not removed'));
      }
    }
  };

  return async (app: FastifyInstance) => {
    app.post(
      '/tasks',
      {
        onRequest: refuseReadOnly,
        bodyLimit: 65_536,
        schema: {
          summary: 'Submit a task',
          description:
            'multipart/form-data with files `audio` and `image` and Sonic parameters as fields, or JSON `{audio: {uri}, image: {uri}, params: {...}}` referencing files uploaded with POST /v1/uploads. Answers 202 at once; the video is made asynchronously.',
          headers: { type: 'object', properties: { 'idempotency-key': { type: 'string' } } },
          response: {
            202: { type: 'object', additionalProperties: true },
            200: { type: 'object', additionalProperties: true },
            '4xx': errorSchema,
            '5xx': errorSchema,
          },
        },
      },
      async (req, reply) => {
        const raw = req.headers['idempotency-key'];
        // a header sent twice arrives as one joined string, which the key's alphabet refuses
        const idemKey = raw === undefined ? null : String(raw);
        if (idemKey !== null) checkIdempotencyKey(idemKey);
        const taskId = idemKey ? idempotentTaskId(deps.secret, req.tenant, idemKey) : randomUUID();
        // a submit another replica took a moment ago is a replay here too: catch up with it first
        // (that wait is on the broker too, and counts against the enqueue deadline)
        const caughtUpAt = Date.now();
        if (idemKey) await view.find(taskId, Math.min(config.apiReadWaitMs, config.apiEnqueueTimeoutMs));
        const waitedMs = Date.now() - caughtUpAt;
        // one submit of an id at a time: wait for the one under way, then look again; the check
        // and the claim below run without an await between them, so only one waiter claims
        for (;;) {
          if (idemKey && view.get(taskId)) {
            await sameRequest(req, taskId, idemKey);
            return reply.status(200).header('idempotent-replayed', 'true').send(accepted(taskId, true));
          }
          const pending = recent.get(taskId);
          if (!pending) break;
          waiting?.inc();
          await pending.catch(() => undefined).finally(() => waiting?.dec());
        }
        const work = submit(req, taskId, idemKey, waitedMs);
        if (idemKey) recent.set(taskId, work);
        try {
          await work;
        } catch (err) {
          recent.delete(taskId);
          throw err;
        }
        setTimeout(() => recent.delete(taskId), 60_000).unref();
        return reply.status(202).header('location', `/v1/tasks/${taskId}`).send(accepted(taskId, false));
      },
    );

    app.get<{ Querystring: Record<string, unknown> }>(
      '/tasks',
      {
        schema: {
          summary: "List the caller's tasks",
          description:
            'Newest first (`order=asc`: oldest first), optionally of one `state` and created at or after `since` (ISO-8601). At most `limit` (1-100, default 20) per page; `next_cursor`, when not null, fetches the next page.',
          querystring: {
            type: 'object',
            properties: {
              state: { type: 'string', enum: [...TASK_STATES] },
              since: { type: 'string' },
              limit: { type: 'string' },
              cursor: { type: 'string' },
              order: { type: 'string', enum: ['asc', 'desc'] },
            },
          },
          response: {
            200: { type: 'object', properties: { tasks: { type: 'array', items: taskViewSchema }, next_cursor: { type: ['string', 'null'] } } },
            '4xx': errorSchema,
          },
        },
      },
      async (req) => {
        const page = await view.list({ tenant: req.tenant, ...listQuery(req.query) }, config.apiReadWaitMs);
        return { tasks: page.tasks.map(present), next_cursor: page.next_cursor };
      },
    );

    app.get<{ Params: { id: string } }>(
      '/tasks/:id',
      {
        schema: {
          summary: 'Task status',
          params: { type: 'object', properties: { id: { type: 'string' } } },
          response: { 200: taskViewSchema, '4xx': errorSchema },
        },
      },
      async (req) => present(await visible(req, req.params.id)),
    );

    app.get<{ Params: { id: string } }>(
      '/tasks/:id/events',
      { schema: { summary: 'Status changes as server-sent events, until the task ends', produces: ['text/event-stream'] } },
      async (req, reply: FastifyReply) => {
        const first = await visible(req, req.params.id);
        deps.streams.admit(req.keyId ?? req.ip);
        reply.hijack();
        deps.streams.serve(reply.raw, req.keyId ?? req.ip, first, view.changes$, {
          matches: (e) => e.task_id === first.task_id,
          isLast: (e) => TERMINAL.has(e.state),
          render: (e) => JSON.stringify(present(e)),
        });
      },
    );

    app.get<{ Params: { id: string } }>(
      '/tasks/:id/video',
      { schema: { summary: 'The MP4 of a succeeded task (or a redirect to its public location); supports Range requests', produces: ['video/mp4'] } },
      async (req, reply) => {
        const e = await visible(req, req.params.id);
        if (e.state !== 'SUCCEEDED')
          throw new SonicError('VIDEO_NOT_READY', `task ${e.task_id} is ${e.state}; the video exists once it has SUCCEEDED`, { safe: true });
        if (config.publicBaseUrl) return reply.redirect(videoUrl(config, e.task_id), 302);
        return sendBlob(req, reply, blob, publishedKey(e.task_id), { contentType: 'video/mp4', filename: `${e.task_id}.mp4` });
      },
    );
  };
}
