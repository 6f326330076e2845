/**
 * sonicflow against the secured local stack (SASL_SSL, SCRAM-SHA-512, a local CA, the
 * StandardAuthorizer): the admin deploys and round-trips a record, the API answers /readyz; a
 * wrong password, an untrusted certificate, a plaintext client at the TLS listener, a TLS client
 * at a plaintext listener and a client without SASL each stop the process at once with their own
 * error instead of a retry loop, and so does an API whose principal may not read its status topic.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Context } from '../../src/app/context.js';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { kafkajsOf } from '../../src/kafka/handle.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { startApiOnly } from '../helpers/api.js';
import { removeTopology } from '../../src/ops/deploy.js';
import { onCleanup, sonicflow, startSonicflow, testContext, uniqueName } from '../helpers/infra.js';
import { createSecureUsers, otherCa, secureStack } from '../helpers/secure-stack.js';
import { deployWithAcls } from '../helpers/pipeline.js';
import { AclAdmin } from '../../src/kafka/acls.js';
import { deriveAcls } from '../../src/runtime/acls.js';

let env: Record<string, string>;
let ctx: Context;

beforeAll(() => {
  env = secureStack();
  ctx = new Context({ ...process.env, ...env, SONIC_LOG_LEVEL: 'warn' }, 'test');
}, 240_000);

/** `sonicflow args` on the secured stack with `over` changed; its exit code, stderr and time. */
function cli(args: string[], over: Record<string, string> = {}): { code: number; stderr: string; ms: number } {
  const t = Date.now();
  const r = sonicflow(args, { ...env, ...over });
  return { code: r.code, stderr: r.stderr, ms: Date.now() - t };
}

/** `sonicflow run validate` with `over`: resolves with its exit code, stderr and time once it exits. */
async function runStage(over: Record<string, string>): Promise<{ code: number | string; logs: string; ms: number }> {
  const t = Date.now();
  const p = startSonicflow(['run', 'validate'], {
    ...env,
    SONIC_LOG_LEVEL: 'warn',
    SONIC_METRICS_PORT: '0',
    SONIC_TOPIC_PREFIX: uniqueName('secrun'),
    ...over,
  });
  const code = await Promise.race([p.exited, new Promise<string>((r) => setTimeout(() => r('still running after 30 s'), 30_000))]);
  return { code, logs: p.logs(), ms: Date.now() - t };
}

describe('a correctly configured client on SASL_SSL', () => {
  it('deploys the topology as the admin, and a record makes the round trip', async () => {
    const prefix = uniqueName('secure').replace(/-/g, '_');
    const deployed = cli(['topology', 'deploy'], { SONIC_TOPIC_PREFIX: prefix });
    expect(deployed.stderr).not.toMatch(/error \[/);
    expect(deployed.code).toBe(0);
    const topic = uniqueName('secure-roundtrip');
    const admin = await new TopicAdmin(ctx.kafka).connect();
    onCleanup(async () => {
      await removeTopology(sonicTopology({ prefix }), admin, ctx.registryAdmin);
      await admin.delete([topic]);
      await admin.close();
    });
    expect(await admin.list()).toContain(`${prefix}.tasks.requested`);
    await admin.create([{ name: topic, partitions: 1, replicationFactor: 1, configs: {} }]);
    const kafka = kafkajsOf(ctx.kafka);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: [{ key: 'k', value: 'over SASL_SSL' }] });
    await producer.disconnect();
    const consumer = kafka.consumer({ groupId: uniqueName('secure-group') });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    const got = await new Promise<string>((resolve) => void consumer.run({ eachMessage: async ({ message }) => resolve(String(message.value)) }));
    await consumer.disconnect();
    expect(got).toBe('over SASL_SSL');
  });

  it('the API starts and answers /readyz', async () => {
    const api = await startApiOnly(env, ctx);
    const r = await fetch(`${api.base}/readyz`);
    expect(r.status, await r.text()).toBe(200);
  });
});

