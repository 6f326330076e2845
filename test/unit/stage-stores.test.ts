import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { SonicError } from '../../src/core/errors.js';
import type { Schemas, TaskRequest } from '../../src/domain/records.js';
import { byCompleteNumber } from '../../src/kafka/assignors.js';
import { PartitionReader, committedMessages, type FetchedPartition, type InternalCluster } from '../../src/kafka/partition-reader.js';
import { HEADERS } from '../../src/runtime/headers.js';
import { applyDeploy, planDeploy, storePartitionedTopics } from '../../src/ops/deploy.js';
import type { TopicAdmin } from '../../src/kafka/admin.js';
import type { RegistryAdmin } from '../../src/serde/registry-admin.js';
import { MemoryStores, StageStores } from '../../src/runtime/stage-stores.js';
import { createKafka } from '../../src/kafka/client.js';
import { createLogger } from '../../src/core/logger.js';
import type { StageHandler, StageRecord } from '../../src/runtime/stage.js';
import { TopologyTestDriver } from '../../src/runtime/test-driver.js';
import { defineTopology } from '../../src/runtime/topology.js';
import { validateTopology } from '../../src/runtime/validate.js';
import { taskStates } from '../../src/stages/status.js';
import { firstOf, validate } from '../../src/stages/validate.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { statusEvent } from '../../src/domain/status-event.js';

type Msg = Schemas['task-status'];

const topology = defineTopology({
  name: 'unit',
  prefix: 'u',
  status: {
    topic: 'status',
    hook: taskStates([
      { name: 'work', state: 'INFERRING' },
      { name: 'next', state: 'ENCODING' },
    ]),
  },
  defaults: { partitions: 3, retry: { delaysMs: [5_000], maxAttempts: 2 } },
  topics: {
    in: { valueSchema: 'task-status', external: { producers: ['test'] }, doc: 'in' },
    out: { valueSchema: 'task-status', external: { consumers: ['test'] }, doc: 'out' },
    status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
  },
  stages: { work: { doc: 'work', input: 'in', outputs: { done: 'out' }, scaling: { maxReplicas: 3 }, stores: { counts: { doc: 'records per key' } } } },
});

const msg = (extra: Partial<Msg> = {}): Msg => statusEvent({ task_id: randomUUID(), state: 'QUEUED', at: new Date(0), ...extra });

/** Counts records per key in its store and emits the count (in `progress`); `error_message` steers failures. */
const counter: StageHandler<Msg> = {
  async handle(rec, ctx) {
    const counts = ctx.stores.counts!;
    const n = ((counts.get(rec.key) as number | undefined) ?? 0) + 1;
    counts.put(rec.key, n);
    if (rec.value.error_message === 'fail' && rec.attempt === 1) throw new SonicError('GPU_OOM', 'flaky');
    if (rec.value.error_message === 'skip') return { skip: 'duplicate' };
    if (rec.value.error_message === 'reset') counts.delete(rec.key);
    return { emit: [{ sink: 'done', value: { ...rec.value, progress: n } }] };
  },
};

