/**
 * `npm run bench:state`: the state store and the API's status view at 10k, 100k and 1M tasks,
 * before (the pre-store view: the whole compacted topic replayed into a Map on every start) and
 * after (the store-backed StatusView of src/app/status-view.ts).
 *
 * 1. Store throughput, in this process, on a fresh `StateStore` in a temporary directory: the
 *    status view's write (a row keyed by task id plus its three index entries, tenant+time,
 *    tenant+state and active-by-update for retention) in transactions of 1,000 tasks with their
 *    offset checkpoint (the tables and key shapes of src/app/status-view.ts); random point
 *    reads of known ids; a page of 50 of a tenant's newest tasks (prefix scan) and the page after
 *    it (cursor). Records or operations per second and the p50/p99 of one operation.
 * 2. The status view, per size N: the topics the view follows, made like `topology deploy` makes
 *    them (the Sonic topology's compacted status and idempotency-keys topics under a unique
 *    prefix, 12 partitions, subjects registered; the keys topic stays empty), N QUEUED events (one per task, 20 tenants, Avro through the registry like the
 *    API writes them), then four processes one after the other (bench/state-view.ts), each on
 *    its own so that its memory is the view's:
 *    - `map`: the pre-store view; every start replays the topic, so its start is its restart;
 *    - `store, first start`: the store view on an empty directory (it reads the whole topic);
 *    - `store, restart`: a new process on the same directory (it resumes from the checkpoint);
 *    - `store, restart, serving while catching up`: the same, but listening as soon as the store
 *      is open (what the restart would cost if the API did not wait for its view);
 *    - and, where this machine lets the bench make a memory cgroup (bench/memory-limit.ts), the
 *      restart and the Map view again inside a `--limit-mb` (300) memory limit, as a container
 *      runtime sets one: the limit counts the page cache the process brings in, so the store's
 *      files are dropped from the cache first; a view the kernel kills for the limit is
 *      recorded as killed, with the group's peak charge and OOM kills.
 *    Measured: serving after start = from spawning the process to the first 200 answer to
 *    `GET /v1/tasks/:id` of a known task (the process listens once the view has caught up and
 *    holds all N tasks, like the API), with the child's own breakdown: modules loaded, the
 *    view's start(), catching up; the resident set after a forced GC (`--expose-gc`) once the
 *    GETs are done, split by the kernel into anonymous memory (heap, buffers) and file-backed
 *    pages (LMDB's memory map: page cache, reclaimable); `--gets` sequential GETs over one
 *    keep-alive connection, 19 of 20 a random known id, 1 of 20 an unknown one (404), p50/p99;
 *    the store's size on disk.
 * The bench topics, subjects, groups and store directories are deleted at the end. Prints two
 * tables and writes bench/results/state.json.
 *
 *   npm run bench:state [-- --sizes 10000,100000,1000000 | --quick] [--runs 1] [--gets 5000] [--store-records N]
 *                       [--limit-mb 300] [--variants map,store-first,store-restart,store-early,store-limited,map-limited]
 *                       [--skip-views]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { StatusEvent } from '../src/app/status-view.js';
import { Context } from '../src/app/context.js';
import { idempotencyKeysTopic } from '../src/domain/paths.js';
import { TopicAdmin } from '../src/kafka/admin.js';
import { PlainProducer, type OutRecord } from '../src/kafka/io.js';
import { applyDeploy, planDeploy } from '../src/ops/deploy.js';
import { apiViewGroupPrefix } from '../src/runtime/names.js';
import { StateStore } from '../src/runtime/store.js';
import { valueSubject } from '../src/serde/wire.js';
import { deleteGroups, groupsStartingWith } from './baselines/sonicflow.js';
import { dropFileCache, MemoryLimit, type LimitUsage } from './memory-limit.js';
import { freePort, percentile, saveResults, startNode, stopProcess, summarise, table, waitFor, type Summary } from './lib.js';
import { statusEvent } from '../src/domain/status-event.js';

const CHILD = join(import.meta.dirname, 'state-view.ts');
const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string' },
    quick: { type: 'boolean', default: false },
    runs: { type: 'string', default: '1' },
    gets: { type: 'string', default: '5000' },
    tenants: { type: 'string', default: '20' },
    'store-records': { type: 'string' },
    'skip-views': { type: 'boolean', default: false },
    'limit-mb': { type: 'string', default: '300' },
    variants: { type: 'string' },
  },
});
const SIZES = (args.sizes ?? (args.quick ? '10000,100000' : '10000,100000,1000000')).split(',').map(Number);
const RUNS = Number(args.runs);
const GETS = Number(args.gets);
const TENANTS = Number(args.tenants);
const STORE_RECORDS = Number(args['store-records'] ?? Math.max(...SIZES));
const LIMIT_MB = Number(args['limit-mb']);
const LIMITS = MemoryLimit.available();
const TX = 1000;
const SEND = 10_000;
const started = Date.now();
const log = (s: string): boolean => process.stderr.write(`[bench:state ${((Date.now() - started) / 1000).toFixed(0)}s] ${s}\n`);
const ctx = new Context({ ...process.env, SONIC_LOG_LEVEL: 'error' }, 'bench-state');
const work = mkdtempSync(join(tmpdir(), 'sonic-bench-state-'));
const loadBefore = loadavg();

/** Task i's QUEUED event, as the API writes it at submit: tenant i mod TENANTS, created 1 ms apart. */
function queued(id: string, i: number, base: number): StatusEvent {
  const at = new Date(base + i);
  return statusEvent({ task_id: id, state: 'QUEUED', tenant_id: `tenant-${String(i % TENANTS).padStart(3, '0')}`, created_at: at, at });
}

