/**
 * The API's status view on a real broker and registry, at the edges the API tests do not reach:
 * a record the registry cannot decode for a while (it must be retried, never skipped past: the
 * checkpoint would move beyond a task the view never applied), and a flood of reads for unknown
 * ids (each waits for the view to reach the last stable offset; the end-offset lookups must be
 * shared, not one per read).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { StatusView, type StatusViewOptions } from '../../src/app/status-view.js';
import { SonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { idempotencyKeysTopic } from '../../src/domain/paths.js';
import { statusEvent } from '../../src/domain/status-event.js';
import { PlainProducer, TopicTail } from '../../src/kafka/io.js';
import { TxBatcher } from '../../src/kafka/tx-batcher.js';
import type { Topology } from '../../src/runtime/topology.js';
import type { Codec } from '../../src/serde/codec.js';
import { valueSubject } from '../../src/serde/wire.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { deployTopology, onCleanup, testContext, uniqueName } from '../helpers/infra.js';
import { waitUntil } from '../helpers/wait.js';

let topology: Topology;
const dirs: string[] = [];

beforeAll(async () => {
  topology = sonicTopology({ prefix: uniqueName('view').replace(/-/g, '_') });
  await deployTopology(topology);
}, 120_000);

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A view of the topology's status and keys topics, on a fresh store (or `dir`), with `codec` (default: the registry's). */
function view(codec: Codec = testContext().serde, more: Partial<StatusViewOptions> = {}): StatusView {
  const dir = more.dir ?? mkdtempSync(join(tmpdir(), 'sonicflow-view-'));
  dirs.push(dir);
  const ctx = testContext();
  const keys = idempotencyKeysTopic(topology.prefix);
  const v = new StatusView({
    kafka: ctx.kafka,
    topic: topology.statusTopic,
    codec,
    schema: 'task-status',
    keys: { topic: keys, schema: topology.topics[keys]?.valueSchema ?? 'task-key' },
    logger: createLogger('test', 'error'),
    groupPrefix: uniqueName('view-test'),
    ...more,
    dir,
  });
  onCleanup(() => v.stop());
  return v;
}

async function produce(ids: string[]): Promise<void> {
  const ctx = testContext();
  const p = await new PlainProducer(ctx.kafka).connect();
  try {
    const at = new Date();
    const records = [];
    for (const id of ids)
      records.push({
        key: id,
        value: await ctx.serde.encode(
          valueSubject(topology.statusTopic),
          'task-status',
          statusEvent({ task_id: id, state: 'QUEUED', tenant_id: 't', created_at: at, at }),
        ),
      });
    await p.send(topology.statusTopic, records);
  } finally {
    await p.close();
  }
}