describe('stage state stores', () => {
  it('the topology derives a compacted changelog per store, partitioned like the input, and describes it', () => {
    const spec = topology.stages[0]!;
    expect(spec.stores).toEqual([{ name: 'counts', doc: 'records per key', changelog: 'u.work.counts-changelog' }]);
    expect(topology.topics['u.work.counts-changelog']).toMatchObject({ role: 'changelog', partitions: 3, configs: { 'cleanup.policy': 'compact' } });
    expect(topology.topics['u.work.counts-changelog']?.valueSchema).toBeUndefined();
    expect(validateTopology(topology)).toEqual([]);
    const sonic = sonicTopology({ prefix: 'sonic' });
    expect(sonic.stages.find((s) => s.name === 'validate')?.stores.map((s) => s.changelog)).toEqual(['sonic.validate.seen-changelog']);
    expect(validate.stores).toHaveProperty('seen');
  });

  it('deploy refuses to grow the partitions of a stage with stores (its input, retry tier and changelog) and of compacted topics; other topics grow', async () => {
    // the broker has every topic with 2 partitions; the topology asks for 3
    const admin = {
      describe: async (names: string[]) =>
        new Map(names.map((name) => [name, { partitions: 2, replicationFactor: 1, configs: { 'cleanup.policy': 'compact' } }])),
      brokerCount: async () => 1,
    } as unknown as TopicAdmin;
    const registry = { versions: async () => [], compatibility: async () => undefined } as unknown as RegistryAdmin;
    const fixed = storePartitionedTopics(topology);
    expect([...fixed.keys()]).toEqual(['u.in', 'u.work.retry.1', 'u.work.counts-changelog', 'u.status']);
    const plan = await planDeploy(Object.values(topology.topics), admin, registry, fixed);
    expect(plan.addPartitions.map((a) => a.name).sort()).toEqual(['u.out', 'u.work.dlq']);
    expect(plan.refusals.map((r) => r.node)).toEqual(['topic:u.in', 'topic:u.status', 'topic:u.work.retry.1', 'topic:u.work.counts-changelog']);
    expect(plan.refusals[0]!.reason).toMatch(
      /u\.in has 2 partitions and the topology asks for 3; it is an input, retry tier or store changelog of stage work, which has state stores/,
    );
    // a compacted table (the status topic) keeps its partitions too: a key's tombstone must land where its records are
    expect(plan.refusals.find((r) => r.node === 'topic:u.status')?.reason).toMatch(
      /u\.status has 2 partitions .*; it is compacted: .*bring deleted tasks back/,
    );
    const sonic = storePartitionedTopics(sonicTopology({ prefix: 'sonic' }));
    expect(sonic.has('sonic.tasks.status') && sonic.has('sonic.tasks.keys')).toBe(true);
    await expect(applyDeploy(plan, admin, registry)).rejects.toMatchObject({ code: 'TOPOLOGY_INVALID' });
  });

  it('the test driver keeps a store: counts per key, changelog records in the changelog topic', async () => {
    const driver = new TopologyTestDriver(topology, { handlers: { work: counter } });
    const a = msg();
    const b = msg();
    await driver.pipeInput('u.in', a.task_id, a);
    await driver.pipeInput('u.in', a.task_id, a);
    await driver.pipeInput('u.in', b.task_id, b);
    expect((await driver.read<Msg>('u.out')).map((r) => r.value?.progress)).toEqual([1, 2, 1]);
    expect(driver.store('work', 'counts').get(a.task_id)).toBe(2);
    const changelog = await driver.read('u.work.counts-changelog');
    expect(changelog.map((r) => [r.key, r.raw?.toString()])).toEqual([
      [a.task_id, '1'],
      [a.task_id, '2'],
      [b.task_id, '1'],
    ]);
    // a delete is a tombstone
    await driver.pipeInput('u.in', b.task_id, msg({ task_id: b.task_id, error_message: 'reset' }));
    expect(driver.store('work', 'counts').get(b.task_id)).toBeUndefined();
    expect((await driver.read('u.work.counts-changelog')).at(-1)).toMatchObject({ key: b.task_id, raw: null });
  });

  it('a failed record leaves no store write; its retry counts from the committed value', async () => {
    const driver = new TopologyTestDriver(topology, { handlers: { work: counter } });
    const a = msg({ error_message: 'fail' });
    await driver.pipeInput('u.in', a.task_id, a);
    expect(driver.store('work', 'counts').get(a.task_id)).toBeUndefined();
    expect(await driver.read('u.work.counts-changelog')).toEqual([]);
    await driver.advanceTime(5_000);
    expect((await driver.read<Msg>('u.out')).map((r) => r.value?.progress)).toEqual([1]);
    expect(driver.store('work', 'counts').get(a.task_id)).toBe(1);
  });

  it('a skipped record writes no output and no status event, and keeps its store writes', async () => {
    const driver = new TopologyTestDriver(topology, { handlers: { work: counter } });
    const a = msg({ error_message: 'skip' });
    await driver.pipeInput('u.in', a.task_id, a);
    expect(await driver.read('u.out')).toEqual([]);
    expect(await driver.statuses(a.task_id)).toEqual([]);
    expect(driver.store('work', 'counts').get(a.task_id)).toBe(1);
  });

  it('within a batch a record reads the writes of earlier records; a discarded record leaves none', () => {
    const specs = topology.stages[0]!.stores;
    const stores = new MemoryStores(specs);
    const batch = stores.batch(1);
    const r1 = batch.forRecord();
    r1.view.counts!.put('k', { n: 1, at: new Date(0) });
    // values are JSON: what a restore from the changelog would give back
    expect(r1.view.counts!.get('k')).toEqual({ n: 1, at: '1970-01-01T00:00:00.000Z' });
    expect(r1.keep()).toEqual([
      { topic: 'u.work.counts-changelog', key: 'k', value: Buffer.from('{"n":1,"at":"1970-01-01T00:00:00.000Z"}'), headers: {}, partition: 1 },
    ]);
    const r2 = batch.forRecord();
    expect(r2.view.counts!.get('k')).toMatchObject({ n: 1 });
    r2.view.counts!.put('k', 2);
    r2.discard();
    const r3 = batch.forRecord();
    expect(r3.view.counts!.get('k')).toMatchObject({ n: 1 });
    r3.view.counts!.delete('k');
    expect(r3.view.counts!.get('k')).toBeUndefined();
    expect(r3.keep()).toEqual([expect.objectContaining({ key: 'k', value: null, partition: 1 })]);
    // nothing is committed until the batch is applied, and another partition sees nothing
    expect(stores.get('counts', 1, 'k')).toBeUndefined();
    const other = stores.batch(2).forRecord();
    expect(other.view.counts!.get('k')).toBeUndefined();
    // an aborted batch is simply never applied; a committed one is
    const next = stores.batch(1);
    const r4 = next.forRecord();
    r4.view.counts!.put('k', 7);
    r4.keep();
    stores.apply(next);
    expect(stores.get('counts', 1, 'k')).toBe(7);
    expect(() => stores.batch(1).forRecord().view.counts!.put('k', undefined)).toThrow(/without a value/);
  });

  it('validate: the first request per task id passes, a later copy is dropped, a DLQ replay and a request after the window pass', () => {
    const stores = new MemoryStores([{ name: 'seen', doc: '', changelog: 'c' }]);
    const request = { task_id: 't1', idempotency_key: 'key-1', created_at: new Date(1000) } as TaskRequest;
    const rec = (offset: string, headers: Record<string, string> = {}): StageRecord<TaskRequest> => ({
      key: 't1',
      value: request,
      attempt: 1,
      topic: 'sonic.tasks.requested',
      partition: 0,
      offset,
      headers,
    });
    const first = stores.batch(0);
    const r1 = first.forRecord();
    expect(firstOf(rec('5'), r1.view.seen!)).toBeUndefined();
    r1.keep();
    stores.apply(first);
    const r2 = stores.batch(0).forRecord();
    expect(firstOf(rec('9'), r2.view.seen!)).toEqual({
      topic: 'sonic.tasks.requested',
      partition: 0,
      offset: '5',
      idempotency_key: 'key-1',
      created_at: '1970-01-01T00:00:01.000Z',
    });
    const r3 = stores.batch(0).forRecord();
    expect(firstOf(rec('12', { [HEADERS.replayOf]: 'sonic.validate.dlq:0:3' }), r3.view.seen!)).toBeUndefined();
    // within the window a copy is dropped; a request made after the first task expired is a new task
    const late = (at: number): StageRecord<TaskRequest> => ({ ...rec('20'), value: { ...request, created_at: new Date(at) } });
    expect(firstOf(late(61_000), stores.batch(0).forRecord().view.seen!, 60_000)).toBeDefined();
    expect(firstOf(late(61_001), stores.batch(0).forRecord().view.seen!, 60_000)).toBeUndefined();
  });

  it('validate: the duplicate window is SONIC_DEDUP_WINDOW (15 minutes), not the task retention', () => {
    expect(loadConfig({}).dedupWindowS).toBe(900);
    expect(loadConfig({ SONIC_DEDUP_WINDOW: '2h' }).dedupWindowS).toBe(7200);
    expect(() => loadConfig({ SONIC_DEDUP_WINDOW: 'soon' })).toThrow(/SONIC_DEDUP_WINDOW must be a duration/);
    const windowMs = loadConfig({}).dedupWindowS * 1000;
    const stores = new MemoryStores([{ name: 'seen', doc: '', changelog: 'c' }]);
    const rec = (createdAt: number, offset: string): StageRecord<TaskRequest> => ({
      key: 't1',
      value: { task_id: 't1', idempotency_key: 'key-1', created_at: new Date(createdAt) } as TaskRequest,
      attempt: 1,
      topic: 'sonic.tasks.requested',
      partition: 0,
      offset,
      headers: {},
    });
    const commit = (r: StageRecord<TaskRequest>) => {
      const batch = stores.batch(0);
      const view = batch.forRecord();
      const first = firstOf(r, view.view.seen!, windowMs);
      view.keep();
      stores.apply(batch);
      return first;
    };
    const day = 86_400_000;
    expect(commit(rec(0, '1'))).toBeUndefined();
    // a copy minutes later (two replicas raced, an in-doubt submit enqueued again) is dropped
    expect(commit(rec(3 * 60_000, '2'))).toMatchObject({ offset: '1' });
    // `gc --older-than 7d` removed the task, its key made the same task id again: a new task, not a duplicate
    expect(commit(rec(8 * day, '3'))).toBeUndefined();
    expect(stores.get('seen', 0, 't1')).toMatchObject({ offset: '3' });
    expect(commit(rec(8 * day + 1000, '4'))).toMatchObject({ offset: '3' });
  });
});

