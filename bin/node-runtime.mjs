// Which Node runs the sonicflow CLI. Plain JavaScript on purpose: it runs before tsx is loaded, on
// whatever `node` started bin/sonicflow.mjs, however old.
//
// package.json pins Node 24 as the devDependency `node` (the npm registry's Node build), so
// `npm ci` puts a Node 24 binary in node_modules/node/bin/node. `npm run` finds it through PATH;
// a CLI started directly by an older system Node re-executes itself under that binary, and refuses
// with a one-line message when there is none.
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Set in the re-executed child, so that a local binary too old itself cannot loop. */
export const REEXEC_ENV = 'SONICFLOW_NODE_REEXEC';

/** `major.minor.patch` of a version like `v24.21.0` or `22.22.0` (a missing part is 0). */
function parse(version) {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(version.trim());
  if (!m) throw new Error(`not a version: ${version}`);
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

function compare(a, b) {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

const TESTS = {
  '>=': (c) => c >= 0,
  '>': (c) => c > 0,
  '<=': (c) => c <= 0,
  '<': (c) => c < 0,
  '=': (c) => c === 0,
};

/**
 * Whether `version` satisfies an npm `engines` range of the plain form it uses here: alternatives
 * joined by `||`, each a space-separated list of comparators (`>=22.22.0 <23`). Throws on a
 * range written with anything else (`^`, `~`, `x`, hyphen ranges), rather than guessing.
 */
export function satisfies(version, range) {
  const v = parse(version);
  return range.split('||').some((alternative) =>
    alternative
      .trim()
      .split(/\s+/)
      .every((comparator) => {
        const m = /^(>=|<=|>|<|=)?v?(\d+(?:\.\d+){0,2})$/.exec(comparator);
        if (!m) throw new Error(`unsupported engines range: ${range}`);
        return TESTS[m[1] ?? '='](compare(v, parse(m[2])));
      }),
  );
}

/**
 * What to do about the running Node: run here when `current` satisfies `required`; otherwise
 * re-execute under `localNode` (the project's Node, or null when not installed) unless this
 * process already is that re-execution; otherwise refuse with a one-line message naming the range
 * and `npm ci` in `root`.
 */
export function decideRuntime({ current, required, localNode, reexecuted = false, root = 'the sonicflow directory' }) {
  if (satisfies(current, required)) return { action: 'run' };
  if (localNode && !reexecuted) return { action: 'reexec', node: localNode };
  const got = current.startsWith('v') ? current : `v${current}`;
  const message = reexecuted
    ? `sonicflow needs Node ${required}, but the project's Node (${localNode ?? 'node_modules/node'}) is ${got}: run \`npm ci\` to reinstall it`
    : `sonicflow needs Node ${required}, this is Node ${got}: run \`npm ci\` in ${root} to install its Node 24, or start sonicflow with a newer node`;
  return { action: 'refuse', message };
}

/** The Node binary `npm ci` installs from the `node` package under `root`, when it is there. */
export function localNodeBinary(root) {
  const file = join(root, 'node_modules', 'node', 'bin', process.platform === 'win32' ? 'node.exe' : 'node');
  try {
    accessSync(file, constants.X_OK);
    return file;
  } catch {
    return null;
  }
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Runs this CLI again under `node` with the same arguments and stdio, forwards SIGINT, SIGTERM and
 * SIGHUP to it, and ends this process the way the child ended (its exit code, or its signal).
 * The child gets its own process group: Ctrl-C at a terminal reaches only this process, which
 * passes it on once (a stage's second SIGINT would skip its drain).
 */
function reexec(node) {
  const child = spawn(node, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    detached: true,
    env: { ...process.env, [REEXEC_ENV]: '1' },
  });
  const forward = (signal) => child.kill(signal);
  for (const s of FORWARDED) process.on(s, forward);
  child.on('error', (err) => {
    process.stderr.write(`sonicflow: cannot start ${node}: ${err.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    for (const s of FORWARDED) process.off(s, forward);
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}

/**
 * Makes sure the CLI under `root` runs on a Node its package.json `engines.node` accepts.
 * Returns true when this process should go on; false when it has handed over to a child (which
 * will end this process) or refused (exit code 1 is set).
 */
export function ensureNodeRuntime(root) {
  const required = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).engines.node;
  const decision = decideRuntime({
    current: process.versions.node,
    required,
    localNode: localNodeBinary(root),
    reexecuted: process.env[REEXEC_ENV] === '1',
    root,
  });
  if (decision.action === 'run') return true;
  if (decision.action === 'reexec') reexec(decision.node);
  else {
    process.stderr.write(`${decision.message}\n`);
    process.exitCode = 1;
  }
  return false;
}
