/**
 * The owner lock of a local store directory: a live owner keeps it; a lock of a dead process, of
 * an earlier boot, or naming a pid that another process has since taken, is stale and taken over
 * by exactly one of the processes that race for it; release removes only the process's own lock.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { lockDir, lockHolder } from '../../src/runtime/dir-lock.js';

const fresh = (): string => mkdtempSync(join(tmpdir(), 'sonicflow-lock-'));
const lockFile = (dir: string): string => join(dir, 'owner.pid');

describe('directory owner lock', () => {
  it('is held once; released, it can be taken again', () => {
    const dir = fresh();
    const release = lockDir(dir);
    expect(release).toBeDefined();
    expect(readFileSync(lockFile(dir), 'utf8')).toMatch(new RegExp(`^${process.pid} `));
    release!();
    expect(lockDir(dir)).toBeDefined();
  });

  it('a live other process keeps its lock', () => {
    const dir = fresh();
    // the parent process (the test runner) is alive; its identity as the lock module writes it
    const stat = readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    writeFileSync(lockFile(dir), `${process.ppid} ${boot} ${start}`);
    expect(lockDir(dir)).toBeUndefined();
    expect(lockHolder(dir)).toBe(String(process.ppid));
  });

  it('a lock of a dead process, of an earlier boot, or of a pid now another process’s is taken over', () => {
    const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid;
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    for (const line of [`${dead} ${boot} 1`, `${process.ppid} another-boot-id 1`, `${process.ppid} ${boot} 1`, 'garbage']) {
      const dir = fresh();
      writeFileSync(lockFile(dir), line);
      const release = lockDir(dir);
      expect(release, line).toBeDefined();
      expect(readFileSync(lockFile(dir), 'utf8')).toMatch(new RegExp(`^${process.pid} `));
    }
  });

  it('is not taken over from this process, which holds it once', () => {
    const dir = fresh();
    const release = lockDir(dir);
    expect(release).toBeDefined();
    // the same pid, boot and start time: the same live process
    expect(lockDir(dir)).toBeUndefined();
    release!();
  });

  it('release removes only its own lock, and leaves no other file behind', () => {
    const dir = fresh();
    const release = lockDir(dir)!;
    // another process took the directory over meanwhile (its lock replaced ours)
    const other = `${process.ppid} ${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} 1`;
    writeFileSync(lockFile(dir), other);
    release();
    expect(readFileSync(lockFile(dir), 'utf8')).toBe(other);
    expect(readdirSync(dir)).toEqual(['owner.pid']);
  });

  it('of processes racing for a stale lock, exactly one takes it over, trial after trial', async () => {
    const TRIALS = 40;
    const RACERS = 4;
    const GAP_MS = 60;
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid;
    const dirs = Array.from({ length: TRIALS }, () => {
      const dir = fresh();
      writeFileSync(lockFile(dir), `${dead} ${boot} 1`); // left by a process that died
      return dir;
    });
    // each racer tries every trial's directory at the same instant as the others (busy-waiting up
    // to it) and reports; it holds what it took until told to exit (a loser must see a live
    // holder), and the start is set only once every racer is loaded (tsx can take seconds)
    const racer = join(fresh(), 'racer.mts');
    writeFileSync(
      racer,
      [
        `import { lockDir } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, '../../src/runtime/dir-lock.ts')).href)};`,
        'import { createInterface } from "node:readline";',
        'const [gap, ...dirs] = process.argv.slice(2);',
        'const lines = createInterface({ input: process.stdin });',
        'process.stdout.write("ready\\n");',
        'let start;',
        'for await (const line of lines) {',
        '  if (start === undefined) {',
        '    start = Number(line);',
        '    const out = [];',
        '    dirs.forEach((dir, i) => {',
        '      const at = start + i * Number(gap);',
        '      while (Date.now() < at) {}',
        "      out.push(lockDir(dir) ? 'got' : 'refused');",
        '    });',
        "    process.stdout.write(out.join(' ') + '\\n');",
        '  } else break;',
        '}',
        'process.exit(0);',
      ].join('\n'),
    );
    const racers = Array.from({ length: RACERS }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', racer, String(GAP_MS), ...dirs], { stdio: ['pipe', 'pipe', 'inherit'] });
      const lines: string[] = [];
      let buf = '';
      const waiters: (() => void)[] = [];
      child.stdout.on('data', (b: Buffer) => {
        buf += b.toString();
        for (let k = buf.indexOf('\n'); k >= 0; k = buf.indexOf('\n')) {
          lines.push(buf.slice(0, k));
          buf = buf.slice(k + 1);
          waiters.splice(0).forEach((w) => w());
        }
      });
      const line = async (n: number): Promise<string> => {
        while (lines.length <= n) {
          if (child.exitCode !== null) throw new Error(`racer exited ${child.exitCode}`);
          await new Promise<void>((r) => waiters.push(r));
        }
        return lines[n]!;
      };
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      return { child, line, exited };
    });
    for (const r of racers) expect(await r.line(0)).toBe('ready');
    const start = Date.now() + 500;
    for (const r of racers) r.child.stdin.write(`${start}\n`);
    const results = await Promise.all(racers.map(async (r) => (await r.line(1)).split(' ')));
    for (const r of racers) r.child.stdin.end('end\n');
    await Promise.all(racers.map((r) => r.exited));
    const winners = dirs.map((_, t) => results.filter((r) => r[t] === 'got').length);
    expect(winners.join(' ')).toBe(dirs.map(() => 1).join(' '));
    // nothing left but the winner's lock
    for (const dir of dirs) expect(readdirSync(dir)).toEqual(['owner.pid']);
  }, 60_000);
});
