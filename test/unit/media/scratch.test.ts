import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SCRATCH_STALE_MS, processScratchDir, sweepStaleScratch, withScratchDir } from '../../../src/media/scratch.js';
import { tempDir } from '../../fixtures/media/util.js';

const base = tempDir('scratch');
let n = 0;
/** A fresh scratch root for one test, under the file's temp directory (removed after the file). */
const freshRoot = (): string => {
  const root = join(base, `root-${++n}`);
  mkdirSync(root);
  return root;
};
const SCRATCH = join(import.meta.dirname, '..', '..', '..', 'src', 'media', 'scratch.ts');

/**
 * A separate process that opens a task scratch directory under `root`, writes a file into it,
 * prints the directory and then waits (a stage busy on a task) until it is killed.
 */
async function busyStage(root: string): Promise<{ child: ChildProcess; taskDir: string }> {
  const code = `const m = await import(${JSON.stringify(SCRATCH)});
    await m.withScratchDir('infer-task', async (dir) => {
      (await import('node:fs')).writeFileSync(dir + '/frames.raw', Buffer.alloc(1024));
      console.log(dir);
      await new Promise(() => setInterval(() => undefined, 1000));
    }, ${JSON.stringify(root)});`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  return { child, taskDir: line.toString().trim() };
}

describe('scratch directories', () => {
  it("gives each task a directory under this process's own, removed after success and after failure", async () => {
    const root = freshRoot();
    const mine = await processScratchDir(root);
    expect(mine.startsWith(join(root, `p${process.pid}-`))).toBe(true);
    let seen = '';
    expect(await withScratchDir('validate-ok', async (dir) => ((seen = dir), writeFileSync(join(dir, 'a'), 'x'), 42), root)).toBe(42);
    expect(seen.startsWith(mine)).toBe(true);
    expect(existsSync(seen)).toBe(false);
    await expect(
      withScratchDir('validate-bad', async (dir) => ((seen = dir), writeFileSync(join(dir, 'a'), 'x'), Promise.reject(new Error('boom'))), root),
    ).rejects.toThrow('boom');
    expect(existsSync(seen)).toBe(false);
    expect(readdirSync(mine)).toEqual([]);
  });

  it("leaves a killed stage's files only until the next process starts, and keeps a live one's", async () => {
    const root = freshRoot();
    const killed = await busyStage(root);
    const alive = await busyStage(root);
    try {
      expect(existsSync(join(killed.taskDir, 'frames.raw'))).toBe(true);
      killed.child.kill('SIGKILL');
      await once(killed.child, 'exit');
      expect(existsSync(killed.taskDir)).toBe(true); // SIGKILL: nothing could clean up
      // a stage starting (here: this process making its directory) sweeps the dead one's
      const mine = await processScratchDir(root);
      expect(existsSync(killed.taskDir)).toBe(false);
      expect(existsSync(alive.taskDir)).toBe(true);
      expect(readdirSync(root).sort()).toEqual([alive.taskDir.split('/').at(-2), mine.split('/').at(-1)].sort());
    } finally {
      alive.child.kill('SIGKILL');
      await once(alive.child, 'exit');
    }
    await sweepStaleScratch(root);
    expect(existsSync(alive.taskDir)).toBe(false);
  }, 30_000);

  it('sweeps a directory whose heartbeat stopped, whatever its pid or host, and nothing else', async () => {
    const root = freshRoot();
    const host = hostname()
      .replace(/[^A-Za-z0-9_.-]/g, '_')
      .slice(0, 64);
    const dirs = {
      otherHostFresh: `p123-elsewhere.example-0123abcd`,
      otherHostStale: `p123-elsewhere.example-89abcdef`,
      reusedPidStale: `p1-${host}-deadbeef`,
      notOurs: 'sonicflow-something-else',
    };
    for (const d of Object.values(dirs)) mkdirSync(join(root, d));
    const old = new Date(Date.now() - SCRATCH_STALE_MS - 60_000);
    utimesSync(join(root, dirs.otherHostStale), old, old);
    utimesSync(join(root, dirs.reusedPidStale), old, old);
    const removed = await sweepStaleScratch(root, { isAlive: () => true });
    expect(removed.sort()).toEqual([dirs.otherHostStale, dirs.reusedPidStale].sort());
    expect(readdirSync(root).sort()).toEqual([dirs.notOurs, dirs.otherHostFresh].sort());
    // a fresh directory of this host whose pid is gone goes at once
    mkdirSync(join(root, `p999999-${host}-00000000`));
    expect(await sweepStaleScratch(root, { isAlive: () => false })).toEqual([`p999999-${host}-00000000`]);
  });
});
