/**
 * ACLs derived from the built-in Sonic topology: each principal gets what its code does on the
 * broker and nothing of another's; the deploy plan creates what is missing and reports extras.
 */
import { describe, expect, it } from 'vitest';
import type { AclAdmin, AclBinding } from '../../src/kafka/acls.js';
import { aclPlanIsEmpty, formatAclPlan, planAcls } from '../../src/ops/acls.js';
import { deriveAcls, notAuthorized, type PrincipalAcls } from '../../src/runtime/acls.js';
import { transactionalId } from '../../src/runtime/names.js';
import type { Topology } from '../../src/runtime/topology.js';
import { sonicTopology } from '../../topologies/sonic.js';
import chain from '../fixtures/chain.js';

const t = sonicTopology();
const all = deriveAcls(t, { clientId: 'sonicflow' });
const of = (name: string): PrincipalAcls => all.find((p) => p.name === name)!;
const ops = (p: PrincipalAcls, type: string, name: string): string[] =>
  p.bindings.filter((b) => b.resourceType === type && b.name === name).map((b) => b.operation);
/** Whether a PREFIXED or LITERAL binding of `p` covers `name` for `operation`. */
const allows = (p: PrincipalAcls, type: string, name: string, operation: string): boolean =>
  p.bindings.some((b) => b.resourceType === type && b.operation === operation && (b.pattern === 'PREFIXED' ? name.startsWith(b.name) : name === b.name));

