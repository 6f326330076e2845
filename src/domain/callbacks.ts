/**
 * Callback policy shared by the API (at submit) and the notify stage (at delivery): which
 * callback URLs are acceptable, which addresses a webhook may connect to, and which signing
 * secret a task's tenant may use.
 *
 * Address policy (an allow-list, from ipaddr.js's ranges): a webhook connects only to global
 * unicast addresses: IPv4 of range `unicast`, IPv6 inside 2000::/3 and of range `unicast` (so
 * NAT64, 6to4, Teredo, IPv4-mapped and -compatible, site-local, ULA, link-local, multicast,
 * documentation and reserved space are refused), unless the host is allow-listed.
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';

/** The IPv6 global unicast space (RFC 4291); everything else of IPv6 is refused. */
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3');
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
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');
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

/** A `CALLBACK_URL_REFUSED` error with a client-safe message (details `{field: 'callback_url'}`). */
export function callbackRefused(message: string, safe: true | string = true): SonicError {
  return new SonicError('CALLBACK_URL_REFUSED', message, { safe, details: { field: 'callback_url' } });
}

/** Parses a callback URL and applies every check that needs no DNS; see {@link checkCallbackUrl}. */
export function parseCallbackUrl(url: string, allowHosts: readonly string[]): URL {
  if (url.length > MAX_URL_LENGTH) throw callbackRefused(`callback_url is longer than ${MAX_URL_LENGTH} characters`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw callbackRefused('callback_url is not a valid absolute URL');
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw callbackRefused(`callback_url must be http(s), not ${u.protocol.replace(/:$/, '')}`);
  if (u.username !== '' || u.password !== '')
    throw callbackRefused('callback_url must not carry credentials (user:password@); authenticate the webhook by its signature');
  if (u.port === '0') throw callbackRefused('callback_url must not use port 0');
  if (isAllowListed(u.hostname, allowHosts)) return u;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0) {
    const range = refusedRange(host);
    if (range !== null) throw callbackRefused(`callback_url points to an address of range ${range}; webhooks go only to public (global unicast) addresses`);
  } else if (/(^|\.)localhost\.?$/.test(host)) {
    throw callbackRefused('callback_url names localhost; webhooks go only to public addresses');
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
  const unknown = (message: string): SonicError =>
    new SonicError('CALLBACK_SECRET_UNKNOWN', message, { safe: true, details: { field: 'callback_secret_ref' } });
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
