import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { registeredTopics } from '../../src/runtime/topology.js';
import { valueSubject } from '../../src/serde/serde.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { kafkaTool, onCleanup, sonicflow, testContext, uniqueName } from '../helpers/infra.js';

describe('topology deploy (real broker and registry)', () => {
  const ctx = testContext();

  it('creates every topic and subject from empty, then plans "no changes"; Kafka\'s own tool lists the topics', async () => {
    const prefix = uniqueName('deploy').replace(/-/g, '_');
    const topology = sonicTopology({ prefix });
    const topics = Object.values(topology.topics);
    onCleanup(async () => {
      const admin = await new TopicAdmin(ctx.kafka).connect();
      await admin.delete(topics.map((t) => t.name));
      await admin.close();
      for (const t of registeredTopics(topology)) await ctx.registryAdmin.deleteSubject(valueSubject(t.name));
    });
    const env = { SONIC_TOPIC_PREFIX: prefix };

    const dry = sonicflow(['topology', 'deploy', '--dry-run'], env);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`+ topic ${prefix}.tasks.requested (partitions 12`);
    expect(dry.stdout).toContain(`+ subject ${prefix}.tasks.status-value (schema task-status, compatibility FULL)`);
    const admin = await new TopicAdmin(ctx.kafka).connect();
    expect((await admin.describe([`${prefix}.tasks.requested`])).size).toBe(0); // dry run changed nothing

    const first = sonicflow(['topology', 'deploy'], env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('Applied.');

    const listed = kafkaTool('topics', ['--bootstrap-server', ctx.config.kafkaBrokers[0]!, '--list']).split('\n');
    for (const t of topics) expect(listed).toContain(t.name);
    const state = await admin.describe([`${prefix}.tasks.status`, `${prefix}.infer.retry.3`]);
    expect(state.get(`${prefix}.tasks.status`)).toMatchObject({ partitions: 12, configs: { 'cleanup.policy': 'compact' } });
    // a retry tier is partitioned like its stage's input: infer reads tasks.dispatched, one partition per worker slot
    expect(state.get(`${prefix}.infer.retry.3`)?.partitions).toBe(24);
    await admin.close();

    const subjects = await ctx.registryAdmin.subjects();
    for (const t of registeredTopics(topology)) {
      expect(subjects).toContain(valueSubject(t.name));
      expect(await ctx.registryAdmin.compatibility(valueSubject(t.name))).toBe(t.compatibility);
    }

    const second = sonicflow(['topology', 'deploy'], env);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe('No changes. The broker and the registry match the topology.\n');
  }, 120_000);

  it('deploys one stage only with --stage: its input, retry tiers, DLQ, sinks (the failure outcome too) and the status topic', async () => {
    const prefix = uniqueName('stage').replace(/-/g, '_');
    const r = sonicflow(['topology', 'deploy', '--stage', 'encode', '--dry-run'], { SONIC_TOPIC_PREFIX: prefix });
    expect(r.code, r.stderr).toBe(0);
    const created = [...r.stdout.matchAll(/\+ topic (\S+)/g)].map((m) => m[1]).sort();
    expect(created).toEqual(
      [
        `${prefix}.encode.dlq`,
        `${prefix}.encode.retry.1`,
        `${prefix}.encode.retry.2`,
        `${prefix}.encode.retry.3`,
        `${prefix}.tasks.completed`,
        `${prefix}.tasks.encoded`,
        `${prefix}.tasks.rendered`,
        `${prefix}.tasks.status`,
      ].sort(),
    );
    const bad = sonicflow(['topology', 'deploy', '--stage', 'nope', '--dry-run'], { SONIC_TOPIC_PREFIX: prefix });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('error [TOPOLOGY_INVALID]: no stage named "nope"');
  });

  it('refuses a partition decrease and an incompatible schema with the named reason, changing nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-refuse-'));
    const prefix = uniqueName('refuse').replace(/-/g, '_');
    const decl = (partitions: number) => ({
      name: 'refuse',
      prefix,
      status: 'status',
      defaults: { partitions },
      topics: {
        items: { valueSchema: 'item', external: { producers: ['t'], consumers: ['t'] }, doc: 'items' },
        status: {
          role: 'status',
          valueSchema: 'item',
          configs: { 'cleanup.policy': 'compact' },
          external: { producers: ['t'], consumers: ['t'] },
          doc: 'status',
        },
      },
      stages: {},
    });
    writeFileSync(join(dir, 'four.json'), JSON.stringify(decl(4)));
    writeFileSync(join(dir, 'two.json'), JSON.stringify(decl(2)));
    for (const [name, fields] of [
      ['v1', [{ name: 'id', type: 'string' }]],
      [
        'v2',
        [
          { name: 'id', type: 'string' },
          { name: 'weight', type: 'double' },
        ],
      ],
    ] as const) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'item.avsc'), JSON.stringify({ type: 'record', name: 'Item', namespace: 'refuse', fields }));
    }
    onCleanup(async () => {
      const admin = await new TopicAdmin(ctx.kafka).connect();
      await admin.delete([`${prefix}.items`, `${prefix}.status`]);
      await admin.close();
      for (const t of ['items', 'status']) await ctx.registryAdmin.deleteSubject(`${prefix}.${t}-value`);
    });
    const deploy = (file: string, schemas: string, ...more: string[]) =>
      sonicflow(['topology', 'deploy', '--file', join(dir, file), '--schemas', join(dir, schemas), ...more]);
    expect(deploy('four.json', 'v1').code).toBe(0);

    const shrink = deploy('two.json', 'v1');
    expect(shrink.code).toBe(1);
    expect(shrink.stdout).toContain(
      `! topic:${prefix}.items: topic ${prefix}.items has 4 partitions and the topology asks for 2; Kafka cannot remove partitions`,
    );
    expect(shrink.stderr).toContain('deploy refused: nothing was changed');

    const incompatible = deploy('four.json', 'v2');
    expect(incompatible.code).toBe(1);
    expect(incompatible.stdout).toContain(
      `! subject:${prefix}.items-value: schema item is incompatible with the latest version of ${prefix}.items-value under BACKWARD`,
    );
    expect(incompatible.stdout).toContain('field weight is missing from the writer schema and has no default');

    // nothing changed: still 4 partitions, still one schema version
    const admin = await new TopicAdmin(ctx.kafka).connect();
    expect((await admin.describe([`${prefix}.items`])).get(`${prefix}.items`)?.partitions).toBe(4);
    await admin.close();
    expect(await ctx.registryAdmin.versions(`${prefix}.items-value`)).toHaveLength(1);
    expect(deploy('four.json', 'v1').stdout).toBe('No changes. The broker and the registry match the topology.\n');
  }, 120_000);
  it('refuses a profile that needs more replicas than the cluster has brokers, and a profile other than the one existing topics were created with', async () => {
    const prefix = uniqueName('profile').replace(/-/g, '_');
    const env = { SONIC_TOPIC_PREFIX: prefix, SONIC_TOPOLOGY_PROFILE: 'replicated' };
    const admin = await new TopicAdmin(ctx.kafka).connect();
    onCleanup(async () => {
      await admin.delete(Object.keys(sonicTopology({ prefix }).topics));
      for (const t of registeredTopics(sonicTopology({ prefix }))) await ctx.registryAdmin.deleteSubject(valueSubject(t.name)).catch(() => undefined);
      await admin.close();
    });
    const brokers = await admin.brokerCount();
    if (brokers >= 3) return; // the shared broker is a cluster: nothing to refuse
    const r = sonicflow(['topology', 'deploy', '--stage', 'encode'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`! topic:${prefix}.tasks.rendered: topic ${prefix}.tasks.rendered needs 3 replicas and the cluster has ${brokers} broker(s)`);
    expect(r.stderr).toContain('deploy refused: nothing was changed');
    expect((await admin.describe([`${prefix}.tasks.rendered`])).size).toBe(0);
    // created with the local profile, then deployed with another replication: refused, not half-applied
    expect(sonicflow(['topology', 'deploy', '--stage', 'encode'], { SONIC_TOPIC_PREFIX: prefix }).code).toBe(0);
    const again = sonicflow(['topology', 'deploy', '--stage', 'encode'], env);
    expect(again.code).toBe(1);
    expect(again.stdout).toContain(`has 1 replica(s) and the topology's profile asks for 3; deploy does not change a topic's replication`);
  }, 120_000);
});
