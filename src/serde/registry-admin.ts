/**
 * Subject administration on a Confluent-compatible registry: compatibility per subject, schema
 * registration and listing. Compatibility is always set explicitly, because Apicurio answers
 * NONE for a subject without a rule where Confluent would inherit the global level.
 */
import { SchemaType } from '@kafkajs/confluent-schema-registry';
import { SonicError } from '../core/errors.js';
import type avro from 'avsc';
import { checkCompatibility, type CompatibilityLevel } from './compat.js';

export type { CompatibilityLevel } from './compat.js';
import { avroType } from './logical-types.js';
import { registryError, type Serde } from './serde.js';

const CONTENT_TYPE = 'application/vnd.schemaregistry.v1+json';

export class RegistryAdmin {
  constructor(private readonly serde: Serde) {}

  private async call(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    let res: Response;
    try {
      res = await fetch(`${this.serde.url}${path}`, {
        method,
        headers: { 'content-type': CONTENT_TYPE, accept: CONTENT_TYPE, ...this.serde.authHeaders },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      throw new SonicError('REGISTRY_UNAVAILABLE', `schema registry at ${this.serde.url} is unreachable: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    let json: unknown = text;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // keep the text
    }
    return { status: res.status, json };
  }

  /** All subjects. */
  async subjects(): Promise<string[]> {
    const { status, json } = await this.call('GET', '/subjects');
    if (status !== 200) throw new SonicError('REGISTRY_UNAVAILABLE', `GET /subjects answered ${status}`);
    return (json as string[]).sort();
  }

  /** Registered versions of a subject, empty when the subject does not exist. */
  async versions(subject: string): Promise<number[]> {
    const { status, json } = await this.call('GET', `/subjects/${encodeURIComponent(subject)}/versions`);
    if (status === 404) return [];
    if (status !== 200) throw new SonicError('REGISTRY_UNAVAILABLE', `GET versions of ${subject} answered ${status}`);
    return json as number[];
  }

  /** The subject's own compatibility level, or undefined when none is set. */
  async compatibility(subject: string): Promise<CompatibilityLevel | undefined> {
    const { status, json } = await this.call('GET', `/config/${encodeURIComponent(subject)}`);
    if (status === 404) return undefined;
    if (status !== 200) throw new SonicError('REGISTRY_UNAVAILABLE', `GET /config/${subject} answered ${status}`);
    return (json as { compatibilityLevel?: CompatibilityLevel }).compatibilityLevel;
  }

  /** Sets the subject's compatibility level. */
  async setCompatibility(subject: string, level: CompatibilityLevel): Promise<void> {
    const { status, json } = await this.call('PUT', `/config/${encodeURIComponent(subject)}`, { compatibility: level });
    if (status !== 200) {
      throw new SonicError('REGISTRY_UNAVAILABLE', `setting ${level} on subject ${subject} failed (${status}): ${JSON.stringify(json)}`, {
        details: { subject },
      });
    }
  }

  /**
   * Registers the local schema `schemaName` under `subject` with its compatibility `level` set,
   * so that the registry checks the new version under that rule. Returns the schema id; re-registering the
   * same schema returns the existing id. Throws `SCHEMA_INCOMPATIBLE` naming the subject (and,
   * from the registry's answer, the field) when the registry refuses it.
   */
  async register(subject: string, schemaName: string, level: CompatibilityLevel): Promise<number> {
    // An existing subject gets its level before the new version is checked. A new one has no
    // version to be checked against; the client sets its level right after the first version
    // (Apicurio cannot hold a level for a subject that does not exist yet).
    if ((await this.versions(subject)).length > 0) await this.setCompatibility(subject, level);
    try {
      const { id } = await this.serde.registry.register(
        { type: SchemaType.AVRO, schema: JSON.stringify(this.serde.catalog.raw(schemaName)) },
        { subject, compatibility: level as never },
      );
      return id;
    } catch (err) {
      throw registryError(err, subject, `registering ${schemaName} under ${subject} failed`);
    }
  }

  /** The schema of every registered version of a subject, oldest first. */
  async history(subject: string): Promise<avro.Type[]> {
    const out: avro.Type[] = [];
    for (const v of await this.versions(subject)) {
      const { status, json } = await this.call('GET', `/subjects/${encodeURIComponent(subject)}/versions/${v}`);
      if (status !== 200) throw new SonicError('REGISTRY_UNAVAILABLE', `GET ${subject} version ${v} answered ${status}`);
      out.push(avroType(JSON.parse((json as { schema: string }).schema) as avro.Schema));
    }
    return out;
  }

  /**
   * Whether the local schema is already registered under `subject`, and whether it is compatible
   * with the registered versions under `level` (checked locally, so the answer holds for the
   * level the topology asks for even before it is set, and names the offending fields).
   */
  async check(subject: string, schemaName: string, level: CompatibilityLevel): Promise<{ registered: boolean; compatible: boolean; reason: string }> {
    const raw = this.serde.catalog.raw(schemaName);
    const { status } = await this.call('POST', `/subjects/${encodeURIComponent(subject)}`, { schema: JSON.stringify(raw) });
    const registered = status === 200;
    const verdict = checkCompatibility(this.serde.catalog.type(schemaName), await this.history(subject), level);
    return { registered, compatible: verdict.compatible, reason: verdict.problems.join('; ') };
  }

  /** Deletes a subject (soft, then permanent). For tests and `clean` operations. */
  async deleteSubject(subject: string): Promise<void> {
    await this.call('DELETE', `/subjects/${encodeURIComponent(subject)}`);
    await this.call('DELETE', `/subjects/${encodeURIComponent(subject)}?permanent=true`);
  }
}
