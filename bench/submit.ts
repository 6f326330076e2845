/**
 * The submit API under load: how many `POST /v1/tasks` the API process accepts per second.
 *
 * Method. Deploys the Sonic topology under a unique topic prefix, starts `sonicflow api` as its
 * own process (auth disabled, rate limit 10^7/min, a private SONIC_DATA_DIR with the filesystem
 * blob store) and NO stages, so nothing downstream competes for the 2 cores. One audio and one
 * image blob are written straight into that store (FsBlobStore, `taskKey(...)`), and every
 * request is the same JSON body referencing them:
 *   {"audio":{"uri":"blob://…"},"image":{"uri":"blob://…"}}
 * so a request costs: parse and check the body, stat both blobs, build the TaskRequest, produce
 * it and its QUEUED status (acks=all, idempotent producer), update the status view — no upload.
 * No Idempotency-Key: each request is a new task. autocannon (programmatic API, in this process)
 * drives `connections` connections for `durationS` seconds after one checked warm-up request.
 * Reported: requests/s = completed requests / duration; latency p50/p99 (autocannon's histogram,
 * ms, 1 ms resolution); non-2xx answers, errors and timeouts; and the tasks that reached
 * `<prefix>.tasks.requested` (the 2xx count + the warm-up + the requests still in flight when
 * autocannon stopped, at most `connections`).
 * Everything is removed at the end: the API process, topics, subjects, groups, the data dir.
 *
 *   node --import tsx bench/submit.ts [--duration 10] [--connections 10]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { newUploadKey } from '../src/api/submit.js';
import { FsBlobStore } from '../src/blob/index.js';
import { TopicAdmin } from '../src/kafka/admin.js';
import { readTopic } from '../src/kafka/io.js';
import { Context } from '../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology } from '../src/ops/deploy.js';
import { apiViewGroupPrefix } from '../src/runtime/names.js';
import { sonicTopology } from '../topologies/sonic.js';
import { brokerList, deleteGroups, groupsStartingWith } from './baselines/sonicflow.js';
import { API_LISTENING, printed, startNode, stopProcess, waitFor } from './lib.js';

const ROOT = join(import.meta.dirname, '..');

/** The part of autocannon's programmatic API used here (autocannon ships no types). */
interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  statusCodeStats: Record<string, { count: number }>;
  requests: { average: number; total: number; sent: number };
  latency: { average: number; p50: number; p90: number; p99: number; max: number };
}
type Autocannon = (opts: {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string;
  connections: number;
  duration: number;
  timeout: number;
}) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

export interface SubmitOptions {
  brokers?: string | string[];
  /** autocannon connections (default 10) and seconds (default 10). */
  connections?: number;
  durationS?: number;
}

export interface SubmitResult {
  system: string;
  connections: number;
  durationS: number;
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p99: number; average: number; max: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** Task requests a read_committed reader finds in <prefix>.tasks.requested afterwards (2xx answers + 1 warm-up + those in flight at the end). */
  enqueued: number;
  notes: string;
}