/** Bytes the files of `dir` take on disk (allocated blocks, not their apparent size). */
function diskBytes(dir: string): number {
  let total = 0;
  for (const f of readdirSync(dir)) total += statSync(join(dir, f)).blocks * 512;
  return total;
}

const mib = (b: number): number => Math.round((b / 2 ** 20) * 10) / 10;
const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

// ---------------------------------------------------------------- 1. store throughput

interface OpResult {
  count: number;
  perSecond: number;
  p50: number;
  p99: number;
  unit: 'ms' | 'µs';
}

async function storeThroughput(n: number): Promise<{ records: number; diskMb: number; ops: Record<string, OpResult> }> {
  const dir = join(work, 'throughput');
  const store = StateStore.open({ path: dir });
  // the status view's tables and key shapes (src/app/status-view.ts)
  const tasks = store.table<StatusEvent>('tasks');
  const byTime = store.table<string>('tasks-by-tenant-time');
  const byState = store.table<string>('tasks-by-tenant-state');
  const active = store.table<string>('active-by-update');
  const ids: string[] = [];
  const base = Date.now() - n;
  const txMs: number[] = [];
  for (let i = 0; i < n; i += TX) {
    const rows: StatusEvent[] = [];
    for (let j = i; j < Math.min(n, i + TX); j++) {
      const id = randomUUID();
      ids.push(id);
      rows.push(queued(id, j, base));
    }
    const t = performance.now();
    store.transaction(() => {
      for (const e of rows) {
        const time = e.created_at!.toISOString();
        void tasks.put(e.task_id, e);
        void byTime.put(`${e.tenant_id}/${time}/${e.task_id}`, e.task_id);
        void byState.put(`${e.tenant_id}/${e.state}/${time}/${e.task_id}`, e.task_id);
        void active.put(`${e.at.toISOString()}/${e.task_id}`, e.task_id);
      }
      store.commitOffset('bench', 0, BigInt(i + rows.length));
    });
    txMs.push(performance.now() - t);
  }
  await store.flushed();
  const writeS = txMs.reduce((a, b) => a + b, 0) / 1000;
  const ops: Record<string, OpResult> = {
    [`write: ${TX} tasks per transaction (row + 3 index entries + checkpoint)`]: {
      count: n,
      perSecond: n / writeS,
      p50: percentile(txMs, 50),
      p99: percentile(txMs, 99),
      unit: 'ms',
    },
  };
  const timeOps = (name: string, count: number, op: () => unknown): void => {
    const us: number[] = [];
    const t0 = performance.now();
    for (let k = 0; k < count; k++) {
      const t = performance.now();
      if (op() === undefined) throw new Error(`${name}: nothing found`);
      us.push((performance.now() - t) * 1000);
    }
    const s = (performance.now() - t0) / 1000;
    ops[name] = { count, perSecond: count / s, p50: percentile(us, 50), p99: percentile(us, 99), unit: 'µs' };
  };
  timeOps('point read of a random known task', 100_000, () => tasks.get(pick(ids)));
  const tenant = (): string => `tenant-${String(Math.floor(Math.random() * TENANTS)).padStart(3, '0')}`;
  timeOps('page of 50, newest first (prefix scan)', 5000, () => byTime.scan(`${tenant()}/`, { limit: 51, reverse: true }).slice(0, 50)[0]);
  timeOps('next page of 50 (cursor)', 5000, () => {
    const prefix = `${tenant()}/`;
    const first = byTime.scan(prefix, { limit: 50, reverse: true });
    return byTime.scan(prefix, { limit: 51, reverse: true, after: first.at(-1)!.key })[0];
  });
  const diskMb = mib(diskBytes(dir));
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return { records: n, diskMb, ops };
}