describe('stores with a retention', () => {
  it('the changelog deletes old segments as well as compacting, and validate keeps its seen entries a day', () => {
    const ttl = (retentionMs: number) =>
      defineTopology({
        name: 'ttl',
        prefix: 'r',
        status: { topic: 'status', hook: taskStates([{ name: 'work', state: 'INFERRING' }]) },
        topics: {
          in: { valueSchema: 'task-status', external: { producers: ['test'] }, doc: 'in' },
          status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
        },
        stages: { work: { doc: 'work', input: 'in', stores: { recent: { doc: 'recent', retentionMs } } } },
      });
    const t = ttl(60_000);
    expect(t.stages[0]!.stores[0]).toMatchObject({ name: 'recent', retentionMs: 60_000 });
    expect(t.topics['r.work.recent-changelog']?.configs).toEqual({ 'cleanup.policy': 'compact,delete', 'retention.ms': '60000', 'segment.ms': '60000' });
    const sonic = sonicTopology({ prefix: 'sonic' });
    expect(sonic.topics['sonic.validate.seen-changelog']?.configs).toEqual({
      'cleanup.policy': 'compact,delete',
      'retention.ms': '86400000',
      'segment.ms': '86400000',
    });
    expect(() => ttl(0)).toThrow(/retentionMs must be a whole number of ms > 0/);
    expect(() => loadConfig({ SONIC_DEDUP_WINDOW: '13h' })).toThrow(/SONIC_DEDUP_WINDOW must be a duration from 1 s to 43200 s/);
  });

  it('the local copy drops entries a retention after their last write, keeps the rest, and keeps write times across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-store-ttl-'));
    const specs = [
      { name: 'recent', doc: '', changelog: 'c.recent', retentionMs: 60_000 },
      { name: 'forever', doc: '', changelog: 'c.forever' },
    ];
    const open = (): StageStores =>
      new StageStores({
        dir,
        specs,
        kafka: createKafka({ brokers: ['127.0.0.1:1'], clientId: 't' }, createLogger('t', 'silent')),
        logger: createLogger('t', 'silent'),
      });
    // the changelog offsets of each partition: a batch's records, then its commit marker
    const next = new Map<number, bigint>();
    const commit = async (stores: StageStores, partition: number, writes: Record<string, string | null>): Promise<void> => {
      const batch = stores.batch(partition);
      const r = batch.forRecord();
      for (const [key, v] of Object.entries(writes)) {
        if (v === null) r.view.recent!.delete(key);
        else r.view.recent!.put(key, v);
        r.view.forever!.put(key, v ?? 'gone');
      }
      r.keep();
      const base = next.get(partition) ?? 0n;
      next.set(partition, base + BigInt(Object.keys(writes).length) + 1n);
      await stores.commit(
        batch,
        async () =>
          new Map([
            ['c.recent', base],
            ['c.forever', base],
          ]),
      );
    };
    // the commit's clock is the write time: Date only is faked, so LMDB and timers run as they are
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.parse('2026-11-30T12:00:00Z');
    const at = (s: number): number => t0 + s * 1000;
    vi.setSystemTime(at(0));
    let stores = open();
    try {
      await commit(stores, 0, { a: 'A', b: 'B' });
      await commit(stores, 1, { a: 'other partition' });
      expect(stores.expire(0, at(30))).toBe(0); // nothing is older than the retention yet
      await stores.close();
      stores = open(); // a restart keeps the entries and their write times
      expect(stores.get('recent', 0, 'a')).toBe('A');
      vi.setSystemTime(at(40));
      await commit(stores, 0, { b: 'B2', c: 'C' }); // b written again
      expect(stores.expire(0, at(60))).toBe(0);
      // past its retention an entry reads as absent before any sweep drops it
      vi.setSystemTime(at(60.001));
      expect(stores.get('recent', 0, 'a')).toBeUndefined();
      expect(stores.get('recent', 0, 'b')).toBe('B2');
      vi.setSystemTime(at(40));
      // a minute after the first writes: a (written at 0 s) goes; b and c (40 s) stay
      expect(stores.expire(0, at(60.001))).toBe(1);
      expect(stores.get('recent', 0, 'a')).toBeUndefined();
      expect(stores.get('recent', 0, 'b')).toBe('B2');
      expect(stores.expire(0, at(100.001))).toBe(2);
      expect(stores.get('recent', 0, 'b')).toBeUndefined();
      expect(stores.get('recent', 0, 'c')).toBeUndefined();
      // other partitions, and stores without a retention, keep theirs
      expect(stores.get('recent', 1, 'a')).toBe('other partition');
      expect(stores.get('forever', 0, 'a')).toBe('A');
      expect(stores.expire(0, at(3600))).toBe(0);
    } finally {
      vi.useRealTimers();
      await stores.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('store partitions are taken whole', () => {
  it('only the partition numbers held in the input and every retry tier are taken (a round-robin split is refused)', () => {
    const tp = (topic: string, partition: number) => ({ topic, partition });
    // round robin over in (3 partitions) and retry (3): this member got in-0, in-2, retry-1, retry-2
    const { complete, incomplete } = byCompleteNumber([tp('in', 0), tp('in', 2), tp('retry', 1), tp('retry', 2)], ['in', 'retry']);
    expect(complete).toEqual([tp('in', 2), tp('retry', 2)]);
    expect(incomplete).toEqual([tp('in', 0), tp('retry', 1)]);
    expect(byCompleteNumber([tp('in', 1), tp('retry', 1)], ['in', 'retry']).incomplete).toEqual([]);
  });
});

describe('read_committed filtering of a raw fetch', () => {
  const m = (offset: number, producerId: string, opts: { tx?: boolean; control?: boolean; key?: Buffer } = {}) => ({
    offset: String(offset),
    key: opts.key ?? Buffer.from(`k${offset}`),
    value: Buffer.from('v'),
    timestamp: '0',
    isControlRecord: opts.control ?? false,
    batchContext: { producerId, inTransaction: opts.tx ?? true },
  });

  it('drops aborted transactions and markers, keeps committed and non-transactional records', () => {
    const messages = [
      m(0, '1'),
      m(1, '1'),
      m(2, '1', { control: true }), // commit of producer 1
      m(3, '2'),
      m(4, '1'),
      m(5, '2', { control: true, key: Buffer.from([0, 0, 0, 0]) }), // abort of producer 2
      m(6, '1', { control: true }),
      m(7, '3', { tx: false }),
    ];
    const kept = committedMessages(messages, [{ producerId: '2', firstOffset: '3' }]).map((x) => x.offset);
    expect(kept).toEqual(['0', '1', '4', '7']);
  });
});

describe('reading a changelog partition to its end', () => {
  const record = (offset: number) => ({
    offset: String(offset),
    key: Buffer.from(`k${offset}`),
    value: Buffer.from('1'),
    timestamp: '0',
    batchContext: { producerId: '1', inTransaction: false },
  });
  /** A cluster whose leader answers the fetches `answers` gives, one per fetch (the last one repeats). */
  const readerOf = (answers: ((fetchOffset: bigint) => Omit<FetchedPartition, 'partition'>)[]) => {
    const asked: bigint[] = [];
    const cluster: InternalCluster = {
      connect: async () => undefined,
      disconnect: async () => undefined,
      addTargetTopic: async () => undefined,
      refreshMetadata: async () => undefined,
      findLeaderForPartitions: () => ({ '1': [0] }),
      fetchTopicsOffset: async () => [],
      findBroker: async () => ({
        fetch: async (req) => {
          const offset = BigInt(req.topics[0]!.partitions[0]!.fetchOffset);
          asked.push(offset);
          const answer = answers[Math.min(asked.length - 1, answers.length - 1)]!(offset);
          return { responses: [{ topicName: 't', partitions: [{ partition: 0, ...answer }] }] };
        },
      }),
    };
    return { reader: new PartitionReader(undefined as never, cluster), asked };
  };
  const read = async (reader: PartitionReader, from: bigint, to: bigint, emptyWaitMs = 5_000) => {
    const got: string[] = [];
    const reached = await reader.read('t', 0, from, to, (rs) => got.push(...rs.map((r) => r.offset)), { emptyWaitMs });
    return { got, reached };
  };

  it('an empty fetch from a leader behind the end (a failover) is retried, not taken for the end', async () => {
    const behind = () => ({ highWatermark: '0', lastStableOffset: '0', messages: [] });
    const caughtUp = (from: bigint) => ({
      highWatermark: '3',
      lastStableOffset: '3',
      messages: [0, 1, 2].filter((o) => BigInt(o) >= from).map(record),
    });
    const { reader, asked } = readerOf([behind, behind, caughtUp]);
    expect(await read(reader, 0n, 3n)).toEqual({ got: ['0', '1', '2'], reached: 3n });
    expect(asked).toEqual([0n, 0n, 0n]);
  });

  it('an empty fetch below a leader end that reaches the end means the rest was compacted away', async () => {
    // offsets 2..4 compacted away: the fetch from 2 brings offset 5, past the end asked for
    const { reader } = readerOf([(from) => ({ highWatermark: '6', lastStableOffset: '6', messages: [0, 1, 5].filter((o) => BigInt(o) >= from).map(record) })]);
    expect(await read(reader, 0n, 5n)).toEqual({ got: ['0', '1'], reached: 5n });
    const empty = readerOf([() => ({ highWatermark: '5', lastStableOffset: '5', messages: [] })]);
    expect(await read(empty.reader, 2n, 5n)).toEqual({ got: [], reached: 5n });
  });

  it('a leader that stays behind fails the read instead of skipping records', async () => {
    const { reader } = readerOf([() => ({ highWatermark: '1', lastStableOffset: '1', messages: [] })]);
    await expect(read(reader, 1n, 3n, 150)).rejects.toMatchObject({ code: 'BROKER_UNAVAILABLE' });
  });
});
