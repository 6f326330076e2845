/**
 * One status view in a process of its own, for `npm run bench:state` (bench/state.ts), so that
 * the process's memory is the view's: either the API's store-backed `StatusView` or `MapView`, a
 * copy of the view as it was before the state store (it replays the whole compacted topic into a
 * `Map` on every start).
 *
 * Starts the view, waits until it has caught up with the topic AND holds `--expect` tasks (the
 * tail's "caught up" only says the fetches came back empty; decoding may still be behind), then
 * listens on `--port` and answers:
 *   GET /v1/tasks/:id  the task's view (200) or 404, from the view (`get`, no read-your-writes wait)
 *   GET /stats         timings since process start and memory (after a forced GC when --expose-gc)
 * With `--early` it listens first, answering from what the store already holds while the view
 * starts and catches up (not what the API does today: it waits for the view). SIGTERM stops the
 * view and exits.
 *
 *   node --expose-gc --import tsx bench/state-view.ts --variant store --prefix P --dir D --port N --expect N [--early]
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Subject } from 'rxjs';
import { StatusView, supersedes, toView, type StatusEvent } from '../src/app/status-view.js';
import { Context } from '../src/app/context.js';
import type { Logger } from '../src/core/logger.js';
import { idempotencyKeysTopic } from '../src/domain/paths.js';
import type { KafkaClient } from '../src/kafka/client.js';
import { TopicTail, type InRecord } from '../src/kafka/io.js';
import { apiViewGroupPrefix } from '../src/runtime/names.js';
import type { Codec } from '../src/serde/codec.js';

/**
 * The status view before the state store (d54aaf6's src/api/status-view.ts, reduced to what a
 * GET needs): every start replays the whole compacted topic into a Map, decoding batch after
 * batch; `supersedes` is the current view's rule, which is the rule it had.
 */
class MapView {
  private readonly tasks = new Map<string, StatusEvent>();
  private readonly subject = new Subject<StatusEvent>();
  private readonly tail: TopicTail;

  constructor(
    kafka: KafkaClient,
    readonly topic: string,
    private readonly codec: Codec,
    private readonly schema: string,
    private readonly logger: Logger,
    groupPrefix: string,
  ) {
    this.tail = new TopicTail(kafka, topic, groupPrefix);
  }

  get caughtUp(): Promise<void> {
    return this.tail.caughtUp;
  }

  get size(): number {
    return this.tasks.size;
  }

  async start(): Promise<void> {
    let chain = Promise.resolve();
    await this.tail.start((batch) => {
      // decode in order, one batch after the other
      chain = chain.then(() => this.ingest(batch.records)).catch((err: unknown) => this.logger.error({ err }, 'status batch not applied'));
    });
  }

  private async ingest(records: InRecord[]): Promise<void> {
    for (const r of records) {
      if (!r.value) continue;
      try {
        this.apply((await this.codec.decode<StatusEvent>(r.value, this.schema)).value);
      } catch (err) {
        this.logger.warn({ err, offset: r.offset, partition: r.partition }, 'undecodable status event skipped');
      }
    }
  }

  apply(e: StatusEvent): void {
    if (!supersedes(this.tasks.get(e.task_id), e)) return;
    this.tasks.set(e.task_id, e);
    this.subject.next(e);
  }

  get(taskId: string): StatusEvent | undefined {
    return this.tasks.get(taskId);
  }

  async stop(): Promise<void> {
    this.subject.complete();
    await this.tail.stop();
  }
}

/** The process's memory, MiB: Node's view and the kernel's split of the resident set. */
function memory(): Record<string, number> {
  (globalThis as { gc?: () => void }).gc?.();
  const mib = (n: number): number => Math.round((n / 2 ** 20) * 10) / 10;
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  const m = process.memoryUsage();
  return {
    rss: mib(m.rss),
    vmRss: mib(kb('VmRSS')),
    rssAnon: mib(kb('RssAnon')),
    rssFile: mib(kb('RssFile')),
    heapUsed: mib(m.heapUsed),
    external: mib(m.external),
  };
}

const main = async (): Promise<void> => {
  // ms since the process started (performance's time origin): modules loaded and compiled
  const times: Record<string, number> = { loaded: performance.now() };
  const { values: args } = parseArgs({
    options: {
      variant: { type: 'string' },
      prefix: { type: 'string' },
      dir: { type: 'string' },
      port: { type: 'string' },
      expect: { type: 'string', default: '0' },
      early: { type: 'boolean', default: false },
    },
  });
  const variant = args.variant;
  if (variant !== 'map' && variant !== 'store') throw new Error('--variant map|store');
  const ctx = new Context({ ...process.env, SONIC_TOPIC_PREFIX: args.prefix, SONIC_LOG_LEVEL: 'warn' }, 'bench-state');
  const topology = await ctx.topology();
  const topic = topology.statusTopic;
  const schema = topology.topics[topic]?.valueSchema ?? 'task-status';
  const keysTopic = idempotencyKeysTopic(topology.prefix);
  const groupPrefix = apiViewGroupPrefix(ctx.config.clientId, topology);
  const view =
    variant === 'map'
      ? new MapView(ctx.kafka, topic, ctx.serde, schema, ctx.logger, groupPrefix)
      : new StatusView({
          kafka: ctx.kafka,
          topic,
          codec: ctx.serde,
          schema,
          keys: { topic: keysTopic, schema: topology.topics[keysTopic]?.valueSchema ?? 'task-key' },
          logger: ctx.logger,
          groupPrefix,
          dir: args.dir!,
        });
  times.opened = performance.now();
  const initial = view.size;
  let atReady: Record<string, number> | undefined = undefined;

  const server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ times, initial, size: view.size, atReady, now: memory() }));
      return;
    }
    const id = /^\/v1\/tasks\/([^/?]+)$/.exec(url)?.[1];
    const e = id === undefined ? undefined : view.get(id);
    if (!e) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"NOT_FOUND"}}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(toView(e)));
  });
  server.keepAliveTimeout = 60_000;
  process.once('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    void view.stop().finally(() => process.exit(0));
  });
  const listen = async (): Promise<void> => {
    await new Promise<void>((resolve) => server.listen(Number(args.port), '127.0.0.1', resolve));
    times.listening = performance.now();
    console.log(`listening ${JSON.stringify({ times, initial, size: view.size })}`);
  };

  // --early: answer from what the store holds while the view catches up (the API waits today)
  if (args.early) await listen();
  await view.start();
  times.started = performance.now();
  await view.caughtUp;
  times.tailCaughtUp = performance.now();
  const expect = Number(args.expect);
  while (view.size < expect) await new Promise((r) => setTimeout(r, 5));
  times.applied = performance.now();
  atReady = memory();
  if (!args.early) await listen();
};

await main();
