/**
 * Webhook delivery following the Standard Webhooks spec: `webhook-id` (stable per event, so a
 * receiver can de-duplicate redeliveries), `webhook-timestamp`, `webhook-signature`
 * (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`). Addresses are checked at connection time:
 * the DNS lookup itself refuses private, loopback, link-local and unique-local addresses unless
 * the host is allow-listed, so a name cannot resolve to a public address for the check and a
 * private one for the request.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP } from 'node:net';
import standardwebhooks from 'standardwebhooks';
import type { Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';

const { Webhook } = standardwebhooks;

const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8]] as const) blocked.addSubnet(net, prefix, 'ipv6');

/** True for addresses a webhook must not reach unless allow-listed. */
export function isPrivateAddress(address: string): boolean {
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (v4mapped) return blocked.check(v4mapped, 'ipv4');
  return blocked.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
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

export interface WebhookEvent {
  /** Stable for one event across redeliveries. */
  id: string;
  type: string;
  data: Record<string, unknown>;
}

export interface DeliveryOptions {
  secret: string;
  allowHosts: string[];
  timeoutMs: number;
}

/** The Standard Webhooks headers for a body. */
export function signHeaders(secret: string, id: string, at: Date, body: string): Record<string, string> {
  const signature = new Webhook(secret).sign(id, at, body);
  return { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': signature };
}

/**
 * POSTs the event. Resolves on 2xx. Throws CALLBACK_URL_REFUSED (permanent) for a refused
 * address or scheme, CALLBACK_DELIVERY_FAILED (retryable) for anything else the receiver does,
 * except 410 Gone, which means the receiver does not want it any more (permanent).
 */
export async function deliver(url: string, event: WebhookEvent, opts: DeliveryOptions, now = new Date()): Promise<number> {
  const u = new URL(url);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new SonicError('CALLBACK_URL_REFUSED', `callback scheme ${u.protocol} is not http(s)`);
  const allowed = opts.allowHosts.includes(u.hostname);
  const body = JSON.stringify({ type: event.type, timestamp: now.toISOString(), data: event.data });
  const headers = { 'content-type': 'application/json', 'user-agent': 'sonicflow-webhooks/1', ...signHeaders(opts.secret, event.id, now, body) };
  const literal = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(literal) && !allowed && isPrivateAddress(literal)) {
    throw new SonicError('CALLBACK_URL_REFUSED', `callback host ${u.hostname} is a private, loopback or link-local address`);
  }
  const lookup = (host: string, options: object, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void => {
    dnsLookup(host, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return cb(err, '', 4);
      const bad = addresses.find((a) => isPrivateAddress(a.address));
      if (bad && !allowed) {
        const e: NodeJS.ErrnoException = new Error(`callback host ${host} resolves to ${bad.address}, a private, loopback or link-local address`);
        e.code = 'SONIC_REFUSED';
        return cb(e, '', 4);
      }
      const a = addresses[0]!;
      if ((options as { all?: boolean }).all) cb(null, addresses);
      else cb(null, a.address, a.family);
    });
  };
  const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    const req = send(u, { method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) }, lookup, timeout: opts.timeoutMs }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) resolve(status);
      else if (status === 410) reject(new SonicError('CALLBACK_URL_REFUSED', `the receiver answered 410 Gone: it no longer accepts events`));
      else reject(new SonicError('CALLBACK_DELIVERY_FAILED', `the receiver answered ${status}`, { details: { status } }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'SONIC_REFUSED') reject(new SonicError('CALLBACK_URL_REFUSED', err.message));
      else reject(new SonicError('CALLBACK_DELIVERY_FAILED', `delivery to ${u.host} failed: ${err.message}`, { cause: err }));
    });
    req.end(body);
  });
}
