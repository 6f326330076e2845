/**
 * The Sonic pipeline on a replicated cluster: a private three-broker KRaft cluster (its own ports
 * and data, started through `stack.sh up --brokers 3`), the topology deployed with the
 * `replicated` profile (3 replicas, min.insync.replicas=2), two API processes and two stage
 * processes (each runs every stage, so every stage's group has two members). Mid-run the broker
 * that leads the most partitions holding the pipeline's records is SIGKILLed, tasks keep being
 * submitted, and later one stage process is SIGKILLed too. Every submit carries an Idempotency-Key
 * that its retries (after a 503, on the other API) reuse, as a client must. A read_committed reader
 * must then find every task exactly once in tasks.completed, and both APIs must say SUCCEEDED, alike.
 *
 * Run with `npm run test:cluster` (the `cluster` vitest project; it needs the shared registry and
 * S3 store of `npm run stack:up`, not the shared broker).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Context } from '../../src/app/context.js';
import { kafkajsOf } from '../../src/kafka/handle.js';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { readTopic } from '../../src/kafka/io.js';
import { makePortrait, makeTone } from '../../src/media/samples.js';
import type { Topology } from '../../src/runtime/topology.js';
import { countKeys, waitUntil } from '../helpers/chain.js';
import { LISTENING, deployTopology, listeningPort, onCleanup, startSonicflow, uniqueName, type SonicflowProcess } from '../helpers/infra.js';
import { startPrivateCluster, type PrivateCluster } from '../helpers/private-broker.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

const TASKS = Number(process.env.CLUSTER_TEST_TASKS ?? 24);

let cluster: PrivateCluster;
beforeAll(async () => {
  const t0 = Date.now();
  cluster = await startPrivateCluster();
  console.log(`three-broker cluster up in ${Date.now() - t0} ms on ${cluster.brokers}`);
}, 300_000);

/** The node that leads the most partitions holding records among the topology's stream and status topics. */
async function busiestLeader(ctx: Context, topology: Topology): Promise<{ node: number; led: Record<number, number> }> {
  const admin = kafkajsOf(ctx.kafka).admin();
  await admin.connect();
  try {
    const topics = Object.values(topology.topics)
      .filter((t) => t.role === 'stream' || t.role === 'status')
      .map((t) => t.name);
    const meta = await admin.fetchTopicMetadata({ topics });
    const led: Record<number, number> = { 1: 0, 2: 0, 3: 0 };
    for (const t of meta.topics) {
      const offsets = await admin.fetchTopicOffsets(t.name);
      for (const p of t.partitions) {
        const o = offsets.find((x) => x.partition === p.partitionId);
        if (o && BigInt(o.high) > BigInt(o.low)) led[p.leader] = (led[p.leader] ?? 0) + 1;
      }
    }
    const node = Number(Object.entries(led).sort((a, b) => b[1] - a[1])[0]![0]);
    return { node, led };
  } finally {
    await admin.disconnect();
  }
}

