/**
 * Stage-owned state stores (Kafka Streams' state stores with their changelogs), adapted to the
 * runner's one transaction per input partition batch:
 *
 * - A store is partitioned like the stage's input: the record of input (or retry tier) partition p
 *   reads and writes store partition p, whose changelog partition is p too.
 * - A handler's writes are buffered per record ({@link BatchWrites.forRecord}); a record that
 *   succeeds keeps them, and they become changelog records (key = store key, value = JSON, or a
 *   tombstone) of the record's transaction; a record that fails or is abandoned leaves none.
 *   Reads see the record's own writes, then the kept writes of earlier records of the same batch,
 *   then the local copy.
 * - The local copy is an LMDB {@link StateStore}, one per stage process, a table per store, keys
 *   `<p>/<key>`. Only after the Kafka transaction commits are the batch's writes applied to it,
 *   together with the changelog offsets checkpoint, in one LMDB transaction. A crash in between
 *   leaves the copy behind its checkpoint, and the restore replays what is missing; an aborted or
 *   fenced transaction never reaches it.
 * - Restore on assignment: before the first batch of store partition p, every producer of the
 *   input and retry partitions p is initialised (fencing older owners and aborting their open
 *   transactions), then each changelog partition p is read, read_committed, from the local
 *   checkpoint (or the log start) to its last stable offset. Only assigned partitions are restored.
 * - A commit that reports failure may have committed (in doubt): the partition is restored again
 *   before its next batch. A commit whose changelog base offset lies past the checkpoint (beyond
 *   this process's own commit marker) first replays the gap, so the checkpoint never skips a
 *   record the local copy lacks.
 *
 * - Retention (a store declared with `retentionMs`): the changelog deletes its old segments
 *   itself (`cleanup.policy=compact,delete`); the local copy keeps each entry's last write time
 *   (the commit's clock, or the changelog record's timestamp on a restore) and a store partition
 *   that commits drops its expired entries, at most once a minute. An expired entry reads as
 *   absent from the moment it expires; dropping it is local only, and the changelog record it
 *   came from goes with its segment (`segment.ms` = the retention, so segments roll in time).
 *
 * Locking: restores and commits of one store partition take turns (a restore must not replay an
 * older value over a newer one a commit applies meanwhile), so the transactions of input p and of
 * its retry tiers p do not overlap; other partitions go on in parallel.
 */
