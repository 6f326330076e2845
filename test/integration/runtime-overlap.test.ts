import { describe, expect, it } from 'vitest';
import { countKeys, deployChain, produce, readAll, startStage, waitUntil } from '../helpers/chain.js';
import { testContext } from '../helpers/infra.js';
import { waitConsumedToEnd } from '../helpers/wait.js';

interface HandlerTimes {
  task_id: string;
  partition: number;
  start_ms: number;
  end_ms: number;
}

/** The "handler times" lines the chain fixture logs with CHAIN_LOG_TIMES=1. */
function handlerTimes(logs: string): HandlerTimes[] {
  return logs
    .split('\n')
    .filter((l) => l.includes('"msg":"handler times"'))
    .map((l) => JSON.parse(l) as HandlerTimes);
}

/** When each transaction ran, from the runner's "batch committed" lines (debug): it ended at the line's time. */
function commitTimes(logs: string): { start_ms: number; end_ms: number }[] {
  return logs
    .split('\n')
    .filter((l) => l.includes('"msg":"batch committed"'))
    .map((l) => JSON.parse(l) as { time: number; transaction_ms: number })
    .map((c) => ({ start_ms: c.time - c.transaction_ms, end_ms: c.time }));
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

describe('handlers overlap commits (real broker)', () => {
  it('concurrency 1 over 4 partitions, one record per transaction: the next handler starts while the last batch commits', async () => {
    const chain = await deployChain();
    // like infer: one handler at a time, one record per transaction
    const stage = startStage(chain, 'first', {
      CHAIN_DELAY_MS: '40',
      CHAIN_LOG_TIMES: '1',
      // the runner's "batch committed" lines (debug): when each transaction ran
      SONIC_LOG_LEVEL: 'debug',
      SONIC_CONCURRENCY: '1',
      SONIC_BATCH_MAX_RECORDS: '1',
    });
    await stage.waitForLog(/"msg":"partitions assigned"/);
    const keys = await produce(chain, 60);
    await waitUntil(
      () => handlerTimes(stage.logs()).length >= 60,
      90_000,
      () => `60 handlers, ${handlerTimes(stage.logs()).length} so far`,
    );
    await waitConsumedToEnd(testContext(), chain.topology, ['first']);
    stage.proc.kill('SIGTERM');
    expect(await stage.exited).toBe(0);

    // every record came out exactly once, and was handled once
    const counts = countKeys(await readAll(chain.topic('mid')));
    expect({
      missing: keys.filter((k) => !counts.has(k)).length,
      doubled: [...counts.values()].filter((n) => n > 1).length,
      extra: counts.size - keys.length,
    }).toEqual({
      missing: 0,
      doubled: 0,
      extra: 0,
    });
    const times = handlerTimes(stage.logs()).sort((a, b) => a.start_ms - b.start_ms);
    expect(times).toHaveLength(60);
    expect(new Set(times.map((t) => t.task_id)).size).toBe(60);
    // the records came through all four partitions
    expect(new Set(times.map((t) => t.partition)).size).toBe(4);

    // concurrency 1: never two handlers at once
    const gaps = times.slice(1).map((t, i) => t.start_ms - times[i]!.end_ms);
    expect(Math.min(...gaps)).toBeGreaterThan(-1);
    const sorted = [...gaps].sort((a, b) => a - b);
    const median = quantile(sorted, 0.5);
    console.log(
      `handler gaps over ${gaps.length}: median ${median.toFixed(2)} ms, p90 ${quantile(sorted, 0.9).toFixed(2)} ms, ` +
        `mean ${(gaps.reduce((s, g) => s + g, 0) / gaps.length).toFixed(2)} ms, max ${sorted.at(-1)!.toFixed(2)} ms; ` +
        `${times.at(-1)!.end_ms - times[0]!.start_ms} ms for 60 × 40 ms`,
    );
    // before, the handler slot was held through each commit, so the next handler began only once
    // the last commit had ended; now it begins while that commit runs. Judged against the commits'
    // own times (not a clock budget, which a busy machine stretches): for most handlers, a
    // transaction that began after the previous handler ended is still running when it starts.
    const commits = commitTimes(stage.logs());
    expect(commits.length).toBeGreaterThanOrEqual(60);
    const overlapping = times
      .slice(1)
      .filter((t, i) => commits.some((c) => c.start_ms >= times[i]!.end_ms - 1 && c.start_ms <= t.start_ms && c.end_ms > t.start_ms)).length;
    console.log(`${overlapping} of ${gaps.length} handlers started while the previous record's transaction ran`);
    expect(overlapping).toBeGreaterThan(gaps.length / 2);
  }, 180_000);
});
