/**
 * Hostile webhook receivers and callback URLs, against real local servers: slow-loris receivers
 * (status line, headers or body trickled), silent ones, redirects, SSRF targets in every address
 * form (literal, resolved, rebinding), aborts, cross-tenant secrets; then the same through the
 * whole pipeline.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import standardwebhooks from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { SonicError } from '../../src/core/errors.js';
import { HEADERS } from '../../src/runtime/headers.js';
import { makePortrait, makeTone } from '../../src/media/samples.js';
import { resolveWebhookSecret } from '../../src/domain/callbacks.js';
import { deliver, type DeliveryOptions, type Resolver } from '../../src/stages/webhook.js';
import { PlainProducer } from '../../src/kafka/io.js';
import { valueSubject } from '../../src/serde/wire.js';
import type { TaskCompleted } from '../../src/domain/records.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { readAll, waitUntil } from '../helpers/chain.js';
import { recordingServer, type Recorded } from '../helpers/http.js';
import { testContext } from '../helpers/infra.js';
import { startPipeline, type Pipeline } from '../helpers/pipeline.js';

const secret = (fill: string): string => `whsec_${Buffer.alloc(24, fill).toString('base64')}`;
const DEADLINE_MS = 1500;
const SLACK_MS = 700;
const EVENT = { id: 'msg_t1_succeeded', type: 'video.succeeded', data: { task_id: 't1' } };
const LOCAL: DeliveryOptions = { secret: secret('k'), allowHosts: ['127.0.0.1'], timeoutMs: DEADLINE_MS };

/** A raw TCP receiver on 127.0.0.1 that counts accepts and records when each connection closes. */
interface Receiver {
  port: number;
  accepts: number;
  conns: { acceptedAt: number; closedAt?: number }[];
  allClosed(timeoutMs?: number): Promise<void>;
}

