/**
 * The broker access probe (src/kafka/access.ts) against small fake listeners on loopback, and the
 * mapping of kafkajs' SASL failure: what the secured-stack test (test/integration/
 * secure-kafka.test.ts) proves on a real broker, here down to the SaslHandshake answers.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { explainAccessError, isAccessError, probeAccess } from '../../src/kafka/access.js';
import { untilConnected } from '../../src/kafka/client.js';
import { kafkaConnection } from '../../src/app/context.js';
import { loadConfig } from '../../src/core/config.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A listener that answers each SaslHandshake with `errorCode` and `mechanisms`, or (null) closes at once. */
async function fakeBroker(answer: { errorCode: number; mechanisms: string[] } | null): Promise<string> {
  const server = createServer((sock: Socket) => {
    if (answer === null) return void sock.destroy();
    sock.once('data', (req: Buffer) => {
      const correlationId = req.readInt32BE(8);
      const names = answer.mechanisms.map((m) => {
        const b = Buffer.alloc(2 + m.length);
        b.writeInt16BE(m.length);
        b.write(m, 2);
        return b;
      });
      const body = Buffer.concat([Buffer.alloc(10), ...names]);
      body.writeInt32BE(correlationId, 0);
      body.writeInt16BE(answer.errorCode, 4);
      body.writeInt32BE(names.length, 6);
      const size = Buffer.alloc(4);
      size.writeInt32BE(body.length);
      sock.write(Buffer.concat([size, body]));
    });
    sock.on('error', () => undefined);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return `127.0.0.1:${addr.port}`;
}

const scram = { mechanism: 'scram-sha-512', username: 'admin' };

describe('probeAccess', () => {
  it('a listener without SASL: ok without SASL, KAFKA_PROTOCOL_MISMATCH with it', async () => {
    const broker = await fakeBroker({ errorCode: 34, mechanisms: [] });
    expect(await probeAccess({ brokers: [broker], timeoutMs: 2000 })).toEqual({ kind: 'ok' });
    const v = await probeAccess({ brokers: [broker], sasl: scram, timeoutMs: 2000 });
    expect(v.kind).toBe('refused');
    if (v.kind === 'refused') {
      expect(v.error.code).toBe('KAFKA_PROTOCOL_MISMATCH');
      expect(v.error.retryable).toBe(false);
      expect(v.error.message).toMatch(/does not use SASL/);
    }
  });

  it('a SASL listener: ok with an offered mechanism, a mismatch without SASL or with another mechanism', async () => {
    const offers = await fakeBroker({ errorCode: 0, mechanisms: ['SCRAM-SHA-512'] });
    expect(await probeAccess({ brokers: [offers], sasl: scram, timeoutMs: 2000 })).toEqual({ kind: 'ok' });
    const none = await probeAccess({ brokers: [offers], timeoutMs: 2000 });
    expect(none.kind === 'refused' && none.error.message).toMatch(/requires SASL authentication \(mechanisms: SCRAM-SHA-512\)/);
    const other = await fakeBroker({ errorCode: 33, mechanisms: ['SCRAM-SHA-512'] });
    const plain = await probeAccess({ brokers: [other], sasl: { mechanism: 'plain', username: 'u' }, timeoutMs: 2000 });
    expect(plain.kind === 'refused' && plain.error.message).toMatch(/does not offer the SASL mechanism PLAIN \(it offers: SCRAM-SHA-512\)/);
  });

  it('a listener that closes every connection and speaks neither: unknown, left to the retries', async () => {
    const closes = await fakeBroker(null);
    expect((await probeAccess({ brokers: [closes], timeoutMs: 2000 })).kind).toBe('unknown');
    expect((await probeAccess({ brokers: [closes], ssl: true, timeoutMs: 2000 })).kind).toBe('unknown');
  });

  it('the first bootstrap broker that answers decides', async () => {
    const closes = await fakeBroker(null);
    const plain = await fakeBroker({ errorCode: 34, mechanisms: [] });
    expect(await probeAccess({ brokers: [closes, plain], timeoutMs: 2000 })).toEqual({ kind: 'ok' });
  });
});

describe('explainAccessError', () => {
  it("kafkajs' SASL failure, also inside its retry error, is KAFKA_AUTH_FAILED naming the user", () => {
    const sasl = Object.assign(new Error('SASL SCRAM SHA512 authentication failed: invalid credentials'), { name: 'KafkaJSSASLAuthenticationError' });
    const wrapped = Object.assign(new Error('retries exceeded'), { name: 'KafkaJSNumberOfRetriesExceeded', originalError: sasl });
    const e = explainAccessError(wrapped, { brokers: ['b:9192'], sasl: scram });
    expect(e?.code).toBe('KAFKA_AUTH_FAILED');
    expect(e?.retryable).toBe(false);
    expect(e?.message).toMatch(/SASL authentication failed for user admin \(scram-sha-512\) at b:9192: wrong user name or password/);
  });

  it('a connection error is not an access error', () => {
    const e = Object.assign(new Error('Connection error: connect ECONNREFUSED'), { name: 'KafkaJSConnectionError' });
    expect(explainAccessError(e, { brokers: ['b:9192'] })).toBeUndefined();
  });
});

describe('untilConnected', () => {
  it('gives up at once on an access error, and retries anything else', async () => {
    const logger = createLogger('test', 'silent');
    let tries = 0;
    const refused = untilConnected(
      'test',
      async () => {
        tries += 1;
        throw new SonicError('KAFKA_TLS_UNTRUSTED', 'not trusted');
      },
      { backoff: { initialMs: 1, maxMs: 2 }, logger },
    );
    await expect(refused).rejects.toSatisfy(isAccessError);
    expect(tries).toBe(1);

    tries = 0;
    await untilConnected(
      'test',
      async () => {
        tries += 1;
        if (tries < 3) throw new Error('Connection error: ECONNREFUSED');
      },
      { backoff: { initialMs: 1, maxMs: 2 }, logger },
    );
    expect(tries).toBe(3);
  });
});

/**
 * A CA and a certificate it signed for localhost, with the extensions `ext` (openssl), in a
 * temporary directory: what a TLS listener of a test presents.
 */
function signedCertificate(ext: string): { ca: string; key: Buffer; cert: Buffer } {
  const d = mkdtempSync(join(tmpdir(), 'sonicflow-pki-'));
  const ssl = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
  ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test CA', '-keyout', join(d, 'ca.key'), '-out', join(d, 'ca.pem')]);
  ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', join(d, 'srv.key'), '-out', join(d, 'srv.csr')]);
  writeFileSync(join(d, 'srv.ext'), ext);
  ssl([
    'x509',
    '-req',
    '-in',
    join(d, 'srv.csr'),
    '-CA',
    join(d, 'ca.pem'),
    '-CAkey',
    join(d, 'ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    join(d, 'srv.ext'),
    '-out',
    join(d, 'srv.pem'),
  ]);
  return { ca: readFileSync(join(d, 'ca.pem'), 'utf8'), key: readFileSync(join(d, 'srv.key')), cert: readFileSync(join(d, 'srv.pem')) };
}

async function tlsListener(o: { key: Buffer; cert: Buffer; requestCert?: boolean }): Promise<string> {
  const s = createTlsServer({ key: o.key, cert: o.cert, ...(o.requestCert ? { requestCert: true, rejectUnauthorized: true } : {}) }, (c) =>
    c.on('error', () => undefined),
  );
  s.on('tlsClientError', () => undefined);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `localhost:${(s.address() as { port: number }).port}`;
}

describe('the access probe and certificates', () => {
  it('a certificate the trusted CA signed, but not for a server (clientAuth only), is KAFKA_TLS_UNTRUSTED, not left to retries', async () => {
    const pki = signedCertificate('subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n');
    const broker = await tlsListener(pki);
    const v = await probeAccess({ brokers: [broker], ssl: { ca: [pki.ca] }, timeoutMs: 2000 });
    expect(v.kind === 'refused' ? `${v.error.code}: ${v.error.message}` : JSON.stringify(v)).toMatch(/^KAFKA_TLS_UNTRUSTED: .*certificate/);
  });

  it('a broker that demands a client certificate (mutual TLS) is KAFKA_PROTOCOL_MISMATCH saying so', async () => {
    const pki = signedCertificate('subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
    const broker = await tlsListener({ ...pki, requestCert: true });
    const v = await probeAccess({ brokers: [broker], ssl: { ca: [pki.ca] }, timeoutMs: 2000 });
    expect(v.kind === 'refused' ? `${v.error.code}: ${v.error.message}` : JSON.stringify(v)).toMatch(
      /^KAFKA_PROTOCOL_MISMATCH: .*client certificate \(mutual TLS\)/,
    );
  });
});

describe('the CA file', () => {
  const connect = (file: string) => () => kafkaConnection(loadConfig({ SONIC_KAFKA_SSL: 'true', SONIC_KAFKA_SSL_CA_FILE: file }));
  it('missing, or holding no certificate, is CONFIG_INVALID naming SONIC_KAFKA_SSL_CA_FILE', () => {
    const d = mkdtempSync(join(tmpdir(), 'sonicflow-ca-'));
    expect(connect(join(d, 'absent.pem'))).toThrow(/^SONIC_KAFKA_SSL_CA_FILE: cannot read .*absent\.pem \(ENOENT\)$/);
    writeFileSync(join(d, 'empty.pem'), 'not a certificate\n');
    expect(connect(join(d, 'empty.pem'))).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(/holds no PEM certificate/) }),
    );
    writeFileSync(join(d, 'ca.pem'), signedCertificate('basicConstraints=CA:FALSE\n').ca);
    expect(connect(join(d, 'ca.pem'))().ssl).toEqual({ ca: [expect.stringContaining('-----BEGIN CERTIFICATE-----')] });
  });
});