// ---------------------------------------------------------------- 2. the status view

/**
 * Makes the Sonic topology's status topic and idempotency-keys topic (both compacted, subjects
 * registered) under `prefix`: the API's view follows both. The keys topic stays empty (tasks
 * submitted without an Idempotency-Key).
 */
async function deployViewTopics(prefix: string): Promise<{ topic: string; schema: string; topics: string[]; groupPrefix: string }> {
  const pctx = new Context({ ...process.env, SONIC_TOPIC_PREFIX: prefix, SONIC_LOG_LEVEL: 'error' }, 'bench-state');
  const topology = await pctx.topology();
  const specs = [topology.statusTopic, idempotencyKeysTopic(topology.prefix)].map((name) => topology.topics[name]!);
  const admin = await new TopicAdmin(ctx.kafka).connect();
  try {
    await applyDeploy(await planDeploy(specs, admin, ctx.registryAdmin), admin, ctx.registryAdmin);
    await admin.waitForLeaders(specs.map((s) => s.name));
  } finally {
    await admin.close();
  }
  return {
    topic: specs[0]!.name,
    schema: specs[0]!.valueSchema ?? 'task-status',
    topics: specs.map((s) => s.name),
    groupPrefix: apiViewGroupPrefix(pctx.config.clientId, topology),
  };
}

async function removeViewTopics(topics: string[], groupPrefix: string): Promise<void> {
  const admin = await new TopicAdmin(ctx.kafka).connect();
  try {
    await admin.delete(topics).catch((err: unknown) => log(`could not delete ${topics.join(', ')}: ${(err as Error).message}`));
  } finally {
    await admin.close();
  }
  for (const t of topics)
    await ctx.registryAdmin.deleteSubject(valueSubject(t)).catch((err: unknown) => log(`could not delete the subject of ${t}: ${(err as Error).message}`));
  await deleteGroups(ctx.kafka, await groupsStartingWith(ctx.kafka, groupPrefix));
}

/** Writes one QUEUED event per id, keyed by task id (the API's partitioning), in sends of SEND records. */
async function produce(topic: string, schema: string, ids: string[]): Promise<number> {
  const producer = await new PlainProducer(ctx.kafka).connect();
  const subject = valueSubject(topic);
  const base = Date.now() - ids.length;
  const t0 = performance.now();
  try {
    let pending: Promise<void> | undefined;
    for (let i = 0; i < ids.length; i += SEND) {
      const batch: OutRecord[] = [];
      for (let j = i; j < Math.min(ids.length, i + SEND); j++) {
        batch.push({ key: ids[j]!, value: await ctx.serde.encode(subject, schema, queued(ids[j]!, j, base)) });
      }
      // encode the next send while this one is on its way
      await pending;
      pending = producer.send(topic, batch);
    }
    await pending;
  } finally {
    await producer.close();
  }
  return ids.length / ((performance.now() - t0) / 1000);
}

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

