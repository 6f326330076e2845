import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import { refuseCrossSite, requireAdmin } from '../../src/api/console/access.js';

const req = (headers: Record<string, string>, role = 'admin') => ({ headers, role }) as unknown as FastifyRequest;
const direct = { publicUrl: '', trustsProxy: false };

describe("the console's CSRF guard", () => {
  it('accepts an action from its own origin (Host), or one without Origin (not a browser)', () => {
    expect(() => refuseCrossSite(req({ host: 'api:8080', origin: 'http://api:8080' }), direct)).not.toThrow();
    expect(() => refuseCrossSite(req({ host: 'api:8080' }), direct)).not.toThrow();
  });

  it('refuses a foreign Origin and a browser that says cross-site or same-site', () => {
    expect(() => refuseCrossSite(req({ host: 'api:8080', origin: 'https://evil.example' }), direct)).toThrow(/foreign Origin/);
    expect(() => refuseCrossSite(req({ host: 'api:8080', 'sec-fetch-site': 'same-site' }), direct)).toThrow(/cross-site/);
    expect(() => refuseCrossSite(req({ host: 'api:8080', origin: 'not a url' }), direct)).toThrow(/foreign Origin/);
  });

  it('behind a proxy that rewrites Host: SONIC_API_PUBLIC_URL names the origin, and nothing else passes', () => {
    const proxied = { publicUrl: 'https://console.example.com/', trustsProxy: false };
    expect(() => refuseCrossSite(req({ host: '10.0.0.5:8080', origin: 'https://console.example.com' }), proxied)).not.toThrow();
    expect(() => refuseCrossSite(req({ host: '10.0.0.5:8080', origin: 'http://10.0.0.5:8080' }), proxied)).toThrow(/foreign Origin/);
    expect(() => refuseCrossSite(req({ host: 'console.example.com', origin: 'http://console.example.com' }), proxied)).toThrow(/foreign Origin/);
  });

  it('X-Forwarded-Host counts only with trusted proxy hops', () => {
    const h = { host: '10.0.0.5:8080', 'x-forwarded-host': 'console.example.com', origin: 'https://console.example.com' };
    expect(() => refuseCrossSite(req(h), { publicUrl: '', trustsProxy: true })).not.toThrow();
    expect(() => refuseCrossSite(req(h), direct)).toThrow(/foreign Origin/);
  });

  it('an action needs the admin role before anything else', () => {
    expect(() => requireAdmin(req({ host: 'a', origin: 'http://a' }, 'read'), direct)).toThrow(/admin key/);
  });
});
