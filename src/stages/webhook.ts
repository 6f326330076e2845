/**
 * Webhook delivery following the Standard Webhooks spec: `webhook-id` (stable per event, so a
 * receiver can de-duplicate redeliveries), `webhook-timestamp`, `webhook-signature`
 * (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`).
 *
 * The address policy is src/domain/callbacks.ts; here it runs at connection time, inside the
 * request's own DNS lookup, on every address of the answer, so a name cannot resolve to a public
 * address for a check and to a private one for the request.
 *
 * One total deadline covers a delivery from DNS to the end of a bounded read of the answer, and
 * the stage's abort signal ends it at once; redirects are not followed.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import standardwebhooks from 'standardwebhooks';
import { SonicError, isSonicError } from '../core/errors.js';
import { callbackRefused as refused, isAllowListed, parseCallbackUrl, refusedRange } from '../domain/callbacks.js';

const { Webhook } = standardwebhooks;

/** How much of an answer's body is read before the connection is closed. */
export const MAX_RESPONSE_BYTES = 4096;

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
            ? refused(
                `callback host ${hostname} resolves to ${bad.address} (range ${refusedRange(bad.address)}); webhooks go only to public addresses`,
                'callback_url resolves to an address webhooks may not reach',
              )
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
  const snippet = body
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, 200);
  if (status === 410) return refused('the receiver answered 410 Gone: it no longer accepts events', 'the receiver answered 410 Gone');
  if (status >= 300 && status < 400) {
    return refused(
      `the receiver answered ${status} to ${String(location)}; redirects are not followed: configure the final URL`,
      'the receiver answered a redirect; redirects are not followed',
    );
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
      () =>
        finish(
          new SonicError('CALLBACK_DELIVERY_FAILED', `no complete answer from ${u.host} within the ${opts.timeoutMs} ms deadline`, {
            details: { timeoutMs: opts.timeoutMs },
          }),
        ),
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
    req.on('error', (err) =>
      finish(refusal ?? (isSonicError(err) ? err : new SonicError('CALLBACK_DELIVERY_FAILED', `delivery to ${u.host} failed: ${err.message}`, { cause: err }))),
    );
    req.end(body);
  });
}
