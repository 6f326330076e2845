/**
 * The cog backend: a Cog-compatible model server (e.g. a Sonic Cog image on a GPU node).
 * It creates the prediction idempotently with `PUT /predictions/<task>-<attempt>`, cancels it
 * when the stage is told to stop or the budget runs out, and writes the output (a data URI or a
 * URL) to the output path. Two modes:
 * - `sync` (default): one blocking PUT, as stock Cog serves it (no progress while it runs);
 * - `poll`: `Prefer: respond-async`, then `GET /predictions/<id>` until it ends, with progress
 *   from the percentages in its logs — for servers that answer GET on a prediction (stock Cog
 *   reports async progress only by webhook).
 */
import { createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SonicError } from '../../core/errors.js';
import { sleep } from '../../core/retry.js';
import { classifyModelFailure, lastPercent } from './failures.js';
import { inferenceBudgetMs, type InferBackend, type InferInput, type InferOutput } from './types.js';

interface Prediction {
  id?: string;
  status: 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled';
  output?: unknown;
  error?: string | null;
  logs?: string;
}

async function dataUri(path: string, type: string): Promise<string> {
  return `data:${type};base64,${(await readFile(path)).toString('base64')}`;
}

export class CogBackend implements InferBackend {
  readonly name = 'cog' as const;

  constructor(
    private readonly baseUrl: string,
    private readonly opts: { timeoutBaseS: number; timeoutPerAudioS: number; pollMs?: number; mode?: 'sync' | 'poll' },
  ) {}

  private async call(method: string, path: string, body?: unknown, signal?: AbortSignal, async = true): Promise<Prediction> {
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { 'content-type': 'application/json', ...(async ? { prefer: 'respond-async' } : {}) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(signal ? { signal } : {}),
      });
      text = await res.text();
    } catch (err) {
      signal?.throwIfAborted();
      throw new SonicError('INFERENCE_FAILED', `Cog server at ${this.baseUrl} is unreachable: ${(err as Error).message}`, { cause: err });
    }
    if (res.status >= 500) throw new SonicError('INFERENCE_FAILED', `Cog server answered ${res.status}: ${text.slice(0, 300)}`);
    // 409: every prediction slot is busy (Cog's answer to a new id while it runs another one)
    if (res.status === 408 || res.status === 409 || res.status === 429) {
      throw new SonicError('INFERENCE_FAILED', `Cog server is busy (${res.status}): ${text.slice(0, 300)}`);
    }
    if (res.status >= 400) throw new SonicError('INTERNAL', `Cog server refused the prediction (${res.status}): ${text.slice(0, 300)}`);
    return JSON.parse(text) as Prediction;
  }

  async render(i: InferInput): Promise<InferOutput> {
    const id = `${i.taskId}-${i.attempt}`;
    const seed = i.params.seed;
    const input = {
      image: await dataUri(i.imagePng, 'image/png'),
      audio: await dataUri(i.audio16k, 'audio/wav'),
      min_resolution: i.params.min_resolution,
      inference_steps: i.params.inference_steps,
      dynamic_scale: i.params.dynamic_scale,
      expand_ratio: i.params.expand_ratio,
      // always sent: the predictor crops by default, and infer turns this off for preprocess's crop
      crop: i.params.crop_to_face,
      ...(seed === null ? {} : { seed }),
    };
    const budgetMs = inferenceBudgetMs(i.durationS, this.opts.timeoutBaseS, this.opts.timeoutPerAudioS);
    // the budget bounds every request and wait, so a poll the server never answers times out too
    const budget = new AbortController();
    const timer = setTimeout(
      () =>
        budget.abort(
          new SonicError('INFERENCE_TIMEOUT', `Cog prediction ${id} did not finish within its budget of ${Math.round(budgetMs / 1000)} s`, {
            safe: 'inference did not finish within its time budget',
          }),
        ),
      budgetMs,
    );
    const signal = AbortSignal.any([i.signal, budget.signal]);
    const path = `/predictions/${encodeURIComponent(id)}`;
    try {
      let p: Prediction;
      try {
        // inside the try: aborted while the PUT is in flight, the prediction may exist already
        const poll = this.opts.mode === 'poll';
        p = await this.call('PUT', path, { id, input }, signal, poll);
        while (poll && (p.status === 'starting' || p.status === 'processing')) {
          await sleep(this.opts.pollMs ?? 1000, signal);
          p = await this.call('GET', path, undefined, signal);
          const pct = lastPercent(p.logs ?? '');
          if (pct !== undefined) i.onProgress(pct);
        }
      } catch (err) {
        // stopping or timing out: do not leave the GPU busy with a result nobody will take
        await this.call('POST', `${path}/cancel`, undefined, AbortSignal.timeout(CANCEL_TIMEOUT_MS)).catch(() => undefined);
        throw err;
      }
      if (p.status !== 'succeeded' && p.status !== 'failed' && p.status !== 'canceled') {
        throw new SonicError(
          'INFERENCE_FAILED',
          `Cog answered a blocking prediction with status ${p.status}; set SONIC_COG_MODE=poll for a server that answers asynchronously`,
        );
      }
      if (p.status !== 'succeeded') throw classifyModelFailure(`${p.error ?? ''}\n${p.logs ?? ''}`, `Cog prediction ${p.status}`);
      const out = Array.isArray(p.output) ? p.output[p.output.length - 1] : p.output;
      if (typeof out !== 'string' || out.length === 0)
        throw classifyModelFailure(`${p.logs ?? ''}\nno face: the prediction returned no video`, 'Cog prediction returned no output');
      await this.saveOutput(out, i.outputPath, signal);
      return { seed };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Writes the prediction's output (a data URI or a URL) to `path`, streamed and capped at {@link MAX_OUTPUT_BYTES}. */
  private async saveOutput(out: string, path: string, signal: AbortSignal): Promise<void> {
    if (out.startsWith('data:')) return writeFile(path, Buffer.from(out.slice(out.indexOf(',') + 1), 'base64'));
    const url = new URL(out, this.baseUrl);
    try {
      const res = await fetch(url, { signal });
      if (!res.ok || !res.body) throw new SonicError('INFERENCE_FAILED', `downloading the Cog output ${url.href} answered ${res.status}`);
      let size = 0;
      const cap = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          size += chunk.length;
          cb(size > MAX_OUTPUT_BYTES ? new SonicError('INFERENCE_FAILED', `the Cog output ${url.href} is larger than ${MAX_OUTPUT_BYTES} bytes`) : null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(res.body as never), cap, createWriteStream(path), { signal });
    } catch (err) {
      signal.throwIfAborted();
      if (err instanceof SonicError) throw err;
      throw new SonicError('INFERENCE_FAILED', `downloading the Cog output ${url.href} failed: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Largest rendered video taken from a Cog server, bytes: far above any real output, far below a full disk. */
const MAX_OUTPUT_BYTES = 4 * 1024 ** 3;

/** Bounds the cancel request, which is sent after the stage's own signal may have fired. */
const CANCEL_TIMEOUT_MS = 5_000;
