/**
 * The @platformatic/kafka stage consumer (src/kafka/platformatic/consumer.ts) across joins, on a
 * stubbed client: a partition keeps its fetch position and pause flag only when this member retains
 * it under the same member id in the next generation; a new member id (the client rejoined by
 * itself, or a restart after a failure) or a skipped generation starts every partition again from
 * its committed offset, unpaused. Otherwise the records between the committed offset and the
 * stale position would never be handled. A dropped connection is retried in the fetch loop, under
 * the same membership, up to a bound; past it, or on any other failure, the client restarts.
 */
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import type { InRecord } from '../../src/kafka/io.js';

const TOPIC = 'in';
const TOPIC_ID = '00000000-0000-0000-0000-000000000001';
const COMMITTED = 100n;
const LOG_END = 1_000n;

/** A stand-in of the client's Consumer: one topic of two partitions, every partition's log holding LOG_END plain records. */
class FakeConsumer extends EventEmitter {
  static instances: FakeConsumer[] = [];
  memberId: string | null = null;
  generationId = 0;
  /** Every fetch offset asked, per partition, in order. */
  readonly asked = new Map<number, bigint[]>();
  readonly topics = { trackAll: () => undefined };
  closed = false;
  /** The next fetches that fail with this error. */
  static failing: { count: number; error: () => Error } = { count: 0, error: () => new Error('none') };
  constructor() {
    super();
    FakeConsumer.instances.push(this);
  }
  async metadata(): Promise<unknown> {
    return { brokers: new Map([[1, { host: 'h', port: 1 }]]), topics: new Map([[TOPIC, { id: TOPIC_ID, partitions: [{ leader: 1 }, { leader: 1 }] }]]) };
  }
  /** The coordinator's answer to a join: an assignment of both partitions. */
  join(memberId: string, generationId: number, partitions = [0, 1]): void {
    this.memberId = memberId;
    this.generationId = generationId;
    this.emit('consumer:group:join', { groupId: 'g', memberId, generationId, assignments: [{ topic: TOPIC, partitions }] });
  }
  async joinGroup(): Promise<void> {
    this.join(`m${FakeConsumer.instances.length}`, FakeConsumer.instances.length);
  }
  async listOffsets(): Promise<Map<string, bigint[]>> {
    return new Map([[TOPIC, [0n, 0n]]]);
  }
  async fetch(req: { topics: { partitions: { partition: number; fetchOffset: bigint }[] }[] }): Promise<unknown> {
    await new Promise((r) => setTimeout(r, 2));
    if (FakeConsumer.failing.count > 0) {
      FakeConsumer.failing.count -= 1;
      throw FakeConsumer.failing.error();
    }
    const partitions = req.topics[0]!.partitions.map(({ partition, fetchOffset }) => {
      this.asked.set(partition, [...(this.asked.get(partition) ?? []), fetchOffset]);
      const n = Number(LOG_END - fetchOffset < 50n ? LOG_END - fetchOffset : 50n);
      const records =
        n <= 0
          ? null
          : [
              {
                firstOffset: fetchOffset,
                lastOffsetDelta: n - 1,
                attributes: 0,
                producerId: -1n,
                firstTimestamp: 0n,
                records: Array.from({ length: n }, (_, i) => ({ offsetDelta: i, timestampDelta: 0n, key: null, value: Buffer.from('v'), headers: [] })),
              },
            ];
      return { partitionIndex: partition, highWatermark: LOG_END, abortedTransactions: null, records };
    });
    return { responses: [{ topicId: TOPIC_ID, partitions }] };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  async leaveGroup(): Promise<void> {}
}

vi.mock('@platformatic/kafka', async (original) => ({ ...(await original<typeof import('@platformatic/kafka')>()), Consumer: FakeConsumer }));
vi.mock('../../src/kafka/platformatic/access.js', () => ({ connectChecked: async (_c: unknown, connect: () => Promise<unknown>) => connect() }));
/** Partitions whose committed offset a previous owner's open transaction keeps unstable. */
const unstable = new Set<number>();
vi.mock('../../src/kafka/platformatic/offsets.js', () => ({
  stableCommitted: async (_c: unknown, _g: string, tps: { topic: string; partition: number }[]) => {
    if (tps.some((tp) => unstable.has(tp.partition))) {
      await new Promise((r) => setTimeout(r, 5)); // the real one asks for 30 s before it gives up
      throw Object.assign(new Error('The coordinator is not available.'), { type: 'UNSTABLE_OFFSET_COMMIT' });
    }
    return new Map(tps.map((tp) => [`${tp.topic}\u0000${tp.partition}`, COMMITTED]));
  },
}));

const { PkGroupConsumer } = await import('../../src/kafka/platformatic/consumer.js');
const { NetworkError } = await import('@platformatic/kafka');

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
  FakeConsumer.instances.length = 0;
  FakeConsumer.failing.count = 0;
  unstable.clear();
});

