/**
 * The order in which a dispatcher hands waiting records to free workers, and how it spreads them
 * over the workers: pure logic, no Kafka (the dispatcher, `dispatcher.ts`, persists and sends).
 *
 * Order (documented in docs/architecture.md, "How work reaches a GPU"):
 *  1. Effective priority, highest first: the record's priority (0-9) plus one for every `agingMs`
 *     it has waited. A record of priority 0 overtakes a fresh priority-9 record after 9 × agingMs
 *     (9 minutes by default): low priorities wait longer, never for ever.
 *  2. Among equal effective priorities, the longest estimated work first (longest processing time
 *     first: a burst ends with short tasks filling the gaps, not with one long task on one GPU
 *     while the others idle).
 *  3. Then the oldest first, then input order (partition, offset).
 */

export interface Waiting {
  /** Unique id of the waiting record: `<input partition>:<offset>`. */
  id: string;
  /** Estimated work in worker-seconds (GPU-seconds): orders records, and the autoscaler sums it. */
  cost: number;
  /** 0 (lowest) to 9. */
  priority: number;
  /** When the record entered the backlog, ms since the epoch. */
  enqueuedAt: number;
  partition: number;
  offset: bigint;
}

/** Effective priority of a record at `now`: its priority plus one per `agingMs` waited. */
export function effectivePriority(w: Pick<Waiting, 'priority' | 'enqueuedAt'>, now: number, agingMs: number): number {
  const waited = Math.max(0, now - w.enqueuedAt);
  return w.priority + (agingMs > 0 ? Math.floor(waited / agingMs) : 0);
}

/** Negative when `a` goes before `b` at `now`. */
export function compareWaiting(a: Waiting, b: Waiting, now: number, agingMs: number): number {
  return (
    effectivePriority(b, now, agingMs) - effectivePriority(a, now, agingMs) ||
    b.cost - a.cost ||
    a.enqueuedAt - b.enqueuedAt ||
    a.partition - b.partition ||
    (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0)
  );
}

/** The waiting records of a dispatcher, taken best first (see the header). */
export class DispatchQueue<T extends Waiting = Waiting> {
  private readonly items = new Map<string, T>();
  /** Sum of the held records' cost, kept as they come and go (a metrics read must not rescan the backlog). */
  private costSum = 0;

  constructor(private readonly agingMs: number) {}

  get size(): number {
    return this.items.size;
  }

  /** Total estimated work of the held records (their `cost` summed). */
  get cost(): number {
    return this.costSum;
  }

  add(item: T): void {
    const old = this.items.get(item.id);
    this.items.set(item.id, item);
    this.costSum += item.cost - (old?.cost ?? 0);
  }

  delete(id: string): boolean {
    const old = this.items.get(id);
    if (!old) return false;
    this.items.delete(id);
    this.settle(old.cost);
    return true;
  }

  clear(): void {
    this.items.clear();
    this.costSum = 0;
  }

  /** Takes `cost` off the sum; an empty queue is exactly 0 (no rounding drift left behind). */
  private settle(cost: number): void {
    this.costSum = this.items.size === 0 ? 0 : this.costSum - cost;
  }

  /** The best `n` records at `now`, best first, left in the queue. */
  best(n: number, now: number): T[] {
    if (n <= 0 || this.items.size === 0) return [];
    return [...this.items.values()].sort((a, b) => compareWaiting(a, b, now, this.agingMs)).slice(0, n);
  }

  /** The best `n` records at `now`, best first, taken out of the queue. */
  take(n: number, now: number): T[] {
    const best = this.best(n, now);
    for (const w of best) this.delete(w.id);
    return best;
  }
}

/** A worker as the workers' consumer group shows it: the partitions of the dispatch topic it holds. */
export interface WorkerSlots {
  memberId: string;
  partitions: number[];
}

/** When a worker has room for one more record; see {@link planDispatch}. */
export interface RoomRule {
  /** Records a worker may always hold: the one it works on plus those queued for it (1 + SONIC_DISPATCH_QUEUE_PER_WORKER). */
  capacity: number;
  /**
   * More than `capacity` while what it holds is estimated at less than this (the cost's unit,
   * seconds): short tasks end before a dispatcher's round trip brings the next, so a worker gets
   * enough of them to last that long. 0: never more than `capacity`.
   */
  lead?: number;
  /** Never more than this many records per worker, whatever their estimates (default 32). */
  maxPerWorker?: number;
}

/**
 * Where the next records go, given their estimated costs best first (`costs`): one partition per
 * record, for as many as fit, each held by a worker with room. `outstanding` holds, per partition,
 * the costs of the records dispatched to it and not yet committed by its worker. A worker has room
 * while it holds fewer than `capacity` records, or fewer than `maxPerWorker` estimated at less
 * than `lead` in all. The worker that will be free first (least estimated work held; idle workers
 * first, so the best record starts at once) gets the next record, on its partition with the
 * fewest outstanding records (a worker's next record on another partition than the one it is
 * finishing can start while that one commits). Ties go to the lower member id and partition, so
 * the plan is deterministic.
 */
export function planDispatch(
  workers: readonly WorkerSlots[],
  outstanding: ReadonlyMap<number, readonly number[]>,
  rule: RoomRule,
  costs: readonly number[],
): number[] {
  const count = new Map<number, number>([...outstanding].map(([p, c]) => [p, c.length]));
  const lead = rule.lead ?? 0;
  const most = Math.max(rule.capacity, rule.maxPerWorker ?? 32);
  const members = workers
    .filter((w) => w.partitions.length > 0)
    .map((w) => ({
      id: w.memberId,
      partitions: [...w.partitions].sort((a, b) => a - b),
      held: w.partitions.reduce((s, p) => s + (count.get(p) ?? 0), 0),
      work: w.partitions.reduce((s, p) => s + (outstanding.get(p) ?? []).reduce((a, c) => a + c, 0), 0),
    }));
  const room = (m: (typeof members)[number]): boolean => m.held < rule.capacity || (m.held < most && m.work < lead);
  const out: number[] = [];
  for (const cost of costs) {
    let best: (typeof members)[number] | undefined;
    for (const m of members) {
      if (!room(m)) continue;
      if (!best || m.work < best.work || (m.work === best.work && (m.held < best.held || (m.held === best.held && m.id < best.id)))) best = m;
    }
    if (!best) break;
    let target = best.partitions[0]!;
    for (const p of best.partitions) if ((count.get(p) ?? 0) < (count.get(target) ?? 0)) target = p;
    count.set(target, (count.get(target) ?? 0) + 1);
    best.held += 1;
    best.work += cost;
    out.push(target);
  }
  return out;
}
