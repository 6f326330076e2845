/**
 * sonicflow's group assignors as pure functions, shared by both clients of the port (`port.ts`):
 * each client wraps them in its own assignor interface and member metadata, but the wire format is
 * the standard consumer protocol (subscription v0: topics and userData; assignment v0), so members
 * of the two clients can be in one group (a rolling switch of `SONIC_KAFKA_CLIENT`) and agree on
 * the protocol names, the userData and the fallback to round robin.
 *
 * - `SonicflowCoPartitioned`: partition p of every topic to one member (stages with state stores).
 * - `SonicflowSingleton`: everything to one member, the one already holding it (a dispatcher).
 * - `SonicflowSticky`: even shares, each member keeping what it holds (a record in hand first).
 * - `RoundRobinAssigner`: kafkajs' round robin, the fallback while a member offers none of these.
 */

export interface TopicPartition {
  topic: string;
  partition: number;
}

export type Assignment = TopicPartition[];

/** The name (group protocol) of the co-partitioning assignor. */
export const CO_PARTITIONED = 'SonicflowCoPartitioned';

/** The name (group protocol) of the sticky assignor. */
export const STICKY = 'SonicflowSticky';

/** What a member tells the sticky assignor when it joins (its metadata's userData, as JSON). */
export interface StickyClaim {
  /** The member id under which it held them: a claim made under another id (expelled, rejoined) is stale. */
  memberId: string;
  /** The partitions it holds, by topic. */
  held: Record<string, number[]>;
  /** Of those, the ones with a record in hand (a render): kept first, moved last. */
  busy: Record<string, number[]>;
}

/** A member as the sticky assignor sees it: its id, what it subscribes to, and its claim (if any, valid). */
export interface StickyMember {
  id: string;
  topics: readonly string[];
  claim?: Pick<StickyClaim, 'held' | 'busy'>;
}

/** Partition numbers of one topic in a claim: whole numbers >= 0 only (anything else is no claim). */
function partitionList(v: unknown): number[] {
  return Array.isArray(v) ? v.filter((p): p is number => Number.isInteger(p) && (p as number) >= 0) : [];
}

/** Reads a member's claim from its userData; a claim made under another member id, or unreadable, is none. */
export function readStickyClaim(userData: Buffer | undefined, memberId: string): StickyMember['claim'] {
  if (!userData || userData.length === 0) return undefined;
  try {
    const parsed: unknown = JSON.parse(userData.toString('utf8'));
    if (!parsed || typeof parsed !== 'object') return undefined;
    const c = parsed as Partial<Record<keyof StickyClaim, unknown>>;
    if (c.memberId !== memberId) return undefined;
    const byTopic = (x: unknown): Record<string, number[]> =>
      x && typeof x === 'object' ? Object.fromEntries(Object.entries(x as Record<string, unknown>).map(([t, ps]) => [t, partitionList(ps)])) : {};
    return { held: byTopic(c.held), busy: byTopic(c.busy) };
  } catch {
    return undefined;
  }
}

/**
 * The sticky rule, per topic, among the members subscribed to it: every such member gets ⌊P/n⌋ or
 * ⌈P/n⌉ of its P partitions (the larger shares to the members already holding the most); a member
 * keeps what it holds up to its share, the partitions with a record in hand first (a partition
 * claimed by two: the one that has it in hand, else the first by member id); what is left goes one
 * at a time to the member with the fewest, one with nothing in hand first (a dead member's task
 * goes to an idle GPU when there is one).
 */
export function stickyAssignment(members: readonly StickyMember[], partitions: Record<string, number[]>): Map<string, Record<string, number[]>> {
  const sorted = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const out = new Map<string, Record<string, number[]>>(sorted.map((m) => [m.id, {}]));
  const idle = new Set(sorted.filter((m) => !Object.values(m.claim?.busy ?? {}).some((ps) => ps.length > 0)).map((m) => m.id));
  const claimOf = new Map(sorted.map((m) => [m.id, m.claim]));
  for (const [topic, all] of Object.entries(partitions)) {
    const ids = sorted.filter((m) => m.topics.includes(topic)).map((m) => m.id);
    if (ids.length === 0) continue;
    const exists = new Set(all);
    const claimed = new Set<number>();
    const claims = new Map<string, number[]>();
    // partitions in hand are claimed first, so a busy holder wins over a stale or second claim
    for (const pass of ['busy', 'held'] as const)
      for (const m of ids) {
        const mine = [...new Set(claimOf.get(m)?.[pass]?.[topic] ?? [])].filter((p) => exists.has(p) && !claimed.has(p)).sort((a, b) => a - b);
        mine.forEach((p) => claimed.add(p));
        claims.set(m, [...(claims.get(m) ?? []), ...mine]);
      }
    const base = Math.floor(all.length / ids.length);
    let extra = all.length % ids.length;
    const quota = new Map<string, number>();
    for (const m of [...ids].sort((a, b) => claims.get(b)!.length - claims.get(a)!.length || (a < b ? -1 : 1))) {
      quota.set(m, base + (extra > 0 ? 1 : 0));
      if (extra > 0) extra -= 1;
    }
    const given = new Map<string, number[]>();
    const kept = new Set<number>();
    for (const m of ids) {
      // busy ones come first in the claim: a member over its share gives up idle partitions first
      const keep = claims.get(m)!.slice(0, quota.get(m));
      keep.forEach((p) => kept.add(p));
      given.set(m, keep);
    }
    for (const p of [...all].filter((x) => !kept.has(x)).sort((a, b) => a - b)) {
      const m = ids
        .filter((x) => given.get(x)!.length < quota.get(x)!)
        .sort((a, b) => given.get(a)!.length - given.get(b)!.length || Number(idle.has(b)) - Number(idle.has(a)) || (a < b ? -1 : 1))[0]!;
      given.get(m)!.push(p);
    }
    for (const m of ids) if (given.get(m)!.length > 0) out.get(m)![topic] = given.get(m)!.sort((a, b) => a - b);
  }
  return out;
}

