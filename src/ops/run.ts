/**
 * `sonicflow run <stage> [<stage>...]`: stages as this process — normally one (one process per
 * stage, scaled on its own); several share a process in small deployments and tests. Serves
 * /metrics, /healthz and /readyz; SIGTERM or SIGINT drains in-flight work and exits 0; a crash
 * exits 1 with the error logged. A broker outage is no crash: the process waits for the broker
 * (at start too), alive (/healthz 200) and not ready (/readyz 503) until it is back.
 */
import { join } from 'node:path';
import { SonicError } from '../core/errors.js';
import { createDispatchMetrics, createRegistry, createStageMetrics, serveMetrics, type DispatchMetrics } from '../core/metrics.js';
import { BrokerHealth } from '../kafka/health.js';
import { Dispatcher } from '../runtime/dispatcher.js';
import { StageRunner } from '../runtime/runner.js';
import { findStage, type StageSpec } from '../runtime/topology.js';
import type { Config } from '../core/config.js';
import { assertValidTopology, type TopologyProblem } from '../runtime/validate.js';
import { TopicAdmin } from '../kafka/admin.js';
import { untilConnected } from '../kafka/client.js';
import { loadKafkaClient } from '../kafka/clients.js';
import { deployedProblems } from './deploy.js';
import type { Context } from '../app/context.js';

/** A stage's session timeout when neither SONIC_SESSION_TIMEOUT_MS nor the stage sets one, ms. */
export const DEFAULT_SESSION_TIMEOUT_MS = 30_000;

/** SONIC_SESSION_TIMEOUT_MS when set, else the stage's own, else 30 s; heartbeats at most a third of it apart. */
export function groupSession(c: Pick<Config, 'sessionTimeoutMs' | 'heartbeatIntervalMs'>, stage: Pick<StageSpec, 'sessionTimeoutMs'>) {
  const sessionTimeoutMs = c.sessionTimeoutMs || stage.sessionTimeoutMs || DEFAULT_SESSION_TIMEOUT_MS;
  return { sessionTimeoutMs, heartbeatIntervalMs: Math.max(100, Math.min(c.heartbeatIntervalMs, Math.floor(sessionTimeoutMs / 3))) };
}

