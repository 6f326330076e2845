/**
 * Scratch space of the stage processes. Each process works in one directory of its own under a
 * root (`<root>/p<pid>-<host>-<random>`), one subdirectory per task, removed when the task ends
 * however it ends; the process directory goes when the process exits. A process that is killed
 * (SIGKILL, OOM killer, power loss) cannot clean up, so every process sweeps at start the
 * directories of processes that are gone (and again with every heartbeat): those of this host
 * whose pid no longer runs, and any whose heartbeat (the directory's mtime, touched every
 * minute) is older than a quarter of an hour — which also covers other hosts sharing the root
 * and reused pids.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { SonicError } from '../core/errors.js';

/** How often a live process touches its directory, ms. */
export const SCRATCH_HEARTBEAT_MS = 60_000;
/** A process directory untouched for this long belongs to no live process, ms. */
export const SCRATCH_STALE_MS = 15 * 60_000;

const NAME = /^p(\d+)-(.+)-([0-9a-f]{8})$/;
const HOST =
  hostname()
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .slice(0, 64) || 'host';

/** The root used when none is configured: `<os tmpdir>/sonicflow-scratch-<uid>`. */
export function defaultScratchRoot(): string {
  return join(tmpdir(), `sonicflow-scratch-${process.getuid?.() ?? 'user'}`);
}

const processDirs = new Map<string, Promise<string>>();
/** The process directories this process made (never swept by itself). */
const ownDirs = new Set<string>();

/**
 * This process's directory under `root` (default {@link defaultScratchRoot}), created on first
 * use after sweeping the stale directories of dead processes; removed when the process exits.
 *
 * @throws SonicError `CONFIG_INVALID` when the root is a symlink or belongs to another user (in a
 *   shared temp directory, someone else could have planted it); fs errors when it cannot be made.
 */
export function processScratchDir(root: string = defaultScratchRoot()): Promise<string> {
  let dir = processDirs.get(root);
  if (!dir) {
    dir = createProcessDir(root);
    processDirs.set(root, dir);
    // a failed attempt (e.g. a full disk) is retried by the next caller
    dir.catch(() => processDirs.delete(root));
  }
  return dir;
}

async function createProcessDir(root: string): Promise<string> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  const st = await lstat(root);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    throw new SonicError('CONFIG_INVALID', `the scratch root ${root} is not a directory of this user (uid ${uid}); set SONIC_SCRATCH_DIR to one`, {
      details: { variable: 'SONIC_SCRATCH_DIR' },
    });
  }
  await sweepStaleScratch(root);
  const named = join(root, `p${process.pid}-${HOST}-${randomBytes(4).toString('hex')}`);
  await mkdir(named, { mode: 0o700 });
  ownDirs.add(named);
  // the heartbeat also sweeps, so the leftovers of a sibling that dies go within a minute
  const beat = setInterval(() => {
    void utimes(named, new Date(), new Date()).catch(() => undefined);
    void sweepStaleScratch(root).catch(() => undefined);
  }, SCRATCH_HEARTBEAT_MS);
  beat.unref();
  process.once('exit', () => rmSync(named, { recursive: true, force: true }));
  return named;
}

/** Options of {@link sweepStaleScratch}. */
export interface SweepOptions {
  /** The current time, ms; `Date.now()` by default. */
  now?: number;
  /** Whether a pid of this host runs; `process.kill(pid, 0)` by default. */
  isAlive?: (pid: number) => boolean;
}

/**
 * Removes the process directories under `root` that belong to no live process: of this host
 * with a pid that no longer runs, or untouched for {@link SCRATCH_STALE_MS}. This process's own
 * directories are kept; names that are not process directories are left alone.
 *
 * @returns the names removed.
 */
export async function sweepStaleScratch(root: string, options: SweepOptions = {}): Promise<string[]> {
  const { now = Date.now(), isAlive = pidAlive } = options;
  const removed: string[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const m = NAME.exec(name);
    const path = join(root, name);
    if (!m || ownDirs.has(path)) continue;
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    const pid = Number(m[1]);
    const sameHost = m[2] === HOST;
    const dead = sameHost && pid !== process.pid && !isAlive(pid);
    if (dead || now - st.mtimeMs > SCRATCH_STALE_MS) {
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // runs, as another user
  }
}

/**
 * Runs `fn` in a fresh directory `<process dir>/<name>-<random>` that is removed afterwards,
 * whatever happens (also when `fn` throws or its task is aborted).
 */
export async function withScratchDir<T>(name: string, fn: (dir: string) => Promise<T>, root?: string): Promise<T> {
  const dir = await mkdtemp(join(await processScratchDir(root), `${name}-`));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
