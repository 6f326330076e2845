/**
 * `topology deploy`: compares the topology with the broker and the registry, prints a plan like
 * `terraform plan`, then applies it. Idempotent; never shrinks partitions or drops topics; never
 * grows the partitions of a stage with state stores (its input, retry tiers and changelogs: keys
 * would move away from their store partition, as Kafka Streams refuses too); refuses the whole
 * deploy when any change is impossible or any schema is incompatible.
 */
import { SonicError } from '../core/errors.js';
import type { TopicAdmin, TopicState } from '../kafka/admin.js';
import { notAuthorized } from '../runtime/acls.js';
import { stageSinks, stageSources } from '../runtime/describe.js';
import { findStage, registeredTopics, type TopicSpec, type Topology } from '../runtime/topology.js';
import type { TopologyProblem } from '../runtime/validate.js';
import type { CompatibilityLevel, RegistryAdmin } from '../serde/registry-admin.js';
import { valueSubject } from '../serde/serde.js';

export interface SubjectChange {
  subject: string;
  schema: string;
  /** `new`: no version yet; `register`: a new version; `unchanged`: already registered. */
  action: 'new' | 'register' | 'unchanged';
  compatibility: { from?: string; to: CompatibilityLevel };
}

export interface DeployPlan {
  createTopics: TopicSpec[];
  addPartitions: { name: string; from: number; to: number }[];
  configChanges: { name: string; key: string; from?: string; to: string; all: Record<string, string> }[];
  subjects: SubjectChange[];
  refusals: { node: string; reason: string }[];
}

/** Topics a deploy touches: all of them, or one stage's inputs, retry tiers, DLQ, sinks, status and store changelogs. */
export function topicsInScope(t: Topology, stage?: string): TopicSpec[] {
  if (!stage) return Object.values(t.topics);
  const s = findStage(t, stage);
  if (!s) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${stage}" (stages: ${t.stages.map((x) => x.name).join(', ')})`);
  const names = new Set([...stageSources(s), ...stageSinks(t, s).map((k) => k.topic), ...s.stores.map((st) => st.changelog)]);
  return Object.values(t.topics).filter((topic) => names.has(topic.name));
}

/**
 * What keeps `stages` from running on the broker as it is: a topic of theirs (input, retry tiers,
 * DLQ, sinks, status) that does not exist, or has another partition count than the topology
 * declares. Each problem names its node; fix them with `sonicflow topology deploy`. Reads
 * partitions only (no configs), so a stage's principal needs nothing beyond its own ACLs; a topic
 * the broker hides from it (no DESCRIBE) throws KAFKA_NOT_AUTHORIZED naming `principal`.
 */
