// Dead letters: per stage, grouped by error code, each with its headers and original record;
// replay one, by code or all, with a dry-run preview first. Only admin keys may replay. Each letter
// shows its task's state now: a replay leaves out tasks that are not FAILED (succeeded since, or
// running again after an earlier replay) unless the preview is asked to include them.
import { useEffect, useState } from 'preact/hooks';
import { get, post } from './api.js';
import { ErrorBox, Link, fmtTime, html } from './ui.js';

function Letter({ l, canAct, onReplay }) {
  return html`<details class="letter" data-task=${l.task_id}>
    <summary>
      <code>${l.position}</code> · ${l.task_id ? html`<${Link} href=${`/console/tasks/${l.task_id}`}>${l.task_id.slice(0, 8)}</${Link}>` : 'no key'} ·
      ${l.reason ?? ''} · attempt ${l.attempt ?? '–'} · ${fmtTime(l.failed_at)}${l.replays ? ` · replayed ${l.replays}×` : ''} · ${l.message} · task
      <span class=${`state s-${l.task_state ?? 'unknown'}`} data-task-state=${l.task_state ?? ''}>${l.task_state ?? 'unknown'}</span>
      ${canAct && l.task_id ? html` <button class="replay-one" onClick=${(e) => (e.preventDefault(), onReplay({ task_ids: [l.task_id] }))}>Replay</button>` : null}
    </summary>
    <h4>Headers</h4>
    <table class="headers">
      ${Object.entries(l.headers).map(
        ([k, v]) =>
          html`<tr>
            <td><code>${k}</code></td>
            <td>${v}</td>
          </tr>`,
      )}
    </table>
    <h4>Record</h4>
    <pre>${JSON.stringify(l.record, null, 2)}</pre>
  </details>`;
}

/** What a dry run left out, and why. */
function skippedNote(skipped, remaining) {
  const parts = [];
  if (skipped['not-failed']) parts.push(`${skipped['not-failed']} already replayed/succeeded (task not FAILED now)`);
  if (skipped['unknown-task']) parts.push(`${skipped['unknown-task']} of unknown tasks`);
  if (skipped.superseded) parts.push(`${skipped.superseded} superseded by a later dead letter of the same task`);
  if (remaining) parts.push(`${remaining} more for a next replay`);
  return parts.length ? html`<p class="muted skipped">Left out: ${parts.join('; ')}.</p>` : null;
}

export function DeadLetters({ me }) {
  const stages = me.dlq_stages;
  const canAct = me.role === 'admin';
  const [stage, setStage] = useState(stages[0]);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [preview, setPreview] = useState(null);
  const [done, setDone] = useState(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    setData(null);
    get(`/v1/console/dlq/${stage}`).then((d) => (setData(d), setError(null)), setError);
  }, [stage, tick]);
  // a replay is previewed (dry run) first, then confirmed
  const ask = (selection, force = false) => {
    setDone(null);
    post(`/v1/console/dlq/${stage}/replay`, { ...selection, force, dry_run: true }).then((p) => setPreview({ selection, ...p }), setError);
  };
  // the confirmation replays exactly the letters the dry run listed (the API refuses a changed list)
  const confirm = () =>
    post(`/v1/console/dlq/${stage}/replay`, { positions: preview.positions, force: preview.force, dry_run: false }).then(
      (r) => (setDone(r), setPreview(null), setTick(tick + 1)),
      (e) => (setError(e), setPreview(null)),
    );
  return html`<h1>Dead letters</h1>
    <nav class="tabs">${stages.map((s) => html`<button class=${s === stage ? 'active' : ''} data-stage=${s} onClick=${() => setStage(s)}>${s}</button>`)}</nav>
    <${ErrorBox} error=${error} />
    ${done ? html`<p class="ok" role="status">Replayed ${done.count} dead letter(s) into ${done.stage}.</p>` : null}
    ${
      preview
        ? html`<div class="preview" role="dialog">
            <p>
              Dry run: this would replay <b>${preview.count}</b> dead letter(s) of ${preview.stage}:
              ${preview.letters.map((l) => html` <code>${(l.task_id ?? l.position).slice(0, 8)}</code>`)}${preview.count > preview.letters.length ? ` and ${preview.count - preview.letters.length} more` : ''}
            </p>
            ${skippedNote(preview.skipped, preview.remaining)}
            <label
              ><input type="checkbox" class="force" checked=${preview.force} onChange=${(e) => ask(preview.selection, e.target.checked)} /> include tasks that
              are not FAILED now (re-runs them)</label
            >
            <button class="confirm" onClick=${confirm} disabled=${preview.count === 0}>Replay ${preview.count}</button>
            <button onClick=${() => setPreview(null)}>Cancel</button>
          </div>`
        : null
    }
    ${
      !data
        ? html`<p class="muted">Reading ${stage}'s dead letters…</p>`
        : data.total === 0
          ? html`<p class="muted">No dead letters in ${stage}.</p>`
          : html`<p>
                ${data.total} dead letter(s), ${data.replayable} of FAILED tasks
                ${canAct ? html`<button class="replay-all" onClick=${() => ask({ all: true })}>Replay all…</button>` : html`<span class="muted">(read-only key: replay needs an admin key)</span>`}
              </p>
              ${data.codes.map(
                (g) =>
                  html`<section class="code-group" data-code=${g.code}>
                    <h2>
                      ${g.code}
                      <span class="muted">${g.count} (${g.replayable} of FAILED tasks)</span>
                      ${canAct ? html`<button class="replay-code" onClick=${() => ask({ code: g.code })}>Replay ${g.code}…</button>` : null}
                    </h2>
                    ${g.letters.map((l) => html`<${Letter} l=${l} canAct=${canAct} onReplay=${ask} />`)}
                    ${
                      g.more
                        ? html`<p class="muted more">
                            Showing the newest ${g.letters.length} of ${g.count}; <code>sonicflow dlq list ${stage}</code> lists them all.
                          </p>`
                        : null
                    }
                  </section>`,
              )}`
    }`;
}