describe('a client the broker will not let in fails at once, saying why', () => {
  it('a wrong password: KAFKA_AUTH_FAILED from the CLI and from a stage', async () => {
    const lag = cli(['lag'], { SONIC_KAFKA_SASL_PASSWORD: 'not-the-password' });
    expect(lag.code).toBe(1);
    expect(lag.stderr).toMatch(/error \[KAFKA_AUTH_FAILED\]: SASL authentication failed for user admin .*wrong user name or password/);
    expect(lag.ms).toBeLessThan(20_000);

    const deploy = cli(['topology', 'deploy'], { SONIC_KAFKA_SASL_USERNAME: 'nobody' });
    expect(deploy.code).toBe(1);
    expect(deploy.stderr).toMatch(/error \[KAFKA_AUTH_FAILED\]: SASL authentication failed for user nobody/);

    const stage = await runStage({ SONIC_KAFKA_SASL_PASSWORD: 'not-the-password' });
    expect(stage.code, stage.logs.slice(-2000)).toBe(1);
    expect(stage.logs).toContain('KAFKA_AUTH_FAILED');
  });

  it('an untrusted certificate: KAFKA_TLS_UNTRUSTED, with another CA and with the system CAs', async () => {
    const other = cli(['topology', 'deploy'], { SONIC_KAFKA_SSL_CA_FILE: otherCa() });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(
      /error \[KAFKA_TLS_UNTRUSTED\]: TLS to the broker at \S+ failed: its certificate is not trusted by the CA of SONIC_KAFKA_SSL_CA_FILE/,
    );
    expect(other.ms).toBeLessThan(20_000);

    const system = cli(['lag'], { SONIC_KAFKA_SSL_CA_FILE: '' });
    expect(system.code).toBe(1);
    expect(system.stderr).toMatch(/error \[KAFKA_TLS_UNTRUSTED\]: .*not trusted by the system CAs/);

    const stage = await runStage({ SONIC_KAFKA_SSL_CA_FILE: otherCa() });
    expect(stage.code, stage.logs.slice(-2000)).toBe(1);
    expect(stage.logs).toContain('KAFKA_TLS_UNTRUSTED');
  });

  it('a plaintext client at the TLS listener: KAFKA_PROTOCOL_MISMATCH, expects TLS', async () => {
    const r = cli(['lag'], { SONIC_KAFKA_SSL: 'false' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error \[KAFKA_PROTOCOL_MISMATCH\]: the broker at \S+ expects TLS/);
    expect(r.ms).toBeLessThan(20_000);

    const stage = await runStage({ SONIC_KAFKA_SSL: 'false' });
    expect(stage.code, stage.logs.slice(-2000)).toBe(1);
    expect(stage.logs).toContain('KAFKA_PROTOCOL_MISMATCH');
  });

  it('a TLS client at a plaintext listener: KAFKA_PROTOCOL_MISMATCH, does not speak TLS', () => {
    const plaintext = testContext().config.kafkaBrokers.join(',');
    const r = cli(['lag'], { KAFKA_BROKERS: plaintext, SONIC_KAFKA_SASL_MECHANISM: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error \[KAFKA_PROTOCOL_MISMATCH\]: the broker at \S+ does not speak TLS/);
  });

  it('no SASL at the SASL listener, and SASL at a listener without it: KAFKA_PROTOCOL_MISMATCH', () => {
    const none = cli(['lag'], { SONIC_KAFKA_SASL_MECHANISM: '' });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/error \[KAFKA_PROTOCOL_MISMATCH\]: the broker at \S+ requires SASL authentication \(mechanisms: SCRAM-SHA-512\)/);

    const plaintext = testContext().config.kafkaBrokers.join(',');
    const extra = cli(['lag'], { KAFKA_BROKERS: plaintext, SONIC_KAFKA_SSL: 'false' });
    expect(extra.code).toBe(1);
    expect(extra.stderr).toMatch(/error \[KAFKA_PROTOCOL_MISMATCH\]: the broker at \S+ does not use SASL/);
  });
});

// the API fails like the CLI: it exits instead of serving /readyz false for ever
describe('the API with a wrong password', () => {
  it('exits 1 with KAFKA_AUTH_FAILED', async () => {
    const t = Date.now();
    const p = startSonicflow(['api'], {
      ...env,
      SONIC_API_PORT: '0',
      SONIC_LOG_LEVEL: 'warn',
      SONIC_TOPIC_PREFIX: uniqueName('secapi'),
      SONIC_KAFKA_SASL_PASSWORD: 'wrong',
    });
    const code = await Promise.race([p.exited, new Promise<string>((r) => setTimeout(() => r('still running after 30 s'), 30_000))]);
    expect(code, p.logs().slice(-2000)).toBe(1);
    expect(p.logs()).toContain('error [KAFKA_AUTH_FAILED]');
    expect(Date.now() - t).toBeLessThan(30_000);
  });
});

// a principal without READ on the status topic: the API's view cannot follow it; the API says so
// and exits rather than staying up and unready for good
describe('the API refused READ on its status topic', () => {
  it('exits 1 with KAFKA_NOT_AUTHORIZED naming the topic', async () => {
    const pp = uniqueName('noread');
    const users = await createSecureUsers([`${pp}-api`]);
    const admin = users.context('admin');
    const prefix = uniqueName('noread').replace(/-/g, '_');
    const topology = sonicTopology({ prefix });
    await deployWithAcls(topology, { ctx: admin, env: (u) => users.env(u), principalPrefix: pp });
    const api = deriveAcls(topology, { clientId: 'sonicflow', principalPrefix: pp }).find((p) => p.name === 'api')!;
    const read = api.bindings.find((b) => b.resourceType === 'TOPIC' && b.name === topology.statusTopic && b.operation === 'READ')!;
    const acls = await new AclAdmin(admin.kafka).connect();
    try {
      await acls.delete([read]);
    } finally {
      await acls.close();
    }
    const p = startSonicflow(['api'], {
      ...users.env(`${pp}-api`),
      SONIC_TOPIC_PREFIX: prefix,
      SONIC_API_PORT: '0',
      SONIC_API_AUTH: 'disabled',
      SONIC_LOG_LEVEL: 'warn',
    });
    const code = await Promise.race([p.exited, new Promise<string>((r) => setTimeout(() => r('still running after 60 s'), 60_000))]);
    if (typeof code === 'string') p.proc.kill('SIGTERM');
    expect(code, p.logs().slice(-2000)).toBe(1);
    expect(p.logs()).toContain(`error [KAFKA_NOT_AUTHORIZED]: not authorized to read topic ${topology.statusTopic}`);
  }, 180_000);
});
