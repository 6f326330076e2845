/**
 * `sonicflow api`: the HTTP API process. Materialises the status view, then listens; SIGTERM or
 * SIGINT closes the server (in-flight requests finish) and the Kafka clients.
 */
import type { AddressInfo } from 'node:net';
import { Subject, takeUntil } from 'rxjs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';
import { sleep } from '../core/retry.js';
import { BrokerHealth } from '../kafka/health.js';
import { TxBatcher } from '../kafka/tx-batcher.js';
import { defaultScratchRoot, processScratchDir } from '../media/scratch.js';
import type { Context } from '../app/context.js';
import { HEADERS } from '../runtime/headers.js';
import { apiViewGroupPrefix, transactionalId } from '../runtime/names.js';
import { valueSubject } from '../serde/wire.js';
import { checkCallbackUrl, resolveWebhookSecret } from '../domain/callbacks.js';
import { idempotencyKeysTopic } from '../domain/paths.js';
import { startJanitor } from '../app/retention.js';
import { decodeDeadLetter, readDlq, replay, select } from '../app/dlq.js';
import { overview$, shareOverview } from '../app/overview.js';
import { describeGraph } from '../runtime/describe.js';
import { PlainProducer } from '../kafka/io.js';
import { EventStreams } from './events.js';
import { loadServerSecret } from './secret.js';
import { buildApi } from './server.js';
import { StatusView, statusViewTopics } from '../app/status-view.js';
import { UploadSlots } from './uploads.js';

export interface RunningApi {
  url: string;
  close(): Promise<void>;
  /**
   * Settles when the API cannot go on: its status view stopped following its topics (a missing
   * READ ACL is KAFKA_NOT_AUTHORIZED). Never settles while it runs.
   */
  failed: Promise<SonicError>;
}

