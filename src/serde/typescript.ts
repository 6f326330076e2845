/**
 * TypeScript declarations generated from Avro schemas, so that the record types stage code
 * compiles against are the schemas themselves: a schema change that breaks a stage fails `tsc`.
 * `npm run gen:types` writes them (`scripts/gen-record-types.ts`); a unit test fails while the
 * generated file is stale.
 *
 * Mapping (with sonicflow's logical types, see logical-types.ts): null → null, boolean →
 * boolean, int/long/float/double → number, string → string, bytes/fixed → Buffer,
 * `timestamp-millis` → Date, `uuid` → string, enum → a union of its symbols, array → T[],
 * map → Record<string, T>, union → A | B, record → an interface of its name. A named type is
 * declared once, however many schemas embed it; two different definitions under one name are an
 * error.
 */
import { SonicError } from '../core/errors.js';

type Avro = string | Avro[] | { type: Avro; [k: string]: unknown };

interface Named {
  name: string;
  source: string;
  code: string;
  /** The definition as JSON, to tell a repeated definition from a conflicting one. */
  signature: string;
}

/** A definition as JSON without its namespace (a nested copy inherits the one the top level names). */
function signatureOf(o: Record<string, unknown>): string {
  return JSON.stringify(o, (k, v: unknown) => (k === 'namespace' ? undefined : v));
}

const PRIMITIVE: Record<string, string> = {
  null: 'null',
  boolean: 'boolean',
  int: 'number',
  long: 'number',
  float: 'number',
  double: 'number',
  string: 'string',
  bytes: 'Buffer',
};

/** TSDoc of a field or type, on one or more lines indented by `indent`. */
function tsdoc(doc: unknown, indent: string): string {
  if (typeof doc !== 'string' || doc === '') return '';
  return `${indent}/** ${doc.replace(/\*\//g, '*\u2215')} */\n`;
}

/** Declarations of every named type in `schemas` (file base name → parsed JSON), in a stable order. */
export function avroToTypeScript(schemas: Record<string, unknown>): string {
  const named = new Map<string, Named>();
  const shortName = (name: string): string => name.slice(name.lastIndexOf('.') + 1);

  const typeOf = (t: Avro, source: string): string => {
    if (typeof t === 'string') {
      const p = PRIMITIVE[t];
      if (p) return p;
      const known = named.get(shortName(t));
      if (!known) throw new SonicError('SCHEMA_NOT_FOUND', `${source}: type ${t} is used before it is defined`);
      return known.name;
    }
    if (Array.isArray(t)) return t.map((u) => typeOf(u, source)).join(' | ');
    const o = t as Record<string, unknown> & { type: Avro };
    if (o.logicalType === 'timestamp-millis' && o.type === 'long') return 'Date';
    switch (o.type) {
      case 'record': {
        const name = shortName(String(o.name));
        const signature = signatureOf(o);
        const fields = (o.fields as { name: string; type: Avro; doc?: string }[]) ?? [];
        const existing = named.get(name);
        if (existing) {
          if (existing.signature !== signature)
            throw new SonicError('SCHEMA_INCOMPATIBLE', `${source} defines record ${name} differently from ${existing.source}`);
          return name;
        }
        // registered before its fields, so that a field may refer to it
        const entry: Named = { name, source, code: '', signature };
        named.set(name, entry);
        const body = fields.map((f) => `${tsdoc(f.doc, '  ')}  ${f.name}: ${typeOf(f.type, source)};`).join('\n');
        entry.code = `${tsdoc(o.doc, '')}export interface ${name} {\n${body}\n}\n`;
        return name;
      }
      case 'enum': {
        const name = shortName(String(o.name));
        const signature = signatureOf(o);
        const existing = named.get(name);
        if (existing && existing.signature !== signature)
          throw new SonicError('SCHEMA_INCOMPATIBLE', `${source} defines enum ${name} differently from ${existing.source}`);
        if (!existing) {
          const symbols = (o.symbols as string[]).map((s) => `'${s}'`).join(' | ');
          named.set(name, { name, source, signature, code: `${tsdoc(o.doc, '')}export type ${name} = ${symbols};\n` });
        }
        return name;
      }
      case 'fixed':
        return 'Buffer';
      case 'array':
        return `${wrap(typeOf(o.items as Avro, source))}[]`;
      case 'map':
        return `Record<string, ${typeOf(o.values as Avro, source)}>`;
      default:
        // a primitive with attributes, e.g. {"type": "string", "logicalType": "uuid"}
        return typeOf(o.type, source);
    }
  };

  const roots = Object.keys(schemas)
    .sort()
    .map((name) => [name, typeOf(schemas[name] as Avro, name)] as const);
  // schema name → value type, so that typed topic references (src/runtime/stage.ts topicRefs)
  // give each topic the type of its schema
  const map = `/** Each schema of schemas/ by file base name, and the type of its values. */\nexport interface Schemas {\n${roots.map(([n, t]) => `  '${n}': ${t};`).join('\n')}\n}\n`;
  const header = [
    '// Generated from schemas/*.avsc by `npm run gen:types`; do not edit.',
    '// A unit test fails when this file and the schemas disagree.',
    '',
  ].join('\n');
  return `${header}\n${[...named.values()].map((n) => n.code).join('\n')}\n${map}`;
}

function wrap(t: string): string {
  return t.includes('|') ? `(${t})` : t;
}
