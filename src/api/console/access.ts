/**
 * Who may do what in the console, and the CSRF guard of its actions.
 *
 * - A `tenant` key sees its own tenant's tasks only (and submits, as through the public API).
 * - A `read` key (an operator) sees every tenant's tasks, the stages, backlogs and dead letters.
 * - An `admin` key also acts: replays dead letters.
 *
 * CSRF: the console authenticates every request with the bearer key in the Authorization header,
 * which a cross-site form or image cannot send; in addition an action (POST) is refused when the
 * browser says it comes from another site (`Sec-Fetch-Site: cross-site|same-site`) or names an
 * `Origin` other than the API's own: the origin of SONIC_API_PUBLIC_URL when set (the address
 * behind a reverse proxy that rewrites `Host`), else the request's `Host` (or, with trusted proxy
 * hops, `X-Forwarded-Host`). See docs/security.md.
 *
 * DNS rebinding: with SONIC_API_AUTH=disabled every caller is an admin and no key protects an
 * action, so a page of attacker.example whose name was rebound to the API's address would count as
 * same-origin (its `Origin` and `Host` agree). Then an action is accepted only when `Host` names the
 * API itself: a loopback name or address, or SONIC_API_PUBLIC_URL's host.
 */
import type { FastifyRequest } from 'fastify';
import { SonicError } from '../../core/errors.js';

/** Whether the caller is an operator (sees every tenant). */
export const isOperator = (req: FastifyRequest): boolean => req.role === 'read' || req.role === 'admin';

/** Throws 403 FORBIDDEN unless the caller is an operator. */
export function requireOperator(req: FastifyRequest): void {
  if (!isOperator(req)) throw new SonicError('FORBIDDEN', 'this page needs an operator key (role=read or role=admin)', { safe: true });
}

/** Where the console is served from, as an action's `Origin` must say. */
export interface ConsoleOrigin {
  /** SONIC_API_PUBLIC_URL ('' when unset): when set, the only origin accepted. */
  publicUrl: string;
  /** Whether proxy hops are trusted (SONIC_API_TRUST_PROXY_HOPS > 0): then `X-Forwarded-Host` names the host. */
  trustsProxy: boolean;
  /** SONIC_API_AUTH=disabled: actions need a `Host` that names the API (DNS rebinding). */
  authDisabled?: boolean;
}

/** Throws 403 FORBIDDEN unless the caller is an admin, and refuses a cross-site request (CSRF). */
export function requireAdmin(req: FastifyRequest, origin: ConsoleOrigin): void {
  if (req.role !== 'admin')
    throw new SonicError('FORBIDDEN', 'this action needs an admin key (role=admin); a read-only key sees but does not act', { safe: true });
  refuseCrossSite(req, origin);
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v?.split(',')[0]?.trim());

/** Whether `hostname` (as `URL` writes it) is a loopback name or address: localhost, 127.0.0.0/8, [::1]. */
function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * Throws 403 FORBIDDEN unless the request's `Host` is a loopback name or address, or the host of
 * SONIC_API_PUBLIC_URL. Only `Host` counts (never `X-Forwarded-Host`, which a rebound page may set).
 */
export function refuseRebinding(req: FastifyRequest, o: Pick<ConsoleOrigin, 'publicUrl'>): void {
  const host = req.headers[':authority'] ?? req.headers.host;
  let ok = false;
  try {
    const pub = o.publicUrl ? new URL(o.publicUrl) : undefined;
    const asked = new URL(`${pub?.protocol ?? 'http:'}//${String(host)}`);
    ok = isLoopback(asked.hostname) || (pub !== undefined && asked.host === pub.host);
  } catch {
    ok = false;
  }
  if (!ok)
    throw new SonicError(
      'FORBIDDEN',
      'with SONIC_API_AUTH=disabled a console action must be addressed to localhost or to SONIC_API_PUBLIC_URL (Host refused)',
      { safe: true },
    );
}

/** Throws 403 FORBIDDEN when the browser says the request comes from another site (or, auth disabled, from a rebound name). */
export function refuseCrossSite(req: FastifyRequest, o: ConsoleOrigin): void {
  if (o.authDisabled) refuseRebinding(req, o);
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    throw new SonicError('FORBIDDEN', 'a console action must come from the console itself (cross-site request refused)', { safe: true });
  const origin = req.headers.origin;
  if (origin === undefined) return;
  let same = false;
  try {
    const from = new URL(String(origin));
    if (o.publicUrl) same = from.origin === new URL(o.publicUrl).origin;
    else {
      const forwarded = o.trustsProxy ? first(req.headers['x-forwarded-host']) : undefined;
      same = from.host === (forwarded ?? req.headers[':authority'] ?? req.headers.host);
    }
  } catch {
    same = false;
  }
  if (!same) throw new SonicError('FORBIDDEN', 'a console action must come from the console itself (foreign Origin refused)', { safe: true });
}

/** The tenant whose tasks a caller may see: its own, or for an operator the one asked for (undefined: all). */
export function tenantScope(req: FastifyRequest, asked: string | undefined): string | undefined {
  return isOperator(req) ? asked : req.tenant;
}
