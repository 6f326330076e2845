// The console's calls to the API: the key lives in sessionStorage (this tab only) and goes in
// the Authorization header, which a cross-site page cannot make the browser send.
const KEY = 'sonicflow.console.key';

export const getKey = () => sessionStorage.getItem(KEY) ?? '';
export const setKey = (k) => (k ? sessionStorage.setItem(KEY, k) : sessionStorage.removeItem(KEY));

const headers = (extra = {}) => {
  const k = getKey();
  return k ? { authorization: `Bearer ${k}`, ...extra } : extra;
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? 'HTTP_' + status;
  }
}

async function answer(res) {
  const body = (res.headers.get('content-type') ?? '').includes('json') ? await res.json() : null;
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export const get = (path) => fetch(path, { headers: headers() }).then(answer);
export const post = (path, body) =>
  fetch(path, { method: 'POST', headers: headers({ 'content-type': 'application/json' }), body: JSON.stringify(body) }).then(answer);
export const postForm = (path, form) => fetch(path, { method: 'POST', headers: headers(), body: form }).then(answer);

/** A media file fetched with the key, as a blob: URL for <img>, <audio> and <video>. */
export async function blobUrl(path) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  return URL.createObjectURL(await res.blob());
}

/**
 * Server-sent events read with fetch (EventSource cannot send the key): calls `onEvent(name, data)`
 * per event until the stream ends or `signal` aborts. Resolves when the stream ends.
 */
export async function stream(path, onEvent, signal) {
  const res = await fetch(path, { headers: headers({ accept: 'text/event-stream' }), signal });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) name = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join('\n')));
    }
  }
}

const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 30_000;

/**
 * `stream` kept alive: when the stream ends or fails it connects again after 1 s, doubling up to
 * 30 s while it keeps failing (back to 1 s once an event arrives), and says so with
 * `onStatus('reconnecting')` / `onStatus('live')`. It stops when `signal` aborts, when
 * `done(name, data)` said the last event came, and rejects on an answer no retry fixes (400, 401,
 * 403, 404).
 */
export async function follow(path, onEvent, signal, { onStatus = () => {}, done = () => false } = {}) {
  let delay = FIRST_RETRY_MS;
  for (;;) {
    let finished = false;
    try {
      await stream(
        path,
        (name, data) => {
          delay = FIRST_RETRY_MS;
          onStatus('live');
          onEvent(name, data);
          if (done(name, data)) finished = true;
        },
        signal,
      );
      if (finished) return;
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && [400, 401, 403, 404].includes(e.status)) throw e;
    }
    if (signal.aborted) return;
    onStatus('reconnecting');
    await new Promise((resolve) => {
      const t = setTimeout(resolve, delay);
      signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
    delay = Math.min(delay * 2, LONGEST_RETRY_MS);
  }
}
