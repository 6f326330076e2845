/**
 * Submit latency and end-to-end latency of the Sonic pipeline on this machine (builtin backend).
 * Starts the API and every stage of the topology (one process each) under a fresh topic prefix
 * (bench/pipeline.ts), then
 *  1. measures submit → SUCCEEDED for single tasks run one at a time: median (min–max);
 *  2. submits the sample N times (multipart upload, sequential) while the stages work through
 *     them on the same 2 cores: submit latency under load, p50/p99;
 *  3. stops the stages and submits N more: submit latency of the API alone, p50/p99.
 *
 *   node --import tsx bench/pipeline-latency.ts [--submits 200] [--e2e 3]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makePortrait, speechWithSilence } from '../src/media/samples.js';
import { fmt, percentile, saveResults, summarise, table } from './lib.js';
import { startPipeline } from './pipeline.js';

const { values: args } = parseArgs({ options: { submits: { type: 'string', default: '200' }, e2e: { type: 'string', default: '3' } } });
const p = await startPipeline();
try {
  const { api, dir } = p;
  await speechWithSilence(join(dir, 'speech.wav'), {
    speech: ['Hello! I am a talking head made by sonic flow.', 'After a short pause, I keep talking.'],
    silenceS: 1,
  });
  await makePortrait(join(dir, 'portrait.jpg'), { width: 640, height: 800 });
  const audio = readFileSync(join(dir, 'speech.wav'));
  const image = readFileSync(join(dir, 'portrait.jpg'));
  const submit = async (): Promise<{ ms: number; id: string }> => {
    const fd = new FormData();
    fd.set('audio', new Blob([audio]), 'speech.wav');
    fd.set('image', new Blob([image]), 'portrait.jpg');
    fd.set('min_resolution', '512');
    const t0 = performance.now();
    const res = await fetch(`${api}/v1/tasks`, { method: 'POST', body: fd });
    const body = (await res.json()) as { task_id: string };
    if (res.status !== 202) throw new Error(`submit answered ${res.status}`);
    return { ms: performance.now() - t0, id: body.task_id };
  };
  const waitDone = async (id: string): Promise<string> => {
    for (;;) {
      const s = (await (await fetch(`${api}/v1/tasks/${id}`)).json()) as { state?: string };
      if (s.state === 'SUCCEEDED' || s.state === 'FAILED') return s.state;
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  // end to end, one task at a time on an idle pipeline
  const e2e: number[] = [];
  for (let i = 0; i < Number(args.e2e); i++) {
    const t0 = performance.now();
    const { id } = await submit();
    if ((await waitDone(id)) !== 'SUCCEEDED') throw new Error(`task ${id} failed`);
    e2e.push((performance.now() - t0) / 1000);
  }
  const measure = async (): Promise<{ p50: number; p99: number; max: number; n: number }> => {
    const ms: number[] = [];
    for (let i = 0; i < Number(args.submits); i++) ms.push((await submit()).ms);
    return { p50: percentile(ms, 50), p99: percentile(ms, 99), max: Math.max(...ms), n: ms.length };
  };
  const underLoad = await measure();
  await p.stopStages();
  await new Promise((r) => setTimeout(r, 2000));
  const alone = await measure();

  const results = {
    sample: { audio_bytes: audio.length, image_bytes: image.length },
    e2e_seconds: summarise(e2e),
    submit_ms_under_load: underLoad,
    submit_ms_api_alone: alone,
  };
  console.log(
    `\nSonic pipeline latency (builtin backend, one process per stage; ${(audio.length / 1024).toFixed(0)} KiB speech + ${(image.length / 1024).toFixed(0)} KiB portrait)\n`,
  );
  console.log(
    table(
      ['measure', 'value'],
      [
        [`submit → SUCCEEDED, s (median (min–max) of ${e2e.length})`, fmt(results.e2e_seconds, 2)],
        [`submit (multipart upload → 202), API alone: p50 / p99, ms (n=${alone.n})`, `${alone.p50.toFixed(1)} / ${alone.p99.toFixed(1)}`],
        [`submit while the stages render on the same 2 cores: p50 / p99, ms (n=${underLoad.n})`, `${underLoad.p50.toFixed(1)} / ${underLoad.p99.toFixed(1)}`],
      ],
    ),
  );
  console.log(`\nsaved ${saveResults('pipeline-latency', results)}`);
} finally {
  await p.stop();
}
process.exit(0);
