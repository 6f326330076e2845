/**
 * Runs the command-line media tools (ffmpeg, ffprobe, espeak-ng) as child processes. A non-zero
 * exit is returned to the caller, who knows which error code it means; only a failure to start
 * the tool at all is thrown here. No run is unbounded: every tool has a deadline
 * ({@link DEFAULT_TOOL_TIMEOUT_MS} unless the caller gives its own) and a cap on the stdout it
 * may hand back ({@link DEFAULT_MAX_STDOUT_BYTES}); past either it is killed.
 */
import { spawn } from 'node:child_process';
import { basename } from 'node:path';
import type { Writable } from 'node:stream';
import { SonicError, type ErrorCode } from '../core/errors.js';

/** Options of {@link runTool} and {@link startTool}. */
export interface ToolOptions {
  /** Kills the process with SIGKILL after this many milliseconds; {@link DEFAULT_TOOL_TIMEOUT_MS} by default. */
  timeoutMs?: number;
  /**
   * Kills the process with SIGKILL once it has written more than this many bytes to stdout (the
   * result then has `stdoutOverflow` set and holds the first `maxStdoutBytes`);
   * {@link DEFAULT_MAX_STDOUT_BYTES} by default.
   */
  maxStdoutBytes?: number;
  /** Kills the process with SIGKILL when aborted; the result then rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Bytes written to the tool's stdin, which is then closed ({@link runTool} only; empty by default). */
  input?: Buffer;
  /** Working directory; the parent's by default. */
  cwd?: string;
  /** Sees every chunk the tool writes, stdout and stderr alike (progress parsing, own tails). */
  onOutput?: (text: string, stream: 'stdout' | 'stderr') => void;
  /** Keep stdout for the result (true by default); false passes it to `onOutput` only. */
  keepStdout?: boolean;
  /** Error code when the tool cannot be started; `INTERNAL` by default (a missing system tool is a bug of the install). */
  spawnErrorCode?: ErrorCode;
}

/** How a tool ended. */
export interface ToolResult {
  /** Exit code; `null` when the process was killed by a signal (see `timedOut`). */
  code: number | null;
  /** The signal that ended the process, if any. */
  signal: NodeJS.Signals | null;
  /** What the tool wrote to stdout, at most `maxStdoutBytes`. */
  stdout: Buffer;
  /** The last {@link STDERR_TAIL_CHARS} characters the tool wrote to stderr. */
  stderr: string;
  /** True when the process was killed because `timeoutMs` elapsed. */
  timedOut: boolean;
  /** True when the process was killed because it wrote more than `maxStdoutBytes` to stdout. */
  stdoutOverflow: boolean;
}

/** A started tool whose stdin the caller feeds (see {@link startTool}). */
export interface RunningTool {
  /** The tool's stdin; write errors (EPIPE when the tool exits early) are swallowed, the exit code tells. */
  stdin: Writable;
  /** Settles when the process has exited and its output streams have closed. */
  result: Promise<ToolResult>;
  /** Kills the process and everything it started (its process group) with SIGKILL. */
  kill(): void;
}

/** How much of stderr is kept: ffmpeg can be chatty and only the end explains a failure. */
export const STDERR_TAIL_CHARS = 16_384;

/** Deadline of a tool run whose caller names none, ms. Callers on the task path pass their own. */
export const DEFAULT_TOOL_TIMEOUT_MS = 10 * 60_000;

/** Longest deadline a timer can hold (2^31 - 1 ms, about 24.8 days); Node fires longer ones at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Most stdout a tool run may hand back unless its caller allows more, bytes. */
export const DEFAULT_MAX_STDOUT_BYTES = 64 * 1024 * 1024;

const INSTALL_HINT: Record<string, string> = {
  ffmpeg: 'apt-get install ffmpeg',
  ffprobe: 'apt-get install ffmpeg',
  'espeak-ng': 'apt-get install espeak-ng',
};

/**
 * Starts `cmd args` with piped stdio. Use it when stdin must be streamed with backpressure;
 * otherwise prefer {@link runTool}.
 *
 * `result` rejects with a `SonicError` `INTERNAL` when the tool cannot be started (e.g. not
 * installed: "ffmpeg not found: install it (apt-get install ffmpeg)"), and with `signal.reason`
 * when `signal` aborts; a non-zero exit, a timeout or a stdout overflow resolves normally (with
 * `code` null, and `timedOut` or `stdoutOverflow` set).
 *
 * @throws SonicError `INTERNAL` at once for a `timeoutMs` that is not positive and finite (no run is unbounded).
 */
