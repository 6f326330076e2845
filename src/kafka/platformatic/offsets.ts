/**
 * Committed offsets as a stable offset: OffsetFetch with `require_stable` (KIP-447), which the
 * client's own `listCommittedOffsets` does not set. While a transaction that commits an offset of
 * the partition is open (a previous owner's, in flight during a rebalance), the coordinator
 * answers UNSTABLE_OFFSET_COMMIT; we wait and ask again, so a new owner never starts from the
 * offset that transaction is about to replace.
 */
import { kGetConnection, offsetFetchV8, type Consumer } from '@platformatic/kafka';
import { sleep } from '../../core/retry.js';
import type { TopicPartition } from '../assignors.js';
import { normalizeError } from './options.js';

/** Wait between asks while an offset commit is pending, ms. */
const UNSTABLE_WAIT_MS = 50;

/** Errors after which the coordinator is looked up again. */
const COORDINATOR_MOVED = new Set(['NOT_COORDINATOR', 'COORDINATOR_NOT_AVAILABLE', 'COORDINATOR_LOAD_IN_PROGRESS']);

type Broker = Parameters<Consumer[typeof kGetConnection]>[0];
type Connection = Parameters<typeof offsetFetchV8.api.async>[0];

function connectionTo(consumer: Consumer, broker: Broker): Promise<Connection> {
  return new Promise((resolve, reject) => consumer[kGetConnection](broker, (err, conn) => (err ? reject(err) : resolve(conn!))));
}

/**
 * The group's committed offset of each of `tps` (key `topic\0partition`; -1 when none), waiting
 * out pending commits. `client` is the member's @platformatic/kafka Consumer (typed `object` so
 * that no client type leaves src/kafka/platformatic).
 */
export async function stableCommitted(client: object, groupId: string, tps: TopicPartition[], signal?: AbortSignal): Promise<Map<string, bigint>> {
  const consumer = client as Consumer;
  const topics = new Map<string, number[]>();
  for (const tp of tps) topics.set(tp.topic, [...(topics.get(tp.topic) ?? []), tp.partition]);
  for (let attempt = 0; ; attempt++) {
    try {
      const coordinator = await consumer.findGroupCoordinator();
      const metadata = await consumer.metadata({ topics: [] });
      const broker = metadata.brokers.get(coordinator);
      if (!broker) throw new Error(`coordinator ${coordinator} of group ${groupId} is not in the cluster metadata`);
      const conn = await connectionTo(consumer, broker);
      const res = await offsetFetchV8.api.async(
        conn,
        [{ groupId, memberId: null, memberEpoch: -1, topics: [...topics].map(([name, partitionIndexes]) => ({ name, partitionIndexes })) }],
        true,
      );
      const out = new Map<string, bigint>();
      for (const g of res.groups) for (const t of g.topics) for (const p of t.partitions) out.set(`${t.name}\u0000${p.partitionIndex}`, p.committedOffset);
      return out;
    } catch (err) {
      const e = normalizeError(err) as Error & { type?: string };
      if (attempt > 600 || (e.type !== 'UNSTABLE_OFFSET_COMMIT' && !(e.type && COORDINATOR_MOVED.has(e.type)) && attempt > 2)) throw e;
      await sleep(UNSTABLE_WAIT_MS, signal);
    }
  }
}
