/**
 * Avro logical types that avsc does not build in: `timestamp-millis` decodes to a `Date`
 * (not a bare long) and `uuid` to a validated lower-case string. Passed to every
 * `Type.forSchema` call, including the registry client's, so both sides agree.
 */
import avro from 'avsc';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `{"type": "long", "logicalType": "timestamp-millis"}` as a JavaScript Date. */
class TimestampMillisType extends avro.types.LogicalType {
  override _fromValue(val: number): Date {
    return new Date(val);
  }
  override _toValue(date: unknown): number | undefined {
    if (date instanceof Date) return date.getTime();
    // accept epoch millis too, so producers may pass numbers
    return typeof date === 'number' && Number.isFinite(date) ? date : undefined;
  }
  override _resolve(type: avro.Type): ((v: unknown) => unknown) | undefined {
    if (avro.Type.isType(type, 'long', 'int', 'logical:timestamp-millis')) return this._fromValue.bind(this) as (v: unknown) => unknown;
    return undefined;
  }
}

/** `{"type": "string", "logicalType": "uuid"}`: a string that must look like a UUID. */
class UuidType extends avro.types.LogicalType {
  override _fromValue(val: string): string {
    return val;
  }
  override _toValue(val: unknown): string | undefined {
    return typeof val === 'string' && UUID.test(val) ? val.toLowerCase() : undefined;
  }
  override _resolve(type: avro.Type): ((v: unknown) => unknown) | undefined {
    if (avro.Type.isType(type, 'string', 'logical:uuid')) return (v: unknown) => v;
    return undefined;
  }
}

/** The logical type table for avsc's `forSchema` options. */
export const LOGICAL_TYPES = {
  'timestamp-millis': TimestampMillisType,
  uuid: UuidType,
} as const;

/** Parses an Avro schema with sonicflow's logical types. */
export function avroType(schema: avro.Schema): avro.Type {
  return avro.Type.forSchema(schema, { logicalTypes: LOGICAL_TYPES as never });
}
