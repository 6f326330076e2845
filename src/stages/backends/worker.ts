/**
 * The worker backend: ONE long-lived Sonic runner per infer process (one per GPU), which loads
 * the weights once and renders one task at a time, spoken to over stdio JSON lines (runner
 * protocol 1, ops/sonic/README.md; the runner is ops/sonic/runner.py).
 *
 * The runner starts when the backend is built, so the weights load before the first task. A
 * render sends `render` and waits for `done` or `failed`, relaying `progress`. Past the inference
 * budget, on the task's abort, after a `failed` with `restart: true` (GPU_OOM, CUDA_ERROR) and
 * after a crash, the runner's process group is SIGKILLed (or, when it exits on its own, reaped)
 * and a new runner starts. A runner that fails to load (`fatal`, an exit before `ready`, no
 * `ready` within the load timeout) is started again on demand, with a backoff of 1 s doubling to
 * 60 s; renders meanwhile fail at once with INFERENCE_FAILED naming the load failure.
 */
import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SonicError, type ErrorCode } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { Backoff } from '../../core/retry.js';
import { inferenceBudgetMs, type InferBackend, type InferInput, type InferOutput } from './types.js';
import { RunnerProcess, type RunnerExit, type RunnerMessage } from './worker-process.js';

/** The runner protocol version this backend speaks. */
export const RUNNER_PROTOCOL = 1;

/** The package's own runner, resolved from the package root (not the working directory). */
export const DEFAULT_RUNNER = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'ops', 'sonic', 'runner.py');

export interface WorkerBackendOptions {
  /** Python interpreter (SONIC_WORKER_PYTHON). */
  python: string;
  /** Arguments before the runner script; `['-u']` (unbuffered) by default. */
  pythonArgs?: readonly string[];
  /** The runner script (SONIC_WORKER_RUNNER); {@link DEFAULT_RUNNER} when empty. */
  runner: string;
  /** Sonic checkout holding `sonic.py` and `checkpoints/` (SONIC_WORKER_SONIC_DIR). */
  sonicDir: string;
  /** CUDA device index (SONIC_WORKER_DEVICE). */
  device: number;
  /** False passes `--no-interpolate` (SONIC_WORKER_INTERPOLATE). */
  interpolate: boolean;
  /** How long a start may take to answer `ready`, ms (SONIC_WORKER_LOAD_TIMEOUT_S). */
  loadTimeoutMs: number;
  /** The inference budget, as every backend: base s plus s per audio second. */
  timeoutBaseS: number;
  timeoutPerAudioS: number;
  logger: Logger;
  /** First wait after a failed load before the next start, ms (1000); doubles up to `maxBackoffMs` (60000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How long a runner may take to exit after `shutdown` or its own `failed` restart line before SIGKILL, ms (10000). */
  exitGraceMs?: number;
}

type Done = Extract<RunnerMessage, { type: 'done' }>;
type Failed = Extract<RunnerMessage, { type: 'failed' }>;

/** Longest delay a timer holds (2^31 - 1 ms); Node fires a longer one at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Codes the runner may send that are ours as they are; INPUT_INVALID means we sent a bad line (a bug). */
const RUNNER_CODES: ReadonlySet<ErrorCode> = new Set(['NO_FACE_DETECTED', 'GPU_OOM', 'CUDA_ERROR', 'INFERENCE_FAILED']);

