import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlainProducer, readTopic } from '../../src/kafka/io.js';
import { RegistryAdmin } from '../../src/serde/registry-admin.js';
import { parseWire, valueSubject } from '../../src/serde/serde.js';
import { createTopics, onCleanup, testContext, uniqueName } from '../helpers/infra.js';

describe('Avro serde through the registry (real broker and registry)', () => {
  const ctx = testContext();
  const topic = uniqueName('serde');
  const subject = valueSubject(topic);
  let schemaId: number;

  beforeAll(async () => {
    await createTopics([{ name: topic }]);
    const admin = new RegistryAdmin(ctx.serde);
    schemaId = await admin.register(subject, 'task-status', 'BACKWARD');
    onCleanup(() => admin.deleteSubject(subject));
  });
  afterAll(async () => undefined);

  it('round-trips a record through a topic, with logical types decoded as Date and uuid string', async () => {
    const taskId = randomUUID();
    const at = new Date('2026-11-29T10:00:00.123Z');
    const value = { task_id: taskId, state: 'INFERRING', stage: 'infer', attempt: 2, progress: 0.5, at };
    const bytes = await ctx.serde.encode(subject, 'task-status', value);
    const producer = await new PlainProducer(ctx.kafka).connect();
    await producer.send(topic, [{ key: taskId, value: bytes }]);
    await producer.close();

    const [rec] = await readTopic(ctx.kafka, topic, { limit: 1, timeoutMs: 20_000 });
    expect(rec?.key).toBe(taskId);
    const decoded = await ctx.serde.decode<Record<string, unknown>>(rec!.value!, 'task-status');
    expect(decoded.schemaId).toBe(schemaId);
    expect(decoded.value.task_id).toBe(taskId);
    expect(decoded.value.at).toBeInstanceOf(Date);
    expect((decoded.value.at as Date).toISOString()).toBe('2026-11-29T10:00:00.123Z');
    expect(decoded.value).toMatchObject({ state: 'INFERRING', stage: 'infer', attempt: 2, progress: 0.5, error_code: null });
  });

  it('writes the Confluent wire format: magic byte 0, the big-endian schema id, then the Avro body', async () => {
    const taskId = randomUUID();
    const bytes = await ctx.serde.encode(subject, 'task-status', { task_id: taskId, state: 'QUEUED', at: new Date(1_000) });
    expect(bytes[0]).toBe(0);
    expect(bytes.readInt32BE(1)).toBe(schemaId);
    // decode the Avro body by hand: string task_id (zig-zag varint length + UTF-8), then enum index
    const body = bytes.subarray(5);
    const len = body[0]! >> 1; // zig-zag of a small positive number
    expect(len).toBe(36);
    expect(body.subarray(1, 1 + len).toString('utf8')).toBe(taskId);
    expect(body[1 + len]! >> 1).toBe(0); // QUEUED is symbol 0
    // and the registry agrees on which schema the id names
    const res = await fetch(`${ctx.config.schemaRegistryUrl}/schemas/ids/${schemaId}`);
    const registered = JSON.parse(((await res.json()) as { schema: string }).schema) as { name: string };
    expect(registered.name).toBe('TaskStatus');
    expect(parseWire(bytes).schemaId).toBe(schemaId);
  });

  it('refuses bytes that are not Confluent-framed or name an unknown schema id, with DESERIALIZATION_FAILED', async () => {
    await expect(ctx.serde.decode(Buffer.from('garbage bytes'))).rejects.toMatchObject({ code: 'DESERIALIZATION_FAILED' });
    const unknown = Buffer.from([0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3]);
    await expect(ctx.serde.decode(unknown)).rejects.toMatchObject({ code: 'DESERIALIZATION_FAILED', message: expect.stringContaining('unknown') });
  });

  it('refuses to encode a value that does not match the schema, naming the field', async () => {
    await expect(ctx.serde.encode(subject, 'task-status', { task_id: 'not-a-uuid', state: 'QUEUED', at: new Date() })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      message: expect.stringContaining('task_id'),
    });
  });
});
