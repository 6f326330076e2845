/**
 * The console's task routes (under /v1/console): the listing across tenants for operators, a
 * task's page (its timeline from the status view, its inputs, its video), and its live events.
 * A tenant key sees its own tenant's tasks only: another tenant's task looks like a missing one.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import { SonicError } from '../../core/errors.js';
import type { BlobStore } from '../../blob/store.js';
import { isTaskId } from '../../domain/ids.js';
import { publishedKey } from '../../domain/paths.js';
import type { Config } from '../../core/config.js';
import { TERMINAL, toView, type StatusEvent, type StatusView, type TaskView } from '../../app/status-view.js';
import type { EventStreams } from '../events.js';
import { listQuery } from '../tasks.js';
import { sendBlob } from '../video.js';
import { isOperator, tenantScope } from './access.js';

export interface ConsoleTaskDeps {
  config: Config;
  blob: BlobStore;
  view: StatusView;
  streams: EventStreams;
}

/** One step of a task's timeline. */
export interface TimelineEntry {
  state: string;
  stage: string | null;
  attempt: number;
  at: string;
  error: { code: string; message: string; retryable: boolean } | null;
  /** On the QUEUED event a DLQ replay wrote: who replayed (the key's id, or `cli`); else null. */
  replayed_by: string | null;
}

const INPUT_KINDS = ['audio', 'image'] as const;
/** Most listed tasks examined for one page when filtering by error code. */
const MAX_SCAN = 2000;

