import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { avroToTypeScript } from '../../src/serde/typescript.js';
import { GENERATED, generate } from '../../scripts/gen-record-types.js';

describe('record types generated from the schemas', () => {
  it('src/domain/records.gen.ts is what the schemas generate (run `npm run gen:types` after a schema change)', () => {
    expect(readFileSync(GENERATED, 'utf8')).toBe(generate());
  });

  it('maps Avro to TypeScript: logical types, unions, enums, arrays, maps, nested and shared records', () => {
    const ts = avroToTypeScript({
      a: {
        type: 'record',
        name: 'A',
        namespace: 'x.v1',
        doc: 'An A.',
        fields: [
          { name: 'id', type: { type: 'string', logicalType: 'uuid' } },
          { name: 'at', type: { type: 'long', logicalType: 'timestamp-millis' }, doc: 'When.' },
          { name: 'maybe', type: ['null', { type: 'long', logicalType: 'timestamp-millis' }] },
          { name: 'kind', type: { type: 'enum', name: 'Kind', symbols: ['X', 'Y'] } },
          { name: 'tags', type: { type: 'array', items: ['null', 'string'] } },
          { name: 'meta', type: { type: 'map', values: 'int' } },
          { name: 'raw', type: 'bytes' },
          { name: 'child', type: { type: 'record', name: 'B', fields: [{ name: 'n', type: 'double' }] } },
          { name: 'again', type: 'B' },
        ],
      },
      b: { type: 'record', name: 'B', namespace: 'x.v1', fields: [{ name: 'n', type: 'double' }] },
    });
    expect(ts).toContain('/** An A. */\nexport interface A {');
    expect(ts).toContain('  id: string;');
    expect(ts).toContain('  /** When. */\n  at: Date;');
    expect(ts).toContain('  maybe: null | Date;');
    expect(ts).toContain("export type Kind = 'X' | 'Y';");
    expect(ts).toContain('  tags: (null | string)[];');
    expect(ts).toContain('  meta: Record<string, number>;');
    expect(ts).toContain('  raw: Buffer;');
    expect(ts).toContain('  again: B;');
    expect(ts.match(/export interface B \{/g)).toHaveLength(1);
  });

  it('refuses one name defined two ways, and a type used before its definition', () => {
    const b1 = { type: 'record', name: 'B', fields: [{ name: 'n', type: 'int' }] };
    const b2 = { type: 'record', name: 'B', fields: [{ name: 'n', type: 'string' }] };
    expect(() => avroToTypeScript({ one: b1, two: b2 })).toThrow(/defines record B differently/);
    expect(() => avroToTypeScript({ one: { type: 'record', name: 'A', fields: [{ name: 'c', type: 'C' }] } })).toThrow(/type C is used before it is defined/);
  });
});