/** The name (group protocol) of the singleton assignor. */
export const SINGLETON = 'SonicflowSingleton';

/** The name (group protocol) of kafkajs' round robin, every member's fallback. */
export const ROUND_ROBIN = 'RoundRobinAssigner';

/** A singleton member's userData when it holds the partitions now (empty otherwise). */
const HOLDING = Buffer.from('holding');

/** A member's sticky claim as its userData (JSON). */
export function stickyUserData(claim: StickyClaim): Buffer {
  return Buffer.from(JSON.stringify(claim));
}

/** A singleton member's userData: `holding` when it holds the partitions now, else empty. */
export function singletonUserData(holding: boolean): Buffer {
  return holding ? HOLDING : Buffer.alloc(0);
}

/** What the leader knows of a member for the co-partitioned, singleton and round robin assignors. */
export interface GroupMember {
  id: string;
  userData?: Buffer | null | undefined;
}

/**
 * Kafka Streams' co-partitioning: members sorted by id, partition p of every topic goes to member
 * p mod n, so one member holds partition p of the input and of each retry tier together.
 */
export function coPartitionedAssignment(memberIds: readonly string[], partitions: Record<string, number[]>): Map<string, Record<string, number[]>> {
  const sorted = [...memberIds].sort();
  const out = new Map<string, Record<string, number[]>>(sorted.map((m) => [m, {}]));
  if (sorted.length === 0) return out;
  for (const [topic, ps] of Object.entries(partitions)) for (const p of ps) (out.get(sorted[p % sorted.length]!)![topic] ??= []).push(p);
  return out;
}

/** All partitions to the member holding them (the first by id if several say so), else to the first member by id. */
export function singletonAssignment(members: readonly GroupMember[], partitions: Record<string, number[]>): Map<string, Record<string, number[]>> {
  const ids = members.map((m) => m.id).sort();
  const holders = members
    .filter((m) => m.userData?.equals(HOLDING))
    .map((m) => m.id)
    .sort();
  const owner = holders[0] ?? ids[0];
  return new Map(ids.map((id) => [id, id === owner ? { ...partitions } : {}]));
}

/** kafkajs' round robin: the partitions of the topics in order, dealt one by one to the members sorted by id. */
export function roundRobinAssignment(memberIds: readonly string[], partitions: Record<string, number[]>): Map<string, Record<string, number[]>> {
  const sorted = [...memberIds].sort();
  const out = new Map<string, Record<string, number[]>>(sorted.map((m) => [m, {}]));
  if (sorted.length === 0) return out;
  let i = 0;
  for (const [topic, ps] of Object.entries(partitions))
    for (const p of ps) {
      (out.get(sorted[i % sorted.length]!)![topic] ??= []).push(p);
      i += 1;
    }
  return out;
}

/**
 * Splits an assignment by partition number: `complete` holds the partitions whose number this
 * member holds in every one of `topics` (so no other member holds any partition of that number:
 * the single writer of store partition p), `incomplete` the others (a round-robin fallback, or a
 * topic with fewer partitions).
 */
export function byCompleteNumber(assignment: Assignment, topics: readonly string[]): { complete: Assignment; incomplete: Assignment } {
  const held = new Map<number, Set<string>>();
  for (const tp of assignment) {
    let s = held.get(tp.partition);
    if (!s) held.set(tp.partition, (s = new Set()));
    s.add(tp.topic);
  }
  const whole = (n: number): boolean => topics.every((t) => held.get(n)?.has(t));
  return { complete: assignment.filter((tp) => whole(tp.partition)), incomplete: assignment.filter((tp) => !whole(tp.partition)) };
}