type Variant = 'map' | 'store-first' | 'store-restart' | 'store-early' | 'store-limited' | 'map-limited';
const VARIANT_LABEL: Record<Variant, string> = {
  map: 'before: Map (replays the topic)',
  'store-first': 'after: store, first start (empty)',
  'store-restart': 'after: store, restart',
  'store-early': 'after: store, restart, serving while catching up',
  'store-limited': `after: store, restart, in a ${LIMIT_MB} MB memory limit`,
  'map-limited': `before: Map, in a ${LIMIT_MB} MB memory limit`,
};
const LIMITED: Variant[] = ['store-limited', 'map-limited'];
const VARIANTS = (Object.keys(VARIANT_LABEL) as Variant[]).filter(
  (v) => (LIMITS === true || !LIMITED.includes(v)) && (args.variants === undefined || args.variants.split(',').includes(v)),
);
if (LIMITS !== true) log(`no memory-limited runs: ${LIMITS}`);

interface ChildStats {
  times: { loaded: number; opened: number; started?: number; tailCaughtUp?: number; applied?: number; listening: number };
  initial: number;
  size: number;
  /** Memory once the view had caught up and held every task. */
  atReady?: Record<string, number>;
  now: Record<string, number>;
}

interface ViewRun {
  servingMs: number;
  child: ChildStats;
  get: { p50: number; p99: number; notFoundP99: number; count: number };
  storeDiskMb: number | null;
  /** The memory limit it ran in, the group's peak charge and OOM kills. */
  limit?: LimitUsage;
}

/** A view that did not get to serve: the kernel killed it for its memory limit, or it failed. */
interface ViewFailure {
  failed: string;
  limit?: LimitUsage;
}

/** One view process: from spawn to the first 200, then the GET run, then its stats. */
async function runView(variant: Variant, prefix: string, dir: string, ids: string[], label: string): Promise<ViewRun | ViewFailure> {
  const port = await freePort();
  const probe = ids[ids.length - 1]!;
  const limited = LIMITED.includes(variant);
  const limit = limited ? MemoryLimit.create(label, LIMIT_MB) : undefined;
  if (limited && variant !== 'map-limited') dropFileCache(dir);
  const t0 = performance.now();
  const m = startNode(
    [
      '--expose-gc',
      '--import',
      'tsx',
      CHILD,
      ...['--variant', variant.startsWith('map') ? 'map' : 'store', '--prefix', prefix, '--dir', dir, '--port', String(port), '--expect', String(ids.length)],
      ...(variant === 'store-early' ? ['--early'] : []),
    ],
    process.env,
    join(work, `${label}.log`),
    limit && ((command, a) => limit.wrap(command, a)),
  );
  try {
    const ended = (): string | undefined =>
      m.proc.exitCode !== null || m.proc.signalCode !== null ? `it exited with ${m.proc.exitCode ?? m.proc.signalCode}:\n${m.tail()}` : undefined;
    try {
      await waitFor(async () => (await get(port, `/v1/tasks/${probe}`).catch(() => ({ status: 0 }))).status === 200, {
        timeoutMs: 900_000,
        everyMs: 10,
        what: `${label}: first GET`,
        abort: ended,
      });
    } catch (err) {
      if (!limit) throw err;
      const usage = limit.usage();
      return { failed: usage.oomKills > 0 ? 'killed by the memory limit' : (err as Error).message.split('\n')[0]!, limit: usage };
    }
    const servingMs = performance.now() - t0;
    const found: number[] = [];
    const missing: number[] = [];
    for (let k = 0; k < GETS; k++) {
      const unknown = k % 20 === 19;
      const id = unknown ? randomUUID() : pick(ids);
      const t = performance.now();
      const { status } = await get(port, `/v1/tasks/${id}`);
      const ms = performance.now() - t;
      if (status !== (unknown ? 404 : 200)) throw new Error(`${label}: GET ${id} answered ${status}`);
      (unknown ? missing : found).push(ms);
    }
    // memory once the view is complete (a --early view may still be catching up)
    let child: ChildStats | undefined;
    await waitFor(
      async () => {
        child = JSON.parse((await get(port, '/stats')).body) as ChildStats;
        return child.atReady !== undefined;
      },
      { timeoutMs: 900_000, everyMs: 100, what: `${label}: view caught up` },
    );
    if (!child) throw new Error(`${label}: no stats`);
    return {
      servingMs,
      child,
      get: { p50: percentile(found, 50), p99: percentile(found, 99), notFoundP99: percentile(missing, 99), count: GETS },
      storeDiskMb: variant.startsWith('map') ? null : mib(diskBytes(dir)),
      ...(limit ? { limit: limit.usage() } : {}),
    };
  } finally {
    await stopProcess(m.proc);
    limit?.remove();
  }
}

