// The overview: every stage's backlog, rates, handler time, in flight, retries, dead letters,
// replicas and what the autoscaler's rule wants; the tasks of the last hour by state; and a live
// throughput chart (uPlot). One server-sent event per sample (no polling).
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { ErrorBox, Reconnecting, fmtMs, html } from './ui.js';
import { follow } from './api.js';

const STATES = ['QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED', 'FAILED'];
const COLORS = ['#2f6fde', '#1e8e3e', '#c0392b', '#8e44ad', '#d35400', '#16a085', '#7f8c8d', '#b7950b'];
/** Points kept in the chart (at one per sample). */
const KEEP = 300;

const num = (n, digits = 1) => (n == null ? '–' : Number(n).toFixed(digits));
const secs = (s) => (s == null ? '–' : fmtMs(s * 1000));

/** The live chart: records/s per stage (metrics), or offsets committed/s (Kafka) when no metrics answer. */
function Throughput({ series }) {
  const box = useRef(null);
  const plot = useRef(null);
  const names = series.names.join(',');
  useEffect(() => {
    const opts = {
      width: Math.min(1200, box.current.clientWidth || 1000),
      height: 220,
      scales: { x: { time: true } },
      axes: [{}, { label: series.unit }],
      series: [{}, ...series.names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
    };
    plot.current = new uPlot(opts, series.data, box.current);
    return () => plot.current?.destroy();
  }, [names, series.unit]);
  useEffect(() => plot.current?.setData(series.data), [series]);
  return html`<div class="chart" ref=${box}></div>`;
}

const sampled = (o) =>
  `Sampled ${new Date(o.at).toLocaleTimeString()}${o.intervalSeconds ? ` · rates over ${num(o.intervalSeconds)} s` : ''} · ` +
  `metrics endpoints ${o.metrics.answered}/${o.metrics.targets} answering` +
  (o.metrics.targets === 0 ? ' (SONIC_CONSOLE_METRICS_URLS unset: Kafka figures only)' : '');

function StageRow({ s }) {
  const w = s.wanted;
  return html`<tr data-stage=${s.stage} class=${`h-${s.health}`}>
    <td><b>${s.stage}</b></td>
    <td class="num lag">${s.lag}</td>
    <td class="num">${num(s.recordsPerSecond ?? s.outRate)}</td>
    <td class="num">${secs(s.handlerP50)} / ${secs(s.handlerP99)}</td>
    <td class="num">${s.inFlight}</td>
    <td class="num">${s.retryBacklog}${s.retriesPerSecond ? html` <span class="muted">(${num(s.retriesPerSecond)}/s)</span>` : ''}</td>
    <td class="num dead">${s.deadLetters ?? '…'}</td>
    <td class="num replicas">${s.replicas}</td>
    <td class="wanted"><b>${w.desired ?? '?'}</b> <span class="muted">${w.rule}: ${w.reason}</span></td>
    <td><span class=${`health h-${s.health}`}>${s.health}</span></td>
  </tr>`;
}

export function Overview() {
  const [o, setO] = useState(null);
  const [error, setError] = useState(null);
  const [series, setSeries] = useState(null);
  const [live, setLive] = useState('live');
  useEffect(() => {
    const stop = new AbortController();
    let data = null;
    follow(
      '/v1/console/overview/events',
      (_name, snap) => {
        setO(snap);
        const names = snap.stages.map((s) => s.stage);
        const metrics = snap.metrics.answered > 0;
        if (!data || data.names.join() !== names.join()) data = { names, cols: [[], ...names.map(() => [])] };
        data.cols[0].push(Date.parse(snap.at) / 1000);
        snap.stages.forEach((s, i) => data.cols[i + 1].push(metrics ? s.recordsPerSecond : s.outRate));
        if (data.cols[0].length > KEEP) data.cols = data.cols.map((c) => c.slice(-KEEP));
        setSeries({ names, unit: metrics ? 'records/s' : 'offsets/s', data: data.cols.map((c) => c.slice()) });
      },
      stop.signal,
      { onStatus: setLive },
    ).catch((e) => e.name !== 'AbortError' && setError(e));
    return () => stop.abort();
  }, []);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!o) return html`<p class="muted">Sampling the stages…</p>`;
  const t = o.tasksLastHour;
  return html`<h1>Overview <${Reconnecting} status=${live} /></h1>
    <p class="muted sampled">${sampled(o)}</p>
    <section class="task-states">
      <h2>Tasks created in the last hour${t.complete ? '' : ' (first 100,000)'}</h2>
      ${STATES.map((st) => html`<span class=${`count s-${st}`} data-state=${st}><b>${t.counts[st] ?? 0}</b> ${st}</span>`)}
    </section>
    <section>
      <h2>Throughput (${series?.unit})</h2>
      ${series && html`<${Throughput} series=${series} />`}
    </section>
    <section>
      <h2>Stages</h2>
      <table class="stages">
        <thead>
          <tr>
            <th>stage</th>
            <th>backlog</th>
            <th>records/s</th>
            <th>handler p50 / p99</th>
            <th>in flight</th>
            <th>retrying</th>
            <th>dead letters</th>
            <th>replicas</th>
            <th>autoscaler wants</th>
            <th>health</th>
          </tr>
        </thead>
        <tbody>
          ${o.stages.map((s) => html`<${StageRow} key=${s.stage} s=${s} />`)}
        </tbody>
      </table>
    </section>`;
}
