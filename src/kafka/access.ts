/**
 * Does this client speak the broker's language? A broker that refuses our credentials or whose
 * certificate we do not trust is not "unreachable": kafkajs reports both (and a plaintext client
 * at a TLS listener, or the reverse) as connection errors and retries them, and a stage waiting
 * for its broker would retry them for ever. So before the first connection of a client, one probe
 * of the bootstrap brokers, with nothing but `node:net` and `node:tls`:
 *
 * 1. TCP to the broker; refused or timed out: unreachable — left to the caller's retries.
 * 2. With TLS configured, the handshake, verifying the certificate like kafkajs will (the
 *    configured CA or the system's, and the host name): a verification error is
 *    `KAFKA_TLS_UNTRUSTED`; a handshake that breaks off while the same port answers a plaintext
 *    Kafka request is `KAFKA_PROTOCOL_MISMATCH` (the listener does not speak TLS).
 * 3. A SaslHandshake request (v1) naming the configured mechanism (PLAIN when none is): a listener
 *    without SASL answers ILLEGAL_SASL_STATE, a SASL listener lists its mechanisms. SASL where the
 *    listener has none, none where it requires it, or a mechanism it does not offer, is
 *    `KAFKA_PROTOCOL_MISMATCH`. A plaintext client whose request gets no answer but whose TLS
 *    handshake would succeed talks to a TLS listener: `KAFKA_PROTOCOL_MISMATCH` too.
 *
 * A wrong user name or password shows only in the SASL exchange itself, which kafkajs does: its
 * SASL authentication error becomes `KAFKA_AUTH_FAILED` ({@link explainAccessError}). All three
 * codes are not retryable: `untilConnected` gives up at once on them.
 */
import { isIP, Socket, connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { SonicError } from '../core/errors.js';

/** What the probe needs of a connection's settings. */
export interface AccessSettings {
  brokers: string[];
  ssl?: boolean | { ca: string[] };
  sasl?: { mechanism: string; username: string };
  /** Longest each step waits, ms. */
  timeoutMs: number;
}

/** The codes of a client the broker will never let in as configured (not retryable). */
export const ACCESS_CODES: ReadonlySet<string> = new Set(['KAFKA_AUTH_FAILED', 'KAFKA_TLS_UNTRUSTED', 'KAFKA_PROTOCOL_MISMATCH']);

/** True for an error of {@link ACCESS_CODES}: retrying cannot help. */
export function isAccessError(err: unknown): err is SonicError {
  return err instanceof SonicError && ACCESS_CODES.has(err.code);
}

/** The probe's verdict: `ok`, the broker refused us (`error`), or no answer either way. */
export type AccessVerdict = { kind: 'ok' } | { kind: 'refused'; error: SonicError } | { kind: 'unreachable' } | { kind: 'unknown'; reason: string };

/**
 * OpenSSL's certificate verification errors (X509_V_ERR_*), as Node names them: every one means
 * the broker's certificate will not be accepted as configured, so none is worth a retry.
 */
export const CERT_ERRORS: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * TLS alerts of a broker that wants a client certificate (mutual TLS), which sonicflow does not
 * send: during the handshake (TLS 1.2) or at the first read after it (TLS 1.3).
 */
const CLIENT_CERT_ALERTS = /certificate[ _]required|alert[ _]bad[ _]certificate|alert[ _]handshake[ _]failure/i;

const clientCertRequired = (broker: string, error: string): AccessVerdict =>
  mismatch(
    broker,
    `ended the TLS session (${error.trim().slice(0, 200)}): it requires a client certificate (mutual TLS), which sonicflow does not support; use a SASL_SSL listener`,
    { tls_error: error.trim().slice(0, 200) },
  );

const SASL_HANDSHAKE = 17;
const UNSUPPORTED_SASL_MECHANISM = 33;
const ILLEGAL_SASL_STATE = 34;

function splitBroker(broker: string): { host: string; port: number } {
  const i = broker.lastIndexOf(':');
  const host = broker.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(broker.slice(i + 1)) };
}

/** A SaslHandshake v1 request (request header v1), size-prefixed. */
function saslHandshakeRequest(mechanism: string, correlationId: number): Buffer {
  const clientId = Buffer.from('sonicflow-probe');
  const mech = Buffer.from(mechanism);
  const body = Buffer.alloc(2 + 2 + 4 + 2 + clientId.length + 2 + mech.length);
  let o = body.writeInt16BE(SASL_HANDSHAKE, 0);
  o = body.writeInt16BE(1, o);
  o = body.writeInt32BE(correlationId, o);
  o = body.writeInt16BE(clientId.length, o);
  o += clientId.copy(body, o);
  o = body.writeInt16BE(mech.length, o);
  mech.copy(body, o);
  const size = Buffer.alloc(4);
  size.writeInt32BE(body.length);
  return Buffer.concat([size, body]);
}

