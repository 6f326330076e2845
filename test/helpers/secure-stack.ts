/**
 * The secured local stack (`stack.sh up --secure`: SASL_SSL with SCRAM-SHA-512, a local CA, the
 * StandardAuthorizer, a registry of its own), started by the test that needs it when it does not
 * run yet (idempotent, shared by every file under the stack's lock), and the client environment
 * it prints: KAFKA_BROKERS, SCHEMA_REGISTRY_URL, SONIC_S3_ENDPOINT and SONIC_KAFKA_SSL* / SASL*
 * of its admin user.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './infra.js';

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
