/**
 * An owner lock on a local directory (a state store's): the file `owner.pid` names the process
 * that holds it — its pid, the machine's boot id and the process's start time — so that a lock
 * left by a process that died (or by a process of an earlier boot, whose pid another process may
 * now have) is recognised as stale and taken over, while a live owner keeps it.
 *
 * Every step is atomic, so that of processes starting together exactly one holds the lock:
 * - A lock is created whole (written to a file of our own, then hard-linked to `owner.pid`, which
 *   fails if it exists): nobody ever reads a half-written lock.
 * - A stale lock is taken over by compare-and-swap: one process at a time, the one that hard-links
 *   `owner.pid` to the name `owner.pid.takeover-<hash of the stale identity>`, removes it, and only
 *   if what it linked is the stale identity it read (not a fresh lock another process made in
 *   between, which is judged again); then it creates its own, which fails if another process
 *   created one first.
 * - Release removes the lock only while it still names this process.
 * The same process is recognised by pid, boot id and start time together: a process in another
 * container may have the same pid (pid 1 in every container), never the same start time as well.
 */
import { createHash, randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SonicError } from '../core/errors.js';

const LOCK = 'owner.pid';
const ATTEMPTS = 200;
const RETRY_MS = 5;
/** A takeover older than this was abandoned (its process died in the middle). */
const STUCK_MS = 10_000;

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

/** A name in `dir` no other process uses. */
const ownName = (dir: string): string => join(dir, `${LOCK}.new.${process.pid}.${randomBytes(6).toString('hex')}`);

/** Creates the lock naming `me`, whole; false when a lock exists. */
function create(dir: string, file: string, me: string): boolean {
  const tmp = ownName(dir);
  writeFileSync(tmp, me, { flag: 'wx' });
  try {
    linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return false;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Sleeps `ms` without returning to the event loop (a lock is taken once, at start). */
const pause = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Removes the lock if it still is the stale lock `stale` (compare-and-swap): one process at a
 * time takes a given stale lock over, the one that made `owner.pid.takeover-<hash of stale>` — a
 * hard link to whatever `owner.pid` is at that instant, so its content says whether that still was
 * the stale lock. Only the process holding that name removes a lock whose content is `stale`; a
 * process that finds it taken waits for the takeover to end and judges the lock again.
 */
function removeIfStill(dir: string, file: string, stale: string): void {
  const takeover = join(dir, `${LOCK}.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`);
  try {
    linkSync(file, takeover);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return; // gone already: try to create
    if (code !== 'EEXIST') throw err;
    // another process is taking it over; one that died doing so (a takeover takes microseconds)
    // leaves the name: after STUCK_MS it is removed
    try {
      if (Date.now() - statSync(takeover).ctimeMs > STUCK_MS) rmSync(takeover, { force: true });
    } catch {
      // gone meanwhile
    }
    pause(RETRY_MS);
    return;
  }
  try {
    if (read(takeover) === stale) rmSync(file, { force: true });
  } finally {
    rmSync(takeover, { force: true });
  }
}

/**
 * Takes the lock of `dir` (which must exist): a release function, or undefined when a live
 * process holds it (this one included: a directory is opened once per process). A stale lock (its
 * process gone, or of an earlier boot) is taken over.
 */
export function lockDir(dir: string): (() => void) | undefined {
  const file = join(dir, LOCK);
  const me = identity(process.pid);
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (create(dir, file, me)) {
      return () => {
        // only while it is still ours (nobody takes over a live process's lock; this is a guard)
        if (read(file) === me) rmSync(file, { force: true });
      };
    }
    const holder = read(file);
    if (holder === undefined) continue; // removed in between: try again
    if (holderAlive(holder)) return undefined;
    removeIfStill(dir, file, holder);
  }
  return undefined;
}

/** The pid named by the lock of `dir`, for messages. */
export function lockHolder(dir: string): string {
  return read(join(dir, LOCK))?.split(' ')[0] ?? '?';
}

/**
 * Takes the first free slot directory `<base>/<n>` (n = 0, 1, ...) with a pid lock file, so that
 * two processes of a stage on one machine never share a slot while a restarted process gets its
 * predecessor's (a state store's local copy, resumed from its checkpoint; a stage producer's
 * transactional id, which fences the predecessor's open transaction). A lock whose process is gone
 * is taken over.
 */
export function lockSlot(base: string, what = 'state store'): { dir: string; slot: number; release: () => void } {
  for (let slot = 0; slot < 1000; slot++) {
    const dir = join(base, String(slot));
    mkdirSync(dir, { recursive: true });
    const release = lockDir(dir);
    if (release) return { dir, slot, release };
  }
  throw new SonicError('CONFIG_INVALID', `no free ${what} slot under ${base}`);
}
