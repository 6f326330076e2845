import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeSettings, isSet, loadConfig, longestRenderMs, publicApiUrl } from '../../src/core/config.js';
import { ERROR_CODES, SonicError, publicError, toSonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { thrown } from '../helpers/errors.js';
import { sonicflow } from '../helpers/infra.js';

describe('configuration', () => {
  it('has documented defaults for the local stack', () => {
    const c = loadConfig({});
    expect(c.kafkaBrokers).toEqual(['localhost:9092']);
    expect(c.schemaRegistryUrl).toBe('http://localhost:8081/apis/ccompat/v7');
    expect(c.topicPrefix).toBe('sonic');
  });

  it('reads and validates the environment, naming the variable on a bad value', () => {
    expect(loadConfig({ KAFKA_BROKERS: 'a:1, b:2', SONIC_TOPIC_PREFIX: 'acme.video' })).toMatchObject({
      kafkaBrokers: ['a:1', 'b:2'],
      topicPrefix: 'acme.video',
    });
    expect(() => loadConfig({ KAFKA_BROKERS: 'no-port' })).toThrow(/KAFKA_BROKERS must be a comma-separated list of host:port/);
    expect(() => loadConfig({ SCHEMA_REGISTRY_URL: 'ftp://x' })).toThrow(/SCHEMA_REGISTRY_URL must be an http\(s\) URL/);
    expect(() => loadConfig({ SONIC_TOPIC_PREFIX: 'bad prefix' })).toThrow(/SONIC_TOPIC_PREFIX/);
    expect(() => loadConfig({ SONIC_LOG_LEVEL: 'loud' })).toThrow(/SONIC_LOG_LEVEL must be one of/);
    const err = thrown(() => loadConfig({ SONIC_KAFKA_REQUEST_TIMEOUT_MS: '-5' }));
    expect(err).toBeInstanceOf(SonicError);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.details).toEqual({ variable: 'SONIC_KAFKA_REQUEST_TIMEOUT_MS' });
  });

  it("links to the API at SONIC_API_PUBLIC_URL, else at localhost on the API's port", () => {
    expect(publicApiUrl(loadConfig({}))).toBe('http://localhost:8080');
    expect(publicApiUrl(loadConfig({ SONIC_API_PORT: '9090' }))).toBe('http://localhost:9090');
    expect(publicApiUrl(loadConfig({ SONIC_API_PORT: '9090', SONIC_API_PUBLIC_URL: 'https://api.example.com/' }))).toBe('https://api.example.com');
    // the API process on port 0 names the port it got
    expect(publicApiUrl({ ...loadConfig({ SONIC_API_PORT: '0' }), apiPort: 41234 })).toBe('http://localhost:41234');
    // any other process cannot know that port: it needs the public URL, and says so
    const err = thrown(() => publicApiUrl(loadConfig({ SONIC_API_PORT: '0' })));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('set SONIC_API_PUBLIC_URL');
    expect(publicApiUrl(loadConfig({ SONIC_API_PORT: '0', SONIC_API_PUBLIC_URL: 'http://api:1' }))).toBe('http://api:1');
  });

  it('tells a setting the environment sets from one left to its default', () => {
    expect(isSet('drainTimeoutMs', { SONIC_DRAIN_TIMEOUT_MS: '5000' })).toBe(true);
    expect(isSet('drainTimeoutMs', { SONIC_DRAIN_TIMEOUT_MS: '' })).toBe(false);
    expect(isSet('drainTimeoutMs', {})).toBe(false);
    // a drain as long as the longest render is a valid setting (the pods of a GPU stage get one)
    const c = loadConfig({ SONIC_MAX_AUDIO_SECONDS: '400' });
    expect(longestRenderMs(c)).toBe((120 + 60 * 400) * 1000);
    expect(loadConfig({ SONIC_DRAIN_TIMEOUT_MS: String(longestRenderMs(c) + 30_000) }).drainTimeoutMs).toBe(24_150_000);
  });

  it('lists every variable with its default in docs/configuration.md', () => {
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'configuration.md'), 'utf8');
    for (const s of describeSettings()) {
      expect(doc, s.env).toContain(`\`${s.env}\``);
      expect(doc, s.env).toContain(`\`${s.default}\``);
    }
  });
});

