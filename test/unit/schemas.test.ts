import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SchemaCatalog } from '../../src/serde/catalog.js';
import { checkCompatibility } from '../../src/serde/compat.js';
import { avroType } from '../../src/serde/logical-types.js';
import { sonicTopology } from '../../topologies/sonic.js';

const catalog = new SchemaCatalog();
const request = {
  task_id: '5b0e3f35-2a4b-4f0e-9b1a-0f3a4f6a7c11',
  tenant_id: 'acme',
  created_at: new Date('2026-11-29T08:00:00Z'),
  image: { uri: 'blob://tasks/x/input/image', content_type: 'image/png', size_bytes: 1000, sha256: 'ab' },
  audio: { uri: 'blob://tasks/x/input/audio', content_type: 'audio/wav', size_bytes: 2000, sha256: 'cd' },
  params: {},
};

describe('Avro schemas', () => {
  it('has a parsable schema for every topic value the topology names', () => {
    for (const topic of Object.values(sonicTopology().topics)) {
      // a store's changelog is the stage's own (JSON values, read back only by that stage), like a Kafka Streams internal topic
      if (topic.role === 'changelog') {
        expect(topic.valueSchema, topic.name).toBeUndefined();
        expect(topic.configs['cleanup.policy'], topic.name).toMatch(/^compact(,delete)?$/);
        continue;
      }
      expect(topic.valueSchema, topic.name).toBeDefined();
      expect(() => catalog.type(topic.valueSchema!)).not.toThrow();
    }
  });

  it('decodes timestamp-millis as a Date and uuid as a string, not bare longs', () => {
    const t = catalog.type('task-request');
    const decoded = t.fromBuffer(t.toBuffer(t.clone(request, { wrapUnions: false }))) as Record<string, unknown>;
    expect(decoded.created_at).toBeInstanceOf(Date);
    expect((decoded.created_at as Date).toISOString()).toBe('2026-11-29T08:00:00.000Z');
    expect(decoded.task_id).toBe(request.task_id);
    expect(() => t.toBuffer({ ...t.clone(request), task_id: 'not-a-uuid' })).toThrow();
  });

  it('fills the Sonic parameter defaults: 512 px, expand 0.5, 25 steps, dynamic 1.0, motion 1.0, 25 fps', () => {
    const t = catalog.type('task-request');
    const v = t.clone(request) as { params: Record<string, unknown>; max_duration_s: number };
    expect(v.params).toMatchObject({ min_resolution: 512, expand_ratio: 0.5, inference_steps: 25, dynamic_scale: 1, motion_scale: 1, fps: 25, seed: null });
    expect(v.max_duration_s).toBe(60);
  });

  it('carries the same TaskRequest in every stage record, so the copies cannot drift', () => {
    const top = JSON.parse(readFileSync(catalog.path('task-request'), 'utf8')) as Record<string, unknown>;
    delete top.namespace;
    for (const name of ['task-validated', 'task-prepared', 'task-rendered', 'task-encoded', 'task-completed']) {
      const schema = catalog.raw(name) as unknown as { fields: { name: string; type: unknown }[] };
      expect(schema.fields.find((f) => f.name === 'request')?.type, name).toEqual(top);
    }
  });

  it('lists the status states in order: QUEUED through SUCCEEDED | FAILED', () => {
    const raw = catalog.raw('task-status') as unknown as { fields: { name: string; type: { symbols?: string[] } }[] };
    expect(raw.fields.find((f) => f.name === 'state')?.type.symbols).toEqual([
      'QUEUED',
      'VALIDATING',
      'PREPROCESSING',
      'INFERRING',
      'ENCODING',
      'PUBLISHING',
      'SUCCEEDED',
      'FAILED',
    ]);
  });
});

