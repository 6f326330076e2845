/**
 * `sonicflow topology acls` and `topology deploy --acls`: the ACLs derived from the topology
 * (src/runtime/acls.ts) as a table or JSON, and a plan against the broker's bindings of the same
 * principals, like the topic plan of `deploy.ts`: missing bindings are created, bindings of these
 * principals that the topology does not derive are reported (and removed only with
 * `--prune-acls`). Bindings of other principals are never read or touched.
 */
import { SonicError } from '../core/errors.js';
import { aclKey, type AclAdmin, type AclBinding } from '../kafka/acls.js';
import type { PrincipalAcls } from '../runtime/acls.js';

/** The table's rows: principal, who it is for, resource type, name, pattern, operation. */
export function formatAclTable(principals: PrincipalAcls[]): string {
  const rows = [['who', 'principal', 'resource', 'name', 'pattern', 'operation']];
  for (const p of principals) {
    for (const b of p.bindings) rows.push([p.role === 'stage' ? p.name : `(${p.name})`, p.principal, b.resourceType, b.name, b.pattern, b.operation]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n')}\n`;
}

/** The derived ACLs as JSON: one entry per principal with its bindings. */
export function formatAclJson(principals: PrincipalAcls[]): string {
  return `${JSON.stringify(principals, null, 2)}\n`;
}

/**
 * The ACL table of docs/operations.md: one row per principal and resource, the operations
 * joined, so that the page stays short.
 */
export function renderAclDocTable(principals: PrincipalAcls[]): string {
  const rows = ['| who | principal | resource | name | pattern | operations |', '|---|---|---|---|---|---|'];
  for (const p of principals) {
    const byResource = new Map<string, { b: AclBinding; ops: string[] }>();
    for (const b of p.bindings) {
      const key = `${b.resourceType}|${b.pattern}|${b.name}`;
      const entry = byResource.get(key) ?? { b, ops: [] };
      entry.ops.push(b.operation);
      byResource.set(key, entry);
    }
    for (const { b, ops } of byResource.values()) {
      rows.push(
        `| ${p.role === 'stage' ? p.name : p.name + ' (' + p.role + ')'} | \`${p.principal}\` | ${b.resourceType} | \`${b.name}\` | ${b.pattern} | ${ops.join(', ')} |`,
      );
    }
  }
  return `${rows.join('\n')}\n`;
}

export interface AclPlan {
  /** Derived bindings the broker does not have. */
  create: AclBinding[];
  /** ALLOW bindings of the derived principals that the topology does not derive. */
  extra: AclBinding[];
  /** Derived bindings already there. */
  unchanged: number;
  /** Bindings of these principals sonicflow does not manage (DENY, bound to a host): left alone. */
  unmanaged: number;
}

const whoOf = (p: PrincipalAcls): string => (p.role === 'stage' ? `stage ${p.name}` : `${p.name} (${p.role})`);

/**
 * Refuses (`TOPOLOGY_INVALID`) principals of which two are the same, e.g. a stage named `ops` and
 * the operators: a plan would hold each one's bindings for "extra" against the other's, so a second
 * deploy would never be quiet and `--prune-acls` would delete what the other needs.
 */
export function assertDistinctPrincipals(principals: PrincipalAcls[]): void {
  const seen = new Map<string, PrincipalAcls>();
  for (const p of principals) {
    const before = seen.get(p.principal);
    if (before) {
      throw new SonicError(
        'TOPOLOGY_INVALID',
        `principal ${p.principal} is derived twice, for ${whoOf(before)} and for ${whoOf(p)}: rename the stage (api, ops and keda are reserved names); nothing was planned`,
        { details: { principal: p.principal, for: [whoOf(before), whoOf(p)] } },
      );
    }
    seen.set(p.principal, p);
  }
}

/**
 * Compares the derived bindings with what the broker holds for the same principals. Reads only.
 * Refuses principals that are not distinct ({@link assertDistinctPrincipals}).
 */
export async function planAcls(principals: PrincipalAcls[], admin: AclAdmin): Promise<AclPlan> {
  assertDistinctPrincipals(principals);
  const plan: AclPlan = { create: [], extra: [], unchanged: 0, unmanaged: 0 };
  for (const p of principals) {
    const { bindings, other } = await admin.describe(p.principal);
    plan.unmanaged += other;
    const existing = new Set(bindings.map(aclKey));
    const wanted = new Set(p.bindings.map(aclKey));
    for (const b of p.bindings) {
      if (existing.has(aclKey(b))) plan.unchanged += 1;
      else plan.create.push(b);
    }
    for (const b of bindings) if (!wanted.has(aclKey(b))) plan.extra.push(b);
  }
  return plan;
}

/** True when applying the plan would change nothing (extras are changes only when pruning). */
export function aclPlanIsEmpty(p: AclPlan, prune = false): boolean {
  return p.create.length === 0 && (!prune || p.extra.length === 0);
}

const line = (b: AclBinding): string => `${b.principal} ${b.operation} on ${b.resourceType} ${b.name}${b.pattern === 'PREFIXED' ? '*' : ''}`;

/** The plan as text: `+` create, `-` remove (with --prune-acls), `?` extra kept. */
export function formatAclPlan(p: AclPlan, prune = false): string {
  const lines = [
    ...p.create.map((b) => `  + acl ${line(b)}`),
    ...p.extra.map((b) => (prune ? `  - acl ${line(b)}` : `  ? acl ${line(b)} (not derived from the topology; kept, --prune-acls removes it)`)),
  ];
  const tail = p.unmanaged > 0 ? `  (${p.unmanaged} DENY or host-bound binding(s) of these principals left alone)\n` : '';
  if (lines.length === 0) return `No ACL changes. The broker holds the ${p.unchanged} binding(s) derived from the topology.\n${tail}`;
  return `ACL plan:\n${lines.join('\n')}\n${tail}`;
}

/** Creates the missing bindings, and removes the extra ones when `prune`. */
export async function applyAcls(p: AclPlan, admin: AclAdmin, prune = false): Promise<void> {
  await admin.create(p.create);
  if (prune) await admin.delete(p.extra);
}