async function until(what: string, cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A started consumer whose handler takes every batch and pauses a partition once its records reach `stopAt`. */
async function started(stopAt = 500n) {
  const consumer = new PkGroupConsumer(
    { brokers: ['localhost:1'], clientId: 't' },
    {
      groupId: 'g',
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 500,
      rebalanceTimeoutMs: 10_000,
      maxWaitMs: 20,
      reconnect: { initialMs: 5, maxMs: 10 },
      logger: createLogger('t', 'silent'),
    },
  );
  const got: InRecord[] = [];
  const assignments: { memberId: string; generationId: number }[] = [];
  stops.push(() => consumer.stop());
  await consumer.start([TOPIC], {
    onAssignment: (_a, info) => assignments.push(info),
    onBatch: (topic, partition, records) => {
      got.push(...records);
      if (BigInt(records.at(-1)!.offset) + 1n >= stopAt) consumer.pause({ topic, partition });
      return true;
    },
    onMarkersOnly: () => undefined,
    onCrash: (err) => {
      throw err;
    },
  });
  return { consumer, got, assignments, client: () => FakeConsumer.instances.at(-1)! };
}

/** Waits until both partitions are paused at 500 (records 100..499 handled). */
async function atStale(s: Awaited<ReturnType<typeof started>>): Promise<void> {
  await until('both partitions at 500', () => [0, 1].every((p) => s.got.some((r) => r.partition === p && r.offset === '499')));
  await new Promise((r) => setTimeout(r, 50));
}

const askedAfter = (s: Awaited<ReturnType<typeof started>>, p: number, n: number): bigint[] => (s.client().asked.get(p) ?? []).slice(n);

describe('PkGroupConsumer positions', () => {
  it('a partition whose committed offset stays unstable holds up only itself: the others are fetched meanwhile, and it starts from its committed offset once stable, under the same member', async () => {
    unstable.add(1);
    const s = await started(2_000n);
    await until('partition 0 fetched', () => s.got.some((r) => r.partition === 0 && Number(r.offset) >= 499));
    expect(s.client().asked.get(1)).toBeUndefined();
    unstable.delete(1);
    await until('partition 1 fetched', () => (s.client().asked.get(1)?.length ?? 0) > 0);
    expect(s.client().asked.get(1)![0]).toBe(COMMITTED);
    expect(FakeConsumer.instances).toHaveLength(1);
  });
});

describe('PkGroupConsumer across joins', () => {
  it('the same member id in the next generation keeps the position and the pause of a retained partition', async () => {
    const s = await started();
    await atStale(s);
    const before = s.client().asked.get(0)!.length;
    s.client().join('m1', 2);
    await new Promise((r) => setTimeout(r, 100));
    // still paused: nothing fetched
    expect(askedAfter(s, 0, before)).toEqual([]);
    s.consumer.resume({ topic: TOPIC, partition: 0 });
    await until('fetched again', () => askedAfter(s, 0, before).length > 0);
    expect(askedAfter(s, 0, before)[0]).toBe(500n);
  });

  it('a new member id (the client rejoined by itself): every partition starts again from its committed offset, unpaused', async () => {
    const s = await started(2_000n);
    await until('position 500', () => s.got.some((r) => r.partition === 0 && Number(r.offset) >= 499));
    s.consumer.pause({ topic: TOPIC, partition: 0 });
    s.consumer.pause({ topic: TOPIC, partition: 1 });
    await new Promise((r) => setTimeout(r, 50));
    const before = [0, 1].map((p) => s.client().asked.get(p)!.length);
    s.client().join('m9', 2);
    expect(s.assignments.at(-1)).toMatchObject({ memberId: 'm9', generationId: 2 });
    // not resumed by anyone: the new membership's partitions are unpaused, and start from the committed offset
    await until('fetched again', () => [0, 1].every((p) => askedAfter(s, p, before[p]!).length > 0));
    for (const p of [0, 1]) expect(askedAfter(s, p, before[p]!)[0]).toBe(COMMITTED);
  });

  it('a skipped generation under the same member id is a new membership too', async () => {
    const s = await started();
    await atStale(s);
    const before = [0, 1].map((p) => s.client().asked.get(p)!.length);
    s.client().join('m1', 3);
    expect(s.assignments.at(-1)).toMatchObject({ memberId: 'm1', generationId: 3 });
    await until('fetched again', () => [0, 1].every((p) => askedAfter(s, p, before[p]!).length > 0));
    for (const p of [0, 1]) expect(askedAfter(s, p, before[p]!)[0]).toBe(COMMITTED);
  });

  it('a partition newly assigned (not retained) starts from its committed offset and unpaused, a retained one goes on', async () => {
    const s = await started();
    await atStale(s);
    s.client().join('m1', 2, [0]);
    await new Promise((r) => setTimeout(r, 50));
    const before = [0, 1].map((p) => s.client().asked.get(p)!.length);
    // partition 1 comes back in the generation after: it was not retained
    s.client().join('m1', 3, [0, 1]);
    await until('partition 1 fetched again', () => askedAfter(s, 1, before[1]!).length > 0);
    expect(askedAfter(s, 1, before[1]!)[0]).toBe(COMMITTED);
    await new Promise((r) => setTimeout(r, 50));
    expect(askedAfter(s, 0, before[0]!)).toEqual([]);
  });

  it('a restart after a client failure (a new member) starts from the committed offsets', async () => {
    const s = await started();
    await atStale(s);
    const first = s.client();
    first.emit('error', new Error('the client gave up'));
    await until('a new client joined', () => FakeConsumer.instances.length === 2 && s.assignments.length === 2);
    expect(first.closed).toBe(true);
    await until('fetched', () => [0, 1].every((p) => (s.client().asked.get(p)?.length ?? 0) > 0));
    for (const p of [0, 1]) expect(s.client().asked.get(p)![0]).toBe(COMMITTED);
  });
});

describe('PkGroupConsumer on fetch failures', () => {
  const each = (s: Awaited<ReturnType<typeof started>>, p: number): number[] => s.got.filter((r) => r.partition === p).map((r) => Number(r.offset));
  const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

  it('a dropped connection is fetched again under the same membership: no restart, no gap, no repeat', async () => {
    FakeConsumer.failing = { count: 3, error: () => new NetworkError('Connection closed.') };
    const s = await started(LOG_END + 1n);
    await until('every record', () => s.got.length >= 2 * Number(LOG_END - COMMITTED));
    await new Promise((r) => setTimeout(r, 50));
    expect(FakeConsumer.failing.count).toBe(0);
    expect(FakeConsumer.instances).toHaveLength(1);
    expect(s.assignments).toHaveLength(1);
    for (const p of [0, 1]) expect(each(s, p)).toEqual(range(Number(COMMITTED), Number(LOG_END)));
  });

  it('one network failure too many restarts the client (a new member)', async () => {
    FakeConsumer.failing = { count: 7, error: () => new NetworkError('Connection closed.') };
    const s = await started(LOG_END + 1n);
    await until('a new member', () => s.assignments.length === 2, 10_000);
    expect(FakeConsumer.instances).toHaveLength(2);
    expect(FakeConsumer.instances[0]!.closed).toBe(true);
  });

  it('any other failure restarts the client at once', async () => {
    FakeConsumer.failing = { count: 1, error: () => new Error('not a network failure') };
    const s = await started(LOG_END + 1n);
    await until('a new member', () => s.assignments.length === 2);
    expect(FakeConsumer.instances).toHaveLength(2);
  });
});
