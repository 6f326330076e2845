/**
 * The operator console in a real headless Chromium (Debian's `chromium`, driven by playwright-core;
 * SONIC_TEST_CHROMIUM names another executable) against the real API, broker, registry and stage
 * processes (one pipeline shared by every case; inference by the command backend's stand-in, which
 * renders a real video and fails on demand). Each page's screenshot goes to docs/console/.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

describe('the operator console in a browser (real API, broker, registry, stages)', () => {
  let p: Pipeline;
  let browser: Browser;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-console-'));
  const broken = join(dir, 'broken');
  const audio = join(dir, 'speech.wav');
  const image = join(dir, 'face.png');

  const api = async (path: string, key: string, init: RequestInit = {}) => {
    const res = await fetch(`${p.api}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const waitState = async (id: string, states: string[], timeoutMs = 60_000): Promise<Record<string, unknown>> => {
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
    const fake = `${process.execPath} ${join(ROOT, 'test/fixtures/fake-sonic.mjs')} {image} {audio} {output} --inference_steps {inference_steps} --attempt {attempt} --broken-if ${broken}`;
    [p, browser] = await Promise.all([
      startPipeline({
        SONIC_API_AUTH: 'required',
        SONIC_API_KEYS: `ops:${KEYS.admin};role=admin,ops:${KEYS.read};role=read,acme:${KEYS.acme}`,
        SONIC_INFER_BACKEND: 'command',
        SONIC_INFER_COMMAND: fake,
      }),
      chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }),
      synthSpeech('Hello from the console. This video was submitted in a browser.', audio),
      makePortrait(image, { width: 320, height: 400 }),
    ]);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a task submitted from the new-task page runs through the stages, and its page shows the timeline, the inputs and the video playing', async () => {
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
    await page.waitForSelector('#task-state.s-SUCCEEDED', { timeout: 60_000 });
    // (browser-side code as strings: the tests compile without the DOM types)
    const duration = await page.waitForFunction(
      `(() => { const v = document.querySelector('video#result'); return v && v.readyState >= 1 && Number.isFinite(v.duration) && v.duration > 0 ? v.duration : false; })()`,
      undefined,
      { timeout: 20_000 },
    );
    expect(await duration.jsonValue()).toBeGreaterThan(1);
    await page.waitForFunction(`document.querySelector('img.input')?.naturalWidth > 0`);
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
  }, 90_000);

  it('a failed task appears under its code in dead letters; replay from the page (dry run, then confirm) makes it succeed, and its page shows both runs', async () => {
    writeFileSync(broken, '');
    const form = new FormData();
    form.set('audio', new Blob([readFileSync(audio)]), 'speech.wav');
    form.set('image', new Blob([readFileSync(image)]), 'face.png');
    form.set('min_resolution', '256');
    const r = await api('/v1/tasks', KEYS.admin, { method: 'POST', body: form });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id = String(r.body.task_id);
    const failed = await waitState(id, ['FAILED']);
    expect((failed.task as { error: { code: string } }).error.code).toBe('NO_FACE_DETECTED');
    rmSync(broken);
    expect(existsSync(broken)).toBe(false);

    const page = await open(KEYS.admin, '/console/dlq');
    await page.click('nav.tabs button[data-stage=infer]');
    await page.waitForSelector(`section.code-group[data-code=NO_FACE_DETECTED] details[data-task="${id}"]`, { timeout: 30_000 });
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
  }, 90_000);

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
    expect((await fetch(`${p.api}/console/static/../../server.ts`)).status).not.toBe(200);
    expect((await fetch(`${p.api}/v1/console/tasks`)).status).toBe(401);
  });
});