export class WorkerBackend implements InferBackend {
  readonly name = 'worker' as const;
  private current: RunnerProcess | undefined;
  /** The start under way (waiting for `ready`), which the next render waits for. */
  private starting: Promise<RunnerProcess> | undefined;
  /** Every runner not yet reaped, for close(). */
  private readonly live = new Set<RunnerProcess>();
  private readonly backoff: Backoff;
  private loadFailure: { error: SonicError; retryAt: number } | undefined;
  /** Renders run one after another: each waits for the one before it. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly log: Logger;

  constructor(private readonly opts: WorkerBackendOptions) {
    this.backoff = new Backoff({ initialMs: opts.backoffMs ?? 1000, maxMs: opts.maxBackoffMs ?? 60_000, jitter: 'none' });
    this.log = opts.logger;
    // load the weights now, not when the first task arrives
    this.start('backend created', Promise.resolve()).catch(() => undefined);
  }

  async render(i: InferInput): Promise<InferOutput> {
    const before = this.queue;
    let release!: () => void;
    this.queue = new Promise((r) => (release = r));
    try {
      await abortable(before, i.signal);
      return await this.renderNow(i);
    } finally {
      // keep the order even when this one gave up waiting: the next waits for the one before too
      void before.then(release);
    }
  }

  /**
   * Sends `shutdown` to every ready runner (it finishes a render in flight, then exits), waits up
   * to the exit grace, then SIGKILLs what is left; a runner still loading is SIGKILLed at once
   * (nothing may be sent to it before `ready`).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ runners: [...this.live].map((r) => r.pid) }, 'Sonic runner: closing');
    await Promise.all(
      [...this.live].map((r) => {
        if (r.ready) return r.stop(this.opts.exitGraceMs ?? 10_000);
        r.kill();
        return r.exited;
      }),
    );
  }

  private async renderNow(i: InferInput): Promise<InferOutput> {
    i.signal.throwIfAborted();
    const runner = await this.ready(i.signal);
    const id = `${i.taskId}-${i.attempt}`;
    const budgetMs = inferenceBudgetMs(i.durationS, this.opts.timeoutBaseS, this.opts.timeoutPerAudioS);
    const p = i.params;
    const done = await new Promise<Done>((resolveDone, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        i.signal.removeEventListener('abort', onAbort);
        runner.listener = undefined;
      };
      const timer = setTimeout(
        () => {
          finish();
          this.replace(runner, 'render past its budget', true);
          reject(
            new SonicError(
              'INFERENCE_TIMEOUT',
              `inference took longer than its budget of ${Math.round(budgetMs / 1000)} s for ${i.durationS.toFixed(1)} s of audio`,
              {
                safe: true,
              },
            ),
          );
        },
        Math.min(budgetMs, MAX_TIMER_MS),
      );
      const onAbort = (): void => {
        finish();
        this.replace(runner, 'render aborted (partition revoked or drain timeout)', true);
        reject(i.signal.reason);
      };
      i.signal.addEventListener('abort', onAbort, { once: true });
      runner.listener = {
        message: (m) => {
          if (m.type === 'progress' && m.id === id) {
            if (Number.isFinite(m.fraction)) i.onProgress(Math.min(1, Math.max(0, m.fraction)));
          } else if (m.type === 'done' && m.id === id) {
            finish();
            resolveDone(m);
          } else if (m.type === 'failed' && m.id === id) {
            finish();
            if (m.restart) this.replace(runner, `runner failed ${m.code} and asked for a restart`, false);
            reject(this.failedError(runner, m));
          } else {
            this.log.warn({ runner_pid: runner.pid, msg: m, id }, 'Sonic runner sent an unexpected message mid-render: ignored');
          }
        },
        exit: (e) => {
          finish();
          this.replace(runner, `runner ${describeExit(e)} mid-render`, false);
          reject(
            new SonicError('INFERENCE_FAILED', `the Sonic runner (pid ${runner.pid}) ${describeExit(e)} mid-render: ${runner.tail() || 'no stderr'}`, {
              details: { runner_pid: runner.pid, exit_code: e.code, exit_signal: e.signal, backend_log_tail: runner.tail() },
            }),
          );
        },
      };
      runner.send({
        type: 'render',
        id,
        image: resolve(i.imagePng),
        audio: resolve(i.audio16k),
        output: resolve(i.outputPath),
        work_dir: resolve(i.workDir),
        params: {
          min_resolution: p.min_resolution,
          inference_steps: p.inference_steps,
          dynamic_scale: p.dynamic_scale,
          expand_ratio: p.expand_ratio,
          crop: p.crop_to_face,
          seed: p.seed,
        },
      });
    });
    const made = await stat(i.outputPath).catch(() => undefined);
    if (!made || made.size === 0)
      throw new SonicError('INFERENCE_FAILED', `the Sonic runner reported ${id} done but ${made ? 'left an empty' : 'wrote no'} video at ${i.outputPath}`);
    return { seed: typeof done.seed === 'number' ? done.seed : p.seed };
  }

  /** The ready runner; starts one when none is, or fails at once while a failed load backs off. */
  private async ready(signal: AbortSignal): Promise<RunnerProcess> {
    if (this.closed) throw new SonicError('SHUTDOWN', 'the worker backend is closed');
    if (this.current && !this.current.exit) return this.current;
    if (!this.starting) {
      const f = this.loadFailure;
      if (f && Date.now() < f.retryAt) {
        throw new SonicError(f.error.code, `${f.error.message} (next start in ${Math.ceil((f.retryAt - Date.now()) / 1000)} s)`, {
          details: f.error.details,
          cause: f.error,
        });
      }
      this.start(f ? 'start again after a failed load' : 'no runner', Promise.resolve()).catch(() => undefined);
    }
    return abortable(this.starting!, signal);
  }

  /** Retires `old` (SIGKILL when `kill`, else waits for the exit it announced) and starts a new runner once it is gone. */
  private replace(old: RunnerProcess, why: string, kill: boolean): void {
    if (this.current === old) this.current = undefined;
    if (kill) old.kill();
    const gone = kill ? old.exited : old.stop(this.opts.exitGraceMs ?? 10_000);
    if (this.closed) return;
    this.log.warn({ runner_pid: old.pid, why }, 'Sonic runner: restarting');
    this.start(why, gone).catch(() => undefined);
  }

