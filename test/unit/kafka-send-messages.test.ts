/**
 * The produce path of src/kafka/send-messages.ts against kafkajs 2.2.4's own, in the two broker
 * failures that broke exactly-once in the three-broker cluster test: one leader fails while
 * another still waits for its acks (kafkajs sends the waiting one's records again: doubled), and
 * a partition whose leader failed moves to a broker that already answered (kafkajs never sends it
 * again: lost). The brokers here are stand-ins at kafkajs's internal broker interface that keep
 * what an idempotent partition log keeps (a batch whose sequence was already written is a retry,
 * acknowledged, not appended); the real brokers are in test/cluster/kill-leader.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { createSendMessages, kafkajsSendMessages, type SendMessagesDeps } from '../../src/kafka/send-messages.js';
import '../../src/kafka/kafkajs.js';

interface Scenario {
  /** partition -> leader node, before and after the failure */
  leaders: Record<number, number>;
  after: Record<number, number>;
  /** ms a node takes to answer */
  delay: Record<number, number>;
  /** the node whose first request fails with a closed connection */
  failing: number;
  /** the failing request was written before its connection closed (its answer is lost) */
  written?: boolean;
  /** the first lookups of leaders do not place this partition (metadata without it) */
  unplaced?: { partition: number; lookups: number };
}

class ConnectionClosed extends Error {
  override name = 'KafkaJSConnectionClosedError';
  retriable = true;
}

