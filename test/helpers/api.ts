/**
 * Harness for the API's hostile-input tests: the Sonic topology deployed under a unique prefix,
 * `sonicflow api` as a child process (no stages: what the API refuses must never reach Kafka),
 * raw HTTP requests that keep a path exactly as spelled, and the end offsets of
 * `tasks.requested`, which must not move when a request is refused.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { OffsetReader } from '../../src/kafka/lag.js';
import { makePortrait, makeTone } from '../../src/media/samples.js';
import type { Context } from '../../src/app/context.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { LISTENING, deployTopology, listeningPort, onCleanup, startSonicflow, testContext, uniqueName, type SonicflowProcess } from './infra.js';

export const KEYS = { acme: 'k-acme-0123456789', other: 'k-other-0123456789', third: 'k-third-0123456789', expired: 'k-expired-0123456789' };
export const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

export interface ApiUnderTest {
  base: string;
  port: number;
  prefix: string;
  dataDir: string;
  spoolDir: string;
  env: Record<string, string>;
  proc: SonicflowProcess;
  topic(name: string): string;
  /** Sum of the high watermarks of tasks.requested (every record, marker and aborted write counts). */
  requestedEnd(): Promise<bigint>;
  /** Files left in the spool (the API's scratch directory). */
  spooled(): string[];
  /** The value of one of the API's own gauges now (its /metrics): `sonicflow_api_uploads_in_progress`, `sonicflow_api_event_streams`, `sonicflow_api_submits_waiting`. */
  gauge(name: string): Promise<number>;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Record<string, unknown>;
}

/** Starts the API alone (auth required, tenants acme and other, one expired key); `env` overrides. */
export async function startApiOnly(env: Record<string, string> = {}, ctx: Context = testContext()): Promise<ApiUnderTest> {
  const prefix = uniqueName('sec').replace(/-/g, '_');
  const dataDir = mkdtempSync(join(tmpdir(), 'sonicflow-sec-data-'));
  const spoolDir = mkdtempSync(join(tmpdir(), 'sonicflow-sec-spool-'));
  const fullEnv: Record<string, string> = {
    SONIC_TOPIC_PREFIX: prefix,
    SONIC_API_AUTH: 'required',
    SONIC_API_KEYS: `acme:${KEYS.acme},other:${KEYS.other},third:${KEYS.third},acme:${KEYS.expired};expires=2020-01-01T00:00:00Z`,
    // a free port, which the API prints once it listens
    SONIC_API_PORT: '0',
    SONIC_DATA_DIR: dataDir,
    SONIC_STATE_DIR: join(dataDir, 'state'),
    SONIC_SCRATCH_DIR: spoolDir,
    SONIC_LOG_LEVEL: 'warn',
    SONIC_API_INSTANCE_ID: prefix,
    ...env,
  };
  await deployTopology(sonicTopology({ prefix }), ctx);
  const proc = startSonicflow(['api'], fullEnv);
  const port = await listeningPort(proc, LISTENING.api).catch((err: unknown) => {
    throw new Error(`the API did not start: ${(err as Error).message}`);
  });
  const base = `http://127.0.0.1:${port}`;
  const reader = new OffsetReader(ctx.kafka);
  return {
    base,
    port,
    prefix,
    dataDir,
    spoolDir,
    env: fullEnv,
    proc,
    topic: (name) => `${prefix}.${name}`,
    async requestedEnd() {
      const offsets = await reader.offsets([`${prefix}.tasks.requested`]);
      return offsets.reduce((sum, o) => sum + o.end, 0n);
    },
    spooled: () =>
      readdirSync(spoolDir, { recursive: true })
        .map(String)
        .filter((f) => statSync(join(spoolDir, f)).isFile()),
    async gauge(name) {
      const text = await (await fetch(`${base}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
      if (line === undefined) throw new Error(`the API has no metric ${name}`);
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    },
  };
}

/**
 * One HTTP request with the path sent byte for byte as given (fetch would normalise `..`, `.`
 * and percent-encodings); resolves with whatever the server answered.
 */
export function raw(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: Buffer | string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> = {};
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            // not JSON (a video, an empty body)
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A multipart/form-data body built by hand (so that tests can send what no client library would). */
export function multipart(
  parts: { name: string; filename?: string; data: Buffer | string; type?: string }[],
  boundary = `----sonicflow${Date.now().toString(16)}`,
): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    const type = p.filename !== undefined ? `\r\ncontent-type: ${p.type ?? 'application/octet-stream'}` : '';
    chunks.push(
      Buffer.from(`--${boundary}\r\ncontent-disposition: ${disposition}${type}\r\n\r\n`),
      Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data),
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** A 2 s tone (WAV) and a 400×500 portrait (PNG) that pass every check, and a submit form of both. */
export async function sampleMedia(): Promise<{ wav: Buffer; png: Buffer; form: { body: Buffer; contentType: string } }> {
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-sample-'));
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }));
  await makeTone(join(dir, 'a.wav'), 2, { frequency: 220 });
  await makePortrait(join(dir, 'p.png'), { width: 400, height: 500 });
  const wav = readFileSync(join(dir, 'a.wav'));
  const png = readFileSync(join(dir, 'p.png'));
  return {
    wav,
    png,
    form: multipart([
      { name: 'audio', filename: 'a.wav', data: wav },
      { name: 'image', filename: 'p.png', data: png },
    ]),
  };
}

/** Asserts a refused request: the exact status and code, a message, and nothing enqueued. */
export async function expectRefused(api: ApiUnderTest, call: () => Promise<RawResponse>, status: number, code: string): Promise<RawResponse> {
  const before = await api.requestedEnd();
  const r = await call();
  expect(r.status, r.text.slice(0, 500)).toBe(status);
  expect(r.json.code, r.text.slice(0, 500)).toBe(code);
  expect(String(r.json.message ?? '').length).toBeGreaterThan(5);
  expect(await api.requestedEnd()).toBe(before);
  return r;
}