/** Starts the API; resolves once it listens and its status view has caught up. */
export async function startApi(ctx: Context): Promise<RunningApi> {
  const c = ctx.config;
  const topology = await ctx.topology();
  const requested = `${topology.prefix}.tasks.requested`;
  const statusTopic = topology.statusTopic;
  const requestSchema = topology.topics[requested]?.valueSchema;
  const statusSchema = topology.topics[statusTopic]?.valueSchema;
  const keysTopic = idempotencyKeysTopic(topology.prefix);
  const keySchema = topology.topics[keysTopic]?.valueSchema;
  if (!requestSchema || !statusSchema || !keySchema)
    throw new SonicError('TOPOLOGY_INVALID', `the topology lacks ${requested}, ${statusTopic} or ${keysTopic}`);
  const logger = ctx.logger.child({ component: 'api' });
  const secret = await loadServerSecret(c.apiSecret, c.stateDir);
  const instance = c.apiInstanceId || hostname();
  const view = new StatusView({
    ...statusViewTopics(topology),
    kafka: ctx.kafka,
    codec: ctx.serde,
    logger,
    groupPrefix: apiViewGroupPrefix(c.clientId, topology),
    dir: c.apiViewDir || join(c.stateDir, 'views', statusTopic, instance.replace(/[^A-Za-z0-9._-]/g, '_')),
  });
  try {
    await view.start();
  } catch (err) {
    await view.stop().catch(() => undefined);
    throw err;
  }
  // serve a view that is still catching up rather than none (readiness says which); a view that
  // cannot follow its topics (a missing ACL) stops the start
  try {
    await Promise.race([
      view.caughtUp,
      sleep(15_000),
      view.failed.then((err) => {
        throw err;
      }),
    ]);
  } catch (err) {
    await view.stop().catch(() => undefined);
    throw err;
  }
  const batcher = new TxBatcher(
    ctx.kafka,
    {
      // several producers take turns: `.<lane>` tells them apart
      transactionalIds: Array.from({ length: c.apiProducers }, (_, i) =>
        transactionalId(c.clientId, { kind: 'api', topology, instance, ...(c.apiProducers === 1 ? {} : { lane: i }) }),
      ),
      // an abandoned submit holds read_committed readers back at most this long
      transactionTimeoutMs: c.apiEnqueueTimeoutMs + 10_000,
    },
    logger,
  );
  // the ping keeps an idle stream inside the idle timeout
  const streams = new EventStreams({
    perKey: c.apiMaxStreamsPerKey,
    total: c.apiMaxStreams,
    maxLifetimeMs: c.apiStreamMaxS * 1000,
    pingMs: Math.min(15_000, Math.floor(c.apiIdleTimeoutMs / 2)),
  });
  // one long-lived admin connection answers every readiness probe (a cached, single-flight check)
  const broker = new BrokerHealth(ctx.kafka, { cacheMs: c.brokerCheckCacheMs, timeoutMs: c.brokerCheckTimeoutMs, logger });
  let registryOk = { at: 0, ok: false };
  // links without SONIC_API_PUBLIC_URL name the port the API listens on, known once it listens
  // (SONIC_API_PORT=0 picks one); routes read it per request
  const config: { -readonly [K in keyof Config]: Config[K] } = { ...c };
  // the overview's sampler (shared by its viewers) stops with the server
  const closing = new Subject<void>();
  const { app } = await buildApi({
    config,
    logger,
    blob: ctx.blob,
    view,
    secret,
    streams,
    deadLetters: {
      stages: topology.stages.map((s) => s.name),
      read: (stage) => readDlq(ctx, topology, stage, { idleMs: 500 }),
      decode: (r) => decodeDeadLetter(ctx, r),
      select,
      replay: (stage, picked, by) => replay(ctx, topology, stage, picked, by),
    },
    overview: {
      overview$: shareOverview(
        overview$(ctx, topology, { intervalMs: c.consoleSampleMs, metricsUrls: c.consoleMetricsUrls, perWorker: 1 + c.dispatchQueuePerWorker }).pipe(
          takeUntil(closing),
        ),
      ),
      graph: describeGraph(topology),
    },
    slots: new UploadSlots(c.apiMaxConcurrentUploads, c.apiMaxUploadsPerKey),
    // refused here, before anything is stored, rather than by notify after the video was made
    checkCallback: (tenant, callback) => {
      checkCallbackUrl(callback.url, c.webhookAllowHosts);
      resolveWebhookSecret(c, tenant, callback.secret_ref);
    },
    // uploads are spooled in this process's scratch directory: swept if the process dies
    spoolRoot: await processScratchDir(c.scratchDir || defaultScratchRoot()),
    enqueue: async (request, queued, timeoutMs, key) => {
      const headers = request.traceparent ? { [HEADERS.traceparent]: request.traceparent } : undefined;
      await batcher.send(
        [
          {
            topic: requested,
            key: request.task_id,
            value: await ctx.serde.encode(valueSubject(requested), requestSchema, request),
            ...(headers ? { headers } : {}),
          },
          {
            topic: statusTopic,
            key: request.task_id,
            value: await ctx.serde.encode(valueSubject(statusTopic), statusSchema, queued),
            ...(headers ? { headers } : {}),
          },
          ...(key ? [{ topic: keysTopic, key: key.task_id, value: await ctx.serde.encode(valueSubject(keysTopic), keySchema, key) }] : []),
        ],
        timeoutMs,
      );
    },
    ready: async () => {
      if (Date.now() - registryOk.at > 2000) {
        const ok = await fetch(`${c.schemaRegistryUrl}/subjects`, { headers: ctx.serde.authHeaders, signal: AbortSignal.timeout(2000) }).then(
          (r) => r.ok,
          () => false,
        );
        registryOk = { at: Date.now(), ok };
      }
      const checks = { broker: await broker.check(), registry: registryOk.ok, status_view: view.ready };
      return { ready: Object.values(checks).every(Boolean), checks };
    },
  });
  // retention: every replica runs the janitor on its own view (deletes and tombstones repeat harmlessly)
  const tombstones = c.janitorIntervalMs > 0 ? await new PlainProducer(ctx.kafka).connect() : undefined;
  const janitor =
    tombstones &&
    startJanitor({
      source: view.retentionSource(),
      blob: ctx.blob,
      tombstones,
      statusTopic,
      alsoTombstone: [keysTopic],
      retentionS: c.taskRetentionS,
      uploadRetentionS: c.uploadRetentionS,
      limit: c.janitorBatch,
      logger: logger.child({ component: 'janitor' }),
      intervalMs: c.janitorIntervalMs,
    });
  const address = await app.listen({ host: c.apiHost, port: c.apiPort });
  config.apiPort = (app.server.address() as AddressInfo).port;
  logger.info({ address, auth: c.apiAuth, tasks_known: view.size }, 'API listening');
  return {
    url: address,
    failed: view.failed,
    close: async () => {
      closing.next();
      await app.close();
      await janitor?.stop().catch(() => undefined);
      await tombstones?.close().catch(() => undefined);
      await batcher.close().catch(() => undefined);
      await broker.close().catch(() => undefined);
      await view.stop().catch(() => undefined);
      await ctx.blobClose();
    },
  };
}