/** A set of brokers and the client state around them, as kafkajs's sendMessages sees them. */
function world(s: Scenario) {
  let leaders = { ...s.leaders };
  const log = new Map<number, string[]>(); // partition -> values appended
  const nextSeq = new Map<number, number>(); // partition -> next sequence the log expects
  let failed = false;
  const brokers = new Map<number, { nodeId: number; produce: (r: Record<string, unknown>) => Promise<unknown> }>();
  for (const nodeId of new Set([...Object.values(s.leaders), ...Object.values(s.after)])) {
    brokers.set(nodeId, {
      nodeId,
      async produce(request) {
        await new Promise((r) => setTimeout(r, s.delay[nodeId] ?? 0));
        const fails = nodeId === s.failing && !failed;
        if (fails && !s.written) {
          failed = true;
          leaders = { ...s.after };
          throw new ConnectionClosed(`connection to ${nodeId} closed`);
        }
        const topics = request.topicData as { topic: string; partitions: { partition: number; firstSequence: number; messages: { value: string }[] }[] }[];
        const answer = {
          topics: topics.map(({ topic, partitions }) => ({
            topicName: topic,
            partitions: partitions.map(({ partition, firstSequence, messages }) => {
              if (leaders[partition] !== nodeId) return { partition, errorCode: 6 }; // NOT_LEADER (not reached here)
              const expected = nextSeq.get(partition) ?? 0;
              if (firstSequence === expected) {
                log.set(partition, [...(log.get(partition) ?? []), ...messages.map((m) => m.value)]);
                nextSeq.set(partition, expected + messages.length);
              } else if (firstSequence > expected) {
                return { partition, errorCode: 45 }; // OUT_OF_ORDER_SEQUENCE_NUMBER (not reached here)
              } // else: a batch already written, sent again: acknowledged, not appended
              return { partition, errorCode: 0, baseOffset: '0' };
            }),
          })),
        };
        if (fails) {
          failed = true;
          leaders = { ...s.after };
          throw new ConnectionClosed(`connection to ${nodeId} closed after the write`);
        }
        return answer;
      },
    });
  }
  const seq = new Map<string, number>();
  const locks = new Map<number, Promise<void>>();
  const releases = new Map<number, () => void>();
  const deps: SendMessagesDeps = {
    logger: { debug: () => undefined, error: () => undefined },
    partitioner: ({ message }) => message.partition!,
    cluster: {
      targetTopics: new Set(['t']),
      refreshMetadataIfNecessary: async () => undefined,
      refreshMetadata: async () => undefined,
      addMultipleTargetTopics: async () => undefined,
      findTopicPartitionMetadata: () => Object.keys(leaders).map((p) => ({ partitionId: Number(p), leader: leaders[Number(p)]! })),
      findLeaderForPartitions: (_topic, partitions) => {
        const out: Record<string, number[]> = {};
        const hide = s.unplaced && s.unplaced.lookups-- > 0 ? s.unplaced.partition : -1;
        for (const p of partitions) if (Number(p) !== hide) (out[leaders[Number(p)]!] ??= []).push(Number(p));
        return out;
      },
      findBroker: async ({ nodeId }) => brokers.get(Number(nodeId))! as never,
      removeBroker: () => undefined,
      isConnected: () => true,
      connect: async () => undefined,
    },
    eosManager: {
      isTransactional: () => false,
      getTransactionalId: () => '',
      getProducerId: () => 1,
      getProducerEpoch: () => 0,
      getSequence: (topic, p) => seq.get(`${topic}:${p}`) ?? 0,
      updateSequence: (topic, p, n) => void seq.set(`${topic}:${p}`, (seq.get(`${topic}:${p}`) ?? 0) + n),
      addPartitionsToTransaction: async () => undefined,
      async acquireBrokerLock(b) {
        while (locks.has(b.nodeId)) await locks.get(b.nodeId);
        locks.set(b.nodeId, new Promise<void>((r) => releases.set(b.nodeId, r)));
      },
      releaseBrokerLock(b) {
        locks.delete(b.nodeId);
        releases.get(b.nodeId)?.();
      },
    },
    // kafkajs's retrier in short: try again after a short backoff while the error is retriable
    retrier: async <T>(fn: (bail: (e: unknown) => void, n: number, t: number) => Promise<T>): Promise<T> => {
      for (let n = 0; ; n++) {
        let bailed: unknown;
        try {
          const out = await fn((e) => (bailed = e), n, 10);
          if (bailed) throw bailed;
          return out;
        } catch (err) {
          if (bailed || n >= 10 || !(err as { retriable?: boolean }).retriable) throw err;
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    },
  };
  const send = (factory: typeof createSendMessages) =>
    factory(deps)({
      acks: -1,
      timeout: 30_000,
      compression: 0,
      topicMessages: [{ topic: 't', messages: Object.keys(s.leaders).map((p) => ({ partition: Number(p), value: `v${p}` })) }],
    });
  return { send, log };
}

// partition 0 on node 1, 1 on node 2 (fails once, its partition moves to node 1), 2 on node 3
const SLOW_SIBLING: Scenario = { leaders: { 0: 1, 1: 2, 2: 3 }, after: { 0: 1, 1: 1, 2: 3 }, delay: { 1: 150, 2: 0, 3: 0 }, failing: 2 };
const FAST_SIBLING: Scenario = { leaders: { 0: 1, 1: 2, 2: 3 }, after: { 0: 1, 1: 1, 2: 3 }, delay: { 1: 0, 2: 30, 3: 0 }, failing: 2 };
const written = (log: Map<number, string[]>) => Object.fromEntries([0, 1, 2].map((p) => [p, log.get(p) ?? []]));

describe('producing while a partition leader fails', () => {
  it('kafkajs itself: records of a broker still waiting for acks are written twice', async () => {
    const w = world(SLOW_SIBLING);
    await w.send(kafkajsSendMessages!);
    expect(written(w.log)[0]).toEqual(['v0', 'v0']);
  });

  it('kafkajs itself: a partition that moved to a broker that had already answered is never written, yet the send resolves', async () => {
    const w = world(FAST_SIBLING);
    await w.send(kafkajsSendMessages!);
    expect(written(w.log)[1]).toEqual([]);
  });

  it.each([
    ['a sibling still waits for its acks', SLOW_SIBLING],
    ['the partition moves to a broker that already answered', FAST_SIBLING],
  ])('ours: every record exactly once when %s', async (_name, scenario) => {
    const w = world(scenario);
    const answers = await w.send(createSendMessages);
    expect(written(w.log)).toEqual({ 0: ['v0'], 1: ['v1'], 2: ['v2'] });
    expect(answers.map((a) => [a.topicName, a.partition, a.errorCode])).toEqual([
      ['t', 0, 0],
      ['t', 1, 0],
      ['t', 2, 0],
    ]);
  });

  it('ours: a partition the metadata does not place yet is sent once it does, never skipped', async () => {
    const w = world({ leaders: { 0: 1, 1: 2, 2: 3 }, after: { 0: 1, 1: 2, 2: 3 }, delay: {}, failing: -1, unplaced: { partition: 1, lookups: 2 } });
    const answers = await w.send(createSendMessages);
    expect(written(w.log)).toEqual({ 0: ['v0'], 1: ['v1'], 2: ['v2'] });
    expect(answers.every((a) => a.errorCode === 0)).toBe(true);
  });

  it('ours: a request that was written although its answer was lost goes again under its sequence numbers (the broker sees a retry)', async () => {
    // node 2 appends, then the connection closes before the answer: the retry must not append again
    const w = world({ ...FAST_SIBLING, after: FAST_SIBLING.leaders, written: true });
    const answers = await w.send(createSendMessages);
    expect(answers).toHaveLength(3);
    expect(written(w.log)).toEqual({ 0: ['v0'], 1: ['v1'], 2: ['v2'] });
  });
});