// ---------------------------------------------------------------- run

const storeResult = await storeThroughput(STORE_RECORDS);
log(`store throughput done (${STORE_RECORDS} tasks)`);

const views: { size: number; produceRecordsPerSecond: number; variants: Record<Variant, (ViewRun | ViewFailure)[]> }[] = [];
const isRun = (r: ViewRun | ViewFailure): r is ViewRun => !('failed' in r);
process.once('exit', () => rmSync(work, { recursive: true, force: true }));
if (!args['skip-views']) {
  for (const size of SIZES) {
    const prefix = `bench_state_${randomUUID().slice(0, 8)}`;
    const { topic, schema, topics, groupPrefix } = await deployViewTopics(prefix);
    try {
      const ids = Array.from({ length: size }, () => randomUUID());
      const rate = await produce(topic, schema, ids);
      log(`${size} tasks: produced into ${topic} at ${rate.toFixed(0)} records/s`);
      const variants = Object.fromEntries(VARIANTS.map((v) => [v, [] as (ViewRun | ViewFailure)[]])) as Record<Variant, (ViewRun | ViewFailure)[]>;
      // interleaved: run i of every variant before run i + 1 of any
      for (let r = 0; r < RUNS; r++) {
        const dir = join(work, `store-${size}-${r}`);
        for (const v of VARIANTS) {
          const res = await runView(v, prefix, dir, ids, `${size}-${v}-${r}`);
          variants[v].push(res);
          const peak = res.limit ? `, limit ${res.limit.limitMb} MB: peak ${res.limit.peakMb ?? 'n/a'} MB, ${res.limit.oomKills} OOM kills` : '';
          log(
            isRun(res)
              ? `${size} tasks, ${VARIANT_LABEL[v]}: serving after ${res.servingMs.toFixed(0)} ms, RSS ${res.child.now.rss} MB (anon ${res.child.now.rssAnon}, file ${res.child.now.rssFile}), GET p50 ${res.get.p50.toFixed(2)} / p99 ${res.get.p99.toFixed(2)} ms${peak}`
              : `${size} tasks, ${VARIANT_LABEL[v]}: ${res.failed}${peak}`,
          );
        }
        rmSync(dir, { recursive: true, force: true });
      }
      views.push({ size, produceRecordsPerSecond: rate, variants });
    } finally {
      await removeViewTopics(topics, groupPrefix);
    }
  }
}

// ---------------------------------------------------------------- report

const num = (v: number, digits = 0): string =>
  Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a';
const cell = (s: Summary, digits = 0): string =>
  s.runs.length === 0 ? '–' : s.runs.length === 1 ? num(s.median, digits) : `${num(s.median, digits)} (${num(s.min, digits)}–${num(s.max, digits)})`;
const of = (rs: ViewRun[], f: (r: ViewRun) => number): Summary => summarise(rs.map(f));

console.log(`\nState store (LMDB), ${STORE_RECORDS.toLocaleString('en-US')} tasks, one process\n`);
console.log(
  table(
    ['operation', 'per second', 'p50', 'p99'],
    Object.entries(storeResult.ops).map(([name, o]) => [name, num(o.perSecond), `${num(o.p50, 1)} ${o.unit}`, `${num(o.p99, 1)} ${o.unit}`]),
  ),
);
console.log(`store on disk: ${storeResult.diskMb} MB`);

