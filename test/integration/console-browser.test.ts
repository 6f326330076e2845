/**
 * The operator console in a real headless Chromium (Debian's `chromium`, driven by playwright-core;
 * SONIC_TEST_CHROMIUM names another executable) against the real API, broker, registry and stage
 * processes (one pipeline shared by every case; inference by the command backend's stand-in, which
 * renders a real video and fails on demand). Each page's screenshot goes to docs/console/.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { ROOT } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

const KEYS = { admin: 'k-console-admin-0123456789', read: 'k-console-read-0123456789', acme: 'k-console-acme-0123456789' };
const SHOTS = join(ROOT, 'docs', 'console');
const CHROMIUM = process.env.SONIC_TEST_CHROMIUM || '/usr/bin/chromium';

/** A port free now (the stage process's metrics endpoint, which the API's overview must know before the stages start). */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });

/**
 * Polls a page-side expression until it is truthy and returns its value. Not `page.waitForFunction`:
 * after its first try Playwright re-runs that predicate with the page's own `eval` from a timer in
 * the page, which the console's CSP (no 'unsafe-eval') refuses, so it passed only when the first try
 * already held; each `page.evaluate` runs inside a DevTools protocol call, where the CSP does not apply.
 */
const until = async (page: Page, expression: string, timeoutMs: number): Promise<unknown> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value: unknown = await page.evaluate(expression);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`still false after ${timeoutMs} ms: ${expression}`);
    await new Promise((r) => setTimeout(r, 100)); // poll interval
  }
};

