/**
 * Least-privilege ACLs on a broker that enforces them: the secured stack (SASL_SSL with its own
 * CA, SCRAM-SHA-512 users, the StandardAuthorizer: nothing allowed without an ACL but to
 * `admin`). Users and topics unique to this run are made on it (the stack is shared by every test
 * file). The two-hop chain (test/fixtures/chain.ts) is deployed with `topology deploy --acls`,
 * then its stages run as real `sonicflow run` processes, each with a principal of its own.
 */
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadTopologyFile, type Context } from '../../src/app/context.js';
import { AclAdmin } from '../../src/kafka/acls.js';
import { PlainProducer, TxProducer, readTopic, type InRecord } from '../../src/kafka/io.js';
import { deriveAcls } from '../../src/runtime/acls.js';
import { groupId, transactionalId } from '../../src/runtime/names.js';
import type { Topology } from '../../src/runtime/topology.js';
import { valueSubject } from '../../src/serde/serde.js';
import { CHAIN_FILE } from '../helpers/chain.js';
import { sonicflow, startSonicflow, uniqueName, type SonicflowProcess } from '../helpers/infra.js';
import { deployWithAcls } from '../helpers/pipeline.js';
import { createSecureUsers, type SecureUsers } from '../helpers/secure-stack.js';
import { waitUntil } from '../helpers/wait.js';

// --principal-prefix, unique to the run: the users are <PP>-first, <PP>-second, <PP>-ops
const PP = uniqueName('acl');
const USERS = ['first', 'second', 'ops'].map((n) => `${PP}-${n}`);

let broker: SecureUsers;
let admin: Context;
let prefix: string;
let topology: Topology;
/** What the first `topology deploy --acls` printed (in beforeAll). */
let firstDeploy: string;

const topic = (name: string): string => `${prefix}.${name}`;

/** `sonicflow <args>` on the chain as the super user. */
const asAdmin = (args: string[]) => sonicflow([...args, '--file', CHAIN_FILE], { ...broker.env('admin'), SONIC_TOPIC_PREFIX: prefix });

function startStage(stage: 'first' | 'second', user: string, env: Record<string, string> = {}): SonicflowProcess {
  return startSonicflow(['run', stage, '--file', CHAIN_FILE], {
    ...broker.env(user),
    SONIC_TOPIC_PREFIX: prefix,
    SONIC_METRICS_PORT: '0',
    SONIC_LOG_LEVEL: 'info',
    SONIC_SESSION_TIMEOUT_MS: '6000',
    SONIC_HEARTBEAT_INTERVAL_MS: '1000',
    SONIC_REBALANCE_TIMEOUT_MS: '8000',
    SONIC_DRAIN_TIMEOUT_MS: '5000',
    ...env,
  });
}

