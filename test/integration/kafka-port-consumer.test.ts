/**
 * The stage consumer of the client port (`src/kafka/port.ts`) on the real broker, for both clients
 * through `stageConsumer`: the same assertions hold for kafkajs and @platformatic/kafka.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CO_PARTITIONED, STICKY } from '../../src/kafka/assignors.js';
import { createKafka } from '../../src/kafka/client.js';
import { loadKafkaClient, stageConsumer } from '../../src/kafka/clients.js';
import type { GroupConsumerOptions } from '../../src/kafka/consumer.js';
import { kafkajsOf, type KafkaClient } from '../../src/kafka/handle.js';
import { TxProducer, type InRecord } from '../../src/kafka/io.js';
import type { StageConsumer } from '../../src/kafka/port.js';
import { createTopics, testContext, uniqueName } from '../helpers/infra.js';

const ctx = testContext();
const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
});

function handle(client: 'kafkajs' | 'platformatic'): KafkaClient {
  return createKafka({ brokers: ctx.config.kafkaBrokers, clientId: uniqueName('port-consumer'), client }, ctx.logger);
}

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Plain (non-transactional) records: partition p gets `n` records keyed `p-i` with a header. */
async function produce(topic: string, partitions: number, n: number, size = 0): Promise<void> {
  const producer = kafkajsOf(ctx.kafka).producer();
  await producer.connect();
  for (let p = 0; p < partitions; p++)
    for (let from = 0; from < n; from += 1000)
      await producer.send({
        topic,
        messages: Array.from({ length: Math.min(1000, n - from) }, (_, j) => ({
          partition: p,
          key: `${p}-${from + j}`,
          value: size > 0 ? Buffer.alloc(size, 1) : Buffer.from(`v${p}-${from + j}`),
          headers: { h: `x${from + j}` },
        })),
      });
  await producer.disconnect();
}

interface Member {
  consumer: StageConsumer;
  got: InRecord[];
  markers: { partition: number; last: string }[];
  assignments: { tps: string[]; generationId: number; memberId: string; protocol: string }[];
  owned: () => Set<string>;
  /** Records delivered for a partition this member did not own at the time. */
  strays: InRecord[];
}

async function member(
  client: 'kafkajs' | 'platformatic',
  topics: string[],
  groupId: string,
  extra: Partial<GroupConsumerOptions> = {},
  onBatch?: (c: StageConsumer, records: InRecord[]) => boolean,
): Promise<Member> {
  const consumer = stageConsumer(handle(client), {
    groupId,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 500,
    rebalanceTimeoutMs: 10_000,
    maxWaitMs: 200,
    reconnect: { initialMs: 100, maxMs: 1000 },
    logger: ctx.logger,
    ...extra,
  });
  const m: Member = { consumer, got: [], markers: [], assignments: [], strays: [], owned: () => new Set(m.assignments.at(-1)?.tps ?? []) };
  stops.push(() => consumer.stop());
  await consumer.start(topics, {
    onAssignment: (a, info) => m.assignments.push({ tps: a.map((tp) => `${tp.topic}/${tp.partition}`).sort(), ...info }),
    onBatch: (topic, partition, records) => {
      if (!m.owned().has(`${topic}/${partition}`)) m.strays.push(...records);
      if (onBatch && !onBatch(consumer, records)) return false;
      m.got.push(...records);
      return true;
    },
    onMarkersOnly: (_t, partition, last) => m.markers.push({ partition, last }),
    onCrash: (err) => {
      throw err;
    },
  });
  return m;
}

/** What a member holds, by topic (its sticky claim). */
function heldOf(m: Member | undefined): Record<string, number[]> {
  const held: Record<string, number[]> = {};
  for (const k of m?.owned() ?? []) {
    const [t, p] = k.split('/');
    (held[t!] ??= []).push(Number(p));
  }
  return held;
}

const byPartition = (rs: InRecord[], p: number): number[] => rs.filter((r) => r.partition === p).map((r) => Number(r.offset));
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

// the @platformatic/kafka adapter, loaded before the factories are used with it
await loadKafkaClient('platformatic');

