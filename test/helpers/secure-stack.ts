/**
 * The secured local stack (`stack.sh up --secure`: SASL_SSL with SCRAM-SHA-512, a local CA, the
 * StandardAuthorizer, a registry of its own), started by the test that needs it when it does not
 * run yet (idempotent, shared by every file under the stack's lock), and the client environment
 * it prints: KAFKA_BROKERS, SCHEMA_REGISTRY_URL, SONIC_S3_ENDPOINT and SONIC_KAFKA_SSL* / SASL*
 * of its admin user.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Context } from '../../src/app/context.js';
import { ROOT, onCleanup } from './infra.js';

let started: Record<string, string> | undefined;

/** Starts (or finds) the secured stack and returns the environment a client needs for it. */
export function secureStack(): Record<string, string> {
  if (started) return started;
  // the secured stack's own broker and registry: an outer KAFKA_BROKERS names the plaintext one
  const env = { ...process.env };
  delete env.KAFKA_BROKERS;
  delete env.SCHEMA_REGISTRY_URL;
  const out = execFileSync('bash', [join(ROOT, 'ops/stack/stack.sh'), 'up', '--secure'], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 240_000,
  });
  const vars: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars[m[1]!] = m[2]!;
  }
  for (const k of ['KAFKA_BROKERS', 'SCHEMA_REGISTRY_URL', 'SONIC_KAFKA_SSL_CA_FILE', 'SONIC_KAFKA_SASL_PASSWORD']) {
    if (!vars[k]) throw new Error(`stack.sh up --secure printed no ${k}; it printed:\n${out}`);
  }
  started = vars;
  return vars;
}

/** A CA of its own (self-signed, signed nothing the broker uses), as a PEM file. */
export function otherCa(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-other-ca-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=not the broker CA',
      '-keyout',
      join(dir, 'ca.key'),
      '-out',
      join(dir, 'ca.pem'),
    ],
    { stdio: 'ignore' },
  );
  return join(dir, 'ca.pem');
}

/** SCRAM-SHA-512 users of the secured stack, and how a sonicflow process connects as one. */
export interface SecureUsers {
  /** The environment of a sonicflow process connecting as `user` (one of the users made, or `admin`). */
  env(user: string): Record<string, string>;
  /** A Context (quiet logs) connecting as `user`. */
  context(user: string): Context;
}

/** Users made at once by `createSecureUsers`: each is a JVM of Kafka's tool (about 1.5 s of a core). */
const TOOL_CONCURRENCY = 3;

/**
 * Makes SCRAM-SHA-512 users (random passwords) on the secured stack, which has no ACL for them:
 * with Kafka's kafka-configs tool as its admin, since kafkajs has no AlterUserScramCredentials.
 * Their names should be unique to the test run (a unique principal prefix); they are deleted
 * after the file's tests.
 */
export async function createSecureUsers(users: string[]): Promise<SecureUsers> {
  const admin = secureStack();
  const config = adminProperties(admin);
  const configs = (args: string[]): Promise<void> =>
    new Promise((resolve, reject) => {
      const p = spawn(
        'bash',
        [join(ROOT, 'ops/stack/stack.sh'), 'tool', 'configs', '--bootstrap-server', admin.KAFKA_BROKERS!, '--command-config', config, '--alter', ...args],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('error', reject);
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`kafka-configs --alter ${args.join(' ')} failed (${code}): ${stderr}`))));
    });
  const user = (name: string): string[] => ['--entity-type', 'users', '--entity-name', name];
  const passwords = new Map(users.map((u) => [u, randomBytes(12).toString('hex')]));
  onCleanup(() => eachAtMost(TOOL_CONCURRENCY, users, (u) => configs(['--delete-config', 'SCRAM-SHA-512', ...user(u)])));
  await eachAtMost(TOOL_CONCURRENCY, users, (u) => configs(['--add-config', `SCRAM-SHA-512=[password=${passwords.get(u)!}]`, ...user(u)]));
  const env = (name: string): Record<string, string> => {
    if (name === 'admin') return admin;
    const password = passwords.get(name);
    if (!password) throw new Error(`no secure user ${name} was made (users: ${users.join(', ')})`);
    return { ...admin, SONIC_KAFKA_SASL_USERNAME: name, SONIC_KAFKA_SASL_PASSWORD: password };
  };
  return {
    env,
    context: (name) => new Context({ ...process.env, ...env(name), SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'error' }, 'test'),
  };
}

/** Kafka's tools' client properties for the stack's admin (`--command-config`), from its client environment. */
function adminProperties(env: Record<string, string>): string {
  const file = join(mkdtempSync(join(tmpdir(), 'sonicflow-secure-admin-')), 'admin.properties');
  const props = [
    'security.protocol=SASL_SSL',
    'sasl.mechanism=SCRAM-SHA-512',
    `sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${env.SONIC_KAFKA_SASL_USERNAME}" password="${env.SONIC_KAFKA_SASL_PASSWORD}";`,
    'ssl.truststore.type=PEM',
    `ssl.truststore.location=${env.SONIC_KAFKA_SSL_CA_FILE}`,
  ];
  writeFileSync(file, `${props.join('\n')}\n`, { mode: 0o600 });
  return file;
}

/** Runs `fn` on every item, at most `n` at a time; rejects with the first failure once all have settled. */
async function eachAtMost<T>(n: number, items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item).catch((err: unknown) => void errors.push(err));
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
}
