/**
 * `sonicflow run` and `sonicflow topology deploy` refuse a topology that cannot work before the
 * first record, naming the node: a static problem (undeclared topics, a missing schema), or a
 * broker that does not hold the topology's topics as declared (missing, other partition counts).
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { CHAIN_FILE, deployChain } from '../helpers/chain.js';
import { ROOT, sonicflow, testContext, uniqueName } from '../helpers/infra.js';

const BROKEN = join(ROOT, 'test', 'fixtures', 'broken-topology.ts');

describe('a topology that cannot work is refused at start, naming the node', () => {
  it('run and deploy refuse undeclared topics and a missing schema, and create nothing', async () => {
    const prefix = uniqueName('broken').replace(/-/g, '_');
    for (const args of [
      ['run', 'leaky', '--file', BROKEN],
      ['topology', 'deploy', '--file', BROKEN],
    ]) {
      const r = sonicflow(args, { SONIC_TOPIC_PREFIX: prefix, SONIC_METRICS_PORT: '0' });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain('TOPOLOGY_INVALID');
      expect(r.stderr).toContain(`stage:lost: stage lost consumes topic ${prefix}.nowhere, which is not declared`);
      expect(r.stderr).toContain(`stage:leaky: stage leaky writes topic ${prefix}.undeclared, which is not declared`);
      expect(r.stderr).toContain(`topic:${prefix}.odd: topic ${prefix}.odd names schema "no-such-schema", which does not exist`);
      expect(r.stderr).toContain(`stage:mistyped: stage mistyped reads task-request records, but its input ${prefix}.in holds task-status`);
    }
    const admin = await new TopicAdmin(testContext().kafka).connect();
    try {
      expect((await admin.list()).filter((t) => t.startsWith(prefix))).toEqual([]);
    } finally {
      await admin.close();
    }
  });

  it('run refuses topics that are not deployed, naming each', () => {
    const prefix = uniqueName('undeployed').replace(/-/g, '_');
    const r = sonicflow(['run', 'first', '--file', CHAIN_FILE], { SONIC_TOPIC_PREFIX: prefix, SONIC_METRICS_PORT: '0' });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`topic:${prefix}.in: topic ${prefix}.in of stage first does not exist: run \`sonicflow topology deploy --stage first\``);
    expect(r.stderr).toContain(`topic:${prefix}.mid: topic ${prefix}.mid of stage first does not exist`);
  });

  it('run refuses a partition count other than the declared one, naming the topic', async () => {
    const chain = await deployChain();
    const r = sonicflow(['run', 'second', '--file', CHAIN_FILE], { SONIC_TOPIC_PREFIX: chain.prefix, SONIC_METRICS_PORT: '0', CHAIN_PARTITIONS: '6' });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(
      `topic:${chain.prefix}.mid: topic ${chain.prefix}.mid of stage second has 4 partitions, the topology declares 6: run \`sonicflow topology deploy --stage second\``,
    );
  });
});
