import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { classify } from '../../src/runtime/classify.js';
import { HEADERS, attemptOf, childTraceparent, failureHeaders, replayHeaders } from '../../src/runtime/headers.js';
import type { Schemas } from '../../src/domain/records.js';
import type { StageHandler } from '../../src/runtime/stage.js';
import { taskStates } from '../../src/stages/status.js';
import { TopologyTestDriver } from '../../src/runtime/test-driver.js';
import { defineTopology } from '../../src/runtime/topology.js';
import { statusEvent } from '../../src/domain/status-event.js';

type Msg = Schemas['task-status'];

/** in -> work -> out, plus the status topic; `out` partitioned as asked. */
const unitTopology = (prefix: string, partitions: number, partitioning?: 'key' | 'balanced') =>
  defineTopology({
    name: 'unit',
    prefix,
    // `work` works in the task state INFERRING; a (here absent) next stage in ENCODING follows it
    status: {
      topic: 'status',
      hook: taskStates([
        { name: 'work', state: 'INFERRING' },
        { name: 'next', state: 'ENCODING' },
      ]),
    },
    defaults: { partitions, retry: { delaysMs: [5_000, 30_000], maxAttempts: 3 } },
    topics: {
      in: { valueSchema: 'task-status', external: { producers: ['test'] }, doc: 'in' },
      out: { valueSchema: 'task-status', ...(partitioning ? { partitioning } : {}), external: { consumers: ['test'] }, doc: 'out' },
      status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
    },
    stages: { work: { doc: 'work', input: 'in', outputs: { done: 'out' } } },
  });

const topology = unitTopology('u', 1);

/** A stage whose behaviour each test sets through `behave`. */
function driverWith(behave: (m: Msg, attempt: number) => void) {
  const calls: { taskId: string; attempt: number }[] = [];
  const work: StageHandler<Msg> = {
    async handle(rec) {
      calls.push({ taskId: rec.key, attempt: rec.attempt });
      behave(rec.value, rec.attempt);
      return { emit: [{ sink: 'done', value: { ...rec.value, stage: 'work' } }] };
    },
  };
  return { driver: new TopologyTestDriver(topology, { handlers: { work } }), calls };
}

const msg = (extra: Partial<Msg> = {}): Msg => statusEvent({ task_id: randomUUID(), state: 'QUEUED', at: new Date(0), ...extra });

