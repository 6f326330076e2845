/**
 * Hostile suite, part 1: getting past the API keys and the rate limits. Every case runs against
 * the real API process, broker and registry, and asserts the exact status and code and that
 * tasks.requested did not move.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { KEYS, bearer, expectRefused, raw, sampleMedia, startApiOnly, type ApiUnderTest } from '../helpers/api.js';

describe('authentication and rate limits cannot be side-stepped (real API, broker, registry)', () => {
  let api: ApiUnderTest;
  let form: { body: Buffer; contentType: string };

  beforeAll(async () => {
    // one proxy hop is trusted, so each case can come from an address of its own
    api = await startApiOnly({ SONIC_API_TRUST_PROXY_HOPS: '1', SONIC_API_FAILED_AUTH_PER_MINUTE: '5', SONIC_API_RATE_LIMIT_PER_MINUTE: '40' });
    ({ form } = await sampleMedia());
  }, 120_000);

  let address = 0;
  /** A client address of its own for each request, so the failed-auth limit of one case does not leak into another. */
  const from = (): Record<string, string> => ({ 'x-forwarded-for': `198.51.100.${(address++ % 250) + 1}` });
  const post = (path: string, headers: Record<string, string> = {}) =>
    raw(api.port, 'POST', path, { ...from(), 'content-type': form.contentType, ...headers }, form.body);

  // every spelling that reaches the submit handler must pass authentication; the others are no route at all
  const spellings: [string, number, string][] = [
    ['/v1/tasks', 401, 'UNAUTHORIZED'],
    ['/%761/tasks', 401, 'UNAUTHORIZED'],
    ['/%76%31/%74%61%73%6b%73', 401, 'UNAUTHORIZED'],
    ['/v1/%74asks', 401, 'UNAUTHORIZED'],
    ['/v1/tasks?x=1', 401, 'UNAUTHORIZED'],
    ['/V1/tasks', 404, 'INVALID_REQUEST'],
    ['/v1/TASKS', 404, 'INVALID_REQUEST'],
    ['//v1/tasks', 404, 'INVALID_REQUEST'],
    ['/v1//tasks', 404, 'INVALID_REQUEST'],
    ['/v1/tasks.', 404, 'INVALID_REQUEST'],
    ['/v1./tasks', 404, 'INVALID_REQUEST'],
    ['/v1/./tasks', 404, 'INVALID_REQUEST'],
    ['/x/../v1/tasks', 404, 'INVALID_REQUEST'],
    ['/v1/x/../tasks', 404, 'INVALID_REQUEST'],
    ['/v1%2ftasks', 404, 'INVALID_REQUEST'],
    ['/v1/tasks;x', 404, 'INVALID_REQUEST'],
  ];
  it.each(spellings.map(([path, status, code]) => ({ path, status, code })))(
    'POST $path without a key → $status $code, nothing enqueued',
    async ({ path, status, code }) => {
      await expectRefused(api, () => post(path), status, code);
    },
  );

  it('every single character of /v1/tasks percent-encoded (upper and lower case hex) still needs the key', async () => {
    const path = '/v1/tasks';
    const before = await api.requestedEnd();
    for (let i = 0; i < path.length; i++) {
      for (const hex of [path.charCodeAt(i).toString(16).toUpperCase(), path.charCodeAt(i).toString(16).toLowerCase()]) {
        const spelled = `${path.slice(0, i)}%${hex.padStart(2, '0')}${path.slice(i + 1)}`;
        const r = await post(spelled);
        // an encoded '/' is part of a segment, not a separator: no route (and no request target at all in front)
        expect(r.status, spelled).toBe(path[i] !== '/' ? 401 : i === 0 ? 400 : 404);
      }
    }
    expect(await api.requestedEnd()).toBe(before);
  });

  const keyCases: [string, Record<string, string>, string][] = [
    ['a wrong key', bearer('k-acme-0123456780'), 'the API key is not valid'],
    ['the key in another case', bearer(KEYS.acme.toUpperCase()), 'the API key is not valid'],
    ['an expired key', bearer(KEYS.expired), 'the API key has expired'],
    ['Bearer without a key', { authorization: 'Bearer ' }, 'send an API key'],
    ['the key as Basic credentials', { authorization: `Basic ${Buffer.from(`acme:${KEYS.acme}`).toString('base64')}` }, 'send an API key'],
    ['two keys in one header', { authorization: `Bearer ${KEYS.acme} ${KEYS.other}` }, 'send an API key'],
    ['the right key with one more character', bearer(`${KEYS.acme}x`), 'the API key is not valid'],
    ['a prefix of the right key', bearer(KEYS.acme.slice(0, -1)), 'the API key is not valid'],
  ];
  it.each(keyCases.map(([name, headers, message]) => ({ name, headers, message })))(
    '$name → 401 UNAUTHORIZED, nothing enqueued',
    async ({ headers, message }) => {
      const r = await expectRefused(api, () => post('/v1/tasks', headers), 401, 'UNAUTHORIZED');
      expect(String(r.json.message)).toContain(message);
    },
  );

  it('a key in the query string is not a key → 401 UNAUTHORIZED, nothing enqueued', async () => {
    await expectRefused(api, () => post(`/v1/tasks?api_key=${KEYS.acme}&authorization=Bearer%20${KEYS.acme}`), 401, 'UNAUTHORIZED');
  });

  it('a guessing client is locked out after 5 failures a minute, even with a right key, per address', async () => {
    const attacker = { 'x-forwarded-for': '203.0.113.77' };
    for (let i = 0; i < 5; i++)
      expect((await raw(api.port, 'GET', `/v1/tasks/00000000-0000-4000-8000-00000000000${i}`, { ...attacker, ...bearer(`guess-${i}`) })).status).toBe(401);
    const locked = await expectRefused(api, () => post('/v1/tasks', { ...attacker, ...bearer(KEYS.acme) }), 429, 'RATE_LIMITED');
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0);
    // another address with the right key is unaffected
    expect((await raw(api.port, 'GET', '/v1/tasks/00000000-0000-4000-8000-000000000000', { ...from(), ...bearer(KEYS.acme) })).status).toBe(404);
  });

  it('the rate limit counts every spelling of a /v1 path against the same key', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    const paths = [`/v1/tasks/${id}`, `/%761/tasks/${id}`, `/v1/%74asks/${id}`, `/%76%31/tasks/${id}`];
    const answers = [];
    for (let i = 0; i < 48; i++) answers.push((await raw(api.port, 'GET', paths[i % paths.length]!, { ...from(), ...bearer(KEYS.other) })).status);
    expect(answers.filter((s) => s === 404)).toHaveLength(40);
    expect(answers.filter((s) => s === 429)).toHaveLength(8);
    // and a submit under the exhausted key is refused too
    const r = await expectRefused(api, () => post('/%761/tasks', bearer(KEYS.other)), 429, 'RATE_LIMITED');
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
  });

  it('HEAD and GET of a task under any spelling need the key as well', async () => {
    for (const [method, path] of [
      ['GET', '/%761/tasks/00000000-0000-4000-8000-000000000000'],
      ['HEAD', '/v1/tasks/00000000-0000-4000-8000-000000000000'],
      ['GET', '/v1/tasks/x/events'],
      ['GET', '/v1/%74asks/x/video'],
    ] as const) {
      expect((await raw(api.port, method, path, from())).status, `${method} ${path}`).toBe(401);
    }
  });

  it('a valid key with the same body is accepted (the cases above fail for the reason they name)', async () => {
    const before = await api.requestedEnd();
    const r = await post('/%761/tasks', bearer(KEYS.acme));
    expect(r.status, r.text).toBe(202);
    expect(await api.requestedEnd()).toBeGreaterThan(before);
  });
});