describe.each(['kafkajs', 'platformatic'] as const)('stage consumer on %s', (client) => {
  it('(a) delivers every record once, in order per partition, with keys, headers and values intact', async () => {
    const topic = uniqueName('pc-all');
    await createTopics([{ name: topic, partitions: 4 }]);
    await produce(topic, 4, 300);
    const m = await member(client, [topic], uniqueName('pc-all-g'));
    await until('1200 records', () => m.got.length >= 1200);
    await new Promise((r) => setTimeout(r, 500));
    expect(m.got).toHaveLength(1200);
    for (let p = 0; p < 4; p++) expect(byPartition(m.got, p)).toEqual(range(0, 300));
    const r = m.got.find((x) => x.partition === 2 && x.offset === '7')!;
    expect(r).toMatchObject({ topic, key: '2-7', headers: { h: 'x7' } });
    expect(r.value?.toString()).toBe('v2-7');
    expect(typeof r.timestamp).toBe('number');
    expect(Math.abs(r.timestamp - Date.now())).toBeLessThan(120_000);
  });

  it('(b) pausing one partition stops only its delivery; resuming goes on without gaps or repeats', async () => {
    const topic = uniqueName('pc-pause');
    await createTopics([{ name: topic, partitions: 2 }]);
    await produce(topic, 2, 100);
    // partition 1 is paused from its first batch on, and that batch is refused (false: not taken)
    let hold = true;
    let pausedDeliveries = 0;
    const m = await member(client, [topic], uniqueName('pc-pause-g'), {}, (c, records) => {
      if (hold && records[0]!.partition === 1) {
        pausedDeliveries += 1;
        c.pause({ topic, partition: 1 });
        return false;
      }
      return true;
    });
    await until('partition 0', () => byPartition(m.got, 0).length >= 100);
    await produce(topic, 2, 50);
    await until('partition 0 again', () => byPartition(m.got, 0).length >= 150);
    await new Promise((r) => setTimeout(r, 1000));
    expect(byPartition(m.got, 1)).toEqual([]);
    // nothing was fetched for it after the pause: the refused batch came once
    expect(pausedDeliveries).toBe(1);
    hold = false;
    m.consumer.resume({ topic, partition: 1 });
    await until('partition 1', () => byPartition(m.got, 1).length >= 150);
    await new Promise((r) => setTimeout(r, 500));
    expect(byPartition(m.got, 1)).toEqual(range(0, 150));
    expect(byPartition(m.got, 0)).toEqual(range(0, 150));
  });

  it('(c) seek rewinds a partition: its records come again from there', async () => {
    const topic = uniqueName('pc-seek');
    await createTopics([{ name: topic, partitions: 1 }]);
    await produce(topic, 1, 50);
    const m = await member(client, [topic], uniqueName('pc-seek-g'));
    await until('50 records', () => m.got.length >= 50);
    m.consumer.seek({ topic, partition: 0 }, '20');
    await until('the rewound records', () => m.got.length >= 80);
    await new Promise((r) => setTimeout(r, 500));
    expect(byPartition(m.got, 0)).toEqual([...range(0, 50), ...range(20, 50)]);
  });

  it('(d) sticky: members split the partitions evenly and keep what they hold; when the others stop one gets all, and nothing comes for a revoked partition', async () => {
    const topic = uniqueName('pc-sticky');
    const group = uniqueName('pc-sticky-g');
    await createTopics([{ name: topic, partitions: 6 }]);
    const ms: Member[] = [];
    const claim = (i: number) => () => ({ memberId: ms[i]?.assignments.at(-1)?.memberId ?? '', held: heldOf(ms[i]), busy: {} });
    ms.push(await member(client, [topic], group, { sticky: { claim: claim(0) } }));
    await until('a joined', () => ms[0]!.owned().size === 6);
    ms.push(await member(client, [topic], group, { sticky: { claim: claim(1) } }));
    await until('split 3/3', () => ms[0]!.owned().size === 3 && ms[1]!.owned().size === 3, 40_000);
    expect(ms[0]!.assignments.at(-1)!.protocol).toBe(STICKY);
    const before = ms.map((m) => m.owned());
    await produce(topic, 6, 200);
    ms.push(await member(client, [topic], group, { sticky: { claim: claim(2) } }));
    await until('split 2/2/2', () => ms.every((m) => m.owned().size === 2), 40_000);
    // sticky: the members that were there keep two of the three they held (round robin would deal anew)
    for (const i of [0, 1]) for (const k of ms[i]!.owned()) expect(before[i]!.has(k)).toBe(true);
    await until('all records', () => ms.reduce((n, m) => n + m.got.length, 0) >= 1200);
    await ms[1]!.consumer.stop();
    await ms[2]!.consumer.stop();
    await until('a holds all 6', () => ms[0]!.owned().size === 6, 40_000);
    await produce(topic, 6, 50);
    await until('the later records', () => ms[0]!.got.filter((r) => Number(r.offset) >= 200).length >= 300);
    for (const m of ms) expect(m.strays).toEqual([]);
  });

  it('(e) read_committed: records of aborted transactions never arrive, however many of one producer one fetch holds; a fetch of only markers calls onMarkersOnly', async () => {
    const topic = uniqueName('pc-txn');
    await createTopics([{ name: topic, partitions: 1 }]);
    // one transactional producer (a stage's KIP-447 producer writes every output partition so):
    // aborted, committed, aborted, all written before the member starts, so they arrive in one fetch
    const tx = await new TxProducer(ctx.kafka, uniqueName('pc-txn-p')).connect();
    const write = (keys: string[], commit: boolean) =>
      tx.inTransaction(
        async (send) =>
          send(
            topic,
            keys.map((key) => ({ key, value: Buffer.from(key), partition: 0 })),
          ),
        { commit },
      );
    await write(['aborted-1a', 'aborted-1b'], false);
    await write(['ok-1a', 'ok-1b'], true);
    await write(['aborted-2a', 'aborted-2b'], false);
    const m = await member(client, [topic], uniqueName('pc-txn-g'));
    await until('the committed records', () => m.got.length >= 2);
    await new Promise((r) => setTimeout(r, 500));
    expect(m.got.map((r) => r.key)).toEqual(['ok-1a', 'ok-1b']);
    // an aborted transaction: its marker is the only record a fetch after it returns
    await write(['aborted-3'], false);
    await until('markers only', () => m.markers.some((x) => Number(x.last) >= 10));
    await write(['ok-2'], true);
    await until('the second committed record', () => m.got.length >= 3);
    await tx.close();
    await new Promise((r) => setTimeout(r, 500));
    expect(m.got.map((r) => r.key)).toEqual(['ok-1a', 'ok-1b', 'ok-2']);
  });

  it('(f) committed() is -1 before any commit and the committed offset after one', async () => {
    const topic = uniqueName('pc-committed');
    const group = uniqueName('pc-committed-g');
    await createTopics([{ name: topic, partitions: 2 }]);
    const m = await member(client, [topic], group);
    await until('joined', () => m.consumer.joined);
    expect(await m.consumer.committed({ topic, partition: 1 })).toBe(-1n);
    const tx = await new TxProducer(ctx.kafka, uniqueName('pc-committed-p')).connect();
    await tx.inTransaction(async () => undefined, { offsets: [{ groupId: group, topic, partition: 1, offset: '17' }] });
    await tx.close();
    if (client === 'kafkajs') {
      // kafkajs reads offsets without require_stable: a commit is acknowledged before its markers
      // are written, and until then the coordinator still answers the offset from before it
      let seen = -1n;
      const deadline = Date.now() + 10_000;
      while (seen !== 17n && Date.now() < deadline) {
        seen = await m.consumer.committed({ topic, partition: 1 });
        if (seen !== 17n) await new Promise((r) => setTimeout(r, 50));
      }
    }
    // platformatic asks for a stable offset: the first answer is already the new one
    expect(await m.consumer.committed({ topic, partition: 1 })).toBe(17n);
    expect(await m.consumer.committed({ topic, partition: 0 })).toBe(-1n);
    expect(await m.consumer.logStart({ topic, partition: 0 })).toBe(0n);
  });

  it('(g) generation() carries the member id and, on platformatic, the group generation, which moves on at a rebalance', async () => {
    const topic = uniqueName('pc-gen');
    const group = uniqueName('pc-gen-g');
    await createTopics([{ name: topic, partitions: 2 }]);
    const a = await member(client, [topic], group);
    await until('a joined', () => a.consumer.generation() !== undefined && a.assignments.length > 0);
    const first = a.consumer.generation()!;
    expect(first).toMatchObject({ groupId: group, memberId: a.assignments.at(-1)!.memberId });
    const b = await member(client, [topic], group);
    await until('a rejoined', () => a.assignments.length >= 2 && b.assignments.length >= 1, 40_000);
    const second = a.consumer.generation()!;
    expect(second.memberId).toBe(first.memberId);
    expect(second.generationId).toBeGreaterThan(first.generationId);
    if (client === 'platformatic') {
      // the group's generation: both members see the same one
      expect(b.consumer.generation()!.generationId).toBe(second.generationId);
      expect(a.assignments.at(-1)!.generationId).toBe(second.generationId);
    }
  });

  it('(h) co-partitioned: partition p of the input and of the retry topic go to one member', async () => {
    const input = uniqueName('pc-co-in');
    const retry = uniqueName('pc-co-retry');
    const group = uniqueName('pc-co-g');
    // 3 partitions each: round robin would give partition numbers of the two topics to different members
    await createTopics([
      { name: input, partitions: 3 },
      { name: retry, partitions: 3 },
    ]);
    const a = await member(client, [input, retry], group, { coPartitioned: true });
    await until('a joined', () => a.owned().size === 6);
    const b = await member(client, [input, retry], group, { coPartitioned: true });
    await until('split', () => a.owned().size + b.owned().size === 6 && a.owned().size > 0 && b.owned().size > 0, 40_000);
    expect(a.assignments.at(-1)!.protocol).toBe(CO_PARTITIONED);
    for (const m of [a, b]) {
      const numbers = (t: string) =>
        [...m.owned()]
          .filter((k) => k.startsWith(`${t}/`))
          .map((k) => k.split('/')[1])
          .sort();
      expect(numbers(input)).toEqual(numbers(retry));
    }
  });
});

