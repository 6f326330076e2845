import { describe, expect, it } from 'vitest';
import { authenticate, parseApiKeys } from '../../src/api/auth.js';

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
    try {
      parseApiKeys(['ops:secret-key;role=Admin']);
    } catch (err) {
      expect((err as Error).message).not.toContain('secret-key');
    }
  });
});