// 1 s of 16 kHz mono 16-bit silence as WAV, and a 1x1 PNG: the API only stats referenced blobs
function wav(seconds = 1, rate = 16_000): Buffer {
  const data = Buffer.alloc(seconds * rate * 2);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVEfmt ', 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

/** Records in `topic`: the sum of its partitions' end offsets (no transactions write it). */
/** Records a read_committed reader sees in `topic` (offsets would count transaction markers too). */
async function recordsIn(ctx: Context, topic: string): Promise<number> {
  return (await readTopic(ctx.kafka, topic, { idleMs: 2000, timeoutMs: 120_000 })).length;
}

/** Starts the API alone, loads it with autocannon, and removes everything it made. */
export async function run(opts: SubmitOptions = {}): Promise<SubmitResult> {
  const connections = opts.connections ?? 10;
  const durationS = opts.durationS ?? 10;
  const prefix = `bench_api_${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(tmpdir(), 'bench-submit-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KAFKA_BROKERS: brokerList(opts.brokers),
    SONIC_TOPIC_PREFIX: prefix,
    SONIC_API_AUTH: 'disabled',
    SONIC_API_HOST: '127.0.0.1',
    // a free port, which the API prints once it listens
    SONIC_API_PORT: '0',
    SONIC_API_RATE_LIMIT_PER_MINUTE: '10000000',
    SONIC_BLOB_STORE: 'fs',
    SONIC_DATA_DIR: join(dir, 'data'),
    SONIC_STATE_DIR: join(dir, 'state'),
    SONIC_METRICS_PORT: '0',
    SONIC_LOG_LEVEL: 'warn',
  };
  const ctx = new Context({ ...env, SONIC_LOG_LEVEL: 'fatal' }, 'bench');
  const topology = sonicTopology({ prefix });
  const requested = `${prefix}.tasks.requested`;
  const admin = await new TopicAdmin(ctx.kafka).connect();
  let server: ReturnType<typeof startNode> | undefined;
  let failed = false;
  try {
    await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);
    const store = new FsBlobStore(ctx.config.dataDir);
    // in the upload area of the tenant that disabled auth gives every caller, as POST /v1/uploads would
    const audio = await store.put(newUploadKey('default'), wav(), { contentType: 'audio/wav' });
    const image = await store.put(newUploadKey('default'), PNG, { contentType: 'image/png' });
    const body = JSON.stringify({ audio: { uri: audio.uri }, image: { uri: image.uri } });

    server = startNode([join(ROOT, 'bin', 'sonicflow.mjs'), 'api'], env, join(dir, 'api.log'));
    const proc = server;
    const api = `http://127.0.0.1:${await printed(proc, API_LISTENING, { timeoutMs: 90_000, what: 'the API did not start' })}`;
    await waitFor(
      () =>
        fetch(`${api}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      {
        timeoutMs: 90_000,
        what: 'the API did not become ready',
        everyMs: 300,
        abort: () => (proc.proc.exitCode !== null ? `it exited with ${proc.proc.exitCode}:\n${proc.tail()}` : undefined),
      },
    );
    const warm = await fetch(`${api}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    if (warm.status !== 202) throw new Error(`warm-up submit answered ${warm.status}: ${await warm.text()}`);

    const r = await autocannon({
      url: `${api}/v1/tasks`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      connections,
      duration: durationS,
      timeout: 10,
    });

    const enqueued = await recordsIn(ctx, requested);
    return {
      system: 'sonicflow api',
      connections,
      durationS,
      requests: r.requests.total,
      requestsPerSecond: r.requests.total / r.duration,
      latencyMs: { p50: r.latency.p50, p99: r.latency.p99, average: r.latency.average, max: r.latency.max },
      non2xx: r.non2xx,
      errors: r.errors,
      timeouts: r.timeouts,
      statusCodes: Object.fromEntries(Object.entries(r.statusCodeStats).map(([code, s]) => [code, s.count])),
      enqueued,
      notes: [
        `POST /v1/tasks with a JSON body referencing two stored blobs (fs store), no Idempotency-Key (every request a new task)`,
        `the API process alone (no stages), auth disabled, rate limit 10^7/min; autocannon in the benchmark process, ${connections} connections x ${durationS} s`,
        `each accepted task = 2 records written with acks=all in a Kafka transaction (tasks.requested + its QUEUED status), concurrent submits sharing transactions over 4 transactional producers`,
      ].join('; '),
    };
  } catch (err) {
    failed = true;
    if (err instanceof Error && server) err.message += ` (API log kept: ${server.log})`;
    throw err;
  } finally {
    if (server) await stopProcess(server.proc, 20_000);
    await removeTopology(topology, admin, ctx.registryAdmin).catch(() => undefined);
    await admin.close();
    await deleteGroups(ctx.kafka, await groupsStartingWith(ctx.kafka, `${apiViewGroupPrefix(ctx.config.clientId, prefix)}.`));
    if (!failed) rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.filename === process.argv[1]) {
  const { values: a } = parseArgs({ options: { duration: { type: 'string', default: '10' }, connections: { type: 'string', default: '10' } } });
  console.log(JSON.stringify(await run({ durationS: Number(a.duration), connections: Number(a.connections) }), null, 2));
  process.exit(0);
}
