/**
 * Webhook delivery following the Standard Webhooks spec: `webhook-id` (stable per event, so a
 * receiver can de-duplicate redeliveries), `webhook-timestamp`, `webhook-signature`
 * (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`).
 *
 * Address policy (an allow-list, from ipaddr.js's ranges): a webhook connects only to global
 * unicast addresses: IPv4 of range `unicast`, IPv6 inside 2000::/3 and of range `unicast` (so
 * NAT64, 6to4, Teredo, IPv4-mapped and -compatible, site-local, ULA, link-local, multicast,
 * documentation and reserved space are refused), unless the host is allow-listed. The check runs
 * at connection time, inside the request's own DNS lookup, on every address of the answer, so a
 * name cannot resolve to a public address for a check and to a private one for the request.
 *
 * One total deadline covers a delivery from DNS to the end of a bounded read of the answer, and
 * the stage's abort signal ends it at once; redirects are not followed.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import standardwebhooks from 'standardwebhooks';
import type { Config } from '../core/config.js';
import { SonicError, isSonicError } from '../core/errors.js';

const { Webhook } = standardwebhooks;

/** The IPv6 global unicast space (RFC 4291); everything else of IPv6 is refused. */
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3');
/** How much of an answer's body is read before the connection is closed. */
export const MAX_RESPONSE_BYTES = 4096;
/** Longest callback URL accepted. */
const MAX_URL_LENGTH = 2048;

/**
 * Why a webhook must not connect to `address`: the ipaddr.js range (`loopback`, `private`,
 * `6to4`, `rfc6052`, `ipv4Mapped`, ...), `non-global` for IPv6 outside 2000::/3, `invalid` for a
 * string that is no IP address; `null` when the address is global unicast.
 */
export function refusedRange(address: string): string | null {
  const bare = address.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 0) return 'invalid';
  const ip = ipaddr.parse(bare);
  const range = ip.range();
  if (range !== 'unicast') return range;
  if (ip.kind() === 'ipv6' && !ip.match(GLOBAL_UNICAST_V6)) return 'non-global';
  return null;
}

/** True when a webhook may connect to `address` (see {@link refusedRange}). */
export function isPublicAddress(address: string): boolean {
  return refusedRange(address) === null;
}

/**
 * A host as compared with SONIC_WEBHOOK_ALLOW_HOSTS: lower case, no brackets or final dot, IPv6
 * in the URL parser's canonical form (not ipaddr.js's, which reads `::a.b.c.d` as `::ffff:a.b.c.d`).
 */
function normaliseHost(host: string): string {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  if (isIP(h) !== 6) return h;
  try {
    return new URL(`http://[${h}]/`).hostname.slice(1, -1);
  } catch {
    return h; // a zone id: compared as written
  }
}

/** True when `hostname` is listed in `allowHosts` (exact names or IP literals, any spelling of an IPv6 literal). */
export function isAllowListed(hostname: string, allowHosts: readonly string[]): boolean {
  const h = normaliseHost(hostname);
  return allowHosts.some((a) => normaliseHost(a) === h);
}

function refused(message: string, safe: true | string = true): SonicError {
  return new SonicError('CALLBACK_URL_REFUSED', message, { safe, details: { field: 'callback_url' } });
}

/** Parses a callback URL and applies every check that needs no DNS; see {@link checkCallbackUrl}. */
function parseCallbackUrl(url: string, allowHosts: readonly string[]): URL {
  if (url.length > MAX_URL_LENGTH) throw refused(`callback_url is longer than ${MAX_URL_LENGTH} characters`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw refused('callback_url is not a valid absolute URL');
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw refused(`callback_url must be http(s), not ${u.protocol.replace(/:$/, '')}`);
  if (u.username !== '' || u.password !== '') throw refused('callback_url must not carry credentials (user:password@); authenticate the webhook by its signature');
  if (u.port === '0') throw refused('callback_url must not use port 0');
  if (isAllowListed(u.hostname, allowHosts)) return u;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0) {
    const range = refusedRange(host);
    if (range !== null) throw refused(`callback_url points to an address of range ${range}; webhooks go only to public (global unicast) addresses`);
  } else if (/(^|\.)localhost\.?$/.test(host)) {
    throw refused('callback_url names localhost; webhooks go only to public addresses');
  }
  return u;
}

