/**
 * Static checks of a topology. Each problem names the offending node so that a mistake in a
 * declaration can be found without reading the expansion.
 */
import { SonicError } from '../core/errors.js';
import { stageSinks } from './describe.js';
import { RESERVED_STAGE_NAMES } from './names.js';
import type { Topology } from './topology.js';

export interface TopologyProblem {
  /** The offending node: `topic:<name>` or `stage:<name>`. */
  node: string;
  message: string;
}

const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;
const NODE_NAME = /^[a-z][a-z0-9-]{0,62}$/;

/** Why a stage may not be named `name` (`RESERVED_STAGE_NAMES`), or undefined. */
function reservedNameProblem(name: string): string | undefined {
  if (!RESERVED_STAGE_NAMES.includes(name)) return undefined;
  return `stage name "${name}" is reserved (${RESERVED_STAGE_NAMES.join(', ')}): the principal, groups and ids made from it would be sonicflow's own (the API's, the operators', KEDA's); rename the stage`;
}

/**
 * Returns every problem found (empty when valid):
 * a consumed topic with no producer that is not declared external, a topic without a value
 * schema, an invalid topic/stage/sink name, a reserved stage name (`RESERVED_STAGE_NAMES`), a
 * topic used but not declared, fewer partitions than a stage's maximum replicas, inconsistent
 * retry or scaling settings, and a stage whose code is typed against another schema than its
 * input's or a sink's topic holds.
 * `schemaExists`, when given, also checks that each named schema is available.
 */
