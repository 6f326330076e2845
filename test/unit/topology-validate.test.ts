import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { defineTopology, type StageDecl, type TopologyDecl } from '../../src/runtime/topology.js';
import { RESERVED_STAGE_NAMES } from '../../src/runtime/names.js';
import { assertNoReservedStageNames, assertValidTopology, validateTopology } from '../../src/runtime/validate.js';
import { SchemaCatalog } from '../../src/serde/catalog.js';
import { sonicTopology } from '../../topologies/sonic.js';
import chain from '../fixtures/chain.js';
import { thrown } from '../helpers/errors.js';
import { sonicflow } from '../helpers/infra.js';

/** A small valid declaration that each test breaks in one way. */
function decl(): TopologyDecl & { stages: Record<string, StageDecl> } {
  return {
    name: 'mini',
    prefix: 'mini',
    status: 'status',
    defaults: { partitions: 4 },
    topics: {
      in: { valueSchema: 'task-request', external: { producers: ['api'] }, doc: 'input' },
      out: { valueSchema: 'task-validated', external: { consumers: ['someone'] }, doc: 'output' },
      status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
    },
    stages: {
      first: { doc: 'first', input: 'in', outputs: { result: 'out' }, scaling: { maxReplicas: 4 } },
    },
  };
}
const problemsOf = (d: TopologyDecl): string[] => validateTopology(defineTopology(d)).map((p) => `${p.node}: ${p.message}`);