const servers: (Server | HttpServer)[] = [];
const openSockets = new Set<Socket>();
afterAll(async () => {
  for (const s of openSockets) s.destroy();
  for (const s of servers) {
    (s as { closeAllConnections?: () => void }).closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
});

async function receiver(onConnection: (socket: Socket) => void = () => undefined): Promise<Receiver> {
  const r: Receiver = {
    port: 0,
    accepts: 0,
    conns: [],
    allClosed: (timeoutMs = 1000) => waitUntil(() => r.conns.every((c) => c.closedAt !== undefined), timeoutMs, 'the receiver sees every connection closed'),
  };
  const server = createServer((socket) => {
    r.accepts += 1;
    const conn: { acceptedAt: number; closedAt?: number } = { acceptedAt: Date.now() };
    r.conns.push(conn);
    openSockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      conn.closedAt = Date.now();
      openSockets.delete(socket);
    });
    onConnection(socket);
    // keep reading (and discarding) so that the client's close is seen even when nothing answers
    socket.resume();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  r.port = (server.address() as AddressInfo).port;
  return r;
}

/** Writes `text` one byte every `everyMs` once the request has arrived, then repeats `tail` forever. */
function trickle(text: string, everyMs = 200, tail = 'x'): (socket: Socket) => void {
  return (socket) => {
    socket.once('data', () => {
      let i = 0;
      const t = setInterval(() => {
        if (socket.destroyed) return clearInterval(t);
        socket.write(i < text.length ? text[i]! : tail);
        i += 1;
      }, everyMs);
      socket.on('close', () => clearInterval(t));
    });
  };
}

async function failure(p: Promise<unknown>): Promise<{ error: SonicError; ms: number }> {
  const started = Date.now();
  try {
    await p;
  } catch (err) {
    return { error: err as SonicError, ms: Date.now() - started };
  }
  throw new Error('the delivery was expected to fail');
}

const resolverOf = (...addresses: string[]): Resolver & { calls: string[] } => {
  const calls: string[] = [];
  const fn = async (host: string) => {
    calls.push(host);
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return Object.assign(fn, { calls });
};

describe('hostile webhook receivers (one total deadline)', () => {
  it('a receiver trickling its status line one byte every 200 ms fails at the deadline, and the connection is closed', async () => {
    const r = await receiver(trickle('HTTP/1.1 200 OK\r\n'));
    const { error, ms } = await failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, LOCAL));
    expect(error.code).toBe('CALLBACK_DELIVERY_FAILED');
    expect(error.retryable).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
    expect(ms).toBeLessThan(DEADLINE_MS + SLACK_MS);
    await r.allClosed();
  });

  it('a receiver answering 200 at once but trickling its header lines fails at the deadline', async () => {
    const r = await receiver(trickle('HTTP/1.1 200 OK\r\nx-slow: ', 20, 'a'));
    const { error, ms } = await failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, LOCAL));
    expect(error.code).toBe('CALLBACK_DELIVERY_FAILED');
    expect(ms).toBeLessThan(DEADLINE_MS + SLACK_MS);
    await r.allClosed();
  });

  it('a receiver sending 200 headers then trickling the body fails at the deadline (a 2xx counts only once the answer is read)', async () => {
    const r = await receiver((socket) =>
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n');
        const t = setInterval(() => (socket.destroyed ? clearInterval(t) : socket.write('.')), 200);
      }),
    );
    const { error, ms } = await failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, LOCAL));
    expect(error.code).toBe('CALLBACK_DELIVERY_FAILED');
    expect(error.message).toMatch(/deadline/);
    expect(ms).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
    expect(ms).toBeLessThan(DEADLINE_MS + SLACK_MS);
    await r.allClosed();
  });

  it('a receiver that accepts and never answers fails at the deadline', async () => {
    const r = await receiver();
    const { error, ms } = await failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, LOCAL));
    expect(error.code).toBe('CALLBACK_DELIVERY_FAILED');
    expect(ms).toBeLessThan(DEADLINE_MS + SLACK_MS);
    expect(r.accepts).toBe(1);
    await r.allClosed();
  });

  it('an endless body is read only up to 4 KiB: a 200 is delivered at once and a 500 fails at once, both connections closed', async () => {
    const endless = (status: string) => (socket: Socket) =>
      socket.once('data', () => {
        socket.write(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\n\r\n`);
        const t = setInterval(() => (socket.destroyed ? clearInterval(t) : socket.write('z'.repeat(16 * 1024))), 5);
      });
    const ok = await receiver(endless('200 OK'));
    const started = Date.now();
    await expect(deliver(`http://127.0.0.1:${ok.port}/hook`, EVENT, LOCAL)).resolves.toBe(200);
    expect(Date.now() - started).toBeLessThan(DEADLINE_MS / 2);
    await ok.allClosed();
    const bad = await receiver(endless('500 Internal Server Error'));
    const { error, ms } = await failure(deliver(`http://127.0.0.1:${bad.port}/hook`, EVENT, LOCAL));
    expect(error.code).toBe('CALLBACK_DELIVERY_FAILED');
    expect(error.details).toMatchObject({ status: 500 });
    expect(error.message.length).toBeLessThan(400);
    expect(ms).toBeLessThan(DEADLINE_MS / 2);
    await bad.allClosed();
  });

  it('a redirect to 127.0.0.1 is not followed (even to an allow-listed host): CALLBACK_URL_REFUSED, the target never contacted', async () => {
    const target = await receiver();
    const r = await receiver((socket) =>
      socket.once('data', () => socket.end(`HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:${target.port}/internal\r\ncontent-length: 0\r\n\r\n`)),
    );
    const { error } = await failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, LOCAL));
    expect(error.code).toBe('CALLBACK_URL_REFUSED');
    expect(error.retryable).toBe(false);
    expect(target.accepts).toBe(0);
    await r.allClosed();
  });

  it('the stage abort signal ends a delivery at once with its reason, and closes the connection', async () => {
    const r = await receiver();
    const ac = new AbortController();
    const pending = failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, { ...LOCAL, timeoutMs: 60_000, signal: ac.signal }));
    await waitUntil(() => r.accepts === 1, 5000, 'the connection');
    const abortedAt = Date.now();
    ac.abort(new SonicError('SHUTDOWN', 'partition revoked'));
    const { error } = await pending;
    expect(error.code).toBe('SHUTDOWN');
    expect(Date.now() - abortedAt).toBeLessThan(300);
    await r.allClosed();
    // an abort without a SonicError reason is a failed (retryable) delivery; an aborted signal connects nowhere
    const ac2 = new AbortController();
    const second = failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, { ...LOCAL, timeoutMs: 60_000, signal: ac2.signal }));
    await waitUntil(() => r.accepts === 2, 5000, 'the second connection');
    ac2.abort();
    expect((await second).error.code).toBe('CALLBACK_DELIVERY_FAILED');
    expect((await failure(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, { ...LOCAL, signal: AbortSignal.abort() }))).error.code).toBe(
      'CALLBACK_DELIVERY_FAILED',
    );
    await r.allClosed();
    expect(r.accepts).toBe(2);
  });
});

