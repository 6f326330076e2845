/**
 * The worker backend: ONE long-lived Sonic runner per infer process (one per GPU), which loads
 * the weights once and renders one task at a time, spoken to over stdio JSON lines (runner
 * protocol 1, ops/sonic/README.md; the runner is ops/sonic/runner.py).
 *
 * The runner starts when the backend is built, so the weights load before the first task. A
 * render sends `render` and waits for `done` or `failed`, relaying `progress`. Past the inference
 * budget, on the task's abort, after a `failed` with `restart: true` (GPU_OOM, CUDA_ERROR) and
 * after a crash, the runner's process group is SIGKILLed (or, when it exits on its own, reaped)
 * and a new runner starts. Every start first waits until every earlier runner is gone, bounded by
 * the exit grace plus the reap timeout: one still there past that cannot be reaped (a GPU wedged
 * in the driver), and no runner is started beside it. A runner that fails to load (`fatal`, an
 * exit before `ready`, no `ready` within the load timeout) is started again on demand, with a
 * backoff of 1 s doubling to 60 s; renders meanwhile wait for it. After `maxFailedStarts` failed
 * starts in a row, a runner of another protocol, or a runner that cannot be reaped, the model is
 * unavailable: every render throws MODEL_UNAVAILABLE, which stops the stage (a deployment fault,
 * not the task's; the task stays uncommitted and is redone once the stage runs again).
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SonicError, isSonicError, type ErrorCode } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { defaultScratchRoot } from '../../media/scratch.js';
import { Backoff } from '../../core/retry.js';
import { inferenceBudgetMs, type InferBackend, type InferInput, type InferOutput } from './types.js';
import { RunnerProcess, type RunnerExit, type RunnerMessage } from './worker-process.js';

/**
 * The seed an unseeded task (`params.seed` null) renders with: the first 4 bytes of the sha256 of
 * its task id, big-endian, as a non-negative 31-bit integer. Every attempt of a task gets the same
 * one, and different tasks different noise (Sonic's own default is one fixed seed for all).
 */
export function derivedSeed(taskId: string): number {
  return createHash('sha256').update(taskId, 'utf8').digest().readUInt32BE(0) & 0x7fffffff;
}

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
  /** How long a SIGKILLed runner may take to be gone before the GPU counts as wedged, ms (5000). */
  reapTimeoutMs?: number;
  /** Failed starts in a row after which the model counts as unavailable ({@link MAX_FAILED_STARTS}). */
  maxFailedStarts?: number;
  /** Where the stage's scratch directories live (SONIC_SCRATCH_DIR); the default scratch root when unset. */
  scratchRoot?: string;
}

/** Characters the runner refuses in a path: Sonic's ffmpeg command line cannot quote them (runner.py UNSAFE_PATH_CHARS). */
export const UNSAFE_PATH_CHARS: readonly string[] = ['"', '$', '`', '\\', '\n', '\r', '\0'];

