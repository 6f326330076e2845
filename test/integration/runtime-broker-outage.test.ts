/**
 * Broker outages against a private broker (its own ports and data, so the shared one is never
 * disturbed): a stage started while the broker is down waits for it; a running stage survives a
 * stopped broker for a minute and a frozen one for 40 s in the same process; and after a failed
 * transaction a partition whose committed offset lies below the log start goes on from the log
 * start instead of looping between seek and reset. Every input must come out exactly once.
 */
import { randomUUID } from 'node:crypto';
import { get } from 'node:http';
import { beforeAll, describe, expect, it } from 'vitest';
import { retry } from '../../src/core/retry.js';
import { kafkajsOf } from '../../src/kafka/handle.js';
import { PlainProducer, TxProducer, readTopic, type InRecord } from '../../src/kafka/io.js';
import { groupId, transactionalId } from '../../src/runtime/names.js';
import { Context, loadTopologyFile } from '../../src/app/context.js';
import { valueSubject } from '../../src/serde/serde.js';
import { CHAIN_FILE, countKeys, startStage, waitUntil, type Chain, type StageProcess } from '../helpers/chain.js';
import { LISTENING, deployTopology, listeningPort, onCleanup, uniqueName } from '../helpers/infra.js';
import { startPrivateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

let broker: PrivateBroker;
let ctx: Context;

beforeAll(async () => {
  broker = await startPrivateBroker();
  // this file's own clients stay quiet: the broker goes away on purpose
  ctx = new Context({ ...process.env, ...broker.env, SONIC_LOG_LEVEL: 'silent' }, 'test');
});

async function deployChain(): Promise<Chain> {
  const prefix = uniqueName('outage').replace(/-/g, '_');
  const topology = await loadTopologyFile(CHAIN_FILE, prefix);
  await deployTopology(topology, ctx);
  return { prefix, topology, topic: (name) => `${prefix}.${name}` };
}

/** Produces `n` fresh tasks to the chain input (to `partition` when given); returns their keys. */
async function produce(chain: Chain, n: number, partition?: number): Promise<string[]> {
  const topic = chain.topic('in');
  const records = [];
  for (let i = 0; i < n; i++) {
    const id = randomUUID();
    const value = await ctx.serde.encode(valueSubject(topic), 'task-status', { task_id: id, state: 'QUEUED', at: new Date() });
    records.push({ key: id, value, ...(partition === undefined ? {} : { partition }) });
  }
  // right after an outage the broker may not know its controller yet: connecting can fail a few times
  const p = await retry(() => new PlainProducer(ctx.kafka).connect(), { initialMs: 500, maxMs: 2000, maxAttempts: 20 });
  for (let i = 0; i < records.length; i += 100) await p.send(topic, records.slice(i, i + 100));
  await p.close();
  return records.map((r) => r.key);
}

function readAll(topic: string, idleMs = 1500): Promise<InRecord[]> {
  return readTopic(ctx.kafka, topic, { isolation: 'read_committed', idleMs, timeoutMs: 60_000 });
}

/** Every key once, no other key. */
async function expectExactlyOnce(topic: string, keys: string[]): Promise<void> {
  const counts = countKeys(await readAll(topic));
  const missing = keys.filter((k) => !counts.has(k));
  const doubled = [...counts].filter(([, n]) => n > 1);
  expect({ missing: missing.length, doubled: doubled.length, extra: counts.size - keys.length }).toEqual({ missing: 0, doubled: 0, extra: 0 });
}

function stage(chain: Chain, env: Record<string, string> = {}): StageProcess {
  return startStage(chain, 'first', { ...broker.env, SONIC_RECONNECT_BACKOFF_MAX_MS: '5000', ...env });
}

/** The status of GET `path` on the stage's metrics port, on a fresh connection (the broker helper blocks the event loop, so a kept-alive one may have been closed meanwhile). */
async function probe(s: StageProcess, path: '/readyz' | '/healthz'): Promise<number> {
  const port = await listeningPort(s, LISTENING.metrics, 30_000);
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 10_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error(`${path} did not answer within 10 s`)));
    req.on('error', reject);
  });
}

const handled = (s: StageProcess): number => (s.logs().match(/"msg":"handling"/g) ?? []).length;

async function stopStage(s: StageProcess): Promise<void> {
  s.proc.kill('SIGTERM');
  expect(await s.exited).toBe(0);
}

