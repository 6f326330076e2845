/**
 * The unit tier stays a unit tier: it runs with the broker, registry and store pointing nowhere,
 * its guard (test/helpers/no-services.ts) refuses connections to the local stack and beyond, and
 * every test file belongs to a tier that `npm test` runs.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { takeRefused } from '../helpers/no-services.js';

const ROOT = join(import.meta.dirname, '..', '..');

/** Resolves with the error of a connection to host:port, or 'connected'. */
function attempt(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    s.once('connect', () => (s.destroy(), resolve('connected')));
    s.once('error', (err) => resolve(err.message));
  });
}

describe('the unit tier', () => {
  it('runs with the broker, registry and S3 store pointing nowhere', () => {
    expect(process.env.KAFKA_BROKERS).toBe('127.0.0.1:1');
    expect(process.env.SCHEMA_REGISTRY_URL).toBe('http://127.0.0.1:1');
    expect(process.env.SONIC_S3_ENDPOINT).toBe('http://127.0.0.1:1');
  });

  it('refuses connections to the default broker, registry and store, and to any non-loopback address; lets a loopback server of its own through', async () => {
    const server = createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      expect(await attempt('127.0.0.1', (server.address() as AddressInfo).port)).toBe('connected');
      for (const [host, port] of [
        ['localhost', 9092],
        ['127.0.0.1', 8081],
        ['localhost', 9000],
        ['192.0.2.1', 80],
      ] as const) {
        expect(await attempt(host, port)).toMatch(/ECONNREFUSED .*the unit tier reaches no broker/);
      }
      expect(takeRefused()).toHaveLength(4);
    } finally {
      server.close();
    }
  });

  it('every test file lies in test/unit, test/integration, test/security or test/cluster, the tiers vitest.config.ts runs (CI runs the cluster tier after npm test)', () => {
    const files = readdirSync(join(ROOT, 'test'), { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => relative(ROOT, join(ROOT, 'test', f)));
    expect(files.length).toBeGreaterThan(40);
    expect(files.filter((f) => !/^test\/(unit|integration|security|cluster)\//.test(f))).toEqual([]);
    expect(readFileSync(join(ROOT, '.ci', 'run'), 'utf8')).toMatch(/^npm run test:cluster$/m);
  });
});
