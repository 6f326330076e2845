/**
 * `npm run gen:types`: writes src/domain/records.gen.ts, the TypeScript declarations of every
 * record in schemas/*.avsc (see src/serde/typescript.ts). Run it after changing a schema; tsc
 * then shows every stage the change breaks.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SchemaCatalog } from '../src/serde/catalog.js';
import { avroToTypeScript } from '../src/serde/typescript.js';

export const GENERATED = join(import.meta.dirname, '..', 'src', 'domain', 'records.gen.ts');

/** The generated source for the schemas in `catalog`. */
export function generate(catalog = new SchemaCatalog()): string {
  return avroToTypeScript(Object.fromEntries(catalog.names().map((n) => [n, catalog.raw(n)])));
}

if (import.meta.filename === process.argv[1]) {
  writeFileSync(GENERATED, generate());
  console.log(`wrote ${GENERATED}`);
}
