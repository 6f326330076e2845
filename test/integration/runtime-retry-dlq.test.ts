import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PlainProducer } from '../../src/kafka/io.js';
import { HEADERS } from '../../src/runtime/headers.js';
import { countKeys, deployChain, produce, readAll, startStage, waitUntil, type StageProcess } from '../helpers/chain.js';
import { sonicflow, testContext } from '../helpers/infra.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

const started: StageProcess[] = [];
afterEach(async () => {
  for (const s of started.splice(0)) {
    s.proc.kill('SIGTERM');
    await s.exited;
  }
});

describe('retry tiers and the DLQ on the real broker', () => {
  it('a handler failing twice with a retryable error succeeds once, no earlier than both tier delays, with correct attempt headers', async () => {
    const chain = await deployChain({ CHAIN_RETRY_DELAYS: '1500,3000' });
    const [key] = await produce(chain, 1);
    const stage = startStage(chain, 'first', { CHAIN_FAIL_RETRYABLE: '3', CHAIN_RETRY_DELAYS: '1500,3000' });
    started.push(stage);
    await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length > 0, 60_000, 'the output');
    // the input and both retry tiers committed to their ends: no second output can show up
    await waitConsumedToEnd(testContext(), chain.topology, ['first']);

    const input = (await readAll(chain.topic('in')))[0]!;
    const out = await readAll(chain.topic('mid'));
    expect(out.map((r) => r.key)).toEqual([key]);
    const value = (await testContext().serde.decode<{ attempt: number }>(out[0]!.value!, 'task-status')).value;
    expect(value.attempt).toBe(3);
    expect(out[0]!.timestamp - input.timestamp).toBeGreaterThanOrEqual(1500 + 3000);

    const [r1] = await readAll(chain.topic('first.retry.1'));
    const [r2] = await readAll(chain.topic('first.retry.2'));
    expect(r1!.headers).toMatchObject({
      [HEADERS.attempt]: '1',
      [HEADERS.retryTier]: '1',
      [HEADERS.errorCode]: 'GPU_OOM',
      [HEADERS.originTopic]: chain.topic('in'),
    });
    expect(r2!.headers).toMatchObject({ [HEADERS.attempt]: '2', [HEADERS.retryTier]: '2', [HEADERS.firstFailureMs]: r1!.headers[HEADERS.firstFailureMs] });
    // never processed before due: each retry's consumption happened after its due time
    expect(Number(r2!.headers[HEADERS.failedAtMs])).toBeGreaterThanOrEqual(Number(r1!.headers[HEADERS.dueMs]));
    expect(out[0]!.timestamp).toBeGreaterThanOrEqual(Number(r2!.headers[HEADERS.dueMs]));
    expect(r1!.value!.equals(input.value!)).toBe(true);
    expect(await readAll(chain.topic('first.dlq'), 500)).toHaveLength(0);
  }, 120_000);

  it('a permanent error goes straight to the DLQ; after the fix, `dlq replay` brings it back and it succeeds once', async () => {
    const chain = await deployChain();
    const fixedFlag = join(mkdtempSync(join(tmpdir(), 'sonicflow-fix-')), 'fixed');
    const [bad] = await produce(chain, 1, { error_message: 'poison' });
    const good = await produce(chain, 3);
    const stage = startStage(chain, 'first', { CHAIN_POISON_FIXED: fixedFlag });
    started.push(stage);
    await waitUntil(
      async () => (await readAll(chain.topic('first.dlq'), 500)).length === 1 && (await readAll(chain.topic('mid'), 500)).length === 3,
      60_000,
      'the DLQ record and the good outputs',
    );

    const input = (await readAll(chain.topic('in'))).find((r) => r.key === bad)!;
    const [dead] = await readAll(chain.topic('first.dlq'));
    expect(dead!.key).toBe(bad);
    expect(dead!.value!.equals(input.value!)).toBe(true);
    expect(dead!.headers).toMatchObject({
      [HEADERS.errorCode]: 'NO_FACE_DETECTED',
      [HEADERS.dlqReason]: 'permanent',
      [HEADERS.attempt]: '1',
      [HEADERS.originTopic]: chain.topic('in'),
      [HEADERS.originOffset]: input.offset,
    });
    expect(await readAll(chain.topic('first.retry.1'), 500)).toHaveLength(0);
    expect((await readAll(chain.topic('mid'))).map((r) => r.key).sort()).toEqual([...good].sort());

    const env = { SONIC_TOPIC_PREFIX: chain.prefix };
    const file = ['--file', join(import.meta.dirname, '..', 'fixtures', 'chain.ts')];
    const list = sonicflow(['dlq', 'list', 'first', ...file], env);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`${bad}\\s+NO_FACE_DETECTED\\s+permanent\\s+1`));
    const show = sonicflow(['dlq', 'show', 'first', '--task-id', bad!, ...file], env);
    expect(show.stdout).toContain(`${HEADERS.errorCode}: NO_FACE_DETECTED`);
    expect(show.stdout).toContain(`"task_id": "${bad}"`); // decoded through the registry
    const dry = sonicflow(['dlq', 'replay', 'first', '--code', 'NO_FACE_DETECTED', '--dry-run', ...file], env);
    expect(dry.stdout).toContain('1 dead letter(s) would be replayed');
    expect(sonicflow(['dlq', 'replay', 'first', ...file], env).stderr).toContain('say what to replay');

    writeFileSync(fixedFlag, 'fixed');
    expect(existsSync(fixedFlag)).toBe(true);
    const replay = sonicflow(['dlq', 'replay', 'first', '--task-id', bad!, ...file], env);
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toContain(`Replayed 1 record(s) into ${chain.topic('in')}`);

    await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).some((r) => r.key === bad), 60_000, 'the replayed record to succeed');
    await waitConsumedToEnd(testContext(), chain.topology, ['first']);
    const counts = countKeys(await readAll(chain.topic('mid')));
    expect(counts.get(bad!)).toBe(1);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    const replayed = (await readAll(chain.topic('in'))).find((r) => r.key === bad && r.headers[HEADERS.replayCount]);
    expect(replayed?.headers).toMatchObject({
      [HEADERS.replayCount]: '1',
      [HEADERS.replayOf]: `${chain.topic('first.dlq')}:${dead!.partition}:${dead!.offset}`,
    });
  }, 120_000);

  it('a poison pill lands in the DLQ with its bytes; the records after it are processed', async () => {
    const chain = await deployChain();
    const garbage = Buffer.from('this is not Avro at all');
    const p = await new PlainProducer(testContext().kafka).connect();
    // the poison pills go first into partition 0; good records follow in every partition
    const poisonKey = '0b0e3f35-2a4b-4f0e-9b1a-0f3a4f6a7c11';
    await p.send(chain.topic('in'), [
      { key: poisonKey, value: garbage, partition: 0 },
      { key: 'not-a-uuid', value: Buffer.from([0, 0, 0, 0x7f, 0x7f, 1]), partition: 0 },
    ]);
    await p.close();
    const good = await produce(chain, 8);
    const stage = startStage(chain, 'first');
    started.push(stage);
    await waitUntil(async () => (await readAll(chain.topic('mid'), 500)).length === 8, 60_000, 'the good records');
    const dlq = await readAll(chain.topic('first.dlq'));
    expect(dlq).toHaveLength(2);
    // the DLQ partitions by key, so find each dead letter by its key
    expect(dlq.find((r) => r.key === poisonKey)!.value!.equals(garbage)).toBe(true);
    expect(dlq.find((r) => r.key === 'not-a-uuid')?.headers[HEADERS.errorMessage]).toContain('unknown');
    expect(dlq.map((r) => r.headers[HEADERS.errorCode])).toEqual(['DESERIALIZATION_FAILED', 'DESERIALIZATION_FAILED']);
    expect(dlq.map((r) => r.headers[HEADERS.dlqReason])).toEqual(['undecodable', 'undecodable']);
    expect((await readAll(chain.topic('mid'))).map((r) => r.key).sort()).toEqual([...good].sort());
    expect(stage.proc.exitCode).toBeNull(); // still running
  }, 120_000);
});
