/**
 * One long-lived Sonic runner process of the `worker` backend (ops/sonic/runner.py, protocol 1):
 * spawned in its own process group with piped stdio, it reads JSON-line requests on stdin and
 * answers JSON lines on stdout; stderr is free-form log text, of which the end is kept for error
 * messages and every line logged at debug (bounded). See worker.ts for the protocol.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../../core/logger.js';

/** What the runner sends. Fields are checked where they are read; anything else is logged and ignored. */
export type RunnerMessage =
  | { type: 'ready'; protocol: number; pid: number; device: number; load_s: number; sonic: string }
  | { type: 'progress'; id: string; fraction: number }
  | { type: 'done'; id: string; output: string; seed: number; elapsed_s: number }
  | { type: 'failed'; id: string; code: string; message: string; restart: boolean }
  | { type: 'fatal'; message: string };

/** How the runner ended: exit code, or the signal that ended it, or why it could not start. */
export interface RunnerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  spawnError?: string;
}

/** Who is listening to the runner now: the start waiting for `ready`, or the render in flight. */
export interface RunnerListener {
  message(m: RunnerMessage): void;
  exit(e: RunnerExit): void;
}

/** Characters of stderr kept for error messages. */
const STDERR_TAIL_CHARS = 16_384;
/** Longest stderr line logged, characters; and most lines logged per {@link LOG_WINDOW_MS}. */
const LOG_LINE_CHARS = 1000;
const LOG_LINES_PER_WINDOW = 200;
const LOG_WINDOW_MS = 10_000;
/** How long the pipes may stay open after the runner exited (held by a process it left), ms. */
export const PIPE_DRAIN_MS = 500;
/** Longest stdout line accepted (a protocol line is a few hundred bytes), characters. */
const MAX_LINE_CHARS = 1024 * 1024;

export class RunnerProcess {
  /** The runner's pid, which is also its process group id; undefined when it could not be started. */
  readonly pid: number | undefined;
  /**
   * Settles once the runner has exited and its pipes have closed, or {@link PIPE_DRAIN_MS} after
   * its exit when something else holds them (never rejects). A process that cannot be reaped (a
   * wait in the kernel on a wedged GPU) never settles it: see {@link gone}.
   */
  readonly exited: Promise<RunnerExit>;
  /** Set once the runner has exited. */
  exit: RunnerExit | undefined;
  listener: RunnerListener | undefined;
  /** Set once it has answered `ready`: before that nothing may be sent to it. */
  ready = false;
  private readonly child: ChildProcess;
  private stderrTail = '';
  private stdoutBuf = '';
  private logged = 0;
  private windowStart = Date.now();

