/**
 * The consumer-group and transactional-id formats, byte for byte. Deployments depend on them
 * (KEDA triggers and the lag exporter watch the groups; a restarted process fences its
 * predecessor only under the same transactional id): a change here is a migration.
 */
import { describe, expect, it } from 'vitest';
import { apiViewGroupPrefix, gcViewGroupPrefix, groupId, readerGroupPrefix, RESERVED_STAGE_NAMES, transactionalId } from '../../src/runtime/names.js';

describe('names', () => {
  // a topology and a stage, or anything with their prefix and name
  const topology = { prefix: 'sonic', stages: [] };
  const infer = { name: 'infer', input: 'sonic.tasks.prepared' };

  it('a stage consumer group is <client id>.<prefix>.<stage>', () => {
    expect(groupId('sonicflow', topology, infer)).toBe('sonicflow.sonic.infer');
    expect(groupId('sonicflow', 'sonic', 'infer')).toBe('sonicflow.sonic.infer');
    expect(groupId('acme-prod', { prefix: 'bench_sf_1a2b' }, 'hop1')).toBe('acme-prod.bench_sf_1a2b.hop1');
  });

  it("the API's status-view groups start with <client id>.<prefix>.api-view", () => {
    expect(apiViewGroupPrefix('sonicflow', topology)).toBe('sonicflow.sonic.api-view');
    expect(apiViewGroupPrefix('acme', 'p')).toBe('acme.p.api-view');
  });

  it("sonicflow gc's status-view groups start with <client id>.<prefix>.gc-view, apart from the API's", () => {
    expect(gcViewGroupPrefix('sonicflow', topology)).toBe('sonicflow.sonic.gc-view');
    expect(gcViewGroupPrefix('acme', 'p')).toBe('acme.p.gc-view');
    expect(`${gcViewGroupPrefix('sonicflow', topology)}.1.x`.startsWith(`${apiViewGroupPrefix('sonicflow', topology)}.`)).toBe(false);
  });

  it("the operators' throw-away reader groups start with <client id>.<prefix>.reader", () => {
    expect(readerGroupPrefix('sonicflow', topology)).toBe('sonicflow.sonic.reader');
    expect(readerGroupPrefix('acme', 'p')).toBe('acme.p.reader');
  });

  it("a stage's per-partition producer is <client id>.<stage>.<topic>.<partition> (no prefix but the topic's)", () => {
    expect(transactionalId('sonicflow', { kind: 'partition', stage: infer, topic: 'sonic.tasks.prepared', partition: 3 })).toBe(
      'sonicflow.infer.sonic.tasks.prepared.3',
    );
    expect(transactionalId('sonicflow', { kind: 'partition', stage: 'infer', topic: 'sonic.infer.retry.1', partition: 0 })).toBe(
      'sonicflow.infer.sonic.infer.retry.1.0',
    );
  });

  it("a stage process's one producer (KIP-447) is <client id>.<stage>.<input topic>.stage-<instance>, the instance made safe", () => {
    expect(transactionalId('sonicflow', { kind: 'stage', stage: infer, topic: 'sonic.tasks.prepared', instance: 'gpu-node/1 a-0' })).toBe(
      'sonicflow.infer.sonic.tasks.prepared.stage-gpu-node_1_a-0',
    );
  });

  it("an API replica's producers are <client id>.<prefix>.api.<instance>[.<lane>], the instance made safe", () => {
    expect(transactionalId('sonicflow', { kind: 'api', topology, instance: 'api-0' })).toBe('sonicflow.sonic.api.api-0');
    expect(transactionalId('sonicflow', { kind: 'api', topology, instance: 'api-0', lane: 0 })).toBe('sonicflow.sonic.api.api-0.0');
    expect(transactionalId('sonicflow', { kind: 'api', topology: 'p', instance: 'api-0', lane: 7 })).toBe('sonicflow.p.api.api-0.7');
    expect(transactionalId('sonicflow', { kind: 'api', topology, instance: 'host name/1:α', lane: 2 })).toBe('sonicflow.sonic.api.host_name_1__.2');
  });

  it("a DLQ replay's producer is <client id>.<prefix>.<stage>.dlq-replay", () => {
    expect(transactionalId('sonicflow', { kind: 'dlq-replay', topology, stage: infer })).toBe('sonicflow.sonic.infer.dlq-replay');
    expect(transactionalId('acme', { kind: 'dlq-replay', topology: 'p', stage: 'notify' })).toBe('acme.p.notify.dlq-replay');
  });

  it("reserves the stage names that would make the API's, the operators' or KEDA's names, or a view's, reader's or replay's", () => {
    expect([...RESERVED_STAGE_NAMES].sort()).toEqual(['api', 'api-view', 'dlq-replay', 'gc-view', 'keda', 'ops', 'reader']);
    // a stage named like a view or the readers would get their group prefix as its group
    for (const start of [apiViewGroupPrefix('c', 'p'), gcViewGroupPrefix('c', 'p'), readerGroupPrefix('c', 'p')])
      expect(RESERVED_STAGE_NAMES).toContain(start.slice('c.p.'.length));
  });
});