export function consoleTaskRoutes(deps: ConsoleTaskDeps): FastifyPluginAsync {
  const { config, view, blob } = deps;
  const links = (id: string, e: StatusEvent) => ({
    page: `/console/tasks/${id}`,
    video: e.state === 'SUCCEEDED' ? `/v1/console/tasks/${id}/video` : null,
  });
  const row = (e: StatusEvent): TaskView & { links: ReturnType<typeof links> } => ({ ...toView(e), links: links(e.task_id, e) });

  /** The task if the caller may see it; else TASK_NOT_FOUND, exactly as for a missing one. */
  const visible = async (req: FastifyRequest, id: string): Promise<StatusEvent> => {
    const e = isTaskId(id) ? await view.find(id, config.apiReadWaitMs) : undefined;
    if (!e || (!isOperator(req) && config.apiAuth === 'required' && e.tenant_id !== req.tenant))
      throw new SonicError('TASK_NOT_FOUND', `no task ${id.slice(0, 64)}`, { safe: true });
    return e;
  };

  /** The input blob of a kind (`tasks/<id>/input/<kind>-<n>`), the latest stored. */
  const inputKey = async (id: string, kind: 'audio' | 'image'): Promise<string | undefined> => {
    let found: string | undefined;
    for await (const entry of blob.list(`tasks/${id}/input/`)) if (entry.key.split('/')[3]?.startsWith(`${kind}-`)) found = entry.key;
    return found;
  };

  return async (app: FastifyInstance) => {
    app.get<{ Querystring: Record<string, unknown> }>('/console/tasks', { schema: { hide: true } }, async (req) => {
      const q = { ...req.query };
      const tenant = typeof q.tenant === 'string' && q.tenant !== '' ? q.tenant : undefined;
      const code = typeof q.code === 'string' && q.code !== '' ? q.code : undefined;
      const id = typeof q.task_id === 'string' && q.task_id !== '' ? q.task_id : undefined;
      delete q.tenant;
      delete q.code;
      delete q.task_id;
      if (id !== undefined) {
        // a task id is the search: that task or nothing
        const e = await visible(req, id).catch(() => undefined);
        return { tasks: e ? [row(e)] : [], next_cursor: null };
      }
      const base = { tenant: tenantScope(req, tenant), ...listQuery(q) };
      if (code === undefined) {
        const page = await view.list(base, config.apiReadWaitMs);
        return { tasks: page.tasks.map(row), next_cursor: page.next_cursor };
      }
      // by error code: pages of the listing filtered until the page is full (or MAX_SCAN examined)
      const out: StatusEvent[] = [];
      let cursor = base.cursor;
      let scanned = 0;
      for (;;) {
        const from = cursor ? { cursor } : {};
        const page = await view.list({ ...base, ...from, limit: 100 }, config.apiReadWaitMs);
        scanned += page.tasks.length;
        for (const [i, e] of page.tasks.entries()) {
          if (e.error_code !== code) continue;
          out.push(e);
          if (out.length < base.limit) continue;
          // full mid-way through this scanned page: the next page starts right after this task, not
          // after the scanned page (that would skip its matches further down)
          const upTo = await view.list({ ...base, ...from, limit: i + 1 });
          return { tasks: out.map(row), next_cursor: upTo.next_cursor };
        }
        cursor = page.next_cursor ?? undefined;
        if (!cursor || scanned >= MAX_SCAN) break;
      }
      return { tasks: out.map(row), next_cursor: cursor ?? null };
    });

    app.get<{ Params: { id: string } }>('/console/tasks/:id', { schema: { hide: true } }, async (req) => {
      const e = await visible(req, req.params.id);
      const timeline: TimelineEntry[] = view.timeline(e.task_id).map((x) => ({
        state: x.state,
        stage: x.stage,
        attempt: x.attempt,
        at: x.at.toISOString(),
        error: x.error_code ? { code: x.error_code, message: x.error_message ?? '', retryable: x.retryable ?? false } : null,
        replayed_by: x.replayed_by ?? null,
      }));
      const inputs: Record<string, string | null> = {};
      for (const kind of INPUT_KINDS) inputs[kind] = (await inputKey(e.task_id, kind)) ? `/v1/console/tasks/${e.task_id}/input/${kind}` : null;
      return { task: row(e), timeline, inputs };
    });

    app.get<{ Params: { id: string; kind: string } }>('/console/tasks/:id/input/:kind', { schema: { hide: true } }, async (req, reply) => {
      const e = await visible(req, req.params.id);
      const kind = req.params.kind;
      if (kind !== 'audio' && kind !== 'image') throw new SonicError('INVALID_REQUEST', 'the input kind is audio or image', { safe: true });
      const key = await inputKey(e.task_id, kind);
      if (!key) throw new SonicError('INPUT_NOT_FOUND', `task ${e.task_id} has no stored ${kind} (expired?)`, { safe: true });
      const st = await blob.stat(key);
      return sendBlob(req, reply, blob, key, { contentType: st?.content_type ?? 'application/octet-stream', filename: `${e.task_id}-${kind}` });
    });

    app.get<{ Params: { id: string } }>('/console/tasks/:id/video', { schema: { hide: true } }, async (req, reply) => {
      const e = await visible(req, req.params.id);
      if (e.state !== 'SUCCEEDED') throw new SonicError('VIDEO_NOT_READY', `task ${e.task_id} is ${e.state}`, { safe: true });
      return sendBlob(req, reply, blob, publishedKey(e.task_id), { contentType: 'video/mp4', filename: `${e.task_id}.mp4` });
    });

    app.get<{ Params: { id: string } }>('/console/tasks/:id/events', { schema: { hide: true } }, async (req, reply) => {
      const first = await visible(req, req.params.id);
      const owner = req.keyId ?? req.ip;
      deps.streams.admit(owner);
      reply.hijack();
      // a replay restarts an ended task: an operator's page follows it past FAILED until the stream's lifetime ends
      deps.streams.serve(reply.raw, owner, first, view.changes$, {
        matches: (e) => e.task_id === first.task_id,
        isLast: (e) => e.state === 'SUCCEEDED' || (TERMINAL.has(e.state) && !isOperator(req)),
        render: (e) => JSON.stringify(row(e)),
      });
    });
  };
}