describe('ACLs derived from the topology', () => {
  it('gives one principal per stage, then the API, the operators and KEDA', () => {
    expect(all.map((p) => p.principal)).toEqual([...t.stages.map((s) => `User:sonic-${s.name}`), 'User:sonic-api', 'User:sonic-ops', 'User:sonic-keda']);
    expect(deriveAcls(t, { clientId: 'x', principalPrefix: 'prod', stage: 'encode' }).map((p) => p.principal)).toEqual(['User:prod-encode']);
  });

  it('a stage reads its input, retry tiers and group, writes its sinks, status, retry tiers and DLQ, and owns its changelogs', () => {
    const validate = of('validate');
    expect(ops(validate, 'TOPIC', 'sonic.tasks.requested')).toEqual(['READ', 'DESCRIBE']);
    expect(ops(validate, 'TOPIC', 'sonic.validate.retry.1')).toEqual(['READ', 'WRITE', 'DESCRIBE']);
    expect(ops(validate, 'GROUP', 'sonicflow.sonic.validate')).toEqual(['READ']);
    for (const topic of ['sonic.tasks.validated', 'sonic.tasks.completed', 'sonic.tasks.status', 'sonic.validate.dlq'])
      expect(ops(validate, 'TOPIC', topic)).toEqual(['WRITE', 'DESCRIBE']);
    expect(ops(validate, 'TOPIC', 'sonic.validate.seen-changelog')).toEqual(['READ', 'WRITE', 'DESCRIBE']);
    expect(validate.bindings.some((b) => b.resourceType === 'CLUSTER')).toBe(false);
  });

  it("a stage may take its own partitions' transactional ids, and neither another stage's nor the replay's", () => {
    const encode = of('encode');
    const own = transactionalId('sonicflow', { kind: 'partition', stage: 'encode', topic: 'sonic.tasks.rendered', partition: 7 });
    const ownRetry = transactionalId('sonicflow', { kind: 'partition', stage: 'encode', topic: 'sonic.encode.retry.2', partition: 0 });
    const infer = transactionalId('sonicflow', { kind: 'partition', stage: 'infer', topic: 'sonic.tasks.prepared', partition: 7 });
    const replay = transactionalId('sonicflow', { kind: 'dlq-replay', topology: t, stage: 'encode' });
    // a KIP-447 client's one producer per process
    const ownStage = transactionalId('sonicflow', { kind: 'stage', stage: 'encode', topic: 'sonic.tasks.rendered', instance: 'host-0' });
    const inferStage = transactionalId('sonicflow', { kind: 'stage', stage: 'infer', topic: 'sonic.tasks.prepared', instance: 'host-0' });
    expect(allows(encode, 'TRANSACTIONAL_ID', ownStage, 'WRITE')).toBe(true);
    expect(allows(encode, 'TRANSACTIONAL_ID', inferStage, 'WRITE')).toBe(false);
    expect(allows(encode, 'TRANSACTIONAL_ID', own, 'WRITE')).toBe(true);
    expect(allows(encode, 'TRANSACTIONAL_ID', ownRetry, 'WRITE')).toBe(true);
    expect(allows(encode, 'TRANSACTIONAL_ID', infer, 'WRITE')).toBe(false);
    expect(allows(encode, 'TRANSACTIONAL_ID', replay, 'WRITE')).toBe(false);
    expect(allows(of('ops'), 'TRANSACTIONAL_ID', replay, 'WRITE')).toBe(true);
  });

  it("no stage may write another stage's input, read what it does not consume, or use another's group", () => {
    for (const s of t.stages) {
      const p = of(s.name);
      for (const other of t.stages.filter((o) => o !== s)) {
        if (!Object.values(s.outputs).includes(other.input)) expect(allows(p, 'TOPIC', other.input, 'WRITE')).toBe(false);
        // a dispatcher reads its workers' input: what it dispatched and they have not done yet (taking over)
        if (other.input !== s.input && s.dispatch?.workers !== other.name) expect(allows(p, 'TOPIC', other.input, 'READ')).toBe(false);
        expect(allows(p, 'TOPIC', other.dlq, 'WRITE')).toBe(false);
        expect(allows(p, 'GROUP', `sonicflow.sonic.${other.name}`, 'READ')).toBe(false);
      }
    }
  });

  it('the API writes tasks.requested, status and tasks.keys, follows status and keys with its prefixed groups, and has its own transactional ids', () => {
    const api = of('api');
    expect(ops(api, 'TOPIC', 'sonic.tasks.requested')).toEqual(['WRITE', 'DESCRIBE']);
    for (const topic of ['sonic.tasks.status', 'sonic.tasks.keys']) expect(ops(api, 'TOPIC', topic).sort()).toEqual(['DESCRIBE', 'READ', 'WRITE']);
    expect(allows(api, 'GROUP', 'sonicflow.sonic.api-view.1234.abc.de', 'READ')).toBe(true);
    // nothing deletes the view groups (they commit nothing: the broker drops each once it is empty), so no DELETE
    expect(allows(api, 'GROUP', 'sonicflow.sonic.api-view.1234.abc.de', 'DELETE')).toBe(false);
    expect(allows(api, 'GROUP', 'sonicflow.sonic.validate', 'READ')).toBe(false);
    expect(allows(api, 'TRANSACTIONAL_ID', transactionalId('sonicflow', { kind: 'api', topology: t, instance: 'pod-1', lane: 2 }), 'WRITE')).toBe(true);
    expect(allows(api, 'TOPIC', 'sonic.tasks.validated', 'WRITE')).toBe(false);
  });

  it("operators follow what the API follows with gc's own view groups, not the API's, and tombstone status and keys", () => {
    const o = of('ops');
    for (const topic of ['sonic.tasks.status', 'sonic.tasks.keys']) expect(ops(o, 'TOPIC', topic).sort()).toEqual(['DESCRIBE', 'READ', 'WRITE']);
    expect(allows(o, 'GROUP', 'sonicflow.sonic.gc-view.1234.abc.de', 'READ')).toBe(true);
    expect(allows(o, 'GROUP', 'sonicflow.sonic.api-view.1234.abc.de', 'READ')).toBe(false);
    expect(allows(of('api'), 'GROUP', 'sonicflow.sonic.gc-view.1234.abc.de', 'READ')).toBe(false);
    expect(allows(o, 'TOPIC', 'sonic.tasks.requested', 'READ')).toBe(false);
  });

  it("KEDA may only DESCRIBE each stage's consumed topics (input and retry tiers) and group: end offsets and committed offsets", () => {
    const keda = of('keda');
    expect(keda.role).toBe('keda');
    expect(keda.username).toBe('sonic-keda');
    const expected = t.stages.flatMap((s) => [
      ...[s.input, ...s.retry.topics].map((topic) => `TOPIC|LITERAL|${topic}|DESCRIBE`),
      `GROUP|LITERAL|sonicflow.sonic.${s.name}|DESCRIBE`,
    ]);
    const held = keda.bindings.map((b) => `${b.resourceType}|${b.pattern}|${b.name}|${b.operation}`);
    expect([...held].sort()).toEqual([...new Set(expected)].sort());
    expect(keda.bindings.every((b) => b.principal === 'User:sonic-keda')).toBe(true);
    // nothing it could read records with, write to, or join a group with
    expect(keda.bindings.some((b) => b.operation !== 'DESCRIBE')).toBe(false);
    expect(deriveAcls(t, { clientId: 'acme', principalPrefix: 'prod' }).find((p) => p.role === 'keda')?.bindings).toContainEqual({
      principal: 'User:prod-keda',
      resourceType: 'GROUP',
      name: 'acme.sonic.encode',
      pattern: 'LITERAL',
      operation: 'DESCRIBE',
    });
  });

  it("operators read DLQs with their deployment's reader groups and replay under their deployment's ids", () => {
    const o = of('ops');
    expect(allows(o, 'GROUP', 'sonicflow.sonic.reader.1234.lx2k.ab12cd', 'READ')).toBe(true);
    expect(allows(o, 'GROUP', 'sonicflow-read.1234.lx2k.ab12cd', 'READ')).toBe(false);
    expect(allows(o, 'TRANSACTIONAL_ID', 'sonicflow.sonic.encode.dlq-replay', 'WRITE')).toBe(true);
    expect(allows(o, 'TRANSACTIONAL_ID', 'sonicflow.encode.dlq-replay', 'WRITE')).toBe(false);
  });

  it("two deployments' operators share no resource: no name or PREFIXED pattern of one matches a resource of the other", () => {
    const opsOf = (prefix: string, clientId = 'sonicflow'): PrincipalAcls => deriveAcls(sonicTopology({ prefix }), { clientId }).find((p) => p.role === 'ops')!;
    // whether a binding of one covers a resource the other's binding is for (any name under a PREFIXED one)
    const overlap = (x: AclBinding, y: AclBinding): boolean =>
      x.resourceType === y.resourceType &&
      (x.pattern === 'PREFIXED'
        ? y.name.startsWith(x.name) || (y.pattern === 'PREFIXED' && x.name.startsWith(y.name))
        : y.pattern === 'PREFIXED'
          ? x.name.startsWith(y.name)
          : x.name === y.name);
    const disjoint = (a: PrincipalAcls, b: PrincipalAcls): void => {
      for (const x of a.bindings) for (const y of b.bindings) expect(overlap(x, y), `${x.name} (${x.pattern}) and ${y.name} (${y.pattern})`).toBe(false);
    };
    const staging = opsOf('staging');
    const prod = opsOf('prod');
    expect(staging.bindings.length).toBeGreaterThan(30);
    disjoint(staging, prod);
    // the same prefix under another SONIC_CLIENT_ID shares no group or transactional id either
    const other = opsOf('prod', 'acme');
    const idsAndGroups = (p: PrincipalAcls): PrincipalAcls => ({ ...p, bindings: p.bindings.filter((b) => b.resourceType !== 'TOPIC') });
    disjoint(idsAndGroups(prod), idsAndGroups(other));
  });

  it('names the principal and the refused resource in a non-retryable KAFKA_NOT_AUTHORIZED', () => {
    const e = notAuthorized({
      type: 'TOPIC_AUTHORIZATION_FAILED',
      stage: 'encode',
      principal: 'User:sonic-infer',
      resources: ['sonic.tasks.encoded'],
      action: 'write to',
    });
    expect(e.code).toBe('KAFKA_NOT_AUTHORIZED');
    expect(e.retryable).toBe(false);
    expect(e.message).toContain('stage encode (principal User:sonic-infer) is not authorized to write to topic sonic.tasks.encoded');
  });
});