export async function runStages(ctx: Context, names: string[], file?: string): Promise<number> {
  const topology = await ctx.topology(file);
  // a topology that cannot work is refused before anything connects, naming its nodes
  assertValidTopology(topology, (schema) => ctx.serde.catalog.has(schema));
  const c = ctx.config;
  await loadKafkaClient(ctx.kafka);
  const registry = createRegistry();
  const metrics = createStageMetrics(registry);
  // registered only in a process that runs a dispatcher (each metric once per registry)
  let dispatchMetrics: DispatchMetrics | undefined;
  // what every stage process's group member and producers share; the session is the stage's (below)
  const shared = {
    clientId: c.clientId,
    rebalanceTimeoutMs: c.rebalanceTimeoutMs,
    fetchMaxWaitMs: c.fetchMaxWaitMs,
    transactionTimeoutMs: c.transactionTimeoutMs,
    reconnect: { initialMs: c.reconnectBackoffMs, maxMs: Math.max(c.reconnectBackoffMs, c.reconnectBackoffMaxMs) },
  };
  const runners = names.map((name) => {
    const stage = findStage(topology, name);
    if (!stage) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${name}" (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
    const group = { ...shared, ...groupSession(c, stage) };
    if (stage.dispatch) {
      dispatchMetrics ??= createDispatchMetrics(registry);
      const dispatcher = new Dispatcher(
        ctx.kafka,
        ctx.serde,
        topology,
        stage,
        ctx.logger.child({ stage: name }),
        {
          ...group,
          queuePerWorker: c.dispatchQueuePerWorker,
          leadMs: c.dispatchLeadMs,
          agingMs: c.dispatchAgingMs,
          pollMs: c.dispatchPollMs,
          maxBacklog: c.dispatchMaxBacklog,
        },
        dispatchMetrics,
      );
      return { runner: dispatcher, handler: undefined };
    }
    if (!stage.create)
      throw new SonicError(
        'TOPOLOGY_INVALID',
        `stage "${name}" has no code: the topology declares it as data only (a stage declared with defineStage brings its handler)`,
      );
    const handler = stage.create({ ...ctx.stageDeps, registry } as never);
    const runner = new StageRunner(
      ctx.kafka,
      ctx.serde,
      topology,
      stage,
      handler,
      ctx.logger.child({ stage: name }),
      {
        ...group,
        drainTimeoutMs: c.drainTimeoutMs,
        batchMaxRecords: c.batchMaxRecords,
        batchMaxWaitMs: c.batchMaxWaitMs,
        concurrency: c.concurrency,
        storeDir: join(c.stateDir, 'stores'),
        ...(c.kafkaSaslUsername ? { principal: `User:${c.kafkaSaslUsername}` } : {}),
      },
      metrics,
    );
    return { runner, handler };
  });
  const broker = new BrokerHealth(ctx.kafka, { cacheMs: c.brokerCheckCacheMs, timeoutMs: c.brokerCheckTimeoutMs, logger: ctx.logger });
  const http = await serveMetrics(
    c.metricsPort,
    registry,
    {
      // alive while it waits for the broker; only a failed stage is dead
      live: () => runners.every((r) => r.runner.lifecycle.state !== 'failed'),
      ready: async () => runners.every((r) => r.runner.ready) && (await broker.check()),
    },
    ctx.logger,
  );
  ctx.logger.info({ metrics_port: http.port, stages: names }, 'metrics endpoint listening');
  // whatever the log level: with SONIC_METRICS_PORT=0 this is how a supervisor learns the port
  process.stdout.write(`metrics on :${http.port}/metrics\n`);
  const stopAll = (reason: string): Promise<void[]> => Promise.all(runners.map((r) => r.runner.stop(reason)));
  const onSignal = (signal: NodeJS.Signals): void => {
    ctx.logger.info({ signal }, 'signal received, draining');
    void stopAll(signal);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const stopped = new AbortController();
  const onStop = (): void => stopped.abort(new SonicError('SHUTDOWN', 'stopped before the stages started'));
  process.once('SIGTERM', onStop);
  process.once('SIGINT', onStop);
  try {
    // the broker as it is must fit the topology: every topic there, with the declared partitions
    // (waiting for an unreachable broker like the stages do; SIGTERM ends the wait)
    const admin = new TopicAdmin(ctx.kafka);
    let problems: TopologyProblem[] = [];
    try {
      await untilConnected(
        'the deployed topics',
        async () => (
          await admin.connect(),
          (problems = await deployedProblems(topology, names, admin, c.kafkaSaslUsername ? `User:${c.kafkaSaslUsername}` : undefined))
        ),
        {
          backoff: shared.reconnect,
          logger: ctx.logger,
          signal: stopped.signal,
        },
      );
    } finally {
      await admin.close().catch(() => undefined);
    }
    if (problems.length > 0) {
      throw new SonicError(
        'TOPOLOGY_INVALID',
        `the broker does not hold the topology's topics as declared:\n${problems.map((p) => `  - ${p.node}: ${p.message}`).join('\n')}`,
        { details: { problems } },
      );
    }
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    for (const r of runners) await r.runner.start();
    // resolves when all have stopped; one failing stage rejects at once and stops the others
    await Promise.all(runners.map((r) => r.runner.done));
    ctx.logger.info('stages stopped');
    return 0;
  } catch (err) {
    if (stopped.signal.aborted) {
      ctx.logger.info('stopped while waiting for the broker');
      return 0;
    }
    ctx.logger.error({ err }, 'stage crashed');
    await stopAll('crash').catch(() => undefined);
    return 1;
  } finally {
    for (const r of runners) await r.handler?.close?.().catch(() => undefined);
    http.server.close();
    await broker.close();
    await ctx.blobClose();
  }
}
