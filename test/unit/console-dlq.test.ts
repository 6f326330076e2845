import { describe, expect, it } from 'vitest';
import { deadLetterView, redact } from '../../src/api/console/dlq.js';
import { ERROR_CODES, scrubInternals } from '../../src/core/errors.js';
import { HEADERS } from '../../src/runtime/headers.js';

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
