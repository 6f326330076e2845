/**
 * Field-level differences between two Avro schemas (the registered version and the local one):
 * added, removed and retyped fields, changed defaults, recursively through records.
 */
import type avro from 'avsc';

export interface FieldChange {
  kind: 'added' | 'removed' | 'type' | 'default';
  /** Dotted path of the field. */
  path: string;
  detail: string;
}

type Field = { name: string; type: avro.Type; defaultValue: () => unknown };

function typeLabel(t: avro.Type): string {
  if (t.typeName === 'union:unwrapped' || t.typeName === 'union:wrapped') {
    return (t as unknown as { types: avro.Type[] }).types.map(typeLabel).join(' | ');
  }
  if (t.typeName.startsWith('logical:')) return `${t.typeName.slice(8)}`;
  return t.name ?? t.typeName;
}

function hasDefault(f: Field): boolean {
  return f.defaultValue() !== undefined;
}

function show(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Date ? x.toISOString() : x)) ?? 'none';
}

/** Changes that turn `from` into `to`, in field order. */
export function diffSchemas(from: avro.Type, to: avro.Type, path = ''): FieldChange[] {
  if (from.typeName !== 'record' || to.typeName !== 'record') {
    return typeLabel(from) === typeLabel(to) ? [] : [{ kind: 'type', path: path || '(root)', detail: `${typeLabel(from)} -> ${typeLabel(to)}` }];
  }
  const oldFields = new Map(((from as avro.types.RecordType).fields as unknown as Field[]).map((f) => [f.name, f]));
  const newFields = (to as avro.types.RecordType).fields as unknown as Field[];
  const out: FieldChange[] = [];
  const at = (name: string): string => (path ? `${path}.${name}` : name);
  for (const f of newFields) {
    const old = oldFields.get(f.name);
    if (!old) {
      out.push({
        kind: 'added',
        path: at(f.name),
        detail: `${typeLabel(f.type)}${hasDefault(f) ? `, default ${show(f.defaultValue())}` : ', no default (required)'}`,
      });
      continue;
    }
    if (old.type.typeName === 'record' && f.type.typeName === 'record') out.push(...diffSchemas(old.type, f.type, at(f.name)));
    else if (typeLabel(old.type) !== typeLabel(f.type)) out.push({ kind: 'type', path: at(f.name), detail: `${typeLabel(old.type)} -> ${typeLabel(f.type)}` });
    if (show(old.defaultValue()) !== show(f.defaultValue())) {
      out.push({ kind: 'default', path: at(f.name), detail: `${show(old.defaultValue())} -> ${show(f.defaultValue())}` });
    }
  }
  const names = new Set(newFields.map((f) => f.name));
  for (const [name, f] of oldFields) {
    if (!names.has(name))
      out.push({
        kind: 'removed',
        path: at(name),
        detail: `${typeLabel(f.type)}${hasDefault(f) ? `, had default ${show(f.defaultValue())}` : ', was required'}`,
      });
  }
  return out;
}

/** One line per change: `+ path: ...`, `- path: ...`, `~ path: ...`. */
export function formatDiff(changes: FieldChange[]): string[] {
  const sign = { added: '+', removed: '-', type: '~', default: '~' } as const;
  return changes.map((c) => `${sign[c.kind]} ${c.path}: ${c.kind === 'default' ? `default ${c.detail}` : c.kind === 'type' ? `type ${c.detail}` : c.detail}`);
}
