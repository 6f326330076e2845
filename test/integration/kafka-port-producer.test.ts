/**
 * The producers of the client port (src/kafka/clients.ts), the same assertions for both clients
 * on the real broker: a publish is all or nothing under read_committed, with the group's offset in
 * the same transaction; a newer producer with the transactional id fences the older one, and a
 * restarted one takes the id over; keyed records land on the same partitions. For
 * @platformatic/kafka also the KIP-447 offset commit: the coordinator refuses a stale generation,
 * and the publish leaves nothing behind.
 */
import { Consumer } from '@platformatic/kafka';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { kafkaConnection } from '../../src/app/context.js';
import { eventProducer, loadKafkaClient, transactionalProducer } from '../../src/kafka/clients.js';
import { createKafka, type KafkaClient } from '../../src/kafka/client.js';
import { kafkajsOf } from '../../src/kafka/handle.js';
import { readTopic, type OutRecord } from '../../src/kafka/io.js';
import { GROUP_FENCING_ERRORS, PRODUCER_FENCING_ERRORS, type GroupGeneration, type TransactionalProducer } from '../../src/kafka/port.js';
import { createTopics, onCleanup, testContext, uniqueName } from '../helpers/infra.js';

const ctx = testContext();
const CLIENTS = ['kafkajs', 'platformatic'] as const;
const handles = new Map(CLIENTS.map((client) => [client, createKafka({ ...kafkaConnection(ctx.config), client }, createLogger('test', 'silent'))]));
const handle = (client: (typeof CLIENTS)[number]): KafkaClient => handles.get(client)!;

const open: TransactionalProducer[] = [];
afterAll(async () => {
  for (const p of open.splice(0)) await p.close().catch(() => undefined);
});

async function txProducer(kafka: KafkaClient, id: string): Promise<TransactionalProducer> {
  const p = await transactionalProducer(kafka, id, 30_000).connect();
  open.push(p);
  return p;
}

/** The committed offset of each partition of `topic` for `groupId` ('-1' when none). */
async function committed(groupId: string, topic: string): Promise<Record<number, string>> {
  const admin = kafkajsOf(ctx.kafka).admin();
  await admin.connect();
  try {
    const [t] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return Object.fromEntries((t?.partitions ?? []).map((p) => [p.partition, p.offset]));
  } finally {
    await admin.disconnect();
  }
}

/** Deletes a group after the file's tests. */
function dropGroupLater(groupId: string): void {
  onCleanup(async () => {
    const admin = kafkajsOf(ctx.kafka).admin();
    await admin.connect();
    await admin.deleteGroups([groupId]).catch(() => undefined);
    await admin.disconnect();
  });
}

const errorType = (err: unknown): string | undefined => (err as { type?: string }).type;

// the @platformatic/kafka adapter, loaded before the factories are used with it
await loadKafkaClient('platformatic');

