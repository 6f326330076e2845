/**
 * Server-sent events of a task's status: a bounded number of open streams per API key and in
 * all, a ping that keeps proxies from idling them out, a longest lifetime after which the client
 * reconnects, a cap on what a stream may hold unsent (a client that stops reading is cut off), and
 * a shutdown that ends every stream at once (so the server can close).
 */
import type { ServerResponse } from 'node:http';
import type { Observable, Subscription } from 'rxjs';
import { filter, takeWhile } from 'rxjs';
import { SonicError } from '../core/errors.js';

/** Default {@link StreamLimits.maxBufferedBytes}: 1 MiB. */
export const MAX_BUFFERED_BYTES = 1024 * 1024;

export interface StreamLimits {
  perKey: number;
  total: number;
  /** Longest a stream stays open, ms; the client reconnects (EventSource does) and gets the current state. */
  maxLifetimeMs: number;
  pingMs?: number;
  /** Most bytes a stream may hold unsent (the client does not read); past it the stream is cut. Default {@link MAX_BUFFERED_BYTES}. */
  maxBufferedBytes?: number;
}

interface Open {
  owner: string;
  end(): void;
}

export class EventStreams {
  private readonly open = new Set<Open>();
  private readonly byOwner = new Map<string, number>();
  private closing = false;

  constructor(private readonly limits: StreamLimits) {}

  /** Open streams now. */
  get size(): number {
    return this.open.size;
  }

  /** Throws API_OVERLOADED (in all, or shutting down) or RATE_LIMITED (this key) when another stream may not open. */
  admit(owner: string): void {
    if (this.closing || this.open.size >= this.limits.total) {
      throw new SonicError('API_OVERLOADED', 'too many open event streams on this server; poll the status instead, or retry later', {
        safe: true,
        details: { limit: this.limits.total, retryAfterS: 5 },
      });
    }
    if ((this.byOwner.get(owner) ?? 0) >= this.limits.perKey) {
      throw new SonicError('RATE_LIMITED', `at most ${this.limits.perKey} event streams may be open per API key; close one first`, {
        safe: true,
        details: { limit: this.limits.perKey, retryAfterS: 5 },
      });
    }
  }

  /**
   * Streams `first`, then every event of `changes$` that `matches`, until `isLast` says the
   * task ended (or the client goes, the lifetime passes, or the server shuts down).
   */
  serve<E>(
    res: ServerResponse,
    owner: string,
    first: E,
    changes$: Observable<E>,
    o: { matches(e: E): boolean; isLast(e: E): boolean; render(e: E): string },
  ): void {
    this.admit(owner);
    // the connection, not the response: a response queued behind another on a pipelined
    // connection never hears 'close' when the connection dies, its request's socket does
    const socket = res.req?.socket;
    if (!socket || socket.destroyed) return void res.destroy();
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const cap = this.limits.maxBufferedBytes ?? MAX_BUFFERED_BYTES;
    let released = false;
    let sub: Subscription | undefined = undefined;
    const entry: Open = { owner, end: () => finish() };
    this.open.add(entry);
    this.byOwner.set(owner, (this.byOwner.get(owner) ?? 0) + 1);
    const ping = setInterval(() => write(': ping\n\n'), this.limits.pingMs ?? 15_000);
    const lifetime = setTimeout(() => finish(), this.limits.maxLifetimeMs);
    const release = (): void => {
      if (released) return;
      released = true;
      socket.off('close', release);
      clearInterval(ping);
      clearTimeout(lifetime);
      sub?.unsubscribe();
      this.open.delete(entry);
      const n = (this.byOwner.get(owner) ?? 1) - 1;
      if (n <= 0) this.byOwner.delete(owner);
      else this.byOwner.set(owner, n);
    };
    const finish = (): void => {
      release();
      if (!res.writableEnded && !res.destroyed) res.end();
    };
    const write = (text: string): void => {
      if (released) return;
      res.write(text);
      // a client that never reads must not make the server buffer without end: drop the
      // connection with what it holds (ending it would keep the buffer until it drained)
      if (res.writableLength > cap) {
        release();
        res.destroy();
      }
    };
    const send = (e: E): void => write(`event: status\ndata: ${o.render(e)}\n\n`);
    res.once('close', release);
    socket.once('close', release);
    send(first);
    if (o.isLast(first)) return finish();
    sub = changes$
      .pipe(
        filter(o.matches),
        takeWhile((e) => !o.isLast(e), true),
      )
      .subscribe({ next: send, complete: () => finish() });
    // it may have ended while subscribing (a replayed last event, a client already over the cap)
    if (released) sub.unsubscribe();
  }

  /** Ends every open stream and refuses new ones (call before closing the server). */
  closeAll(): void {
    this.closing = true;
    for (const s of [...this.open]) s.end();
  }
}