/** The exit code of `p`; rejects with its last logs when it still runs after `ms`. */
async function exitOf(p: SonicflowProcess, ms = 60_000): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still running after ${ms} ms; logs:\n${p.logs().slice(-4000)}`)), ms);
  });
  try {
    return await Promise.race([p.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function produce(n: number, fields: Record<string, unknown> = {}): Promise<string[]> {
  const keys: string[] = [];
  const records = [];
  for (let i = 0; i < n; i++) {
    const id = randomUUID();
    keys.push(id);
    records.push({
      key: id,
      value: await admin.serde.encode(valueSubject(topic('in')), 'task-status', { task_id: id, state: 'QUEUED', at: new Date(), ...fields }),
    });
  }
  const p = await new PlainProducer(admin.kafka).connect();
  await p.send(topic('in'), records);
  await p.close();
  return keys;
}

const readAll = (name: string, idleMs = 1500): Promise<InRecord[]> =>
  readTopic(admin.kafka, topic(name), { isolation: 'read_committed', idleMs, timeoutMs: 60_000 });

const first = (user = 'first') => `User:${PP}-${user}`;

describe('least-privilege ACLs derived from the topology, over SASL_SSL (the secured stack: SCRAM-SHA-512, the StandardAuthorizer)', () => {
  beforeAll(async () => {
    broker = await createSecureUsers(USERS);
    admin = broker.context('admin');
    prefix = uniqueName('acl').replace(/-/g, '_');
    process.env.CHAIN_RETRY_DELAYS = '1000,2000';
    topology = await loadTopologyFile(CHAIN_FILE, prefix);
    // topics, subjects and ACLs, removed after the file's tests
    firstDeploy = await deployWithAcls(topology, { ctx: admin, env: (user) => broker.env(user), principalPrefix: PP }, CHAIN_FILE);
  }, 180_000);

  it('topology deploy --acls creates the derived bindings, and a second run reports no changes', async () => {
    expect(firstDeploy).toContain(`+ topic ${topic('in')}`);
    expect(firstDeploy).toContain(`+ acl ${first()} READ on GROUP ${groupId('sonicflow', topology, 'first')}`);
    expect(firstDeploy).toContain(`+ acl ${first()} WRITE on TOPIC ${topic('mid')}`);
    expect(firstDeploy).toContain('Applied.');
    const derived = deriveAcls(topology, { clientId: 'sonicflow', principalPrefix: PP });
    const acls = await new AclAdmin(admin.kafka).connect();
    try {
      for (const p of derived) expect((await acls.describe(p.principal)).bindings).toHaveLength(p.bindings.length);
    } finally {
      await acls.close();
    }
    const twice = asAdmin(['topology', 'deploy', '--acls', '--principal-prefix', PP]);
    expect(twice.code, twice.stderr).toBe(0);
    expect(twice.stdout).toContain('No ACL changes.');
    expect(twice.stdout).not.toContain('+ acl');
    expect(twice.stdout).not.toContain('Applied.');
  }, 120_000);

  it('each stage with its own principal: records go through both hops exactly once', async () => {
    const keys = await produce(6);
    const a = startStage('first', `${PP}-first`);
    const b = startStage('second', `${PP}-second`);
    try {
      await waitUntil(async () => (await readAll('out', 500)).length >= keys.length, 90_000, 'every record at the end of the chain');
      const out = await readAll('out');
      expect(out.map((r) => r.key).sort()).toEqual([...keys].sort());
      expect(await readAll('first.dlq', 500)).toEqual([]);
      expect(await readAll('second.dlq', 500)).toEqual([]);
    } finally {
      a.proc.kill('SIGTERM');
      b.proc.kill('SIGTERM');
      expect(await a.exited).toBe(0);
      expect(await b.exited).toBe(0);
    }
  }, 150_000);

  it("a stage running with another stage's principal stops with KAFKA_NOT_AUTHORIZED naming the topic, and dead-letters nothing", async () => {
    const s = startStage('second', `${PP}-first`);
    expect(await exitOf(s)).toBe(1);
    const logs = s.logs();
    expect(logs).toContain('KAFKA_NOT_AUTHORIZED');
    // first's principal may not even see second's retry tiers
    expect(logs).toMatch(new RegExp(`not authorized to describe topics? [^"]*${topic('second.retry.1').replace(/\./g, '\\.')}`));
    expect(logs).toContain(`principal ${first()}`);
    expect(await readAll('second.dlq', 500)).toEqual([]);
  }, 90_000);

  it('a stage refused a write to a sink stops with KAFKA_NOT_AUTHORIZED naming it; the record is neither retried nor dead-lettered, and goes through once the ACL is back', async () => {
    const acls = await new AclAdmin(admin.kafka).connect();
    const write = { principal: first(), resourceType: 'TOPIC', name: topic('mid'), pattern: 'LITERAL', operation: 'WRITE' } as const;
    const before = (await readAll('mid', 500)).length;
    try {
      await acls.delete([write]); // DESCRIBE stays: the stage starts, and its transaction is refused
      const [key] = await produce(1);
      const s = startStage('first', `${PP}-first`);
      expect(await exitOf(s)).toBe(1);
      const logs = s.logs();
      expect(logs).toContain('KAFKA_NOT_AUTHORIZED');
      expect(logs).toContain('TOPIC_AUTHORIZATION_FAILED');
      expect(logs).toContain(`not authorized to write to topic ${topic('mid')} `);
      expect(logs).not.toContain('record sent to the DLQ');
      expect(logs).not.toContain('record sent to a retry tier');
      expect(await readAll('first.dlq', 500)).toEqual([]);
      expect(await readAll('first.retry.1', 500)).toEqual([]);
      expect((await readAll('mid', 500)).length).toBe(before);
      await acls.create([write]);
      const again = startStage('first', `${PP}-first`);
      try {
        await waitUntil(async () => (await readAll('mid', 500)).some((r) => r.key === key), 60_000, 'the record in mid once the ACL is back');
      } finally {
        again.proc.kill('SIGTERM');
        await again.exited;
      }
    } finally {
      await acls.create([write]);
      await acls.close();
    }
  }, 150_000);

  it("the operators' principal lists and replays a stage's dead letters and reads the lag", async () => {
    const [key] = await produce(1, { error_message: 'poison' });
    const s = startStage('first', `${PP}-first`, { CHAIN_POISON_FIXED: '/nonexistent/never' });
    try {
      await waitUntil(async () => (await readAll('first.dlq', 500)).some((r) => r.key === key), 60_000, 'the poison record in the DLQ');
    } finally {
      s.proc.kill('SIGTERM');
      await s.exited;
    }
    const asOps = (args: string[]) => sonicflow([...args, '--file', CHAIN_FILE], { ...broker.env(`${PP}-ops`), SONIC_TOPIC_PREFIX: prefix });
    const list = asOps(['dlq', 'list', 'first']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain(key!);
    const inputBefore = (await readAll('in', 500)).filter((r) => r.key === key).length;
    const replay = asOps(['dlq', 'replay', 'first', '--task-id', key!]);
    expect(replay.code, replay.stderr).toBe(0);
    expect((await readAll('in', 500)).filter((r) => r.key === key).length).toBe(inputBefore + 1);
    const lag = asOps(['lag', '--stages', 'first,second', '--interval-ms', '500']);
    expect(lag.code, lag.stderr).toBe(0);
    expect(lag.stdout).toContain('first');
    // and a stage's principal is no operator: it may not read its own DLQ
    const asStage = sonicflow(['dlq', 'list', 'first', '--file', CHAIN_FILE], { ...broker.env(`${PP}-first`), SONIC_TOPIC_PREFIX: prefix });
    expect(asStage.code).toBe(1);
    expect(asStage.stderr).toContain(`error [KAFKA_NOT_AUTHORIZED]: not authorized to read topic ${topic('first.dlq')}`);
  }, 150_000);

  it(
    "transactional-id ACLs: a principal cannot take another stage's transactional id, and fencing of its own older producer still works",
    () => fencedWithTransactionalIdAcls(broker.context(`${PP}-first`), admin, topology),
    90_000,
  );
});

