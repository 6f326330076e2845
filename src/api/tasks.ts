/**
 * Task routes: submit (multipart upload or JSON references), status from the materialised view,
 * server-sent status events, and the video.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { filter, takeWhile } from 'rxjs';
import type { Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';
import type { BlobStore } from '../blob/store.js';
import { childTraceparent } from '../runtime/headers.js';
import { publishedKey, videoUrl } from '../stages/publish.js';
import type { TaskRequest } from '../stages/records.js';
import { TERMINAL, toView, type StatusEvent, type StatusView, type TaskView } from './status-view.js';
import { buildRequest, checkUpload, idempotentTaskId, referencedBlob, storeUpload, type Limits, type SubmitFields } from './submit.js';

export interface TaskRouteDeps {
  config: Config;
  blob: BlobStore;
  view: StatusView;
  /** Writes the request and its QUEUED status; resolves when the broker has them. */
  enqueue(request: TaskRequest, queued: StatusEvent): Promise<void>;
}

const PARAM_FIELDS = ['min_resolution', 'expand_ratio', 'inference_steps', 'dynamic_scale', 'motion_scale', 'seed', 'fps', 'crop_to_face'] as const;

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
  },
};
const errorSchema = { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' }, retryable: { type: 'boolean' } } };

export function taskRoutes(deps: TaskRouteDeps): FastifyPluginAsync {
  const { config, blob, view } = deps;
  const limits: Limits = { maxAudioBytes: config.maxAudioBytes, maxImageBytes: config.maxImageBytes, maxAudioSeconds: config.maxAudioSeconds };
  /** Tasks accepted by this process whose QUEUED event the view may not show yet. */
  const recent = new Map<string, Promise<void>>();

  const visible = (req: FastifyRequest, id: string): StatusEvent => {
    const e = view.get(id);
    // another tenant's task looks exactly like a missing one
    if (!e || (config.apiAuth === 'required' && e.tenant_id !== req.tenant)) throw new SonicError('TASK_NOT_FOUND', `no task ${id}`);
    return e;
  };
  const present = (e: StatusEvent): TaskView & { video_url: string | null } => ({ ...toView(e), video_url: e.state === 'SUCCEEDED' ? videoUrl(config, e.task_id) : null });
  const accepted = (id: string, replay: boolean) => ({
    task_id: id,
    status: view.get(id)?.state ?? 'QUEUED',
    status_url: `${config.apiPublicUrl}/v1/tasks/${id}`,
    events_url: `${config.apiPublicUrl}/v1/tasks/${id}/events`,
    idempotent_replay: replay,
  });

  return async (app: FastifyInstance) => {
    app.post(
      '/tasks',
      {
        schema: {
          summary: 'Submit a task',
          description:
            'multipart/form-data with files `audio` and `image` and Sonic parameters as fields, or JSON `{audio: {uri}, image: {uri}, params: {...}}` referencing stored blobs. Answers 202 at once; the video is made asynchronously.',
          headers: { type: 'object', properties: { 'idempotency-key': { type: 'string' } } },
          response: { 202: { type: 'object', additionalProperties: true }, 200: { type: 'object', additionalProperties: true }, '4xx': errorSchema },
        },
      },
      async (req, reply) => {
        const idemKey = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : null;
        if (idemKey !== null && !/^[A-Za-z0-9_:.-]{1,255}$/.test(idemKey)) {
          throw new SonicError('IDEMPOTENCY_KEY_INVALID', 'Idempotency-Key must be 1-255 characters of [A-Za-z0-9_:.-]');
        }
        const taskId = idemKey ? idempotentTaskId(req.tenant, idemKey) : randomUUID();
        if (idemKey && (view.get(taskId) || recent.has(taskId))) {
          await recent.get(taskId)?.catch(() => undefined);
          if (view.get(taskId) || recent.has(taskId)) return reply.status(200).header('idempotent-replayed', 'true').send(accepted(taskId, true));
        }
        const work = submit(req, taskId, idemKey);
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

    const submit = async (req: FastifyRequest, taskId: string, idemKey: string | null): Promise<void> => {
      const fields: SubmitFields = { params: {} };
      let audio;
      let image;
      if (req.isMultipart()) {
        const files: Partial<Record<'audio' | 'image', { data: Buffer; type: string }>> = {};
        for await (const part of req.parts()) {
          if (part.type === 'file') {
            if (part.fieldname !== 'audio' && part.fieldname !== 'image') {
              part.file.resume();
              throw new SonicError('INVALID_REQUEST', `unexpected file field "${part.fieldname}": send "audio" and "image"`);
            }
            const data = await part.toBuffer();
            files[part.fieldname] = { data, type: checkUpload(part.fieldname, data, limits) };
          } else {
            const value = typeof part.value === 'string' ? part.value : String(part.value);
            if ((PARAM_FIELDS as readonly string[]).includes(part.fieldname)) (fields.params as Record<string, unknown>)[part.fieldname] = value;
            else (fields as unknown as Record<string, unknown>)[part.fieldname] = value;
          }
        }
        if (!files.audio) throw new SonicError('INVALID_REQUEST', 'the audio file is missing (multipart field "audio")', { details: { field: 'audio' } });
        if (!files.image) throw new SonicError('INVALID_REQUEST', 'the image file is missing (multipart field "image")', { details: { field: 'image' } });
        audio = await storeUpload(blob, taskId, 'audio', files.audio.data, files.audio.type);
        image = await storeUpload(blob, taskId, 'image', files.image.data, files.image.type);
      } else {
        const body = req.body;
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new SonicError('INVALID_REQUEST', 'send a JSON object or a multipart form');
        const b = body as Record<string, unknown>;
        Object.assign(fields, {
          params: (typeof b.params === 'object' && b.params) || {},
          max_duration_s: b.max_duration_s,
          truncate_audio: b.truncate_audio,
          priority: b.priority,
          metadata: b.metadata,
          callback_url: (b.callback as { url?: unknown } | undefined)?.url ?? b.callback_url,
          callback_secret_ref: (b.callback as { secret_ref?: unknown } | undefined)?.secret_ref ?? b.callback_secret_ref,
        });
        audio = await referencedBlob(blob, 'audio', b.audio, limits);
        image = await referencedBlob(blob, 'image', b.image, limits);
      }
      const now = new Date();
      const traceparent = childTraceparent(typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined);
      const request = buildRequest({ taskId, tenant: req.tenant, idempotencyKey: idemKey, image, audio, fields, limits, traceparent, now });
      const queued: StatusEvent = {
        task_id: taskId, state: 'QUEUED', stage: null, attempt: 1, progress: null, error_code: null, error_message: null,
        retryable: null, result_url: null, tenant_id: req.tenant, created_at: now, at: now,
      };
      await deps.enqueue(request, queued);
      view.apply(queued);
    };

    app.get<{ Params: { id: string } }>(
      '/tasks/:id',
      { schema: { summary: 'Task status', params: { type: 'object', properties: { id: { type: 'string' } } }, response: { 200: taskViewSchema, '4xx': errorSchema } } },
      async (req) => present(visible(req, req.params.id)),
    );

    app.get<{ Params: { id: string } }>(
      '/tasks/:id/events',
      { schema: { summary: 'Status changes as server-sent events, until the task ends', produces: ['text/event-stream'] } },
      async (req, reply) => streamEvents(req, reply, visible(req, req.params.id)),
    );

    const streamEvents = (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply, first: StatusEvent): void => {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      const send = (e: StatusEvent): boolean => res.write(`event: status\ndata: ${JSON.stringify(present(e))}\n\n`);
      send(first);
      if (TERMINAL.has(first.state)) return void res.end();
      const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
      const sub = view.changes$
        .pipe(
          filter((e) => e.task_id === req.params.id),
          takeWhile((e) => !TERMINAL.has(e.state), true),
        )
        .subscribe({ next: send, complete: () => res.end() });
      res.on('close', () => {
        clearInterval(ping);
        sub.unsubscribe();
      });
    };

    app.get<{ Params: { id: string } }>(
      '/tasks/:id/video',
      { schema: { summary: 'The MP4 of a succeeded task (or a redirect to its public location)', produces: ['video/mp4'] } },
      async (req, reply) => {
        const e = visible(req, req.params.id);
        if (e.state !== 'SUCCEEDED') throw new SonicError('VIDEO_NOT_READY', `task ${e.task_id} is ${e.state}; the video exists once it has SUCCEEDED`);
        if (config.publicBaseUrl) return reply.redirect(videoUrl(config, e.task_id), 302);
        const data = await blob.getBuffer(publishedKey(e.task_id));
        return reply.type('video/mp4').header('content-disposition', `inline; filename="${e.task_id}.mp4"`).send(data);
      },
    );
  };
}