/**
 * The submit-time check of a callback URL, pure (no DNS) so that submit stays fast. Refuses with
 * `CALLBACK_URL_REFUSED` (a client-safe message, details `{field: 'callback_url'}`) a URL that does
 * not parse or is longer than 2048 characters, a scheme other than http(s), credentials
 * (`user:pass@`), port 0, an IP literal outside the address policy in any spelling the WHATWG
 * parser accepts (decimal, hex, octal, short IPv4; IPv4-mapped, NAT64, 6to4, ... IPv6), and
 * `localhost`, `*.localhost` (with or without the final dot). Any other port is accepted: only
 * public addresses are reachable. Names are checked again, by address, when a delivery connects.
 * Hosts in `allowHosts` skip the address and localhost checks.
 */
export function checkCallbackUrl(url: string, allowHosts: string[]): void {
  parseCallbackUrl(url, allowHosts);
}

/**
 * The signing secret of a task's callback, within the task's tenant only: `secret_ref` names
 * `<tenant>/<ref>` of SONIC_WEBHOOK_SECRETS; without one (null or empty), `<tenant>/default` when
 * configured, else SONIC_WEBHOOK_SECRET. Throws `CALLBACK_SECRET_UNKNOWN` (permanent; a
 * client-safe message that names the ref, never a secret; details `{field: 'callback_secret_ref'}`)
 * when nothing matches: another tenant's name never resolves.
 */
export function resolveWebhookSecret(config: Pick<Config, 'webhookSecret' | 'webhookSecrets'>, tenant: string, ref: string | null): string {
  const find = (name: string): string | undefined => {
    const prefix = `${tenant}/${name}=`;
    return config.webhookSecrets.find((e) => e.startsWith(prefix))?.slice(prefix.length);
  };
  const unknown = (message: string): SonicError => new SonicError('CALLBACK_SECRET_UNKNOWN', message, { safe: true, details: { field: 'callback_secret_ref' } });
  if (ref !== null && ref !== '') {
    // a name never holds `/`, so `other-tenant/name` cannot reach across tenants
    const secret = /^[A-Za-z0-9_.-]{1,64}$/.test(ref) ? find(ref) : undefined;
    if (secret === undefined) throw unknown(`callback_secret_ref ${JSON.stringify(ref.slice(0, 64))} names no webhook signing secret of your tenant`);
    return secret;
  }
  const secret = find('default') ?? config.webhookSecret;
  if (!secret) throw unknown('no webhook signing secret is configured for your tenant; name one with callback_secret_ref');
  return secret;
}

/** One webhook event. */
export interface WebhookEvent {
  /** Stable for one event across redeliveries. */
  id: string;
  type: string;
  data: Record<string, unknown>;
}

/** Resolves a host name to all its addresses (`dns.lookup` with `all: true` by default). */
export type Resolver = (hostname: string, family: number) => Promise<LookupAddress[]>;

const systemResolver: Resolver = (hostname, family) =>
  new Promise((resolve, reject) => dnsLookup(hostname, { all: true, family }, (err, addresses) => (err ? reject(err) : resolve(addresses))));

/** How one delivery is made. */
export interface DeliveryOptions {
  /** Standard Webhooks secret, `whsec_...`. */
  secret: string;
  /** Hosts exempt from the address policy (SONIC_WEBHOOK_ALLOW_HOSTS). */
  allowHosts: string[];
  /** Total deadline of the delivery, ms: DNS, connect, TLS, request, response headers and a bounded body read. */
  timeoutMs: number;
  /** Ends the delivery at once (the stage's abort signal). */
  signal?: AbortSignal;
  /** DNS resolution; the system resolver by default. Every address it returns is checked. */
  resolve?: Resolver;
}

