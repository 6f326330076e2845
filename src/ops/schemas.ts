/**
 * `sonicflow schemas check|diff|register`: `schemas/` is the source of truth. `check` compares
 * every local schema with the registry under the subject's compatibility level from the
 * topology and exits non-zero on an incompatible change (a CI gate); `diff` shows field-level
 * changes against the latest registered version; `register` registers what changed.
 */
import { registeredTopics, type Topology } from '../runtime/topology.js';
import { checkCompatibility } from '../serde/compat.js';
import { diffSchemas, formatDiff } from '../serde/diff.js';
import type { RegistryAdmin } from '../serde/registry-admin.js';
import type { SchemaCatalog } from '../serde/catalog.js';
import { valueSubject } from '../serde/wire.js';

export interface SubjectCheck {
  subject: string;
  schema: string;
  level: string;
  verdict: 'new' | 'unchanged' | 'compatible' | 'incompatible';
  problems: string[];
  changes: string[];
}

/** Checks every registered topic's local schema against its subject. */
export async function checkSchemas(topology: Topology, catalog: SchemaCatalog, registry: RegistryAdmin): Promise<SubjectCheck[]> {
  const out: SubjectCheck[] = [];
  for (const topic of registeredTopics(topology)) {
    if (!topic.valueSchema) continue;
    const subject = valueSubject(topic.name);
    const local = catalog.type(topic.valueSchema);
    const history = await registry.history(subject);
    const base = { subject, schema: topic.valueSchema, level: topic.compatibility };
    const latest = history[history.length - 1];
    if (!latest) {
      out.push({ ...base, verdict: 'new', problems: [], changes: [] });
      continue;
    }
    const changes = formatDiff(diffSchemas(latest, local));
    const verdict = checkCompatibility(local, history, topic.compatibility);
    const unchanged = history.some((h) => h.equals(local)) && changes.length === 0;
    out.push({ ...base, verdict: !verdict.compatible ? 'incompatible' : unchanged ? 'unchanged' : 'compatible', problems: verdict.problems, changes });
  }
  return out;
}

export function formatChecks(checks: SubjectCheck[], showChanges: boolean): string {
  const lines: string[] = [];
  for (const c of checks) {
    const label = { new: 'new subject', unchanged: 'unchanged', compatible: 'compatible change', incompatible: 'INCOMPATIBLE' }[c.verdict];
    lines.push(`${c.verdict === 'incompatible' ? '!' : c.verdict === 'unchanged' ? ' ' : '+'} ${c.subject} (${c.schema}, ${c.level}): ${label}`);
    for (const p of c.problems) lines.push(`    ${p}`);
    if (showChanges) for (const ch of c.changes) lines.push(`    ${ch}`);
  }
  const bad = checks.filter((c) => c.verdict === 'incompatible').length;
  lines.push(
    bad ? `${bad} incompatible schema change(s): fix them, or evolve in compatible steps (see docs/operations.md)` : `all ${checks.length} subjects compatible`,
  );
  return `${lines.join('\n')}\n`;
}

/** Field-level changes against the latest registered version, per subject. */
export function formatDiffs(checks: SubjectCheck[]): string {
  const lines: string[] = [];
  for (const c of checks) {
    if (c.verdict === 'new') lines.push(`${c.subject}: not registered yet (schema ${c.schema})`);
    else if (c.changes.length === 0) lines.push(`${c.subject}: no changes`);
    else lines.push(`${c.subject}:`, ...c.changes.map((ch) => `  ${ch}`));
  }
  return `${lines.join('\n')}\n`;
}