describe('a replicated cluster (three brokers, replicated profile)', () => {
  it('SIGKILL of the busiest leader broker mid-run, then of a stage process: every task exactly once in tasks.completed, SUCCEEDED in both APIs', async () => {
    const prefix = uniqueName('cluster').replace(/-/g, '_');
    const dataDir = mkdtempSync(join(tmpdir(), 'sonicflow-cluster-data-'));
    const env: Record<string, string> = {
      ...cluster.env,
      SONIC_TOPOLOGY_PROFILE: 'replicated',
      SONIC_TOPIC_PREFIX: prefix,
      SONIC_API_AUTH: 'disabled',
      SONIC_API_PORT: '0',
      SONIC_API_SECRET: 'cluster-test-secret-0123456789abcdef',
      SONIC_DATA_DIR: dataDir,
      SONIC_METRICS_PORT: '0',
      SONIC_LOG_LEVEL: 'info',
      SONIC_RETRY_DELAY_SCALE: '0.02',
      SONIC_SESSION_TIMEOUT_MS: '10000',
      SONIC_HEARTBEAT_INTERVAL_MS: '1000',
      SONIC_WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    };
    // this file's own clients stay quiet: a broker goes away on purpose
    const ctx = cluster.context({ SONIC_TOPOLOGY_PROFILE: 'replicated', SONIC_TOPIC_PREFIX: prefix, SONIC_LOG_LEVEL: 'silent' });
    const topology = await ctx.topology();
    await deployTopology(topology, ctx);
    const topic = (key: string): string => `${prefix}.${key}`;

    // the profile reached the broker: three replicas, two in sync for a write
    const admin = await new TopicAdmin(ctx.kafka).connect();
    onCleanup(() => admin.close());
    const deployed = await admin.describe([topic('tasks.requested'), topic('tasks.status'), topic('infer.dlq')]);
    for (const [name, t] of deployed) expect({ name, rf: t.replicationFactor, isr: t.configs['min.insync.replicas'] }).toEqual({ name, rf: 3, isr: '2' });

    // two API replicas (same secret, own instance ids) and two stage processes running every stage
    const apis = ['a', 'b'].map((id) => startSonicflow(['api'], { ...env, SONIC_API_INSTANCE_ID: `cluster-api-${id}` }));
    const bases = (await Promise.all(apis.map((a) => listeningPort(a, LISTENING.api, 90_000)))).map((port) => `http://127.0.0.1:${port}`);
    const stageNames = topology.stages.map((s) => s.name);
    const stageEnv = { ...env, SONIC_API_PUBLIC_URL: bases[0]! };
    const stages: SonicflowProcess[] = [startSonicflow(['run', ...stageNames], stageEnv), startSonicflow(['run', ...stageNames], stageEnv)];
    const assigned = (p: SonicflowProcess): number => (p.logs().match(/"msg":"partitions assigned"/g) ?? []).length;
    await waitUntil(
      async () => {
        for (const p of [...apis, ...stages]) if (p.proc.exitCode !== null) throw new Error(`a process exited:\n${p.logs().slice(-3000)}`);
        const ready = await Promise.all(
          bases.map((b) =>
            fetch(`${b}/readyz`).then(
              (r) => r.ok,
              () => false,
            ),
          ),
        );
        return ready.every(Boolean) && stages.every((p) => assigned(p) >= stageNames.length);
      },
      // a start-up wait, not a measurement: right after the integration tier on two busy cores, a
      // coordinator still loading and the consumers' restarts took CI past two minutes once
      240_000,
      () => `the APIs ready and both stage processes assigned:\n${stages.map((p) => p.logs().slice(-1500)).join('\n')}`,
    );

    const media = mkdtempSync(join(tmpdir(), 'sonicflow-cluster-media-'));
    await makeTone(join(media, 'tone.wav'), 1.5);
    await makePortrait(join(media, 'portrait.jpg'), { width: 256, height: 320 });
    const audio = readFileSync(join(media, 'tone.wav'));
    const image = readFileSync(join(media, 'portrait.jpg'));
    const ids: string[] = [];
    let replays = 0;
    let retried = 0;
    // every submit carries an Idempotency-Key, and its retries the same key: a submit whose outcome
    // a 503 left unknown (a commit sent, not confirmed) is a replay when retried (200, the same task
    // id), or, enqueued twice, one task that validate keeps once; either way one task per key
    const submit = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const key = `kill-leader:${prefix}:${ids.length}`;
        const fd = new FormData();
        fd.set('audio', new Blob([audio]), 'tone.wav');
        fd.set('image', new Blob([image]), 'portrait.jpg');
        fd.set('min_resolution', '256');
        // the API may answer 503 while the cluster elects new leaders: the client tries again, on
        // the other replica each time (the key taken by one is a replay on the other)
        for (let attempt = 1; ; attempt++) {
          const res = await fetch(`${bases[(ids.length + attempt) % 2]!}/v1/tasks`, { method: 'POST', body: fd, headers: { 'Idempotency-Key': key } });
          const body = (await res.json()) as { task_id?: string; idempotent_replay?: boolean };
          if (res.status === 202 || (res.status === 200 && body.idempotent_replay === true)) {
            if (res.status === 200) replays++;
            if (attempt > 1) retried++;
            ids.push(String(body.task_id));
            break;
          }
          if (res.status !== 503 || attempt >= 20) throw new Error(`submit ${key} answered ${res.status}: ${JSON.stringify(body)}`);
          await new Promise((r) => setTimeout(r, 1000)); // the client's back-off
        }
      }
    };
    const states = async (base: string): Promise<Record<string, unknown>[]> =>
      Promise.all(ids.map(async (id) => (await (await fetch(`${base}/v1/tasks/${id}`)).json()) as Record<string, unknown>));
    const succeeded = async (): Promise<number> => (await states(bases[0]!)).filter((s) => s.state === 'SUCCEEDED').length;

    // a third of the tasks, then kill the leader of the busiest partitions once the first are through
    const third = Math.ceil(TASKS / 3);
    const t0 = Date.now();
    const since = (): string => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
    await submit(third);
    await waitUntil(async () => (await succeeded()) >= 2, 120_000, 'the first tasks through');
    const { node, led } = await busiestLeader(ctx, topology);
    const doneAtKill = await succeeded();
    await cluster.kill(node);
    console.log(`${since()}: SIGKILLed broker ${node} (leads partitions with records: ${JSON.stringify(led)}) with ${doneAtKill} of ${ids.length} tasks done`);

    // the second third is submitted while the cluster fails over; once some of it is through, one
    // stage process dies with work in flight, and the last third goes to the survivor alone
    await submit(third);
    console.log(`${since()}: ${ids.length} submitted`);
    await waitUntil(async () => (await succeeded()) >= third + 2, 180_000, 'tasks through after the broker kill');
    const victim = stages[1]!;
    victim.proc.kill('SIGKILL');
    await victim.exited;
    console.log(`${since()}: SIGKILLed a stage process with ${await succeeded()} of ${ids.length} tasks done`);
    await submit(TASKS - 2 * third);

    // on a timeout, name the tasks that are not through, where each is, and what the surviving
    // stage process logged about them
    let last: Record<string, unknown>[] = [];
    await waitUntil(
      async () => {
        last = await states(bases[0]!);
        return last.filter((s) => s.state === 'SUCCEEDED').length === TASKS;
      },
      240_000,
      () => {
        const stuck = last.filter((s) => s.state !== 'SUCCEEDED');
        const about = stages[0]!
          .logs()
          .split('\n')
          .filter((l) => stuck.some((s) => typeof s.task_id === 'string' && l.includes(s.task_id)));
        return `every task SUCCEEDED; not through: ${JSON.stringify(stuck.map((s) => ({ task_id: s.task_id, state: s.state, stage: s.stage, attempt: s.attempt, error_code: s.error_code })))}\nthe surviving stage process on them:\n${about.join('\n').slice(-4000)}\nits last lines:\n${stages[0]!.logs().slice(-3000)}`;
      },
    );
    console.log(`${since()}: every task SUCCEEDED`);
    // nothing left in flight: no late duplicate can come after this
    await waitConsumedToEnd(ctx, topology, stageNames, 120_000);

    console.log(`${since()}: every stage consumed to the end`);
    // every task once in tasks.completed (committed records only)
    const completed = await readTopic(ctx.kafka, topic('tasks.completed'), { isolation: 'read_committed', idleMs: 2000, timeoutMs: 120_000 });
    const counts = countKeys(completed);
    const missing = ids.filter((id) => !counts.has(id));
    const doubled = [...counts].filter(([, n]) => n > 1).map(([k]) => k);
    // one task per key: no two keys gave the same task id
    expect(new Set(ids).size).toBe(TASKS);
    // a doubled or missing task: what every stage process (the killed one too) logged about it
    for (const id of [...missing, ...doubled]) {
      const about = stages.flatMap((p, i) =>
        p
          .logs()
          .split('\n')
          .filter((l) => l.includes(id))
          .map((l) => `[stage process ${i}] ${l}`),
      );
      console.log(`task ${id} (${counts.get(id) ?? 0} times in tasks.completed):\n${about.join('\n').slice(-6000)}`);
    }
    expect({ missing, doubled, extra: counts.size - ids.length }).toEqual({ missing: [], doubled: [], extra: 0 });

    // both APIs' status views say SUCCEEDED, and agree on everything but their own links
    const own = (s: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(s).filter(([k]) => !k.endsWith('_url')));
    const [a, b] = await Promise.all(bases.map(states));
    expect(a!.map((s) => s.state)).toEqual(ids.map(() => 'SUCCEEDED'));
    expect(b!.map(own)).toEqual(a!.map(own));
    const count = (msg: string): number => stages.reduce((n, p) => n + p.logs().split(`"msg":"${msg}`).length - 1, 0);
    console.log(
      `${since()}: ${TASKS} tasks (${retried} submits retried after a 503, ${replays} answered as a replay), broker ${node} and a stage process SIGKILLed, every task once in tasks.completed; ` +
        `the stage processes logged ${count('transaction failed')} failed transactions, ${count('consumer crashed')} consumer restarts`,
    );
  }, 600_000);
});
