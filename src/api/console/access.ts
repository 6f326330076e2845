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
 * `Origin` other than the API's own. See docs/security.md.
 */
import type { FastifyRequest } from 'fastify';
import { SonicError } from '../../core/errors.js';

/** Whether the caller is an operator (sees every tenant). */
export const isOperator = (req: FastifyRequest): boolean => req.role === 'read' || req.role === 'admin';

/** Throws 403 FORBIDDEN unless the caller is an operator. */
export function requireOperator(req: FastifyRequest): void {
  if (!isOperator(req)) throw new SonicError('FORBIDDEN', 'this page needs an operator key (role=read or role=admin)', { safe: true });
}

/** Throws 403 FORBIDDEN unless the caller is an admin, and refuses a cross-site request (CSRF). */
export function requireAdmin(req: FastifyRequest): void {
  if (req.role !== 'admin')
    throw new SonicError('FORBIDDEN', 'this action needs an admin key (role=admin); a read-only key sees but does not act', { safe: true });
  refuseCrossSite(req);
}

/** Throws 403 FORBIDDEN when the browser says the request comes from another site. */
export function refuseCrossSite(req: FastifyRequest): void {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    throw new SonicError('FORBIDDEN', 'a console action must come from the console itself (cross-site request refused)', { safe: true });
  const origin = req.headers.origin;
  if (origin === undefined) return;
  const host = req.headers[':authority'] ?? req.headers.host;
  let same = false;
  try {
    same = new URL(String(origin)).host === host;
  } catch {
    same = false;
  }
  if (!same) throw new SonicError('FORBIDDEN', 'a console action must come from the console itself (foreign Origin refused)', { safe: true });
}

/** The tenant whose tasks a caller may see: its own, or for an operator the one asked for (undefined: all). */
export function tenantScope(req: FastifyRequest, asked: string | undefined): string | undefined {
  return isOperator(req) ? asked : req.tenant;
}