/** The SaslHandshake response: error code and the mechanisms the listener enables. */
function parseSaslHandshake(frame: Buffer): { errorCode: number; mechanisms: string[] } {
  let o = 4; // correlation id
  const errorCode = frame.readInt16BE(o);
  o += 2;
  const n = frame.readInt32BE(o);
  o += 4;
  const mechanisms: string[] = [];
  for (let i = 0; i < n && o + 2 <= frame.length; i++) {
    const len = frame.readInt16BE(o);
    o += 2;
    mechanisms.push(frame.subarray(o, o + len).toString());
    o += len;
  }
  return { errorCode, mechanisms };
}

type Exchange = { answer: { errorCode: number; mechanisms: string[] } } | { closed: string } | { timeout: true };

/** Sends one SaslHandshake on `socket` and waits for its answer, the socket's end, or the timeout. */
function saslHandshake(socket: Socket, mechanism: string, timeoutMs: number): Promise<Exchange> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const done = (x: Exchange): void => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      resolve(x);
    };
    const timer = setTimeout(() => done({ timeout: true }), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const size = buf.readInt32BE(0);
      if (size < 10 || size > 1 << 20) return done({ closed: `an answer of ${size} bytes is no SaslHandshake response` });
      if (buf.length >= 4 + size) {
        try {
          done({ answer: parseSaslHandshake(buf.subarray(4, 4 + size)) });
        } catch {
          done({ closed: 'a malformed SaslHandshake response' });
        }
      }
    });
    socket.once('error', (err) => done({ closed: err.message }));
    socket.once('close', () => done({ closed: 'the broker closed the connection' }));
    socket.write(saslHandshakeRequest(mechanism, 0x50524f42));
  });
}

