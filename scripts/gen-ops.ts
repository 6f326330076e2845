/**
 * `npm run gen:ops`: writes every file whose stage list comes from the topology, rendered from
 * the built-in Sonic topology with its default options:
 *   ops/docker-compose.yml                         the stage services (between its markers)
 *   ops/prometheus/targets{,-compose}/stages.json  one scrape target per stage
 *   docs/architecture.md                           the Mermaid diagram and the topic table (between its markers)
 *   docs/operations.md                             the ACLs of every principal (between its markers)
 *   test/fixtures/sonic-topology.txt               `sonicflow topology describe`
 * Run it after adding, removing or renaming a stage, or changing its topics. `--check` writes
 * nothing: it lists the stale files and exits 1 if there are any.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderComposeFile, COMPOSE_FILE } from '../src/ops/compose.js';
import { ARCHITECTURE_DOC, OPERATIONS_DOC, renderArchitectureDoc, renderOperationsDoc } from '../src/ops/docs.js';
import { renderStageTargets, STAGE_TARGET_FILES } from '../src/ops/prometheus.js';
import { describeTopology } from '../src/runtime/describe.js';
import type { Topology } from '../src/runtime/topology.js';
import { sonicTopology } from '../topologies/sonic.js';

export const ROOT = join(import.meta.dirname, '..');
export const DESCRIBE_FIXTURE = 'test/fixtures/sonic-topology.txt';

export interface Artifact {
  /** Path from the repository root. */
  path: string;
  content: string;
}

/** A file of the repository, by its path from the root. */
export const readRepoFile = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/**
 * Every generated file as `topology` renders it. Files with generated sections keep their
 * hand-written text, read through `read`.
 */
export function opsArtifacts(topology: Topology = sonicTopology(), read: (path: string) => string = readRepoFile): Artifact[] {
  return [
    { path: COMPOSE_FILE, content: renderComposeFile(topology, read(COMPOSE_FILE)) },
    { path: STAGE_TARGET_FILES.local, content: renderStageTargets(topology, 'local') },
    { path: STAGE_TARGET_FILES.compose, content: renderStageTargets(topology, 'compose') },
    { path: ARCHITECTURE_DOC, content: renderArchitectureDoc(topology, read(ARCHITECTURE_DOC)) },
    { path: OPERATIONS_DOC, content: renderOperationsDoc(topology, read(OPERATIONS_DOC)) },
    { path: DESCRIBE_FIXTURE, content: describeTopology(topology) },
  ];
}

/** The committed files that differ from what `topology` renders. */
export function staleArtifacts(topology: Topology = sonicTopology()): Artifact[] {
  return opsArtifacts(topology).filter((a) => {
    try {
      return readRepoFile(a.path) !== a.content;
    } catch {
      return true; // missing
    }
  });
}

if (import.meta.filename === process.argv[1]) {
  const check = process.argv.includes('--check');
  const stale = staleArtifacts();
  if (check) {
    for (const a of stale) console.log(`stale: ${a.path}`);
    if (stale.length > 0) console.log('run `npm run gen:ops` to regenerate them');
    process.exitCode = stale.length > 0 ? 1 : 0;
  } else {
    for (const a of stale) {
      writeFileSync(join(ROOT, a.path), a.content);
      console.log(`wrote ${a.path}`);
    }
    if (stale.length === 0) console.log('every generated file is up to date');
  }
}
