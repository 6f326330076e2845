/**
 * Confluent wire format over Avro: magic byte 0, 4-byte big-endian schema id, Avro body.
 * The registry (Apicurio through its Confluent-compatible API, or Confluent's) is reached with
 * @kafkajs/confluent-schema-registry; encoding and decoding use our own cached avsc types so
 * that logical types and reader-schema resolution are applied once per schema, not per record.
 */
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type avro from 'avsc';
import { SonicError } from '../core/errors.js';
import { LOGICAL_TYPES } from './logical-types.js';
import type { SchemaCatalog } from './catalog.js';
import type { Codec } from './codec.js';
import { frameWire, parseWire, type Decoded } from './wire.js';

export { MAGIC_BYTE, WIRE_HEADER_BYTES, frameWire, parseWire, valueSubject, type Decoded } from './wire.js';

export interface RegistryOptions {
  url: string;
  /** Basic auth for the registry, when it needs one. */
  auth?: { username: string; password: string };
}

/** Lists the Avro paths where `value` does not match `type`, for a readable error. */
function invalidPaths(type: avro.Type, value: unknown): string[] {
  const paths: string[] = [];
  type.isValid(value, {
    errorHook: (path: string[], v: unknown, t: avro.Type) => {
      paths.push(`${path.join('.') || '(root)'}: ${JSON.stringify(v) ?? 'undefined'} is not a valid ${t.typeName}`);
    },
  });
  return paths;
}

/**
 * Encodes and decodes topic values through the registry. Writers encode with the local schema of
 * the topic (its id looked up by content, so a producer never writes with a schema it was not built
 * for); readers decode any registered writer schema into the local reader schema.
 */
export class Serde implements Codec {
  readonly registry: SchemaRegistry;
  private readonly writerIds = new Map<string, Promise<number>>();
  private readonly writerTypes = new Map<number, Promise<avro.Type>>();
  private readonly resolvers = new Map<string, avro.Resolver | null>();

  constructor(
    readonly catalog: SchemaCatalog,
    private readonly options: RegistryOptions,
  ) {
    this.registry = new SchemaRegistry(
      { host: options.url, ...(options.auth ? { auth: options.auth } : {}), retry: { retries: 2 } },
      { [SchemaType.AVRO]: { logicalTypes: LOGICAL_TYPES as never } },
    );
  }

  /** Id of the local schema `schemaName` under `subject`; throws `SCHEMA_NOT_FOUND` when not registered. */
  async writerId(subject: string, schemaName: string): Promise<number> {
    const key = `${subject}\u0000${schemaName}`;
    let id = this.writerIds.get(key);
    if (!id) {
      id = this.registry
        .getRegistryIdBySchema(subject, { type: SchemaType.AVRO, schema: JSON.stringify(this.catalog.raw(schemaName)) })
        .catch((err: unknown) => {
          this.writerIds.delete(key);
          throw registryError(err, subject, `schema ${schemaName} is not registered under ${subject}; run \`sonicflow topology deploy\``);
        });
      this.writerIds.set(key, id);
    }
    return id;
  }

  /** Encodes `value` with the local schema `schemaName`, registered under `subject`. */
  async encode(subject: string, schemaName: string, value: unknown): Promise<Buffer> {
    const type = this.catalog.type(schemaName);
    const id = await this.writerId(subject, schemaName);
    let body: Buffer;
    try {
      body = type.toBuffer(value);
    } catch (err) {
      throw new SonicError('INVALID_REQUEST', `value does not match schema ${schemaName}: ${invalidPaths(type, value).join('; ') || String(err)}`, {
        cause: err,
        details: { subject, schema: schemaName },
      });
    }
    return frameWire(id, body);
  }

  /**
   * Decodes a framed buffer. With `readerSchema`, the writer's schema is resolved into it (Avro
   * schema evolution); otherwise the writer's schema is used as is.
   * Throws `DESERIALIZATION_FAILED` for bytes that are not a known schema's encoding.
   */
  async decode<T = unknown>(buf: Buffer, readerSchema?: string): Promise<Decoded<T>> {
    const { schemaId, body } = parseWire(buf);
    const writer = await this.writerType(schemaId);
    try {
      if (!readerSchema) return { value: writer.fromBuffer(body) as T, schemaId };
      const reader = this.catalog.type(readerSchema);
      const key = `${schemaId}\u0000${readerSchema}`;
      let resolver = this.resolvers.get(key);
      if (resolver === undefined) {
        resolver = reader.equals(writer) ? null : reader.createResolver(writer);
        this.resolvers.set(key, resolver);
      }
      return { value: (resolver ? reader.fromBuffer(body, resolver) : reader.fromBuffer(body)) as T, schemaId };
    } catch (err) {
      throw new SonicError(
        'DESERIALIZATION_FAILED',
        `record with schema id ${schemaId} does not decode${readerSchema ? ` as ${readerSchema}` : ''}: ${(err as Error).message}`,
        {
          cause: err,
          details: { schemaId },
        },
      );
    }
  }

  private writerType(id: number): Promise<avro.Type> {
    let t = this.writerTypes.get(id);
    if (!t) {
      t = this.registry.getSchema(id).then(
        // the client parsed it with our logical types (constructor options)
        (schema) => schema as unknown as avro.Type,
        (err: unknown) => {
          this.writerTypes.delete(id);
          const status = (err as { status?: number }).status;
          if (status === 404) {
            throw new SonicError('DESERIALIZATION_FAILED', `schema id ${id} is unknown to the registry`, { cause: err, details: { schemaId: id } });
          }
          throw registryError(err, undefined, `registry lookup of schema id ${id} failed`);
        },
      );
      this.writerTypes.set(id, t);
    }
    return t;
  }

  /** Headers for direct registry calls (basic auth when configured). */
  get authHeaders(): Record<string, string> {
    const a = this.options.auth;
    return a ? { authorization: `Basic ${Buffer.from(`${a.username}:${a.password}`).toString('base64')}` } : {};
  }

  /** The registry base URL this serde talks to. */
  get url(): string {
    return this.options.url;
  }
}

/** Maps a registry client failure to a SonicError that names the subject. */
export function registryError(err: unknown, subject: string | undefined, context: string): SonicError {
  const status = (err as { status?: number }).status;
  const message = (err as Error).message ?? String(err);
  const where = subject ? ` (subject ${subject})` : '';
  if (status === 409) {
    return new SonicError('SCHEMA_INCOMPATIBLE', `the registry refused the schema for subject ${subject ?? '?'}: ${message}`, {
      cause: err,
      details: { subject },
    });
  }
  if (status === 404) return new SonicError('SCHEMA_NOT_FOUND', `${context}${where}: ${message}`, { cause: err, details: { subject } });
  if (status === undefined || status >= 500) {
    return new SonicError('REGISTRY_UNAVAILABLE', `${context}${where}: ${message}`, { cause: err, details: { subject } });
  }
  return new SonicError('INTERNAL', `${context}${where}: ${message}`, { cause: err, details: { subject } });
}
