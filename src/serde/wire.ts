/**
 * Confluent wire format: magic byte 0, 4-byte big-endian schema id, then the Avro body.
 */
import { SonicError } from '../core/errors.js';

export const MAGIC_BYTE = 0;
export const WIRE_HEADER_BYTES = 5;

/** Subject of a topic's value under TopicNameStrategy. */
export function valueSubject(topic: string): string {
  return `${topic}-value`;
}

/** Splits a Confluent-framed buffer; throws `DESERIALIZATION_FAILED` when it is not one. */
export function parseWire(buf: Buffer): { schemaId: number; body: Buffer } {
  if (buf.length < WIRE_HEADER_BYTES) {
    throw new SonicError('DESERIALIZATION_FAILED', `record of ${buf.length} bytes is too short for the Confluent wire format`);
  }
  if (buf[0] !== MAGIC_BYTE) {
    throw new SonicError('DESERIALIZATION_FAILED', `record starts with byte ${buf[0]}, not the Confluent magic byte 0`);
  }
  return { schemaId: buf.readInt32BE(1), body: buf.subarray(WIRE_HEADER_BYTES) };
}

/** Frames an Avro body with its schema id. */
export function frameWire(schemaId: number, body: Buffer): Buffer {
  const header = Buffer.alloc(WIRE_HEADER_BYTES);
  header[0] = MAGIC_BYTE;
  header.writeInt32BE(schemaId, 1);
  return Buffer.concat([header, body]);
}

export interface Decoded<T = unknown> {
  value: T;
  schemaId: number;
}
