import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { authenticate, parseApiKeys, type KeyRole } from '../../src/api/auth.js';
import { uploadRoutes, type UploadRouteDeps } from '../../src/api/media.js';
import { httpStatus } from '../../src/api/server.js';
import { taskRoutes, type TaskRouteDeps } from '../../src/api/tasks.js';
import { publicError, toSonicError } from '../../src/core/errors.js';

describe('SONIC_API_KEYS roles', () => {
  it('a key is a tenant key unless it says role=read or role=admin; roles and expiries combine in any order', () => {
    const keys = parseApiKeys([
      'acme:k1',
      'ops:k2;role=admin',
      'ops:k3;role=read;expires=2999-01-01T00:00:00Z',
      'ops:k4;expires=2999-01-01T00:00:00Z;role=tenant',
    ]);
    expect(keys.map((k) => k.role)).toEqual(['tenant', 'admin', 'read', 'tenant']);
    const now = new Date('2030-01-01T00:00:00Z');
    expect(authenticate(keys, 'k1', now)).toEqual({ tenant: 'acme', role: 'tenant' });
    expect(authenticate(keys, 'k2', now)).toEqual({ tenant: 'ops', role: 'admin' });
    expect(authenticate(keys, 'k3', now)).toEqual({ tenant: 'ops', role: 'read' });
  });

  it('refuses an unknown role without showing the key', () => {
    expect(() => parseApiKeys(['ops:secret-key;role=root'])).toThrow(/entry 1 \(tenant ops\): unknown role "root"/);
    expect(() => parseApiKeys(['ops:secret-key;role='])).toThrow(/unknown role/);
    expect.assertions(3);
    try {
      parseApiKeys(['ops:secret-key;role=Admin']);
    } catch (err) {
      expect((err as Error).message).not.toContain('secret-key');
    }
  });

  it('a read-only key cannot submit a task or upload a file (403 FORBIDDEN before the body is read)', async () => {
    const app = Fastify();
    let role: KeyRole = 'read';
    app.decorateRequest('role', 'tenant');
    app.addHook('onRequest', async (req) => void (req.role = role));
    app.setErrorHandler((err, _req, reply) => void reply.status(httpStatus(toSonicError(err).code)).send(publicError(err)));
    // the refusal comes before the routes use anything of their dependencies
    await app.register(taskRoutes({ config: {}, view: {}, blob: {} } as unknown as TaskRouteDeps));
    await app.register(uploadRoutes({} as unknown as UploadRouteDeps));
    for (const url of ['/tasks', '/uploads']) {
      const res = await app.inject({ method: 'POST', url, payload: { audio: { uri: 'x' } } });
      expect(res.statusCode, url).toBe(403);
      expect(res.json(), url).toMatchObject({ code: 'FORBIDDEN', retryable: false, message: expect.stringMatching(/read-only key/) });
    }
    // a tenant key passes the gate (and fails further on, here without the multipart plugin)
    role = 'tenant';
    const res = await app.inject({ method: 'POST', url: '/uploads', payload: {} });
    expect(res.json().code).not.toBe('FORBIDDEN');
    await app.close();
  });
});