describe('stage routing (topology test driver, same code as the Kafka runner)', () => {
  it('publishes the handler output and a status event on success, carrying the trace id', async () => {
    const { driver } = driverWith(() => undefined);
    const m = msg();
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await driver.pipeInput('u.in', m.task_id, m, { traceparent });
    const [out] = await driver.read<Msg>('u.out');
    expect(out?.value).toMatchObject({ task_id: m.task_id, stage: 'work' });
    expect(out?.headers.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(out?.headers.traceparent).not.toBe(traceparent);
    expect(await driver.statuses(m.task_id)).toEqual([expect.objectContaining({ state: 'ENCODING', stage: 'work', attempt: 1 })]);
  });

  it('retry router sends a permanent error straight to the DLQ with original bytes and context headers', async () => {
    const { driver, calls } = driverWith(() => {
      throw new SonicError('NO_FACE_DETECTED', 'no face in the portrait');
    });
    const m = msg();
    await driver.pipeInput('u.in', m.task_id, m);
    const [input] = await driver.read('u.in');
    const dlq = await driver.read<Msg>('u.work.dlq');
    expect(dlq).toHaveLength(1);
    expect(dlq[0]!.raw!.equals(input!.raw!)).toBe(true);
    expect(dlq[0]!.headers).toMatchObject({
      [HEADERS.version]: '1',
      [HEADERS.originTopic]: 'u.in',
      [HEADERS.originPartition]: '0',
      [HEADERS.originOffset]: '0',
      [HEADERS.stage]: 'work',
      [HEADERS.attempt]: '1',
      [HEADERS.errorCode]: 'NO_FACE_DETECTED',
      [HEADERS.errorMessage]: 'no face in the portrait',
      [HEADERS.errorRetryable]: 'false',
      [HEADERS.dlqReason]: 'permanent',
    });
    expect(dlq[0]!.headers[HEADERS.errorStack]).toContain('SonicError');
    expect(await driver.read('u.work.retry.1')).toHaveLength(0);
    expect(await driver.read('u.out')).toHaveLength(0);
    expect(calls).toHaveLength(1);
    expect(await driver.statuses(m.task_id)).toEqual([expect.objectContaining({ state: 'FAILED', error_code: 'NO_FACE_DETECTED', retryable: false })]);
  });

  it("onFailure's outputs carry the stage's clock (the driver's fake one), published with the dead letter", async () => {
    const work: StageHandler<Msg> = {
      async handle() {
        throw new SonicError('NO_FACE_DETECTED', 'no face');
      },
      onFailure: (rec, error, ctx) => ({ emit: [{ sink: 'done', value: { ...rec.value, stage: `failed:${error.code}`, at: ctx.now() } }] }),
    };
    const driver = new TopologyTestDriver(topology, { handlers: { work }, startMs: Date.UTC(2030, 5, 1) });
    await driver.advanceTime(12_345);
    const m = msg();
    await driver.pipeInput('u.in', m.task_id, m);
    const [out] = await driver.read<Msg>('u.out');
    expect(out?.value).toMatchObject({ stage: 'failed:NO_FACE_DETECTED', at: new Date(Date.UTC(2030, 5, 1) + 12_345) });
    expect(await driver.read('u.work.dlq')).toHaveLength(1);
  });

  it('a model that cannot load (MODEL_UNAVAILABLE) stops the stage: no retry, no DLQ, no status; the record is redone later', async () => {
    let loaded = false;
    const { driver, calls } = driverWith(() => {
      if (!loaded) throw new SonicError('MODEL_UNAVAILABLE', 'the Sonic runner failed to load 3 times: no checkpoints');
    });
    const m = msg();
    await expect(driver.pipeInput('u.in', m.task_id, m)).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE' });
    for (const topic of ['u.work.dlq', 'u.work.retry.1', 'u.out', topology.statusTopic]) expect(await driver.read(topic), topic).toHaveLength(0);
    // uncommitted: once a stage can load the model, the same record is handled, as attempt 1
    loaded = true;
    await driver.advanceTime(0);
    expect(calls).toEqual([
      { taskId: m.task_id, attempt: 1 },
      { taskId: m.task_id, attempt: 1 },
    ]);
    expect(await driver.read('u.out')).toHaveLength(1);
  });

  it('treats a bug (TypeError) as permanent: INTERNAL, DLQ at once', async () => {
    const { driver } = driverWith((m) => {
      (m as unknown as { nope: { x: number } }).nope.x = 1;
    });
    const m = msg();
    await driver.pipeInput('u.in', m.task_id, m);
    const [dlq] = await driver.read('u.work.dlq');
    expect(dlq?.headers[HEADERS.errorCode]).toBe('INTERNAL');
    expect(dlq?.headers[HEADERS.dlqReason]).toBe('permanent');
  });

  it('sends a retryable error through the tiers, never early, then succeeds once with attempt 3', async () => {
    const { driver, calls } = driverWith((_m, attempt) => {
      if (attempt < 3) throw new SonicError('GPU_OOM', `oom on attempt ${attempt}`);
    });
    const m = msg();
    const t0 = driver.now();
    await driver.pipeInput('u.in', m.task_id, m);
    const [r1] = await driver.read('u.work.retry.1');
    expect(r1?.headers).toMatchObject({
      [HEADERS.attempt]: '1',
      [HEADERS.dueMs]: String(t0 + 5_000),
      [HEADERS.retryTier]: '1',
      [HEADERS.errorCode]: 'GPU_OOM',
    });
    await driver.advanceTime(4_999);
    expect(calls).toHaveLength(1); // not due yet
    await driver.advanceTime(1);
    expect(calls.map((c) => c.attempt)).toEqual([1, 2]);
    const [r2] = await driver.read('u.work.retry.2');
    expect(r2?.headers).toMatchObject({ [HEADERS.attempt]: '2', [HEADERS.firstFailureMs]: String(t0), [HEADERS.errorMessage]: 'oom on attempt 2' });
    await driver.advanceTime(29_999);
    expect(calls).toHaveLength(2);
    await driver.advanceTime(1);
    expect(calls.map((c) => c.attempt)).toEqual([1, 2, 3]);
    expect(await driver.read('u.out')).toHaveLength(1);
    expect(await driver.read('u.work.dlq')).toHaveLength(0);
    const states = await driver.statuses<{ state: string; attempt: number; error_code: string | null }>(m.task_id);
    expect(states.map((s) => [s.state, s.attempt, s.error_code])).toEqual([
      ['INFERRING', 2, 'GPU_OOM'],
      ['INFERRING', 3, 'GPU_OOM'],
      ['ENCODING', 3, null],
    ]);
  });

  it('sends an exhausted retryable error to the DLQ with reason exhausted', async () => {
    const { driver, calls } = driverWith(() => {
      throw new SonicError('STORAGE_WRITE_FAILED', 'bucket unavailable');
    });
    const m = msg();
    await driver.pipeInput('u.in', m.task_id, m);
    await driver.advanceTime(5_000);
    await driver.advanceTime(30_000);
    expect(calls).toHaveLength(3);
    const [dlq] = await driver.read('u.work.dlq');
    expect(dlq?.headers).toMatchObject({
      [HEADERS.attempt]: '3',
      [HEADERS.dlqReason]: 'exhausted',
      [HEADERS.originTopic]: 'u.in',
      [HEADERS.errorRetryable]: 'true',
    });
  });

  it('sends a poison pill to the DLQ with its raw bytes and keeps processing the records after it', async () => {
    const { driver, calls } = driverWith(() => undefined);
    const garbage = Buffer.from('definitely not avro');
    await driver.pipeRaw('u.in', randomUUID(), garbage);
    const m = msg();
    await driver.pipeInput('u.in', m.task_id, m);
    const dlq = await driver.read('u.work.dlq');
    expect(dlq).toHaveLength(1);
    expect(dlq[0]!.raw!.equals(garbage)).toBe(true);
    expect(dlq[0]!.headers).toMatchObject({ [HEADERS.errorCode]: 'DESERIALIZATION_FAILED', [HEADERS.dlqReason]: 'undecodable' });
    expect(calls).toHaveLength(1);
    expect((await driver.read('u.out')).map((r) => r.key)).toEqual([m.task_id]);
  });
});

describe('sink partitioning', () => {
  const twoSinks = (partitioning: 'key' | 'balanced') => unitTopology('p', 3, partitioning);
  const forward: StageHandler<Msg> = { handle: async (rec) => ({ emit: [{ sink: 'done', value: rec.value }] }) };

  it("a 'balanced' sink deals a stage's records round robin over its partitions; the status topic stays keyed", async () => {
    const driver = new TopologyTestDriver(twoSinks('balanced'), { handlers: { work: forward } });
    for (let i = 0; i < 9; i++) {
      const m = msg();
      await driver.pipeInput('p.in', m.task_id, m);
    }
    const parts = (await driver.read('p.out')).map((r) => r.partition);
    expect(parts).toHaveLength(9);
    for (let i = 1; i < parts.length; i++) expect(parts[i]).toBe((parts[i - 1]! + 1) % 3);
    expect((await driver.read('p.status')).every((r) => r.partition === 0)).toBe(true);
  });

  it("a 'key' sink (the default) leaves the partition to the key", async () => {
    const driver = new TopologyTestDriver(twoSinks('key'), { handlers: { work: forward } });
    const m = msg();
    await driver.pipeInput('p.in', m.task_id, m);
    expect((await driver.read('p.out')).map((r) => [r.key, r.partition])).toEqual([[m.task_id, 0]]);
  });
});

describe('classify', () => {
  const retry = { delaysMs: [5_000, 30_000, 120_000], maxAttempts: 4 };
  it('routes attempt n of a retryable error to tier n', () => {
    expect(classify(new SonicError('GPU_OOM', 'x'), 1, { ...retry, maxAttempts: 9 })).toMatchObject({ action: 'retry', tier: 1, delayMs: 5_000 });
    expect(classify(new SonicError('STORAGE_WRITE_FAILED', 'x'), 3, retry)).toMatchObject({ action: 'retry', tier: 3, delayMs: 120_000 });
  });
  it('stops at the stage limit and at the code limit (INFERENCE_TIMEOUT retries once)', () => {
    expect(classify(new SonicError('STORAGE_WRITE_FAILED', 'x'), 4, retry)).toMatchObject({ action: 'dlq', reason: 'exhausted' });
    expect(classify(new SonicError('INFERENCE_TIMEOUT', 'x'), 1, retry)).toMatchObject({ action: 'retry', tier: 1 });
    expect(classify(new SonicError('INFERENCE_TIMEOUT', 'x'), 2, retry)).toMatchObject({ action: 'dlq', reason: 'exhausted' });
  });
  it('never retries permanent codes, bugs or non-errors', () => {
    expect(classify(new SonicError('AUDIO_TOO_SHORT', 'x'), 1, retry)).toMatchObject({ action: 'dlq', reason: 'permanent' });
    expect(classify(new RangeError('bad'), 1, retry)).toMatchObject({ action: 'dlq', reason: 'permanent', error: { code: 'INTERNAL' } });
    expect(classify('a string', 1, retry)).toMatchObject({ action: 'dlq', error: { code: 'INTERNAL' } });
  });
  it('neither retries nor dead-letters a code that stops the stage, at any attempt', () => {
    for (const attempt of [1, 4])
      expect(classify(new SonicError('MODEL_UNAVAILABLE', 'x'), attempt, retry)).toMatchObject({ action: 'stop', error: { code: 'MODEL_UNAVAILABLE' } });
  });
  it('sends a retryable error to the DLQ when a stage has no tiers', () => {
    expect(classify(new SonicError('GPU_OOM', 'x'), 1, { delaysMs: [], maxAttempts: 5 })).toMatchObject({ action: 'dlq', reason: 'exhausted' });
  });
});

describe('header schema', () => {
  const error = new SonicError('GPU_OOM', 'oom');
  it('keeps origin and first failure from the first hop and replaces, not appends, error headers', () => {
    const h1 = failureHeaders(
      { traceparent: 't', custom: 'x' },
      { stage: 's', topic: 'in', partition: 2, offset: '7', attempt: 1, error, nowMs: 100, dueMs: 200, tier: 1 },
    );
    const h2 = failureHeaders(h1, {
      stage: 's',
      topic: 'retry.1',
      partition: 2,
      offset: '3',
      attempt: 2,
      error: new SonicError('CUDA_ERROR', 'cuda'),
      nowMs: 300,
      dlqReason: 'exhausted',
    });
    expect(h2).toMatchObject({
      custom: 'x',
      traceparent: 't',
      [HEADERS.originTopic]: 'in',
      [HEADERS.originOffset]: '7',
      [HEADERS.firstFailureMs]: '100',
      [HEADERS.failedAtMs]: '300',
      [HEADERS.errorCode]: 'CUDA_ERROR',
      [HEADERS.attempt]: '2',
    });
    expect(h2[HEADERS.dueMs]).toBeUndefined();
    expect(Object.keys(h2).filter((k) => k === HEADERS.errorCode)).toHaveLength(1);
  });
  it('replay starts fresh at attempt 1 and records the replay', () => {
    const dlq = failureHeaders({}, { stage: 's', topic: 'in', partition: 0, offset: '5', attempt: 3, error, nowMs: 1, dlqReason: 'exhausted' });
    const r = replayHeaders(dlq, { topic: 's.dlq', partition: 0, offset: '9' }, 50);
    expect(attemptOf(r)).toBe(1);
    expect(r).toMatchObject({ [HEADERS.replayCount]: '1', [HEADERS.replayOf]: 's.dlq:0:9', [HEADERS.replayAtMs]: '50', [HEADERS.originTopic]: 'in' });
    expect(r[HEADERS.errorCode]).toBeUndefined();
    expect(replayHeaders(r, { topic: 's.dlq', partition: 0, offset: '12' }, 60)[HEADERS.replayCount]).toBe('2');
  });
  it('starts a new trace for a missing or malformed traceparent', () => {
    expect(childTraceparent(undefined)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(childTraceparent('garbage')).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
  it('keeps the trace id and flags of the input and gives every hop its own span id, across pool refills', () => {
    const parent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const spans = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const child = childTraceparent(parent);
      expect(child).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
      spans.add(child.split('-')[2]!);
    }
    expect(spans.size).toBe(2000); // 2000 x 8 bytes: the 4 KB pool refilled three times
    expect(spans.has('0000000000000000')).toBe(false);
  });
});
