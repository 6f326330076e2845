/**
 * State stores, the runtime's KTables: an embedded, durable key-value store per owner (a stage's
 * state, the API's status view), backed by LMDB (the `lmdb` package: prebuilt binaries, ACID
 * transactions, synchronous reads; see docs/architecture.md for the measured choice).
 *
 * A store holds named tables (LMDB sub-databases in one environment) and the input offsets it has
 * applied, so that a table materialised from a topic resumes from its checkpoint after a restart
 * instead of replaying the topic: `transaction` writes rows, index entries and the checkpoint
 * together or not at all. Values are encoded with MessagePack (Dates and Buffers survive).
 * Keys are strings; a prefix scan walks them in byte order, so `<tenant>/<time>/<id>` keys list a
 * tenant's entries by time.
 */
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { SonicError } from '../core/errors.js';

/** One table of a store. */
export interface Table<V> {
  get(key: string): V | undefined;
  /** Writes inside the store's current transaction when there is one, else on its own. */
  put(key: string, value: V): Promise<void>;
  remove(key: string): Promise<void>;
  /**
   * Entries whose key starts with `prefix`, in key order (descending with `reverse`), at most
   * `limit`; strictly after the key `after` in that order when given (a page cursor); and not
   * below the key `from` (either order: a lower bound, inclusive).
   */
  scan(prefix: string, options?: ScanOptions): { key: string; value: V }[];
  /** Number of entries (an LMDB statistic: exact, read without a scan). */
  count(): number;
}

export interface ScanOptions {
  limit?: number;
  after?: string;
  from?: string;
  reverse?: boolean;
}

export interface StoreOptions {
  /** Directory of the store; made when missing. */
  path: string;
  /** Largest size the store may grow to, bytes (LMDB's map size; disk is used as needed). Default 16 GiB. */
  maxBytes?: number;
}

/** Offsets are kept per `<topic>:<partition>`: the next offset to apply. */
const OFFSETS = '__offsets';

export class StateStore {
  private readonly root: RootDatabase;
  private readonly tables = new Map<string, Database>();
  private readonly checkpoints: Database<string, string>;

  private constructor(
    readonly path: string,
    root: RootDatabase,
  ) {
    this.root = root;
    this.checkpoints = root.openDB<string, string>({ name: OFFSETS, encoding: 'string' });
  }

  /** Opens (or creates) the store at `options.path`. */
  static open(options: StoreOptions): StateStore {
    try {
      mkdirSync(options.path, { recursive: true });
      // noReadAhead (MDB_NORDAHEAD, madvise MADV_RANDOM; lmdb-js reads it, its types omit it): a
      // page fault reads the page, not the next 128 KB, so under a memory limit the page cache
      // holds the pages reads need rather than their neighbours
      const root = open({ path: options.path, maxDbs: 64, mapSize: options.maxBytes ?? 16 * 1024 ** 3, compression: false, ...{ noReadAhead: true } });
      return new StateStore(options.path, root);
    } catch (err) {
      throw new SonicError('CONFIG_INVALID', `cannot open the state store at ${options.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The table `name` (made on first use). */
  table<V>(name: string): Table<V> {
    if (name === OFFSETS) throw new SonicError('INTERNAL', `table name ${OFFSETS} is reserved`);
    let db = this.tables.get(name);
    if (!db) {
      db = this.root.openDB({ name });
      this.tables.set(name, db);
    }
    const d = db as Database<V, string>;
    return {
      get: (key) => d.get(key),
      put: async (key, value) => void (await d.put(key, value)),
      remove: async (key) => void (await d.remove(key)),
      scan: (prefix, { limit = Number.POSITIVE_INFINITY, after, from, reverse = false } = {}) => {
        const out: { key: string; value: V }[] = [];
        const low = from !== undefined && from > prefix ? from : prefix;
        // forward: from the larger of the lower bound and the cursor; backward: from the cursor,
        // or the prefix's last possible key, down to the lower bound
        const top = `${prefix}\uffff`;
        const range = reverse
          ? { start: after !== undefined && after < top ? after : top, reverse: true }
          : { start: after !== undefined && after > low ? after : low };
        for (const { key, value } of d.getRange(range)) {
          if (out.length >= limit || !key.startsWith(prefix) || key < low) break;
          if (after !== undefined && (reverse ? key >= after : key <= after)) continue;
          out.push({ key, value });
        }
        return out;
      },
      count: () => (d.getStats() as { entryCount: number }).entryCount,
    };
  }

  /**
   * Runs `fn` as one atomic write: every `put`/`remove` it makes, on any table, and the offsets
   * it records with {@link commitOffset}, become visible together or not at all (a throw undoes
   * them and is thrown again). `fn` is synchronous and reads inside it see its own writes; the
   * commit happens before this returns (LMDB's synchronous transaction: one commit, no event-loop
   * turn in between, so nothing else can interleave).
   */
  transaction<T>(fn: () => T): T {
    return this.root.transactionSync(fn);
  }

  /** Records that the input `topic`/`partition` is applied up to `next` (exclusive); inside a transaction, with its rows. */
  commitOffset(topic: string, partition: number, next: bigint): void {
    // synchronous: part of the surrounding transaction, or committed at once (an error throws here)
    this.checkpoints.putSync(`${topic}:${partition}`, next.toString());
  }

  /** The next offset to apply of `topic`/`partition`, or undefined when nothing was applied. */
  offset(topic: string, partition: number): bigint | undefined {
    const v = this.checkpoints.get(`${topic}:${partition}`);
    return v === undefined ? undefined : BigInt(v);
  }

  /** Every checkpoint of `topic`: the next offset to apply, by partition. */
  offsets(topic: string): Map<number, bigint> {
    const out = new Map<number, bigint>();
    for (const { key, value } of this.checkpoints.getRange({ start: `${topic}:` })) {
      if (!key.startsWith(`${topic}:`)) break;
      const p = Number(key.slice(topic.length + 1));
      if (Number.isInteger(p)) out.set(p, BigInt(value));
    }
    return out;
  }

  /** Empties every table opened so far and every checkpoint (a rebuild from scratch). */
  clear(): void {
    this.transaction(() => {
      for (const db of this.tables.values()) db.clearSync();
      this.checkpoints.clearSync();
    });
  }

  /** Resolves once every write so far is on disk. */
  async flushed(): Promise<void> {
    await this.root.flushed;
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