export function startTool(cmd: string, args: readonly string[], options: ToolOptions = {}): RunningTool {
  const { timeoutMs = DEFAULT_TOOL_TIMEOUT_MS, maxStdoutBytes = DEFAULT_MAX_STDOUT_BYTES, signal } = options;
  if (!(timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS) || !(maxStdoutBytes >= 0)) {
    throw new SonicError('INTERNAL', `${basename(cmd)} needs 0 < timeoutMs <= ${MAX_TIMER_MS} and maxStdoutBytes >= 0, got ${timeoutMs} and ${maxStdoutBytes}`);
  }
  // its own process group, so that a deadline also kills what it started: a wrapper script's
  // children would otherwise hold its pipes open (and the result back) long after the kill
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, ...(options.cwd ? { cwd: options.cwd } : {}) });
  const stdout: Buffer[] = [];
  let stdoutBytes = 0;
  let stderr = '';
  let timedOut = false;
  let stdoutOverflow = false;
  let aborted = false;
  const kill = (): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // the group is gone already
    }
  };
  const keepStdout = options.keepStdout ?? true;

  child.stdout.on('data', (chunk: Buffer) => {
    options.onOutput?.(chunk.toString('utf8'), 'stdout');
    if (stdoutOverflow || !keepStdout) return;
    if (stdoutBytes + chunk.length > maxStdoutBytes) {
      stdoutOverflow = true;
      stdout.push(chunk.subarray(0, maxStdoutBytes - stdoutBytes));
      stdoutBytes = maxStdoutBytes;
      kill();
      return;
    }
    stdout.push(chunk);
    stdoutBytes += chunk.length;
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    options.onOutput?.(chunk, 'stderr');
    stderr = (stderr + chunk).slice(-STDERR_TAIL_CHARS);
  });
  // EPIPE when the tool exits before reading all its input: the exit code is the real answer
  child.stdin.on('error', () => undefined);

  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, timeoutMs);
  const onAbort = (): void => {
    aborted = true;
    kill();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) onAbort();

  const result = new Promise<ToolResult>((resolve, reject) => {
    let settled = false;
    const finish = (): void => {
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      finish();
      kill();
      reject(spawnError(cmd, err, options.spawnErrorCode));
    });
    child.once('close', (code, sig) => {
      if (settled) return;
      finish();
      // nothing the tool left running outlives its run
      kill();
      if (aborted) reject(abortReason(signal));
      else resolve({ code, signal: sig, stdout: Buffer.concat(stdout), stderr: stderr.trim(), timedOut, stdoutOverflow });
    });
  });
  return { stdin: child.stdin, result, kill };
}

/**
 * Runs `cmd args` to completion, optionally feeding `input` on stdin, and returns its exit code,
 * stdout and stderr. Never throws for a non-zero exit; the caller decides what it means.
 *
 * @throws SonicError `INTERNAL` when the tool cannot be started (not installed, not executable).
 * @throws `signal.reason` when `signal` aborts (the process is killed with SIGKILL first).
 */
export async function runTool(cmd: string, args: readonly string[], options: ToolOptions = {}): Promise<ToolResult> {
  const tool = startTool(cmd, args, options);
  tool.stdin.end(options.input);
  return tool.result;
}

/**
 * One line explaining why a tool run failed: timeout, signal or exit code, plus the end of stderr.
 * For error messages; `what` names the step (e.g. "ffmpeg").
 */
export function failureReason(what: string, res: ToolResult, timeoutMs?: number): string {
  const tail = lastLines(res.stderr, 4);
  const how = res.timedOut
    ? `timed out${timeoutMs === undefined ? '' : ` after ${timeoutMs} ms`}`
    : res.stdoutOverflow
      ? 'was stopped: it wrote more output than allowed'
      : res.code === null
        ? `was killed by ${res.signal ?? 'a signal'}`
        : `exited with code ${res.code}`;
  return `${what} ${how}${tail ? `: ${tail}` : ''}`;
}

function lastLines(text: string, n: number): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-n)
    .join(' | ');
}

function spawnError(cmd: string, err: NodeJS.ErrnoException, code: ErrorCode = 'INTERNAL'): SonicError {
  const name = basename(cmd);
  const hint = INSTALL_HINT[name];
  const message = err.code === 'ENOENT' ? `${name} not found: install it${hint ? ` (${hint})` : ''}` : `${name} could not be started: ${err.message}`;
  return new SonicError(code, message, { cause: err, details: { cmd, errno: err.code } });
}

function abortReason(signal: AbortSignal | undefined): unknown {
  return signal?.reason ?? new SonicError('SHUTDOWN', 'the operation was aborted');
}
