/**
 * A memory limit for one benchmarked process, the way a container runtime sets one: a Linux
 * memory cgroup whose limit counts the process's own memory and the page cache it brings in
 * (a file it maps included), and which reclaims that cache before it kills. cgroup v2
 * (`memory.max`) or v1 (`memory.limit_in_bytes`), whichever this machine mounts writable;
 * `available()` says why not when neither is.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const V2 = '/sys/fs/cgroup';
const V1 = '/sys/fs/cgroup/memory';

interface Layout {
  root: string;
  limitFile: string;
  peakFile: string | null;
  v: 1 | 2;
}

function layout(): Layout | string {
  if (existsSync(join(V2, 'cgroup.controllers')) && readFileSync(join(V2, 'cgroup.controllers'), 'utf8').includes('memory'))
    return { root: V2, limitFile: 'memory.max', peakFile: 'memory.peak', v: 2 };
  if (existsSync(join(V1, 'memory.limit_in_bytes'))) return { root: V1, limitFile: 'memory.limit_in_bytes', peakFile: 'memory.max_usage_in_bytes', v: 1 };
  return 'no memory cgroup is mounted';
}

export interface LimitUsage {
  limitMb: number;
  /** Highest charge of the group (own memory and page cache), MiB, when the kernel reports it. */
  peakMb: number | null;
  /** Processes the kernel killed for the limit. */
  oomKills: number;
}

export class MemoryLimit {
  private constructor(
    private readonly dir: string,
    private readonly l: Layout,
    readonly limitMb: number,
  ) {}

  /** A writable memory cgroup, or the reason there is none. */
  static available(): true | string {
    const l = layout();
    if (typeof l === 'string') return l;
    const probe = join(l.root, `sonicflow-bench-probe-${process.pid}`);
    try {
      mkdirSync(probe);
      rmdirSync(probe);
      return true;
    } catch (err) {
      return `${l.root} is not writable here (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
    }
  }

  static create(name: string, limitMb: number): MemoryLimit {
    const l = layout();
    if (typeof l === 'string') throw new Error(l);
    const dir = join(l.root, `sonicflow-bench-${name}-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, l.limitFile), String(limitMb * 2 ** 20));
    if (l.v === 1) writeFileSync(join(dir, 'memory.swappiness'), '0');
    else writeFileSync(join(dir, 'memory.swap.max'), '0');
    return new MemoryLimit(dir, l, limitMb);
  }

  /**
   * `command` and `args` rewritten to start inside the group: a shell moves itself in, then
   * execs the command, so everything the command allocates is charged from its first byte.
   */
  wrap(command: string, args: string[]): { command: string; args: string[] } {
    return { command: '/bin/sh', args: ['-c', 'echo $$ > "$0" && exec "$@"', join(this.dir, 'cgroup.procs'), command, ...args] };
  }

  usage(): LimitUsage {
    const read = (f: string): string | undefined => {
      try {
        return readFileSync(join(this.dir, f), 'utf8');
      } catch {
        return undefined;
      }
    };
    const peak = this.l.peakFile ? read(this.l.peakFile) : undefined;
    const events = read(this.l.v === 1 ? 'memory.oom_control' : 'memory.events') ?? '';
    const kills = /^oom_kill (\d+)/m.exec(events)?.[1];
    return { limitMb: this.limitMb, peakMb: peak ? Math.round((Number(peak) / 2 ** 20) * 10) / 10 : null, oomKills: Number(kills ?? 0) };
  }

  /** Removes the group (its processes must have exited). */
  remove(): void {
    try {
      rmdirSync(this.dir);
    } catch {
      // a process still exiting: the group goes with the next reboot; nothing depends on it
    }
  }
}

/**
 * Drops the page cache of every file in `dir` (fadvise DONTNEED through GNU dd), so a process
 * started next reads them from disk and is charged for what it maps, not served from pages
 * another process already brought in.
 */
export function dropFileCache(dir: string): void {
  for (const f of readdirSync(dir)) execFileSync('dd', [`if=${join(dir, f)}`, 'iflag=nocache', 'count=0', 'status=none']);
}