/** The Standard Webhooks headers for a body. */
export function signHeaders(secret: string, id: string, at: Date, body: string): Record<string, string> {
  const signature = new Webhook(secret).sign(id, at, body);
  return { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': signature };
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * The request's DNS lookup: resolves, then refuses the whole answer when any address lies outside
 * the policy (a name that resolves into private space is not delivered to at all), so the
 * connection can only use checked addresses. `onRefused` records why.
 */
function guardedLookup(resolve: Resolver, allowed: boolean, onRefused: (e: SonicError) => void) {
  return (hostname: string, options: { family?: number | string; all?: boolean }, cb: LookupCallback): void => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : Number(options.family ?? 0) || 0;
    resolve(hostname, family).then(
      (addresses) => {
        const bad = allowed ? undefined : addresses.find((a) => refusedRange(a.address) !== null);
        if (bad || addresses.length === 0) {
          const e = bad
            ? refused(`callback host ${hostname} resolves to ${bad.address} (range ${refusedRange(bad.address)}); webhooks go only to public addresses`, 'callback_url resolves to an address webhooks may not reach')
            : new SonicError('CALLBACK_DELIVERY_FAILED', `callback host ${hostname} resolved to no address`);
          onRefused(e);
          return cb(e as NodeJS.ErrnoException, '', 4);
        }
        if (options.all) cb(null, addresses);
        else cb(null, addresses[0]!.address, addresses[0]!.family);
      },
      (err: NodeJS.ErrnoException) => cb(err, '', 4),
    );
  };
}

/** What an answer means: null for 2xx, else the error (410 and redirects are permanent). */
function classify(status: number, location: string | undefined, body: string): SonicError | null {
  if (status >= 200 && status < 300) return null;
  const snippet = body.replace(/[^\x20-\x7e]+/g, ' ').trim().slice(0, 200);
  if (status === 410) return refused('the receiver answered 410 Gone: it no longer accepts events', 'the receiver answered 410 Gone');
  if (status >= 300 && status < 400) {
    return refused(`the receiver answered ${status} to ${String(location)}; redirects are not followed: configure the final URL`, 'the receiver answered a redirect; redirects are not followed');
  }
  return new SonicError('CALLBACK_DELIVERY_FAILED', `the receiver answered ${status}${snippet ? `: ${snippet}` : ''}`, { details: { status } });
}

/**
 * POSTs the event and resolves with the status of a 2xx answer. Everything, from DNS to the end
 * of reading at most {@link MAX_RESPONSE_BYTES} of the answer, happens within `timeoutMs`; a
 * receiver that trickles its headers or body, or never answers, fails at the deadline, and the
 * connection is closed. Throws CALLBACK_URL_REFUSED (permanent) for a refused URL or address,
 * a redirect (not followed) or 410 Gone; CALLBACK_DELIVERY_FAILED (retryable) for anything else
 * the receiver does; on `signal`, its reason when that is a SonicError (SHUTDOWN), else
 * CALLBACK_DELIVERY_FAILED.
 */
export async function deliver(url: string, event: WebhookEvent, opts: DeliveryOptions, now = new Date()): Promise<number> {
  const u = parseCallbackUrl(url, opts.allowHosts);
  const allowed = isAllowListed(u.hostname, opts.allowHosts);
  const body = JSON.stringify({ type: event.type, timestamp: now.toISOString(), data: event.data });
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'user-agent': 'sonicflow-webhooks/1',
    ...signHeaders(opts.secret, event.id, now, body),
  };
  const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const conn: { req?: ClientRequest; res?: IncomingMessage } = {};
    let refusal: SonicError | undefined;
    const finish = (err: SonicError | null, status = 0): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      conn.res?.destroy();
      conn.req?.destroy();
      if (err) reject(err);
      else resolve(status);
    };
    const timer = setTimeout(
      () => finish(new SonicError('CALLBACK_DELIVERY_FAILED', `no complete answer from ${u.host} within the ${opts.timeoutMs} ms deadline`, { details: { timeoutMs: opts.timeoutMs } })),
      opts.timeoutMs,
    );
    const onAbort = (): void => {
      const reason: unknown = opts.signal?.reason;
      finish(isSonicError(reason) ? reason : new SonicError('CALLBACK_DELIVERY_FAILED', `delivery to ${u.host} was aborted`, { cause: reason }));
    };
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const lookup = guardedLookup(opts.resolve ?? systemResolver, allowed, (e) => (refusal = e));
    // agent: false: a fresh connection per delivery, closed afterwards, never a pooled socket checked under other rules
    const req = send(u, { method: 'POST', headers, lookup, agent: false }, (r) => {
      conn.res = r;
      const status = r.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let size = 0;
      const done = (): void => finish(classify(status, r.headers.location, Buffer.concat(chunks).toString('utf8')), status);
      r.on('data', (chunk: Buffer) => {
        chunks.push(chunk.subarray(0, Math.max(0, MAX_RESPONSE_BYTES - size)));
        size += chunk.length;
        if (size >= MAX_RESPONSE_BYTES) done();
      });
      r.on('end', done);
      r.on('error', (err) => finish(new SonicError('CALLBACK_DELIVERY_FAILED', `the answer from ${u.host} broke off: ${err.message}`, { cause: err })));
    });
    conn.req = req;
    req.on('error', (err) => finish(refusal ?? (isSonicError(err) ? err : new SonicError('CALLBACK_DELIVERY_FAILED', `delivery to ${u.host} failed: ${err.message}`, { cause: err }))));
    req.end(body);
  });
}
