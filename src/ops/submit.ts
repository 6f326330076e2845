/**
 * `sonicflow submit`: uploads an audio and a portrait to the API, prints the task id, and with
 * --wait follows the task's server-sent events with a progress bar until it ends, printing the
 * video's location (and saving it with --output).
 */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { basename } from 'node:path';
import { SonicError } from '../core/errors.js';

export interface SubmitOptions {
  api: string;
  apiKey?: string;
  audio: string;
  image: string;
  params: Record<string, string>;
  idempotencyKey?: string;
  callback?: string;
  wait: boolean;
  output?: string;
  /** Where progress goes (a TTY gets a redrawn bar). */
  progress: NodeJS.WriteStream;
}

export interface TaskStatus {
  task_id: string;
  state: string;
  stage: string | null;
  progress: number | null;
  attempt: number;
  error: { code: string; message: string } | null;
  video_url: string | null;
  /** The face and crop preprocess chose (pixels of the upright uploaded picture); null before it. */
  face?: TaskFace | null;
}

interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The `face` of a task's status (see docs/api.md). */
export interface TaskFace {
  box: Rect;
  score: number;
  faces: number;
  crop: Rect | null;
  picture_width: number;
  picture_height: number;
}

/**
 * One line about the face of a task: `face 93×104 px at (178,70), score 0.87, 1 face found;
 * crop 186×186 px at (131,23) of the 512×512 picture` (no crop without crop_to_face).
 */
export function describeFace(f: TaskFace): string {
  const rect = (r: Rect): string => `${Math.round(r.width)}×${Math.round(r.height)} px at (${Math.round(r.x)},${Math.round(r.y)})`;
  const found = `${f.faces} face${f.faces === 1 ? '' : 's'} found${f.faces > 1 ? ', the largest used' : ''}`;
  const crop = f.crop ? `crop ${rect(f.crop)}` : 'not cropped (crop_to_face false)';
  return `face ${rect(f.box)}, score ${f.score}, ${found}; ${crop} of the ${f.picture_width}×${f.picture_height} picture`;
}

/** The task's current status (`GET /v1/tasks/{id}`). */
export async function getTask(o: Pick<SubmitOptions, 'api' | 'apiKey'>, taskId: string): Promise<TaskStatus> {
  const res = await fetch(`${o.api}/v1/tasks/${encodeURIComponent(taskId)}`, { headers: headers(o) });
  return (await answer(res)) as unknown as TaskStatus;
}

const STEPS = ['QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED'];

/** `[########------] INFERRING 42%` — overall position across the stages plus the stage's progress. */
function progressBar(s: Pick<TaskStatus, 'state' | 'progress'>, width = 28): string {
  const i = Math.max(0, STEPS.indexOf(s.state));
  const within = s.progress ?? 0;
  const fraction = s.state === 'SUCCEEDED' ? 1 : Math.min(1, (i + within) / (STEPS.length - 1));
  const filled = Math.round(fraction * width);
  const pct = s.progress === null || s.state === 'SUCCEEDED' ? '' : ` ${Math.round(s.progress * 100)}%`;
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${s.state}${pct}`;
}

function headers(o: { apiKey?: string }): Record<string, string> {
  return o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {};
}

async function answer(res: Response): Promise<Record<string, unknown>> {
  const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) throw new SonicError('INVALID_REQUEST', `the API answered ${res.status} ${String(body.code ?? '')}: ${String(body.message ?? '')}`.trim());
  return body;
}

/** Submits; returns the task id. */
export async function submitTask(o: SubmitOptions): Promise<string> {
  const form = new FormData();
  form.set('audio', new Blob([await readFile(o.audio)]), basename(o.audio));
  form.set('image', new Blob([await readFile(o.image)]), basename(o.image));
  for (const [k, v] of Object.entries(o.params)) form.set(k, v);
  if (o.callback) form.set('callback_url', o.callback);
  const res = await fetch(`${o.api}/v1/tasks`, {
    method: 'POST',
    body: form,
    headers: { ...headers(o), ...(o.idempotencyKey ? { 'idempotency-key': o.idempotencyKey } : {}) },
  });
  return String((await answer(res)).task_id);
}

/** Follows the task's events until it ends; returns its last status. */
export async function waitForTask(o: Pick<SubmitOptions, 'api' | 'apiKey' | 'progress'>, taskId: string, timeoutMs = 3_600_000): Promise<TaskStatus> {
  const res = await fetch(`${o.api}/v1/tasks/${taskId}/events`, { headers: headers(o), signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok || !res.body) await answer(res);
  const tty = o.progress.isTTY;
  let last: TaskStatus | undefined;
  let buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split('\n').find((l) => l.startsWith('data: '));
      if (!data) continue;
      last = JSON.parse(data.slice(6)) as TaskStatus;
      const line = progressBar(last);
      o.progress.write(tty ? `\r${line.padEnd(60)}` : `${line}\n`);
    }
  }
  if (tty) o.progress.write('\n');
  if (!last) throw new SonicError('INTERNAL', 'the event stream ended without a status');
  return last;
}

/**
 * Downloads the task's video to `path`, streamed. The API key goes only to the API's own origin:
 * a `video_url` on a CDN, or a redirect to one, is fetched without it.
 */
export async function downloadVideo(o: Pick<SubmitOptions, 'api' | 'apiKey'>, status: TaskStatus, path: string): Promise<void> {
  const apiOrigin = new URL(o.api).origin;
  let url = new URL(status.video_url ?? `${o.api}/v1/tasks/${status.task_id}/video`, o.api);
  let res: Response | undefined;
  for (let hops = 0; hops < 5; hops++) {
    res = await fetch(url, { headers: url.origin === apiOrigin ? headers(o) : {}, redirect: 'manual' });
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) break;
    url = new URL(location, url);
  }
  if (!res || !res.ok || !res.body) return void (res ? await answer(res) : undefined);
  await pipeline(Readable.fromWeb(res.body as never), createWriteStream(path));
}
