/**
 * Two-hop chain throughput of the sonicflow runtime (exactly-once hops), batching on vs off.
 * Each run deploys a fresh copy of test/fixtures/chain.ts (4 partitions), pre-loads N records,
 * starts one process per stage with no-op handlers, and measures the committed outputs of the
 * second hop: records/s between the first and the last output.
 *
 *   node --import tsx bench/two-hop.ts [--runs 3] [--records 4000]
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TopicAdmin } from '../src/kafka/admin.js';
import { PlainProducer, readTopic } from '../src/kafka/io.js';
import { Context, loadTopologyFile } from '../src/app/context.js';
import { applyDeploy, planDeploy, removeTopology } from '../src/ops/deploy.js';
import { valueSubject } from '../src/serde/wire.js';
import { fmt, saveResults, summarise, table } from './lib.js';

const ROOT = join(import.meta.dirname, '..');
const CHAIN = join(ROOT, 'test', 'fixtures', 'chain.ts');
const { values: args } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, records: { type: 'string', default: '4000' }, ab: { type: 'boolean', default: false } },
});
const RUNS = Number(args.runs);
const N = Number(args.records);

const VARIANTS: { name: string; env: Record<string, string> }[] = [
  { name: 'batching on (500 records / 100 ms)', env: { SONIC_BATCH_MAX_RECORDS: '500', SONIC_BATCH_MAX_WAIT_MS: '100' } },
  { name: 'default (runtime: 500 records / 100 ms)', env: {} },
  { name: 'batching off (1 record per transaction)', env: { SONIC_BATCH_MAX_RECORDS: '1', SONIC_BATCH_MAX_WAIT_MS: '0' } },
];

// --ab: before/after of the retry backoff change (kafkajs' 100 ms vs 20 ms), runs interleaved
if (args.ab) {
  VARIANTS.splice(
    0,
    VARIANTS.length,
    { name: 'default batching, retry backoff 100 ms (kafkajs default, before)', env: { SONIC_KAFKA_RETRY_INITIAL_MS: '100' } },
    { name: 'default batching, retry backoff 20 ms (after)', env: { SONIC_KAFKA_RETRY_INITIAL_MS: '20' } },
    {
      name: 'batching off, retry backoff 100 ms (before)',
      env: { SONIC_BATCH_MAX_RECORDS: '1', SONIC_BATCH_MAX_WAIT_MS: '0', SONIC_KAFKA_RETRY_INITIAL_MS: '100' },
    },
    {
      name: 'batching off, retry backoff 20 ms (after)',
      env: { SONIC_BATCH_MAX_RECORDS: '1', SONIC_BATCH_MAX_WAIT_MS: '0', SONIC_KAFKA_RETRY_INITIAL_MS: '20' },
    },
  );
}

const ctx = new Context({ ...process.env, SONIC_LOG_LEVEL: 'error' }, 'bench');

async function oneRun(env: Record<string, string>): Promise<{ rps: number }> {
  const prefix = `bench_${randomUUID().slice(0, 8)}`;
  const topology = await loadTopologyFile(CHAIN, prefix);
  const admin = await new TopicAdmin(ctx.kafka).connect();
  await applyDeploy(await planDeploy(Object.values(topology.topics), admin, ctx.registryAdmin), admin, ctx.registryAdmin);
  try {
    const input = `${prefix}.in`;
    const producer = await new PlainProducer(ctx.kafka).connect();
    for (let i = 0; i < N; i += 500) {
      const batch = [];
      for (let j = i; j < Math.min(N, i + 500); j++) {
        const id = randomUUID();
        batch.push({ key: id, value: await ctx.serde.encode(valueSubject(input), 'task-status', { task_id: id, state: 'QUEUED', at: new Date() }) });
      }
      await producer.send(input, batch);
    }
    await producer.close();
    const reading = readTopic(ctx.kafka, `${prefix}.out`, { limit: N, idleMs: 60_000, timeoutMs: 600_000 });
    const procs = (['first', 'second'] as const).map((stage) =>
      spawn(process.execPath, [join(ROOT, 'bin/sonicflow.mjs'), 'run', stage, '--file', CHAIN], {
        env: { ...process.env, ...env, SONIC_TOPIC_PREFIX: prefix, SONIC_METRICS_PORT: '0', SONIC_LOG_LEVEL: 'warn' },
        stdio: 'ignore',
      }),
    );
    const out = await reading;
    const exits = procs.map((p) => new Promise((r) => p.on('exit', r)));
    procs.forEach((p) => p.kill('SIGTERM'));
    await Promise.all(exits);
    if (out.length < N) throw new Error(`only ${out.length} of ${N} outputs arrived`);
    // steady state: from the first to the last output of the second hop (start-up excluded)
    const ts = out.map((r) => r.timestamp).sort((a, b) => a - b);
    return { rps: (N - 1) / ((ts[ts.length - 1]! - ts[0]!) / 1000) };
  } finally {
    try {
      await removeTopology(topology, admin, ctx.registryAdmin);
    } finally {
      await admin.close();
    }
  }
}

const results: Record<string, { records: number; rps: ReturnType<typeof summarise> }> = {};
const rps = new Map<string, number[]>(VARIANTS.map((v) => [v.name, []]));
// interleaved: run i of every variant before run i + 1 of any, so drift in the machine's load hits all alike
for (let i = 0; i < RUNS; i++) {
  for (const v of VARIANTS) {
    const r = await oneRun(v.env);
    rps.get(v.name)!.push(r.rps);
    process.stderr.write(`${v.name}: run ${i + 1}/${RUNS}: ${r.rps.toFixed(0)} records/s\n`);
  }
}
for (const v of VARIANTS) results[v.name] = { records: N, rps: summarise(rps.get(v.name)!) };
console.log(`\nTwo-hop chain, ${N} records, 4 partitions, one process per stage, exactly-once hops (median (min–max) of ${RUNS} runs)\n`);
console.log(
  table(
    ['variant', 'records/s end to end'],
    Object.entries(results).map(([name, r]) => [name, fmt(r.rps)]),
  ),
);
console.log(`\nsaved ${saveResults(args.ab ? 'two-hop-retry-backoff' : 'two-hop', results)}`);
process.exit(0);
