import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { SchemaCatalog } from '../../src/serde/catalog.js';
import { RegistryAdmin } from '../../src/serde/registry-admin.js';
import { Serde } from '../../src/serde/serde.js';
import { onCleanup, testContext, uniqueName } from '../helpers/infra.js';

/** A catalog of throw-away schemas in a temp dir: v1, a compatible v2 and an incompatible v3. */
function evolvingCatalog(): SchemaCatalog {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-schemas-'));
  const record = (fields: object[]) => JSON.stringify({ type: 'record', name: 'Evolving', namespace: 'test', fields });
  writeFileSync(join(dir, 'v1.avsc'), record([{ name: 'id', type: 'string' }]));
  writeFileSync(
    join(dir, 'v2-optional.avsc'),
    record([
      { name: 'id', type: 'string' },
      { name: 'note', type: ['null', 'string'], default: null },
    ]),
  );
  writeFileSync(
    join(dir, 'v3-required.avsc'),
    record([
      { name: 'id', type: 'string' },
      { name: 'priority', type: 'int' },
    ]),
  );
  return new SchemaCatalog(dir);
}

describe('schema registry compatibility (real Apicurio registry)', () => {
  const ctx = testContext();

  it('refuses an incompatible change under BACKWARD with SCHEMA_INCOMPATIBLE naming the subject and field', async () => {
    const serde = new Serde(evolvingCatalog(), { url: ctx.config.schemaRegistryUrl });
    const admin = new RegistryAdmin(serde);
    const subject = `${uniqueName('compat')}-value`;
    onCleanup(() => admin.deleteSubject(subject));

    const id1 = await admin.register(subject, 'v1', 'BACKWARD');
    expect(await admin.compatibility(subject)).toBe('BACKWARD');
    // registering the same schema again is idempotent
    expect(await admin.register(subject, 'v1', 'BACKWARD')).toBe(id1);
    // an added optional field is accepted
    const id2 = await admin.register(subject, 'v2-optional', 'BACKWARD');
    expect(id2).not.toBe(id1);

    // a new required field cannot read old records: refused by the registry itself
    const refused = admin.register(subject, 'v3-required', 'BACKWARD');
    await expect(refused).rejects.toBeInstanceOf(SonicError);
    await expect(refused).rejects.toMatchObject({ code: 'SCHEMA_INCOMPATIBLE', retryable: false, message: expect.stringContaining(subject) });
    await expect(refused).rejects.toThrow('priority');
    expect(await admin.versions(subject)).toHaveLength(2);

    // the local check agrees and explains the rule
    const verdict = await admin.check(subject, 'v3-required', 'BACKWARD');
    expect(verdict).toMatchObject({ registered: false, compatible: false });
    expect(verdict.reason).toContain('field priority');
    expect(verdict.reason).toContain('BACKWARD');
  });

  it('the same change passes under NONE, which proves the refusal came from the compatibility rule', async () => {
    const serde = new Serde(evolvingCatalog(), { url: ctx.config.schemaRegistryUrl });
    const admin = new RegistryAdmin(serde);
    const subject = `${uniqueName('compat-none')}-value`;
    onCleanup(() => admin.deleteSubject(subject));
    await admin.register(subject, 'v1', 'NONE');
    await expect(admin.register(subject, 'v3-required', 'NONE')).resolves.toBeGreaterThan(0);
  });
});