describe('broker outages (private broker, stages as child processes)', () => {
  it('a stage started while the broker is down waits, alive and not ready, then joins and works when it returns; SIGTERM ends such a wait at once', async () => {
    const chain = await deployChain();
    const keys = await produce(chain, 200);
    broker.stop();
    const s = stage(chain);
    const quitter = stage(chain);
    try {
      // SIGTERM during the wait: exit 0 at once
      await quitter.waitForLog(/broker unreachable; waiting to try again/, 30_000);
      const t0 = Date.now();
      quitter.proc.kill('SIGTERM');
      expect(await quitter.exited).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5_000);

      // past kafkajs' own retries (8 in each try), a second try failed too and it waits for a third
      await s.waitForLog(/"attempt":2,"next_try_in_ms":\d+,"msg":"broker unreachable; waiting to try again"/, 60_000);
      expect(s.proc.exitCode).toBeNull();
      expect(await probe(s, '/healthz')).toBe(200);
      expect(await probe(s, '/readyz')).toBe(503);
      // each wait is logged with its attempt and the next delay
      expect(s.logs()).toMatch(/"attempt":\d+,"next_try_in_ms":\d+,"msg":"broker unreachable; waiting to try again"/);
      expect(s.logs()).not.toContain('"msg":"stage running"');
    } finally {
      broker.start();
    }
    const back = Date.now();
    await waitUntil(async () => (await probe(s, '/readyz')) === 200, 60_000, '/readyz 200 once the broker is back');
    console.log(`started while the broker was down: ready ${Date.now() - back} ms after the broker was back`);
    await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length >= keys.length, 60_000, 'every output');
    await waitConsumedToEnd(ctx, chain.topology, ['first']);
    await stopStage(s);
    await expectExactlyOnce(chain.topic('mid'), keys);
  }, 150_000);

  for (const outage of [
    { kind: 'stopped', ms: 60_000, begin: () => broker.stop(), end: () => broker.start() },
    { kind: 'frozen', ms: 40_000, begin: () => broker.freeze(), end: () => broker.thaw() },
  ] as const) {
    it(`a running stage survives a ${outage.kind} broker for ${outage.ms / 1000} s in the same process: every input comes out exactly once`, async () => {
      const chain = await deployChain();
      const keys = await produce(chain, 400);
      // 50 ms per record: the 400 take about 5 s of work per partition, so the outage lands mid-flow
      const s = stage(chain, { CHAIN_DELAY_MS: '50' });
      await waitUntil(() => handled(s) >= 60, 60_000, 'records flowing');
      const pid = s.proc.pid;
      outage.begin();
      let readyDuring: number[] = [];
      try {
        const until = Date.now() + outage.ms;
        while (Date.now() < until) {
          // the outage under test lasts outage.ms; readiness is sampled every 5 s meanwhile
          await new Promise((r) => setTimeout(r, 5_000));
          readyDuring.push(await probe(s, '/readyz'));
          expect(s.proc.exitCode).toBeNull();
        }
      } finally {
        outage.end();
      }
      const back = Date.now();
      // after the first seconds (cached answers, kafkajs noticing) the stage says it is not ready
      readyDuring = readyDuring.slice(1);
      expect(readyDuring.length).toBeGreaterThan(3);
      expect(readyDuring.every((c) => c === 503)).toBe(true);
      const more = await produce(chain, 100);
      await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length >= keys.length + more.length, 120_000, 'every output after the outage');
      await waitUntil(async () => (await probe(s, '/readyz')) === 200, 60_000, '/readyz 200 after the outage');
      const count = (msg: string): number => s.logs().split(`"msg":"${msg}`).length - 1;
      console.log(
        `${outage.kind} broker: every output and ready ${Date.now() - back} ms after the broker was back; ` +
          `consumer restarts ${count('consumer crashed')}, failed transactions ${count('transaction failed')}, rejoins ${(s.logs().match(/"rejoined":true/g) ?? []).length}`,
      );
      // a minute without a broker is more than kafkajs' own retries last: the consumer was restarted, not the process
      if (outage.kind === 'stopped') expect(count('consumer crashed')).toBeGreaterThan(0);
      await waitConsumedToEnd(ctx, chain.topology, ['first']);
      // the same process did it all: no exit, no restart, no failure
      expect(s.proc.exitCode).toBeNull();
      expect(s.proc.pid).toBe(pid);
      expect(s.logs()).not.toMatch(/"state":"failed"|"msg":"stage crashed"/);
      await stopStage(s);
      await expectExactlyOnce(chain.topic('mid'), [...keys, ...more]);
    }, 240_000);
  }

  it('after a failed transaction, a partition committed below its log start (or not at all) goes on from the log start instead of looping', async () => {
    const chain = await deployChain();
    const input = chain.topic('in');
    // partitions 0 and 1: 56 records each, of which the first 50 are then deleted
    const p0 = await produce(chain, 56, 0);
    const p1 = await produce(chain, 56, 1);
    const admin = kafkajsOf(ctx.kafka).admin();
    await admin.connect();
    onCleanup(() => admin.disconnect());
    const group = groupId(ctx.config.clientId, chain.prefix, 'first');
    // partition 0 has a committed offset below the log start to be; partition 1 has none
    await admin.setOffsets({ groupId: group, topic: input, partitions: [{ partition: 0, offset: '10' }] });
    await admin.deleteTopicRecords({ topic: input, partitions: [0, 1].map((partition) => ({ partition, offset: '50' })) });
    const survivors = [...p0.slice(50), ...p1.slice(50)];

    // a slow first record gives time to fence the stage's producers before it commits anything
    const s = stage(chain, { CHAIN_DELAY_MS: '2000' });
    try {
      await waitUntil(() => handled(s) >= 2, 60_000, 'both partitions handling');
      const takeovers = await Promise.all(
        [0, 1].map((p) =>
          new TxProducer(ctx.kafka, transactionalId(ctx.config.clientId, { kind: 'partition', stage: 'first', topic: input, partition: p })).connect(),
        ),
      );
      await Promise.all(takeovers.map((t) => t.close()));
      await s.waitForLog(/"msg":"transaction failed[^"]*"/, 30_000);
      await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length >= survivors.length, 90_000, 'the records after the log start');
      await waitConsumedToEnd(ctx, chain.topology, ['first']);
    } finally {
      await stopStage(s);
    }
    await expectExactlyOnce(chain.topic('mid'), survivors);
    expect(s.logs()).toContain('lies below the log start');
    // no loop: kafkajs reset an out-of-range fetch at most a few times
    expect((s.logs().match(/Offset out of range, resetting to default offset/g) ?? []).length).toBeLessThan(10);
    expect((s.logs().match(/fetch came from beyond the position/g) ?? []).length).toBeLessThan(10);
  }, 150_000);
});
