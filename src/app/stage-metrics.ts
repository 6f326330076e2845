/**
 * The stages' runtime figures as the console's overview shows them, read from the stage
 * processes' Prometheus metrics (src/core/metrics.ts): records handled per second, handler time
 * p50/p99, records in flight, retries and dead letters sent per second. The expositions come from
 * the endpoints in SONIC_CONSOLE_METRICS_URLS: each stage process's /metrics, or a Prometheus
 * server's /federate that already scrapes them (one URL for every replica of every stage, however
 * many there are). Rates and quantiles are taken over the change between two readings of each
 * series (endpoint and full label set) and then summed over the processes: a series below its last
 * reading (a process restarted) counts from zero, one that vanished (a replica gone) adds nothing.
 * See docs/console.md ("Where the figures come from").
 */

/** One counter series (a records count, a histogram bucket or sum) of one endpoint. */
export interface CounterSeries {
  endpoint: string;
  kind: 'records' | 'bucket' | 'sum';
  /** The `outcome` of a records count, the upper bound of a bucket. */
  outcome?: string;
  le?: number;
  value: number;
  /** The series of one process's metric (its labels but `outcome` and `le`): they restart together. */
  group: string;
}

/** One stage's series, summed over every process of one reading. */
export interface StageSeries {
  /** sonicflow_records_total by outcome (ok, retry, dlq, dropped). */
  records: Record<string, number>;
  /** sonicflow_handler_duration_seconds cumulative buckets by upper bound (`+Inf` included). */
  buckets: Map<number, number>;
  /** sonicflow_handler_duration_seconds_sum. */
  handlerSeconds: number;
  inFlight: number;
  /** Every counter series behind the sums, by endpoint, metric and full label set: rates difference these. */
  counters: Map<string, CounterSeries>;
  /** The endpoints this stage's series came from. */
  endpoints: Set<string>;
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

/** Adds the stage series of one Prometheus text exposition, read from `endpoint`, to `into`. */
export function parseExposition(text: string, into: Map<string, StageSeries>, endpoint = ''): void {
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = labelsOf(m[2]!);
    const value = Number(m[3]);
    if (!labels.stage || !Number.isFinite(value)) continue;
    let s = into.get(labels.stage);
    if (!s) into.set(labels.stage, (s = { records: {}, buckets: new Map(), handlerSeconds: 0, inFlight: 0, counters: new Map(), endpoints: new Set() }));
    s.endpoints.add(endpoint);
    let series: Omit<CounterSeries, 'endpoint' | 'value' | 'group'>;
    if (m[1] === 'sonicflow_in_flight_records') {
      s.inFlight += value;
      continue;
    } else if (m[1] === 'sonicflow_records_total') {
      s.records[labels.outcome ?? ''] = (s.records[labels.outcome ?? ''] ?? 0) + value;
      series = { kind: 'records', outcome: labels.outcome ?? '' };
    } else if (m[1] === 'sonicflow_handler_duration_seconds_sum') {
      s.handlerSeconds += value;
      series = { kind: 'sum' };
    } else {
      const le = labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(labels.le);
      if (Number.isNaN(le)) continue;
      s.buckets.set(le, (s.buckets.get(le) ?? 0) + value);
      series = { kind: 'bucket', le };
    }
    const id = (omit: string[]): string =>
      Object.entries(labels)
        .filter(([k]) => !omit.includes(k))
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
    const key = `${endpoint}\n${m[1]}{${id([])}}`;
    const group = `${endpoint}\n${series.kind === 'records' ? 'records' : 'handler'}{${id(['outcome', 'le'])}}`;
    const known = s.counters.get(key);
    if (known) known.value += value;
    else s.counters.set(key, { ...series, endpoint, value, group });
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
  texts.forEach((t, i) => t !== undefined && parseExposition(t, stages, urls[i]));
  const answered = texts.filter((t) => t !== undefined);
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

/**
 * What the counters of `now` grew by since `before` (everything since the processes started
 * without it), taken per series and then summed: a series below its last reading (its process
 * restarted) counts from zero, and so do the other series of its process and metric; a series that vanished (a replica gone) adds nothing; a new series
 * of an endpoint read before (a new replica behind a /federate, a first outcome) counts from zero,
 * one of an endpoint that did not answer before has no baseline and adds nothing yet.
 */
export function increase(now: StageSeries, before: StageSeries | undefined): Pick<StageSeries, 'records' | 'buckets' | 'handlerSeconds'> {
  const out = { records: {} as Record<string, number>, buckets: new Map<number, number>(), handlerSeconds: 0 };
  const restarted = new Set<string>();
  for (const [key, c] of now.counters) if (c.value < (before?.counters.get(key)?.value ?? 0)) restarted.add(c.group);
  for (const [key, c] of now.counters) {
    const was = before?.counters.get(key)?.value;
    const d = !before || restarted.has(c.group) ? c.value : was === undefined ? (before.endpoints.has(c.endpoint) ? c.value : 0) : c.value - was;
    if (c.kind === 'records') out.records[c.outcome!] = (out.records[c.outcome!] ?? 0) + d;
    else if (c.kind === 'sum') out.handlerSeconds += d;
    else out.buckets.set(c.le!, (out.buckets.get(c.le!) ?? 0) + d);
  }
  for (const le of now.buckets.keys()) if (!out.buckets.has(le)) out.buckets.set(le, 0);
  return out;
}

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
  const handled = previous ? increase(now, previous).records : {};
  const rate = (outcomes: string[]): number | null => (seconds === null || !previous ? null : outcomes.reduce((a, o) => a + (handled[o] ?? 0), 0) / seconds);
  const w = increase(now, windowStart);
  const window = w.buckets;
  const count = window.get(Number.POSITIVE_INFINITY) ?? 0;
  const sum = w.handlerSeconds;
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
