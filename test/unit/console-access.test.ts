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

describe('with auth disabled (everyone is an admin), an action must be addressed to the API itself (DNS rebinding)', () => {
  const open = { publicUrl: '', trustsProxy: false, authDisabled: true };

  it('accepts a loopback Host: localhost, 127.0.0.0/8, [::1]', () => {
    for (const host of ['localhost:8080', 'localhost', '127.0.0.1:8080', '127.3.2.1', '[::1]:8080'])
      expect(() => refuseCrossSite(req({ host, origin: `http://${host}` }), open), host).not.toThrow();
  });

  it('refuses a rebound name even though Origin and Host agree, and a forged X-Forwarded-Host does not help', () => {
    const rebound = { host: 'attacker.example:8080', origin: 'http://attacker.example:8080' };
    expect(() => refuseCrossSite(req(rebound), open)).toThrow(expect.objectContaining({ code: 'FORBIDDEN', message: expect.stringMatching(/Host refused/) }));
    expect(() => refuseCrossSite(req({ host: 'attacker.example:8080' }), open)).toThrow(/Host refused/);
    expect(() => refuseCrossSite(req({ ...rebound, 'x-forwarded-host': 'localhost:8080' }), { ...open, trustsProxy: true })).toThrow(/Host refused/);
    for (const host of ['localhost.attacker.example', '127.0.0.1.attacker.example', '10.0.0.5:8080', ''])
      expect(() => refuseCrossSite(req({ host }), open), host).toThrow(/Host refused/);
  });

  it("accepts SONIC_API_PUBLIC_URL's host, and only it besides loopback", () => {
    const pub = { ...open, publicUrl: 'https://console.example.com/' };
    expect(() => refuseCrossSite(req({ host: 'console.example.com', origin: 'https://console.example.com' }), pub)).not.toThrow();
    expect(() => refuseCrossSite(req({ host: 'console.example.com:443' }), pub)).not.toThrow();
    expect(() => refuseCrossSite(req({ host: 'attacker.example', origin: 'https://console.example.com' }), pub)).toThrow(/Host refused/);
  });

  it('with auth required, Host is not restricted (the key is the authority)', () => {
    expect(() => refuseCrossSite(req({ host: 'api.internal:8080', origin: 'http://api.internal:8080' }), direct)).not.toThrow();
  });
});
