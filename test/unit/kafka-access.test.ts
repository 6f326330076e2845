/**
 * The broker access probe (src/kafka/access.ts) against small fake listeners on loopback, and the
 * mapping of kafkajs' SASL failure: what the secured-stack test (test/integration/
 * secure-kafka.test.ts) proves on a real broker, here down to the SaslHandshake answers.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { explainAccessError, isAccessError, probeAccess } from '../../src/kafka/access.js';
import { untilConnected } from '../../src/kafka/client.js';

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
