/**
 * An owner lock on a local directory (a state store's): the file `owner.pid` names the process
 * that holds it — its pid, the machine's boot id and the process's start time — so that a lock
 * left by a process that died (or by a process of an earlier boot, whose pid another process may
 * now have) is recognised as stale and taken over, while a live owner keeps it.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const LOCK = 'owner.pid';

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
};

/** The boot id of the machine, when the system tells (Linux). */
const bootId = (): string => read('/proc/sys/kernel/random/boot_id') ?? '-';

/** When process `pid` started (clock ticks since boot), when the system tells (Linux). */
function startTime(pid: number): string | undefined {
  const stat = read(`/proc/${pid}/stat`);
  // the command name (field 2) may hold spaces and parentheses: count from the last ')'
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function identity(pid: number): string {
  return `${pid} ${bootId()} ${startTime(pid) ?? '-'}`;
}

/** Whether the process a lock names still runs (the same process, not a later one with its pid). */
function holderAlive(line: string): boolean {
  const [pidText, boot, start] = line.split(' ');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return false;
  if (boot && boot !== '-' && boot !== bootId()) return false;
  if (start && start !== '-') {
    const now = startTime(pid);
    if (now !== undefined) return now === start;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock of `dir` (which must exist): a release function, or undefined when a live
 * process holds it. A stale lock (its process gone, or of an earlier boot) is taken over.
 */
export function lockDir(dir: string): (() => void) | undefined {
  const file = join(dir, LOCK);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, identity(process.pid), { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = read(file);
      // a lock being written this instant reads empty: look again
      if (holder === '' || holder === undefined) continue;
      if (holderAlive(holder)) return undefined;
      rmSync(file, { force: true });
    }
  }
  return undefined;
}

/** The pid named by the lock of `dir`, for messages. */
export function lockHolder(dir: string): string {
  return read(join(dir, LOCK))?.split(' ')[0] ?? '?';
}
