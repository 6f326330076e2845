/**
 * What the runtime needs from a serde: encode a value for a subject with a local schema, decode
 * framed bytes. `Serde` implements it against a real registry; `MemorySerde` in process, with
 * the same catalog and wire format, for the topology test driver.
 */
import { SonicError } from '../core/errors.js';
import type { SchemaCatalog } from './catalog.js';
import type avro from 'avsc';
import { frameWire, parseWire, type Decoded } from './wire.js';

export interface Codec {
  encode(subject: string, schemaName: string, value: unknown): Promise<Buffer>;
  decode<T = unknown>(buf: Buffer, readerSchema?: string): Promise<Decoded<T>>;
}

/** An in-memory registry: ids assigned per (subject, schema), same wire format as the real one. */
export class MemorySerde implements Codec {
  private readonly ids = new Map<string, number>();
  private readonly byId = new Map<number, avro.Type>();

  constructor(readonly catalog: SchemaCatalog) {}

  async encode(subject: string, schemaName: string, value: unknown): Promise<Buffer> {
    const type = this.catalog.type(schemaName);
    const key = `${subject}\u0000${schemaName}`;
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.ids.size + 1;
      this.ids.set(key, id);
      this.byId.set(id, type);
    }
    try {
      return frameWire(id, type.toBuffer(value));
    } catch (err) {
      throw new SonicError('INVALID_REQUEST', `value does not match schema ${schemaName}: ${(err as Error).message}`, { cause: err });
    }
  }

  async decode<T = unknown>(buf: Buffer, readerSchema?: string): Promise<Decoded<T>> {
    const { schemaId, body } = parseWire(buf);
    const writer = this.byId.get(schemaId);
    if (!writer) throw new SonicError('DESERIALIZATION_FAILED', `schema id ${schemaId} is unknown to the registry`);
    try {
      if (!readerSchema) return { value: writer.fromBuffer(body) as T, schemaId };
      const reader = this.catalog.type(readerSchema);
      const value = reader.equals(writer) ? reader.fromBuffer(body) : reader.fromBuffer(body, reader.createResolver(writer));
      return { value: value as T, schemaId };
    } catch (err) {
      throw new SonicError('DESERIALIZATION_FAILED', `record with schema id ${schemaId} does not decode: ${(err as Error).message}`, { cause: err });
    }
  }
}
