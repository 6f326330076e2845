/**
 * The whole Sonic pipeline on a broker that enforces ACLs, with the StandardAuthorizer and
 * SCRAM-SHA-512 users: the topology and its derived ACLs are deployed with `topology deploy --acls`
 * as the super user, then the API and each stage run in their own process as their own principal,
 * with exactly those ACLs. A task succeeds, exactly once. On two brokers: a private
 * SASL_PLAINTEXT one (its users made when it is formatted), and the secured stack over SASL_SSL
 * with its CA (its users made for this run with Kafka's kafka-configs tool, under a principal
 * prefix of their own).
 */
import { describe, expect, it } from 'vitest';
import { readTopic } from '../../src/kafka/io.js';
import { deriveAcls } from '../../src/runtime/acls.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { uniqueName } from '../helpers/infra.js';
import { startPipeline, type SecuredBroker } from '../helpers/pipeline.js';
import { startSaslBroker } from '../helpers/private-broker.js';
import { createSecureUsers } from '../helpers/secure-stack.js';

/** The SASL users of every principal derived from the Sonic topology under `principalPrefix`: each stage, the API and the operators. */
const derivedUsers = (principalPrefix: string): string[] => deriveAcls(sonicTopology(), { clientId: 'sonicflow', principalPrefix }).map((p) => p.username);

/** Runs the pipeline as one principal per stage and the API's, and checks that a task succeeds exactly once, nothing dead-lettered, nothing refused. */
async function taskSucceedsOnce(secured: SecuredBroker): Promise<void> {
  const admin = secured.ctx;
  const p = await startPipeline({}, { secured });
  const r = await p.submitSample('Every stage speaks to Kafka as itself.');
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
}

describe('the Sonic pipeline with one principal per stage and the derived ACLs (SCRAM-SHA-512, StandardAuthorizer)', () => {
  it('SASL_PLAINTEXT (a private broker): a task succeeds exactly once, every process connected as its own principal', async () => {
    const principalPrefix = 'sf';
    const broker = await startSaslBroker(derivedUsers(principalPrefix));
    await taskSucceedsOnce({ ctx: broker.context('admin'), env: (user) => broker.env(user), principalPrefix });
  }, 400_000);

  it('SASL_SSL (the secured stack, its CA): a task succeeds exactly once, every process connected as its own principal', async () => {
    // unique to this run: the stack is shared by every test file and every run on this machine
    const principalPrefix = uniqueName('sf');
    const users = await createSecureUsers(derivedUsers(principalPrefix));
    await taskSucceedsOnce({ ctx: users.context('admin'), env: (user) => users.env(user), principalPrefix });
  }, 400_000);
});
