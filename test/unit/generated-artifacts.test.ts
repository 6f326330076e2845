/**
 * The committed files that list the stages are what the topology renders (`npm run gen:ops`,
 * scripts/gen-ops.ts), and the generated sections keep the hand-written text around them.
 */
import { describe, expect, it } from 'vitest';
import { opsArtifacts, readRepoFile, staleArtifacts } from '../../scripts/gen-ops.js';
import { COMPOSE_STAGE_MARKERS, renderComposeFile, renderComposeStages } from '../../src/ops/compose.js';
import { ARCHITECTURE_DOC, MERMAID_MARKERS, renderArchitectureDoc, renderTopicTable, TOPIC_TABLE_MARKERS } from '../../src/ops/docs.js';
import { generatedSection, markdownMarkers, replaceGenerated, yamlMarkers } from '../../src/ops/generated.js';
import { renderStageTargets } from '../../src/ops/prometheus.js';
import { describeMermaid } from '../../src/runtime/describe.js';
import { sonicTopology } from '../../topologies/sonic.js';

const topology = sonicTopology();

describe('generated files', () => {
  it.each(opsArtifacts().map((a) => [a.path, a.content]))('%s is what the topology renders', (path, content) => {
    expect(readRepoFile(path), `${path} is stale: run \`npm run gen:ops\` after changing the topology's stages or topics`).toBe(content);
  });

  it('gen:ops --check finds nothing stale', () => {
    expect(
      staleArtifacts().map((a) => a.path),
      'run `npm run gen:ops`',
    ).toEqual([]);
  });

  it('renders the stage services of docker-compose.yml between their markers and keeps the rest as written', () => {
    const compose = readRepoFile('ops/docker-compose.yml');
    expect(generatedSection(compose, COMPOSE_STAGE_MARKERS)).toBe(renderComposeStages(topology));
    const outside = (text: string): string => replaceGenerated(text, COMPOSE_STAGE_MARKERS, '', 'compose');
    const without = sonicTopology();
    without.stages = without.stages.slice(0, 1);
    const rendered = renderComposeFile(without, compose);
    expect(outside(rendered)).toBe(outside(compose));
    expect(generatedSection(rendered, COMPOSE_STAGE_MARKERS)).toBe(
      `  ${without.stages[0]!.name}:\n    <<: *sonicflow-stage\n    command: ["run", "${without.stages[0]!.name}"]\n`,
    );
  });

  it('refuses a stage named like a hand-written compose service', () => {
    const clashing = sonicTopology();
    clashing.stages = [{ ...clashing.stages[0]!, name: 'api' }];
    expect(() => renderComposeFile(clashing, readRepoFile('ops/docker-compose.yml'))).toThrow(/api would clash with a service/);
  });

  it('puts the Mermaid diagram and the topic table into docs/architecture.md between their markers', () => {
    const doc = readRepoFile(ARCHITECTURE_DOC);
    expect(generatedSection(doc, MERMAID_MARKERS)).toBe(`\`\`\`mermaid\n${describeMermaid(topology)}\`\`\`\n`);
    expect(generatedSection(doc, TOPIC_TABLE_MARKERS)).toBe(renderTopicTable(topology));
    expect(renderArchitectureDoc(topology, doc)).toBe(doc);
  });

  it('lists in the topic table who writes and who reads each topic', () => {
    const table = renderTopicTable(topology);
    expect(table).toContain('| `sonic.tasks.requested` | `task-request` | BACKWARD | api (external) | validate |');
    expect(table).toContain('| `sonic.tasks.prepared` | `task-prepared` | BACKWARD | preprocess | dispatch | ');
    expect(table).toContain('| `sonic.tasks.dispatched` | `task-prepared` | BACKWARD | dispatch | infer | ');
    expect(table).toMatch(/\| `sonic\.tasks\.prepared` .*Partitioned `balanced`\. \|$/m);
    expect(table).not.toMatch(/`sonic\.[a-z-]+\.(retry\.\d+|dlq)`/);
  });

  it('gives each stage one scrape target: 9464 + its position locally, its service on 9464 in compose', () => {
    const local = JSON.parse(renderStageTargets(topology, 'local')) as { targets: string[]; labels: { stage: string } }[];
    const compose = JSON.parse(renderStageTargets(topology, 'compose')) as { targets: string[]; labels: { stage: string } }[];
    expect(local.map((g) => g.labels.stage)).toEqual(topology.stages.map((s) => s.name));
    expect(local.map((g) => g.targets)).toEqual(topology.stages.map((_, i) => [`localhost:${9464 + i}`]));
    expect(compose.map((g) => g.targets)).toEqual(topology.stages.map((s) => [`${s.name}:9464`]));
  });
});

describe('generated sections', () => {
  const md = markdownMarkers('x');
  const text = ['before', md.begin, 'old 1', 'old 2', md.end, 'after', ''].join('\n');

  it('replace only the lines between the markers, and keep the markers', () => {
    expect(replaceGenerated(text, md, 'new\n', 'f')).toBe(['before', md.begin, 'new', md.end, 'after', ''].join('\n'));
    expect(replaceGenerated(text, md, 'new', 'f')).toBe(['before', md.begin, 'new', md.end, 'after', ''].join('\n'));
    expect(replaceGenerated(text, md, '', 'f')).toBe(['before', md.begin, md.end, 'after', ''].join('\n'));
    expect(generatedSection(text, md)).toBe('old 1\nold 2\n');
  });

  it('match indented marker lines (YAML under a key)', () => {
    const y = yamlMarkers('stages');
    expect(y).toEqual({ begin: '# BEGIN stages (generated by npm run gen:ops)', end: '# END stages' });
    expect(replaceGenerated(`a:\n  ${y.begin}\n  b: 1\n  ${y.end}\n`, y, '  c: 2\n', 'f')).toBe(`a:\n  ${y.begin}\n  c: 2\n  ${y.end}\n`);
  });

  it('refuse a file without its markers, with a marker twice, or with END before BEGIN', () => {
    expect(() => replaceGenerated('no markers\n', md, 'x\n', 'doc.md')).toThrow(
      /doc\.md must have the line "<!-- BEGIN generated: x -->" exactly once \(found 0\)/,
    );
    expect(() => replaceGenerated(`${text}${md.begin}\n`, md, 'x\n', 'doc.md')).toThrow(/found 2/);
    expect(() => replaceGenerated(`${md.end}\n${md.begin}\n`, md, 'x\n', 'doc.md')).toThrow(/comes before/);
  });
});
