// Tasks: the searchable, paginated list, and a task's page (stage timeline, inputs, video).
import { useEffect, useState } from 'preact/hooks';
import { blobUrl, follow, get } from './api.js';
import { ErrorBox, Link, Reconnecting, fmtMs, fmtTime, html } from './ui.js';

const STATES = ['', 'QUEUED', 'VALIDATING', 'PREPROCESSING', 'INFERRING', 'ENCODING', 'PUBLISHING', 'SUCCEEDED', 'FAILED'];

export function TaskList({ me }) {
  const operator = me.role !== 'tenant';
  const [filters, setFilters] = useState({ state: '', tenant: '', code: '', task_id: '', since: '' });
  const [cursors, setCursors] = useState([undefined]);
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => {
    const q = new URLSearchParams({ limit: '20' });
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, k === 'since' ? new Date(v).toISOString() : v);
    if (cursor) q.set('cursor', cursor);
    get(`/v1/console/tasks?${q}`).then((p) => (setPage(p), setError(null)), setError);
  }, [filters, cursor]);
  const set = (k) => (e) => (setCursors([undefined]), setFilters({ ...filters, [k]: e.target.value }));
  return html`<h1>Tasks</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label
        >State
        <select name="state" value=${filters.state} onChange=${set('state')}>
          ${STATES.map((s) => html`<option value=${s}>${s || 'any'}</option>`)}
        </select></label
      >
      ${operator ? html`<label>Tenant <input name="tenant" value=${filters.tenant} onChange=${set('tenant')} placeholder="all" /></label>` : null}
      <label>Error code <input name="code" value=${filters.code} onChange=${set('code')} placeholder="any" /></label>
      <label>Task id <input name="task_id" value=${filters.task_id} onChange=${set('task_id')} /></label>
      <label>Created since <input type="datetime-local" name="since" value=${filters.since} onChange=${set('since')} /></label>
    </form>
    <${ErrorBox} error=${error} />
    <table class="tasks">
      <thead>
        <tr>
          <th>Task</th>
          <th>State</th>
          ${operator ? html`<th>Tenant</th>` : null}
          <th>Stage</th>
          <th>Attempt</th>
          <th>Error</th>
          <th>Created</th>
          <th>Updated</th>
        </tr>
      </thead>
      <tbody>
        ${(page?.tasks ?? []).map(
          (t) => html`<tr data-task=${t.task_id}>
            <td><${Link} href=${t.links.page}><code>${t.task_id.slice(0, 8)}</code></${Link}></td>
            <td><span class=${`state s-${t.state}`}>${t.state}</span></td>
            ${operator ? html`<td>${t.tenant_id ?? '–'}</td>` : null}
            <td>${t.stage ?? '–'}</td><td>${t.attempt}</td><td>${t.error?.code ?? ''}</td>
            <td>${fmtTime(t.created_at)}</td><td>${fmtTime(t.updated_at)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${page && page.tasks.length === 0 ? html`<p class="muted">No tasks.</p>` : null}
    <div class="pager">
      <button disabled=${cursors.length <= 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous</button>
      <button disabled=${!page?.next_cursor} onClick=${() => setCursors([...cursors, page.next_cursor])}>Next</button>
    </div>`;
}

/** The timeline's rows: each state entered, with how long it lasted until the next one. */
function Timeline({ entries }) {
  let runs = 0;
  return html`<table class="timeline">
    <thead>
      <tr>
        <th>Run</th>
        <th>State entered</th>
        <th>Written by</th>
        <th>Attempt</th>
        <th>At</th>
        <th>Until next</th>
        <th>Error</th>
      </tr>
    </thead>
    <tbody>
      ${entries.map((e, i) => {
        const prev = entries[i - 1];
        // a FAILED task that moves again was replayed from the dead letters: a new run, whose first
        // row is the QUEUED event the replay wrote (with who replayed) when the replay wrote one
        if (i === 0 || prev.state === 'FAILED' || e.replayed_by) runs++;
        const next = entries[i + 1];
        const took = next ? new Date(next.at) - new Date(e.at) : null;
        return html`<tr class=${e.error ? 'err' : ''} data-run=${runs}>
          <td>
            ${runs}${runs > 1 && (prev?.state === 'FAILED' || e.replayed_by) ? ' (replay)' : ''}
            ${e.replayed_by ? html`<span class="replayed-by muted">replayed by <code>${e.replayed_by}</code> at ${fmtTime(e.at)}</span>` : null}
          </td>
          <td><span class=${`state s-${e.state}`}>${e.state}</span></td>
          <td>${e.replayed_by ? 'dlq replay' : (e.stage ?? 'api')}</td>
          <td>${e.attempt}</td>
          <td>${fmtTime(e.at)}</td>
          <td>${fmtMs(took)}</td>
          <td>${e.error ? html`<b>${e.error.code}</b> ${e.error.retryable ? '(retrying) ' : ''}${e.error.message}` : ''}</td>
        </tr>`;
      })}
    </tbody>
  </table>`;
}

function Media({ url, kind }) {
  const [src, setSrc] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!url) return undefined;
    let made;
    blobUrl(url).then((u) => setSrc((made = u)), setError);
    return () => made && URL.revokeObjectURL(made);
  }, [url]);
  if (!url) return html`<p class="muted">No ${kind} stored.</p>`;
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!src) return html`<p class="muted">Loading ${kind}…</p>`;
  if (kind === 'image') return html`<img class="input" src=${src} alt="input portrait" />`;
  if (kind === 'audio') return html`<audio controls src=${src}></audio>`;
  return html`<video id="result" controls preload="auto" src=${src}></video>`;
}

export function TaskPage({ id }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  const [live, setLive] = useState('live');
  useEffect(() => {
    get(`/v1/console/tasks/${id}`).then((d) => (setData(d), setError(null)), setError);
  }, [id, tick]);
  // live: every status change reloads the page's data (one stream, no polling)
  useEffect(() => {
    const stop = new AbortController();
    // a finished task's stream ends for good; any other end is a lost connection, reconnected
    const done = (_n, task) => task.state === 'SUCCEEDED' || task.state === 'FAILED';
    follow(`/v1/console/tasks/${id}/events`, () => setTick((t) => t + 1), stop.signal, { onStatus: setLive, done }).catch(
      (e) => e.name !== 'AbortError' && setError(e),
    );
    return () => stop.abort();
  }, [id]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<p class="muted">Loading…</p>`;
  const t = data.task;
  return html`<h1>Task <code>${t.task_id}</code> <${Reconnecting} status=${live} /></h1>
    <p class="summary">
      <span class=${`state s-${t.state}`} id="task-state">${t.state}</span> ${t.tenant_id ? html` · tenant ${t.tenant_id}` : null}
      ${` · created ${fmtTime(t.created_at)}`} · updated ${fmtTime(t.updated_at)}
      ${t.progress != null && t.state !== 'SUCCEEDED' ? html` · ${Math.round(t.progress * 100)} %` : null}
    </p>
    ${t.error ? html`<p class="error"><b>${t.error.code}</b> ${t.error.message}</p>` : null}
    <section class="media">
      <div>
        <h2>Result</h2>
        ${t.links.video ? html`<${Media} url=${t.links.video} kind="video" />` : html`<p class="muted">The video exists once the task has SUCCEEDED.</p>`}
      </div>
      <div>
        <h2>Portrait</h2>
        <${Media} url=${data.inputs.image} kind="image" />
      </div>
      <div>
        <h2>Recording</h2>
        <${Media} url=${data.inputs.audio} kind="audio" />
      </div>
    </section>
    <h2>Stage timeline</h2>
    <${Timeline} entries=${data.timeline} />`;
}
