/**
 * Prometheus metrics (prom-client): each metric registered once per registry, names following
 * Prometheus conventions (`_total`, `_seconds`). A small HTTP server exposes `/metrics`,
 * `/healthz` and `/readyz`; a failing collector never crashes the process.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './logger.js';

export { Registry } from 'prom-client';

export interface StageMetrics {
  records: Counter<'stage' | 'outcome'>;
  skipped: Counter<'stage' | 'reason'>;
  handlerSeconds: Histogram<'stage' | 'outcome'>;
  transactions: Counter<'stage' | 'result'>;
  transactionSeconds: Histogram<'stage'>;
  batchRecords: Histogram<'stage'>;
  transactionBatches: Histogram<'stage'>;
  inFlight: Gauge<'stage'>;
  retryLatenessSeconds: Histogram<'stage' | 'topic'>;
}

/** A registry with Node's default metrics, every series labelled with `labels`. */
export function createRegistry(labels: Record<string, string> = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  collectDefaultMetrics({ register: registry, prefix: 'sonicflow_' });
  return registry;
}

/** The stage runtime's metrics. */
export function createStageMetrics(registry: Registry): StageMetrics {
  return {
    records: new Counter({
      name: 'sonicflow_records_total',
      help: 'Input records by outcome (ok, retry, dlq, dropped).',
      labelNames: ['stage', 'outcome'],
      registers: [registry],
    }),
    skipped: new Counter({
      name: 'sonicflow_records_skipped_total',
      help: 'Input records a handler dropped on purpose, by reason (duplicate: a task id already seen); also counted as ok.',
      labelNames: ['stage', 'reason'],
      registers: [registry],
    }),
    handlerSeconds: new Histogram({
      name: 'sonicflow_handler_duration_seconds',
      help: 'Handler wall time per record.',
      labelNames: ['stage', 'outcome'],
      buckets: [0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
      registers: [registry],
    }),
    transactions: new Counter({
      name: 'sonicflow_transactions_total',
      help: 'Kafka transactions by result (commit, abort).',
      labelNames: ['stage', 'result'],
      registers: [registry],
    }),
    transactionSeconds: new Histogram({
      name: 'sonicflow_transaction_duration_seconds',
      help: 'Time to publish and commit one transaction.',
      labelNames: ['stage'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    batchRecords: new Histogram({
      name: 'sonicflow_transaction_records',
      help: 'Input records committed per transaction.',
      labelNames: ['stage'],
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500],
      registers: [registry],
    }),
    transactionBatches: new Histogram({
      name: 'sonicflow_transaction_batches',
      help: 'Partition batches committed together in one transaction of the stage producer (KIP-447 client; kafkajs commits one per transaction).',
      labelNames: ['stage'],
      buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32],
      registers: [registry],
    }),
    inFlight: new Gauge({ name: 'sonicflow_in_flight_records', help: 'Records being handled now.', labelNames: ['stage'], registers: [registry] }),
    retryLatenessSeconds: new Histogram({
      name: 'sonicflow_retry_lateness_seconds',
      help: 'Start of a retry minus its due time.',
      labelNames: ['stage', 'topic'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
  };
}

/**
 * A dispatcher stage's state (`dispatcher.ts`), for scaling its workers on the work it holds rather
 * than on their input's lag (which a dispatcher keeps at 1 + queuePerWorker per worker by design).
 * Seconds are the sum of the records' `cost` (estimated worker-seconds). Only the active replica
 * reports its state; a standby reports 0 for every gauge, so a sum over the replicas is right.
 */
export interface DispatchMetrics {
  backlogRecords: Gauge<'stage'>;
  backlogSeconds: Gauge<'stage'>;
  outstandingRecords: Gauge<'stage'>;
  outstandingSeconds: Gauge<'stage'>;
  workers: Gauge<'stage'>;
  /** Members of the workers' group holding at least one record dispatched and not yet committed: a floor for any scale-down. */
  busyWorkers: Gauge<'stage'>;
  active: Gauge<'stage'>;
}

/** The dispatcher's gauges (see {@link DispatchMetrics}). */
export function createDispatchMetrics(registry: Registry): DispatchMetrics {
  const gauge = (name: string, help: string): Gauge<'stage'> => new Gauge({ name, help, labelNames: ['stage'], registers: [registry] });
  return {
    backlogRecords: gauge('sonicflow_dispatch_backlog_records', 'Records waiting in the dispatcher backlog for a free worker.'),
    backlogSeconds: gauge('sonicflow_dispatch_backlog_seconds', 'Estimated worker-seconds (the cost) of the records waiting in the backlog.'),
    outstandingRecords: gauge('sonicflow_dispatch_outstanding_records', 'Records dispatched to a worker and not yet committed by it.'),
    outstandingSeconds: gauge('sonicflow_dispatch_outstanding_seconds', 'Estimated worker-seconds (the cost) of the records dispatched and not yet committed.'),
    workers: gauge('sonicflow_dispatch_workers', "Members of the workers' consumer group, as the dispatcher last read it."),
    busyWorkers: gauge(
      'sonicflow_dispatch_busy_workers',
      "Members of the workers' consumer group holding at least one record dispatched and not yet committed (rendering, or next in line): scaling below it stops a busy worker.",
    ),
    active: gauge('sonicflow_dispatch_active', '1 on the active dispatcher replica, 0 on a standby (which reports 0 for the other gauges).'),
  };
}

export interface HealthProbe {
  /** Alive: the process works (`/healthz`). */
  live(): boolean;
  /** Ready: the process can do its job (`/readyz`). */
  ready(): boolean | Promise<boolean>;
}

/** Serves `/metrics`, `/healthz` and `/readyz` on `port` (0: any free port). Resolves with the bound port. */
export async function serveMetrics(port: number, registry: Registry, health: HealthProbe, logger: Logger): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const answer = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    (async () => {
      if (path === '/metrics') return answer(200, await registry.metrics(), registry.contentType);
      if (path === '/healthz') return health.live() ? answer(200, 'ok\n') : answer(503, 'not live\n');
      if (path === '/readyz') return (await health.ready()) ? answer(200, 'ready\n') : answer(503, 'not ready\n');
      return answer(404, 'not found\n');
    })().catch((err: unknown) => {
      logger.warn({ err }, 'metrics endpoint failed');
      if (!res.headersSent) answer(500, 'error\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '0.0.0.0', () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
