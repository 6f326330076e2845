import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SonicError } from '../../../src/core/errors.js';
import { DEFAULT_MAX_STDOUT_BYTES, DEFAULT_TOOL_TIMEOUT_MS, failureReason, runTool, startTool } from '../../../src/media/exec.js';

describe('runTool', () => {
  it('returns stdout, stderr and the exit code, feeding stdin', async () => {
    const res = await runTool('sh', ['-c', 'cat; echo oops >&2; exit 3'], { input: Buffer.from('hello') });
    expect(res).toMatchObject({ code: 3, timedOut: false, stdoutOverflow: false, stderr: 'oops' });
    expect(res.stdout.toString()).toBe('hello');
    expect(failureReason('sh', res)).toBe('sh exited with code 3: oops');
  });

  it('rejects with INTERNAL and an install hint when the tool is missing', async () => {
    const run = runTool('/nonexistent/ffmpeg', ['-version']);
    await expect(run).rejects.toBeInstanceOf(SonicError);
    await expect(run).rejects.toMatchObject({ code: 'INTERNAL', message: 'ffmpeg not found: install it (apt-get install ffmpeg)' });
  });

  it('kills the tool with SIGKILL on timeout and says so', async () => {
    const t0 = Date.now();
    const res = await runTool('sleep', ['10'], { timeoutMs: 200 });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(res).toMatchObject({ code: null, signal: 'SIGKILL', timedOut: true });
    expect(failureReason('sleep', res, 200)).toBe('sleep timed out after 200 ms');
  });

  it('a deadline kills what the tool started too: a wrapper whose children hold its pipes ends on time, nothing left running', async () => {
    // durations no other process runs, so that pgrep finds this test's processes only
    const unique = `${process.pid % 1000}${Date.now() % 1000}`.padStart(6, '0');
    const [a, b, c] = [`30.${unique}`, `31.${unique}`, `32.${unique}`];
    const t0 = Date.now();
    // the children outlive a kill of the shell alone, and keep stdout and stderr open
    const res = await runTool('sh', ['-c', `sleep ${a} & sleep ${b} & sleep ${c}`], { timeoutMs: 300 });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(res.timedOut).toBe(true);
    // killed processes disappear once reaped: poll for that, then none of them is left
    const left = (): string => spawnSync('pgrep', ['-f', `sleep (${a}|${b}|${c})`.replaceAll('.', '\\.')], { encoding: 'utf8' }).stdout.trim();
    await expect.poll(left, { timeout: 3000 }).toBe('');
  });

  it('kills the tool on abort and rejects with the abort reason', async () => {
    const ac = new AbortController();
    const reason = new SonicError('SHUTDOWN', 'stage is stopping');
    // aborted once it runs: it says so on stdout, then sleeps
    let running!: () => void;
    const started = new Promise<void>((r) => (running = r));
    const tool = startTool('sh', ['-c', 'echo running; exec sleep 10'], { signal: ac.signal, onOutput: () => running() });
    await started;
    ac.abort(reason);
    const t0 = Date.now();
    await expect(tool.result).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(5000);
    // already aborted: never runs to completion
    await expect(runTool('sleep', ['10'], { signal: ac.signal })).rejects.toBe(reason);
  });

  it('bounds every run: a default deadline, and no infinite or non-positive one', async () => {
    expect(DEFAULT_TOOL_TIMEOUT_MS).toBeGreaterThan(0);
    expect(() => startTool('sleep', ['10'], { timeoutMs: Number.POSITIVE_INFINITY })).toThrow(/timeoutMs/);
    expect(() => startTool('sleep', ['10'], { timeoutMs: 0 })).toThrow(/timeoutMs/);
    await expect(runTool('sleep', ['10'], { timeoutMs: Number.NaN })).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('kills a tool that writes more stdout than allowed and keeps only the allowed bytes', async () => {
    const t0 = Date.now();
    const res = await runTool('yes', [], { maxStdoutBytes: 100_000 });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(res).toMatchObject({ code: null, signal: 'SIGKILL', stdoutOverflow: true, timedOut: false });
    expect(res.stdout.length).toBe(100_000);
    expect(failureReason('yes', res)).toBe('yes was stopped: it wrote more output than allowed');
    // the default cap applies too: nothing reads an endless stream into memory
    const capped = await runTool('head', ['-c', String(DEFAULT_MAX_STDOUT_BYTES + 10), '/dev/zero']);
    expect(capped.stdoutOverflow).toBe(true);
    expect(capped.stdout.length).toBe(DEFAULT_MAX_STDOUT_BYTES);
  });

  it('survives a tool that exits without reading its input (EPIPE)', async () => {
    const res = await runTool('true', [], { input: Buffer.alloc(8 << 20) });
    expect(res.code).toBe(0);
  });
});
