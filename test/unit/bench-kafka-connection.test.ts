/**
 * The benchmarks' connection settings (bench/kafka-connection.ts): the product's variables mapped
 * to kafkajs' TLS and SASL and to a Java client's properties. The benchmarks themselves run them
 * against the secured stack (docs/performance.md).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { javaClientProperties, javaPropertiesText, kafkaSecurity, writeJavaClientProperties } from '../../bench/kafka-connection.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A CA file (any PEM text: it is read, not parsed, here). */
function caFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bench-conn-test-'));
  dirs.push(dir);
  const path = join(dir, 'ca.pem');
  writeFileSync(path, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  return path;
}

describe('bench Kafka connection', () => {
  it('is plaintext without the variables: no TLS, no SASL, no Java properties, no file', () => {
    expect(kafkaSecurity({})).toEqual({});
    expect(javaClientProperties({})).toEqual({});
    expect(writeJavaClientProperties({})).toBeUndefined();
  });

  it('maps SASL_SSL with SCRAM-SHA-512 and a CA file as the product reads them', () => {
    const ca = caFile();
    const env = {
      SONIC_KAFKA_SSL: 'true',
      SONIC_KAFKA_SSL_CA_FILE: ca,
      SONIC_KAFKA_SASL_MECHANISM: 'scram-sha-512',
      SONIC_KAFKA_SASL_USERNAME: 'admin',
      SONIC_KAFKA_SASL_PASSWORD: 'pw',
    };
    expect(kafkaSecurity(env)).toEqual({ ssl: { ca: [readFileSync(ca, 'utf8')] }, sasl: { mechanism: 'scram-sha-512', username: 'admin', password: 'pw' } });
    expect(javaClientProperties(env)).toEqual({
      'security.protocol': 'SASL_SSL',
      'sasl.mechanism': 'SCRAM-SHA-512',
      'sasl.jaas.config': 'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="pw";',
      'ssl.truststore.type': 'PEM',
      'ssl.truststore.location': ca,
    });
  });

  it('maps PLAIN without TLS to SASL_PLAINTEXT, and TLS alone to SSL with the default truststore', () => {
    expect(javaClientProperties({ SONIC_KAFKA_SASL_MECHANISM: 'plain', SONIC_KAFKA_SASL_USERNAME: 'u', SONIC_KAFKA_SASL_PASSWORD: 'p' })).toEqual({
      'security.protocol': 'SASL_PLAINTEXT',
      'sasl.mechanism': 'PLAIN',
      'sasl.jaas.config': 'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";',
    });
    expect(javaClientProperties({ SONIC_KAFKA_SSL: 'true' })).toEqual({ 'security.protocol': 'SSL' });
  });

  it('rejects what the product rejects (one parser)', () => {
    expect(() => javaClientProperties({ SONIC_KAFKA_SASL_MECHANISM: 'gssapi' })).toThrow(/SONIC_KAFKA_SASL_MECHANISM/);
  });

  it('quotes the JAAS values and escapes them for a properties file', () => {
    const props = javaClientProperties({ SONIC_KAFKA_SASL_MECHANISM: 'scram-sha-256', SONIC_KAFKA_SASL_USERNAME: 'ü', SONIC_KAFKA_SASL_PASSWORD: 'a"b\\c' });
    expect(props['sasl.jaas.config']).toBe('org.apache.kafka.common.security.scram.ScramLoginModule required username="ü" password="a\\"b\\\\c";');
    // properties-file escapes on top: \ doubled, non-ASCII as \uXXXX
    expect(javaPropertiesText({ k: props['sasl.jaas.config']! })).toBe(
      'k=org.apache.kafka.common.security.scram.ScramLoginModule required username="\\u00fc" password="a\\\\"b\\\\\\\\c";\n',
    );
    expect(javaPropertiesText({ k: ' x\ny' })).toBe('k=\\ x\\u000ay\n');
  });

  it('writes the Java properties to a private file of mode 0600 and removes it', () => {
    const file = writeJavaClientProperties({
      SONIC_KAFKA_SASL_MECHANISM: 'scram-sha-512',
      SONIC_KAFKA_SASL_USERNAME: 'u',
      SONIC_KAFKA_SASL_PASSWORD: 'secret',
    })!;
    try {
      expect(statSync(file.path).mode & 0o777).toBe(0o600);
      expect(statSync(dirname(file.path)).mode & 0o777).toBe(0o700);
      expect(readFileSync(file.path, 'utf8')).toContain('security.protocol=SASL_PLAINTEXT\n');
    } finally {
      file.remove();
    }
    expect(existsSync(dirname(file.path))).toBe(false);
  });
});
