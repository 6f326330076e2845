/**
 * Environment profiles: what a topology's topics need from the cluster they are deployed on, by
 * environment — how many replicas each partition has and how many of them must hold a write
 * before it is acknowledged (`min.insync.replicas`). The topology declares its profiles (or takes
 * the defaults below); the environment picks one by name (SONIC_TOPOLOGY_PROFILE), and
 * `withProfile` applies it to every topic when the topology is loaded.
 */
import { SonicError } from '../core/errors.js';
import type { EnvironmentProfile, TopicSpec, Topology } from './topology.js';

export type { EnvironmentProfile } from './topology.js';

/**
 * `local`: one broker (`npm run stack:up`), one replica. `replicated`: a cluster of three or more
 * brokers (`npm run stack:up -- --brokers 3`); with acks=all (every sonicflow producer is
 * transactional, hence idempotent with acks=all) a write is held by two replicas before it is
 * acknowledged, so one broker may die without losing an acknowledged record or stopping writes.
 */
export const DEFAULT_PROFILES: Readonly<Record<string, EnvironmentProfile>> = {
  local: { replicationFactor: 1, doc: 'one broker: one replica per partition' },
  replicated: { replicationFactor: 3, minInsyncReplicas: 2, doc: 'three or more brokers: three replicas, two in sync for a write' },
};

/** The profile name used when the environment names none. */
export const DEFAULT_PROFILE = 'local';

/** The topology's profiles (its own declaration, else DEFAULT_PROFILES). */
export function profilesOf(t: Pick<Topology, 'profiles'>): Readonly<Record<string, EnvironmentProfile>> {
  return t.profiles ?? DEFAULT_PROFILES;
}

/** Checks a profile's numbers; the problems, empty when it is sound. */
export function profileProblems(name: string, p: EnvironmentProfile): string[] {
  const problems: string[] = [];
  if (!(Number.isInteger(p.replicationFactor) && p.replicationFactor >= 1))
    problems.push(`profile ${name}: replicationFactor must be a whole number >= 1, got ${String(p.replicationFactor)}`);
  if (p.minInsyncReplicas !== undefined) {
    if (!(Number.isInteger(p.minInsyncReplicas) && p.minInsyncReplicas >= 1))
      problems.push(`profile ${name}: minInsyncReplicas must be a whole number >= 1, got ${String(p.minInsyncReplicas)}`);
    else if (p.minInsyncReplicas > p.replicationFactor)
      // no write could ever be acknowledged
      problems.push(`profile ${name}: minInsyncReplicas ${p.minInsyncReplicas} exceeds replicationFactor ${p.replicationFactor}`);
  }
  return problems;
}

/**
 * The topology with the profile `name` applied to every topic: its replication factor, and its
 * `min.insync.replicas` as a topic config when the profile sets one (which wins over a topic's own).
 *
 * @throws SonicError `TOPOLOGY_INVALID` when the topology has no such profile or the profile is unsound.
 */
export function withProfile(t: Topology, name: string): Topology {
  const profiles = profilesOf(t);
  const p = Object.hasOwn(profiles, name) ? profiles[name] : undefined;
  if (!p)
    throw new SonicError('TOPOLOGY_INVALID', `topology ${t.name} has no environment profile "${name}" (profiles: ${Object.keys(profiles).join(', ')})`, {
      details: { profile: name },
    });
  const problems = profileProblems(name, p);
  if (problems.length > 0) throw new SonicError('TOPOLOGY_INVALID', problems.join('; '), { details: { profile: name } });
  const isr: Record<string, string> = p.minInsyncReplicas === undefined ? {} : { 'min.insync.replicas': String(p.minInsyncReplicas) };
  const topics: Record<string, TopicSpec> = Object.fromEntries(
    Object.entries(t.topics).map(([key, topic]) => [key, { ...topic, replicationFactor: p.replicationFactor, configs: { ...topic.configs, ...isr } }]),
  );
  return { ...t, topics, profile: name };
}
