/**
 * Before/after of a change to sonicflow on the five-hop chain of `npm run bench`: the same
 * measuring code (bench/baselines/sonicflow.ts, from this tree) runs the stages of two source
 * trees, interleaved run by run (the order alternates), so machine drift hits both alike.
 *
 *   npm run bench:ab -- --before <rev> [--after <rev>] [--runs 5] [--records 10000]
 *                       [--variants eos-batched,eos-default] [--client kafkajs|platformatic]
 *                       [--name <results name>]
 *
 * `--before` and `--after` are git revisions, checked out as detached worktrees in a temporary
 * directory that share this tree's node_modules; without `--after` the after side is this working
 * tree as it is (uncommitted changes included). Prints records/s and hop latency p50/p99 for each
 * side, median (min–max), and the after/before throughput ratio, median (worst–best pairing);
 * writes bench/results/ab-<name>.json.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { run as sonicflow, type HopBaselineResult, type SonicflowVariant } from './baselines/sonicflow.js';
import { fmt, saveResults, summarise, table, type Summary } from './lib.js';

const USAGE = `usage: npm run bench:ab -- --before <rev> [--after <rev>] [--runs 5] [--records 10000] [--variants eos-batched,eos-default] [--client kafkajs|platformatic] [--name <name>]

Runs the five-hop chain of \`npm run bench\` on two revisions of sonicflow, interleaved, and prints
records/s and hop latency for each with the after/before ratio. Without --after the after side is
the working tree as it is. Needs the local stack (npm run stack:up) and this tree's node_modules.`;

const { values: args } = parseArgs({
  options: {
    before: { type: 'string' },
    after: { type: 'string' },
    runs: { type: 'string', default: '5' },
    records: { type: 'string', default: '10000' },
    partitions: { type: 'string', default: '4' },
    variants: { type: 'string', default: 'eos-batched,eos-default' },
    client: { type: 'string', default: 'kafkajs' },
    name: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help || !args.before) {
  console.log(USAGE);
  process.exit(args.help ? 0 : 2);
}

const ROOT = join(import.meta.dirname, '..');
const RUNS = Number(args.runs);
const N = Number(args.records);
const P = Number(args.partitions);
const variants = args.variants.split(',') as SonicflowVariant[];
// the stage runtime's Kafka client on both sides (SONIC_KAFKA_CLIENT)
const client = args.client === 'platformatic' ? 'platformatic' : 'kafkajs';
const git = (...a: string[]): string => execFileSync('git', ['-C', ROOT, ...a], { encoding: 'utf8' }).trim();
const started = Date.now();
const log = (s: string): boolean => process.stderr.write(`[ab ${((Date.now() - started) / 1000).toFixed(0)}s] ${s}\n`);

interface Side {
  name: 'before' | 'after';
  label: string;
  root: string;
  worktree?: string;
}

const scratch = mkdtempSync(join(tmpdir(), 'sonicflow-ab-'));
function checkout(name: 'before' | 'after', rev: string): Side {
  const sha = git('rev-parse', '--short', `${rev}^{commit}`);
  const dir = join(scratch, name);
  git('worktree', 'add', '--detach', dir, sha);
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return { name, label: `${rev} (${sha})`, root: dir, worktree: dir };
}

const sides: Side[] = [];
try {
  sides.push(checkout('before', args.before));
  if (args.after) sides.push(checkout('after', args.after));
  else {
    const dirty = git('status', '--porcelain', '--', 'src', 'bin', 'bench/fixtures') !== '';
    sides.push({ name: 'after', label: `working tree (${git('rev-parse', '--short', 'HEAD')}${dirty ? ' + uncommitted changes' : ''})`, root: ROOT });
  }

  const results: Record<string, Record<string, HopBaselineResult[]>> = {};
  for (let i = 0; i < RUNS; i++) {
    for (const variant of variants) {
      // alternate the order, so neither side always runs on a warmer (or more tired) machine
      for (const side of i % 2 === 0 ? sides : [...sides].reverse()) {
        log(`${variant}, ${side.name}: run ${i + 1}/${RUNS}`);
        const r = await sonicflow({ records: N, partitions: P, variant, client, root: side.root });
        ((results[variant] ??= {})[side.name] ??= []).push(r);
        log(`  ${r.recordsPerSecond.toFixed(0)} records/s, hop p50 ${r.hopLatencyMs.p50.toFixed(1)} ms, p99 ${r.hopLatencyMs.p99.toFixed(1)} ms`);
      }
    }
  }

  const summary: Record<string, Record<string, { recordsPerSecond: Summary; p50: Summary; p99: Summary }>> = {};
  const rows: string[][] = [];
  for (const variant of variants) {
    for (const side of sides) {
      const rs = results[variant]![side.name]!;
      const s = {
        recordsPerSecond: summarise(rs.map((r) => r.recordsPerSecond)),
        p50: summarise(rs.map((r) => r.hopLatencyMs.p50)),
        p99: summarise(rs.map((r) => r.hopLatencyMs.p99)),
      };
      (summary[variant] ??= {})[side.name] = s;
      rows.push([variant, `${side.name}: ${side.label}`, fmt(s.recordsPerSecond), fmt(s.p50, 1), fmt(s.p99, 1)]);
    }
  }
  const ratios: Record<string, { median: number; min: number; max: number }> = {};
  for (const variant of variants) {
    const b = summary[variant]!.before!.recordsPerSecond;
    const a = summary[variant]!.after!.recordsPerSecond;
    ratios[variant] = { median: a.median / b.median, min: a.min / b.max, max: a.max / b.min };
  }
  console.log(`five-hop chain, ${N} records of ~1 KB, ${P} partitions, median (min–max) of ${RUNS} interleaved runs`);
  console.log(table(['variant', 'side', 'records/s', 'hop p50, ms', 'hop p99, ms'], rows));
  console.log();
  console.log(
    table(
      ['variant', 'after / before records/s, median (worst–best)'],
      variants.map((v) => [v, `${ratios[v]!.median.toFixed(2)} (${ratios[v]!.min.toFixed(2)}–${ratios[v]!.max.toFixed(2)})`]),
    ),
  );
  const name = args.name ?? `ab-${sides[0]!.label.match(/\((\w+)\)/)?.[1] ?? 'before'}`;
  const path = saveResults(name.startsWith('ab-') ? name : `ab-${name}`, {
    records: N,
    partitions: P,
    runs: RUNS,
    sides: sides.map((s) => ({ name: s.name, label: s.label })),
    summary,
    ratios,
    raw: results,
  });
  console.log(`\nsaved ${path} in ${((Date.now() - started) / 60_000).toFixed(1)} min`);
} finally {
  for (const s of sides) if (s.worktree) git('worktree', 'remove', '--force', s.worktree);
  rmSync(scratch, { recursive: true, force: true });
}
process.exit(0);
