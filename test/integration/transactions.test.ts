import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { kafkajsOf } from '../../src/kafka/handle.js';
import { TxProducer, readTopic } from '../../src/kafka/io.js';
import { createTopics, kafkaTool, testContext, uniqueName } from '../helpers/infra.js';

describe('kafkajs transactions on the local Kafka 4.x broker', () => {
  const ctx = testContext();

  it('an aborted transaction is invisible to read_committed; a committed one is visible exactly once', async () => {
    const topic = uniqueName('txn');
    await createTopics([{ name: topic, partitions: 3 }]);
    const producer = await new TxProducer(ctx.kafka, uniqueName('txn-producer')).connect();
    const aborted = Array.from({ length: 5 }, () => randomUUID());
    const committed = Array.from({ length: 5 }, () => randomUUID());
    await producer.inTransaction(
      async (send) =>
        send(
          topic,
          aborted.map((k) => ({ key: k, value: Buffer.from('aborted') })),
        ),
      { commit: false },
    );
    await producer.inTransaction(async (send) =>
      send(
        topic,
        committed.map((k) => ({ key: k, value: Buffer.from('committed') })),
      ),
    );
    await producer.close();

    const seen = await readTopic(ctx.kafka, topic, { isolation: 'read_committed', idleMs: 2000 });
    expect(seen.map((r) => r.key).sort()).toEqual([...committed].sort());
    expect(seen.every((r) => r.value?.toString() === 'committed')).toBe(true);

    // the aborted records were written: read_uncommitted sees them, which proves the filter above is real
    const all = await readTopic(ctx.kafka, topic, { isolation: 'read_uncommitted', idleMs: 2000 });
    expect(all.map((r) => r.key).sort()).toEqual([...aborted, ...committed].sort());
  });

  it('commits consumer offsets inside the transaction (sendOffsets), as Kafka reports them', async () => {
    const topic = uniqueName('txn-offsets');
    const group = uniqueName('txn-group');
    await createTopics([{ name: topic }]);
    const producer = await new TxProducer(ctx.kafka, uniqueName('txn-producer')).connect();
    await producer.inTransaction(async (send) => send(topic, [{ key: 'k', value: Buffer.from('v') }]), {
      offsets: [{ groupId: group, topic, partition: 0, offset: '42' }],
    });
    await producer.inTransaction(async () => undefined, { commit: false, offsets: [{ groupId: group, topic, partition: 0, offset: '99' }] });
    await producer.close();
    const admin = kafkajsOf(ctx.kafka).admin();
    await admin.connect();
    const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    await admin.disconnect();
    expect(offsets[0]?.partitions[0]?.offset).toBe('42');
    // Kafka's own tool agrees
    const described = kafkaTool('consumer-groups', ['--bootstrap-server', ctx.config.kafkaBrokers[0]!, '--describe', '--group', group]);
    expect(described).toMatch(new RegExp(`${topic}\\s+0\\s+42\\s`));
  });

  it('looks its coordinators up once, not before every transaction step (kafkajs keeps no cache)', async () => {
    const topic = uniqueName('txn-lookups');
    await createTopics([{ name: topic }]);
    // count the FindCoordinator requests kafkajs sends, at the broker connection
    const Broker = createRequire(import.meta.url)('kafkajs/src/broker/index.js') as {
      prototype: { findGroupCoordinator: (...a: unknown[]) => Promise<unknown> };
    };
    const send = Broker.prototype.findGroupCoordinator;
    let lookups = 0;
    Broker.prototype.findGroupCoordinator = function (this: unknown, ...a: unknown[]) {
      lookups += 1;
      return send.apply(this, a);
    };
    try {
      const producer = await new TxProducer(ctx.kafka, uniqueName('txn-lookups')).connect();
      const group = uniqueName('txn-lookups-group');
      for (let i = 1; i <= 20; i++)
        await producer.publish([{ topic, key: String(i), value: Buffer.from('v') }], { groupId: group, topic, partition: 0, offset: String(i) });
      await producer.close();
    } finally {
      Broker.prototype.findGroupCoordinator = send;
    }
    // one lookup of the transaction coordinator and one of the group coordinator; uncached, 20 x 4 + 1
    expect(lookups).toBeLessThanOrEqual(3);
    expect((await readTopic(ctx.kafka, topic, { isolation: 'read_committed', idleMs: 1500 })).length).toBe(20);
  });
});