describe('SSRF targets in every address form (refused without a TCP connection)', () => {
  let r: Receiver;
  beforeAll(async () => {
    r = await receiver((socket) => socket.once('data', () => socket.end('HTTP/1.1 204 No Content\r\n\r\n')));
  });
  const noAllow: DeliveryOptions = { ...LOCAL, allowHosts: [] };

  it('a healthy allow-listed receiver gets a verifiable event (the control case: the harness can connect)', async () => {
    await expect(deliver(`http://127.0.0.1:${r.port}/hook`, EVENT, LOCAL)).resolves.toBe(204);
    expect(r.accepts).toBe(1);
  });

  it.each([
    (port: number) => `http://localhost:${port}/hook`,
    (port: number) => `http://localhost.:${port}/hook`,
    (port: number) => `http://127.0.0.1:${port}/hook`,
    (port: number) => `http://2130706433:${port}/hook`,
    (port: number) => `http://0x7f000001:${port}/hook`,
    (port: number) => `http://0177.0.0.1:${port}/hook`,
    (port: number) => `http://127.1:${port}/hook`,
    (port: number) => `http://0.0.0.0:${port}/hook`,
    (port: number) => `http://[::ffff:127.0.0.1]:${port}/hook`,
    (port: number) => `http://[::ffff:7f00:1]:${port}/hook`,
    (port: number) => `http://[::1]:${port}/hook`,
  ])('refuses the literal or reserved name %#', async (url) => {
    const before = r.accepts;
    const { error } = await failure(deliver(url(r.port), EVENT, noAllow));
    expect(error.code).toBe('CALLBACK_URL_REFUSED');
    expect(r.accepts).toBe(before);
  });

  it.each([
    ['127.0.0.1'],
    ['::1'],
    ['0.0.0.0'],
    ['::ffff:127.0.0.1'],
    ['64:ff9b::7f00:1'],
    ['2002:7f00:1::'],
    ['::7f00:1'],
    ['fec0::1'],
    ['169.254.169.254'],
    ['10.0.0.1'],
    ['fd00::1'],
  ])('refuses at connection time a name that resolves to %s', async (address) => {
    const before = r.accepts;
    const resolve = resolverOf(address);
    const { error } = await failure(deliver(`http://hooks.example.test:${r.port}/hook`, EVENT, { ...noAllow, resolve }));
    expect(error.code).toBe('CALLBACK_URL_REFUSED');
    expect(resolve.calls).toEqual(['hooks.example.test']);
    expect(r.accepts).toBe(before);
  });

  it('refuses an answer mixing a public and a loopback address (no fallback to an unchecked address)', async () => {
    const before = r.accepts;
    for (const answer of [
      ['93.184.216.34', '127.0.0.1'],
      ['127.0.0.1', '93.184.216.34'],
      ['2606:4700::1111', '::1'],
    ]) {
      const { error } = await failure(deliver(`http://rebind.example.test:${r.port}/hook`, EVENT, { ...noAllow, resolve: resolverOf(...answer) }));
      expect(error.code, answer.join(' ')).toBe('CALLBACK_URL_REFUSED');
    }
    expect(r.accepts).toBe(before);
  });

  it('the real resolver: localhost through the system lookup is refused unless allow-listed', async () => {
    const before = r.accepts;
    expect((await failure(deliver(`http://localhost:${r.port}/hook`, EVENT, noAllow))).error.code).toBe('CALLBACK_URL_REFUSED');
    expect(r.accepts).toBe(before);
    await expect(deliver(`http://localhost:${r.port}/hook`, EVENT, { ...noAllow, allowHosts: ['localhost'] })).resolves.toBe(204);
    expect(r.accepts).toBe(before + 1);
  });

  it('credentials in the URL are refused even for an allow-listed host', async () => {
    const before = r.accepts;
    expect((await failure(deliver(`http://user:pw@127.0.0.1:${r.port}/hook`, EVENT, LOCAL))).error.code).toBe('CALLBACK_URL_REFUSED');
    expect(r.accepts).toBe(before);
  });
});

describe('tenant-scoped secrets', () => {
  it("a secret_ref never resolves to another tenant's secret, in any spelling", () => {
    const config = loadConfig({ SONIC_WEBHOOK_SECRETS: `acme/default=${secret('a')},globex/billing=${secret('g')}` });
    for (const ref of ['billing', 'globex/billing', '../globex/billing', 'globex%2Fbilling', ' billing', 'billing ']) {
      let code = 'resolved';
      try {
        resolveWebhookSecret(config, 'acme', ref);
      } catch (err) {
        code = (err as SonicError).code;
      }
      expect(code, ref).toBe('CALLBACK_SECRET_UNKNOWN');
    }
    expect(resolveWebhookSecret(config, 'globex', 'billing')).toBe(secret('g'));
  });
});

