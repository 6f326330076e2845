/**
 * How a benchmark reaches Kafka when it does not go through the product (the raw kafkajs chain,
 * the Kafka Streams JVM, Kafka's perf tools): with the product's own connection settings, read
 * from the same variables by the same code (`loadConfig`, and `kafkaConnection` of
 * src/app/context.ts): SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE, SONIC_KAFKA_SASL_MECHANISM,
 * SONIC_KAFKA_SASL_USERNAME, SONIC_KAFKA_SASL_PASSWORD. Unset, every client stays plaintext.
 *
 * - {@link benchKafkajs}: a kafkajs client with the benchmark's own tuning plus that TLS and SASL,
 *   guarded like the product's (`guardKafkajsAccess`): a wrong password, an untrusted
 *   certificate or a plaintext client at a TLS listener fails at the first connect with an error
 *   that says so.
 * - {@link javaClientProperties} / {@link writeJavaClientProperties}: the same settings for a Java
 *   client (security.protocol, sasl.mechanism, sasl.jaas.config, a PEM truststore), written to a
 *   file of mode 0600 in a private temporary directory, for Kafka Streams and the perf tools.
 *
 * The password is never printed: {@link describeKafkaSecurity} names the user, not the secret.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Kafka, KafkaConfig } from 'kafkajs';
import * as kafkajs from '../src/kafka/kafkajs.js';
import { kafkaConnection } from '../src/app/context.js';
import { loadConfig, type Config } from '../src/core/config.js';
import { guardKafkajsAccess, type KafkaConnection } from '../src/kafka/client.js';

/** TLS and SASL of a connection, as the product's clients get them. */
export type KafkaSecurity = Pick<KafkaConnection, 'ssl' | 'sasl'>;

/** The TLS and SASL settings of the environment (`{}` for a plaintext broker). */
export function kafkaSecurity(env: NodeJS.ProcessEnv = process.env): KafkaSecurity {
  const { ssl, sasl } = kafkaConnection(loadConfig(env));
  return { ...(ssl === undefined ? {} : { ssl }), ...(sasl === undefined ? {} : { sasl }) };
}

/**
 * A kafkajs client of a benchmark: `config` (client id, brokers, timeouts, retries, log level: the
 * benchmark's own) with the environment's TLS and SASL, its connections guarded as the product's.
 */
export function benchKafkajs(config: Omit<KafkaConfig, 'ssl' | 'sasl' | 'brokers'> & { brokers: string[] }, env: NodeJS.ProcessEnv = process.env): Kafka {
  const security = kafkaSecurity(env);
  const kafka = new kafkajs.Kafka({ ...config, ...security });
  guardKafkajsAccess(kafka, {
    brokers: config.brokers,
    ...(security.ssl === undefined ? {} : { ssl: security.ssl }),
    ...(security.sasl === undefined ? {} : { sasl: { mechanism: security.sasl.mechanism, username: security.sasl.username } }),
    timeoutMs: Math.min(config.connectionTimeout ?? 5000, 5000),
  });
  return kafka;
}

/** The Java client's names of the SASL mechanisms and their login modules. */
const JAVA_SASL: Record<Exclude<Config['kafkaSaslMechanism'], ''>, { mechanism: string; module: string }> = {
  plain: { mechanism: 'PLAIN', module: 'org.apache.kafka.common.security.plain.PlainLoginModule' },
  'scram-sha-256': { mechanism: 'SCRAM-SHA-256', module: 'org.apache.kafka.common.security.scram.ScramLoginModule' },
  'scram-sha-512': { mechanism: 'SCRAM-SHA-512', module: 'org.apache.kafka.common.security.scram.ScramLoginModule' },
};

/** The Java client's security.protocol for the environment's settings. */
function securityProtocol(c: Config): 'PLAINTEXT' | 'SSL' | 'SASL_PLAINTEXT' | 'SASL_SSL' {
  if (c.kafkaSaslMechanism) return c.kafkaSsl ? 'SASL_SSL' : 'SASL_PLAINTEXT';
  return c.kafkaSsl ? 'SSL' : 'PLAINTEXT';
}

/** A JAAS option value, double-quoted (Kafka's JAAS parser takes backslash escapes inside quotes). */
const jaasQuoted = (s: string): string => `"${s.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;

/**
 * The Java client properties of the environment's connection (none for a plaintext broker): the
 * security protocol; with SASL, the mechanism under its Java name and the JAAS line of its login
 * module with the user and password; with SONIC_KAFKA_SSL_CA_FILE, that file as a PEM truststore
 * (without it, TLS trusts the JVM's default CAs, as the product then trusts the system's).
 */
export function javaClientProperties(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const c = loadConfig(env);
  const protocol = securityProtocol(c);
  if (protocol === 'PLAINTEXT') return {};
  const props: Record<string, string> = { 'security.protocol': protocol };
  if (c.kafkaSaslMechanism) {
    const { mechanism, module } = JAVA_SASL[c.kafkaSaslMechanism];
    props['sasl.mechanism'] = mechanism;
    props['sasl.jaas.config'] = `${module} required username=${jaasQuoted(c.kafkaSaslUsername)} password=${jaasQuoted(c.kafkaSaslPassword)};`;
  }
  if (c.kafkaSsl && c.kafkaSslCaFile) {
    props['ssl.truststore.type'] = 'PEM';
    props['ssl.truststore.location'] = resolve(c.kafkaSslCaFile);
  }
  return props;
}

/** A value escaped for a Java properties file: backslashes, control and non-ASCII characters (as \uXXXX), a leading blank. */
function propertyValue(v: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const code = v.charCodeAt(i);
    if (v[i] === '\\') out += '\\\\';
    else if (code < 0x20 || code > 0x7e) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else if (i === 0 && v[i] === ' ') out += '\\ ';
    else out += v[i];
  }
  return out;
}

/** The lines of a Java properties file for `props`. */
export function javaPropertiesText(props: Record<string, string>): string {
  return Object.entries(props)
    .map(([k, v]) => `${k}=${propertyValue(v)}\n`)
    .join('');
}

/** A Java client properties file written for one run; `remove()` deletes it and its directory. */
export interface JavaClientConfig {
  path: string;
  remove(): void;
}

/**
 * Writes {@link javaClientProperties} to `client.properties` (mode 0600) in a fresh private
 * temporary directory, or returns undefined for a plaintext broker (no file, nothing to pass).
 * The file holds the password: call `remove()` when the run ends (it is also removed when this
 * process exits normally).
 */
export function writeJavaClientProperties(env: NodeJS.ProcessEnv = process.env): JavaClientConfig | undefined {
  const props = javaClientProperties(env);
  if (Object.keys(props).length === 0) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-bench-kafka-'));
  const path = join(dir, 'client.properties');
  writeFileSync(path, javaPropertiesText(props), { mode: 0o600, flag: 'wx' });
  const remove = (): void => {
    process.removeListener('exit', remove);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', remove);
  return { path, remove };
}

/** How the environment's clients connect, for logs: protocol, mechanism, user and CA file; never the password. */
export function describeKafkaSecurity(env: NodeJS.ProcessEnv = process.env): string {
  const c = loadConfig(env);
  const protocol = securityProtocol(c);
  const parts: string[] = [protocol];
  if (c.kafkaSaslMechanism) parts.push(`${c.kafkaSaslMechanism} as ${c.kafkaSaslUsername || '(no user)'}`);
  if (c.kafkaSsl) parts.push(c.kafkaSslCaFile ? `CA ${c.kafkaSslCaFile}` : 'system CAs');
  return parts.join(', ');
}
