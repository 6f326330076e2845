/**
 * A small YAML emitter for plain data (objects, arrays, strings, finite numbers, booleans, null),
 * enough for Kubernetes manifests without a YAML dependency. Block style, two-space indents,
 * lists indented under their key like `kubectl` prints them. A string is written plain only when
 * no YAML 1.1 or 1.2 reader can take it for anything else (a number, a boolean such as `yes` or
 * `on`, null, a timestamp, an indicator); every other string is double-quoted with JSON escapes,
 * which YAML's double-quoted style reads identically.
 */

/** Strings that YAML 1.1 (PyYAML, Go yaml.v2) or 1.2 reads as booleans or null. */
const RESERVED = new Set(['true', 'false', 'yes', 'no', 'on', 'off', 'y', 'n', 'null', '~']);
/** Safe plain scalars: start with a letter, `_` or `/`, then letters, digits and `_./:@-`; no `: `, no ` #`. */
const PLAIN = /^[A-Za-z_/][A-Za-z0-9_./:@-]*$/;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function entries(o: Record<string, unknown>): [string, unknown][] {
  return Object.entries(o).filter(([, v]) => v !== undefined);
}

/** A string as a YAML scalar: plain when unambiguous, else double-quoted. */
function yamlString(s: string): string {
  if (PLAIN.test(s) && !s.endsWith(':') && !RESERVED.has(s.toLowerCase())) return s;
  // JSON escapes are valid YAML double-quoted escapes; YAML also wants DEL, C1 controls and BOM escaped.
  return JSON.stringify(s).replace(/[\u007f-\u009f\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function scalar(v: unknown, path: string): string | undefined {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`toYaml: ${path} is ${v}; only finite numbers are supported`);
    if (Object.is(v, -0)) return '0';
    // 1e+21 is a float to YAML 1.2 but a string to YAML 1.1 readers, which want a dot: 1.0e+21
    const text = String(v);
    return /e/.test(text) && !text.includes('.') ? text.replace('e', '.0e') : text;
  }
  if (typeof v === 'string') return yamlString(v);
  if (Array.isArray(v)) return v.length === 0 ? '[]' : undefined;
  if (isPlainObject(v)) return entries(v).length === 0 ? '{}' : undefined;
  throw new TypeError(
    `toYaml: ${path} is a ${v === undefined ? 'undefined' : typeof v === 'object' ? (v.constructor?.name ?? 'object') : typeof v}; only plain objects, arrays, strings, numbers, booleans and null are supported`,
  );
}

function block(v: unknown, indent: number, path: string): string[] {
  const pad = ' '.repeat(indent);
  const lines: string[] = [];
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      const p = `${path}[${i}]`;
      if (item === undefined) throw new TypeError(`toYaml: ${p} is undefined`);
      const s = scalar(item, p);
      if (s !== undefined) {
        lines.push(`${pad}- ${s}`);
        return;
      }
      // the item's first line moves up next to its dash; the rest keeps the deeper indent
      const sub = block(item, indent + 2, p);
      lines.push(`${pad}- ${(sub[0] ?? '').slice(indent + 2)}`, ...sub.slice(1));
    });
    return lines;
  }
  if (!isPlainObject(v)) throw new TypeError(`toYaml: ${path} is not an object or array`);
  for (const [key, value] of entries(v)) {
    const p = `${path}.${key}`;
    const s = scalar(value, p);
    if (s !== undefined) lines.push(`${pad}${yamlString(key)}: ${s}`);
    else lines.push(`${pad}${yamlString(key)}:`, ...block(value, indent + 2, p));
  }
  return lines;
}

/** One YAML document (no `---`), ending with a newline. Object keys whose value is undefined are left out, like JSON. */
export function toYaml(value: unknown): string {
  const s = scalar(value, '$');
  return `${s ?? block(value, 0, '$').join('\n')}\n`;
}

/** Several documents separated by `---` lines. */
export function toYamlDocuments(values: unknown[]): string {
  return values.map(toYaml).join('---\n');
}
