/**
 * Small helpers shared by the benchmarks: repeated runs summarised as median/min/max, a plain
 * text table, JSON results under bench/results/, child processes that never outlive the bench,
 * and an SVG bar chart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

export interface Summary {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export function summarise(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, runs: values };
}

/** The p-th percentile (0-100) of `values`, nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function fmt(s: Summary, digits = 0): string {
  const f = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

/** Writes `bench/results/<name>.json` with the machine description; returns the path. */
export function saveResults(name: string, results: unknown): string {
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.json`);
  const machine = { cpus: cpus().length, cpu: cpus()[0]?.model, memory_gib: Math.round(totalmem() / 2 ** 30), node: process.version };
  writeFileSync(path, `${JSON.stringify({ name, at: new Date().toISOString(), machine, results }, null, 2)}\n`);
  return path;
}

// ---------------------------------------------------------------- processes, ports, charts

/** A child process started by a benchmark (see {@link startNode}). */
export interface Managed {
  proc: ChildProcess;
  /** Where its stdout and stderr go. */
  log: string;
  /** Last lines of its log, for error messages. */
  tail(lines?: number): string;
}

const children = new Set<ChildProcess>();
let signalsHooked = false;

/** On SIGINT/SIGTERM/SIGHUP, SIGTERM the live children (they drain and exit), then die of the signal as usual. */
function hookSignals(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const c of children) c.kill('SIGTERM');
      process.kill(process.pid, sig);
    });
  }
  process.once('exit', () => {
    for (const c of children) c.kill('SIGTERM');
  });
}

/** Starts `node <args>` with `env`, output to `log`; the child is told to stop when this process exits or is signalled. */
export function startNode(
  args: string[],
  env: NodeJS.ProcessEnv,
  log: string,
  wrap: (command: string, args: string[]) => { command: string; args: string[] } = (command, args) => ({ command, args }),
): Managed {
  hookSignals();
  const fd = openSync(log, 'a');
  const run = wrap(process.execPath, args);
  const proc = spawn(run.command, run.args, { env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return {
    proc,
    log,
    tail: (lines = 15) => {
      try {
        return readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
  };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
export async function stopProcess(proc: ChildProcess, graceMs = 30_000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * The first group of `pattern` in what `m` printed (stdout and stderr go to its log), once it has:
 * e.g. the port a server started on port 0 got. Throws when it exits first or after `timeoutMs`.
 */
export async function printed(m: Managed, pattern: RegExp, opts: { timeoutMs: number; what: string }): Promise<string> {
  const log = (): string => {
    try {
      return readFileSync(m.log, 'utf8');
    } catch {
      return '';
    }
  };
  await waitFor(() => pattern.test(log()), {
    ...opts,
    everyMs: 100,
    abort: () => (m.proc.exitCode !== null ? `it exited with ${m.proc.exitCode}:\n${m.tail()}` : undefined),
  });
  return pattern.exec(log())![1]!;
}

/** `sonicflow api`'s line once it listens, whatever the log level: its port is the first group. */
export const API_LISTENING = /API listening on \S+:(\d+) \(/;

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` every `everyMs` until it is true; throws `what` after `timeoutMs`, or what `abort` returns when it returns a string. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  opts: { timeoutMs: number; what: string; everyMs?: number; abort?: () => string | undefined },
): Promise<void> {
  const until = Date.now() + opts.timeoutMs;
  for (;;) {
    if (await check()) return;
    const why = opts.abort?.();
    if (why !== undefined) throw new Error(`${opts.what}: ${why}`);
    if (Date.now() > until) throw new Error(`${opts.what}: not done after ${Math.round(opts.timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 50));
  }
}

const escapeXml = (s: string): string => s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);

/**
 * A horizontal bar chart as a standalone SVG document: one bar per entry at `value`, with a
 * min–max whisker, the value printed at its end; the axis starts at 0 and is labelled in `unit`.
 * No dependencies; NaN or missing values are drawn as "n/a".
 */
export function barChartSvg(title: string, bars: { label: string; value: number; min: number; max: number }[], unit: string): string {
  const width = 900;
  const labelW = Math.min(380, Math.max(120, ...bars.map((b) => b.label.length * 6.6 + 16)));
  const plotX = labelW;
  const plotW = width - labelW - 110;
  const barH = 22;
  const gap = 14;
  const top = 48;
  const height = top + bars.length * (barH + gap) + 46;
  const finite = bars.flatMap((b) => [b.value, b.min, b.max]).filter((v) => Number.isFinite(v));
  const niceMax = ((): number => {
    const m = Math.max(0, ...finite);
    if (m <= 0) return 1;
    const step = 10 ** Math.floor(Math.log10(m));
    return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].find((f) => f * step >= m)! * step;
  })();
  const x = (v: number): number => plotX + (Math.max(0, v) / niceMax) * plotW;
  const num = (v: number): string => (Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: v < 10 ? 2 : 0 }) : 'n/a');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  const ticks = 5;
  const axisY = top + bars.length * (barH + gap);
  for (let i = 0; i <= ticks; i++) {
    const v = (niceMax / ticks) * i;
    const tx = x(v);
    parts.push(`<line x1="${tx.toFixed(1)}" y1="${top - 6}" x2="${tx.toFixed(1)}" y2="${axisY}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${tx.toFixed(1)}" y="${axisY + 16}" text-anchor="middle" fill="#555">${escapeXml(num(v))}</text>`);
  }
  parts.push(`<text x="${(plotX + plotW / 2).toFixed(1)}" y="${axisY + 36}" text-anchor="middle" fill="#333">${escapeXml(unit)}</text>`);
  const colours = ['#3b6ea8', '#e07b39', '#5a9e4b', '#c23b3b', '#8064a2', '#4bacc6', '#9b8b3c'];
  const maxChars = Math.floor((labelW - 16) / 6.6);
  bars.forEach((b, i) => {
    const y = top + i * (barH + gap);
    const cy = y + barH / 2;
    const label = b.label.length > maxChars ? `${b.label.slice(0, maxChars - 1)}…` : b.label;
    parts.push(`<text x="${plotX - 8}" y="${(cy + 4).toFixed(1)}" text-anchor="end"><title>${escapeXml(b.label)}</title>${escapeXml(label)}</text>`);
    if (!Number.isFinite(b.value)) {
      parts.push(`<text x="${plotX + 4}" y="${(cy + 4).toFixed(1)}" fill="#888">n/a</text>`);
      return;
    }
    parts.push(`<rect x="${plotX}" y="${y}" width="${(x(b.value) - plotX).toFixed(1)}" height="${barH}" fill="${colours[i % colours.length]}"/>`);
    let end = x(b.value);
    if (Number.isFinite(b.min) && Number.isFinite(b.max)) {
      const [x1, x2] = [x(Math.min(b.min, b.max)), x(Math.max(b.min, b.max))];
      parts.push(`<line x1="${x1.toFixed(1)}" y1="${cy}" x2="${x2.toFixed(1)}" y2="${cy}" stroke="#222" stroke-width="1.5"/>`);
      for (const wx of [x1, x2])
        parts.push(`<line x1="${wx.toFixed(1)}" y1="${y + 5}" x2="${wx.toFixed(1)}" y2="${y + barH - 5}" stroke="#222" stroke-width="1.5"/>`);
      end = Math.max(end, x2);
    }
    parts.push(`<text x="${(end + 6).toFixed(1)}" y="${(cy + 4).toFixed(1)}">${escapeXml(num(b.value))}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
