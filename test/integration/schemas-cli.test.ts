import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onCleanup, sonicflow, testContext, uniqueName } from '../helpers/infra.js';

/** A one-topic topology whose subject uses `level`, and schema dirs holding `thing.avsc` variants. */
function fixture(level: string) {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-schemas-'));
  const prefix = uniqueName('gov').replace(/-/g, '_');
  const topology = {
    name: 'gov',
    prefix,
    status: 'things',
    topics: {
      things: {
        role: 'status',
        valueSchema: 'thing',
        compatibility: level,
        configs: { 'cleanup.policy': 'compact' },
        external: { producers: ['t'], consumers: ['t'] },
        doc: 'things',
      },
    },
    stages: {},
  };
  writeFileSync(join(dir, 'topology.json'), JSON.stringify(topology));
  const variant = (name: string, fields: object[]): string => {
    const d = join(dir, name);
    mkdirSync(d);
    writeFileSync(join(d, 'thing.avsc'), JSON.stringify({ type: 'record', name: 'Thing', namespace: 'gov', fields }));
    return d;
  };
  const id = { name: 'id', type: 'string' };
  const size = { name: 'size', type: 'int' };
  const dirs = {
    v1: variant('v1', [id, size]),
    addedOptional: variant('added-optional', [id, size, { name: 'note', type: ['null', 'string'], default: null }]),
    addedRequired: variant('added-required', [id, size, { name: 'owner', type: 'string' }]),
    removedRequired: variant('removed-required', [id]),
  };
  const subject = `${prefix}.things-value`;
  onCleanup(() => testContext().registryAdmin.deleteSubject(subject));
  const run = (cmd: string, schemas: string) => sonicflow(['schemas', cmd, '--schemas', schemas, '--file', join(dir, 'topology.json')]);
  return { dirs, subject, run };
}

describe('schema governance: schemas check | diff | register (real registry)', () => {
  it('register, then check passes an added optional field and fails an added required field under BACKWARD, naming field and rule', () => {
    const f = fixture('BACKWARD');
    const first = f.run('check', f.dirs.v1);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`${f.subject} (thing, BACKWARD): new subject`);
    const reg = f.run('register', f.dirs.v1);
    expect(reg.code, reg.stderr).toBe(0);
    expect(reg.stdout).toMatch(new RegExp(`registered ${f.subject} as schema id \\d+`));
    expect(f.run('check', f.dirs.v1).stdout).toContain('unchanged');

    const ok = f.run('check', f.dirs.addedOptional);
    expect(ok.code, ok.stdout).toBe(0);
    expect(ok.stdout).toContain('compatible change');

    const bad = f.run('check', f.dirs.addedRequired);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(`! ${f.subject} (thing, BACKWARD): INCOMPATIBLE`);
    expect(bad.stdout).toContain('field owner is missing from the writer schema and has no default');
    expect(bad.stdout).toContain('breaks BACKWARD');
    const refused = f.run('register', f.dirs.addedRequired);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('nothing registered');

    const diff = f.run('diff', f.dirs.addedOptional);
    expect(diff.stdout).toContain('+ note: null | string, default null');
    expect(f.run('diff', f.dirs.removedRequired).stdout).toContain('- size: int, was required');
  }, 120_000);

  it('a removed required field passes BACKWARD (new readers ignore it) and fails FORWARD (old readers need it)', () => {
    const back = fixture('BACKWARD');
    expect(back.run('register', back.dirs.v1).code).toBe(0);
    expect(back.run('check', back.dirs.removedRequired).code).toBe(0);

    const fwd = fixture('FORWARD');
    expect(fwd.run('register', fwd.dirs.v1).code).toBe(0);
    const r = fwd.run('check', fwd.dirs.removedRequired);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('field size');
    expect(r.stdout).toContain('breaks FORWARD');
  }, 120_000);
});