describe('error taxonomy', () => {
  it('gives every error a code and a retryable flag from the catalogue, overridable per error', () => {
    expect(new SonicError('GPU_OOM', 'x').retryable).toBe(true);
    expect(new SonicError('NO_FACE_DETECTED', 'x').retryable).toBe(false);
    expect(new SonicError('INFERENCE_TIMEOUT', 'x', { retryable: false }).retryable).toBe(false);
    for (const [code, def] of Object.entries(ERROR_CODES)) expect(typeof def.retryable, code).toBe('boolean');
  });

  it('serialises code, message and retryable for logs and API answers', () => {
    const e = new SonicError('AUDIO_TOO_SHORT', 'audio is 0.5 s, the minimum is 1 s', { details: { duration_s: 0.5 } });
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      code: 'AUDIO_TOO_SHORT',
      message: 'audio is 0.5 s, the minimum is 1 s',
      retryable: false,
      details: { duration_s: 0.5 },
    });
  });

  it('tells clients only the safe message and the public details; operators keep the rest', () => {
    const leaky = new SonicError('AUDIO_DECODE_FAILED', 'cannot read /tmp/sonicflow-validate-1a2b/audio: ffprobe exited with code 1: moov atom not found', {
      details: { path: '/tmp/sonicflow-validate-1a2b/audio', exitCode: 1, field: 'audio' },
    });
    expect(publicError(leaky)).toEqual({
      code: 'AUDIO_DECODE_FAILED',
      message: ERROR_CODES.AUDIO_DECODE_FAILED.doc,
      retryable: false,
      details: { field: 'audio' },
    });
    expect(leaky.message).toContain('/tmp/sonicflow-validate-1a2b');
    const own = new SonicError('AUDIO_TOO_SHORT', 'the audio is 0.50 s; at least 1 s is needed', { safe: true, details: { durationS: 0.5, minS: 1 } });
    expect(publicError(own)).toEqual({
      code: 'AUDIO_TOO_SHORT',
      message: 'the audio is 0.50 s; at least 1 s is needed',
      retryable: false,
      details: { durationS: 0.5, minS: 1 },
    });
    const s3 = new SonicError('STORAGE_WRITE_FAILED', 'PUT http://minio.internal:9000/bucket/x failed', {
      safe: 'the store could not be written',
      details: { endpoint: 'http://minio.internal:9000' },
    });
    expect(publicError(s3)).toEqual({ code: 'STORAGE_WRITE_FAILED', message: 'the store could not be written', retryable: true });
    expect(publicError(new TypeError('secret internals'))).toEqual({ code: 'INTERNAL', message: ERROR_CODES.INTERNAL.doc, retryable: false });
  });

  it('turns unknown exceptions into non-retryable INTERNAL errors, keeping the cause', () => {
    const cause = new TypeError('x is undefined');
    const e = toSonicError(cause);
    expect(e).toMatchObject({ code: 'INTERNAL', retryable: false, message: 'x is undefined' });
    expect(e.cause).toBe(cause);
    const same = new SonicError('GPU_OOM', 'oom');
    expect(toSonicError(same)).toBe(same);
  });
});

describe('secrets', () => {
  it('reads SASL, TLS and registry credentials from the environment', () => {
    const c = loadConfig({
      SONIC_KAFKA_SASL_MECHANISM: 'scram-sha-512',
      SONIC_KAFKA_SASL_USERNAME: 'svc',
      SONIC_KAFKA_SASL_PASSWORD: 'p4ss',
      SONIC_KAFKA_SSL: 'true',
      SCHEMA_REGISTRY_USERNAME: 'reg',
    });
    expect(c).toMatchObject({
      kafkaSaslMechanism: 'scram-sha-512',
      kafkaSaslUsername: 'svc',
      kafkaSaslPassword: 'p4ss',
      kafkaSsl: true,
      schemaRegistryUsername: 'reg',
    });
    expect(() => loadConfig({ SONIC_KAFKA_SASL_MECHANISM: 'gssapi' })).toThrow(/SONIC_KAFKA_SASL_MECHANISM must be one of/);
  });

  it('never prints a secret: `sonicflow config` shows [redacted], and logs redact passwords and SASL settings', async () => {
    const r = sonicflow(['config'], {
      SONIC_KAFKA_SASL_PASSWORD: 'hunter2-secret',
      SONIC_S3_SECRET_ACCESS_KEY: 'aws-secret-xyz',
      SONIC_API_KEYS: 'acme:key-abc',
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('SONIC_KAFKA_SASL_PASSWORD=[redacted]');
    for (const secret of ['hunter2-secret', 'aws-secret-xyz', 'key-abc']) expect(r.stdout).not.toContain(secret);

    const lines: string[] = [];
    const { Writable } = await import('node:stream');
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(chunk.toString()), cb()) });
    const log = createLogger('t', 'info', sink);
    log.info(
      { kafka: { sasl: { mechanism: 'plain', username: 'u', password: 'hunter2-secret' } }, s3: { secretAccessKey: 'aws-secret-xyz' }, password: 'pw-1' },
      'connecting',
    );
    expect(lines.join('')).toContain('connecting');
    expect(lines.join('')).not.toMatch(/hunter2-secret|aws-secret-xyz|pw-1/);
  });
});
