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

/** The broker's answers to a lookup its authorizer refused. */
const AUTHORIZATION_TYPES = new Set(['GROUP_AUTHORIZATION_FAILED', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED']);

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
  // kafkajs turns every failed lookup into "Failed to find group coordinator", dropping the
  // broker's answer: a lookup the authorizer refused (GROUP_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
  // is kept here and thrown instead, so that callers see the refusal and do not retry it
  const refused = new Map<string, unknown>();
  const find = Broker.prototype.findGroupCoordinator as ((args: { groupId: string; coordinatorType?: number }) => Promise<unknown>) | undefined;
  if (typeof find !== 'function') throw new Error('kafkajs internals changed: Broker.findGroupCoordinator is missing (kafkajs 2.2.4 expected)');
  Broker.prototype.findGroupCoordinator = async function (this: unknown, args: { groupId: string; coordinatorType?: number }) {
    try {
      return await find.call(this, args);
    } catch (err) {
      if (AUTHORIZATION_TYPES.has((err as { type?: string }).type ?? '')) refused.set(`${args.coordinatorType ?? 0}:${args.groupId}`, err);
      throw err;
    }
  };
  Cluster.prototype.findGroupCoordinatorMetadata = function (this: object, args) {
    const key = `${args.coordinatorType ?? 0}:${args.groupId}`;
    return cache.get(this, key, async () => {
      refused.delete(key);
      try {
        return await lookup.call(this, args);
      } catch (err) {
        const cause = refused.get(key);
        refused.delete(key);
        throw cause ?? err;
      }
    });
  };
  for (const name of COORDINATOR_REQUESTS) {
    const request = Broker.prototype[name];
    if (typeof request !== 'function') throw new Error(`kafkajs internals changed: Broker.${name} is missing (kafkajs 2.2.4 expected)`);
    Broker.prototype[name] = cache.invalidating(request as (...args: unknown[]) => Promise<unknown>);
  }
  installed = cache;
  return cache;
}