describe('ACL deploy plan', () => {
  const fake = (held: Record<string, AclBinding[]>): AclAdmin =>
    ({ describe: async (principal: string) => ({ bindings: held[principal] ?? [], other: 0 }) }) as unknown as AclAdmin;

  it('creates the missing bindings, reports extras of the same principals, and is empty once everything is there', async () => {
    const encode = deriveAcls(t, { clientId: 'sonicflow', stage: 'encode' });
    const extra: AclBinding = { principal: 'User:sonic-encode', resourceType: 'TOPIC', name: 'sonic.tasks.encoded', pattern: 'LITERAL', operation: 'READ' };
    const first = await planAcls(encode, fake({ 'User:sonic-encode': [extra] }));
    expect(first.create).toHaveLength(encode[0]!.bindings.length);
    expect(first.extra).toEqual([extra]);
    expect(formatAclPlan(first)).toContain('? acl User:sonic-encode READ on TOPIC sonic.tasks.encoded');
    expect(formatAclPlan(first, true)).toContain('- acl User:sonic-encode READ on TOPIC sonic.tasks.encoded');
    const second = await planAcls(encode, fake({ 'User:sonic-encode': [...encode[0]!.bindings, extra] }));
    expect(aclPlanIsEmpty(second)).toBe(true);
    expect(aclPlanIsEmpty(second, true)).toBe(false);
    const third = await planAcls(encode, fake({ 'User:sonic-encode': encode[0]!.bindings }));
    expect(formatAclPlan(third)).toMatch(/^No ACL changes/);
  });

  /** `t` with stage `from` renamed `to` (past validation, which refuses a reserved name). */
  const renamed = (topology: Topology, from: string, to: string): Topology => ({
    ...topology,
    stages: topology.stages.map((s) => (s.name === from ? { ...s, name: to } : s)),
  });

  it('refuses two entries with the same principal (a stage named like the operators or the API), reading nothing and planning nothing', async () => {
    let read = 0;
    const counting = { describe: async () => (read++, { bindings: [], other: 0 }) } as unknown as AclAdmin;
    const asOps = deriveAcls(renamed(chain({ prefix: 'c' }), 'second', 'ops'), { clientId: 'sonicflow' });
    expect(asOps.filter((p) => p.principal === 'User:c-ops')).toHaveLength(2);
    await expect(planAcls(asOps, counting)).rejects.toMatchObject({
      code: 'TOPOLOGY_INVALID',
      message: expect.stringContaining('principal User:c-ops is derived twice, for stage ops and for ops (ops)'),
    });
    const asApi = deriveAcls(renamed(t, 'publish', 'api'), { clientId: 'sonicflow' });
    await expect(planAcls(asApi, counting)).rejects.toThrow('principal User:sonic-api is derived twice, for stage api and for api (api)');
    expect(read).toBe(0);
  });
});