import { join } from 'node:path';
import { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { sleep } from '../core/retry.js';
import type { KafkaClient } from '../kafka/client.js';
import { PartitionReader } from '../kafka/partition-reader.js';
import type { Produced, RecordStores } from './program.js';
import type { KeyValueStore } from './stage.js';
import { lockSlot } from './dir-lock.js';
import { StateStore, type Table } from './store.js';
import type { StoreSpec } from './topology.js';

/** The latest write of a key: its JSON value and bytes, or a deletion (null, null). */
interface Entry {
  value: unknown;
  bytes: Buffer | null;
}

/** Where committed values are read: the local copy (or, in the test driver, memory). */
export interface StoreBacking {
  /** The committed value of `key` in store partition `partition`, or undefined. */
  get(store: string, partition: number, key: string): unknown;
}

/** The key of `key` of store partition `partition` in the local copy. */
export const localKey = (partition: number, key: string): string => `${partition}/${key}`;

function encode(store: string, key: string, value: unknown): Entry {
  if (value === undefined || value === null) throw new SonicError('INTERNAL', `store ${store}: put of ${key} without a value (use delete)`);
  const json = JSON.stringify(value);
  if (json === undefined) throw new SonicError('INTERNAL', `store ${store}: the value of ${key} is not JSON`);
  return { value: JSON.parse(json) as unknown, bytes: Buffer.from(json) };
}

/** Decodes a changelog record's value: undefined for a tombstone. */
export function decodeChangelogValue(bytes: Buffer | null): unknown {
  return bytes === null ? undefined : (JSON.parse(bytes.toString('utf8')) as unknown);
}

/** The writes kept by the records of one batch of one store partition, not yet committed. */
export class BatchWrites {
  /** store → key → latest write. */
  readonly pending = new Map<string, Map<string, Entry>>();
  /** Changelog records kept per store (one per kept write: a key written twice counts twice). */
  readonly changelogCounts = new Map<string, number>();
  /** Changelog records kept in all. */
  records = 0;

  constructor(
    readonly partition: number,
    private readonly specs: readonly StoreSpec[],
    private readonly backing: StoreBacking,
  ) {}

  /** A record's view of the stores; `keep` adds its writes to the batch, `discard` forgets them. */
  forRecord(): RecordStores {
    const own = new Map<string, Map<string, Entry>>();
    const view: Record<string, KeyValueStore> = {};
    for (const spec of this.specs) {
      const mine = new Map<string, Entry>();
      own.set(spec.name, mine);
      const batch = this.pending.get(spec.name);
      view[spec.name] = {
        get: (key) => {
          const e = mine.get(key) ?? batch?.get(key);
          if (e) return e.value === null ? undefined : e.value;
          return this.backing.get(spec.name, this.partition, key);
        },
        put: (key, value) => void mine.set(key, encode(spec.name, key, value)),
        delete: (key) => void mine.set(key, { value: null, bytes: null }),
      };
    }
    let done = false;
    return {
      view,
      keep: () => {
        if (done) return [];
        done = true;
        const out: Produced[] = [];
        for (const spec of this.specs) {
          const mine = own.get(spec.name)!;
          if (mine.size === 0) continue;
          let batch = this.pending.get(spec.name);
          if (!batch) this.pending.set(spec.name, (batch = new Map()));
          for (const [key, e] of mine) {
            batch.set(key, e);
            out.push({ topic: spec.changelog, key, value: e.bytes, headers: {}, partition: this.partition });
          }
          this.changelogCounts.set(spec.name, (this.changelogCounts.get(spec.name) ?? 0) + mine.size);
        }
        this.records += out.length;
        return out;
      },
      discard: () => {
        done = true;
      },
    };
  }
}

/** The stores of a stage with no broker and no disk (the test driver): memory, applied per record. */
export class MemoryStores implements StoreBacking {
  /** store → `<p>/<key>` → value. */
  readonly data = new Map<string, Map<string, unknown>>();

  constructor(readonly specs: readonly StoreSpec[]) {
    for (const s of specs) this.data.set(s.name, new Map());
  }

  get(store: string, partition: number, key: string): unknown {
    return this.data.get(store)?.get(localKey(partition, key));
  }

  batch(partition: number): BatchWrites {
    return new BatchWrites(partition, this.specs, this);
  }

  apply(writes: BatchWrites): void {
    for (const [store, entries] of writes.pending) {
      const table = this.data.get(store)!;
      for (const [key, e] of entries) {
        if (e.value === null) table.delete(localKey(writes.partition, key));
        else table.set(localKey(writes.partition, key), e.value);
      }
    }
  }
}

/** Longest a restore waits for a commit of unknown outcome to settle (its markers written), ms. */
const IN_DOUBT_SETTLE_MS = 15_000;
/** A store partition with retention drops its expired entries at most this often, ms. */
const SWEEP_EVERY_MS = 60_000;
/** Most expired entries one sweep of one store partition drops (the rest go with the next). */
const SWEEP_MAX = 10_000;

/** A time (ms) as a fixed-width key part, so that keys sort by time. */
const timeKey = (ms: number): string => String(Math.max(0, Math.trunc(ms))).padStart(15, '0');

/**
 * A store's table in the local copy, with the last write time of each entry when the store has a
 * retention: `<p>/<key>` → ms, and `<p>/<ms>/<key>` in time order. Writes happen inside the local
 * copy's transactions.
 */
class LocalTable {
  private readonly at: Table<number> | undefined;
  private readonly order: Table<string> | undefined;

  constructor(
    private readonly local: StateStore,
    readonly spec: StoreSpec,
    readonly rows: Table<unknown>,
  ) {
    if (spec.retentionMs !== undefined) {
      this.at = local.table<number>(`${spec.name}.__written_at`);
      this.order = local.table<string>(`${spec.name}.__by_written_at`);
    }
  }

  /** The entry of `key`, or undefined when absent or past the retention at `now` (the sweep may not have come yet). */
  get(partition: number, key: string, now: number): unknown {
    const k = localKey(partition, key);
    const value = this.rows.get(k);
    if (value === undefined || !this.at || this.spec.retentionMs === undefined) return value;
    const at = this.at.get(k);
    return at !== undefined && at < now - this.spec.retentionMs ? undefined : value;
  }

  put(partition: number, key: string, value: unknown, atMs: number): void {
    const k = localKey(partition, key);
    void this.rows.put(k, value);
    if (!this.at || !this.order) return;
    const before = this.at.get(k);
    if (before !== undefined) void this.order.remove(`${partition}/${timeKey(before)}/${key}`);
    void this.at.put(k, atMs);
    void this.order.put(`${partition}/${timeKey(atMs)}/${key}`, key);
  }

  remove(partition: number, key: string): void {
    const k = localKey(partition, key);
    void this.rows.remove(k);
    if (!this.at || !this.order) return;
    const before = this.at.get(k);
    if (before !== undefined) void this.order.remove(`${partition}/${timeKey(before)}/${key}`);
    void this.at.remove(k);
  }

  /** Every entry of `partition`. */
  removePartition(partition: number): void {
    for (const { key } of this.rows.scan(localKey(partition, ''))) this.remove(partition, key.slice(`${partition}/`.length));
  }

  /** Drops the entries of `partition` last written before `now - retentionMs`, at most `max`; returns how many. */
  expire(partition: number, now: number, max: number): number {
    if (!this.order || this.spec.retentionMs === undefined) return 0;
    const cutoff = `${partition}/${timeKey(now - this.spec.retentionMs)}`;
    let dropped = 0;
    for (const { value: key, key: entry } of this.order.scan(`${partition}/`, { limit: max })) {
      if (entry >= cutoff) break;
      this.remove(partition, key);
      // an order entry without its row's time (never expected): drop it all the same
      void this.order.remove(entry);
      dropped += 1;
    }
    return dropped;
  }
}

export interface StageStoresOptions {
  /** Directory of this stage's local copies (slots `<dir>/<n>` are made in it). */
  dir: string;
  specs: readonly StoreSpec[];
  kafka: KafkaClient;
  logger: Logger;
}

/** A stage process's stores on Kafka: the local copy, the restore, the commit-then-apply. */
export class StageStores implements StoreBacking {
  readonly dir: string;
  private readonly local: StateStore;
  private readonly tables = new Map<string, LocalTable>();
  /** When each store partition last dropped its expired entries (ms). */
  private readonly swept = new Map<number, number>();
  private readonly reader: PartitionReader;
  private readonly release: () => void;
  /** Store partitions restored since they were assigned. */
  private readonly restored = new Map<number, Promise<void>>();
  /** The tail of each store partition's turn queue (restores and commits). */
  private readonly turns = new Map<number, Promise<unknown>>();

  constructor(private readonly options: StageStoresOptions) {
    const slot = lockSlot(options.dir);
    this.dir = slot.dir;
    this.release = slot.release;
    try {
      this.local = StateStore.open({ path: join(slot.dir, 'lmdb') });
    } catch (err) {
      slot.release();
      throw err;
    }
    for (const s of options.specs) this.tables.set(s.name, new LocalTable(this.local, s, this.local.table<unknown>(s.name)));
    this.reader = new PartitionReader(options.kafka);
    options.logger.info({ dir: slot.dir, stores: options.specs.map((s) => s.name) }, 'state stores opened');
  }

  get(store: string, partition: number, key: string): unknown {
    return this.tables.get(store)?.get(partition, key, Date.now());
  }

  batch(partition: number): BatchWrites {
    return new BatchWrites(partition, this.options.specs, this);
  }

  /** Runs `fn` when the store partition's earlier restores and commits are done. */
  private inTurn<T>(partition: number, fn: () => Promise<T>): Promise<T> {
    const before = this.turns.get(partition) ?? Promise.resolve();
    const mine = before.then(fn, fn);
    const tail = mine.catch(() => undefined);
    this.turns.set(partition, tail);
    void tail.then(() => {
      if (this.turns.get(partition) === tail) this.turns.delete(partition);
    });
    return mine;
  }

  /**
   * Restores store partition `partition` unless it was since it was assigned: `fence` first
   * (initialise the producers of every input partition with that number), then each changelog
   * from the checkpoint to the last stable offset.
   */
  ensureRestored(partition: number, fence: () => Promise<void>): Promise<void> {
    let done = this.restored.get(partition);
    if (!done) {
      done = this.inTurn(partition, async () => {
        await fence();
        for (const spec of this.options.specs) await this.restore(spec, partition);
        this.inDoubt.delete(partition);
      });
      this.restored.set(partition, done);
      done.catch(() => {
        if (this.restored.get(partition) === done) this.restored.delete(partition);
      });
    }
    return done;
  }

  /** The store partition is no longer (all) ours: the next batch restores it again from its checkpoint. */
  /** Partitions whose last commit failed with an unknown outcome (it may have committed). */
  private readonly inDoubt = new Set<number>();

  forget(partition: number): void {
    this.restored.delete(partition);
  }

  private async restore(spec: StoreSpec, partition: number): Promise<void> {
    const started = Date.now();
    const table = this.tables.get(spec.name)!;
    let { start, end } = await this.reader.range(spec.changelog, partition);
    if (this.inDoubt.has(partition)) {
      // a commit of unknown outcome sent its changelog records: until its markers are written the
      // last stable offset stays at (or before) them, and a read_committed restore would miss them
      // if it committed. Wait, bounded, for the end to move past the checkpoint.
      const checkpoint = this.local.offset(spec.changelog, partition) ?? start;
      const until = Date.now() + IN_DOUBT_SETTLE_MS;
      while (end <= checkpoint && Date.now() < until) {
        await sleep(50);
        ({ start, end } = await this.reader.range(spec.changelog, partition));
      }
    }
    let from = this.local.offset(spec.changelog, partition);
    if (from !== undefined && (from < start || from > end)) {
      // the changelog lost what the checkpoint counts on (deleted records, a recreated topic)
      this.options.logger.warn(
        { store: spec.name, partition, checkpoint: from.toString(), log_start: start.toString(), end: end.toString() },
        'store checkpoint outside the changelog; restoring the partition from scratch',
      );
      this.local.transaction(() => table.removePartition(partition));
      from = undefined;
    }
    const records = await this.replay(spec, partition, from ?? start, end);
    // an empty changelog (or one read to its end): the checkpoint is the end, once
    if (from === undefined && start >= end) this.local.transaction(() => this.local.commitOffset(spec.changelog, partition, end));
    this.options.logger.info(
      { store: spec.name, partition, from: (from ?? start).toString(), end: end.toString(), records, restore_ms: Date.now() - started },
      'store partition restored',
    );
  }

  /**
   * Applies changelog partition `partition` of `spec` from `from` up to `to` (exclusive), read
   * read_committed, with the checkpoint after each chunk; the checkpoint reaches `to` only when
   * the reader confirmed that nothing in between is left to read. Returns the records applied.
   */
  private async replay(spec: StoreSpec, partition: number, from: bigint, to: bigint): Promise<number> {
    if (from >= to) return 0;
    const table = this.tables.get(spec.name)!;
    let records = 0;
    let next = from;
    const reached = await this.reader.read(spec.changelog, partition, from, to, (chunk) => {
      this.local.transaction(() => {
        for (const r of chunk) {
          if (r.key === null) continue;
          const value = decodeChangelogValue(r.value);
          if (value === undefined) table.remove(partition, r.key);
          else table.put(partition, r.key, value, Number(r.timestamp));
        }
        next = BigInt(chunk[chunk.length - 1]!.offset) + 1n;
        this.local.commitOffset(spec.changelog, partition, next);
      });
      records += chunk.length;
    });
    // past the last record read: markers, aborted records, compacted-away offsets the reader confirmed
    if (reached > next) this.local.transaction(() => this.local.commitOffset(spec.changelog, partition, reached));
    return records;
  }

  /**
   * Commits a batch (`publish`: the Kafka transaction, which returns the changelog's base offset
   * in this partition, or undefined when nothing was published) and then applies its writes to
   * the local copy with the changelog checkpoint.
   *
   * - `publish` throws: the transaction may still have committed (an EndTxn whose response was
   *   lost in a broker failover). The local copy cannot tell, so the partition is restored again
   *   before its next batch: the changelog (read_committed) is the truth.
   * - A gap between the checkpoint and the batch's base offset (more than this process's own
   *   commit marker): records this copy never applied — an in-doubt commit, an aborted
   *   transaction, another writer. The gap is replayed from the changelog first, then the batch.
   * - A local failure after the commit is logged and the partition restored again before its
   *   next batch: the changelog has the writes.
   */
  commit(writes: BatchWrites, publish: () => Promise<Map<string, bigint> | undefined>): Promise<void> {
    const p = writes.partition;
    return this.inTurn(p, async () => {
      let bases: Map<string, bigint> | undefined;
      try {
        bases = await publish();
      } catch (err) {
        // the outcome is unknown: the restore before the next batch waits for it to settle
        if (writes.records > 0) this.inDoubt.add(p);
        this.forget(p);
        throw err;
      }
      if (!bases || writes.records === 0) return;
      try {
        for (const spec of this.options.specs) {
          const base = bases.get(spec.changelog);
          const at = this.local.offset(spec.changelog, p);
          // after this process's last commit the changelog holds its commit marker (one offset)
          if (base === undefined || at === undefined || base <= at + 1n) continue;
          this.options.logger.warn(
            { store: spec.name, partition: p, checkpoint: at.toString(), base: base.toString() },
            'changelog records this process did not apply (an in-doubt or aborted commit, or another writer); replaying them',
          );
          await this.replay(spec, p, at, base);
        }
        this.local.transaction(() => {
          for (const spec of this.options.specs) {
            const entries = writes.pending.get(spec.name);
            if (!entries || entries.size === 0) continue;
            const table = this.tables.get(spec.name)!;
            const now = Date.now();
            for (const [key, e] of entries) {
              if (e.value === null) table.remove(p, key);
              else table.put(p, key, e.value, now);
            }
            const base = bases.get(spec.changelog);
            // records of one topic-partition in one produce request have consecutive offsets
            if (base !== undefined) this.local.commitOffset(spec.changelog, p, base + BigInt(this.countFor(spec, writes)));
          }
        });
      } catch (err) {
        this.options.logger.error({ err, partition: p }, 'store writes committed to Kafka but not applied locally; the partition will be restored');
        this.forget(p);
        return;
      }
      this.sweepIfDue(p, Date.now());
    });
  }

  /**
   * Drops the expired entries of store partition `p` (stores with a retention), when the last
   * sweep of `p` was a minute or more ago. Local only; runs in `p`'s turn.
   */
  private sweepIfDue(p: number, now: number): void {
    if ((this.swept.get(p) ?? 0) + SWEEP_EVERY_MS > now) return;
    this.swept.set(p, now);
    try {
      this.expire(p, now);
    } catch (err) {
      this.options.logger.warn({ err, partition: p }, 'expired store entries not dropped; trying again later');
    }
  }

  /** Drops the entries of store partition `p` past their store's retention at `now`; returns how many. */
  expire(p: number, now: number): number {
    let dropped = 0;
    for (const table of this.tables.values()) {
      const n = this.local.transaction(() => table.expire(p, now, SWEEP_MAX));
      if (n > 0) this.options.logger.info({ store: table.spec.name, partition: p, dropped: n }, 'expired store entries dropped');
      dropped += n;
    }
    return dropped;
  }

  /** Changelog records of `spec` a batch sent (one per kept write, not per distinct key). */
  private countFor(spec: StoreSpec, writes: BatchWrites): number {
    return writes.changelogCounts.get(spec.name) ?? 0;
  }

  async close(): Promise<void> {
    await this.reader.close();
    await this.local.close().catch(() => undefined);
    this.release();
  }
}