describe('the status view (real broker and registry)', () => {
  it('retries a record the registry cannot decode yet, and applies it once it can: nothing is skipped', async () => {
    const ids = Array.from({ length: 20 }, () => randomUUID());
    const unlucky = new Set<string>(ids.slice(0, 5));
    const failures = new Map<string, number>();
    const real = testContext().serde;
    // the registry "unreachable" for five records, three times each
    const flaky: Codec = {
      encode: (subject, schema, value) => real.encode(subject, schema, value),
      decode: async <T>(buf: Buffer, schema?: string) => {
        const decoded = await real.decode<T>(buf, schema);
        const id = (decoded.value as { task_id?: string }).task_id;
        if (id && unlucky.has(id) && (failures.get(id) ?? 0) < 3) {
          failures.set(id, (failures.get(id) ?? 0) + 1);
          throw new SonicError('REGISTRY_UNAVAILABLE', 'the registry is away (test)');
        }
        return decoded;
      },
    };
    await produce(ids);
    const v = view(flaky);
    await v.start();
    await waitUntil(async () => ids.every((id) => v.get(id) !== undefined), 60_000, 'every task in the view');
    expect([...failures.values()]).toEqual([3, 3, 3, 3, 3]);
    expect(v.size).toBe(ids.length);
  }, 120_000);

  it('a flood of reads for unknown ids shares its end-offset lookups', async () => {
    const v = view();
    await v.start();
    await v.caughtUp;
    const lookups = vi.spyOn(TopicTail.prototype, 'endOffsets');
    try {
      const reads = Array.from({ length: 200 }, () => v.find(randomUUID(), 2000));
      const found = await Promise.all(reads);
      expect(found.every((e) => e === undefined)).toBe(true);
      // one lookup in flight and the next one queued behind it, not one per read
      expect(lookups.mock.calls.length).toBeGreaterThan(0);
      expect(lookups.mock.calls.length).toBeLessThanOrEqual(4);
    } finally {
      lookups.mockRestore();
    }
    // and a task written a moment ago is found, not 404
    const [id] = [randomUUID()];
    await produce([id!]);
    expect((await v.find(id!, 5000))?.task_id).toBe(id);
  }, 120_000);

  it('finds a task the moment its transaction is acknowledged, every time (the markers may not be written yet)', async () => {
    const ctx = testContext();
    const v = view();
    await v.start();
    await v.caughtUp;
    // the API's own path: a transactional submit of the QUEUED event, then a read on another view
    const batcher = new TxBatcher(ctx.kafka, { transactionalIds: [uniqueName('view-tx')], transactionTimeoutMs: 30_000 }, createLogger('test', 'error'));
    onCleanup(() => batcher.close());
    const missed: string[] = [];
    for (let i = 0; i < 150; i++) {
      const id = randomUUID();
      const at = new Date();
      const value = await ctx.serde.encode(
        valueSubject(topology.statusTopic),
        'task-status',
        statusEvent({ task_id: id, state: 'QUEUED', tenant_id: 't', created_at: at, at }),
      );
      await batcher.send([{ topic: topology.statusTopic, key: id, value }], 10_000);
      if ((await v.find(id, 2000)) === undefined) missed.push(id);
    }
    expect(missed).toEqual([]);
  }, 180_000);

  it('an idle view that follows its topics stays current: a restart after the tombstone horizon resumes, it does not rebuild', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-view-'));
    // the horizon (delete.retention.ms) shortened to 3 s, the view marking itself current every 0.5 s
    const options = { dir, maxCheckpointAgeMs: 3000, markCurrentEveryMs: 500 };
    await produce(Array.from({ length: 10 }, () => randomUUID()));
    const first = view(undefined, options);
    await first.start();
    await first.caughtUp;
    const known = first.size;
    expect(known).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 5000)); // nothing written for longer than the horizon
    await first.stop();
    const again = view(undefined, options);
    await again.start();
    await again.caughtUp;
    expect(again.size).toBe(known);
    expect(again.recordsRead).toBe(0);
  }, 120_000);

  it("holds an idempotency key's last record, as compaction keeps it, so views built before and after compaction agree", async () => {
    const ctx = testContext();
    const keysTopic = idempotencyKeysTopic(topology.prefix);
    const schema = topology.topics[keysTopic]?.valueSchema ?? 'task-key';
    const id = randomUUID();
    const p = await new PlainProducer(ctx.kafka).connect();
    try {
      for (const fingerprint of ['v2:first', 'v2:second'])
        await p.send(keysTopic, [
          {
            key: id,
            value: await ctx.serde.encode(valueSubject(keysTopic), schema, {
              task_id: id,
              tenant_id: 't',
              idempotency_key: 'k',
              fingerprint,
              created_at: new Date(),
            }),
          },
        ]);
    } finally {
      await p.close();
    }
    const v = view();
    await v.start();
    expect((await v.findKey(id, 5000))?.fingerprint).toBeDefined();
    await waitUntil(async () => (await v.findKey(id, 0))?.fingerprint === 'v2:second', 10_000, 'the last key record');
  }, 60_000);
});
