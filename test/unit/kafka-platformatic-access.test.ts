/**
 * The @platformatic/kafka producers refuse a broker that will never let them in, with the
 * project's access errors, as kafkajs' clients do (src/kafka/access.ts): the client's own errors,
 * built with its error classes in the shapes it reports them (a network error inside a "cannot
 * connect to any broker" aggregate, marked retriable), and a TLS listener on loopback whose
 * certificate nothing trusts.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server } from 'node:tls';
import { AuthenticationError, MultipleErrors, NetworkError, ProtocolError, UserError } from '@platformatic/kafka';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { explainAccessError, isAccessError } from '../../src/kafka/access.js';
import { eventProducer, loadKafkaClient, transactionalProducer } from '../../src/kafka/clients.js';
import { createKafka } from '../../src/kafka/client.js';
import { normalizeError } from '../../src/kafka/platformatic/options.js';
import { requireKip447 } from '../../src/kafka/platformatic/producer.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

const scram = { mechanism: 'scram-sha-512', username: 'admin' };
/** What the client reports when no bootstrap broker let it in, `cause` being why. */
const cannotConnect = (cause: Error): Error =>
  new MultipleErrors('Cannot connect to any broker.', [new NetworkError('Connection to b:9192 failed.', { cause })]);

// the @platformatic/kafka adapter, loaded before the factories are used with it
await loadKafkaClient('platformatic');

describe("explainAccessError with @platformatic/kafka's errors", () => {
  it('a wrong password (SaslAuthenticate answered SASL_AUTHENTICATION_FAILED) is KAFKA_AUTH_FAILED, not the retriable network error', () => {
    const err = cannotConnect(new AuthenticationError('SASL authentication failed.', { cause: new ProtocolError('SASL_AUTHENTICATION_FAILED') }));
    expect(NetworkError.isRetryable(err)).toBe(true);
    const e = explainAccessError(err, { brokers: ['b:9192'], sasl: scram });
    expect(e?.code).toBe('KAFKA_AUTH_FAILED');
    expect(e?.retryable).toBe(false);
    expect(e?.message).toMatch(/SASL authentication failed for user admin \(scram-sha-512\) at b:9192: wrong user name or password/);
  });

  it('SASL at a listener without it is KAFKA_PROTOCOL_MISMATCH; an untrusted certificate KAFKA_TLS_UNTRUSTED', () => {
    const sasl = cannotConnect(new AuthenticationError('Cannot find a suitable SASL mechanism.', { cause: new ProtocolError('ILLEGAL_SASL_STATE') }));
    expect(explainAccessError(sasl, { brokers: ['b:9192'], sasl: scram })?.code).toBe('KAFKA_PROTOCOL_MISMATCH');
    const tls = cannotConnect(Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }));
    expect(explainAccessError(tls, { brokers: ['b:9192'] })?.code).toBe('KAFKA_TLS_UNTRUSTED');
  });

  it('an unreachable broker is no access error; its protocol-less errors keep no type', () => {
    const refused = cannotConnect(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }));
    expect(explainAccessError(refused, { brokers: ['b:9192'], sasl: scram })).toBeUndefined();
    expect((normalizeError(refused) as { type?: string }).type).toBeUndefined();
  });

  it("the client's own errors for a protocol error get its name: an unknown topic is UNKNOWN_TOPIC_OR_PARTITION", () => {
    expect((normalizeError(new UserError('Unknown topic t1.')) as { type?: string }).type).toBe('UNKNOWN_TOPIC_OR_PARTITION');
    expect((normalizeError(new UserError('Cannot begin a transaction on a non-idempotent producer.')) as { type?: string }).type).toBeUndefined();
  });
});

/** A TLS listener with a self-signed certificate for localhost (trusted by nobody). */
async function untrustedListener(): Promise<string> {
  const d = mkdtempSync(join(tmpdir(), 'sonicflow-pki-'));
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', join(d, 'k.pem'), '-out', join(d, 'c.pem')],
    { stdio: 'ignore' },
  );
  const s = createTlsServer({ key: readFileSync(join(d, 'k.pem')), cert: readFileSync(join(d, 'c.pem')) }, (c) => c.on('error', () => undefined));
  s.on('tlsClientError', () => undefined);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `localhost:${(s.address() as { port: number }).port}`;
}

describe('the @platformatic/kafka producers at connect', () => {
  it('refuse a broker whose certificate is not trusted with KAFKA_TLS_UNTRUSTED at once', async () => {
    const broker = await untrustedListener();
    const kafka = createKafka({ brokers: [broker], clientId: 'pk-access', client: 'platformatic', ssl: true }, createLogger('test', 'silent'));
    for (const connect of [() => transactionalProducer(kafka, 'pk-access-tx').connect(), () => eventProducer(kafka).connect()]) {
      const started = Date.now();
      const err = await connect().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAccessError(err) && err.code).toBe('KAFKA_TLS_UNTRUSTED');
      expect(Date.now() - started).toBeLessThan(5000);
    }
  });
});

describe('a broker without KIP-447 offset commits', () => {
  it('is refused before a transaction commits offsets unfenced', () => {
    const refused = (v: number | undefined) => () =>
      requireKip447(v === undefined ? [{ name: 'Produce', maxVersion: 9 }] : [{ name: 'TxnOffsetCommit', maxVersion: v }]);
    expect(refused(2)).toThrow(expect.objectContaining({ code: 'KAFKA_PROTOCOL_MISMATCH', retryable: false }));
    expect(refused(2)).toThrow(/TxnOffsetCommit is v2 at most.*KIP-447.*SONIC_KAFKA_CLIENT=kafkajs/);
    expect(refused(undefined)).toThrow(/TxnOffsetCommit is missing/);
    expect(refused(3)).not.toThrow();
    expect(refused(5)).not.toThrow();
  });
});
