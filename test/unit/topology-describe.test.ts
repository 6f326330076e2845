import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeMermaid, describeTopology } from '../../src/runtime/describe.js';
import { defineTopology } from '../../src/runtime/topology.js';
import { sonicTopology } from '../../topologies/sonic.js';

const pinned = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'sonic-topology.txt'), 'utf8');
const STAGES = sonicTopology().stages.map((s) => s.name);

describe('topology describe', () => {
  it('prints the Sonic topology exactly as pinned, in Topology#describe() style (`npm run gen:ops` rewrites the pin)', () => {
    expect(describeTopology(sonicTopology())).toBe(pinned);
  });

  it('keeps its format, pinned by hand on a one-stage topology (the Sonic pin is regenerated, this one is not)', () => {
    const one = defineTopology({
      name: 'one',
      prefix: 'p',
      status: 's',
      defaults: { retry: { delaysMs: [1000], maxAttempts: 2 } },
      topics: {
        in: { valueSchema: 'task-status', external: { producers: ['x'] }, doc: 'in' },
        out: { valueSchema: 'task-status', external: { consumers: ['x'] }, doc: 'out' },
        s: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 's' },
      },
      stages: { work: { doc: 'w', input: 'in', outputs: { done: 'out' } } },
    });
    expect(describeTopology(one)).toBe(
      [
        'Topologies:',
        '   Sub-topology: 0 (work)',
        '    Source: work-source (topics: [p.in, p.work.retry.1])',
        '      --> work',
        '    Processor: work (stores: [])',
        '      --> work-to-done, work-to-status, work-to-retry-1, work-to-dlq',
        '      <-- work-source',
        '    Sink: work-to-done (topic: p.out)',
        '      <-- work',
        '    Sink: work-to-status (topic: p.s)',
        '      <-- work',
        '    Sink: work-to-retry-1 (topic: p.work.retry.1)',
        '      <-- work',
        '    Sink: work-to-dlq (topic: p.work.dlq)',
        '      <-- work',
        'External:',
        '    Producer: x (topic: p.in)',
        '    Consumer: x (topic: p.out)',
        '',
      ].join('\n'),
    );
  });

  it('names every node explicitly: no generated KSTREAM-style names', () => {
    const text = describeTopology(sonicTopology());
    expect(text).not.toMatch(/KSTREAM|-\d{10}/);
    for (const stage of STAGES) {
      const stores = { validate: 'seen', dispatch: 'backlog' }[stage] ?? '';
      expect(text).toContain(`Processor: ${stage} (stores: [${stores}])`);
      expect(text).toContain(`Source: ${stage}-source (topics: [`);
    }
  });

  it('links every sink back to its processor and every processor to its source', () => {
    const lines = describeTopology(sonicTopology()).split('\n');
    lines.forEach((line, i) => {
      if (line.trim().startsWith('Sink:')) expect(lines[i + 1]?.trim()).toMatch(/^<-- [a-z]+$/);
      if (line.trim().startsWith('Processor:')) expect(lines[i + 2]?.trim()).toMatch(/^<-- [a-z]+-source$/);
    });
  });

  it('applies the topic prefix to every topic', () => {
    const text = describeTopology(sonicTopology({ prefix: 'acme.video' }));
    expect(text).toContain('Source: validate-source (topics: [acme.video.tasks.requested, acme.video.validate.retry.1');
    expect(text).not.toMatch(/topics?: \[?sonic\./);
  });

  it('renders a Mermaid flowchart with every stage and the status topic', () => {
    const m = describeMermaid(sonicTopology());
    expect(m.startsWith('flowchart LR\n')).toBe(true);
    for (const stage of STAGES) expect(m).toContain(`${stage}{{${stage}}}`);
    expect(m).toContain('sonic_tasks_status[(sonic.tasks.status)]');
  });
});

describe('documentation', () => {
  it('docs/architecture.md shows the current Mermaid diagram', () => {
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'architecture.md'), 'utf8');
    expect(doc).toContain(describeMermaid(sonicTopology()));
  });
});