export async function deployedProblems(t: Topology, stages: string[], admin: TopicAdmin, principal?: string): Promise<TopologyProblem[]> {
  const problems: TopologyProblem[] = [];
  for (const stage of stages) {
    const topics = topicsInScope(t, stage);
    const actual = await admin.describe(
      topics.map((x) => x.name),
      { configs: false },
    );
    const missing = topics.filter((x) => !actual.has(x.name)).map((x) => x.name);
    const hidden = missing.length > 0 ? await admin.denied(missing) : [];
    if (hidden.length > 0) {
      throw notAuthorized({
        type: 'TOPIC_AUTHORIZATION_FAILED',
        stage,
        ...(principal ? { principal } : {}),
        resources: hidden,
        certain: true,
        action: 'describe',
      });
    }
    for (const spec of topics) {
      const now = actual.get(spec.name);
      if (!now)
        problems.push({
          node: `topic:${spec.name}`,
          message: `topic ${spec.name} of stage ${stage} does not exist: run \`sonicflow topology deploy --stage ${stage}\``,
        });
      else if (now.partitions !== spec.partitions) {
        problems.push({
          node: `topic:${spec.name}`,
          message: `topic ${spec.name} of stage ${stage} has ${now.partitions} partitions, the topology declares ${spec.partitions}${now.partitions < spec.partitions ? `: run \`sonicflow topology deploy --stage ${stage}\`` : " (partitions never shrink: declare the broker's count)"}`,
        });
      }
    }
  }
  return problems;
}

/**
 * Topics whose partition count must never change once made, with why (the refusal's words):
 * - the input, retry tiers and store changelogs of every stage with state stores. A key's store
 *   partition is its input partition; with more partitions its records go elsewhere, away from
 *   the entries (a dedup `seen` entry, a count) kept for it, and the changelogs no longer line up
 *   with the input;
 * - every compacted topic (the status topic, `tasks.keys`): a key's later records and its
 *   tombstone would land in another partition than its earlier ones, which compaction then never
 *   removes, so a view rebuilt from the topic brings deleted tasks back.
 */
export function storePartitionedTopics(t: Topology): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of t.stages) {
    if (s.stores.length === 0) continue;
    for (const name of [...stageSources(s), ...s.stores.map((st) => st.changelog)])
      out.set(
        name,
        `it is an input, retry tier or store changelog of stage ${s.name}, which has state stores: with more partitions keys would move away from their store partition (duplicates would pass, state would be lost) — keep the count, or move the stage to new topics with a store rebuilt from scratch`,
      );
  }
  for (const spec of Object.values(t.topics)) {
    if (out.has(spec.name) || !(spec.configs['cleanup.policy'] ?? '').split(',').includes('compact')) continue;
    out.set(
      spec.name,
      `it is compacted: with more partitions a key's later records and its tombstone would land in another partition than its earlier ones, which compaction then never removes (a view rebuilt from it would bring deleted tasks back) — keep the count, or move to a new topic`,
    );
  }
  return out;
}

/**
 * Works out what deploying `topics` would change. Reads only. `fixed` ({@link storePartitionedTopics}):
 * topics whose partitions may not grow, by the stage that needs them unchanged.
 */
export async function planDeploy(
  topics: TopicSpec[],
  admin: TopicAdmin,
  registry: RegistryAdmin,
  fixed: ReadonlyMap<string, string> = new Map(),
): Promise<DeployPlan> {
  const plan: DeployPlan = { createTopics: [], addPartitions: [], configChanges: [], subjects: [], refusals: [] };
  const existing: Map<string, TopicState> = await admin.describe(topics.map((t) => t.name));
  const brokers = await admin.brokerCount();
  for (const spec of topics) {
    const now = existing.get(spec.name);
    if (!now) {
      if (spec.replicationFactor > brokers) {
        plan.refusals.push({
          node: `topic:${spec.name}`,
          reason: `topic ${spec.name} needs ${spec.replicationFactor} replicas and the cluster has ${brokers} broker(s): deploy with a profile of at most ${brokers} (SONIC_TOPOLOGY_PROFILE, e.g. local), or add brokers`,
        });
      } else plan.createTopics.push(spec);
      continue;
    }
    if (now.replicationFactor !== spec.replicationFactor) {
      // deploy does not move replicas: that is a partition reassignment (kafka-reassign-partitions)
      plan.refusals.push({
        node: `topic:${spec.name}`,
        reason: `topic ${spec.name} has ${now.replicationFactor} replica(s) and the topology's profile asks for ${spec.replicationFactor}; deploy does not change a topic's replication — reassign its partitions (kafka-reassign-partitions), or deploy with the profile it was created with (SONIC_TOPOLOGY_PROFILE)`,
      });
    }
    if (now.partitions > spec.partitions) {
      plan.refusals.push({
        node: `topic:${spec.name}`,
        reason: `topic ${spec.name} has ${now.partitions} partitions and the topology asks for ${spec.partitions}; Kafka cannot remove partitions (keys would move) — raise the topology's count back to ${now.partitions} or more`,
      });
    } else if (now.partitions < spec.partitions) {
      const why = fixed.get(spec.name);
      if (why === undefined) plan.addPartitions.push({ name: spec.name, from: now.partitions, to: spec.partitions });
      else
        plan.refusals.push({
          node: `topic:${spec.name}`,
          reason: `topic ${spec.name} has ${now.partitions} partitions and the topology asks for ${spec.partitions}; ${why}`,
        });
    }
    const all = { ...now.configs, ...spec.configs };
    for (const [key, to] of Object.entries(spec.configs)) {
      if (now.configs[key] !== to)
        plan.configChanges.push({ name: spec.name, key, ...(now.configs[key] === undefined ? {} : { from: now.configs[key] }), to, all });
    }
  }

  const scoped = new Set(topics.map((t) => t.name));
  for (const topic of registeredTopics({ topics: Object.fromEntries(topics.map((t) => [t.name, t])) } as Topology)) {
    if (!scoped.has(topic.name) || !topic.valueSchema) continue;
    const subject = valueSubject(topic.name);
    const versions = await registry.versions(subject);
    const from = versions.length > 0 ? await registry.compatibility(subject) : undefined;
    const compatibility = { ...(from === undefined ? {} : { from }), to: topic.compatibility };
    if (versions.length === 0) {
      plan.subjects.push({ subject, schema: topic.valueSchema, action: 'new', compatibility });
      continue;
    }
    const verdict = await registry.check(subject, topic.valueSchema, topic.compatibility);
    if (verdict.registered) plan.subjects.push({ subject, schema: topic.valueSchema, action: 'unchanged', compatibility });
    else if (verdict.compatible) plan.subjects.push({ subject, schema: topic.valueSchema, action: 'register', compatibility });
    else {
      plan.refusals.push({
        node: `subject:${subject}`,
        reason: `schema ${topic.valueSchema} is incompatible with the latest version of ${subject} under ${topic.compatibility}: ${verdict.reason}`,
      });
    }
  }
  return plan;
}

/** True when applying the plan would change nothing. */
export function planIsEmpty(p: DeployPlan): boolean {
  return (
    p.createTopics.length + p.addPartitions.length + p.configChanges.length === 0 &&
    p.subjects.every((s) => s.action === 'unchanged' && s.compatibility.from === s.compatibility.to)
  );
}

/** The plan as text, one line per change, `+` create, `~` change, `!` refused. */
export function formatPlan(p: DeployPlan): string {
  const lines: string[] = [];
  for (const t of p.createTopics) {
    const cfg = Object.entries(t.configs)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ');
    lines.push(`  + topic ${t.name} (partitions ${t.partitions}, replication ${t.replicationFactor}${cfg ? `, ${cfg}` : ''})`);
  }
  for (const a of p.addPartitions) lines.push(`  ~ topic ${a.name}: partitions ${a.from} -> ${a.to}`);
  for (const c of p.configChanges) lines.push(`  ~ topic ${c.name}: ${c.key} ${c.from ?? '(default)'} -> ${c.to}`);
  for (const s of p.subjects) {
    if (s.action === 'new') lines.push(`  + subject ${s.subject} (schema ${s.schema}, compatibility ${s.compatibility.to})`);
    if (s.action === 'register') lines.push(`  ~ subject ${s.subject}: new version of ${s.schema} (compatible under ${s.compatibility.to})`);
    if (s.action !== 'new' && s.compatibility.from !== s.compatibility.to) {
      lines.push(`  ~ subject ${s.subject}: compatibility ${s.compatibility.from ?? '(none)'} -> ${s.compatibility.to}`);
    }
  }
  for (const r of p.refusals) lines.push(`  ! ${r.node}: ${r.reason}`);
  if (lines.length === 0) return 'No changes. The broker and the registry match the topology.\n';
  return `Plan:\n${lines.join('\n')}\n`;
}

/** Applies a plan; refuses (TOPOLOGY_INVALID or SCHEMA_INCOMPATIBLE) when it has refusals. */
export async function applyDeploy(p: DeployPlan, admin: TopicAdmin, registry: RegistryAdmin): Promise<void> {
  if (p.refusals.length > 0) {
    const schema = p.refusals.some((r) => r.node.startsWith('subject:'));
    throw new SonicError(
      schema ? 'SCHEMA_INCOMPATIBLE' : 'TOPOLOGY_INVALID',
      `deploy refused:\n${p.refusals.map((r) => `  - ${r.node}: ${r.reason}`).join('\n')}`,
      {
        details: { refusals: p.refusals },
      },
    );
  }
  await admin.create(p.createTopics);
  await admin.addPartitions(p.addPartitions.map((a) => ({ name: a.name, count: a.to })));
  const byTopic = new Map(p.configChanges.map((c) => [c.name, c.all]));
  for (const [name, all] of byTopic) await admin.setConfigs(name, all);
  for (const s of p.subjects) {
    if (s.action === 'unchanged') {
      if (s.compatibility.from !== s.compatibility.to) await registry.setCompatibility(s.subject, s.compatibility.to);
    } else {
      await registry.register(s.subject, s.schema, s.compatibility.to);
    }
  }
}

/**
 * The inverse of a deploy, for throw-away topologies (tests, benchmarks): deletes the topology's
 * topics and their value subjects. Tries every step, then throws the first failure.
 */
export async function removeTopology(topology: Topology, admin: TopicAdmin, registry: RegistryAdmin): Promise<void> {
  const failures: unknown[] = [];
  await admin.delete(Object.keys(topology.topics)).catch((err: unknown) => failures.push(err));
  for (const t of registeredTopics(topology)) await registry.deleteSubject(valueSubject(t.name)).catch((err: unknown) => failures.push(err));
  if (failures.length > 0) throw failures[0];
}
