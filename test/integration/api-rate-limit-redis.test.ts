/**
 * The per-key rate limit across API replicas: two real `sonicflow api` processes share one real
 * Redis (SONIC_TEST_REDIS_URL, else the local one on 6379; `.ci/run` starts it), each test run
 * under its own topic prefix and so its own key namespace. A Redis that is gone or never answers
 * lets requests through uncounted (fail-open), and says so in the metrics.
 */
import { createServer, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { rateLimitNamespace } from '../../src/api/auth.js';
import { KEYS, bearer, raw, startApiOnly, type ApiUnderTest } from '../helpers/api.js';
import { LISTENING, listeningPort, onCleanup, startSonicflow } from '../helpers/infra.js';

const REDIS_URL = process.env.SONIC_TEST_REDIS_URL || 'redis://127.0.0.1:6379';
const LIMIT = 5;
const missing = '/v1/tasks/00000000-0000-4000-8000-000000000000';

describe('the per-key rate limit holds across API replicas through Redis (real Redis, API processes, broker)', () => {
  let a: ApiUnderTest;
  let bPort: number;

  beforeAll(async () => {
    a = await startApiOnly({ SONIC_REDIS_URL: REDIS_URL, SONIC_API_RATE_LIMIT_PER_MINUTE: String(LIMIT) });
    // a second replica of the same deployment: same prefix and keys, its own instance id
    const b = startSonicflow(['api'], { ...a.env, SONIC_API_INSTANCE_ID: `${a.prefix}_b` });
    bPort = await listeningPort(b, LISTENING.api);
  }, 120_000);

  it(`${LIMIT + 4} requests of one key spread over two replicas: exactly ${LIMIT} pass, the rest get 429 RATE_LIMITED with Retry-After`, async () => {
    const answers = [];
    for (let i = 0; i < LIMIT + 4; i++) answers.push(await raw(i % 2 === 0 ? a.port : bPort, 'GET', missing, bearer(KEYS.acme)));
    const limited = answers.filter((r) => r.status === 429);
    expect(answers.map((r) => r.status)).toEqual([...Array<number>(LIMIT).fill(404), ...Array<number>(4).fill(429)]);
    for (const r of limited) {
      expect(r.json.code).toBe('RATE_LIMITED');
      const wait = Number(r.headers['retry-after']);
      expect(wait).toBeGreaterThanOrEqual(1);
      expect(wait).toBeLessThanOrEqual(60);
    }
    // another key has its own count, on either replica
    expect((await raw(bPort, 'GET', missing, bearer(KEYS.other))).status).toBe(404);
    expect((await raw(a.port, 'GET', missing, bearer(KEYS.other))).status).toBe(404);
  });

  it("the counters live under the deployment's own namespace in Redis", async () => {
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    onCleanup(async () => void redis.disconnect());
    await redis.connect();
    const ns = rateLimitNamespace(a.env.SONIC_CLIENT_ID ?? 'sonicflow', a.prefix);
    const keys = await redis.keys(`${ns}*`);
    expect(keys.length).toBeGreaterThanOrEqual(2);
    // keyed by the API key's hash, never the key itself
    expect(keys.join(' ')).not.toContain(KEYS.acme);
    for (const k of keys) expect(await redis.pttl(k)).toBeGreaterThan(0);
  });
});

describe('a Redis that is gone or never answers: the limit fails open, visibly', () => {
  let gone: ApiUnderTest;
  let silent: ApiUnderTest;

  beforeAll(async () => {
    // accepts connections and never says a word
    const sockets = new Set<Socket>();
    const mute = createServer((s) => void sockets.add(s.on('error', () => undefined)));
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    onCleanup(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => mute.close(r));
    });
    const port = (mute.address() as { port: number }).port;
    [gone, silent] = await Promise.all([
      startApiOnly({ SONIC_REDIS_URL: 'redis://127.0.0.1:1', SONIC_API_RATE_LIMIT_PER_MINUTE: '2' }),
      startApiOnly({ SONIC_REDIS_URL: `redis://127.0.0.1:${port}`, SONIC_REDIS_TIMEOUT_MS: '100', SONIC_API_RATE_LIMIT_PER_MINUTE: '2' }),
    ]);
  }, 120_000);

  it.each([
    ['gone (connection refused)', () => gone],
    ['silent (connects, never answers)', () => silent],
  ])('Redis %s: every request is served (not 429, not 500) and counted as a store error', async (_name, api) => {
    for (let i = 0; i < 5; i++) expect((await raw(api().port, 'GET', missing, bearer(KEYS.acme))).status).toBe(404);
    expect(await api().gauge('sonicflow_api_rate_limit_store_errors_total')).toBeGreaterThanOrEqual(5);
    // authentication does not depend on Redis
    expect((await raw(api().port, 'GET', missing, bearer('k-wrong-0123456789'))).status).toBe(401);
  });
});
