/**
 * The stages' runtime figures as the console's overview shows them, read from the stage
 * processes' Prometheus metrics (src/core/metrics.ts): records handled per second, handler time
 * p50/p99, records in flight, retries and dead letters sent per second. The expositions come from
 * the endpoints in SONIC_CONSOLE_METRICS_URLS: each stage process's /metrics, or a Prometheus
 * server's /federate that already scrapes them (one URL for every replica of every stage, however
 * many there are). Counters and histograms are summed over the processes; rates and quantiles are
 * taken over the change between two readings, so a process that restarted (its counters reset)
 * counts from zero again. See docs/console.md ("Where the figures come from").
 */

/** One stage's series, summed over every process of one reading. */
export interface StageSeries {
  /** sonicflow_records_total by outcome (ok, retry, dlq, dropped). */
  records: Record<string, number>;
  /** sonicflow_handler_duration_seconds cumulative buckets by upper bound (`+Inf` included). */
  buckets: Map<number, number>;
  /** sonicflow_handler_duration_seconds_sum. */
  handlerSeconds: number;
  inFlight: number;
}

/** A reading of every endpoint: the series per stage, and how many endpoints answered. */
export interface MetricsReading {
  at: number;
  answered: number;
  targets: number;
  stages: Map<string, StageSeries>;
  /** The expositions that answered, as read (for the dispatchers' figures, src/app/scaling.ts). */
  texts: string[];
}

export interface StageRuntime {
  /** Records handled per second (every outcome); null without two readings. */
  recordsPerSecond: number | null;
  retriesPerSecond: number | null;
  deadLettersPerSecond: number | null;
  /** Handler time quantiles over the records handled between the readings, seconds; null when none was. */
  handlerP50: number | null;
  handlerP99: number | null;
  /** Mean handler time over the same records (what the autoscaler measures), seconds. */
  meanHandlerSeconds: number | null;
  inFlight: number;
}

const LINE =
  /^(sonicflow_records_total|sonicflow_handler_duration_seconds_bucket|sonicflow_handler_duration_seconds_sum|sonicflow_in_flight_records)\{([^}]*)\} (\S+)/;

function labelsOf(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

/** Adds the stage series of one Prometheus text exposition to `into`. */
export function parseExposition(text: string, into: Map<string, StageSeries>): void {
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = labelsOf(m[2]!);
    const value = Number(m[3]);
    if (!labels.stage || !Number.isFinite(value)) continue;
    let s = into.get(labels.stage);
    if (!s) into.set(labels.stage, (s = { records: {}, buckets: new Map(), handlerSeconds: 0, inFlight: 0 }));
    if (m[1] === 'sonicflow_records_total') s.records[labels.outcome ?? ''] = (s.records[labels.outcome ?? ''] ?? 0) + value;
    else if (m[1] === 'sonicflow_in_flight_records') s.inFlight += value;
    else if (m[1] === 'sonicflow_handler_duration_seconds_sum') s.handlerSeconds += value;
    else {
      const le = labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(labels.le);
      if (!Number.isNaN(le)) s.buckets.set(le, (s.buckets.get(le) ?? 0) + value);
    }
  }
}

/** Fetches every endpoint (each within `timeoutMs`) and sums what answered. */
export async function readMetrics(urls: readonly string[], timeoutMs = 2000): Promise<MetricsReading> {
  const texts = await Promise.all(
    urls.map(async (url) => {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'text/plain' } });
        return res.ok ? await res.text() : undefined;
      } catch {
        return undefined;
      }
    }),
  );
  const stages = new Map<string, StageSeries>();
  const answered = texts.filter((t) => t !== undefined);
  for (const t of answered) parseExposition(t, stages);
  return { at: Date.now(), answered: answered.length, targets: urls.length, stages, texts: answered };
}

/**
 * The `q` quantile of the observations in cumulative `buckets` (Prometheus' histogram_quantile:
 * linear within the bucket; the highest finite bound when it falls in +Inf); null without any.
 */
export function bucketQuantile(q: number, buckets: Map<number, number>): number | null {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Number.POSITIVE_INFINITY) ?? (bounds.length ? buckets.get(bounds.at(-1)!)! : 0);
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of bounds) {
    const count = buckets.get(b)!;
    if (count >= rank) {
      if (!Number.isFinite(b)) return lower;
      const inBucket = count - below;
      return inBucket > 0 ? lower + ((b - lower) * (rank - below)) / inBucket : b;
    }
    lower = b;
    below = count;
  }
  return lower;
}

/** Counter change between readings; a counter below its last reading (a process restarted) counts from zero. */
const delta = (now: number, before: number): number => (now < before ? now : now - before);

/**
 * A stage's figures: rates from the change since `previous` over `seconds` (null without it), the
 * handler time from the records handled since `windowStart` (an older reading, for steadier
 * quantiles; undefined: since the processes started).
 */
export function stageRuntime(now: StageSeries | undefined, previous: StageSeries | undefined, seconds: number | null, windowStart?: StageSeries): StageRuntime {
  if (!now)
    return {
      recordsPerSecond: null,
      retriesPerSecond: null,
      deadLettersPerSecond: null,
      handlerP50: null,
      handlerP99: null,
      meanHandlerSeconds: null,
      inFlight: 0,
    };
  const total = (s: StageSeries): number => Object.values(s.records).reduce((a, v) => a + v, 0);
  // fewer records in all than before: a process restarted, its counters count from zero
  const since = previous && total(now) >= total(previous) ? previous : undefined;
  const rate = (outcomes: string[]): number | null =>
    seconds === null || !previous ? null : outcomes.reduce((a, o) => a + delta(now.records[o] ?? 0, since?.records[o] ?? 0), 0) / seconds;
  const inf = (s: StageSeries): number => s.buckets.get(Number.POSITIVE_INFINITY) ?? 0;
  const from = windowStart && inf(now) >= inf(windowStart) ? windowStart : undefined;
  const window = new Map<number, number>();
  for (const [le, c] of now.buckets) window.set(le, from ? Math.max(0, c - (from.buckets.get(le) ?? 0)) : c);
  const count = inf(now) - (from ? inf(from) : 0);
  const sum = now.handlerSeconds - (from?.handlerSeconds ?? 0);
  return {
    recordsPerSecond: rate(Object.keys(now.records)),
    retriesPerSecond: rate(['retry']),
    deadLettersPerSecond: rate(['dlq']),
    handlerP50: bucketQuantile(0.5, window),
    handlerP99: bucketQuantile(0.99, window),
    meanHandlerSeconds: count > 0 && sum >= 0 ? sum / count : null,
    inFlight: now.inFlight,
  };
}