export function validateTopology(t: Topology, schemaExists?: (name: string) => boolean): TopologyProblem[] {
  const problems: TopologyProblem[] = [];
  const add = (node: string, message: string): void => void problems.push({ node, message });

  for (const topic of Object.values(t.topics)) {
    const node = `topic:${topic.name}`;
    if (!TOPIC_NAME.test(topic.name) || topic.name === '.' || topic.name === '..') {
      add(node, `invalid topic name "${topic.name}": use 1-249 characters of [a-zA-Z0-9._-]`);
    }
    // a changelog holds a store's JSON values: no schema, no subject
    if (!topic.valueSchema) {
      if (topic.role !== 'changelog') add(node, `topic ${topic.name} has no value schema`);
    } else if (schemaExists && !schemaExists(topic.valueSchema)) {
      add(node, `topic ${topic.name} names schema "${topic.valueSchema}", which does not exist`);
    }
    if (!Number.isInteger(topic.partitions) || topic.partitions < 1) {
      add(node, `topic ${topic.name} must have at least 1 partition, has ${topic.partitions}`);
    }
    if (topic.role === 'status' && topic.configs['cleanup.policy'] !== 'compact') {
      add(node, `status topic ${topic.name} must set cleanup.policy=compact`);
    }
    if (topic.partitioning !== undefined && topic.partitioning !== 'key' && topic.partitioning !== 'balanced') {
      add(node, `topic ${topic.name} has partitioning "${String(topic.partitioning)}": use "key" or "balanced"`);
    }
    // compaction keeps the latest record per key only within a partition
    if (topic.partitioning === 'balanced' && (topic.role === 'status' || topic.configs['cleanup.policy']?.includes('compact'))) {
      add(node, `compacted topic ${topic.name} cannot be partitioning "balanced": a task's records must share a partition`);
    }
  }

  const producers = new Map<string, string[]>();
  const addProducer = (topic: string, who: string): void => void producers.set(topic, [...(producers.get(topic) ?? []), who]);
  for (const topic of Object.values(t.topics)) for (const p of topic.external?.producers ?? []) addProducer(topic.name, p);

  const stageNames = new Set<string>();
  for (const s of t.stages) {
    const node = `stage:${s.name}`;
    if (!NODE_NAME.test(s.name)) add(node, `invalid stage name "${s.name}": use [a-z][a-z0-9-]*`);
    const reserved = reservedNameProblem(s.name);
    if (reserved) add(node, reserved);
    if (stageNames.has(s.name)) add(node, `duplicate stage name "${s.name}"`);
    stageNames.add(s.name);
    for (const sink of Object.keys(s.outputs)) {
      if (!NODE_NAME.test(sink)) add(node, `stage ${s.name} has an invalid sink name "${sink}": use [a-z][a-z0-9-]*`);
    }
    for (const { topic } of stageSinks(t, s)) {
      if (!t.topics[topic]) add(node, `stage ${s.name} writes topic ${topic}, which is not declared`);
      addProducer(topic, s.name);
    }
    for (const store of s.stores) {
      if (!NODE_NAME.test(store.name)) add(node, `stage ${s.name} has an invalid store name "${store.name}": use [a-z][a-z0-9-]*`);
      const changelog = t.topics[store.changelog];
      addProducer(store.changelog, s.name);
      if (!changelog) {
        add(node, `stage ${s.name} store ${store.name} has changelog ${store.changelog}, which is not declared`);
        continue;
      }
      // changelog partition p is store partition p is input partition p
      const input = t.topics[s.input];
      if (input && changelog.partitions !== input.partitions) {
        add(node, `stage ${s.name} store ${store.name}: changelog ${store.changelog} has ${changelog.partitions} partitions, its input ${input.partitions}`);
      }
      if (!changelog.configs['cleanup.policy']?.includes('compact')) add(node, `changelog ${store.changelog} must set cleanup.policy=compact`);
    }
    if (s.retry.delaysMs.some((d, i) => !(d > 0) || (i > 0 && d < (s.retry.delaysMs[i - 1] ?? 0)))) {
      add(node, `stage ${s.name} retry delays must be positive and non-decreasing, got [${s.retry.delaysMs.join(', ')}]`);
    }
    if (!Number.isInteger(s.retry.maxAttempts) || s.retry.maxAttempts < 1) {
      add(node, `stage ${s.name} maxAttempts must be an integer >= 1, got ${s.retry.maxAttempts}`);
    }
    const { minReplicas, maxReplicas } = s.scaling;
    if (minReplicas < 0 || maxReplicas < 1 || minReplicas > maxReplicas) {
      add(node, `stage ${s.name} scaling bounds are inconsistent: min ${minReplicas}, max ${maxReplicas}`);
    }
    if (s.concurrency < 1) add(node, `stage ${s.name} concurrency must be >= 1, got ${s.concurrency}`);
    const session = s.sessionTimeoutMs;
    if (session !== undefined && !(Number.isInteger(session) && session >= 6000 && session <= 1_800_000)) {
      // the broker's group.min.session.timeout.ms is 6 s by default: a shorter one is refused at join
      add(node, `stage ${s.name} sessionTimeoutMs must be a whole number of ms in [6000, 1800000], got ${session}`);
    }
    const gpus = s.resources?.gpus;
    if (gpus !== undefined && !(Number.isInteger(gpus) && gpus >= 0)) add(node, `stage ${s.name} gpus must be a whole number >= 0, got ${gpus}`);
    // the schemas the stage's code is typed against must be the topics' schemas
    if (s.contract) {
      const schemaOf = (topic: string): string | undefined => t.topics[topic]?.valueSchema;
      const inSchema = schemaOf(s.input);
      if (inSchema && inSchema !== s.contract.input) {
        add(node, `stage ${s.name} reads ${s.contract.input} records, but its input ${s.input} holds ${inSchema}`);
      }
      for (const [sink, topic] of Object.entries(s.outputs)) {
        const want = s.contract.sinks[sink];
        const have = schemaOf(topic);
        if (want && have && want !== have) add(node, `stage ${s.name} sink ${sink} writes ${want} records, but topic ${topic} holds ${have}`);
      }
    }
  }

  for (const s of t.stages) {
    const node = `stage:${s.name}`;
    for (const topic of [s.input, ...s.retry.topics]) {
      const spec = t.topics[topic];
      if (!spec) {
        add(node, `stage ${s.name} consumes topic ${topic}, which is not declared`);
        continue;
      }
      if (topic === s.input && !producers.get(topic)?.length) {
        add(node, `stage ${s.name} consumes topic ${topic}, which no stage produces and which is not declared external`);
      }
      if (spec.partitions < s.scaling.maxReplicas) {
        add(
          node,
          `stage ${s.name} may run ${s.scaling.maxReplicas} replicas but its input ${topic} has ${spec.partitions} partitions; extra replicas would idle`,
        );
      }
    }
  }

  // a dispatcher hands records to the partitions its workers hold in their group: the workers must read its one sink
  for (const s of t.stages) {
    if (!s.dispatch) continue;
    const workers = t.stages.find((w) => w.name === s.dispatch?.workers);
    const sink = Object.values(s.outputs)[0];
    if (!workers) add(`stage:${s.name}`, `dispatcher ${s.name} dispatches to stage ${s.dispatch.workers}, which is not declared`);
    else if (workers.input !== sink)
      add(`stage:${s.name}`, `dispatcher ${s.name} writes ${sink}, but its workers (stage ${workers.name}) read ${workers.input}`);
  }

  for (const topic of Object.values(t.topics)) {
    const consumed = t.stages.some((s) => s.input === topic.name || s.retry.topics.includes(topic.name) || s.stores.some((st) => st.changelog === topic.name));
    if (!consumed && !producers.has(topic.name) && !topic.external) {
      add(`topic:${topic.name}`, `topic ${topic.name} is neither produced nor consumed`);
    }
  }
  if (!t.topics[t.statusTopic]) add(`topic:${t.statusTopic}`, `status topic ${t.statusTopic} is not declared`);
  // status events are built by the topology's hook, with the status topic's schema
  const statusSchema = t.topics[t.statusTopic]?.valueSchema;
  if (t.statusHook && statusSchema && t.statusHook.schema !== statusSchema) {
    add(`topic:${t.statusTopic}`, `the status hook writes ${t.statusHook.schema} records, but status topic ${t.statusTopic} holds ${statusSchema}`);
  }
  for (const s of t.stages) {
    if (s.create && s.emitsStatus && !t.statusHook)
      add(`stage:${s.name}`, `stage ${s.name} writes status events but the topology has no status hook to build them`);
  }
  return problems;
}

/** Throws `TOPOLOGY_INVALID` listing every problem, or returns the topology unchanged. */
export function assertValidTopology(t: Topology, schemaExists?: (name: string) => boolean): Topology {
  const problems = validateTopology(t, schemaExists);
  if (problems.length > 0) {
    throw new SonicError('TOPOLOGY_INVALID', `topology ${t.name} is invalid:\n${problems.map((p) => `  - ${p.node}: ${p.message}`).join('\n')}`, {
      details: { problems },
    });
  }
  return t;
}

/**
 * Throws `TOPOLOGY_INVALID` when a stage takes a reserved name, else returns the topology: for
 * the commands that make names from the stages' without validating the whole topology
 * (`topology acls`, `render k8s`), so that no stage gets the API's or the operators' principal.
 */
export function assertNoReservedStageNames(t: Topology): Topology {
  const problems = t.stages.flatMap((s) => {
    const message = reservedNameProblem(s.name);
    return message ? [{ node: `stage:${s.name}`, message }] : [];
  });
  if (problems.length > 0) {
    throw new SonicError('TOPOLOGY_INVALID', `topology ${t.name} is invalid:\n${problems.map((p) => `  - ${p.node}: ${p.message}`).join('\n')}`, {
      details: { problems },
    });
  }
  return t;
}