/** Failed starts in a row (load failures) after which renders throw MODEL_UNAVAILABLE. */
export const MAX_FAILED_STARTS = 3;

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
  /** Starts that failed since the last one that loaded. */
  private failedStarts = 0;
  /** Set for good once the model cannot be had here (see the module's doc): every render throws it. */
  private unavailable: SonicError | undefined;
  private readonly graceMs: number;
  private readonly reapMs: number;
  /** Renders run one after another: each waits for the one before it. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly log: Logger;

  constructor(private readonly opts: WorkerBackendOptions) {
    this.backoff = new Backoff({ initialMs: opts.backoffMs ?? 1000, maxMs: opts.maxBackoffMs ?? 60_000, jitter: 'none' });
    this.log = opts.logger;
    checkScratchRoot(opts.scratchRoot || defaultScratchRoot());
    this.graceMs = opts.exitGraceMs ?? 10_000;
    this.reapMs = opts.reapTimeoutMs ?? 5000;
    // load the weights now, not when the first task arrives
    this.start('backend created').catch(() => undefined);
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
   * (nothing may be sent to it before `ready`). Returns once they are gone, or the reap timeout
   * after their SIGKILL.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ runners: [...this.live].map((r) => r.pid) }, 'Sonic runner: closing');
    await Promise.all(
      [...this.live].map((r) => {
        if (r.ready) return r.stop(this.graceMs, this.reapMs);
        r.kill();
        return r.gone(this.reapMs);
      }),
    );
  }

  private async renderNow(i: InferInput): Promise<InferOutput> {
    i.signal.throwIfAborted();
    const runner = await this.ready(i.signal);
    const id = `${i.taskId}-${i.attempt}`;
    const budgetMs = inferenceBudgetMs(i.durationS, this.opts.timeoutBaseS, this.opts.timeoutPerAudioS);
    const p = i.params;
    // unseeded: not Sonic's one default for every task, but a seed of the task's own that a retry repeats
    const seed = p.seed ?? derivedSeed(i.taskId);
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
        const reason: unknown = i.signal.reason;
        // the pod is terminating or the partition moved (partition.ts, runner.ts stop()): no 20 GB
        // load now; the next render, if one comes, starts a runner
        const stopping = isSonicError(reason) && reason.code === 'SHUTDOWN';
        this.replace(runner, 'render aborted (partition revoked or drain timeout)', true, !stopping);
        reject(reason as Error);
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
            else if (refusedAsStopping(m)) this.replace(runner, 'runner is shutting down', false);
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
          seed,
        },
      });
    });
    const made = await stat(i.outputPath).catch(() => undefined);
    if (!made || made.size === 0)
      throw new SonicError('INFERENCE_FAILED', `the Sonic runner reported ${id} done but ${made ? 'left an empty' : 'wrote no'} video at ${i.outputPath}`);
    return { seed: typeof done.seed === 'number' ? done.seed : seed };
  }

  /**
   * The ready runner. Starts one when none is, and waits while a start is under way or a failed
   * one backs off (bounded by `signal`); throws MODEL_UNAVAILABLE once the model cannot be had.
   */
  private async ready(signal: AbortSignal): Promise<RunnerProcess> {
    for (;;) {
      signal.throwIfAborted();
      if (this.closed) throw new SonicError('SHUTDOWN', 'the worker backend is closed');
      if (this.unavailable) throw this.unavailable;
      if (this.current && !this.current.exit) return this.current;
      if (!this.starting) {
        const waitMs = this.loadFailure ? this.loadFailure.retryAt - Date.now() : 0;
        if (waitMs > 0) {
          await sleep(waitMs, signal);
          continue;
        }
        this.start(this.loadFailure ? 'start again after a failed load' : 'no runner').catch(() => undefined);
      }
      // a failed start leaves its backoff or the unavailable model for the next turn
      await abortable(this.starting!, signal).catch((err: unknown) => {
        if (signal.aborted) throw err;
      });
    }
  }

  /**
   * Retires `old` (SIGKILL when `kill`, else waits for the exit it announced) and starts a new
   * runner, unless `restart` is false: then the next render starts one.
   */
  private replace(old: RunnerProcess, why: string, kill: boolean, restart = true): void {
    if (this.current === old) this.current = undefined;
    if (kill) old.kill();
    else void old.stop(this.graceMs, this.reapMs);
    if (this.closed || !restart) {
      this.log.warn({ runner_pid: old.pid, why }, 'Sonic runner: stopped; the next render starts a new one');
      return;
    }
    this.log.warn({ runner_pid: old.pid, why }, 'Sonic runner: restarting');
    this.start(why).catch(() => undefined);
  }

  /** Starts a runner once every earlier one is gone (one runner per GPU), and records how the start went. */
  private start(why: string): Promise<RunnerProcess> {
    const starting = this.earlierGone()
      .then(() => this.launch(why))
      .then(
        (r) => {
          if (this.starting === starting) this.starting = undefined;
          this.loadFailure = undefined;
          this.failedStarts = 0;
          this.backoff.reset();
          if (this.closed) void r.stop(this.graceMs, this.reapMs);
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
          this.failedStarts += 1;
          const max = this.opts.maxFailedStarts ?? MAX_FAILED_STARTS;
          if (!this.unavailable && this.failedStarts >= max) this.unavailable = modelUnavailable(`failed to load ${this.failedStarts} times in a row`, err);
          if (this.unavailable) {
            this.log.error({ err: this.unavailable }, 'Sonic runner: the model is unavailable here; renders stop the stage');
            throw this.unavailable;
          }
          const waitMs = this.backoff.next();
          this.loadFailure = { error: err, retryAt: Date.now() + waitMs };
          this.log.error({ err, backoff_ms: waitMs, failed_starts: this.failedStarts }, 'Sonic runner failed to load');
          throw err;
        },
      );
    this.starting = starting;
    return starting;
  }

  /**
   * Resolves once every runner started before is gone; one still there past the exit grace plus
   * the reap timeout cannot be reaped, and the model is unavailable (never two runners on a GPU).
   */
  private async earlierGone(): Promise<void> {
    const earlier = [...this.live];
    if (earlier.length === 0) return;
    const boundMs = this.graceMs + this.reapMs;
    const gone = await Promise.all(earlier.map((r) => r.gone(boundMs)));
    const stuck = earlier.filter((_, k) => !gone[k]);
    if (stuck.length === 0) return;
    const r = stuck[0]!;
    this.unavailable ??= new SonicError(
      'MODEL_UNAVAILABLE',
      `the Sonic runner (pid ${stuck.map((x) => x.pid).join(', ')}) is still there ${Math.round(boundMs / 1000)} s after it was told to go: it cannot be reaped (a GPU wedged in the driver?), and no runner starts beside it: ${r.tail() || 'no stderr'}`,
      { details: { runner_pid: r.pid, backend_log_tail: r.tail() } },
    );
    throw this.unavailable;
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
    const r = this.spawnRunner(o.python, args);
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
          const grace = setTimeout(() => r.kill(), this.graceMs);
          void r.gone(this.graceMs + this.reapMs).then(() => {
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
      // no start of the same runner will speak otherwise: deploy a matching one
      throw (this.unavailable ??= new SonicError(
        'MODEL_UNAVAILABLE',
        `the Sonic runner ${script} speaks protocol ${String(ready.protocol)}; this sonicflow speaks ${RUNNER_PROTOCOL}`,
        { details: { runner_pid: r.pid } },
      ));
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

  /** Spawns one runner process (a seam for tests that need a runner which will not die). */
  protected spawnRunner(cmd: string, args: readonly string[]): RunnerProcess {
    return new RunnerProcess(cmd, args, this.log);
  }

  private failedError(runner: RunnerProcess, m: Failed): SonicError {
    // a refused request is our bug (a malformed line), except a runner that is shutting down
    const refused: ErrorCode = refusedAsStopping(m) ? 'INFERENCE_FAILED' : 'INTERNAL';
    const code: ErrorCode = m.code === 'INPUT_INVALID' ? refused : RUNNER_CODES.has(m.code as ErrorCode) ? (m.code as ErrorCode) : 'INFERENCE_FAILED';
    return new SonicError(code, `Sonic runner: ${m.code}: ${String(m.message)}`, {
      details: { runner_pid: runner.pid, runner_code: m.code, restart: m.restart === true, backend_log_tail: runner.tail() },
    });
  }
}

/** The runner refused a render because it is shutting down (runner.py): not the request's fault. */
function refusedAsStopping(m: Failed): boolean {
  return m.code === 'INPUT_INVALID' && String(m.message).includes('the runner is shutting down');
}

/**
 * Refuses a scratch root the runner would refuse in every render's paths (see
 * {@link UNSAFE_PATH_CHARS}; an output path may name `.mp4` once only, and holds the root and the
 * host name): an operator's setting, not a task's fault.
 *
 * @throws SonicError `CONFIG_INVALID` naming SONIC_SCRATCH_DIR
 */
function checkScratchRoot(root: string): void {
  const abs = resolve(root);
  const bad = UNSAFE_PATH_CHARS.filter((c) => abs.includes(c));
  const why = bad.length
    ? `holds ${bad.map((c) => JSON.stringify(c)).join(', ')}, which Sonic's ffmpeg command line cannot quote`
    : abs.includes('.mp4') || hostname().includes('.mp4')
      ? `or the host name (${hostname()}) names .mp4, which the runner allows once in an output path`
      : undefined;
  if (why)
    throw new SonicError(
      'CONFIG_INVALID',
      `the scratch root ${JSON.stringify(abs)} ${why}: the Sonic runner refuses every render under it; set SONIC_SCRATCH_DIR to a plain path`,
      {
        details: { variable: 'SONIC_SCRATCH_DIR' },
      },
    );
}

/** MODEL_UNAVAILABLE carrying the load failure `cause` (its message holds the runner's stderr tail). */
function modelUnavailable(what: string, cause: SonicError): SonicError {
  return new SonicError('MODEL_UNAVAILABLE', `the Sonic runner ${what}: ${cause.message}`, { details: cause.details, cause });
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((res, rej) => {
    if (signal.aborted) return rej(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(timer);
      rej(signal.reason as Error);
    };
    const timer = setTimeout(
      () => {
        signal.removeEventListener('abort', onAbort);
        res();
      },
      Math.min(ms, MAX_TIMER_MS),
    );
    signal.addEventListener('abort', onAbort, { once: true });
  });
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
