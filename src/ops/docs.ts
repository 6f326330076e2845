/**
 * The generated parts of docs/architecture.md, from the topology: the Mermaid diagram of
 * `sonicflow topology describe --format mermaid` and the table of topics with who writes and who
 * reads each; and of docs/operations.md: the ACLs of each principal. They sit between
 * `<!-- BEGIN generated: … -->` and `<!-- END generated: … -->`.
 */
import { SETTINGS } from '../core/config.js';
import { deriveAcls } from '../runtime/acls.js';
import { describeMermaid } from '../runtime/describe.js';
import type { Topology, TopicSpec } from '../runtime/topology.js';
import { renderAclDocTable } from './acls.js';
import { markdownMarkers, replaceGenerated } from './generated.js';

export const ARCHITECTURE_DOC = 'docs/architecture.md';
export const MERMAID_MARKERS = markdownMarkers('topology mermaid');
export const TOPIC_TABLE_MARKERS = markdownMarkers('topic table');
export const OPERATIONS_DOC = 'docs/operations.md';
export const ACL_TABLE_MARKERS = markdownMarkers('acl table');

/** The Mermaid diagram as a fenced Markdown block. */
export function renderMermaidBlock(topology: Topology): string {
  return `\`\`\`mermaid\n${describeMermaid(topology)}\`\`\`\n`;
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
const unique = (names: string[]): string[] => [...new Set(names)];

/** Stages (and outside producers) that write `topic`. */
function writers(t: Topology, topic: TopicSpec): string[] {
  const stages = t.stages.filter((s) => Object.values(s.outputs).includes(topic.name) || (s.emitsStatus && t.statusTopic === topic.name));
  return unique([...stages.map((s) => s.name), ...(topic.external?.producers ?? []).map((p) => `${p} (external)`)]);
}

/** Stages (and outside consumers) that read `topic`. */
function readers(t: Topology, topic: TopicSpec): string[] {
  const stages = t.stages.filter((s) => s.input === topic.name);
  return unique([...stages.map((s) => s.name), ...(topic.external?.consumers ?? []).map((c) => `${c} (external)`)]);
}

/**
 * The topic table: every declared topic with its schema, compatibility, writers, readers and
 * doc, then one row each for the retry tiers and DLQs that `defineTopology` derives per stage.
 */
export function renderTopicTable(topology: Topology): string {
  const rows = ['| topic | value schema | subject compatibility | written by | read by | notes |', '|---|---|---|---|---|---|'];
  for (const topic of Object.values(topology.topics)) {
    if (topic.role === 'retry' || topic.role === 'dlq' || topic.role === 'changelog') continue;
    const notes = [topic.doc, ...(topic.partitioning === 'balanced' ? ['Partitioned `balanced`.'] : [])].join(' ');
    rows.push(
      `| \`${topic.name}\` | ${topic.valueSchema ? `\`${topic.valueSchema}\`` : '(none)'} | ${topic.compatibility} | ${cell(writers(topology, topic).join(', ') || '—')} | ${cell(readers(topology, topic).join(', ') || '—')} | ${cell(notes)} |`,
    );
  }
  rows.push(
    `| \`${topology.prefix}.<stage>.retry.<n>\` | the stage input's | (not registered) | the stage | the stage, once due | original bytes, delay per tier |`,
  );
  rows.push(`| \`${topology.prefix}.<stage>.dlq\` | the stage input's | (not registered) | the stage | \`sonicflow dlq\` | original bytes + error headers |`);
  const changelogs = topology.stages.flatMap((s) => s.stores.map((st) => `\`${st.changelog}\``));
  if (changelogs.length > 0)
    rows.push(
      `| \`${topology.prefix}.<stage>.<store>-changelog\` | JSON | (not registered) | the stage | the stage, restoring its store | compacted, partitioned like the input: ${changelogs.join(', ')} |`,
    );
  return `${rows.join('\n')}\n`;
}

/** `doc` (the text of docs/architecture.md) with its generated sections rendered for `topology`. */
export function renderArchitectureDoc(topology: Topology, doc: string): string {
  const withMermaid = replaceGenerated(doc, MERMAID_MARKERS, renderMermaidBlock(topology), ARCHITECTURE_DOC);
  return replaceGenerated(withMermaid, TOPIC_TABLE_MARKERS, renderTopicTable(topology), ARCHITECTURE_DOC);
}

/**
 * `doc` (the text of docs/operations.md) with its ACL table rendered for `topology`, with the
 * default client id and principal prefix.
 */
export function renderOperationsDoc(topology: Topology, doc: string): string {
  const principals = deriveAcls(topology, { clientId: SETTINGS.clientId.default });
  return replaceGenerated(doc, ACL_TABLE_MARKERS, renderAclDocTable(principals), OPERATIONS_DOC);
}