describe('local compatibility check', () => {
  const v1 = avroType({
    type: 'record',
    name: 'R',
    fields: [
      { name: 'a', type: 'string' },
      { name: 'b', type: 'int' },
    ],
  });
  const addedOptional = avroType({
    type: 'record',
    name: 'R',
    fields: [
      { name: 'a', type: 'string' },
      { name: 'b', type: 'int' },
      { name: 'c', type: ['null', 'string'], default: null },
    ],
  });
  const addedRequired = avroType({
    type: 'record',
    name: 'R',
    fields: [
      { name: 'a', type: 'string' },
      { name: 'b', type: 'int' },
      { name: 'c', type: 'string' },
    ],
  });
  const removedB = avroType({ type: 'record', name: 'R', fields: [{ name: 'a', type: 'string' }] });
  const retypedA = avroType({
    type: 'record',
    name: 'R',
    fields: [
      { name: 'a', type: 'int' },
      { name: 'b', type: 'int' },
    ],
  });

  it('accepts an added optional field under BACKWARD, FORWARD and FULL', () => {
    for (const level of ['BACKWARD', 'FORWARD', 'FULL'] as const) expect(checkCompatibility(addedOptional, [v1], level).compatible).toBe(true);
  });

  it('refuses an added required field under BACKWARD, naming the field and the rule', () => {
    const v = checkCompatibility(addedRequired, [v1], 'BACKWARD');
    expect(v.compatible).toBe(false);
    expect(v.problems[0]).toContain('field c is missing from the writer schema and has no default');
    expect(v.problems[0]).toContain('breaks BACKWARD');
  });

  it('refuses a removed required field under FORWARD (old readers need it), and allows it under BACKWARD', () => {
    expect(checkCompatibility(removedB, [v1], 'BACKWARD').compatible).toBe(true);
    const v = checkCompatibility(removedB, [v1], 'FORWARD');
    expect(v.compatible).toBe(false);
    expect(v.problems[0]).toContain('field b');
  });

  it('refuses a changed field type, naming both types', () => {
    const v = checkCompatibility(retypedA, [v1], 'BACKWARD');
    expect(v.problems).toEqual(['field a changed type: string cannot be read as int — breaks BACKWARD: the new schema cannot read existing data']);
  });

  it('checks every version under a _TRANSITIVE level, only the latest otherwise', () => {
    expect(checkCompatibility(addedRequired, [addedRequired, v1, addedOptional].slice(1), 'BACKWARD').compatible).toBe(false);
    expect(checkCompatibility(removedB, [v1, removedB], 'FORWARD').compatible).toBe(true);
    expect(checkCompatibility(removedB, [v1, removedB], 'FORWARD_TRANSITIVE').compatible).toBe(false);
  });
});

describe('the face fields (issue 17)', () => {
  /** The schema as it was before face detection: the same file without the new fields. */
  const without = (name: string, fields: string[]): ReturnType<typeof avroType> => {
    const raw = structuredClone(catalog.raw(name)) as { fields: { name: string }[] };
    raw.fields = raw.fields.filter((f) => !fields.includes(f.name));
    return avroType(raw as never);
  };

  it('adds face and landmarks to task-prepared and face to task-status as optional fields, compatible under their levels', () => {
    expect(checkCompatibility(catalog.type('task-prepared'), [without('task-prepared', ['face', 'landmarks'])], 'BACKWARD')).toEqual({
      compatible: true,
      problems: [],
    });
    expect(checkCompatibility(catalog.type('task-status'), [without('task-status', ['face'])], 'FULL')).toEqual({ compatible: true, problems: [] });
  });

  it('reads a tasks.prepared record written before face detection with face and landmarks null', () => {
    const old = without('task-prepared', ['face', 'landmarks']);
    const media = { uri: 'blob://x', content_type: null, size_bytes: null, sha256: null };
    const value = {
      task_id: request.task_id,
      request: catalog.type('task-request').clone(request, { wrapUnions: false }),
      audio_16k: media,
      audio_original: media,
      image_png: media,
      audio_duration_s: 2,
      width: 512,
      height: 512,
      prepared_at: new Date(),
    };
    const bytes = old.toBuffer(value);
    const resolver = catalog.type('task-prepared').createResolver(old);
    const read = catalog.type('task-prepared').fromBuffer(bytes, resolver) as { face: unknown; landmarks: unknown; width: number };
    expect(read).toMatchObject({ face: null, landmarks: null, width: 512 });
  });
});
