// Shared bits of the console's pages.
import { h } from 'preact';
import htm from 'htm';

export const html = htm.bind(h);

export function navigate(path) {
  history.pushState(null, '', path);
  dispatchEvent(new PopStateEvent('popstate'));
}

/** An <a> that navigates inside the console without reloading the page. */
export function Link({ href, children, ...rest }) {
  const go = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey) return;
    e.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${go} ...${rest}>${children}</a>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert"><b>${error.code ?? 'ERROR'}</b> ${error.message}</p>`;
}

/** Shown while a live page's event stream is down and being reconnected. */
export function Reconnecting({ status }) {
  return status === 'reconnecting' ? html`<span class="reconnecting muted" role="status">reconnecting…</span>` : null;
}

export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : '–');
export const fmtMs = (ms) => (ms == null ? '–' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);
