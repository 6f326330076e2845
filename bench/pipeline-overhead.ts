/**
 * The Sonic pipeline's own cost per task (issue 16): submit → SUCCEEDED less the time spent inside
 * the stages' handlers, per hop and in total, with the topology's default settings (builtin
 * backend, one process per stage, bench/pipeline.ts). Two parts:
 *  a. the demo's sample (what `npm run demo` submits), --demo times, one task at a time;
 *  b. a burst of --burst small tasks (about a second of speech, a 256×320 portrait,
 *     min_resolution 256), all submitted at once.
 * Every task's status events are read back from the status topic (read_committed, decoded via the
 * registry); bench/overhead.ts says which event marks what. Handler times: infer's from its start
 * and done events; the other stages write no start event, so theirs come from each stage's
 * handler histogram (/metrics), scraped around every task in (a) (one task in flight: the
 * difference is that task's time) and around the whole burst in (b) (the stage's mean).
 * Every process runs on this machine: the events' `at` (each process's clock) are comparable.
 *
 *   node --import tsx bench/pipeline-overhead.ts [--demo 5] [--burst 100]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readTopic } from '../src/kafka/io.js';
import { makePortrait, speechWithSilence, synthSpeech } from '../src/media/samples.js';
import {
  HOPS,
  STAGES,
  overheadOf,
  spread,
  timelineOf,
  workerWaits,
  type PathStage,
  type Spread,
  type StatusEventAt,
  type TaskOverhead,
  type Timeline,
} from './overhead.js';
import { saveResults, table } from './lib.js';
import { startPipeline, type Pipeline } from './pipeline.js';

type OtherStage = Exclude<PathStage, 'infer'>;
const OTHERS: OtherStage[] = ['validate', 'preprocess', 'encode', 'publish'];
/**
 * The stage whose transaction commits at the start of each hop. Not measured: the API's, and
 * dispatch's in the infer hop (the dispatcher records no transaction metric).
 */
const COMMITS_BEFORE: string[][] = [[], ['validate'], ['preprocess'], ['infer'], ['encode']];

interface Sample {
  audio: Buffer;
  image: Buffer;
  minResolution: string;
}
interface Submitted {
  id: string;
  /** Client clock (Date.now) just before the POST. */
  clientAt: number;
}
/** Per stage: handler seconds and transaction seconds, sum and count (ok outcomes). */
type Scrape = Record<string, { handler: [number, number]; tx: [number, number] }>;

async function scrape(p: Pipeline): Promise<Scrape> {
  const out: Scrape = {};
  for (const [stage, port] of Object.entries(p.metricsPorts)) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const m = { handler: [0, 0] as [number, number], tx: [0, 0] as [number, number] };
    for (const line of text.split('\n')) {
      const hit = /^sonicflow_(handler|transaction)_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/.exec(line);
      if (!hit || !hit[3]!.includes(`stage="${stage}"`)) continue;
      if (hit[1] === 'handler' && !hit[3]!.includes('outcome="ok"')) continue;
      m[hit[1] === 'handler' ? 'handler' : 'tx'][hit[2] === 'sum' ? 0 : 1] += Number(hit[4]);
    }
    out[stage] = m;
  }
  return out;
}

/** Mean ms per record (handler) or per transaction between two scrapes, and the count. */
function meanMs(before: Scrape, after: Scrape, stage: string, what: 'handler' | 'tx'): { ms: number; n: number } {
  const [s0, n0] = before[stage]![what];
  const [s1, n1] = after[stage]![what];
  return { ms: n1 > n0 ? ((s1 - s0) / (n1 - n0)) * 1000 : Number.NaN, n: n1 - n0 };
}

