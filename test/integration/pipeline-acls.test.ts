/**
 * The whole Sonic pipeline on a broker that enforces ACLs (a private SASL_PLAINTEXT broker with
 * SCRAM-SHA-512 users and the StandardAuthorizer): the API and each stage run in their own
 * process as their own principal, with exactly the ACLs derived from the topology. A task
 * succeeds, exactly once.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readTopic } from '../../src/kafka/io.js';
import { makePortrait, synthSpeech } from '../../src/media/samples.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { startPipeline } from '../helpers/pipeline.js';
import { startSaslBroker } from '../helpers/private-broker.js';

const PP = 'sf';

describe('the Sonic pipeline with one principal per stage and the derived ACLs (SASL/SCRAM, StandardAuthorizer)', () => {
  it('a task succeeds exactly once, every process connected as its own principal', async () => {
    const names = [...sonicTopology().stages.map((s) => s.name), 'api'];
    const broker = await startSaslBroker(names.map((n) => `${PP}-${n}`));
    const admin = broker.context('admin');
    const p = await startPipeline({}, { ctx: admin, env: (user) => broker.env(user), principalPrefix: PP });
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-acls-'));
    await synthSpeech('Every stage speaks to Kafka as itself.', join(dir, 'speech.wav'));
    await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
    const r = await p.submit({
      audio: { data: readFileSync(join(dir, 'speech.wav')), name: 'speech.wav' },
      image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
      min_resolution: '256',
    });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id = String(r.body.task_id);
    const s = await p.waitFor(id, ['SUCCEEDED', 'FAILED'], 180_000);
    expect(s.state, JSON.stringify(s)).toBe('SUCCEEDED');
    await p.drained(120_000);
    const completed = await readTopic(admin.kafka, p.topic('tasks.completed'), { isolation: 'read_committed', idleMs: 1500, timeoutMs: 60_000 });
    expect(completed.filter((x) => x.key === id)).toHaveLength(1);
    for (const stage of sonicTopology().stages) {
      const dead = await readTopic(admin.kafka, p.topic(`${stage.name}.dlq`), { idleMs: 500, timeoutMs: 30_000 });
      expect(dead, stage.name).toEqual([]);
    }
    const logs = `${p.logs().api}\n${p.logs().stages}`;
    expect(logs).not.toContain('KAFKA_NOT_AUTHORIZED');
    expect(logs).not.toContain('AUTHORIZATION_FAILED');
  }, 400_000);
});
