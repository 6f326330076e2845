import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../bench/lib.js';
import { ROOT } from '../helpers/infra.js';

// A second, private stack on free ports (the script is told them before it starts the services),
// so that stopping it cannot disturb the other tests, nor another run of this file.
const ports = new Set<number>();
while (ports.size < 4) ports.add(await freePort());
const [kafkaPort, controllerPort, registryPort, s3Port] = [...ports] as [number, number, number, number];
const env = {
  ...process.env,
  KAFKA_BROKERS: '',
  SCHEMA_REGISTRY_URL: '',
  SONIC_S3_ENDPOINT: '',
  SONICFLOW_STATE_DIR: mkdtempSync(join(tmpdir(), 'sonicflow-stack-')),
  SONIC_KAFKA_PORT: String(kafkaPort),
  SONIC_KAFKA_CONTROLLER_PORT: String(controllerPort),
  SONIC_REGISTRY_PORT: String(registryPort),
  SONIC_S3_PORT: String(s3Port),
};
const stack = (cmd: string) => spawnSync('bash', [join(ROOT, 'ops/stack/stack.sh'), cmd], { env, encoding: 'utf8', timeout: 240_000 });
const portOpen = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

describe('local stack lifecycle', () => {
  afterAll(() => void stack('down'));

  it('stack:up starts the services, a second up reuses them, and stack:down leaves the ports free', async () => {
    const first = stack('up');
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain(`KAFKA_BROKERS=localhost:${kafkaPort}`);
    expect(first.stdout).toContain(`SCHEMA_REGISTRY_URL=http://localhost:${registryPort}/apis/ccompat/v7`);
    expect(first.stdout).toContain(`SONIC_S3_ENDPOINT=http://localhost:${s3Port}`);
    expect(await portOpen(kafkaPort)).toBe(true);
    expect(await portOpen(registryPort)).toBe(true);
    expect(await portOpen(s3Port)).toBe(true);
    // an S3 server: an unsigned request is refused with an S3 error document
    const s3 = await fetch(`http://127.0.0.1:${s3Port}/`);
    expect(s3.headers.get('x-amz-request-id')).toBeTruthy();
    expect(await s3.text()).toContain('<Error>');

    const second = stack('up');
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toMatch(new RegExp(`kafka: already running \\(pid \\d+\\) on localhost:${kafkaPort}, reusing it`));
    expect(second.stderr).toMatch(new RegExp(`registry: already running \\(pid \\d+\\) at .*${registryPort}.*, reusing it`));
    expect(second.stderr).toMatch(new RegExp(`s3: already running \\(pid \\d+\\) at http://localhost:${s3Port}, reusing it`));
    expect(second.stderr).not.toContain('starting');

    const status = stack('status');
    expect(status.status).toBe(0);
    expect(status.stdout).toMatch(/kafka: running \(pid \d+, started by sonicflow\)/);
    expect(status.stdout).toMatch(/registry: running \(pid \d+, started by sonicflow\)/);
    expect(status.stdout).toMatch(new RegExp(`s3: running \\(pid \\d+, started by sonicflow\\) at http://localhost:${s3Port}`));

    const down = stack('down');
    expect(down.status, down.stderr).toBe(0);
    expect(await portOpen(kafkaPort)).toBe(false);
    expect(await portOpen(controllerPort)).toBe(false);
    expect(await portOpen(registryPort)).toBe(false);
    expect(await portOpen(s3Port)).toBe(false);
    const after = stack('status');
    expect(after.status).toBe(1);
    expect(after.stdout).toContain('kafka: not running');
    expect(after.stdout).toContain('s3: not running');
  }, 300_000);

  it('uses external services as given and starts nothing when KAFKA_BROKERS, SCHEMA_REGISTRY_URL and SONIC_S3_ENDPOINT are set', () => {
    const r = spawnSync('bash', [join(ROOT, 'ops/stack/stack.sh'), 'up'], {
      env: {
        ...env,
        KAFKA_BROKERS: 'broker.example:9092',
        SCHEMA_REGISTRY_URL: 'http://registry.example:8081',
        SONIC_S3_ENDPOINT: 'https://s3.example',
      },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('KAFKA_BROKERS=broker.example:9092 is set; using it, starting nothing');
    expect(r.stderr).toContain('SCHEMA_REGISTRY_URL=http://registry.example:8081 is set; using it, starting nothing');
    expect(r.stderr).toContain('SONIC_S3_ENDPOINT=https://s3.example is set; using it, starting nothing');
    expect(r.stdout).toContain('SONIC_S3_ENDPOINT=https://s3.example');
  });
});