describe('stage consumers of both clients', () => {
  it.each([
    ['sticky', STICKY],
    ['coPartitioned', CO_PARTITIONED],
  ] as const)(
    'a kafkajs and a platformatic member can share one group with the %s assignor (the group accepts both; switching a stage still needs it stopped first: the two fencing models do not fence each other)',
    async (kind, protocol) => {
      const input = uniqueName('pc-mix-in');
      const retry = uniqueName('pc-mix-retry');
      const group = uniqueName('pc-mix-g');
      // 3 partitions each: round robin would give partition numbers of the two topics to different members
      await createTopics([
        { name: input, partitions: 3 },
        { name: retry, partitions: 3 },
      ]);
      const members: Member[] = [];
      const options = (i: number): Partial<GroupConsumerOptions> =>
        kind === 'sticky'
          ? {
              sticky: {
                claim: () => ({
                  memberId: members[i]?.assignments.at(-1)?.memberId ?? '',
                  held: heldOf(members[i]),
                  busy: {},
                }),
              },
            }
          : { coPartitioned: true };
      // the kafkajs member leads (it joined first), then the platformatic one leads after the kafkajs one left and came back
      members.push(await member('kafkajs', [input, retry], group, options(0)));
      await until('kafkajs joined', () => members[0]!.owned().size === 6);
      members.push(await member('platformatic', [input, retry], group, options(1)));
      const split = (a: Member, b: Member) => a.owned().size > 0 && b.owned().size > 0 && a.owned().size + b.owned().size === 6;
      await until('split', () => split(members[0]!, members[1]!), 40_000);
      for (const m of members) expect(m.assignments.at(-1)!.protocol).toBe(protocol);
      expect(new Set([...members[0]!.owned(), ...members[1]!.owned()]).size).toBe(6);
      await members[0]!.consumer.stop();
      await until('platformatic holds all', () => members[1]!.owned().size === 6, 40_000);
      members.push(await member('kafkajs', [input, retry], group, options(2)));
      await until('split again', () => split(members[1]!, members[2]!), 40_000);
      expect(members[2]!.assignments.at(-1)!.protocol).toBe(protocol);
      if (kind === 'coPartitioned')
        for (const m of members) {
          const numbers = (t: string) =>
            [...m.owned()]
              .filter((k) => k.startsWith(`${t}/`))
              .map((k) => k.split('/')[1])
              .sort();
          expect(numbers(input)).toEqual(numbers(retry));
        }
    },
  );

  it('platformatic: a partition whose offset commit is pending in an open transaction starts from the offset that transaction commits (a stable offset)', async () => {
    const topic = uniqueName('pc-stable');
    const group = uniqueName('pc-stable-g');
    await createTopics([{ name: topic, partitions: 1 }]);
    await produce(topic, 1, 30);
    const tx = await new TxProducer(ctx.kafka, uniqueName('pc-stable-p')).connect();
    await tx.inTransaction(async () => undefined, { offsets: [{ groupId: group, topic, partition: 0, offset: '10' }] });
    await tx.close();
    // a transaction that commits offset 20 stays open while the member joins and asks for the committed offset
    const open = kafkajsOf(ctx.kafka).producer({ transactionalId: uniqueName('pc-stable-open'), idempotent: true, maxInFlightRequests: 1 });
    await open.connect();
    const txn = await open.transaction();
    await txn.sendOffsets({ consumerGroupId: group, topics: [{ topic, partitions: [{ partition: 0, offset: '20' }] }] });
    const m = await member('platformatic', [topic], group);
    await new Promise((r) => setTimeout(r, 2000));
    expect(m.got).toEqual([]);
    await txn.commit();
    await open.disconnect();
    await until('records', () => m.got.length >= 10);
    expect(byPartition(m.got, 0)).toEqual(range(20, 30));
  });
});
