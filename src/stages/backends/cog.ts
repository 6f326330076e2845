/**
 * The cog backend: a Cog-compatible model server (e.g. a Sonic Cog image on a GPU node).
 * It creates the prediction idempotently with `PUT /predictions/<task>-<attempt>` and
 * `Prefer: respond-async`, polls it (progress from the percentages in its logs), cancels it when
 * the stage is told to stop, and writes the output (a data URI or a URL) to the output path.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { SonicError } from '../../core/errors.js';
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
    private readonly opts: { timeoutBaseS: number; timeoutPerAudioS: number; pollMs?: number },
  ) {}

  private async call(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Prediction> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { 'content-type': 'application/json', prefer: 'respond-async' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      signal?.throwIfAborted();
      throw new SonicError('INFERENCE_FAILED', `Cog server at ${this.baseUrl} is unreachable: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    if (res.status >= 500) throw new SonicError('INFERENCE_FAILED', `Cog server answered ${res.status}: ${text.slice(0, 300)}`);
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
      ...(seed === null ? {} : { seed }),
    };
    const deadline = Date.now() + inferenceBudgetMs(i.durationS, this.opts.timeoutBaseS, this.opts.timeoutPerAudioS);
    let p = await this.call('PUT', `/predictions/${encodeURIComponent(id)}`, { id, input }, i.signal);
    try {
      while (p.status === 'starting' || p.status === 'processing') {
        if (Date.now() > deadline) throw new SonicError('INFERENCE_TIMEOUT', `Cog prediction ${id} did not finish within its budget`);
        await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 1000));
        i.signal.throwIfAborted();
        p = await this.call('GET', `/predictions/${encodeURIComponent(id)}`, undefined, i.signal);
        const pct = lastPercent(p.logs ?? '');
        if (pct !== undefined) i.onProgress(pct);
      }
    } catch (err) {
      // stopping or timing out: do not leave the GPU busy with a result nobody will take
      await this.call('POST', `/predictions/${encodeURIComponent(id)}/cancel`).catch(() => undefined);
      throw err;
    }
    if (p.status !== 'succeeded') throw classifyModelFailure(`${p.error ?? ''}\n${p.logs ?? ''}`, `Cog prediction ${p.status}`);
    const out = Array.isArray(p.output) ? p.output[p.output.length - 1] : p.output;
    if (typeof out !== 'string' || out.length === 0) throw classifyModelFailure(`${p.logs ?? ''}\nno face: the prediction returned no video`, 'Cog prediction returned no output');
    await writeFile(i.outputPath, await this.fetchOutput(out, i.signal));
    return { seed };
  }

  private async fetchOutput(out: string, signal: AbortSignal): Promise<Buffer> {
    if (out.startsWith('data:')) return Buffer.from(out.slice(out.indexOf(',') + 1), 'base64');
    const url = new URL(out, this.baseUrl);
    const res = await fetch(url, { signal });
    if (!res.ok) throw new SonicError('INFERENCE_FAILED', `downloading the Cog output ${url.href} answered ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  }
}