/**
 * As the principal of the chain's stage `first` (`asFirst`): InitProducerId of stage second's
 * transactional id is refused; of its own, a second producer fences the first (a zombie), whose
 * transaction is refused, and the owner's commits. `admin` encodes and reads.
 */
async function fencedWithTransactionalIdAcls(asFirst: Context, admin: Context, topology: Topology): Promise<void> {
  const topic = (name: string): string => `${topology.prefix}.${name}`;
  const theirs = transactionalId('sonicflow', { kind: 'partition', stage: 'second', topic: topic('mid'), partition: 0 });
  await expect(new TxProducer(asFirst.kafka, theirs).connect()).rejects.toMatchObject({
    type: 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  });
  const mine = transactionalId('sonicflow', { kind: 'partition', stage: 'first', topic: topic('in'), partition: 0 });
  const group = groupId('sonicflow', topology, 'first');
  const value = await admin.serde.encode(valueSubject(topic('mid')), 'task-status', { task_id: randomUUID(), state: 'QUEUED', at: new Date() });
  const zombie = await new TxProducer(asFirst.kafka, mine).connect();
  const owner = await new TxProducer(asFirst.kafka, mine).connect(); // InitProducerId bumps the epoch
  try {
    const fenced = zombie.publish([{ topic: topic('mid'), key: 'zombie', value, headers: {} }], {
      groupId: group,
      topic: topic('in'),
      partition: 0,
      offset: '0',
    });
    await expect(fenced).rejects.toMatchObject({ type: expect.stringMatching(/INVALID_PRODUCER_EPOCH|PRODUCER_FENCED/) });
    await owner.publish([{ topic: topic('mid'), key: 'owner', value, headers: {} }], { groupId: group, topic: topic('in'), partition: 0, offset: '0' });
    const keys = (await readTopic(admin.kafka, topic('mid'), { isolation: 'read_committed', idleMs: 1500, timeoutMs: 60_000 })).map((r) => r.key);
    expect(keys).toContain('owner');
    expect(keys).not.toContain('zombie');
  } finally {
    await Promise.all([zombie.close().catch(() => undefined), owner.close()]);
  }
}