  constructor(
    cmd: string,
    args: readonly string[],
    private readonly logger: Logger,
  ) {
    // its own process group: a ^C or SIGTERM aimed at the stage does not reach it, and a kill
    // reaches everything it started
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.pid = this.child.pid;
    this.exited = new Promise((resolve) => {
      let spawnError: string | undefined;
      this.child.once('error', (err: NodeJS.ErrnoException) => {
        spawnError = err.code === 'ENOENT' ? `${cmd} not found` : err.message;
        // no process: 'close' may never come
        if (this.pid === undefined) settle({ code: null, signal: null, spawnError });
      });
      // Gone once it has exited: 'close' (its pipes closed, every line read) normally follows at
      // once, but something it left running outside its group (a setsid grandchild) may hold the
      // pipes open for ever; past a short drain they are closed on our side and the exit stands.
      this.child.once('exit', (code, signal) => {
        this.kill(); // what it left running in its group goes with it
        const drained = setTimeout(() => {
          this.child.stdin?.destroy();
          this.child.stdout?.destroy();
          this.child.stderr?.destroy();
          settle({ code, signal, ...(spawnError ? { spawnError } : {}) });
        }, PIPE_DRAIN_MS);
        this.child.once('close', () => clearTimeout(drained));
      });
      this.child.once('close', (code, signal) => settle({ code, signal, ...(spawnError ? { spawnError } : {}) }));
      const settle = (e: RunnerExit): void => {
        if (this.exit) return;
        this.exit = e;
        this.kill();
        resolve(e);
        this.listener?.exit(e);
      };
    });
    this.child.stdin!.on('error', () => undefined); // EPIPE once it has exited: the exit tells
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (chunk: string) => this.onStdout(chunk));
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => this.onStderr(chunk));
  }

  /** Sends one request line; lost without error when the runner has gone (its exit tells). */
  send(msg: object): void {
    if (!this.exit) this.child.stdin!.write(`${JSON.stringify(msg)}\n`);
  }

  /** SIGKILLs the runner's process group (a no-op once it is gone). */
  kill(): void {
    if (this.pid === undefined) return;
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      // the group is gone already
    }
  }

  /**
   * Asks the runner to finish its render and exit (`shutdown`; not stdin EOF, which makes it
   * drop the render), and SIGKILLs its group after `graceMs`. True once it is gone; false when it
   * is still there `reapMs` after the SIGKILL (it cannot be reaped).
   */
  async stop(graceMs: number, reapMs: number): Promise<boolean> {
    if (this.ready) this.send({ type: 'shutdown' });
    const timer = setTimeout(() => this.kill(), graceMs);
    try {
      return await this.gone(graceMs + reapMs);
    } finally {
      clearTimeout(timer);
    }
  }

  /** True once the runner is gone, false when it is still there after `ms` (it cannot be reaped). */
  gone(ms: number): Promise<boolean> {
    if (this.exit) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      void this.exited.then(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** The last `n` non-empty lines of stderr, joined by ` | `, for error messages. */
  tail(n = 5): string {
    return this.stderrTail
      .split(/[\r\n]+/)
      .map((l) => l.trim())
      .filter(Boolean)
      .slice(-n)
      .join(' | ')
      .slice(-1500);
  }

  private onStdout(chunk: string): void {
    this.stdoutBuf += chunk;
    let nl: number;
    while ((nl = this.stdoutBuf.indexOf('\n')) >= 0) {
      const line = this.stdoutBuf.slice(0, nl).trim();
      this.stdoutBuf = this.stdoutBuf.slice(nl + 1);
      if (line) this.onLine(line);
    }
    if (this.stdoutBuf.length > MAX_LINE_CHARS) {
      this.logger.warn({ runner_pid: this.pid, chars: this.stdoutBuf.length }, 'Sonic runner wrote an overlong stdout line: dropped');
      this.stdoutBuf = '';
    }
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      msg = undefined;
    }
    if (typeof msg !== 'object' || msg === null || typeof (msg as { type?: unknown }).type !== 'string') {
      this.logger.warn({ runner_pid: this.pid, line: line.slice(0, LOG_LINE_CHARS) }, 'Sonic runner wrote a line that is not a protocol message: ignored');
      return;
    }
    if (this.listener) this.listener.message(msg as RunnerMessage);
    else this.logger.debug({ runner_pid: this.pid, msg }, 'Sonic runner message with nobody waiting: ignored');
  }

  private onStderr(chunk: string): void {
    this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL_CHARS);
    if (!this.logger.isLevelEnabled('debug')) return;
    for (const raw of chunk.split(/[\r\n]+/)) {
      const line = raw.trim();
      if (!line) continue;
      const now = Date.now();
      if (now - this.windowStart > LOG_WINDOW_MS) {
        if (this.logged > LOG_LINES_PER_WINDOW)
          this.logger.debug({ runner_pid: this.pid, dropped: this.logged - LOG_LINES_PER_WINDOW }, 'Sonic runner stderr lines not logged');
        this.windowStart = now;
        this.logged = 0;
      }
      if (++this.logged <= LOG_LINES_PER_WINDOW) this.logger.debug({ runner_pid: this.pid, line: line.slice(0, LOG_LINE_CHARS) }, 'Sonic runner stderr');
    }
  }
}