describe('through the pipeline (API auth required, two tenants)', () => {
  const TENANT_SECRETS = { acme: secret('a'), globex: secret('g'), globexBilling: secret('b'), shared: secret('s') };
  const KEYS = { acme: 'key-acme-0123456789', globex: 'key-globex-0123456789' };
  let p: Pipeline;
  let healthy: HttpServer;
  let base = '';
  let slow: Receiver;
  let deliveries: Recorded[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-hostile-'));

  beforeAll(async () => {
    const hooks = await recordingServer();
    healthy = hooks.server;
    base = hooks.url;
    deliveries = hooks.seen;
    slow = await receiver(trickle('HTTP/1.1 200 OK\r\n', 200));
    p = await startPipeline({
      SONIC_API_AUTH: 'required',
      SONIC_API_KEYS: `acme:${KEYS.acme},globex:${KEYS.globex}`,
      SONIC_WEBHOOK_SECRET: TENANT_SECRETS.shared,
      SONIC_WEBHOOK_SECRETS: `acme/default=${TENANT_SECRETS.acme},globex/default=${TENANT_SECRETS.globex},globex/billing=${TENANT_SECRETS.globexBilling}`,
      SONIC_WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
      SONIC_WEBHOOK_TIMEOUT_MS: String(DEADLINE_MS),
      // one partition at a time per stage: a receiver that held notify would hold every webhook
      SONIC_CONCURRENCY: '1',
    });
    await makeTone(join(dir, 'tone.wav'), 1.5);
    await makePortrait(join(dir, 'face.png'), { width: 320, height: 400 });
  }, 180_000);

  const submit = async (tenant: keyof typeof KEYS, callback: string, secretRef?: string): Promise<string> => {
    const r = await p.submit(
      {
        audio: { data: readFileSync(join(dir, 'tone.wav')), name: 'tone.wav' },
        image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
        min_resolution: '256',
        callback_url: callback,
        ...(secretRef === undefined ? {} : { callback_secret_ref: secretRef }),
      },
      { authorization: `Bearer ${KEYS[tenant]}` },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    return String(r.body.task_id);
  };
  const stateOf = async (tenant: keyof typeof KEYS, id: string): Promise<string> => {
    const res = await fetch(`${p.api}/v1/tasks/${id}`, { headers: { authorization: `Bearer ${KEYS[tenant]}` } });
    return String(((await res.json()) as { state?: unknown }).state);
  };
  const succeeded = (tenant: keyof typeof KEYS, id: string) =>
    waitUntil(async () => (await stateOf(tenant, id)) === 'SUCCEEDED', 150_000, `task ${id} SUCCEEDED`);
  const dead = async (id: string) => (await readAll(p.topic('notify.dlq'), 500)).find((x) => x.key === id);
  const verifies = (d: Recorded, s: string): boolean => {
    try {
      new standardwebhooks.Webhook(s).verify(d.body, d.headers as Record<string, string>);
      return true;
    } catch {
      return false;
    }
  };

  it('a trickling receiver does not hold notify: its delivery ends at the deadline and the next webhook still arrives', async () => {
    const stuck = await submit('acme', `http://127.0.0.1:${slow.port}/slow`);
    await waitUntil(() => slow.accepts >= 1, 150_000, 'notify delivering to the trickling receiver');
    const next = await submit('globex', `${base}/after-slow`, 'billing');
    await waitUntil(() => deliveries.some((d) => d.path === '/after-slow'), 150_000, 'the webhook after the trickling one');
    const retried = (await readAll(p.topic('notify.retry.1'), 500)).find((x) => x.key === stuck);
    expect(retried?.headers[HEADERS.errorCode]).toBe('CALLBACK_DELIVERY_FAILED');
    // every connection to the trickling receiver was closed by notify within the deadline
    for (const c of slow.conns.filter((x) => x.closedAt !== undefined)) expect(c.closedAt! - c.acceptedAt).toBeLessThan(DEADLINE_MS + 1500);
    // the healthy delivery is globex's, signed with globex's named secret only
    const d = deliveries.find((x) => x.path === '/after-slow')!;
    expect(JSON.parse(d.body)).toMatchObject({ data: { task_id: next, status: 'SUCCEEDED' } });
    expect(verifies(d, TENANT_SECRETS.globexBilling)).toBe(true);
    expect([TENANT_SECRETS.globex, TENANT_SECRETS.acme, TENANT_SECRETS.shared].some((s) => verifies(d, s))).toBe(false);
    expect(await stateOf('acme', stuck)).toBe('SUCCEEDED');
  }, 300_000);

  const refusedAtSubmit = async (tenant: keyof typeof KEYS, callback: string, secretRef: string | undefined, code: string): Promise<void> => {
    const before = (await readAll(p.topic('tasks.requested'), 300)).length;
    const r = await p.submit(
      {
        audio: { data: readFileSync(join(dir, 'tone.wav')), name: 'tone.wav' },
        image: { data: readFileSync(join(dir, 'face.png')), name: 'face.png' },
        callback_url: callback,
        ...(secretRef === undefined ? {} : { callback_secret_ref: secretRef }),
      },
      { authorization: `Bearer ${KEYS[tenant]}` },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect(r.body.code).toBe(code);
    expect(JSON.stringify(r.body)).not.toContain(TENANT_SECRETS.globexBilling.slice(6));
    expect((await readAll(p.topic('tasks.requested'), 300)).length).toBe(before);
  };

  it("a tenant cannot sign with another tenant's secret: refused at submit with 422 CALLBACK_SECRET_UNKNOWN, nothing enqueued; its own secret signs", async () => {
    await refusedAtSubmit('acme', `${base}/cross-plain`, 'billing', 'CALLBACK_SECRET_UNKNOWN');
    await refusedAtSubmit('acme', `${base}/cross-qualified`, 'globex/billing', 'CALLBACK_SECRET_UNKNOWN');
    await refusedAtSubmit('acme', `${base}/cross-dots`, '../globex/billing', 'CALLBACK_SECRET_UNKNOWN');
    const own = await submit('acme', `${base}/own`);
    await succeeded('acme', own);
    await waitUntil(() => deliveries.some((d) => d.path === '/own'), 60_000, "acme's own webhook");
    expect(deliveries.some((d) => d.path.startsWith('/cross'))).toBe(false);
    const own1 = deliveries.find((d) => d.path === '/own')!;
    expect(verifies(own1, TENANT_SECRETS.acme)).toBe(true);
    expect(verifies(own1, TENANT_SECRETS.shared)).toBe(false);
  }, 300_000);

  it('an IPv4-mapped loopback callback is refused at submit with 422 CALLBACK_URL_REFUSED, nothing enqueued', async () => {
    const port = (healthy.address() as AddressInfo).port;
    await refusedAtSubmit('globex', `http://[::ffff:7f00:1]:${port}/mapped`, undefined, 'CALLBACK_URL_REFUSED');
    await refusedAtSubmit('globex', `http://0x0a000001:${port}/hex`, undefined, 'CALLBACK_URL_REFUSED');
    await refusedAtSubmit('globex', `http://[64:ff9b::7f00:1]:${port}/nat64`, undefined, 'CALLBACK_URL_REFUSED');
  }, 60_000);

  it("notify itself refuses another tenant's secret_ref in a record that never passed submit: DLQ CALLBACK_SECRET_UNKNOWN, no request made", async () => {
    // the submit check is the first line; notify is the second, for records written some other way
    const own = await submit('acme', `${base}/template`);
    await succeeded('acme', own);
    const topic = p.topic('tasks.completed');
    const template = (await readAll(topic)).find((r) => r.key === own)!;
    const ctx = testContext();
    const schema = sonicTopology({ prefix: p.prefix }).topics[topic]!.valueSchema!;
    const value = (await ctx.serde.decode<TaskCompleted>(template.value!, schema)).value;
    const forged = '00000000-0000-4000-8000-0000000000f0';
    value.task_id = forged;
    value.request = { ...value.request, task_id: forged, callback: { url: `${base}/bypass`, secret_ref: 'billing' } };
    const producer = await new PlainProducer(ctx.kafka).connect();
    try {
      await producer.send(topic, [{ key: forged, value: await ctx.serde.encode(valueSubject(topic), schema, value) }]);
    } finally {
      await producer.close();
    }
    await waitUntil(async () => (await dead(forged)) !== undefined, 60_000, 'the forged record in the notify DLQ');
    expect((await dead(forged))?.headers[HEADERS.errorCode]).toBe('CALLBACK_SECRET_UNKNOWN');
    expect(deliveries.some((d) => d.path === '/bypass')).toBe(false);
  }, 120_000);
});
