// The topology page: the graph of stages and topics from the topology itself (GET
// /v1/console/topology: the nodes `sonicflow topology describe` prints), drawn as a layered SVG —
// the chain of stages top to bottom, each with its input topic above it, its retry tiers and DLQ
// to its right, the status topic on the left — each stage showing its backlog and health live
// (the overview's server-sent events).
import { useEffect, useState } from 'preact/hooks';
import { ErrorBox, Reconnecting, html } from './ui.js';
import { follow, get } from './api.js';

const ROW = 120;
const X = { status: 20, topic: 230, stage: 230, retry: 520, dlq: 730 };
const W = { status: 150, main: 240, side: 180 };

/** Stages in data-flow order: a stage after every stage that writes its input. */
function order(graph) {
  const writer = new Map();
  for (const s of graph.stages) for (const k of s.sinks) if (k.kind === 'output') writer.set(k.topic, s.name);
  const rank = new Map();
  const rankOf = (s, seen = new Set()) => {
    if (rank.has(s.name)) return rank.get(s.name);
    if (seen.has(s.name)) return 0;
    seen.add(s.name);
    const from = graph.stages.find((x) => x.name === writer.get(s.sources[0]));
    const r = from ? rankOf(from, seen) + 1 : 0;
    rank.set(s.name, r);
    return r;
  };
  return [...graph.stages].sort((a, b) => rankOf(a) - rankOf(b));
}

/** The longest prefix ending in a dot that every name shares. */
function commonPrefix(names) {
  if (!names.length) return '';
  let p = names[0];
  for (const n of names) while (!n.startsWith(p)) p = p.slice(0, -1);
  return p.slice(0, p.lastIndexOf('.') + 1);
}

function Box({ x, y, w, h = 44, cls, title, sub, data }) {
  return html`<g class=${`node ${cls}`} ...${data}>
    <rect x=${x} y=${y} width=${w} height=${h} rx="6" />
    <text x=${x + 10} y=${y + 18} class="title">${title}</text>
    ${sub && html`<text x=${x + 10} y=${y + 35} class="sub">${sub}</text>`}
  </g>`;
}

const edge = (x1, y1, x2, y2, cls = '') => html`<line class=${`edge ${cls}`} x1=${x1} y1=${y1} x2=${x2} y2=${y2} marker-end="url(#arrow)" />`;

export function Topology() {
  const [graph, setGraph] = useState(null);
  const [snap, setSnap] = useState(null);
  const [error, setError] = useState(null);
  const [link, setLink] = useState('live');
  useEffect(() => {
    get('/v1/console/topology').then(setGraph, setError);
    const stop = new AbortController();
    follow('/v1/console/overview/events', (_n, o) => setSnap(o), stop.signal, { onStatus: setLink }).catch((e) => e.name !== 'AbortError' && setError(e));
    return () => stop.abort();
  }, []);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!graph) return html`<p class="muted">Loading the topology…</p>`;
  const stages = order(graph);
  // the deployment's prefix, common to every topic, is said once in the heading
  const prefix = commonPrefix(graph.topics.map((t) => t.name));
  const short = (name) => name.slice(prefix.length);
  const topic = new Map(graph.topics.map((t) => [t.name, t]));
  const live = new Map((snap?.stages ?? []).map((s) => [s.stage, s]));
  const inputs = new Set(stages.map((s) => s.sources[0]));
  const height = stages.length * ROW + 40;
  const statusTopic = graph.topics.find((t) => t.kind === 'status');
  const nodes = [];
  const edges = [];
  stages.forEach((s, i) => {
    const y = 20 + i * ROW;
    const t = topic.get(s.sources[0]);
    nodes.push(html`<${Box} x=${X.topic} y=${y} w=${W.main} h=${30} cls="topic" title=${short(s.sources[0])} data=${{ 'data-topic': s.sources[0] }} />`);
    nodes.push(html`<text x=${X.topic + W.main + 8} y=${y + 20} class="sub">${t ? `${t.partitions} partitions` : ''}</text>`);
    edges.push(edge(X.stage + W.main / 2, y + 30, X.stage + W.main / 2, y + 48));
    const l = live.get(s.name);
    const sub = l ? `backlog ${l.lag} · replicas ${l.replicas} · ${l.health}` : 'sampling…';
    nodes.push(
      html`<${Box}
        x=${X.stage}
        y=${y + 50}
        w=${W.main}
        cls=${`stage h-${l?.health ?? 'unknown'}`}
        title=${s.name}
        sub=${sub}
        data=${{ 'data-stage': s.name }}
      />`,
    );
    const retries = s.sinks.filter((k) => k.kind === 'retry');
    const dlq = s.sinks.find((k) => k.kind === 'dlq');
    if (retries.length) {
      nodes.push(
        html`<${Box} x=${X.retry} y=${y + 50} w=${W.side} cls="retry" title=${`retry × ${retries.length}`} sub=${l ? `waiting ${l.retryBacklog}` : ''} />`,
      );
      edges.push(edge(X.stage + W.main, y + 66, X.retry, y + 66, 'branch'));
    }
    if (dlq) {
      nodes.push(
        html`<${Box}
          x=${X.dlq}
          y=${y + 50}
          w=${W.side}
          cls=${`dlq ${l?.deadLetters ? 'has' : ''}`}
          title="dead letters"
          sub=${l ? `${l.deadLetters ?? '…'} in ${dlq.topic.split('.').pop()}` : ''}
        />`,
      );
      edges.push(edge(retries.length ? X.retry + W.side : X.stage + W.main, y + 78, X.dlq, y + 78, 'branch'));
    }
    if (statusTopic && s.sinks.some((k) => k.kind === 'status')) edges.push(edge(X.stage, y + 72, X.status + W.status, y + 72, 'status'));
    // outputs read by the next stage join its input; the others end here
    for (const k of s.sinks.filter((k) => k.kind === 'output')) {
      if (inputs.has(k.topic)) {
        const j = stages.findIndex((x) => x.sources[0] === k.topic);
        if (j === i + 1) edges.push(edge(X.stage + W.main / 2, y + 94, X.stage + W.main / 2, 20 + j * ROW));
        else edges.push(edge(X.stage + W.main - 20, y + 94, X.topic + W.main - 20, 20 + j * ROW, 'skip'));
      } else nodes.push(html`<${Box} x=${X.stage + 40} y=${y + 100} w=${W.main - 80} h=${18} cls="topic out" title=${short(k.topic)} />`);
    }
  });
  return html`<h1>Topology <span class="muted">${graph.name}${prefix ? ` · topics ${prefix}…` : ''}</span> <${Reconnecting} status=${link} /></h1>
    <p class="muted">From the topology itself (what <code>sonicflow topology describe</code> prints); backlog, replicas and health live.</p>
    <svg class="topology" width="940" height=${height} viewBox=${`0 0 940 ${height}`} role="img" aria-label="topology graph">
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
          <path d="M 0 0 L 10 5 L 0 10 z" />
        </marker>
      </defs>
      ${statusTopic && html`<${Box} x=${X.status} y=${20} w=${W.status} h=${height - 40} cls="topic status" title=${short(statusTopic.name)} sub="status events" />`}
      ${edges} ${nodes}
    </svg>`;
}
