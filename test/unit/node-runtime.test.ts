import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { decideRuntime, satisfies } from '../../bin/node-runtime.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  engines: { node: string };
  devDependencies: Record<string, string>;
};
const REQUIRED = PKG.engines.node;
const PINNED = PKG.devDependencies['node']!;

/** A Node on this machine older than engines.node (the system's own, typically), or undefined. */
function findOldNode(): string | undefined {
  for (const candidate of ['/usr/bin/node', '/usr/local/bin/node', '/bin/node']) {
    if (!existsSync(candidate)) continue;
    const r = spawnSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' });
    if (r.status === 0 && !satisfies(r.stdout.trim(), REQUIRED)) return candidate;
  }
  return undefined;
}
const OLD_NODE = findOldNode();

describe('which Node runs the CLI', () => {
  it('reads the engines range: 22.22+ of 22, 24.6+ of 24 and later majors', () => {
    for (const v of ['22.22.0', '22.30.1', 'v24.6.0', '24.21.0', '26.1.0']) expect(satisfies(v, REQUIRED), v).toBe(true);
    for (const v of ['20.20.2', 'v22.21.9', '23.11.0', '24.5.0', '18.0.0']) expect(satisfies(v, REQUIRED), v).toBe(false);
  });

  it('pins an exact Node that the engines range accepts', () => {
    expect(PINNED).toMatch(/^\d+\.\d+\.\d+$/);
    expect(satisfies(PINNED, REQUIRED)).toBe(true);
    expect(satisfies(process.versions.node, REQUIRED), `the tests run on Node ${process.version}`).toBe(true);
  });

  it('refuses a range it cannot read instead of guessing', () => {
    expect(() => satisfies('24.0.0', '^24')).toThrow(/unsupported engines range/);
  });

  it('runs here on a new enough Node, whether or not the project has its own', () => {
    expect(decideRuntime({ current: '24.21.0', required: REQUIRED, localNode: null })).toEqual({ action: 'run' });
    expect(decideRuntime({ current: '22.22.0', required: REQUIRED, localNode: '/p/node_modules/node/bin/node' })).toEqual({ action: 'run' });
  });

  it("re-executes an old Node's CLI under the project's Node when it is installed", () => {
    expect(decideRuntime({ current: '20.20.2', required: REQUIRED, localNode: '/p/node_modules/node/bin/node' })).toEqual({
      action: 'reexec',
      node: '/p/node_modules/node/bin/node',
    });
  });

  it('refuses with one line naming the range and npm ci when there is no project Node', () => {
    const d = decideRuntime({ current: '20.20.2', required: REQUIRED, localNode: null, root: '/srv/sonicflow' });
    expect(d.action).toBe('refuse');
    const message = d.action === 'refuse' ? d.message : '';
    expect(message).not.toContain('\n');
    expect(message).toContain(`needs Node ${REQUIRED}`);
    expect(message).toContain('this is Node v20.20.2');
    expect(message).toContain('`npm ci` in /srv/sonicflow');
  });

  it('refuses rather than loop when the re-executed Node is itself too old', () => {
    const d = decideRuntime({ current: '20.20.2', required: REQUIRED, localNode: '/p/node_modules/node/bin/node', reexecuted: true });
    expect(d.action).toBe('refuse');
  });
});

describe.skipIf(!OLD_NODE)(`bin/sonicflow.mjs started by an old Node (${OLD_NODE ?? 'no Node older than engines.node is installed here'})`, () => {
  const dirs: string[] = [];
  const started: ChildProcess[] = [];
  /** The re-executed children: in a process group of their own, they outlive a killed parent. */
  const children: number[] = [];
  afterEach(() => {
    for (const p of started.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    for (const pid of children.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  /** A copy of the CLI's entry (bin/, package.json) with `main` as src/cli/main.ts, and node_modules linked or not. */
  const fixture = (main: string, withNodeModules: boolean): string => {
    const dir = mkdtempSync(join(tmpdir(), 'sonicflow-runtime-'));
    dirs.push(dir);
    cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    mkdirSync(join(dir, 'src', 'cli'), { recursive: true });
    writeFileSync(join(dir, 'src', 'cli', 'main.ts'), main);
    if (withNodeModules) symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    return dir;
  };

  it(`runs on the project's Node ${PINNED}: \`sonicflow version\` says so`, () => {
    const r = spawnSync(OLD_NODE!, [join(ROOT, 'bin', 'sonicflow.mjs'), 'version'], { encoding: 'utf8', cwd: tmpdir() });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`sonicflow ${PKG.version} (node v${PINNED})\n`);
  });

  it('without the project Node, exits 1 with one line saying what it needs', () => {
    const dir = fixture("process.stdout.write('ran\\n');\n", false);
    const r = spawnSync(OLD_NODE!, [join(dir, 'bin', 'sonicflow.mjs'), 'version'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^sonicflow needs Node .+, this is Node v\\d+\\.\\d+\\.\\d+: run \`npm ci\` in ${dir} .*\\n$`));
  });

  it('passes the arguments, one SIGINT and the exit code through to the child', async () => {
    // the child counts the SIGINTs it gets for 500 ms after the first, and exits with that count + 10
    const dir = fixture(
      [
        'let n = 0;',
        "process.on('SIGINT', () => void (n++ === 0 && setTimeout(() => process.exit(10 + n), 500)));",
        "process.stdout.write(`ready ${process.pid} ${process.version} ${process.argv.slice(2).join(' ')}\\n`);",
        'setInterval(() => undefined, 1000);',
        '',
      ].join('\n'),
      true,
    );
    // its own process group, like a shell's foreground job
    const parent = spawn(OLD_NODE!, [join(dir, 'bin', 'sonicflow.mjs'), 'run', 'a b'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    started.push(parent);
    let stdout = '';
    let stderr = '';
    parent.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => parent.on('exit', (code, signal) => resolve([code, signal])));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ready line; stderr: ${stderr}`)), 30_000);
      parent.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
        if (!stdout.includes('\n')) return;
        clearTimeout(t);
        resolve();
      });
    });
    const [, pid, rest] = /^ready (\d+) (.*)\n$/.exec(stdout) ?? [];
    children.push(Number(pid));
    expect(rest).toBe(`v${PINNED} run a b`);
    // a stage drains on its first SIGINT and dies on a second: the terminal's Ctrl-C must reach the
    // child only through the parent, so the child has a process group of its own
    const stat = `/proc/${pid}/stat`;
    if (existsSync(stat)) expect(readFileSync(stat, 'utf8').split(') ')[1]!.split(' ')[2]).not.toBe(String(parent.pid));
    // as a terminal's Ctrl-C would: to the parent's process group (the child has its own)
    process.kill(-parent.pid!, 'SIGINT');
    expect(await exited).toEqual([11, null]);
    expect(stderr).toBe('');
  });

  it('ends the way the child ended: by its signal when SIGTERM killed it', async () => {
    const dir = fixture('process.stdout.write(`${process.pid}\\n`);\nsetInterval(() => undefined, 1000);\n', true);
    const parent = spawn(OLD_NODE!, [join(dir, 'bin', 'sonicflow.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(parent);
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => parent.on('exit', (code, signal) => resolve([code, signal])));
    children.push(Number(await new Promise<string>((resolve) => parent.stdout.once('data', (b: Buffer) => resolve(b.toString())))));
    parent.kill('SIGTERM');
    expect(await exited).toEqual([null, 'SIGTERM']);
  });
});
