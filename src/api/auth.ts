/**
 * Who is calling: bearer API keys (with an optional expiry) mapped to tenants, and a limit on
 * failed attempts per client address. `guardScope` makes authentication and the per-key rate
 * limit properties of every route registered in a fastify scope (the `/v1` plugin), so they hold
 * whatever spelling of a path the router accepted (`/%761/tasks` is the same route as `/v1/tasks`).
 * With SONIC_REDIS_URL the per-key counts live in Redis, shared by every API replica.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import { Redis } from 'ioredis';
import { Counter, type Registry } from 'prom-client';
import { SonicError } from '../core/errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's tenant ('' before authentication). */
    tenant: string;
    /** A short, non-reversible id of the key used (for rate limits and logs), or null. */
    keyId: string | null;
    /** What the key may do beyond its own tenant's tasks (see {@link KeyRole}). */
    role: KeyRole;
  }
}

/**
 * `tenant`: the public API on its own tenant's tasks (the default). `read`: an operator who sees
 * every tenant's tasks, the stages, backlogs and dead letters, and changes nothing. `admin`: an
 * operator who also acts (replays dead letters). With SONIC_API_AUTH=disabled every caller is an
 * admin: that mode is for a local demo only.
 */
export type KeyRole = 'tenant' | 'read' | 'admin';
export const KEY_ROLES: readonly KeyRole[] = ['tenant', 'read', 'admin'];

/**
 * Throws 403 FORBIDDEN for a read-only key (role=read), which sees and changes nothing: the
 * `onRequest` of the routes that create (submit a task, upload a file), so the body is not read.
 */
export async function refuseReadOnly(req: FastifyRequest): Promise<void> {
  if (req.role === 'read')
    throw new SonicError('FORBIDDEN', 'a read-only key (role=read) cannot submit tasks or upload files; use a tenant or admin key', { safe: true });
}

/** One configured key. */
export interface ApiKey {
  tenant: string;
  /** sha256 of the key. */
  digest: Buffer;
  /** The key is refused from this instant on; undefined: never. */
  expiresAt?: Date;
  role: KeyRole;
}

/** Tenant names appear in blob keys and secret names: a plain word. */
export const TENANT_NAME = /^[A-Za-z0-9_-]{1,64}$/;

const digest = (key: string): Buffer => createHash('sha256').update(key, 'utf8').digest();

/**
 * Parses SONIC_API_KEYS entries: `tenant:key`, a bare `key` (tenant `default`), either followed by
 * `;expires=<ISO-8601 instant>` and/or `;role=tenant|read|admin` (default tenant). Throws
 * CONFIG_INVALID for a bad tenant name, an empty key, a key used twice, an unreadable expiry or an
 * unknown role (the message never shows a key).
 */
export function parseApiKeys(entries: string[]): ApiKey[] {
  const seen = new Set<string>();
  return entries.map((entry, i) => {
    const [main = '', ...attrs] = entry.split(';');
    const colon = main.indexOf(':');
    const tenant = colon > 0 ? main.slice(0, colon) : 'default';
    const key = colon > 0 ? main.slice(colon + 1) : main;
    const where = `SONIC_API_KEYS entry ${i + 1} (tenant ${TENANT_NAME.test(tenant) ? tenant : '?'})`;
    if (!TENANT_NAME.test(tenant)) throw new SonicError('CONFIG_INVALID', `${where}: the tenant must be 1-64 of [A-Za-z0-9_-]`);
    if (key.length === 0) throw new SonicError('CONFIG_INVALID', `${where}: the key is empty`);
    const hex = digest(key).toString('hex');
    if (seen.has(hex)) throw new SonicError('CONFIG_INVALID', `${where}: the same key appears twice`);
    seen.add(hex);
    const out: ApiKey = { tenant, digest: digest(key), role: 'tenant' };
    for (const a of attrs) {
      const role = /^role=(.*)$/.exec(a.trim());
      if (role) {
        if (!(KEY_ROLES as readonly string[]).includes(role[1]!))
          throw new SonicError('CONFIG_INVALID', `${where}: unknown role "${role[1]!.slice(0, 20)}" (expected role=${KEY_ROLES.join('|')})`);
        out.role = role[1] as KeyRole;
        continue;
      }
      const m = /^expires=(.+)$/.exec(a.trim());
      const at = m ? new Date(m[1]!) : undefined;
      if (!at || Number.isNaN(at.getTime()))
        throw new SonicError('CONFIG_INVALID', `${where}: unknown attribute or bad date "${a.slice(0, 40)}" (expected expires=<ISO-8601> or role=<role>)`);
      out.expiresAt = at;
    }
    return out;
  });
}

