import { describe, expect, it } from 'vitest';
import { groupSession } from '../../src/ops/run.js';
import { sonicTopology } from '../../topologies/sonic.js';
import { validateTopology } from '../../src/runtime/validate.js';

describe("a stage's consumer group session", () => {
  const t = sonicTopology();
  const stage = (name: string) => t.stages.find((s) => s.name === name)!;

  it('infer and dispatch declare a short session; SONIC_SESSION_TIMEOUT_MS set wins; else 30 s', () => {
    expect(groupSession({ sessionTimeoutMs: 0, heartbeatIntervalMs: 3000 }, stage('infer'))).toEqual({ sessionTimeoutMs: 6000, heartbeatIntervalMs: 2000 });
    expect(groupSession({ sessionTimeoutMs: 0, heartbeatIntervalMs: 3000 }, stage('dispatch')).sessionTimeoutMs).toBe(6000);
    expect(groupSession({ sessionTimeoutMs: 0, heartbeatIntervalMs: 3000 }, stage('encode'))).toEqual({ sessionTimeoutMs: 30000, heartbeatIntervalMs: 3000 });
    expect(groupSession({ sessionTimeoutMs: 45000, heartbeatIntervalMs: 3000 }, stage('infer')).sessionTimeoutMs).toBe(45000);
    // the heartbeat never more than a third of the session
    expect(groupSession({ sessionTimeoutMs: 6000, heartbeatIntervalMs: 10000 }, stage('encode')).heartbeatIntervalMs).toBe(2000);
  });

  it('a declared session the broker would refuse is a topology problem', () => {
    const bad = { ...t, stages: t.stages.map((s) => (s.name === 'infer' ? { ...s, sessionTimeoutMs: 1000 } : s)) };
    expect(validateTopology(bad).map((p) => p.message)).toContain('stage infer sessionTimeoutMs must be a whole number of ms in [6000, 1800000], got 1000');
  });
});
