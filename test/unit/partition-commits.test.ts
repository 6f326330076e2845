/**
 * The partition's offset-only commit (a position that moved over transaction markers only) hands
 * a failure to its runner, like a batch's commit does: a refusal by the broker's authorizer must
 * reach the runner (which stops the stage with KAFKA_NOT_AUTHORIZED), not the partition's own
 * retry path. No broker: the partition's host is a stand-in recording what it is asked.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import type { GroupConsumer } from '../../src/kafka/consumer.js';
import type { TxProducer } from '../../src/kafka/io.js';
import { Partition, type PartitionHost } from '../../src/runtime/partition.js';
import type { PartitionRecovery } from '../../src/runtime/recovery.js';

afterEach(() => void vi.useRealTimers());

function host(publish: TxProducer['publish']): { host: PartitionHost; failed: unknown[]; published: unknown[]; calls: string[] } {
  const calls: string[] = [];
  const failed: unknown[] = [];
  const published: unknown[] = [];
  const consumer = {
    committed: async () => 10n,
    pause: (tp: { partition: number }) => void calls.push(`pause ${tp.partition}`),
    resume: (tp: { partition: number }) => void calls.push(`resume ${tp.partition}`),
    seek: (tp: { partition: number }, o: string) => void calls.push(`seek ${tp.partition} ${o}`),
  } as unknown as GroupConsumer;
  const h: PartitionHost = {
    groupId: 'g',
    stage: 's',
    consumer,
    recovery: { logStart: async () => 0n, stalled: new Set(), startAfterFailure: async () => undefined } as unknown as PartitionRecovery,
    logger: createLogger('test', 'silent'),
    metrics: undefined,
    maxRecords: 10,
    prefetch: 20,
    stopping: new AbortController().signal,
    running: () => true,
    producerFor: async () =>
      ({
        publish: async (...args: Parameters<TxProducer['publish']>) => {
          published.push(args[1]);
          return publish(...args);
        },
        close: async () => undefined,
      }) as unknown as TxProducer,
    schedule: () => undefined,
    failed: async (_p, err) => void failed.push(err),
  };
  return { host: h, failed, published, calls };
}

describe('offset-only commits', () => {
  it('commit the position past markers once idle, and hand a refusal to the runner', async () => {
    vi.useFakeTimers();
    const refusal = Object.assign(new Error('Not authorized to access group'), { type: 'GROUP_AUTHORIZATION_FAILED' });
    const {
      host: h,
      failed,
      published,
    } = host(async () => {
      throw refusal;
    });
    const p = new Partition({ topic: 't', partition: 0 }, h);
    await p.fence();
    p.onMarkersOnly(11n);
    await vi.advanceTimersByTimeAsync(1100);
    expect(published).toEqual([{ groupId: 'g', topic: 't', partition: 0, offset: '12' }]);
    expect(failed).toEqual([refusal]);
    expect(p.committed).toBe(10n);
    expect(p.busy).toBe(false);
  });

  it('move the committed offset when the commit lands', async () => {
    vi.useFakeTimers();
    const { host: h, failed } = host(async () => []);
    const p = new Partition({ topic: 't', partition: 0 }, h);
    await p.fence();
    p.onMarkersOnly(11n);
    await vi.advanceTimersByTimeAsync(1100);
    expect(failed).toEqual([]);
    expect(p.committed).toBe(12n);
  });
});

describe('a revoked partition', () => {
  it('touches the consumer no more: a failure of its last batch neither pauses nor seeks the partition, which a new holder may have', async () => {
    const { host: h, calls } = host(async () => []);
    const p = new Partition({ topic: 't', partition: 3 }, h);
    await p.fence();
    calls.length = 0;
    p.revoke();
    expect(calls).toEqual(['resume 3']);
    // its batch in a shared transaction fails after the rebalance: recovery must not pause the
    // partition again (the new Partition of the same number would never resume it)
    await p.recover(Object.assign(new Error('revoked'), { type: 'REBALANCE_IN_PROGRESS' }));
    p.pauseFetch();
    expect(calls).toEqual(['resume 3']);
  });
});