/** Looks a presented key up in constant time per configured key; the tenant, or why not. */
export function authenticate(keys: readonly ApiKey[], presented: string, now: Date): { tenant: string; role: KeyRole } | { refused: 'unknown' | 'expired' } {
  const d = digest(presented);
  let found: ApiKey | undefined;
  for (const k of keys) if (timingSafeEqual(k.digest, d)) found = k;
  if (!found) return { refused: 'unknown' };
  if (found.expiresAt && found.expiresAt.getTime() <= now.getTime()) return { refused: 'expired' };
  return { tenant: found.tenant, role: found.role };
}

/**
 * Failed authentications per client address in a sliding minute: past `max`, every request from
 * that address is answered 429 until the window has room again (a guessing client learns nothing
 * more). Memory is bounded: at most `maxAddresses` addresses are tracked, the oldest dropped first.
 */
export class FailedAuthLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly max: number,
    private readonly windowMs = 60_000,
    private readonly maxAddresses = 100_000,
  ) {}

  /** Seconds until `address` may try again; 0 when it may now. */
  retryAfterS(address: string, nowMs: number): number {
    const times = this.recent(address, nowMs);
    if (times.length < this.max) return 0;
    return Math.max(1, Math.ceil((times[times.length - this.max]! + this.windowMs - nowMs) / 1000));
  }

  record(address: string, nowMs: number): void {
    const times = this.recent(address, nowMs);
    times.push(nowMs);
    // re-insert: Map order is the eviction order
    this.failures.delete(address);
    this.failures.set(address, times.slice(-this.max));
    if (this.failures.size > this.maxAddresses) this.failures.delete(this.failures.keys().next().value!);
  }

  private recent(address: string, nowMs: number): number[] {
    const times = (this.failures.get(address) ?? []).filter((t) => t > nowMs - this.windowMs);
    if (times.length === 0) this.failures.delete(address);
    return times;
  }
}

export interface GuardOptions {
  auth: 'required' | 'disabled';
  keys: readonly ApiKey[];
  /** Requests per minute per key (per address without auth). */
  perMinute: number;
  /** Failed authentications per minute per address. */
  failedPerMinute: number;
  /** Whether X-Forwarded-For is trusted (SONIC_API_TRUST_PROXY_HOPS > 0); only used to warn. */
  trustsProxy?: boolean;
  /** Redis shared by the replicas for the per-key limit; absent: counts in this process. */
  shared?: SharedLimitOptions;
  /** Where `sonicflow_api_rate_limit_store_errors_total` is registered. */
  registry?: Registry;
  now?: () => Date;
}

/** The Redis behind the per-key limit (SONIC_REDIS_URL, SONIC_REDIS_TIMEOUT_MS). */
export interface SharedLimitOptions {
  url: string;
  /** Longest one command or connection attempt, ms. */
  timeoutMs: number;
  /** Key prefix: one deployment's counters never mix with another's in a shared Redis. */
  namespace: string;
}

/** The key prefix of a deployment's rate-limit counters: `<client id>.<topic prefix>.rate-limit:`. */
export function rateLimitNamespace(clientId: string, topicPrefix: string): string {
  return `${clientId}.${topicPrefix}.rate-limit:`;
}

type Callback = (err: Error | null, result?: unknown) => void;

/**
 * A Redis client for the rate limit that never makes a request wait for Redis: commands are not
 * queued while it is disconnected and not retried, each has `timeoutMs`, and the client keeps
 * reconnecting in the background. The plugin's script calls go through a proxy that reports
 * each failure and each recovery to `onResult`.
 */
export function rateLimitRedis(o: SharedLimitOptions, onResult: (err: Error | null) => void): { client: Redis; store: Redis } {
  const client = new Redis(o.url, {
    connectTimeout: o.timeoutMs,
    commandTimeout: o.timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    // reconnect for ever, at most every 2 s
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  });
  // connection errors surface through the commands that fail; an unheard 'error' event would be printed by ioredis
  client.on('error', () => undefined);
  const observed = new Set(['rateLimit', 'rateLimitRead']);
  const store = new Proxy(client, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      const fn = value as (...args: unknown[]) => unknown;
      if (typeof prop !== 'string' || !observed.has(prop)) return fn.bind(target);
      return (...args: unknown[]) => {
        const cb = args.pop() as Callback;
        return fn.call(target, ...args, (err: Error | null, result?: unknown) => {
          onResult(err);
          cb(err, result);
        });
      };
    },
  });
  return { client, store };
}

