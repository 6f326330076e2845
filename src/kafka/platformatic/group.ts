/**
 * Group membership of a @platformatic/kafka stage consumer with sonicflow's assignors
 * (`../assignors.ts`): the protocols it offers, the userData it sends, and the leader's
 * assignment — the same names, userData and fallback to kafkajs' round robin as the kafkajs
 * consumer, so members of both clients can share one group (classic protocol, subscription v0).
 */
import { subscribe } from 'node:diagnostics_channel';
import {
  CO_PARTITIONED,
  ROUND_ROBIN,
  SINGLETON,
  STICKY,
  coPartitionedAssignment,
  readStickyClaim,
  roundRobinAssignment,
  singletonAssignment,
  singletonUserData,
  stickyAssignment,
  stickyUserData,
} from '../assignors.js';
import type { GroupConsumerOptions } from '../consumer.js';

/** The JoinGroup API key, and the client's tracing channel of every request's end (its response included). */
const JOIN_GROUP = 11;
const API_END = 'tracing:plt:kafka:connections:api:asyncEnd';

/**
 * The protocol the coordinator chose for each join, by member id and generation: the client keeps
 * it private and its join event omits it, but the runtime needs it (a stage with stores refuses a
 * round-robin assignment) and the leader needs it to run the chosen assignor. Read from the
 * JoinGroup responses on the client's diagnostics channel; an entry is taken once, when the
 * member's join event asks for it, and the map stays small.
 */
const chosen = new Map<string, string>();
let listening = false;

function listenForProtocols(): void {
  if (listening) return;
  listening = true;
  subscribe(API_END, (message) => {
    const m = message as { apiKey?: number; result?: { memberId?: string; generationId?: number; protocolName?: string | null } };
    if (m.apiKey !== JOIN_GROUP || !m.result?.memberId || !m.result.protocolName) return;
    chosen.set(`${m.result.memberId}/${m.result.generationId}`, m.result.protocolName);
    // a member that never asks (closed meanwhile) must not make the map grow
    if (chosen.size > 1000) chosen.delete(chosen.keys().next().value!);
  });
}

/** The protocol the coordinator chose for `memberId`'s join of `generationId` (undefined if unseen); `take` forgets it. */
export function chosenProtocol(memberId: string, generationId: number, take = false): string | undefined {
  const key = `${memberId}/${generationId}`;
  const protocol = chosen.get(key);
  if (take) chosen.delete(key);
  return protocol;
}

/** A member's userData as a Buffer (the client types it as a string too). */
function userDataOf(m: { metadata?: Buffer | string | null }): Buffer | undefined {
  return typeof m.metadata === 'string' ? Buffer.from(m.metadata) : (m.metadata ?? undefined);
}

/** sonicflow's assignor of these options (first) and its fallback, as {@link GroupConsumerOptions} choose them. */
export function offeredProtocols(o: GroupConsumerOptions): string[] {
  if (o.singleton) return [SINGLETON];
  if (o.coPartitioned) return [CO_PARTITIONED, ROUND_ROBIN];
  if (o.sticky) return [STICKY, ROUND_ROBIN];
  return [ROUND_ROBIN];
}

/** A member as the leader's assignor sees it (the client's member subscription, decoded). */
interface SubscribedMember {
  memberId: string;
  topics?: string[];
  metadata?: Buffer | string | null;
}

/** The client's group options this module sets (its own types stay inside src/kafka/platformatic). */
export interface PkGroupOptions {
  protocols: { name: string; version: number }[];
  protocolsMetadata: () => Buffer;
  partitionAssigner: (
    current: string,
    members: Map<string, SubscribedMember>,
    topics: Set<string>,
    metadata: { topics: Map<string, { partitionsCount: number }> },
  ) => { memberId: string; assignments: Map<string, { topic: string; partitions: number[] }> }[];
}

/**
 * The group options of a member: the protocols it offers (subscription v0, one userData for all:
 * the sticky claim or the singleton's `holding`, as the kafkajs members send), and the leader's
 * assignor, which runs the assignor the coordinator chose (`protocol()`: read when it assigns).
 */
export function groupOptions(o: GroupConsumerOptions, protocol: () => string | undefined): PkGroupOptions {
  listenForProtocols();
  const names = offeredProtocols(o);
  return {
    protocols: names.map((name) => ({ name, version: 0 })),
    protocolsMetadata: () =>
      o.singleton ? singletonUserData(o.singleton.holding()) : o.sticky && !o.coPartitioned ? stickyUserData(o.sticky.claim()) : Buffer.alloc(0),
    partitionAssigner: (_current, members, topics, metadata) => {
      const all = [...members.values()];
      const partitionsOf = (ts: Iterable<string>): Record<string, number[]> => {
        const out: Record<string, number[]> = {};
        for (const t of ts) {
          const n = metadata.topics.get(t)?.partitionsCount ?? 0;
          if (n > 0) out[t] = Array.from({ length: n }, (_, i) => i);
        }
        return out;
      };
      const leaderTopics = [...topics];
      const name = protocol() ?? names[0];
      const result =
        name === STICKY
          ? stickyAssignment(
              all.map((m) => {
                const claim = readStickyClaim(userDataOf(m), m.memberId);
                return { id: m.memberId, topics: m.topics ?? [], ...(claim ? { claim } : {}) };
              }),
              // every topic some member subscribes to, each dealt among its subscribers
              partitionsOf(new Set([...leaderTopics, ...all.flatMap((m) => m.topics ?? [])])),
            )
          : name === CO_PARTITIONED
            ? coPartitionedAssignment(
                all.map((m) => m.memberId),
                partitionsOf(leaderTopics),
              )
            : name === SINGLETON
              ? singletonAssignment(
                  all.map((m) => ({ id: m.memberId, userData: userDataOf(m) })),
                  partitionsOf(leaderTopics),
                )
              : roundRobinAssignment(
                  all.map((m) => m.memberId),
                  partitionsOf(leaderTopics),
                );
      return [...result].map(([memberId, a]) => ({
        memberId,
        assignments: new Map(Object.entries(a).map(([topic, partitions]) => [topic, { topic, partitions }])),
      }));
    },
  };
}
