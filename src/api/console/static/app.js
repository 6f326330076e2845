// The console: a key prompt, the navigation, and a router over /console/* paths (history API).
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ErrorBox, Link, html } from './ui.js';
import { ApiError, get, getKey, setKey } from './api.js';
import { TaskList, TaskPage } from './tasks.js';
import { NewTask } from './new-task.js';
import { DeadLetters } from './dlq.js';
import { Overview } from './overview.js';
import { Topology } from './topology.js';

function Login({ onDone, error }) {
  const [key, setValue] = useState('');
  const submit = (e) => {
    e.preventDefault();
    setKey(key.trim());
    onDone();
  };
  return html`<form class="login" onSubmit=${submit}>
    <h1>sonicflow console</h1>
    <p>Enter an API key. It is kept in this browser tab only and sent with every request.</p>
    <input type="password" name="key" autocomplete="off" value=${key} onInput=${(e) => setValue(e.target.value)} placeholder="API key" />
    <button type="submit">Open</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

function route(path) {
  const p = path.replace(/^\/console\/?/, '');
  const parts = p.split('/').filter(Boolean);
  if (parts[0] === 'tasks' && parts[1]) return { page: 'task', id: parts[1] };
  return { page: parts[0] || 'tasks' };
}

function App() {
  const [me, setMe] = useState(null);
  const [error, setError] = useState(null);
  const [tries, setTries] = useState(0);
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const on = () => setPath(location.pathname);
    addEventListener('popstate', on);
    return () => removeEventListener('popstate', on);
  }, []);
  useEffect(() => {
    get('/v1/console/me').then(
      (m) => (setMe(m), setError(null)),
      (e) => (setMe(null), setError(e instanceof ApiError && getKey() === '' && e.status === 401 ? null : e)),
    );
  }, [tries]);
  if (!me) return html`<${Login} error=${error} onDone=${() => setTries(tries + 1)} />`;
  const r = route(path);
  const operator = me.role === 'read' || me.role === 'admin';
  // a read-only key sees and changes nothing: the API refuses its submits (403)
  const canSubmit = me.role !== 'read';
  const logout = () => (setKey(''), setMe(null));
  const nav = [
    ...(operator && me.overview
      ? [
          ['overview', 'Overview'],
          ['topology', 'Topology'],
        ]
      : []),
    ['tasks', 'Tasks'],
    ...(canSubmit ? [['new', 'New task']] : []),
    ...(operator ? [['dlq', 'Dead letters']] : []),
  ];
  const pages = {
    tasks: () => html`<${TaskList} me=${me} />`,
    task: () => html`<${TaskPage} me=${me} id=${r.id} />`,
    new: () => (canSubmit ? html`<${NewTask} me=${me} />` : html`<p>A read-only key cannot submit tasks.</p>`),
    dlq: () => html`<${DeadLetters} me=${me} />`,
    overview: () => html`<${Overview} />`,
    topology: () => html`<${Topology} />`,
  };
  const body = pages[r.page] ?? (() => html`<p>No such page.</p>`);
  return html`<header>
      <b class="brand">sonicflow</b>
      <nav>${nav.map(([p, label]) => html`<${Link} href=${`/console/${p}`} class=${r.page === p ? 'active' : ''}>${label}</${Link}>`)}</nav>
      <span class="who">tenant <b>${me.tenant}</b> · role <b data-role=${me.role}>${me.role}</b>${me.auth === 'disabled' ? ' (auth disabled)' : ''}</span>
      <button class="link" onClick=${logout}>Sign out</button>
    </header>
    <main>${body()}</main>`;
}

render(html`<${App} />`, document.getElementById('app'));
