/**
 * An Idempotency-Key's retry is compared with its first request by fingerprint. The fingerprint
 * must not move when only the deployment changed (max_duration_s defaults to SONIC_MAX_AUDIO_S),
 * must move when the client's request did, and fingerprints kept before that rule still compare.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { buildRequest, requestFingerprint, sameFingerprint, type Limits, type SubmitFields } from '../../src/api/submit.js';

const media = (sha: string) => ({ uri: `blob://uploads/t/${sha}`, content_type: 'audio/wav', size_bytes: 10, sha256: sha.repeat(64).slice(0, 64) });
const limits = (maxAudioSeconds: number): Limits => ({ maxAudioBytes: 1e6, maxImageBytes: 1e6, maxAudioSeconds });
const request = (fields: SubmitFields, maxAudioSeconds = 60) =>
  buildRequest({
    taskId: '00000000-0000-4000-8000-000000000001',
    tenant: 't',
    idempotencyKey: 'k',
    audio: media('a'),
    image: media('b'),
    fields,
    limits: limits(maxAudioSeconds),
    traceparent: null,
    now: new Date(0),
  });

describe('request fingerprints', () => {
  it('a retry without max_duration_s matches after the deployment limit changed; another value does not', () => {
    const sent: SubmitFields = { params: { seed: 7 } };
    const first = requestFingerprint(request(sent, 60), sent);
    expect(sameFingerprint(first, request(sent, 120), sent)).toBe(true);
    const explicit: SubmitFields = { params: { seed: 7 }, max_duration_s: 30 };
    expect(sameFingerprint(first, request(explicit, 60), explicit)).toBe(false);
    const other: SubmitFields = { params: { seed: 8 } };
    expect(sameFingerprint(first, request(other, 60), other)).toBe(false);
    // left out, null or an empty form field: all absent
    for (const absent of [null, '']) {
      const sentAbsent: SubmitFields = { params: { seed: 7 }, max_duration_s: absent };
      expect(sameFingerprint(first, request(sentAbsent, 120), sentAbsent)).toBe(true);
    }
    // a Sonic default spelled out is the same request
    const spelled: SubmitFields = { params: { seed: 7, crop_to_face: true } };
    expect(sameFingerprint(first, request(spelled, 120), spelled)).toBe(true);
  });

  it('a fingerprint of the first version (no prefix, the defaulted max_duration_s) still compares', () => {
    const sent: SubmitFields = { params: { seed: 7 } };
    const r = request(sent, 60);
    const v2 = requestFingerprint(r, sent);
    expect(v2.startsWith('v2:')).toBe(true);
    // the first version hashed the same canonical form with the effective max_duration_s
    const v1 = createHash('sha256')
      .update(
        JSON.stringify({
          params: Object.fromEntries(Object.entries(r.params).sort(([a], [b]) => (a < b ? -1 : 1))),
          max_duration_s: r.max_duration_s,
          truncate_audio: r.truncate_audio,
          callback: null,
          priority: r.priority,
          metadata: [],
          audio: `sha256:${r.audio.sha256}`,
          image: `sha256:${r.image.sha256}`,
        }),
      )
      .digest('hex');
    expect(sameFingerprint(v1, r, sent)).toBe(true);
    expect(sameFingerprint(v1, request({ params: { seed: 8 } }, 60), {})).toBe(false);
  });
});
