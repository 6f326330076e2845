/**
 * Local Avro compatibility checks with field-level reasons, so that a refused change names the
 * field and the rule instead of a bare "incompatible". The verdict comes from avsc's schema
 * resolution (the same rules readers apply); the reasons from a walk over record fields.
 */
import avro from 'avsc';

/** Subject compatibility levels (Confluent names). */
export type CompatibilityLevel = 'BACKWARD' | 'BACKWARD_TRANSITIVE' | 'FORWARD' | 'FORWARD_TRANSITIVE' | 'FULL' | 'FULL_TRANSITIVE' | 'NONE';

export interface CompatVerdict {
  compatible: boolean;
  /** Human-readable problems, each naming a field path and the rule it breaks. */
  problems: string[];
}

function canRead(reader: avro.Type, writer: avro.Type): boolean {
  try {
    reader.createResolver(writer);
    return true;
  } catch {
    return false;
  }
}

type FieldLike = { name: string; type: avro.Type; defaultValue: () => unknown };

/** Explains why `reader` cannot read data written with `writer`, field by field. */
function explainResolution(reader: avro.Type, writer: avro.Type, path = ''): string[] {
  if (canRead(reader, writer)) return [];
  const here = path || '(root)';
  if (reader.typeName === 'record' && writer.typeName === 'record') {
    const rFields = (reader as avro.types.RecordType).fields as unknown as FieldLike[];
    const wFields = new Map(((writer as avro.types.RecordType).fields as unknown as FieldLike[]).map((f) => [f.name, f]));
    const out: string[] = [];
    for (const f of rFields) {
      const w = wFields.get(f.name);
      const fieldPath = path ? `${path}.${f.name}` : f.name;
      if (!w) {
        if (f.defaultValue() === undefined) out.push(`field ${fieldPath} is missing from the writer schema and has no default in the reader`);
        continue;
      }
      out.push(...explainResolution(f.type, w.type, fieldPath));
    }
    return out.length > 0 ? out : [`${here}: record ${reader.name ?? ''} cannot read ${writer.name ?? ''}`];
  }
  return [`field ${here} changed type: ${describe(writer)} cannot be read as ${describe(reader)}`];
}

function describe(t: avro.Type): string {
  return t.name ?? t.typeName;
}

/**
 * Checks `candidate` against the registered `versions` (oldest first) under a Confluent
 * compatibility level: BACKWARD means the candidate reads the latest version's data, FORWARD
 * that the latest reads the candidate's, FULL both; the _TRANSITIVE forms check every version.
 */
export function checkCompatibility(candidate: avro.Type, versions: avro.Type[], level: CompatibilityLevel): CompatVerdict {
  if (level === 'NONE' || versions.length === 0) return { compatible: true, problems: [] };
  const against = level.endsWith('_TRANSITIVE') ? versions : versions.slice(-1);
  const backward = level.startsWith('BACKWARD') || level.startsWith('FULL');
  const forward = level.startsWith('FORWARD') || level.startsWith('FULL');
  const problems: string[] = [];
  against.forEach((old, i) => {
    const label = against.length > 1 ? ` (version ${i + 1})` : '';
    if (backward) for (const p of explainResolution(candidate, old)) problems.push(`${p} — breaks ${level}: the new schema cannot read existing data${label}`);
    if (forward) for (const p of explainResolution(old, candidate)) problems.push(`${p} — breaks ${level}: existing readers cannot read new data${label}`);
  });
  return { compatible: problems.length === 0, problems };
}