/** A TCP connection, or why not. */
function tcp(host: string, port: number, timeoutMs: number): Promise<Socket | Error> {
  return new Promise((resolve) => {
    const s = netConnect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(new Error(`no TCP connection within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      // later errors reach the exchange that uses the socket; none may go unhandled
      s.on('error', () => undefined);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      resolve(err);
    });
  });
}

/** A TLS session over `socket`, or the handshake's error (with its OpenSSL code), or a timeout. */
function tlsUpgrade(socket: Socket, host: string, ssl: true | { ca: string[] } | 'any', timeoutMs: number): Promise<TLSSocket | (Error & { code?: string })> {
  return new Promise((resolve) => {
    const t = tlsConnect({
      socket,
      ...(isIP(host) ? {} : { servername: host }),
      ...(ssl === 'any' ? { rejectUnauthorized: false } : typeof ssl === 'object' ? { ca: ssl.ca } : {}),
    });
    const timer = setTimeout(() => {
      t.destroy();
      resolve(Object.assign(new Error(`no TLS handshake within ${timeoutMs} ms`), { code: 'TIMEOUT' }));
    }, timeoutMs);
    t.once('secureConnect', () => {
      clearTimeout(timer);
      t.removeAllListeners('error');
      resolve(t);
    });
    t.once('error', (err) => {
      clearTimeout(timer);
      t.destroy();
      resolve(err);
    });
  });
}

/** Whether host:port answers a plaintext Kafka request. */
async function answersPlaintext(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const s = await tcp(host, port, timeoutMs);
  if (s instanceof Error) return false;
  try {
    return 'answer' in (await saslHandshake(s, 'PLAIN', timeoutMs));
  } finally {
    s.destroy();
  }
}

/** Whether host:port completes a TLS handshake (any certificate). */
async function answersTls(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const s = await tcp(host, port, timeoutMs);
  if (s instanceof Error) return false;
  const t = await tlsUpgrade(s, host, 'any', timeoutMs);
  s.destroy();
  if (t instanceof Error) return false;
  t.destroy();
  return true;
}

const mismatch = (broker: string, message: string, details: Record<string, unknown> = {}): AccessVerdict => ({
  kind: 'refused',
  error: new SonicError('KAFKA_PROTOCOL_MISMATCH', `the broker at ${broker} ${message}`, { retryable: false, details: { broker, ...details } }),
});

/** Probes one broker (see the module's comment). */
export async function probeBroker(broker: string, settings: AccessSettings): Promise<AccessVerdict> {
  const { host, port } = splitBroker(broker);
  const timeoutMs = settings.timeoutMs;
  const socket = await tcp(host, port, timeoutMs);
  if (socket instanceof Error) return { kind: 'unreachable' };
  let channel: Socket = socket;
  try {
    if (settings.ssl) {
      const t = await tlsUpgrade(socket, host, settings.ssl, timeoutMs);
      if (t instanceof Error) {
        if (t.code !== undefined && CERT_ERRORS.has(t.code)) {
          const caFile = typeof settings.ssl === 'object' ? 'the CA of SONIC_KAFKA_SSL_CA_FILE' : 'the system CAs (SONIC_KAFKA_SSL_CA_FILE is unset)';
          const why =
            t.code === 'ERR_TLS_CERT_ALTNAME_INVALID'
              ? `its certificate is not valid for the name ${host} (${t.message})`
              : `its certificate is not trusted by ${caFile}: ${t.message}`;
          return {
            kind: 'refused',
            error: new SonicError(
              'KAFKA_TLS_UNTRUSTED',
              `TLS to the broker at ${broker} failed: ${why}; set SONIC_KAFKA_SSL_CA_FILE to the PEM file of the CA that signed the broker's certificate`,
              { retryable: false, details: { broker, tls_error: t.code } },
            ),
          };
        }
        if (t.code === 'TIMEOUT') return { kind: 'unknown', reason: t.message };
        if (CLIENT_CERT_ALERTS.test(`${t.code ?? ''} ${t.message}`)) return clientCertRequired(broker, t.message);
        if (await answersPlaintext(host, port, timeoutMs)) {
          return mismatch(broker, 'does not speak TLS (it answers plaintext Kafka): unset SONIC_KAFKA_SSL, or use the TLS listener of the broker', {
            tls_error: t.message,
          });
        }
        return { kind: 'unknown', reason: t.message };
      }
      channel = t;
    }
    const mechanism = settings.sasl ? settings.sasl.mechanism.toUpperCase() : 'PLAIN';
    const x = await saslHandshake(channel, mechanism, timeoutMs);
    if ('timeout' in x) return { kind: 'unknown', reason: `no answer within ${timeoutMs} ms` };
    if ('closed' in x) {
      if (!settings.ssl && (await answersTls(host, port, timeoutMs))) {
        return mismatch(
          broker,
          'expects TLS (it closed a plaintext connection and completes a TLS handshake): set SONIC_KAFKA_SSL=true and SONIC_KAFKA_SSL_CA_FILE',
        );
      }
      if (settings.ssl && CLIENT_CERT_ALERTS.test(x.closed)) return clientCertRequired(broker, x.closed);
      return { kind: 'unknown', reason: x.closed };
    }
    const { errorCode, mechanisms } = x.answer;
    const offered = mechanisms.join(', ') || 'none';
    if (errorCode === ILLEGAL_SASL_STATE) {
      return settings.sasl
        ? mismatch(broker, `does not use SASL on this listener: unset SONIC_KAFKA_SASL_MECHANISM, or use the broker's SASL listener`)
        : { kind: 'ok' };
    }
    if (!settings.sasl && (errorCode === 0 || errorCode === UNSUPPORTED_SASL_MECHANISM)) {
      return mismatch(
        broker,
        `requires SASL authentication (mechanisms: ${offered}): set SONIC_KAFKA_SASL_MECHANISM, SONIC_KAFKA_SASL_USERNAME and SONIC_KAFKA_SASL_PASSWORD`,
        { mechanisms },
      );
    }
    if (errorCode === UNSUPPORTED_SASL_MECHANISM) {
      return mismatch(broker, `does not offer the SASL mechanism ${mechanism} (it offers: ${offered}): set SONIC_KAFKA_SASL_MECHANISM to one of them`, {
        mechanisms,
      });
    }
    return errorCode === 0 ? { kind: 'ok' } : { kind: 'unknown', reason: `SaslHandshake error code ${errorCode}` };
  } finally {
    channel.destroy();
    socket.destroy();
  }
}

/**
 * Probes the bootstrap brokers in order until one answers either way: `ok` or `refused` from the
 * first that does, `unknown` if one was reached but said nothing conclusive, `unreachable` if none
 * was reached.
 */