  /** Starts a runner after `after` settles (the previous one gone: one runner per GPU). */
  private start(why: string, after: Promise<unknown>): Promise<RunnerProcess> {
    const starting = after
      .then(() => this.launch(why))
      .then(
        (r) => {
          if (this.starting === starting) this.starting = undefined;
          this.loadFailure = undefined;
          this.backoff.reset();
          if (this.closed) void r.stop(this.opts.exitGraceMs ?? 10_000);
          else this.current = r;
          return r;
        },
        (thrown: unknown) => {
          if (this.starting === starting) this.starting = undefined;
          const err =
            thrown instanceof SonicError
              ? thrown
              : new SonicError('INFERENCE_FAILED', `the Sonic runner could not be started: ${(thrown as Error).message}`, { cause: thrown });
          if (this.closed) throw err;
          const waitMs = this.backoff.next();
          this.loadFailure = { error: err, retryAt: Date.now() + waitMs };
          this.log.error({ err, backoff_ms: waitMs }, 'Sonic runner failed to load');
          throw err;
        },
      );
    this.starting = starting;
    return starting;
  }

  /** Spawns a runner and waits for its `ready`. */
  private async launch(why: string): Promise<RunnerProcess> {
    if (this.closed) throw new SonicError('SHUTDOWN', 'the worker backend is closed');
    const o = this.opts;
    const script = o.runner || DEFAULT_RUNNER;
    const args = [
      ...(o.pythonArgs ?? ['-u']),
      isAbsolute(script) ? script : resolve(script),
      '--sonic-dir',
      o.sonicDir,
      '--device',
      String(o.device),
      ...(o.interpolate ? [] : ['--no-interpolate']),
    ];
    const r = new RunnerProcess(o.python, args, this.log);
    this.live.add(r);
    void r.exited.then(() => this.live.delete(r));
    this.log.info({ runner_pid: r.pid, why, cmd: o.python, args }, 'Sonic runner: starting');
    const fail = (what: string): SonicError =>
      new SonicError('INFERENCE_FAILED', `the Sonic runner (${o.python} ${script}) ${what}: ${r.tail() || 'no stderr'}`, {
        details: { runner_pid: r.pid, backend_log_tail: r.tail() },
      });
    const ready = await new Promise<Extract<RunnerMessage, { type: 'ready' }>>((resolveReady, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        r.listener = undefined;
      };
      const timer = setTimeout(() => {
        finish();
        r.kill();
        reject(fail(`did not report ready within ${Math.round(o.loadTimeoutMs / 1000)} s`));
      }, o.loadTimeoutMs);
      r.listener = {
        message: (m) => {
          finish();
          if (m.type === 'ready') return resolveReady(m);
          if (m.type !== 'fatal') {
            r.kill();
            return reject(fail(`sent ${JSON.stringify(m).slice(0, 200)} before ready`));
          }
          // it exits 2 after this line: wait for it (bounded), so its stderr tail explains
          const grace = setTimeout(() => r.kill(), o.exitGraceMs ?? 10_000);
          void r.exited.then(() => {
            clearTimeout(grace);
            reject(fail(`failed to load: ${String(m.message)}`));
          });
        },
        exit: (e) => {
          finish();
          reject(fail(e.spawnError ? `could not be started (${e.spawnError})` : `${describeExit(e)} before ready`));
        },
      };
    });
    if (ready.protocol !== RUNNER_PROTOCOL) {
      r.kill();
      throw new SonicError('CONFIG_INVALID', `the Sonic runner ${script} speaks protocol ${String(ready.protocol)}; this sonicflow speaks ${RUNNER_PROTOCOL}`, {
        details: { runner_pid: r.pid },
      });
    }
    r.ready = true;
    this.log.info({ runner_pid: r.pid, device: ready.device, load_s: ready.load_s, sonic: ready.sonic }, 'Sonic runner: ready');
    void r.exited.then((e) => {
      // mid-render exits are the render's to report; this is one between renders
      if (this.current !== r) return;
      this.current = undefined;
      this.log.warn({ runner_pid: r.pid, exit_code: e.code, exit_signal: e.signal, tail: r.tail() }, 'Sonic runner exited between renders');
    });
    return r;
  }

  private failedError(runner: RunnerProcess, m: Failed): SonicError {
    const code: ErrorCode = m.code === 'INPUT_INVALID' ? 'INTERNAL' : RUNNER_CODES.has(m.code as ErrorCode) ? (m.code as ErrorCode) : 'INFERENCE_FAILED';
    return new SonicError(code, `Sonic runner: ${m.code}: ${String(m.message)}`, {
      details: { runner_pid: runner.pid, runner_code: m.code, restart: m.restart === true, backend_log_tail: runner.tail() },
    });
  }
}

function describeExit(e: RunnerExit): string {
  if (e.spawnError) return `could not be started (${e.spawnError})`;
  return e.code === null ? `was killed by ${e.signal ?? 'a signal'}` : `exited with code ${e.code}`;
}

/** `p`, or the signal's reason as soon as it aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((res, rej) => {
    const onAbort = (): void => rej(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        res(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        rej(err as Error);
      },
    );
  });
}
