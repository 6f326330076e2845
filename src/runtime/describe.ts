/**
 * Prints a topology in the style of Kafka Streams' `Topology#describe()`: one sub-topology per
 * stage with its Source, Processor and Sink nodes joined by `-->` (successors) and `<--`
 * (predecessors). Every node has an explicit, readable name.
 */
import type { StageSpec, Topology } from './topology.js';

/** Sink node names and their topics for one stage, in a stable order. */
export function stageSinks(t: Topology, s: StageSpec): { node: string; topic: string }[] {
  const sinks = Object.entries(s.outputs).map(([sink, topic]) => ({ node: `${s.name}-to-${sink}`, topic }));
  if (s.emitsStatus) sinks.push({ node: `${s.name}-to-status`, topic: t.statusTopic });
  s.retry.topics.forEach((topic, i) => sinks.push({ node: `${s.name}-to-retry-${i + 1}`, topic }));
  sinks.push({ node: `${s.name}-to-dlq`, topic: s.dlq });
  return sinks;
}

/** The source node's topics: the input, then its retry tiers. */
export function stageSources(s: StageSpec): string[] {
  return [s.input, ...s.retry.topics];
}

/** Renders the topology as text; the output is stable and pinned by a test. */
export function describeTopology(t: Topology): string {
  const lines: string[] = ['Topologies:'];
  t.stages.forEach((s, i) => {
    const sinks = stageSinks(t, s);
    lines.push(`   Sub-topology: ${i} (${s.name})`);
    lines.push(`    Source: ${s.name}-source (topics: [${stageSources(s).join(', ')}])`);
    lines.push(`      --> ${s.name}`);
    lines.push(`    Processor: ${s.name} (stores: [${s.stores.map((st) => st.name).join(', ')}])`);
    lines.push(`      --> ${sinks.map((k) => k.node).join(', ')}`);
    lines.push(`      <-- ${s.name}-source`);
    for (const sink of sinks) {
      lines.push(`    Sink: ${sink.node} (topic: ${sink.topic})`);
      lines.push(`      <-- ${s.name}`);
    }
    for (const st of s.stores) lines.push(`    Store: ${st.name} (changelog: ${st.changelog})`);
  });
  const externals = Object.values(t.topics).filter((topic) => topic.external);
  if (externals.length > 0) {
    lines.push('External:');
    for (const topic of externals) {
      for (const p of topic.external?.producers ?? []) lines.push(`    Producer: ${p} (topic: ${topic.name})`);
      for (const c of topic.external?.consumers ?? []) lines.push(`    Consumer: ${c} (topic: ${topic.name})`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Renders the stage graph as a Mermaid flowchart (for docs). */
export function describeMermaid(t: Topology): string {
  const id = (name: string): string => name.replace(/[^a-zA-Z0-9]/g, '_');
  const lines = ['flowchart LR'];
  for (const topic of Object.values(t.topics)) {
    if (topic.role === 'retry') continue;
    if (topic.role === 'changelog') {
      lines.push(`  ${id(topic.name)}[/${topic.name}/]`);
      continue;
    }
    lines.push(`  ${id(topic.name)}[(${topic.name})]`);
  }
  for (const s of t.stages) {
    lines.push(`  ${id(s.name)}{{${s.name}}}`);
    lines.push(`  ${id(s.input)} --> ${id(s.name)}`);
    for (const topic of Object.values(s.outputs)) lines.push(`  ${id(s.name)} --> ${id(topic)}`);
    if (s.emitsStatus) lines.push(`  ${id(s.name)} -.-> ${id(t.statusTopic)}`);
    lines.push(`  ${id(s.name)} -. retry x${s.retry.topics.length} .-> ${id(s.name)}`);
    lines.push(`  ${id(s.name)} -.-> ${id(s.dlq)}`);
    for (const st of s.stores) lines.push(`  ${id(s.name)} -. store ${st.name} .- ${id(st.changelog)}`);
  }
  for (const topic of Object.values(t.topics)) {
    for (const p of topic.external?.producers ?? []) lines.push(`  ext_${id(p)}([${p}]) --> ${id(topic.name)}`);
    for (const c of topic.external?.consumers ?? []) lines.push(`  ${id(topic.name)} --> ext_${id(c)}([${c}])`);
  }
  return `${lines.join('\n')}\n`;
}

/** A topology as a graph (for drawing): each stage with the topics it reads and writes, and each topic. */
export interface TopologyGraph {
  name: string;
  stages: {
    name: string;
    /** Its input, then its retry tiers. */
    sources: string[];
    sinks: { node: string; topic: string; kind: 'output' | 'status' | 'retry' | 'dlq' }[];
    /** The stage whose workers a dispatcher stage feeds. */
    dispatchesTo: string | null;
  }[];
  topics: { name: string; partitions: number; kind: 'data' | 'status' | 'retry' | 'dlq' }[];
}

/** The graph of the same nodes `describeTopology` prints. */
export function describeGraph(t: Topology): TopologyGraph {
  const retries = new Set(t.stages.flatMap((s) => s.retry.topics));
  const dlqs = new Set(t.stages.map((s) => s.dlq));
  return {
    name: t.name,
    stages: t.stages.map((s) => ({
      name: s.name,
      sources: stageSources(s),
      sinks: stageSinks(t, s).map((k) => ({
        ...k,
        kind: k.topic === t.statusTopic ? 'status' : retries.has(k.topic) ? 'retry' : dlqs.has(k.topic) ? 'dlq' : 'output',
      })),
      dispatchesTo: s.dispatch?.workers ?? null,
    })),
    topics: Object.values(t.topics).map((x) => ({
      name: x.name,
      partitions: x.partitions,
      kind: x.name === t.statusTopic ? 'status' : retries.has(x.name) ? 'retry' : dlqs.has(x.name) ? 'dlq' : 'data',
    })),
  };
}
