/**
 * The console's pages: one HTML shell for every /console path (the pages are preact components
 * rendered in the browser, no build step), its scripts and styles from ./static, and the UI
 * libraries (preact, htm, uPlot) as ES modules straight from the installed packages through an
 * import map. Nothing here needs a key: the pages hold no data until the browser calls /v1/console
 * with one. A strict Content-Security-Policy applies to every console response: scripts and
 * styles from this origin only (the import map by its hash), media and images from this origin or
 * blob: URLs, no framing.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';

const STATIC_DIR = join(dirname(fileURLToPath(import.meta.url)), 'static');
const TYPES: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Installed files of the UI libraries, by the name the browser asks for; resolved here, never shown. */
function vendorFiles(): Record<string, string> {
  const file = (specifier: string): string => fileURLToPath(import.meta.resolve(specifier));
  const uplotDist = dirname(file('uplot'));
  return {
    'preact.mjs': file('preact'),
    'hooks.mjs': file('preact/hooks'),
    'htm.mjs': file('htm'),
    'uplot.mjs': join(uplotDist, 'uPlot.esm.js'),
    'uplot.css': join(uplotDist, 'uPlot.min.css'),
  };
}

const IMPORT_MAP = JSON.stringify({
  imports: {
    preact: '/console/vendor/preact.mjs',
    'preact/hooks': '/console/vendor/hooks.mjs',
    htm: '/console/vendor/htm.mjs',
    uplot: '/console/vendor/uplot.mjs',
  },
});

function contentSecurityPolicy(): string {
  const mapHash = createHash('sha256').update(IMPORT_MAP).digest('base64');
  return [
    "default-src 'none'",
    `script-src 'self' 'sha256-${mapHash}'`,
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

function shell(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sonicflow console</title>
<link rel="stylesheet" href="/console/vendor/uplot.css">
<link rel="stylesheet" href="/console/static/console.css">
<script type="importmap">${IMPORT_MAP}</script>
<script type="module" src="/console/static/app.js"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
}

export function consolePages(): FastifyPluginAsync {
  const csp = contentSecurityPolicy();
  const html = shell();
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const name of readdirSync(STATIC_DIR)) {
    const ext = name.slice(name.lastIndexOf('.'));
    if (TYPES[ext]) files.set(`static/${name}`, { body: readFileSync(join(STATIC_DIR, name)), type: TYPES[ext] });
  }
  for (const [name, path] of Object.entries(vendorFiles()))
    files.set(`vendor/${name}`, { body: readFileSync(path), type: TYPES[name.slice(name.lastIndexOf('.'))]! });
  const secure = (reply: FastifyReply): FastifyReply =>
    reply
      .header('content-security-policy', csp)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY')
      .header('cross-origin-opener-policy', 'same-origin');
  return async (app: FastifyInstance) => {
    const page = async (_req: unknown, reply: FastifyReply) => secure(reply).header('cache-control', 'no-cache').type('text/html; charset=utf-8').send(html);
    app.get('/console', { schema: { hide: true } }, page);
    app.get<{ Params: { '*': string } }>('/console/*', { schema: { hide: true } }, async (req, reply) => {
      const path = req.params['*'];
      if (path.startsWith('static/') || path.startsWith('vendor/')) {
        const f = files.get(path);
        if (!f) return secure(reply).status(404).send({ code: 'INVALID_REQUEST', message: 'no such console file', retryable: false });
        return secure(reply).header('cache-control', 'no-cache').type(f.type).send(f.body);
      }
      return page(req, reply);
    });
  };
}
