/**
 * A coordinator cache for kafkajs 2.2.4, which has none: every transaction step looks its
 * coordinator up again (FindCoordinator before AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit
 * and EndTxn), so four of a transaction's nine round trips are lookups whose answer has not
 * changed. The Java client keeps the coordinator until a request to it fails; so does this cache:
 *
 * - a lookup's answer is kept per kafkajs cluster (one per producer, consumer or admin) and
 *   coordinator key, for at most {@link COORDINATOR_TTL_MS}; concurrent lookups share one request;
 * - any coordinator request failing with a coordinator error (NOT_COORDINATOR,
 *   COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS) or a connection error forgets every
 *   cached answer, so kafkajs' own retry looks the coordinator up again, as it would uncached;
 * - a failed lookup is not kept.
 *
 * kafkajs is pinned to 2.2.4 (package.json): the patched methods are its internals.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** Longest a coordinator answer is kept without a request failing first, ms. */
const COORDINATOR_TTL_MS = 60_000;

/** Errors after which no cached coordinator is trusted. */
const STALE_TYPES = new Set(['NOT_COORDINATOR_FOR_GROUP', 'GROUP_COORDINATOR_NOT_AVAILABLE', 'GROUP_LOAD_IN_PROGRESS']);
const STALE_NAMES = new Set(['KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSRequestTimeoutError']);

/** Broker requests that go to a group or transaction coordinator. */
const COORDINATOR_REQUESTS = [
  'initProducerId',
  'addPartitionsToTxn',
  'addOffsetsToTxn',
  'txnOffsetCommit',
  'endTxn',
  'offsetFetch',
  'offsetCommit',
  'joinGroup',
  'syncGroup',
  'heartbeat',
  'leaveGroup',
  'describeGroups',
] as const;

export function isStaleCoordinatorError(err: unknown): boolean {
  const e = err as { type?: string; name?: string; code?: string } | null;
  return !!e && (STALE_TYPES.has(e.type ?? '') || STALE_NAMES.has(e.name ?? '') || e.code === 'ECONNREFUSED');
}

interface Entry<T> {
  at: number;
  generation: number;
  value: Promise<T>;
}

/** Cached lookups per owner (a kafkajs cluster) and key; `invalidate()` drops every entry of every owner. */
export class CoordinatorCache<T> {
  private generation = 0;
  private readonly owners = new WeakMap<object, Map<string, Entry<T>>>();

  constructor(
    private readonly ttlMs = COORDINATOR_TTL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  get(owner: object, key: string, load: () => Promise<T>): Promise<T> {
    let entries = this.owners.get(owner);
    if (!entries) this.owners.set(owner, (entries = new Map()));
    const hit = entries.get(key);
    if (hit && hit.generation === this.generation && this.now() - hit.at < this.ttlMs) return hit.value;
    const value = load();
    const entry = { at: this.now(), generation: this.generation, value };
    entries.set(key, entry);
    value.catch(() => {
      if (entries.get(key) === entry) entries.delete(key);
    });
    return value;
  }

  invalidate(): void {
    this.generation += 1;
  }

  /** Wraps a coordinator request so that a stale-coordinator failure invalidates the cache. */
  invalidating<A extends unknown[], R>(request: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    const invalidate = (): void => this.invalidate();
    return async function (this: unknown, ...args: A): Promise<R> {
      try {
        return await request.apply(this, args);
      } catch (err) {
        if (isStaleCoordinatorError(err)) invalidate();
        throw err;
      }
    };
  }
}

type Lookup = (this: object, args: { groupId: string; coordinatorType?: number }) => Promise<unknown>;

let installed: CoordinatorCache<unknown> | undefined;

/** Installs the cache into kafkajs (once per process); returns it. */
export function installCoordinatorCache(): CoordinatorCache<unknown> {
  if (installed) return installed;
  const cache = new CoordinatorCache<unknown>();
  const Cluster = require('kafkajs/src/cluster/index.js') as { prototype: { findGroupCoordinatorMetadata: Lookup } };
  const Broker = require('kafkajs/src/broker/index.js') as { prototype: Record<string, unknown> };
  const lookup = Cluster.prototype.findGroupCoordinatorMetadata;
  if (typeof lookup !== 'function') throw new Error('kafkajs internals changed: Cluster.findGroupCoordinatorMetadata is missing (kafkajs 2.2.4 expected)');
  Cluster.prototype.findGroupCoordinatorMetadata = function (this: object, args) {
    return cache.get(this, `${args.coordinatorType ?? 0}:${args.groupId}`, () => lookup.call(this, args));
  };
  for (const name of COORDINATOR_REQUESTS) {
    const request = Broker.prototype[name];
    if (typeof request !== 'function') throw new Error(`kafkajs internals changed: Broker.${name} is missing (kafkajs 2.2.4 expected)`);
    Broker.prototype[name] = cache.invalidating(request as (...args: unknown[]) => Promise<unknown>);
  }
  installed = cache;
  return cache;
}