/** The status of a GET of `path` exactly as written (no URL normalisation, unlike fetch). */
const rawGet = (base: string, path: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const req = request({ host: hostname, port, path, method: 'GET', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });

describe('the operator console in a browser (real API, broker, registry, stages)', () => {
  let p: Pipeline;
  let browser: Browser;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-console-'));
  const brokenPrefix = join(dir, 'broken');
  const audio = join(dir, 'speech.wav');
  const short = join(dir, 'short.wav');
  const image = join(dir, 'face.png');

  const api = async (path: string, key: string, init: RequestInit = {}) => {
    const res = await fetch(`${p.api}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const waitState = async (id: string, states: string[], timeoutMs = 120_000): Promise<Record<string, unknown>> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const r = await api(`/v1/console/tasks/${id}`, KEYS.admin);
      const task = r.body.task as Record<string, unknown> | undefined;
      if (task && states.includes(String(task.state))) return r.body;
      if (Date.now() > until) throw new Error(`task ${id}: ${JSON.stringify(r.body)}\n${p.logs().stages.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 250)); // poll interval
    }
  };
  /** A page signed in with `key`. */
  const open = async (key: string, path = '/console/tasks'): Promise<Page> => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on('pageerror', (err) => console.error('page error:', err.message));
    await page.goto(`${p.api}${path}`);
    await page.fill('input[name=key]', key);
    await page.click('form.login button');
    await page.waitForSelector('header .who');
    return page;
  };

  beforeAll(async () => {
    const metricsPort = await freePort();
    const fake = `${process.execPath} ${join(ROOT, 'test/fixtures/fake-sonic.mjs')} {image} {audio} {output} --inference_steps {inference_steps} --attempt {attempt} --broken-if ${brokenPrefix}-{inference_steps}`;
    [p, browser] = await Promise.all([
      startPipeline({
        SONIC_API_AUTH: 'required',
        SONIC_API_KEYS: `ops:${KEYS.admin};role=admin,ops:${KEYS.read};role=read,acme:${KEYS.acme}`,
        SONIC_INFER_BACKEND: 'command',
        SONIC_INFER_COMMAND: fake,
        // the overview reads the stages' process (all stages in one) on its metrics endpoint
        SONIC_METRICS_PORT: String(metricsPort),
        SONIC_CONSOLE_METRICS_URLS: `http://127.0.0.1:${metricsPort}/metrics`,
        SONIC_CONSOLE_SAMPLE_MS: '500',
      }),
      chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }),
      synthSpeech('Hello from the console. This video was submitted in a browser.', audio),
      synthSpeech('One, two, three.', short),
      makePortrait(image, { width: 320, height: 400 }),
    ]);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // The three cases that wait on the pipeline run at the same time (their tasks are independent;
  // the backlog of one is part of the burst the overview watches fall): the file takes about as
  // long as the slowest of them.
  it.concurrent(
    "the overview shows a burst's backlog rise and fall, live, with every stage's figures; the topology page draws the stages with their backlog and health",
    async ({ expect }) => {
      const page = await open(KEYS.read, '/console/overview');
      await page.waitForSelector('table.stages tbody tr[data-stage=validate]');
      expect(await page.textContent('p.sampled')).toContain('metrics endpoints 1/1 answering');
      const backlog = (): Promise<number> => page.$$eval('table.stages tbody tr td.lag', (tds) => tds.reduce((a, td) => a + Number(td.textContent), 0));
      const burst = 4;
      const ids = await Promise.all(
        Array.from({ length: burst }, async () => {
          const form = new FormData();
          form.set('audio', new Blob([readFileSync(short)]), 'short.wav');
          form.set('image', new Blob([readFileSync(image)]), 'face.png');
          form.set('min_resolution', '256');
          const r = await api('/v1/tasks', KEYS.admin, { method: 'POST', body: form });
          expect(r.status, JSON.stringify(r.body)).toBe(202);
          return String(r.body.task_id);
        }),
      );
      // the page is updated by the server's events alone: watch its table rise
      let peak = 0;
      for (const until = Date.now() + 30_000; peak < 2 && Date.now() < until; await page.waitForTimeout(100)) peak = Math.max(peak, await backlog());
      expect(peak).toBeGreaterThanOrEqual(2);
      await Promise.all(ids.map((id) => waitState(id, ['SUCCEEDED'])));
      // ... and fall back to nothing, the tasks counted under their state
      // (read from Node: the console's CSP forbids the eval a string predicate needs)
      const succeeded = (): Promise<number> => page.$eval('.count[data-state=SUCCEEDED] b', (b) => Number(b.textContent));
      for (const until = Date.now() + 60_000; ; await page.waitForTimeout(200)) {
        if ((await backlog()) === 0 && (await succeeded()) >= burst) break;
        if (Date.now() > until) throw new Error(`backlog ${await backlog()}, ${await succeeded()} succeeded in the last hour`);
      }
      const validate = await page.$$eval('table.stages tbody tr[data-stage=validate] td', (tds) => tds.map((td) => td.textContent ?? ''));
      // records/s, handler p50/p99 from the stage's metrics, one replica, the rule's count and its reason
      expect(validate[3]).toMatch(/^[\d.]+ m?s \/ [\d.]+ m?s$/);
      expect(Number(validate[7])).toBe(1);
      expect(validate[8]).toMatch(/^1 lag: no backlog/);
      expect(await page.$$('.chart canvas')).not.toHaveLength(0);
      // the chart then holds the burst's records/s rising and falling
      await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });

      await page.click('header a[href="/console/topology"]');
      await page.waitForSelector('svg.topology g.stage[data-stage=infer]');
      const drawn = await page.$$eval('svg.topology g.stage', (gs) => gs.map((g) => g.getAttribute('data-stage')));
      expect(new Set(drawn)).toEqual(new Set(p.topology.stages.map((s) => s.name)));
      await page.waitForSelector('svg.topology g.stage[data-stage=infer] text.sub:has-text("backlog 0")');
      expect(await page.textContent('svg.topology g.stage[data-stage=infer]')).toMatch(/replicas 1 · ok/);
      await page.screenshot({ path: join(SHOTS, 'topology.png'), fullPage: true });
      await page.close();
    },
    180_000,
  );

  it.concurrent(
    'a task submitted from the new-task page runs through the stages, and its page shows the timeline, the inputs and the video playing',
    async ({ expect }) => {
      const page = await open(KEYS.admin, '/console/new');
      await page.waitForSelector('form.new-task');
      await page.setInputFiles('input[name=image]', image);
      await page.setInputFiles('input[name=audio]', audio);
      await page.fill('input[name=min_resolution]', '256');
      await page.screenshot({ path: join(SHOTS, 'new-task.png'), fullPage: true });
      await page.click('form.new-task button[type=submit]');
      await page.waitForURL(/\/console\/tasks\/[0-9a-f-]{36}$/);
      const id = page.url().split('/').pop()!;
      // the page follows the task live (SSE) until its video is there, and the player loads it
      await page.waitForSelector('#task-state.s-SUCCEEDED', { timeout: 120_000 });
      // (browser-side code as strings: the tests compile without the DOM types)
      const duration = await until(
        page,
        `(() => { const v = document.querySelector('video#result'); return v && v.readyState >= 1 && Number.isFinite(v.duration) && v.duration > 0 ? v.duration : false; })()`,
        20_000,
      );
      expect(duration).toBeGreaterThan(1);
      await until(page, `document.querySelector('img.input')?.naturalWidth > 0`, 20_000);
      expect(await page.evaluate(`document.querySelector('img.input').naturalWidth`)).toBe(320);
      const states = await page.$$eval('table.timeline tbody tr td:nth-child(2)', (tds) => tds.map((td) => td.textContent));
      // each state the task entered, in order (a stage's progress ticks add rows of its state)
      const order = ['QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED'];
      const ranks = states.map((s) => order.indexOf(String(s)));
      expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
      expect(new Set(states)).toEqual(
        new Set(['QUEUED', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED'].concat(states.includes('VALIDATING') ? ['VALIDATING'] : [])),
      );
      await page.screenshot({ path: join(SHOTS, 'task.png'), fullPage: true });
      // the list has it
      await page.click('header a[href="/console/tasks"]');
      await page.waitForSelector(`tr[data-task="${id}"]`);
      await page.screenshot({ path: join(SHOTS, 'tasks.png'), fullPage: true });
      // no internal path on any page
      expect(await page.content()).not.toContain(p.dataDir);
      await page.close();
    },
    180_000,
  );

  it.concurrent(
    'a failed task appears under its code in dead letters; replay from the page (dry run, then confirm) makes it succeed, and its page shows both runs',
    async ({ expect }) => {
      // the stand-in fails the tasks of this many inference steps while the file exists (no face)
      const steps = 21;
      const broken = `${brokenPrefix}-${steps}`;
      writeFileSync(broken, '');
      const form = new FormData();
      form.set('audio', new Blob([readFileSync(short)]), 'short.wav');
      form.set('image', new Blob([readFileSync(image)]), 'face.png');
      form.set('min_resolution', '256');
      form.set('inference_steps', String(steps));
      const r = await api('/v1/tasks', KEYS.admin, { method: 'POST', body: form });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      const id = String(r.body.task_id);
      const failed = await waitState(id, ['FAILED']);
      expect((failed.task as { error: { code: string } }).error.code).toBe('NO_FACE_DETECTED');
      rmSync(broken);
      expect(existsSync(broken)).toBe(false);

      const page = await open(KEYS.admin, '/console/dlq');
      await page.click('nav.tabs button[data-stage=infer]');
      // the page reads the DLQ through a consumer group of its own (a join, then to the end): seconds,
      // and more on a busy machine
      await page.waitForSelector(`section.code-group[data-code=NO_FACE_DETECTED] details[data-task="${id}"]`, { timeout: 90_000 });
      await page.click(`details[data-task="${id}"] summary`);
      const shown = await page.textContent(`details[data-task="${id}"]`);
      expect(shown).toContain('sonicflow.error.code');
      expect(shown).not.toContain(p.dataDir);
      await page.screenshot({ path: join(SHOTS, 'dead-letters.png'), fullPage: true });
      await page.click(`details[data-task="${id}"] button.replay-one`);
      await page.waitForSelector('.preview');
      expect(await page.textContent('.preview')).toContain('Dry run');
      await page.click('.preview button.confirm');
      await page.waitForSelector('p.ok');
      await waitState(id, ['SUCCEEDED']);
      await page.goto(`${p.api}/console/tasks/${id}`);
      await page.waitForSelector('#task-state.s-SUCCEEDED');
      const runs = await page.$$eval('table.timeline tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-run')));
      expect(new Set(runs)).toEqual(new Set(['1', '2']));
      expect(await page.textContent('table.timeline')).toContain('(replay)');
      await page.screenshot({ path: join(SHOTS, 'task-replayed.png'), fullPage: true });
      expect(p.logs().api).toMatch(/"action":"dlq.replay".*"key_id":"[0-9a-f]{16}"/);
      await page.close();
    },
    180_000,
  );

  it('a read-only key sees dead letters but cannot replay (no button; the API answers 403); a cross-site action is refused; a tenant key sees only its own tenant', async () => {
    const page = await open(KEYS.read, '/console/dlq');
    await page.click('nav.tabs button[data-stage=infer]');
    await page.waitForSelector('section.code-group, p.muted:has-text("No dead letters")', { timeout: 30_000 });
    expect(await page.$$('button.replay-one, button.replay-all, button.replay-code')).toHaveLength(0);
    await page.close();
    const replay = (key: string, headers: Record<string, string> = {}) =>
      api('/v1/console/dlq/infer/replay', key, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ all: true }),
      });
    expect(await replay(KEYS.read)).toMatchObject({ status: 403, body: { code: 'FORBIDDEN' } });
    expect(await replay(KEYS.acme)).toMatchObject({ status: 403, body: { code: 'FORBIDDEN' } });
    // an admin key, but the browser says the request comes from another site
    expect(await replay(KEYS.admin, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' })).toMatchObject({ status: 403 });
    expect(await replay(KEYS.admin, { origin: 'https://evil.example' })).toMatchObject({ status: 403 });
    // the tenant key: no operator pages, and the operators' tasks look missing
    expect((await api('/v1/console/dlq/infer', KEYS.acme)).status).toBe(403);
    const list = await api('/v1/console/tasks', KEYS.acme);
    expect(list.body.tasks).toEqual([]);
    const ops = await api('/v1/console/tasks', KEYS.admin);
    const some = (ops.body.tasks as { task_id: string }[])[0]!.task_id;
    expect((await api(`/v1/console/tasks/${some}`, KEYS.acme)).status).toBe(404);
    expect((await api(`/v1/console/tasks/${some}/video`, KEYS.acme)).status).toBe(404);
  }, 60_000);

  it('console pages carry a strict Content-Security-Policy and hold no data without a key', async () => {
    const res = await fetch(`${p.api}/console/tasks`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'self' 'sha256-/);
    expect(csp).toContain("frame-ancestors 'none'");
    const text = await res.text();
    expect(text).not.toContain(ROOT);
    expect(text).not.toContain('node_modules');
    // sent as written (fetch would remove the dot segments before sending): a source file next to
    // the console's, and the same encoded
    for (const path of ['/console/static/../../server.ts', '/console/static/%2e%2e/%2e%2e/server.ts', '/console/static/..%2f..%2fserver.ts']) {
      const status = await rawGet(p.api, path);
      expect(status, path).not.toBe(200);
    }
    expect((await fetch(`${p.api}/v1/console/tasks`)).status).toBe(401);
  });
});