describe.each(CLIENTS)('the %s transactional producer of the client port', (client) => {
  it('publishes records and the input offset in one transaction: visible to read_committed, keys, headers and values intact, offset moved', async () => {
    const [input, out, group] = [uniqueName('pp-in'), uniqueName('pp-out'), uniqueName('pp-group')];
    await createTopics([
      { name: input, partitions: 2 },
      { name: out, partitions: 3 },
    ]);
    dropGroupLater(group);
    const producer = await txProducer(handle(client), uniqueName('pp-tx'));
    const records: (OutRecord & { topic: string })[] = [
      { topic: out, key: 'k-ü', value: Buffer.from('v1'), headers: { h: 'x', 'sonic-trace': 'ä1' } },
      { topic: out, key: null, value: Buffer.from([0, 1, 2, 255]), partition: 2 },
      { topic: out, key: 'k2', value: Buffer.from('v3'), partition: 2 },
    ];
    const landed = await producer.publish(records, [
      { groupId: group, topic: input, partition: 0, offset: '7' },
      { groupId: group, topic: input, partition: 1, offset: '3' },
    ]);
    expect(landed.find((l) => l.partition === 2)).toEqual({ topic: out, partition: 2, baseOffset: 0n });

    const seen = await readTopic(ctx.kafka, out, { isolation: 'read_committed', limit: 3, idleMs: 2000 });
    const byValue = new Map(seen.map((r) => [r.value?.toString('hex'), r]));
    expect(byValue.get(Buffer.from('v1').toString('hex'))).toMatchObject({ key: 'k-ü', headers: { h: 'x', 'sonic-trace': 'ä1' } });
    expect(byValue.get('000102ff')).toMatchObject({ key: null, partition: 2, offset: '0' });
    expect(byValue.get(Buffer.from('v3').toString('hex'))).toMatchObject({ key: 'k2', partition: 2, offset: '1' });
    expect(await committed(group, input)).toEqual({ 0: '7', 1: '3' });
  });

  it('a publish that fails mid-way is aborted: nothing visible, the offset unmoved (platformatic: and the producer goes on)', async () => {
    const [input, out, small, group] = [uniqueName('pp-in'), uniqueName('pp-out'), uniqueName('pp-small'), uniqueName('pp-group')];
    // the broker takes the record for `out` and refuses the one for `small` of the same request
    await createTopics([{ name: input }, { name: out }, { name: small, configs: { 'max.message.bytes': '1024' } }]);
    dropGroupLater(group);
    const producer = await txProducer(handle(client), uniqueName('pp-tx'));
    await producer.publish([{ topic: out, key: 'before', value: Buffer.from('committed') }], { groupId: group, topic: input, partition: 0, offset: '1' });

    const failing = producer.publish(
      [
        { topic: out, key: 'doomed', value: Buffer.from('aborted') },
        { topic: small, key: 'big', value: Buffer.alloc(4096, 1) },
      ],
      { groupId: group, topic: input, partition: 0, offset: '5' },
    );
    await expect(failing).rejects.toThrow();
    expect(errorType(await failing.catch((e: unknown) => e))).toBe('MESSAGE_TOO_LARGE');
    // the record of `out` was written, then aborted: read_uncommitted sees it, read_committed does not
    const all = await readTopic(ctx.kafka, out, { isolation: 'read_uncommitted', limit: 2, idleMs: 2000 });
    expect(all.map((r) => r.key)).toContain('doomed');
    const visible = await readTopic(ctx.kafka, out, { isolation: 'read_committed', idleMs: 2000 });
    expect(visible.map((r) => r.key)).toEqual(['before']);
    expect(await committed(group, input)).toEqual({ 0: '1' });

    // kafkajs' producer is replaced after a failed publish: its next publish returns without
    // writing, and the aborted one stays open until the transaction timeout
    if (client === 'kafkajs') return;
    // a publish refused before anything reached the broker (an unknown topic: nothing to abort
    // there) fails typed too; the producer goes on
    const missing = producer.publish([{ topic: uniqueName('pp-missing'), key: 'k', value: Buffer.from('v') }], []);
    expect(errorType(await missing.catch((e: unknown) => e))).toBe('UNKNOWN_TOPIC_OR_PARTITION');
    await producer.publish([{ topic: out, key: 'after', value: Buffer.from('committed') }], { groupId: group, topic: input, partition: 0, offset: '9' });
    const last = await readTopic(ctx.kafka, out, { isolation: 'read_committed', limit: 2, idleMs: 2000 });
    expect(last.map((r) => r.key)).toEqual(['before', 'after']);
    expect(await committed(group, input)).toEqual({ 0: '9' });
  });

  it('a second producer with the transactional id fences the first at connect; the first fails typed, for good', async () => {
    const [out, group] = [uniqueName('pp-out'), uniqueName('pp-group')];
    await createTopics([{ name: out }]);
    dropGroupLater(group);
    const id = uniqueName('pp-tx');
    const first = await txProducer(handle(client), id);
    await first.publish([{ topic: out, key: 'first', value: Buffer.from('1') }], { groupId: group, topic: out, partition: 0, offset: '1' });
    // connecting alone fences: no publish of the second before the first's next one
    const second = await txProducer(handle(client), id);
    const fenced = await first
      .publish([{ topic: out, key: 'zombie', value: Buffer.from('z') }], { groupId: group, topic: out, partition: 0, offset: '2' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(fenced).toBeInstanceOf(Error);
    expect(PRODUCER_FENCING_ERRORS.has(errorType(fenced) ?? '')).toBe(true);
    await second.publish([{ topic: out, key: 'second', value: Buffer.from('2') }], { groupId: group, topic: out, partition: 0, offset: '3' });
    if (client === 'platformatic') {
      // dead for good: the same typed error again, without asking the broker
      const again = await first.publish([], { groupId: group, topic: out, partition: 0, offset: '4' }).catch((e: unknown) => e);
      expect(again).toBe(fenced);
    }
    const seen = await readTopic(ctx.kafka, out, { isolation: 'read_committed', limit: 2, idleMs: 2000 });
    expect(seen.map((r) => r.key)).toEqual(['first', 'second']);
    expect(await committed(group, out)).toEqual({ 0: '3' });
  });

  it('a restarted producer (closed, a new one with the same id) takes the transactional id over', async () => {
    const [out, group] = [uniqueName('pp-out'), uniqueName('pp-group')];
    await createTopics([{ name: out }]);
    dropGroupLater(group);
    const id = uniqueName('pp-tx');
    for (const key of ['run-1', 'run-2', 'run-3']) {
      const p = await txProducer(handle(client), id);
      await p.publish([{ topic: out, key, value: Buffer.from(key) }], { groupId: group, topic: out, partition: 0, offset: key.slice(-1) });
      await p.close();
    }
    const seen = await readTopic(ctx.kafka, out, { isolation: 'read_committed', limit: 3, idleMs: 2000 });
    expect(seen.map((r) => r.key)).toEqual(['run-1', 'run-2', 'run-3']);
    expect(await committed(group, out)).toEqual({ 0: '3' });
  });
});

describe('keyed records with either client', () => {
  it('land on the same partitions (Java-compatible murmur2), transactional and not, also for a partition count not a power of two', async () => {
    const keys = Array.from({ length: 200 }, (_, i) => `key-${i}-${'x'.repeat(i % 7)}`);
    const placed: Record<string, Map<string, number>> = {};
    for (const client of CLIENTS) {
      for (const mode of ['tx', 'event'] as const) {
        const topic = uniqueName('pp-keys');
        await createTopics([{ name: topic, partitions: 7 }]);
        const records = keys.map((key) => ({ topic, key, value: Buffer.from(key) }));
        if (mode === 'tx') {
          const p = await txProducer(handle(client), uniqueName('pp-tx'));
          await p.publish(records, []);
          await p.close();
        } else {
          const p = await eventProducer(handle(client)).connect();
          await p.sendMany(records);
          await p.close();
        }
        const seen = await readTopic(ctx.kafka, topic, { limit: keys.length, idleMs: 3000 });
        placed[`${client}/${mode}`] = new Map(seen.map((r) => [r.key!, r.partition]));
      }
    }
    const reference = placed['kafkajs/tx']!;
    expect(reference.size).toBe(keys.length);
    // spread over every partition, so a constant partitioner would not pass
    expect(new Set(reference.values()).size).toBe(7);
    for (const [name, map] of Object.entries(placed)) expect([name, Object.fromEntries(map)]).toEqual([name, Object.fromEntries(reference)]);
  });
});

describe('the platformatic transactional producer with a group generation (KIP-447)', () => {
  /** A member of `groupId` on `topic` through the client's classic group protocol; resolves its generations as they come. */
  async function member(
    groupId: string,
    topic: string,
    name: string,
  ): Promise<{ consumer: Consumer; generation: () => GroupGeneration; next: () => Promise<GroupGeneration> }> {
    const consumer = new Consumer({
      clientId: `pp-${name}`,
      groupId,
      bootstrapBrokers: ctx.config.kafkaBrokers,
      sessionTimeout: 6000,
      rebalanceTimeout: 6000,
      heartbeatInterval: 300,
      autocommit: false,
    });
    consumer.on('error', () => undefined);
    let current: GroupGeneration | undefined;
    let waiting: ((g: GroupGeneration) => void)[] = [];
    consumer.on('consumer:group:join', (p: { memberId: string; generationId: number }) => {
      current = { groupId, memberId: p.memberId, generationId: p.generationId };
      for (const w of waiting.splice(0)) w(current);
    });
    consumer.topics.trackAll(topic);
    const joined = new Promise<GroupGeneration>((resolve) => waiting.push(resolve));
    await consumer.joinGroup({});
    await joined;
    return {
      consumer,
      generation: () => current!,
      next: () => new Promise<GroupGeneration>((resolve) => (waiting = [...waiting, resolve])),
    };
  }

  it('commits with the current generation; a stale one is refused, its records never visible, the offsets unchanged; the producer goes on', async () => {
    const [input, out, group] = [uniqueName('pp-in'), uniqueName('pp-out'), uniqueName('pp-group')];
    await createTopics([{ name: input, partitions: 2 }, { name: out }]);
    dropGroupLater(group);
    const a = await member(group, input, 'a');
    const members = [a.consumer];
    try {
      const gen1 = a.generation();
      const producer = await txProducer(handle('platformatic'), uniqueName('pp-tx'));
      await producer.publish([{ topic: out, key: 'gen1', value: Buffer.from('1') }], { groupId: group, topic: input, partition: 0, offset: '10' }, gen1);
      expect(await committed(group, input)).toEqual({ 0: '10', 1: '-1' });

      // another member joins: a rejoins, and the group moves to the next generation
      const rejoined = a.next();
      const b = await member(group, input, 'b');
      members.push(b.consumer);
      const gen2 = await rejoined;
      expect(gen2.generationId).toBeGreaterThan(gen1.generationId);

      const stale = await producer
        .publish([{ topic: out, key: 'zombie', value: Buffer.from('z') }], { groupId: group, topic: input, partition: 0, offset: '20' }, gen1)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(stale).toBeInstanceOf(Error);
      expect(GROUP_FENCING_ERRORS.has(errorType(stale) ?? '')).toBe(true);
      expect(await committed(group, input)).toEqual({ 0: '10', 1: '-1' });

      await producer.publish([{ topic: out, key: 'gen2', value: Buffer.from('2') }], { groupId: group, topic: input, partition: 1, offset: '4' }, gen2);
      const seen = await readTopic(ctx.kafka, out, { isolation: 'read_committed', idleMs: 2000 });
      expect(seen.map((r) => r.key)).toEqual(['gen1', 'gen2']);
      // the zombie's record was written and aborted
      const all = await readTopic(ctx.kafka, out, { isolation: 'read_uncommitted', limit: 3, idleMs: 2000 });
      expect(all.map((r) => r.key)).toEqual(['gen1', 'zombie', 'gen2']);
      expect(await committed(group, input)).toEqual({ 0: '10', 1: '4' });
    } finally {
      for (const c of members) await c.close(true).catch(() => undefined);
    }
  });
});