describe('topology validate', () => {
  it('accepts the built-in Sonic topology, schema files included', () => {
    const catalog = new SchemaCatalog();
    expect(validateTopology(sonicTopology(), (n) => catalog.has(n))).toEqual([]);
  });

  it('accepts the small reference declaration', () => {
    expect(problemsOf(decl())).toEqual([]);
  });

  it('rejects a consumed topic that nothing produces and that is not external, naming the stage and topic', () => {
    const d = decl();
    delete d.topics.in!.external;
    expect(problemsOf(d)).toContain('stage:first: stage first consumes topic mini.in, which no stage produces and which is not declared external');
  });

  it('rejects a topic without a value schema, naming the topic (and the retry and DLQ topics that inherit it)', () => {
    const d = decl();
    delete d.topics.out!.valueSchema;
    expect(problemsOf(d)).toEqual(['topic:mini.out: topic mini.out has no value schema']);
    const d2 = decl();
    delete d2.topics.in!.valueSchema;
    const p = problemsOf(d2);
    expect(p).toContain('topic:mini.in: topic mini.in has no value schema');
    expect(p).toContain('topic:mini.first.retry.1: topic mini.first.retry.1 has no value schema');
    expect(p).toContain('topic:mini.first.dlq: topic mini.first.dlq has no value schema');
  });

  it('rejects a schema name with no file when a schema lookup is given', () => {
    const d = decl();
    d.topics.out!.valueSchema = 'no-such-schema';
    const catalog = new SchemaCatalog();
    const p = validateTopology(defineTopology(d), (n) => catalog.has(n));
    expect(p).toEqual([{ node: 'topic:mini.out', message: 'topic mini.out names schema "no-such-schema", which does not exist' }]);
  });

  it('rejects invalid topic, stage and sink names, naming each', () => {
    const d = decl();
    d.topics['bad topic!'] = { valueSchema: 'task-request', external: { producers: ['x'] }, doc: 'bad' };
    d.stages['Second_Stage'] = { doc: 'bad name', input: 'out', outputs: { 'Bad Sink': 'status' } };
    const p = problemsOf(d);
    expect(p).toContain('topic:mini.bad topic!: invalid topic name "mini.bad topic!": use 1-249 characters of [a-zA-Z0-9._-]');
    expect(p).toContain('stage:Second_Stage: invalid stage name "Second_Stage": use [a-z][a-z0-9-]*');
    expect(p).toContain('stage:Second_Stage: stage Second_Stage has an invalid sink name "Bad Sink": use [a-z][a-z0-9-]*');
  });

  it("refuses a stage named like sonicflow's own principals, groups and ids (api, ops, keda, the views', readers', replays'), naming the reserved word", () => {
    // the chain with its second stage renamed `ops`: its principal would be the operators'
    const c = chain({ prefix: 'c' });
    const asOps = { ...c, stages: c.stages.map((s) => (s.name === 'second' ? { ...s, name: 'ops' } : s)) };
    expect(validateTopology(chain({ prefix: 'c' }))).toEqual([]);
    const problems = validateTopology(asOps);
    expect(problems).toHaveLength(1);
    expect(problems[0]!.node).toBe('stage:ops');
    expect(problems[0]!.message).toMatch(/^stage name "ops" is reserved/);
    const err = thrown(() => assertValidTopology(asOps));
    expect(err.code).toBe('TOPOLOGY_INVALID');
    expect(err.message).toContain('stage:ops: stage name "ops" is reserved');
    expect(thrown(() => assertNoReservedStageNames(asOps)).message).toContain('stage:ops: stage name "ops" is reserved');
    expect(assertNoReservedStageNames(c)).toBe(c);
    for (const name of RESERVED_STAGE_NAMES) {
      const d = decl();
      d.stages = { [name]: d.stages.first! };
      expect(problemsOf(d)).toEqual([expect.stringMatching(new RegExp(`^stage:${name}: stage name "${name}" is reserved`))]);
    }
    // a name that merely contains one is fine
    const d = decl();
    d.stages = { 'ops-audit': d.stages.first! };
    expect(problemsOf(d)).toEqual([]);
  });

  it('rejects a GPU count that is not a whole number >= 0', () => {
    const d = decl();
    d.stages.first!.resources = { requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '1', memory: '1Gi' }, gpus: 1.5 };
    expect(problemsOf(d)).toContain('stage:first: stage first gpus must be a whole number >= 0, got 1.5');
  });

  it('rejects fewer partitions than a stage may have replicas, naming stage, topic and both numbers', () => {
    const d = decl();
    d.stages.first!.scaling = { maxReplicas: 6 };
    expect(problemsOf(d)).toContain('stage:first: stage first may run 6 replicas but its input mini.in has 4 partitions; extra replicas would idle');
  });

  it('rejects a stage whose input or sink topic is not declared', () => {
    const d = decl();
    d.stages.first!.outputs = { result: 'nowhere' };
    d.stages['second'] = { doc: 'x', input: 'missing' };
    const p = problemsOf(d);
    expect(p).toContain('stage:first: stage first writes topic mini.nowhere, which is not declared');
    expect(p).toContain('stage:second: stage second consumes topic mini.missing, which is not declared');
  });

  it('rejects a status topic that is not compacted and retry delays that go down', () => {
    const d = decl();
    d.topics.status!.configs = {};
    d.stages.first!.retry = { delaysMs: [30_000, 5_000] };
    const p = problemsOf(d);
    expect(p).toContain('topic:mini.status: status topic mini.status must set cleanup.policy=compact');
    expect(p).toContain('stage:first: stage first retry delays must be positive and non-decreasing, got [30000, 5000]');
  });

  it("refuses 'balanced' partitioning on a compacted topic and an unknown partitioning; accepts it on a stream", () => {
    const d = decl();
    d.topics.status!.partitioning = 'balanced';
    d.topics.out!.partitioning = 'balanced';
    (d.topics.in as { partitioning?: string }).partitioning = 'random';
    const p = problemsOf(d);
    expect(p).toContain('topic:mini.status: compacted topic mini.status cannot be partitioning "balanced": a task\'s records must share a partition');
    expect(p).toContain('topic:mini.in: topic mini.in has partitioning "random": use "key" or "balanced"');
    expect(p.filter((x) => x.startsWith('topic:mini.out'))).toEqual([]);
  });

  it('assertValidTopology throws TOPOLOGY_INVALID listing every problem', () => {
    const d = decl();
    delete d.topics.out!.valueSchema;
    d.stages.first!.scaling = { maxReplicas: 9 };
    const err = thrown(() => assertValidTopology(defineTopology(d)));
    expect(err).toBeInstanceOf(SonicError);
    expect(err.code).toBe('TOPOLOGY_INVALID');
    expect(err.message).toContain('topic:mini.out');
    expect(err.message).toContain('stage:first');
  });

  it('`sonicflow topology validate --file` exits 1 and names the offending node; 0 for a valid file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-topo-'));
    const bad = decl();
    delete bad.topics.in!.external;
    writeFileSync(join(dir, 'bad.json'), JSON.stringify(bad));
    writeFileSync(join(dir, 'good.json'), JSON.stringify(decl()));
    const r = sonicflow(['topology', 'validate', '--file', join(dir, 'bad.json')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('stage:first: stage first consumes topic mini.in, which no stage produces');
    const ok = sonicflow(['topology', 'validate', '--file', join(dir, 'good.json')]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('topology mini is valid: 1 stages');
  });
});