/** Logs a store outage once when it starts and once when it ends, and counts every failed call. */
function storeWatcher(log: FastifyBaseLogger, registry: Registry | undefined): (err: Error | null) => void {
  const errors = new Counter({
    name: 'sonicflow_api_rate_limit_store_errors_total',
    help: 'Rate-limit checks that Redis did not answer in time (the request was let through uncounted).',
    registers: registry ? [registry] : [],
  });
  let failing = false;
  return (err) => {
    if (err) {
      errors.inc();
      if (!failing) log.warn({ err: { message: err.message, name: err.name } }, 'rate limit store unavailable: requests pass uncounted until it answers');
      failing = true;
    } else if (failing) {
      failing = false;
      log.info('rate limit store answers again');
    }
  };
}

/**
 * Adds authentication and the rate limit to every route of `scope` (call it inside the plugin
 * that registers the routes). A failed attempt counts against the client address; an address
 * past the limit gets 429 before its key is even looked at.
 */
export async function guardScope(scope: FastifyInstance, o: GuardOptions): Promise<void> {
  const now = o.now ?? (() => new Date());
  const failures = new FailedAuthLimiter(o.failedPerMinute);
  let warned = false;
  scope.addHook('onRequest', async (req: FastifyRequest, reply) => {
    if (!warned && !o.trustsProxy && req.headers['x-forwarded-for'] !== undefined) {
      // behind a proxy every client shares its address: one guessing client locks out all
      warned = true;
      req.log.warn(
        { proxy: req.ip },
        'requests arrive through a proxy (X-Forwarded-For) but SONIC_API_TRUST_PROXY_HOPS is 0: per-address limits apply to the proxy',
      );
    }
    if (o.auth === 'disabled') {
      req.tenant = 'default';
      req.role = 'admin';
      return;
    }
    const t = now();
    const wait = failures.retryAfterS(req.ip, t.getTime());
    if (wait > 0) {
      void reply.header('retry-after', String(wait));
      throw new SonicError('RATE_LIMITED', `too many failed authentications from this address; retry in ${wait} s`, {
        safe: true,
        details: { retryAfterS: wait },
      });
    }
    const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(req.headers.authorization ?? '');
    const result = m ? authenticate(o.keys, m[1]!, t) : ({ refused: 'missing' } as const);
    if ('refused' in result) {
      failures.record(req.ip, t.getTime());
      const message =
        result.refused === 'missing'
          ? 'send an API key: Authorization: Bearer <key>'
          : result.refused === 'expired'
            ? 'the API key has expired'
            : 'the API key is not valid';
      throw new SonicError('UNAUTHORIZED', message, { safe: true });
    }
    req.tenant = result.tenant;
    req.role = result.role;
    req.keyId = createHash('sha256').update(m![1]!).digest('hex').slice(0, 16);
  });
  let shared: { client: Redis; store: Redis } | undefined;
  if (o.shared) {
    shared = rateLimitRedis(o.shared, storeWatcher(scope.log, o.registry));
    const { client } = shared;
    scope.addHook('onClose', async () => {
      await client.quit().catch(() => client.disconnect());
    });
  }
  await scope.register(rateLimit, {
    global: true,
    hook: 'onRequest',
    max: o.perMinute,
    timeWindow: 60_000,
    // fail open: a Redis outage must not take the API down with it (docs/security.md)
    ...(shared && o.shared ? { redis: shared.store, nameSpace: o.shared.namespace, skipOnError: true } : {}),
    keyGenerator: (req) => (req.keyId ? `key:${req.keyId}` : `ip:${req.ip}`),
    errorResponseBuilder: (_req, ctx) => {
      const wait = Math.max(1, Math.ceil(ctx.ttl / 1000));
      return Object.assign(
        new SonicError('RATE_LIMITED', `rate limit of ${ctx.max} requests per minute reached; retry in ${wait} s`, {
          safe: true,
          details: { retryAfterS: wait },
        }),
        { statusCode: 429 },
      );
    },
  });
}
