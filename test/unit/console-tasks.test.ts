import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { consoleTaskRoutes, type ConsoleTaskDeps } from '../../src/api/console/tasks.js';
import { replayedEvent } from '../../src/app/dlq.js';
import type { ListQuery, StatusEvent } from '../../src/app/status-view.js';

/** A status view over `tasks` (newest first) whose cursor is the index of the last task returned. */
function fakeView(tasks: StatusEvent[]) {
  return {
    async list(q: ListQuery) {
      const start = q.cursor === undefined ? 0 : Number(Buffer.from(q.cursor, 'base64url').toString()) + 1;
      const page = tasks.slice(start, start + q.limit);
      const more = start + q.limit < tasks.length;
      return { tasks: page, next_cursor: more ? Buffer.from(String(start + page.length - 1)).toString('base64url') : null };
    },
  };
}

const task = (i: number, code: string | null): StatusEvent =>
  ({
    task_id: `t${i}`,
    state: code ? 'FAILED' : 'SUCCEEDED',
    stage: null,
    progress: 1,
    attempt: 1,
    error_code: code,
    error_message: null,
    result_url: null,
    tenant_id: 'acme',
    created_at: new Date(0),
    at: new Date(0),
  }) as unknown as StatusEvent;

describe("the console's task list filtered by error code", () => {
  it('pages through every match once: the cursor points after the last task returned, not after the scanned page', async () => {
    // 250 tasks, every third failed with NO_FACE_DETECTED: 84 matches spread over three scanned pages
    const tasks = Array.from({ length: 250 }, (_, i) => task(i, i % 3 === 0 ? 'NO_FACE_DETECTED' : null));
    const app = Fastify();
    app.decorateRequest('role', 'read');
    const deps = { config: { apiReadWaitMs: 0, apiAuth: 'required' }, view: fakeView(tasks) } as unknown as ConsoleTaskDeps;
    await app.register(consoleTaskRoutes(deps));
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 100; pages++) {
      const res = await app.inject({ url: `/console/tasks?code=NO_FACE_DETECTED&limit=7${cursor ? `&cursor=${cursor}` : ''}` });
      expect(res.statusCode).toBe(200);
      const body = res.json() as { tasks: { task_id: string }[]; next_cursor: string | null };
      seen.push(...body.tasks.map((t) => t.task_id));
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    expect(seen).toEqual(tasks.filter((t) => t.error_code).map((t) => t.task_id));
    await app.close();
  });
});

describe("a replayed task's page", () => {
  it('shows who replayed it and when: the QUEUED event the replay wrote carries the key id, never the key', async () => {
    const id = '0b9d6a4e-1c2f-4e7a-9b1d-2f3c4d5e6f70';
    const replayed = replayedEvent(id, '3f2a9c0d1e4b5a67', Date.parse('2026-12-01T10:00:00Z'));
    expect(replayed).toMatchObject({ task_id: id, state: 'QUEUED', stage: null, attempt: 1, error_code: null, replayed_by: '3f2a9c0d1e4b5a67' });
    const failed = { ...task(0, 'NO_FACE_DETECTED'), task_id: id, stage: 'preprocess', replayed_by: null, at: new Date('2026-12-01T09:00:00Z') };
    const view = { find: async () => replayed, timeline: () => [failed, replayed] };
    const blob = { async *list() {} };
    const app = Fastify();
    app.decorateRequest('role', 'read');
    await app.register(consoleTaskRoutes({ config: { apiReadWaitMs: 0, apiAuth: 'required' }, view, blob } as unknown as ConsoleTaskDeps));
    const body = (await app.inject({ url: `/console/tasks/${id}` })).json() as { timeline: { state: string; replayed_by: string | null; at: string }[] };
    expect(body.timeline.map((e) => [e.state, e.replayed_by, e.at])).toEqual([
      ['FAILED', null, '2026-12-01T09:00:00.000Z'],
      ['QUEUED', '3f2a9c0d1e4b5a67', '2026-12-01T10:00:00.000Z'],
    ]);
    await app.close();
  });
});
