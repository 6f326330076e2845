/**
 * The owner lock of a local store directory: a live owner keeps it; a lock of a dead process, of
 * an earlier boot, or naming a pid that another process has since taken, is stale and taken over.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
});
