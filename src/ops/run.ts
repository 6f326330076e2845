/**
 * `sonicflow run <stage>`: one stage as one process. Serves /metrics, /healthz and /readyz;
 * SIGTERM or SIGINT drains in-flight work and exits 0; a crash exits 1 with the error logged.
 */
import { SonicError } from '../core/errors.js';
import { createRegistry, createStageMetrics, serveMetrics } from '../core/metrics.js';
import { StageRunner } from '../runtime/runner.js';
import { findStage } from '../runtime/topology.js';
import type { Context } from './context.js';

export async function runStage(ctx: Context, stageName: string, file?: string): Promise<number> {
  const { topology, stages } = await ctx.pipeline(file);
  const stage = findStage(topology, stageName);
  if (!stage) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${stageName}" (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
  const definition = stages[stageName];
  if (!definition) throw new SonicError('TOPOLOGY_INVALID', `stage "${stageName}" has no handler (handlers: ${Object.keys(stages).join(', ') || 'none'})`);
  const c = ctx.config;
  const logger = ctx.logger.child({ stage: stageName });
  const registry = createRegistry({ stage: stageName });
  const runner = new StageRunner(
    ctx.kafka,
    ctx.serde,
    topology,
    stage,
    definition,
    logger,
    {
      clientId: c.clientId,
      sessionTimeoutMs: c.sessionTimeoutMs,
      heartbeatIntervalMs: c.heartbeatIntervalMs,
      rebalanceTimeoutMs: c.rebalanceTimeoutMs,
      fetchMaxWaitMs: c.fetchMaxWaitMs,
      transactionTimeoutMs: c.transactionTimeoutMs,
      drainTimeoutMs: c.drainTimeoutMs,
      batchMaxRecords: c.batchMaxRecords,
      batchMaxWaitMs: c.batchMaxWaitMs,
      concurrency: c.concurrency,
    },
    createStageMetrics(registry),
  );
  const http = await serveMetrics(
    c.metricsPort,
    registry,
    { live: () => runner.lifecycle.state !== 'failed', ready: () => runner.lifecycle.state === 'running' },
    logger,
  );
  logger.info({ metrics_port: http.port }, 'metrics endpoint listening');
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.info({ signal }, 'signal received, draining');
    void runner.stop(signal);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  try {
    await runner.start();
    await runner.done;
    logger.info('stage stopped');
    return 0;
  } catch (err) {
    logger.error({ err }, 'stage crashed');
    await runner.stop('crash').catch(() => undefined);
    return 1;
  } finally {
    await definition.close?.().catch(() => undefined);
    http.server.close();
  }
}
