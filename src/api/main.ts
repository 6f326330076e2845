/**
 * `sonicflow api`: the HTTP API process. Materialises the status view, then listens; SIGTERM or
 * SIGINT closes the server (in-flight requests finish) and the Kafka clients.
 */
import { SonicError } from '../core/errors.js';
import { PlainProducer, brokerReachable } from '../kafka/io.js';
import type { Context } from '../ops/context.js';
import { HEADERS } from '../runtime/headers.js';
import { valueSubject } from '../serde/wire.js';
import { buildApi } from './server.js';
import { StatusView } from './status-view.js';

export interface RunningApi {
  url: string;
  close(): Promise<void>;
}

/** Starts the API; resolves once it listens and its status view has caught up. */
export async function startApi(ctx: Context): Promise<RunningApi> {
  const topology = await ctx.topology();
  const requested = `${topology.prefix}.tasks.requested`;
  const statusTopic = topology.statusTopic;
  const requestSchema = topology.topics[requested]?.valueSchema;
  const statusSchema = topology.topics[statusTopic]?.valueSchema;
  if (!requestSchema || !statusSchema) throw new SonicError('TOPOLOGY_INVALID', `the topology lacks ${requested} or ${statusTopic}`);
  const logger = ctx.logger.child({ component: 'api' });
  const view = new StatusView(ctx.kafka, statusTopic, ctx.serde, statusSchema, logger, `${ctx.config.clientId}.${topology.prefix}.api-view`);
  await view.start();
  await Promise.race([view.caughtUp, new Promise((r) => setTimeout(r, 15_000))]);
  const producer = await new PlainProducer(ctx.kafka).connect();
  let registryOk = { at: 0, ok: false };
  const { app } = await buildApi({
    config: ctx.config,
    logger,
    blob: ctx.blob,
    view,
    enqueue: async (request, queued) => {
      const headers = request.traceparent ? { [HEADERS.traceparent]: request.traceparent } : undefined;
      await producer.sendMany([
        { topic: requested, key: request.task_id, value: await ctx.serde.encode(valueSubject(requested), requestSchema, request), ...(headers ? { headers } : {}) },
        { topic: statusTopic, key: request.task_id, value: await ctx.serde.encode(valueSubject(statusTopic), statusSchema, queued), ...(headers ? { headers } : {}) },
      ]);
    },
    ready: async () => {
      if (Date.now() - registryOk.at > 2000) {
        const ok = await fetch(`${ctx.config.schemaRegistryUrl}/subjects`, { headers: ctx.serde.authHeaders, signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
        registryOk = { at: Date.now(), ok };
      }
      const checks = { broker: await brokerReachable(ctx.kafka, 2000), registry: registryOk.ok, status_view: view.ready };
      return { ready: Object.values(checks).every(Boolean), checks };
    },
  });
  const address = await app.listen({ host: ctx.config.apiHost, port: ctx.config.apiPort });
  logger.info({ address, auth: ctx.config.apiAuth, tasks_known: view.size }, 'API listening');
  return {
    url: address,
    close: async () => {
      await app.close();
      await producer.close().catch(() => undefined);
      await view.stop().catch(() => undefined);
      await ctx.blobClose();
    },
  };
}
