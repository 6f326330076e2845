/**
 * Small HTTP peers for tests: a server on 127.0.0.1 that records every request it gets (path,
 * headers, body, the status it answered) and answers as the test says; closed after the file's
 * tests. Used as a webhook receiver, a CDN, an API stand-in.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { onCleanup } from './infra.js';

/** One request the server got. */
export interface Recorded {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The status it answered. */
  answered: number;
}

export interface RecordingServer {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  server: Server;
  /** Every request so far, in order of arrival. */
  seen: Recorded[];
}

/**
 * Starts a recording server. `answer` gets the request once its body has arrived and returns the
 * status (the response then ends empty), or answers `res` itself and returns its status.
 */
export async function recordingServer(answer: (req: IncomingMessage, res: ServerResponse, body: string) => number = () => 204): Promise<RecordingServer> {
  const seen: Recorded[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const status = answer(req, res, body);
      seen.push({ path: req.url ?? '', headers: req.headers, body, answered: status });
      if (!res.headersSent) res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onCleanup(async () => void server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, seen };
}