async function submit(p: Pipeline, s: Sample): Promise<Submitted> {
  const fd = new FormData();
  fd.set('audio', new Blob([s.audio]), 'speech.wav');
  fd.set('image', new Blob([s.image]), 'portrait.jpg');
  fd.set('min_resolution', s.minResolution);
  const clientAt = Date.now();
  const res = await fetch(`${p.api}/v1/tasks`, { method: 'POST', body: fd });
  const body = (await res.json()) as { task_id: string };
  if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${JSON.stringify(body)}`);
  return { id: body.task_id, clientAt };
}

/** Waits until every task has ended (polling the API); throws for one that failed. */
async function waitDone(p: Pipeline, ids: string[], everyMs: number): Promise<void> {
  const pending = new Set(ids);
  const until = Date.now() + 30 * 60_000;
  while (pending.size > 0) {
    if (Date.now() > until) throw new Error(`${pending.size} tasks not done after 30 minutes`);
    for (const id of [...pending]) {
      const s = (await (await fetch(`${p.api}/v1/tasks/${id}`)).json()) as { state?: string; error?: unknown };
      if (s.state === 'FAILED') throw new Error(`task ${id} failed: ${JSON.stringify(s.error)}`);
      if (s.state === 'SUCCEEDED') pending.delete(id);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Every task's status events, from the status topic. */
async function statusEvents(p: Pipeline, tasks: number): Promise<Map<string, StatusEventAt[]>> {
  const raw = await readTopic(p.ctx.kafka, p.topology.statusTopic, { isolation: 'read_committed', idleMs: 5000, timeoutMs: 120_000 });
  const byTask = new Map<string, StatusEventAt[]>();
  for (const r of raw) {
    if (!r.value) continue;
    const v = (await p.ctx.serde.decode<Omit<StatusEventAt, 'at'> & { at: Date | number }>(r.value)).value;
    const e = { ...v, at: v.at instanceof Date ? v.at.getTime() : Number(v.at) };
    byTask.set(e.task_id, [...(byTask.get(e.task_id) ?? []), e]);
  }
  if (byTask.size < tasks) throw new Error(`status events of ${byTask.size} tasks read, ${tasks} submitted`);
  return byTask;
}

interface PartResult {
  tasks: number;
  skipped: Record<string, string>;
  handlerSource: string;
  e2eMs: Spread;
  clientE2eMs: Spread;
  submitToQueuedMs: Spread;
  hops: { hop: string; overheadMs: Spread; commitBeforeMs: Record<string, number> }[];
  workerWaitMs: Spread;
  totalOverheadMs: Spread;
  handlerMs: Record<PathStage, Spread>;
  perTask: (TaskOverhead & { clientE2eMs: number; submitToQueuedMs: number })[];
}

function analyse(
  submitted: Submitted[],
  events: Map<string, StatusEventAt[]>,
  handlerOf: (id: string) => Record<OtherStage, number>,
  commits: Record<string, number>,
  handlerSource: string,
): PartResult {
  const skipped: Record<string, string> = {};
  const lines: Timeline[] = [];
  for (const s of submitted) {
    const t = timelineOf(s.id, events.get(s.id) ?? []);
    if ('skipped' in t) skipped[s.id] = t.skipped;
    else lines.push(t);
  }
  // one infer process, concurrency 1 (src/stages/infer.ts): one render at a time
  const waits = workerWaits(lines, 1);
  const clientAt = new Map(submitted.map((s) => [s.id, s.clientAt]));
  const perTask = lines.map((t) => ({
    ...overheadOf(t, handlerOf(t.taskId), waits.get(t.taskId) ?? 0),
    clientE2eMs: t.end.publish - clientAt.get(t.taskId)!,
    submitToQueuedMs: t.queuedAt - clientAt.get(t.taskId)!,
  }));
  const col = (f: (o: (typeof perTask)[number]) => number): Spread => spread(perTask.map(f));
  return {
    tasks: perTask.length,
    skipped,
    handlerSource,
    e2eMs: col((o) => o.e2eMs),
    clientE2eMs: col((o) => o.clientE2eMs),
    submitToQueuedMs: col((o) => o.submitToQueuedMs),
    hops: HOPS.map((hop, i) => ({
      hop,
      overheadMs: col((o) => o.hopMs[i]!),
      commitBeforeMs: Object.fromEntries(COMMITS_BEFORE[i]!.map((s) => [s, commits[s]!])),
    })),
    workerWaitMs: col((o) => o.workerWaitMs),
    totalOverheadMs: col((o) => o.overheadMs),
    handlerMs: Object.fromEntries(STAGES.map((s) => [s, col((o) => o.handlerMs[s])])) as Record<PathStage, Spread>,
    perTask,
  };
}

const ms = (n: number): string => (Number.isFinite(n) ? n.toFixed(0) : 'n/a');
const figures = (s: Spread): string[] => [ms(s.median), ms(s.p90), ms(s.max), ms(s.mean)];

function report(title: string, r: PartResult): string {
  const rows = r.hops.map((h, i) => [
    h.hop,
    ...figures(h.overheadMs),
    i === 0
      ? 'api (not measured)'
      : `${Object.entries(h.commitBeforeMs).map(([s, v]) => `${s} ${ms(v)}`)[0]}${i === 2 ? ', then dispatch (not measured)' : ''}`,
  ]);
  rows.push(['waiting for a free infer worker', ...figures(r.workerWaitMs), '']);
  rows.push(['total overhead (sum of the hops)', ...figures(r.totalOverheadMs), '']);
  rows.push(['QUEUED → SUCCEEDED', ...figures(r.e2eMs), '']);
  rows.push(['client: submit → QUEUED (upload, media stored)', ...figures(r.submitToQueuedMs), '']);
  rows.push(['client: submit → SUCCEEDED', ...figures(r.clientE2eMs), '']);
  const handlers = STAGES.map((s) => [s, ...figures(r.handlerMs[s]), s === 'infer' ? 'per task (its events)' : r.handlerSource]);
  const skipped = Object.keys(r.skipped).length;
  return [
    `\n${title}: ${r.tasks} tasks${skipped ? ` (${skipped} left out: ${[...new Set(Object.values(r.skipped))].join(', ')})` : ''}, ms\n`,
    table(['hop', 'median', 'p90', 'max', 'mean', 'commit before it, mean'], rows),
    '',
    table(['handler', 'median', 'p90', 'max', 'mean', 'measured'], handlers),
  ].join('\n');
}

export interface OverheadOptions {
  /** Runs of the demo sample, one at a time (default 5). */
  demo: number;
  /** Small tasks submitted at once (default 100). */
  burst: number;
}

export interface OverheadResults {
  settings: string;
  samples: Record<'demo' | 'small', { audio_bytes: number; image_bytes: number; min_resolution: number }>;
  demo: PartResult;
  burst: PartResult;
}

/** Starts the pipeline, runs both parts, stops it; `log` hears the progress. */
export async function overheadBench(o: OverheadOptions, log: (s: string) => void): Promise<OverheadResults> {
  const p = await startPipeline();
  try {
    const dir = p.dir;
    // (a) the demo's sample, as src/ops/demo.ts makes it
    await speechWithSilence(join(dir, 'demo.wav'), {
      speech: [
        'Hello! I am a talking head made by sonic flow, from one picture and this recording.',
        'After a short pause, I keep talking, and my face keeps moving.',
      ],
      silenceS: 1.5,
    });
    await makePortrait(join(dir, 'demo.jpg'), { width: 640, height: 800 });
    const demo: Sample = { audio: readFileSync(join(dir, 'demo.wav')), image: readFileSync(join(dir, 'demo.jpg')), minResolution: '512' };
    await synthSpeech('Hello, this is a short test.', join(dir, 'small.wav'));
    await makePortrait(join(dir, 'small.jpg'), { width: 256, height: 320 });
    const small: Sample = { audio: readFileSync(join(dir, 'small.wav')), image: readFileSync(join(dir, 'small.jpg')), minResolution: '256' };

    // lets the last transaction's metrics land before a scrape
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 1500));
    const demoRuns: Submitted[] = [];
    const demoHandlers = new Map<string, Record<OtherStage, number>>();
    const first = await scrape(p);
    for (let i = 0; i < o.demo; i++) {
      log(`demo sample ${i + 1}/${o.demo}`);
      const before = await scrape(p);
      const s = await submit(p, demo);
      await waitDone(p, [s.id], 50);
      await settle();
      const after = await scrape(p);
      const h = Object.fromEntries(OTHERS.map((st) => [st, meanMs(before, after, st, 'handler')])) as Record<OtherStage, { ms: number; n: number }>;
      // exactly one record per stage between the scrapes, or the difference is not this task's
      if (Object.values(h).some((x) => x.n !== 1)) throw new Error(`task ${s.id}: other records were handled meanwhile`);
      demoHandlers.set(s.id, Object.fromEntries(OTHERS.map((st) => [st, h[st].ms])) as Record<OtherStage, number>);
      demoRuns.push(s);
    }
    const afterDemo = await scrape(p);

    // (b) the burst
    log(`burst of ${o.burst} small tasks`);
    const burst = await Promise.all(Array.from({ length: o.burst }, () => submit(p, small)));
    await waitDone(
      p,
      burst.map((s) => s.id),
      500,
    );
    await settle();
    const afterBurst = await scrape(p);
    const burstMeans = Object.fromEntries(OTHERS.map((st) => [st, meanMs(afterDemo, afterBurst, st, 'handler').ms])) as Record<OtherStage, number>;

    log('reading the status events');
    const events = await statusEvents(p, demoRuns.length + burst.length);
    const commits = (a: Scrape, b: Scrape): Record<string, number> =>
      Object.fromEntries(['validate', 'preprocess', 'infer', 'encode'].map((s) => [s, meanMs(a, b, s, 'tx').ms]));
    return {
      settings: 'topology defaults, builtin backend, one process per stage (API + 7), local single-broker stack',
      samples: {
        demo: { audio_bytes: demo.audio.length, image_bytes: demo.image.length, min_resolution: 512 },
        small: { audio_bytes: small.audio.length, image_bytes: small.image.length, min_resolution: 256 },
      },
      demo: analyse(demoRuns, events, (id) => demoHandlers.get(id)!, commits(first, afterDemo), 'per task (handler histogram, one task in flight)'),
      burst: analyse(burst, events, () => burstMeans, commits(afterDemo, afterBurst), 'the stage mean over the burst (handler histogram)'),
    };
  } finally {
    await p.stop();
  }
}

/** Both parts' tables. */
export function overheadReport(r: OverheadResults): string {
  return [report('(a) the demo sample, one at a time', r.demo), report(`(b) a burst of ${r.burst.tasks} small tasks submitted at once`, r.burst)].join('\n');
}

if (import.meta.filename === process.argv[1]) {
  const { values: args } = parseArgs({ options: { demo: { type: 'string', default: '5' }, burst: { type: 'string', default: '100' } } });
  const results = await overheadBench({ demo: Number(args.demo), burst: Number(args.burst) }, (s) => console.error(`overhead bench: ${s}`));
  console.log(overheadReport(results));
  console.log(`\nsaved ${saveResults('pipeline-overhead', results)}`);
  process.exit(0);
}
