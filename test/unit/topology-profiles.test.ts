import { describe, expect, it } from 'vitest';
import { Context } from '../../src/app/context.js';
import { loadConfig } from '../../src/core/config.js';
import { formatPlan } from '../../src/ops/deploy.js';
import { DEFAULT_PROFILES, profileProblems, withProfile } from '../../src/runtime/profiles.js';
import { defineTopology } from '../../src/runtime/topology.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { thrown } from '../helpers/errors.js';

const context = (env: Record<string, string> = {}): Context => new Context({ SONIC_LOG_LEVEL: 'silent', ...env }, 'test');

describe('environment profiles of a topology', () => {
  it('the local profile is the default: one replica, the broker default min.insync.replicas', async () => {
    expect(loadConfig({}).topologyProfile).toBe('local');
    const t = await context().topology();
    expect(t.profile).toBe('local');
    for (const topic of Object.values(t.topics)) {
      expect(topic.replicationFactor, topic.name).toBe(1);
      expect(topic.configs, topic.name).not.toHaveProperty('min.insync.replicas');
    }
  });

  it('SONIC_TOPOLOGY_PROFILE=replicated gives every topic (retry tiers and DLQs too) 3 replicas and min.insync.replicas=2, keeping its own configs', async () => {
    const t = await context({ SONIC_TOPOLOGY_PROFILE: 'replicated', SONIC_TOPIC_PREFIX: 'p' }).topology();
    expect(t.profile).toBe('replicated');
    expect(Object.keys(t.topics)).toContain('p.infer.dlq');
    for (const topic of Object.values(t.topics)) {
      expect(topic.replicationFactor, topic.name).toBe(3);
      expect(topic.configs['min.insync.replicas'], topic.name).toBe('2');
    }
    expect(t.topics['p.tasks.status']!.configs['cleanup.policy']).toBe('compact');
    // what deploy prints for a new topic
    const plan = formatPlan({ createTopics: [t.topics['p.tasks.requested']!], addPartitions: [], configChanges: [], subjects: [], refusals: [] });
    expect(plan).toContain('+ topic p.tasks.requested (partitions 12, replication 3, cleanup.policy=delete, retention.ms=604800000, min.insync.replicas=2)');
  });

  it('the profile does not touch the declaration: the same topology under another profile is unchanged', () => {
    const t = sonicTopology();
    const replicated = withProfile(t, 'replicated');
    expect(Object.values(t.topics).every((x) => x.replicationFactor === 1 && !('min.insync.replicas' in x.configs))).toBe(true);
    expect(withProfile(replicated, 'local').topics['sonic.tasks.requested']!.replicationFactor).toBe(1);
  });

  it('an unknown profile fails with TOPOLOGY_INVALID listing the known ones; a bad name fails the configuration', async () => {
    const err = thrown(() => withProfile(sonicTopology(), 'huge'));
    expect(err.code).toBe('TOPOLOGY_INVALID');
    expect(err.message).toContain('no environment profile "huge" (profiles: local, replicated)');
    await expect(context({ SONIC_TOPOLOGY_PROFILE: 'huge' }).topology()).rejects.toMatchObject({ code: 'TOPOLOGY_INVALID' });
    // inherited object keys are not profiles
    expect(thrown(() => withProfile(sonicTopology(), 'constructor')).code).toBe('TOPOLOGY_INVALID');
    expect(thrown(() => loadConfig({ SONIC_TOPOLOGY_PROFILE: 'a b' })).code).toBe('CONFIG_INVALID');
  });

  it('a topology that declares no profiles gets the default ones; one that declares its own gets only those', () => {
    const decl = {
      name: 'mini',
      prefix: 'm',
      status: 'status',
      topics: { in: { doc: 'in' }, status: { role: 'status' as const, configs: { 'cleanup.policy': 'compact' }, doc: 'status' } },
      stages: { s: { doc: 's', input: 'in' } },
    };
    const plain = defineTopology(decl);
    expect(withProfile(plain, 'replicated').topics['m.in']!.replicationFactor).toBe(DEFAULT_PROFILES.replicated!.replicationFactor);
    const own = defineTopology({ ...decl, profiles: { dev: { replicationFactor: 1 }, prod: { replicationFactor: 5, minInsyncReplicas: 3 } } });
    expect(withProfile(own, 'prod').topics['m.s.dlq']).toMatchObject({ replicationFactor: 5, configs: { 'min.insync.replicas': '3' } });
    expect(thrown(() => withProfile(own, 'replicated')).message).toContain('(profiles: dev, prod)');
  });

  it('refuses an unsound profile: min.insync.replicas above the replicas would never acknowledge a write', () => {
    expect(profileProblems('x', { replicationFactor: 2, minInsyncReplicas: 3 })).toEqual(['profile x: minInsyncReplicas 3 exceeds replicationFactor 2']);
    expect(profileProblems('x', { replicationFactor: 0 })).toHaveLength(1);
    const t = defineTopology({
      name: 'mini',
      prefix: 'm',
      status: 'status',
      topics: { status: { role: 'status', doc: 'status' } },
      stages: {},
      profiles: { bad: { replicationFactor: 1, minInsyncReplicas: 2 } },
    });
    expect(thrown(() => withProfile(t, 'bad')).code).toBe('TOPOLOGY_INVALID');
  });
});
