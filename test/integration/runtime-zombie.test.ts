import { describe, expect, it } from 'vitest';
import { loadKafkaClient, transactionalProducer } from '../../src/kafka/clients.js';
import { createTopics, testContext, uniqueName } from '../helpers/infra.js';
import { OffsetReader } from '../../src/kafka/lag.js';
import { groupId, transactionalId } from '../../src/runtime/names.js';
import { countKeys, deployChain, produce, readAll, startStage, waitUntil } from '../helpers/chain.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

// the client SONIC_KAFKA_CLIENT names (the conformance project runs this file on @platformatic/kafka)
await loadKafkaClient(testContext().kafka);

describe('zombie fencing (real broker)', () => {
  it('a producer whose transactional id was taken over cannot commit: the newer owner fences it', async () => {
    const ctx = testContext();
    const topic = uniqueName('fence');
    await createTopics([{ name: topic }]);
    const txId = uniqueName('stage.topic.0');
    const zombie = await transactionalProducer(ctx.kafka, txId).connect();
    const owner = await transactionalProducer(ctx.kafka, txId).connect(); // InitProducerId bumps the epoch
    const fenced = zombie.publish([{ topic, key: 'k', value: Buffer.from('zombie') }], { groupId: uniqueName('g'), topic, partition: 0, offset: '1' });
    await expect(fenced).rejects.toBeInstanceOf(Error);
    await expect(fenced).rejects.toMatchObject({ type: expect.stringMatching(/INVALID_PRODUCER_EPOCH|PRODUCER_FENCED/) });
    await owner.publish([{ topic, key: 'k', value: Buffer.from('owner') }], { groupId: uniqueName('g'), topic, partition: 0, offset: '1' });
    await Promise.all([zombie.close().catch(() => undefined), owner.close()]);
    const seen = await readAll(topic);
    expect(seen.map((r) => r.value?.toString())).toEqual(['owner']);
  });

  it("an instance stalled past a rebalance cannot publish its result; the new owner's result is the only one", async () => {
    const chain = await deployChain();
    const a = startStage(chain, 'first', { CHAIN_DELAY_MS: '10000', CHAIN_TAG: 'A' });
    await a.waitForLog(/"msg":"partitions assigned"/);
    const [key] = await produce(chain, 1);
    await a.waitForLog(/"msg":"handling"/);
    a.proc.kill('SIGSTOP'); // A freezes mid-handler: no heartbeats, it becomes a zombie
    const b = startStage(chain, 'first', { CHAIN_DELAY_MS: '0', CHAIN_TAG: 'B' });
    try {
      await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length > 0, 60_000, "the new owner's output");
      a.proc.kill('SIGCONT'); // A's handler finishes now and A tries to publish
      await a.waitForLog(/"msg":"(results dropped, not published|transaction failed[^"]*)"/, 30_000);
      // the group has committed the input to its end: nothing more can be published for it
      await waitConsumedToEnd(testContext(), chain.topology, ['first']);
      const out = await readAll(chain.topic('mid'));
      expect(out).toHaveLength(1);
      expect(out[0]!.key).toBe(key);
      const value = (await testContext().serde.decode<{ result_url: string }>(out[0]!.value!, 'task-status')).value;
      expect(value.result_url).toBe('B');
    } finally {
      a.proc.kill('SIGCONT');
      a.proc.kill('SIGTERM');
      b.proc.kill('SIGTERM');
      await Promise.all([a.exited, b.exited]);
    }
  }, 120_000);

  it('transactions fenced mid-backlog: the stage goes back to the committed offset past its prefetched records, and every record comes out once', async () => {
    const chain = await deployChain();
    const keys = await produce(chain, 2000);
    // 10 ms per record, 50 per transaction: each partition has a prefetched queue of hundreds
    // of records beyond its committed offset for several seconds
    const a = startStage(chain, 'first', { CHAIN_DELAY_MS: '10' });
    try {
      await a.waitForLog(/"msg":"partitions assigned"/);
      const ctx = testContext();
      // mid-backlog: a transaction committed on every partition, most of the records still ahead
      const reader = new OffsetReader(ctx.kafka);
      try {
        const committed = async (): Promise<bigint[]> => [
          ...(await reader.committed(groupId(ctx.config.clientId, chain.prefix, 'first'), [chain.topic('in')])).values(),
        ];
        await waitUntil(async () => (await committed()).filter((c) => c > 0n).length === 4, 60_000, 'a commit on each of the 4 partitions');
        expect((await committed()).reduce((n, c) => n + c, 0n)).toBeLessThan(BigInt(keys.length / 2));
      } finally {
        await reader.close();
      }
      // taking over the transactional ids aborts the open transactions and fences the stage's
      // producers: one per input partition (kafkajs), or the stage's one (a KIP-447 client), which
      // the stage names in its log
      const stageId = /"transactional_id":"([^"]+)"[^\n]*one transactional producer for the stage/.exec(a.logs())?.[1];
      // the stage runs on the client this run asked for (npm test runs this file on both)
      expect(stageId !== undefined).toBe(process.env.SONIC_KAFKA_CLIENT === 'platformatic');
      const ids = stageId
        ? [stageId]
        : [0, 1, 2, 3].map((p) => transactionalId(ctx.config.clientId, { kind: 'partition', stage: 'first', topic: chain.topic('in'), partition: p }));
      const takeovers = await Promise.all(ids.map((id) => transactionalProducer(ctx.kafka, id).connect()));
      await Promise.all(takeovers.map((t) => t.close()));
      await a.waitForLog(/"msg":"transaction failed[^"]*"/, 30_000);
      await waitUntil(async () => (await readAll(chain.topic('mid'), 1000)).length >= keys.length, 90_000, 'every record through the first hop');
      await waitConsumedToEnd(ctx, chain.topology, ['first']);
      const counts = countKeys(await readAll(chain.topic('mid')));
      expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
      expect(keys.filter((k) => !counts.has(k))).toEqual([]);
      expect(counts.size).toBe(keys.length);
    } finally {
      a.proc.kill('SIGTERM');
      await a.exited;
    }
  }, 150_000);
});