export async function probeAccess(settings: AccessSettings): Promise<AccessVerdict> {
  let verdict: AccessVerdict = { kind: 'unreachable' };
  for (const broker of settings.brokers) {
    const v = await probeBroker(broker, settings);
    if (v.kind === 'ok' || v.kind === 'refused') return v;
    if (v.kind === 'unknown') verdict = v;
  }
  return verdict;
}

/**
 * `probeAccess` once per client settings, as a gate before a client's connections: a refusal
 * rejects every later call with its access error, any other verdict lets them through; only
 * "unreachable" is asked again next time (the connection attempt reports the network error).
 */
export function accessGate(settings: AccessSettings): () => Promise<void> {
  let verdict: Promise<void> | undefined;
  return () => {
    verdict ??= probeAccess(settings).then((v) => {
      if (v.kind === 'unreachable') verdict = undefined;
      if (v.kind === 'refused') throw v.error;
    });
    return verdict;
  };
}

/** An error of either client as far as the access checks read it (kafkajs' fields and @platformatic/kafka's). */
interface ClientErrorLike {
  name?: string;
  message?: string;
  code?: unknown;
  type?: string;
  apiId?: string;
  originalError?: unknown;
  cause?: unknown;
  errors?: unknown[];
}

/** `err` and the errors inside it, depth first: kafkajs' `originalError`, `cause`, and an aggregate's `errors`. */
function* nested(err: unknown, depth = 0): Generator<ClientErrorLike> {
  if (depth > 6 || err === null || typeof err !== 'object') return;
  const e = err as ClientErrorLike;
  yield e;
  yield* nested(e.originalError, depth + 1);
  yield* nested(e.cause, depth + 1);
  for (const inner of Array.isArray(e.errors) ? e.errors : []) yield* nested(inner, depth + 1);
}

/**
 * The access error behind a client's connection error, if it is one, however deep the client
 * wrapped it (kafkajs in its retry error; @platformatic/kafka in a network error inside a
 * "cannot connect to any broker" aggregate, both marked retriable):
 * - a failed SASL authentication (kafkajs' `KafkaJSSASLAuthenticationError`, @platformatic/kafka's
 *   `SASL authentication failed.` or the broker's SASL_AUTHENTICATION_FAILED) is `KAFKA_AUTH_FAILED`;
 * - a listener that rejects the SASL handshake is `KAFKA_PROTOCOL_MISMATCH`;
 * - a certificate verification error that reached the client (the probe normally finds it first)
 *   is `KAFKA_TLS_UNTRUSTED`.
 */
export function explainAccessError(err: unknown, settings: Pick<AccessSettings, 'brokers' | 'sasl'>): SonicError | undefined {
  const brokers = settings.brokers.join(',');
  for (const e of nested(err)) {
    if (isAccessError(e)) return e;
    const saslFailed =
      e.name === 'KafkaJSSASLAuthenticationError' ||
      e.apiId === 'SASL_AUTHENTICATION_FAILED' ||
      (e.code === 'PLT_KFK_AUTHENTICATION' && /SASL authentication failed/i.test(e.message ?? ''));
    if (saslFailed) {
      const user = settings.sasl ? `user ${settings.sasl.username} (${settings.sasl.mechanism})` : 'this client';
      return new SonicError(
        'KAFKA_AUTH_FAILED',
        `SASL authentication failed for ${user} at ${brokers}: wrong user name or password (SONIC_KAFKA_SASL_USERNAME, SONIC_KAFKA_SASL_PASSWORD)`,
        { retryable: false, cause: err, details: { brokers, ...(settings.sasl ? { user: settings.sasl.username } : {}) } },
      );
    }
    if ((e.type === 'ILLEGAL_SASL_STATE' || e.apiId === 'ILLEGAL_SASL_STATE') && settings.sasl) {
      return new SonicError(
        'KAFKA_PROTOCOL_MISMATCH',
        `the broker at ${brokers} does not use SASL on this listener: unset SONIC_KAFKA_SASL_MECHANISM, or use the broker's SASL listener`,
        { retryable: false, cause: err },
      );
    }
    if (typeof e.code === 'string' && CERT_ERRORS.has(e.code)) {
      return new SonicError(
        'KAFKA_TLS_UNTRUSTED',
        `TLS to the broker at ${brokers} failed: its certificate is not trusted (${e.message ?? e.code}); set SONIC_KAFKA_SSL_CA_FILE to the PEM file of the CA that signed the broker's certificate`,
        { retryable: false, cause: err, details: { brokers, tls_error: e.code } },
      );
    }
  }
  return undefined;
}
