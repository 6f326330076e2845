import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PlainProducer, TxProducer } from '../../src/kafka/io.js';
import { StageStores } from '../../src/runtime/stage-stores.js';
import { valueSubject } from '../../src/serde/serde.js';
import { deployChain, produce, readAll, waitUntil } from '../helpers/chain.js';
import { ROOT, createTopics, startSonicflow, testContext, uniqueName, type SonicflowProcess } from '../helpers/infra.js';

const COUNTER_FILE = join(ROOT, 'test', 'fixtures', 'counter.ts');
const KEYS = 20;
const PER_KEY = 10;

describe('stage state stores on the real broker', () => {
  it('counts per key exactly once across a SIGKILL and a lost local copy, restoring from the changelog', async () => {
    const chain = await deployChain({}, COUNTER_FILE);
    const topic = (name: string): string => `${chain.prefix}.${name}`;
    const stateDir = mkdtempSync(join(tmpdir(), 'sonicflow-stores-test-'));
    const start = (): SonicflowProcess =>
      startSonicflow(['run', 'count', '--file', COUNTER_FILE], {
        SONIC_TOPIC_PREFIX: chain.prefix,
        SONIC_STATE_DIR: stateDir,
        SONIC_METRICS_PORT: '0',
        SONIC_LOG_LEVEL: 'info',
        SONIC_SESSION_TIMEOUT_MS: '6000',
        SONIC_HEARTBEAT_INTERVAL_MS: '1000',
        SONIC_REBALANCE_TIMEOUT_MS: '8000',
        COUNTER_DELAY_MS: '100',
      });
    try {
      // rounds over KEYS keys: a key's records are in order in its partition
      const ctx = testContext();
      const keys = Array.from({ length: KEYS }, () => randomUUID());
      const produceRounds = async (rounds: number): Promise<void> => {
        const p = await new PlainProducer(ctx.kafka).connect();
        for (let round = 0; round < rounds; round++) {
          const records = await Promise.all(
            keys.map(async (key) => ({
              key,
              value: await ctx.serde.encode(valueSubject(topic('in')), 'task-status', { task_id: key, state: 'QUEUED', at: new Date() }),
            })),
          );
          await p.send(topic('in'), records);
        }
        await p.close();
      };
      await produceRounds(PER_KEY / 2);

      let proc = start();
      await proc.waitForLog(/store partition restored/, 60_000);
      // let it count a while, then kill it mid-work
      await waitUntil(async () => (await readAll(topic('out'), 500)).length >= 40, 60_000, '40 outputs before the first kill');
      proc.proc.kill('SIGKILL');
      await proc.exited;
      // a restart resumes from the local checkpoint
      proc = start();
      await waitUntil(async () => (await readAll(topic('out'), 500)).length >= (KEYS * PER_KEY) / 2, 60_000, 'the first half of the outputs');
      proc.proc.kill('SIGKILL');
      await proc.exited;
      // the local copy is lost: the restart restores every partition from the changelog
      rmSync(join(stateDir, 'stores'), { recursive: true, force: true });
      await produceRounds(PER_KEY / 2);
      proc = start();
      await proc.waitForLog(/"records":[1-9]\d*,[^\n]*store partition restored/, 60_000);
      await waitUntil(async () => (await readAll(topic('out'), 500)).length >= KEYS * PER_KEY, 120_000, 'every output');
      proc.proc.kill('SIGTERM');
      await proc.exited;

      const out = await readAll(topic('out'));
      const counts = new Map<string, number[]>();
      for (const r of out) {
        const value = (await ctx.serde.decode<{ progress: number | null }>(r.value!, 'task-status')).value;
        counts.set(r.key!, [...(counts.get(r.key!) ?? []), value.progress ?? -1]);
      }
      const expected = Array.from({ length: PER_KEY }, (_, i) => i + 1);
      // exactly once: each key's outputs count 1..PER_KEY, none skipped, none doubled
      expect(out.length).toBe(KEYS * PER_KEY);
      for (const key of keys) expect({ key, counts: counts.get(key) }).toEqual({ key, counts: expected });
      // the changelog (read_committed) ends with each key's final count
      const last = new Map<string, string>();
      for (const r of await readAll(topic('count.counts-changelog'))) last.set(r.key!, r.value!.toString());
      for (const key of keys) expect(last.get(key)).toBe(String(PER_KEY));
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('one worker per store partition', () => {
  it('the input partition and its retry tier take turns: no two handlers at work on one store partition', async () => {
    const chain = await deployChain({ COUNTER_PARTITIONS: '1' }, COUNTER_FILE);
    const out = `${chain.prefix}.out`;
    const stateDir = mkdtempSync(join(tmpdir(), 'sonicflow-turns-test-'));
    try {
      // half the records fail once: their retries come due while the input still has work
      const keys = [...(await produce(chain, 30, { error_message: 'fail' })), ...(await produce(chain, 30))];
      const proc = startSonicflow(['run', 'count', '--file', COUNTER_FILE], {
        SONIC_TOPIC_PREFIX: chain.prefix,
        SONIC_STATE_DIR: stateDir,
        SONIC_METRICS_PORT: '0',
        SONIC_LOG_LEVEL: 'info',
        COUNTER_PARTITIONS: '1',
        COUNTER_DELAY_MS: '60',
      });
      await waitUntil(async () => (await readAll(out, 500)).length >= keys.length, 90_000, 'every output');
      proc.proc.kill('SIGTERM');
      await proc.exited;
      expect(proc.logs()).not.toMatch(/store partition handled concurrently/);
      const counted = (await readAll(out)).map((r) => r.key);
      expect(counted.sort()).toEqual([...keys].sort());
    } finally {
      delete process.env.COUNTER_PARTITIONS; // deployChain set it for the whole file
      rmSync(stateDir, { recursive: true, force: true });
    }
  }, 180_000);
});

describe('the local copy follows the changelog', () => {
  it('a commit reported failed that went through (in doubt) is restored before the next batch; a gap another writer left is replayed', async () => {
    const ctx = testContext();
    const topic = `${uniqueName('indoubt')}.seen-changelog`;
    await createTopics([{ name: topic, configs: { 'cleanup.policy': 'compact' } }]);
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-indoubt-'));
    const specs = [{ name: 'seen', doc: '', changelog: topic }];
    const noFence = async (): Promise<void> => undefined;
    let stores = new StageStores({ dir, specs, kafka: ctx.kafka, logger: ctx.logger });
    const tx = await new TxProducer(ctx.kafka, uniqueName('indoubt-tx')).connect();
    const other = await new TxProducer(ctx.kafka, uniqueName('indoubt-other')).connect();
    const input = { groupId: uniqueName('indoubt-g'), topic, partition: 0, offset: '0' };
    const publish = async (producer: TxProducer, records: Parameters<TxProducer['publish']>[0]): Promise<Map<string, bigint>> => {
      const landed = await producer.publish(records, input);
      return new Map(landed.filter((l) => l.partition === 0).map((l) => [l.topic, l.baseOffset]));
    };
    const commit = (key: string, reportFailure = false): Promise<void> => {
      const batch = stores.batch(0);
      const r = batch.forRecord();
      r.view.seen!.put(key, { first: true });
      const out = r.keep();
      return stores.commit(batch, async () => {
        const bases = await publish(tx, out);
        if (reportFailure) throw new Error('EndTxn: request timed out (commit outcome unknown)');
        return bases;
      });
    };
    try {
      await stores.ensureRestored(0, noFence);
      // the transaction commits, the caller is told it failed (a lost EndTxn response)
      await expect(commit('A', true)).rejects.toThrow(/outcome unknown/);
      // the next batch restores first: A is in the changelog, so it is in the local copy
      await stores.ensureRestored(0, noFence);
      expect(stores.get('seen', 0, 'A')).toEqual({ first: true });
      await commit('B');
      // another writer of the partition (a split assignment): its record lies before the next batch's
      await publish(other, [{ topic, key: 'C', value: Buffer.from('{"first":true}'), headers: {}, partition: 0 }]);
      await commit('D');
      for (const key of ['A', 'B', 'C', 'D']) expect({ key, value: stores.get('seen', 0, key) }).toEqual({ key, value: { first: true } });
      // a restart on the same directory resumes from a checkpoint that skipped nothing
      await stores.close();
      stores = new StageStores({ dir, specs, kafka: ctx.kafka, logger: ctx.logger });
      await stores.ensureRestored(0, noFence);
      for (const key of ['A', 'B', 'C', 'D']) expect({ key, value: stores.get('seen', 0, key) }).toEqual({ key, value: { first: true } });
    } finally {
      await stores.close();
      await tx.close();
      await other.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
