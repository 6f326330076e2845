/**
 * Hostile suite, part 4: the API when Kafka is gone. A submit while the broker is stopped or
 * frozen is refused on time (503 BROKER_UNAVAILABLE with Retry-After), its uploads are removed,
 * and nothing of it ever becomes visible; when the broker returns, submits work again. Runs on a
 * private broker, so the other test files keep theirs.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readTopic } from '../../src/kafka/io.js';
import { KEYS, bearer, raw, sampleMedia, startApiOnly, type ApiUnderTest } from '../helpers/api.js';
import { startPrivateBroker, type PrivateBroker } from '../helpers/private-broker.js';

describe('the API while the broker is away (private broker)', () => {
  let broker: PrivateBroker;
  let api: ApiUnderTest;
  let form: { body: Buffer; contentType: string };
  const accepted: string[] = [];

  beforeAll(async () => {
    broker = await startPrivateBroker();
    api = await startApiOnly(
      { ...broker.env, SONIC_API_ENQUEUE_TIMEOUT_MS: '3000', SONIC_KAFKA_CONNECT_TIMEOUT_MS: '1000', SONIC_KAFKA_REQUEST_TIMEOUT_MS: '2000' },
      broker.context(),
    );
    ({ form } = await sampleMedia());
  }, 180_000);

  const submit = (headers: Record<string, string> = {}) =>
    raw(api.port, 'POST', '/v1/tasks', { ...bearer(KEYS.acme), 'content-type': form.contentType, ...headers }, form.body);
  /** Stored input files (the task folders stay; their files go). */
  const inputs = (): string[] =>
    existsSync(join(api.dataDir, 'tasks'))
      ? readdirSync(join(api.dataDir, 'tasks'), { recursive: true })
          .map(String)
          .filter((f) => /input\/(audio|image)-[0-9a-f]{8}$/.test(f))
      : [];
  const refusedOnTime = async (): Promise<void> => {
    const before = inputs();
    const t0 = Date.now();
    const r = await submit({ 'idempotency-key': `down-${t0}` });
    expect(r.status, r.text).toBe(503);
    expect(r.json).toMatchObject({ code: 'BROKER_UNAVAILABLE', retryable: true });
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(Date.now() - t0).toBeLessThan(3000 + 2000);
    // the uploads of the refused submit are gone
    expect(inputs().sort()).toEqual(before.sort());
  };

  it('a submit with the broker up is accepted', async () => {
    const r = await submit();
    expect(r.status, r.text).toBe(202);
    accepted.push(String(r.json.task_id));
  });

  it('/readyz does not open a Kafka connection per call: 50 probes, no new connection to the broker', async () => {
    const port = broker.brokers.split(':')[1]!;
    /** Local ports of every TCP connection to the broker, in any state (TIME-WAIT included: closed ones linger a minute). */
    const connections = (): Set<string> => {
      const r = spawnSync('ss', ['-tanH', `( dport = :${port} )`], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`ss failed: ${r.stderr}`);
      return new Set(
        r.stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => l.trim().split(/\s+/)[3]!),
      );
    };
    // the broker check has its connection first (the status view may still be catching up on a
    // loaded machine: that is another check), then count
    const until = Date.now() + 60_000;
    const brokerChecked = async (): Promise<boolean> =>
      ((await raw(api.port, 'GET', '/readyz')).json.checks as { broker?: boolean } | undefined)?.broker === true;
    while (!(await brokerChecked())) {
      if (Date.now() > until)
        throw new Error(`the broker check never passed: ${(await raw(api.port, 'GET', '/readyz')).text}; the API's log:\n${api.proc.logs().slice(-6000)}`);
      await new Promise((r) => setTimeout(r, 200)); // poll interval
    }
    const before = connections();
    for (let i = 0; i < 50; i++) {
      await raw(api.port, 'GET', '/readyz');
      await new Promise((r) => setTimeout(r, 20)); // probes spread over a second or more: the cached answer expires meanwhile
    }
    const opened = [...connections()].filter((c) => !before.has(c));
    expect(opened.length, `new connections: ${opened.join(' ')}`).toBeLessThanOrEqual(1);
  });

  it('with the broker stopped: 503 BROKER_UNAVAILABLE within the enqueue deadline, uploads removed, /readyz 503 at once', async () => {
    broker.stop();
    await refusedOnTime();
    await refusedOnTime();
    const t0 = Date.now();
    const ready = await raw(api.port, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json).toMatchObject({ ready: false, checks: { broker: false } });
    expect(Date.now() - t0).toBeLessThan(3000);
  }, 60_000);

  it('when the broker returns, submits are accepted again', async () => {
    broker.start();

    const until = Date.now() + 60_000;
    for (;;) {
      const r = await submit();
      if (r.status === 202) {
        accepted.push(String(r.json.task_id));
        break;
      }
      expect(r.json.code).toBe('BROKER_UNAVAILABLE');
      if (Date.now() > until) throw new Error(`still refused: ${r.text}\n${api.proc.logs().slice(-3000)}`);
      await new Promise((res) => setTimeout(res, 500)); // poll interval
    }
    // the status view's follower outlived the outage (kafkajs gives up on it while the broker is
    // away; the follower starts again): the task just accepted is read back, every earlier one too
    for (const id of accepted) {
      const got = await raw(api.port, 'GET', `/v1/tasks/${id}`, bearer(KEYS.acme));
      expect(got.status, `${got.text}\n${api.proc.logs().slice(-3000)}`).toBe(200);
      expect(got.json).toMatchObject({ task_id: id, state: 'QUEUED' });
    }
  }, 90_000);

  it('with the broker frozen (it accepts nothing and answers nothing): 503 on time as well', async () => {
    broker.freeze();
    try {
      await refusedOnTime();
    } finally {
      broker.thaw();
    }
    const until = Date.now() + 60_000;
    while ((await submit()).status !== 202) {
      if (Date.now() > until) throw new Error('submits still refused after the broker thawed');
      await new Promise((res) => setTimeout(res, 500)); // poll interval
    }
  }, 90_000);

  it('a refused submit never becomes visible: every QUEUED status has its request, and no request is of a refused submit', async () => {
    const kafka = broker.context().kafka;
    const requests = await readTopic(kafka, api.topic('tasks.requested'), { idleMs: 2000 });
    const statuses = await readTopic(kafka, api.topic('tasks.status'), { idleMs: 2000 });
    const requested = new Set(requests.map((r) => r.key));
    for (const id of accepted) expect(requested.has(id)).toBe(true);
    for (const s of statuses) expect(requested.has(s.key), `QUEUED of ${s.key} without its request`).toBe(true);
    // each accepted submit once; refused ones not at all
    expect(requests.length).toBe(requested.size);
    expect(requested.size).toBe(accepted.length + 1);
    expect(inputs().length).toBe(2 * requested.size);
  }, 60_000);
});
