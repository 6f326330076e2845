import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { EventStreams, MAX_BUFFERED_BYTES } from '../../src/api/events.js';

/** A response whose client never reads: everything written stays buffered. */
function stuckResponse() {
  const res = Object.assign(new EventEmitter(), {
    req: { socket: Object.assign(new EventEmitter(), { destroyed: false }) },
    writableLength: 0,
    writableEnded: false,
    destroyed: false,
    writeHead: () => res,
    write(chunk: string) {
      res.writableLength += Buffer.byteLength(chunk);
      return false;
    },
    end: () => void (res.writableEnded = true),
    destroy: () => void (res.destroyed = true),
  });
  return res;
}

describe('server-sent event streams', () => {
  it('cut off a client that never reads once more than 1 MiB waits unsent', () => {
    const streams = new EventStreams({ perKey: 4, total: 10, maxLifetimeMs: 60_000 });
    const res = stuckResponse();
    const changes = new Subject<string>();
    const big = 'x'.repeat(100_000);
    streams.serve(res as unknown as ServerResponse, 'k', 'first', changes, { matches: () => true, isLast: () => false, render: (e) => e });
    expect(streams.size).toBe(1);
    for (let i = 0; i < 10; i++) changes.next(big);
    expect(res.destroyed).toBe(false);
    changes.next(big);
    expect(res.writableLength).toBeGreaterThan(MAX_BUFFERED_BYTES);
    expect(res.destroyed).toBe(true);
    expect(streams.size).toBe(0);
    expect(changes.observed).toBe(false);
  });
});
