import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { consoleDlqRoutes, deadLetterView, redact, sharedReads, type DeadLetters } from '../../src/api/console/dlq.js';
import { confirmReplay, planReplay, positionOf, type TaskStateOf } from '../../src/api/console/dlq-plan.js';
import { httpStatus } from '../../src/api/server.js';
import { ERROR_CODES, scrubInternals, type SonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import type { TaskState } from '../../src/domain/records.js';
import type { InRecord } from '../../src/kafka/io.js';
import { HEADERS } from '../../src/runtime/headers.js';

const logger = createLogger('test', 'silent');

describe('the scrubber of what the console shows of dead letters', () => {
  it('keeps only the blob key of an s3 URI and the last segment of a local path', () => {
    expect(scrubInternals('s3://sonic-prod-blobs/tasks/abc/input/audio-1')).toBe('tasks/abc/input/audio-1');
    expect(scrubInternals('could not read s3a://bucket/tasks/t1/video.mp4: 503')).toBe('could not read tasks/t1/video.mp4: 503');
    expect(scrubInternals('file:///var/lib/sonic/blobs/tasks/t1/input/image-1')).toBe('image-1');
    expect(scrubInternals('video at /var/lib/sonic/scratch/t1/out.mp4 did not probe')).toBe('video at out.mp4 did not probe');
    expect(scrubInternals("open '/home/ops/.cache/sonic/weights.pt' failed")).toBe("open 'weights.pt' failed");
    expect(scrubInternals('see ~/secrets/kafka.env')).toBe('see kafka.env');
    expect(scrubInternals('C:\\Users\\ops\\sonic\\in.wav missing')).toBe('in.wav missing');
  });

  it('hides credentials of URLs and the host:port of brokers, registries and runners', () => {
    expect(scrubInternals('POST https://alice:hunter2@hooks.example.com/cb failed')).toBe('POST https://[credentials]@hooks.example.com/cb failed');
    expect(scrubInternals('redis://:pw@redis.internal:6379/0')).toBe('redis://[credentials]@[host]/0');
    expect(scrubInternals('connect ECONNREFUSED 10.0.3.7:9092')).toBe('connect ECONNREFUSED [host]');
    expect(scrubInternals('broker kafka-0.kafka.svc.cluster.local:9093 and [fe80::1]:8081 down')).toBe('broker [host] and [host] down');
    expect(scrubInternals('registry at http://schema-registry:8081/subjects')).toBe('registry at http://[host]/subjects');
  });

  it("cuts a runner's traceback and a stack trace", () => {
    const stderr = 'runner exited 1: Traceback (most recent call last): | File "/opt/sonic/run.py", line 12 | RuntimeError: CUDA';
    expect(scrubInternals(stderr)).toBe('runner exited 1: [traceback]');
    expect(scrubInternals('boom\n    at run (/app/dist/stage.js:10:3)\n    at next (node:internal)')).toBe('boom [traceback]');
  });

  it('leaves ordinary text, times and blob keys alone', () => {
    for (const s of ['2026-12-01T10:30:00.000Z', 'tasks/abc/input/audio-1', 'took 12:30 min', 'audio is 0.4 s long', 'a/b and 1/2'])
      expect(scrubInternals(s)).toBe(s);
  });

  it('a dead letter shows the public message of its code and scrubbed headers and record', () => {
    const headers = {
      [HEADERS.errorCode]: 'INPUT_FETCH_FAILED',
      [HEADERS.errorMessage]: 'GET s3://prod-bucket/tasks/t1/input/audio-1 via minio.internal:9000 timed out',
      [HEADERS.errorStack]: 'Error: x\n    at y (/app/z.js:1:1)',
      [HEADERS.originTopic]: 'sonic.preprocess',
    };
    const view = deadLetterView({ topic: 'sonic.preprocess.dlq', partition: 0, offset: '7', key: 't1', value: null, headers, timestamp: 0 });
    expect(view.message).toBe(ERROR_CODES.INPUT_FETCH_FAILED.doc);
    expect(view.headers[HEADERS.errorMessage]).toBe('GET tasks/t1/input/audio-1 via [host] timed out');
    expect(view.headers[HEADERS.errorStack]).toBeUndefined();
    expect(
      deadLetterView({ topic: 't', partition: 0, offset: '1', key: null, value: null, headers: { [HEADERS.errorCode]: 'NOPE' }, timestamp: 0 }).message,
    ).toBe(ERROR_CODES.INTERNAL.doc);
    const record = redact({ audio_uri: 's3://prod-bucket/tasks/t1/a', meta: [{ note: 'at /srv/x/y.wav' }], raw: Buffer.from('abc') });
    expect(record).toEqual({ audio_uri: 'tasks/t1/a', meta: [{ note: 'at y.wav' }], raw: '(3 bytes)' });
  });
});

/** A dead letter of task `key` at `partition:offset`, dead-lettered with `code`. */
const letter = (offset: number, key: string | null, code = 'NO_FACE_DETECTED', partition = 0): InRecord => ({
  topic: 'sonic.infer.dlq',
  partition,
  offset: String(offset),
  key,
  value: Buffer.from('x'),
  headers: { [HEADERS.errorCode]: code },
  timestamp: 0,
});

/** A status view that knows the tasks of `states`, and nothing else. */
const fakeStates =
  (states: Record<string, TaskState>): TaskStateOf =>
  (id) =>
    states[id];

describe('which dead letters a console replay takes', () => {
  const dlq = [letter(1, 'failed'), letter(2, 'succeeded'), letter(3, 'running'), letter(4, 'gone'), letter(5, null), letter(6, 'other', 'GPU_OOM')];
  const states = fakeStates({ failed: 'FAILED', succeeded: 'SUCCEEDED', running: 'INFERRING', other: 'FAILED' });

  it("by default only FAILED tasks' letters: a task that succeeded or runs again after a replay is left out and counted", () => {
    const plan = planReplay(dlq, { all: true }, states);
    expect(plan.picked.map(positionOf)).toEqual(['0:1', '0:6']);
    expect(plan.skipped).toEqual([
      { position: '0:2', task_id: 'succeeded', task_state: 'SUCCEEDED', reason: 'not-failed' },
      { position: '0:3', task_id: 'running', task_state: 'INFERRING', reason: 'not-failed' },
      { position: '0:4', task_id: 'gone', task_state: null, reason: 'unknown-task' },
      { position: '0:5', task_id: null, task_state: null, reason: 'unknown-task' },
    ]);
    expect(planReplay(dlq, { code: 'GPU_OOM' }, states).picked.map(positionOf)).toEqual(['0:6']);
  });

  it('force takes every selected letter; an empty selection is refused', () => {
    expect(planReplay(dlq, { all: true }, states, { force: true }).picked.map(positionOf)).toEqual(['0:1', '0:2', '0:3', '0:4', '0:5', '0:6']);
    expect(() => planReplay(dlq, {}, states)).toThrow(/say what to replay/);
  });

  it('a task dead-lettered twice (replayed, failed again) is replayed once, from its latest letter, even with force', () => {
    const twice = [letter(1, 'failed'), letter(7, 'failed', 'GPU_OOM')];
    for (const force of [false, true]) {
      const plan = planReplay(twice, { all: true }, states, { force });
      expect(plan.picked.map(positionOf)).toEqual(['0:7']);
      expect(plan.skipped).toEqual([{ position: '0:1', task_id: 'failed', task_state: 'FAILED', reason: 'superseded' }]);
    }
    // selecting the older letter's code does not bring it back
    expect(planReplay(twice, { code: 'NO_FACE_DETECTED' }, states).picked).toEqual([]);
  });

  it('takes at most `max` letters and counts the rest', () => {
    const many = Array.from({ length: 5 }, (_, i) => letter(i, `t${i}`));
    const plan = planReplay(many, { all: true }, () => 'FAILED', { max: 3 });
    expect(plan.picked.map(positionOf)).toEqual(['0:0', '0:1', '0:2']);
    expect(plan.remaining).toBe(2);
  });

  it('the confirmation replays exactly the listed letters, and refuses (409) one gone or no longer selected', () => {
    expect(confirmReplay(dlq, ['0:6', '0:1'], states).map(positionOf)).toEqual(['0:6', '0:1']);
    expect(() => confirmReplay(dlq, ['0:1', '0:99'], states)).toThrow(/no longer in the DLQ: 0:99/);
    // the task succeeded between the dry run and the confirmation
    const since = fakeStates({ failed: 'SUCCEEDED', other: 'FAILED' });
    expect(() => confirmReplay(dlq, ['0:1', '0:6'], since)).toThrow(expect.objectContaining({ code: 'DLQ_SELECTION_CHANGED' }));
    expect(httpStatus('DLQ_SELECTION_CHANGED')).toBe(409);
    expect(confirmReplay(dlq, ['0:2'], states, { force: true }).map(positionOf)).toEqual(['0:2']);
    expect(() => confirmReplay(dlq, [], states)).toThrow(/say which dead letters/);
  });
});

describe("the console's replay route", () => {
  it('a dry run lists positions and what it left out; the confirmation replays those positions only', async () => {
    const dlq = [letter(1, 'a'), letter(2, 'b'), letter(3, 'c')];
    const replayed: string[][] = [];
    const deadLetters: DeadLetters = {
      stages: ['infer'],
      read: async () => dlq,
      decode: async () => null,
      select: () => [],
      replay: async (_stage, picked) => void replayed.push(picked.map(positionOf)),
    };
    const states: Record<string, TaskState> = { a: 'FAILED', b: 'SUCCEEDED', c: 'FAILED' };
    const app = Fastify();
    app.decorateRequest('role', 'admin');
    app.setErrorHandler((err: SonicError, _req, reply) => reply.status(httpStatus(err.code)).send({ code: err.code }));
    await app.register(consoleDlqRoutes(deadLetters, (id) => states[id], logger, { publicUrl: '', trustsProxy: false }));
    const post = (body: unknown) => app.inject({ method: 'POST', url: '/console/dlq/infer/replay', payload: body as object });
    const dry = (await post({ all: true, dry_run: true })).json();
    expect(dry).toMatchObject({ count: 2, positions: ['0:1', '0:3'], skipped: { 'not-failed': 1 } });
    states.c = 'QUEUED';
    expect((await post({ positions: dry.positions, dry_run: false })).statusCode).toBe(409);
    expect(replayed).toEqual([]);
    states.c = 'FAILED';
    expect((await post({ positions: dry.positions, dry_run: false })).json()).toMatchObject({ count: 2 });
    expect(replayed).toEqual([['0:1', '0:3']]);
    const listed = (await app.inject({ url: '/console/dlq/infer' })).json();
    expect(listed.codes[0].letters.map((l: { task_state: string; replayable: boolean }) => [l.task_state, l.replayable])).toEqual([
      ['FAILED', true],
      ['SUCCEEDED', false],
      ['FAILED', true],
    ]);
    await app.close();
  });
});

describe("the console's reads of a DLQ", () => {
  it('concurrent requests share one read, which answers for its ttl; a failed read or a replay is not kept', async () => {
    let clock = 0;
    let reads = 0;
    let fail = false;
    const shared = sharedReads(
      async (stage: string) => {
        reads++;
        await new Promise((r) => setTimeout(r, 5));
        if (fail) throw new Error('broker down');
        return `${stage}#${reads}`;
      },
      5000,
      () => clock,
    );
    expect(await Promise.all([shared.read('infer'), shared.read('infer')])).toEqual(['infer#1', 'infer#1']);
    clock = 4999;
    expect(await shared.read('infer')).toBe('infer#1');
    expect(await shared.read('encode')).toBe('encode#2');
    clock = 10_000;
    expect(await shared.read('infer')).toBe('infer#3');
    shared.forget('infer');
    fail = true;
    await expect(shared.read('infer')).rejects.toThrow('broker down');
    fail = false;
    expect(await shared.read('infer')).toBe('infer#5');
  });

  it('an answer shows the newest 200 letters of a code, decodes only those, and says how many there are', async () => {
    const dlq = Array.from({ length: 250 }, (_, i) => letter(i, `t${i}`));
    let decoded = 0;
    const deadLetters: DeadLetters = {
      stages: ['infer'],
      read: async () => dlq,
      decode: async () => (decoded++, null),
      select: () => [],
      replay: async () => {},
    };
    const app = Fastify();
    app.decorateRequest('role', 'read');
    await app.register(consoleDlqRoutes(deadLetters, () => 'FAILED', logger, { publicUrl: '', trustsProxy: false }));
    const body = (await app.inject({ url: '/console/dlq/infer' })).json();
    expect(body).toMatchObject({ total: 250, replayable: 250 });
    expect(body.codes[0]).toMatchObject({ code: 'NO_FACE_DETECTED', count: 250, more: 50 });
    expect(body.codes[0].letters).toHaveLength(200);
    expect(body.codes[0].letters[0].position).toBe('0:50');
    expect(decoded).toBe(200);
    await app.close();
  });
});
