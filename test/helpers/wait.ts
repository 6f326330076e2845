/**
 * Waiting on conditions instead of sleeping: a poll of the condition itself, with a deadline; and
 * the condition "nothing is left for these stages to do", read from their consumer groups.
 */
import type { KafkaClient } from '../../src/kafka/client.js';
import { OffsetReader, type PartitionLag } from '../../src/kafka/lag.js';
import { sampleOffsets } from '../../src/ops/lag.js';
import { groupId } from '../../src/runtime/names.js';
import type { Topology } from '../../src/runtime/topology.js';

/** Polls `check` until it returns true; throws after `timeoutMs` with `what` (a function: evaluated then, for the last state seen). */
export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string | (() => string), everyMs = 500): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, everyMs)); // the poll interval, not a wait for anything
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
}

/** A partition its group has nothing left to read from: committed up to the log end (or empty, never committed). */
export function consumedToEnd(p: Pick<PartitionLag, 'committed' | 'end' | 'earliest'>): boolean {
  return p.committed >= p.end || (p.committed < 0n && p.end === p.earliest);
}

/**
 * Waits until the consumer group of each of `stages` has committed every partition of every topic
 * it consumes (its input and retry tiers) up to the log end, transaction markers included. Once
 * it has, the stage has handled every record written before the call and committed its outputs
 * with them (exactly-once: outputs and offsets commit together): no later output, and no
 * duplicate, can come from those records. Call it after the last input was written.
 */
export async function waitConsumedToEnd(
  ctx: { kafka: KafkaClient; config: { clientId: string } },
  topology: Topology,
  stages: string[],
  timeoutMs = 60_000,
): Promise<void> {
  const reader = new OffsetReader(ctx.kafka);
  let behind = 'no read yet';
  try {
    await waitUntil(
      async () => {
        const sample = await sampleOffsets(reader, ctx.config.clientId, topology, stages);
        const left = sample.stages.flatMap((s) => [
          ...s.missingTopics.map((t) => `${s.groupId} ${t} (missing)`),
          ...s.partitions.filter((p) => !consumedToEnd(p)).map((p) => `${s.groupId} ${p.topic}:${p.partition} committed ${p.committed} of ${p.end}`),
        ]);
        behind = left.join(', ');
        return left.length === 0;
      },
      timeoutMs,
      () => `the groups of ${stages.join(', ')} to commit to the log end; behind: ${behind}`,
    );
  } finally {
    await reader.close();
  }
}

/** Waits until every stage's consumer group has at least its minimum replicas as members (one at least). */
export async function waitForMinimumMembers(ctx: { kafka: KafkaClient; config: { clientId: string } }, topology: Topology, timeoutMs = 60_000): Promise<void> {
  const reader = new OffsetReader(ctx.kafka);
  try {
    const joined = async (): Promise<boolean> =>
      (
        await Promise.all(
          topology.stages.map(async (s) => (await reader.members(groupId(ctx.config.clientId, topology, s))) >= Math.max(1, s.scaling.minReplicas)),
        )
      ).every(Boolean);
    await waitUntil(joined, timeoutMs, 'every stage group to have its minimum members');
  } finally {
    await reader.close();
  }
}
