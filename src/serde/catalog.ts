/**
 * The local schema files (`schemas/*.avsc`), the source of truth for every topic value.
 * Parsed once, with sonicflow's logical types.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type avro from 'avsc';
import { SonicError } from '../core/errors.js';
import { avroType } from './logical-types.js';

/** `schemas/` of this package. */
const DEFAULT_SCHEMAS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'schemas');

export class SchemaCatalog {
  private readonly raws = new Map<string, avro.Schema>();
  private readonly types = new Map<string, avro.Type>();

  constructor(readonly dir: string = DEFAULT_SCHEMAS_DIR) {}

  /** Base names of every `.avsc` file in the directory. */
  names(): string[] {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith('.avsc'))
      .map((f) => f.slice(0, -'.avsc'.length))
      .sort();
  }

  has(name: string): boolean {
    return this.raws.has(name) || existsSync(this.path(name));
  }

  path(name: string): string {
    return join(this.dir, `${name}.avsc`);
  }

  /** The schema JSON; throws `SCHEMA_NOT_FOUND` or, for unparsable files, `SCHEMA_INCOMPATIBLE`. */
  raw(name: string): avro.Schema {
    let raw = this.raws.get(name);
    if (!raw) {
      if (!this.has(name)) throw new SonicError('SCHEMA_NOT_FOUND', `schema file ${this.path(name)} does not exist`, { details: { schema: name } });
      try {
        raw = JSON.parse(readFileSync(this.path(name), 'utf8')) as avro.Schema;
      } catch (err) {
        throw new SonicError('SCHEMA_NOT_FOUND', `schema file ${this.path(name)} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
      this.raws.set(name, raw);
    }
    return raw;
  }

  /** The parsed avsc type (logical types applied). */
  type(name: string): avro.Type {
    let t = this.types.get(name);
    if (!t) {
      try {
        t = avroType(this.raw(name));
      } catch (err) {
        if (err instanceof SonicError) throw err;
        throw new SonicError('SCHEMA_NOT_FOUND', `schema ${name} is not a valid Avro schema: ${(err as Error).message}`, { cause: err });
      }
      this.types.set(name, t);
    }
    return t;
  }
}
