/**
 * The command backend: runs Sonic's own CLI (or any script) from a template such as
 *   python3 demo.py {image} {audio} {output} --dynamic_scale {dynamic_scale} --seed {seed}
 * The template is split into arguments first and placeholders are filled per argument, so no
 * shell ever sees task data. Exit code and stderr map to error codes; a run past its budget
 * (base + per audio second) is killed and fails with INFERENCE_TIMEOUT (retried once).
 */
import { stat } from 'node:fs/promises';
import { SonicError } from '../../core/errors.js';
import { startTool } from '../../media/exec.js';
import { classifyModelFailure, lastPercent } from './failures.js';
import { inferenceBudgetMs, type InferBackend, type InferInput, type InferOutput } from './types.js';

/** Splits a template into arguments: whitespace separates, single or double quotes group. */
export function splitTemplate(template: string): string[] {
  const args: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (const m of template.matchAll(re)) args.push(m[1] ?? m[2] ?? m[3] ?? '');
  return args;
}

/** Fills `{name}` placeholders of one argument; unknown names are an error. */
export function fill(arg: string, values: Record<string, string>): string {
  return arg.replace(/\{([a-z_0-9]+)\}/g, (_, name: string) => {
    const v = values[name];
    if (v === undefined)
      throw new SonicError('CONFIG_INVALID', `SONIC_INFER_COMMAND names an unknown placeholder {${name}} (known: ${Object.keys(values).join(', ')})`);
    return v;
  });
}

export class CommandBackend implements InferBackend {
  readonly name = 'command' as const;

  constructor(
    private readonly template: string,
    private readonly opts: { cwd?: string; timeoutBaseS: number; timeoutPerAudioS: number },
  ) {
    if (!template.trim()) throw new SonicError('CONFIG_INVALID', 'SONIC_INFER_BACKEND=command needs SONIC_INFER_COMMAND');
  }

  async render(i: InferInput): Promise<InferOutput> {
    const seed = i.params.seed ?? 42;
    const values: Record<string, string> = {
      image: i.imagePng,
      audio: i.audio16k,
      audio_original: i.audioOriginal,
      output: i.outputPath,
      min_resolution: String(i.params.min_resolution),
      inference_steps: String(i.params.inference_steps),
      dynamic_scale: String(i.params.dynamic_scale),
      expand_ratio: String(i.params.expand_ratio),
      motion_scale: String(i.params.motion_scale),
      seed: String(seed),
      fps: String(i.params.fps),
      duration: i.durationS.toFixed(3),
      task_id: i.taskId,
      attempt: String(i.attempt),
      work_dir: i.workDir,
    };
    const [cmd, ...args] = splitTemplate(this.template).map((a) => fill(a, values));
    const budgetMs = inferenceBudgetMs(i.durationS, this.opts.timeoutBaseS, this.opts.timeoutPerAudioS);
    let output = '';
    const tool = startTool(cmd!, args, {
      cwd: this.opts.cwd || i.workDir,
      timeoutMs: budgetMs,
      signal: i.signal,
      keepStdout: false,
      spawnErrorCode: 'CONFIG_INVALID',
      onOutput: (text) => {
        output = (output + text).slice(-64_000);
        const p = lastPercent(text);
        if (p !== undefined) i.onProgress(p);
      },
    });
    tool.stdin.end();
    const { code, timedOut } = await tool.result;
    const stderr = output;
    i.signal.throwIfAborted();
    if (timedOut)
      throw new SonicError(
        'INFERENCE_TIMEOUT',
        `inference took longer than its budget of ${Math.round(budgetMs / 1000)} s for ${i.durationS.toFixed(1)} s of audio`,
        { safe: true },
      );
    if (code !== 0) throw classifyModelFailure(stderr, `inference command exited with ${code}`);
    // Sonic's process() returns -1 without a file when it finds no face, and demo.py exits 0
    const made = await stat(i.outputPath).catch(() => undefined);
    if (!made || made.size === 0) {
      throw classifyModelFailure(`${stderr}\nno face (the command exited 0 and wrote no video)`, 'inference produced no video');
    }
    return { seed };
  }
}