const summary = views.flatMap(({ size, variants }) =>
  (Object.keys(variants) as Variant[]).map((v) => {
    const rs = variants[v].filter(isRun);
    const limits = variants[v].flatMap((r) => (r.limit ? [r.limit] : []));
    return {
      size,
      variant: v,
      label: VARIANT_LABEL[v],
      failures: variants[v].flatMap((r) => (isRun(r) ? [] : [r.failed])),
      limitMb: limits[0]?.limitMb ?? null,
      limitPeakMb: limits.length ? summarise(limits.map((l) => l.peakMb ?? Number.NaN)) : null,
      oomKills: limits.reduce((n, l) => n + l.oomKills, 0),
      servingAfterStartMs: of(rs, (r) => r.servingMs),
      // the child's own clock (ms since its process started): modules loaded; then the view's
      // start() (for the store: its consumer group seeded with the checkpoint); then catching up
      // until it holds every task
      modulesLoadedMs: of(rs, (r) => r.child.times.loaded),
      viewStartMs: of(rs, (r) => r.child.times.started! - r.child.times.opened),
      catchUpMs: of(rs, (r) => r.child.times.applied! - r.child.times.started!),
      rssMb: of(rs, (r) => r.child.now.rss!),
      rssAnonMb: of(rs, (r) => r.child.now.rssAnon!),
      rssFileMb: of(rs, (r) => r.child.now.rssFile!),
      heapUsedMb: of(rs, (r) => r.child.now.heapUsed!),
      getP50Ms: of(rs, (r) => r.get.p50),
      getP99Ms: of(rs, (r) => r.get.p99),
      notFoundP99Ms: of(rs, (r) => r.get.notFoundP99),
      storeDiskMb: v.startsWith('map') ? null : of(rs, (r) => r.storeDiskMb ?? Number.NaN),
    };
  }),
);
if (summary.length > 0) {
  console.log(
    `\nStatus view: one process per row, ${GETS} sequential GETs (1 in 20 unknown), memory after a forced GC${RUNS > 1 ? `, median (min–max) of ${RUNS} runs` : ''}\n`,
  );
  console.log(
    table(
      [
        'tasks',
        'view',
        'serving after start, ms',
        'modules loaded, ms',
        'view start(), ms',
        'catching up, ms',
        'RSS, MB',
        'RssAnon, MB',
        'RssFile, MB',
        'GET p50, ms',
        'GET p99, ms',
        '404 p99, ms',
        'store on disk, MB',
        'memory limit: peak charge, MB (OOM kills)',
      ],
      summary.map((s) => [
        s.size.toLocaleString('en-US'),
        s.label,
        s.failures.length
          ? `${s.failures.join('; ')}${s.servingAfterStartMs.runs.length ? `; ${cell(s.servingAfterStartMs)}` : ''}`
          : cell(s.servingAfterStartMs),
        cell(s.modulesLoadedMs),
        cell(s.viewStartMs),
        cell(s.catchUpMs),
        cell(s.rssMb),
        cell(s.rssAnonMb),
        cell(s.rssFileMb),
        cell(s.getP50Ms, 2),
        cell(s.getP99Ms, 2),
        cell(s.notFoundP99Ms, 2),
        s.storeDiskMb ? cell(s.storeDiskMb) : '–',
        s.limitPeakMb ? `${cell(s.limitPeakMb)} of ${s.limitMb} (${s.oomKills})` : '–',
      ]),
    ),
  );
}
const saved = saveResults('state', {
  args: { sizes: SIZES, runs: RUNS, gets: GETS, tenants: TENANTS, storeRecords: STORE_RECORDS },
  load: { before: loadBefore, after: loadavg() },
  store: storeResult,
  views: summary,
  raw: views,
});
console.log(`\nsaved ${saved}`);
process.exit(0);
