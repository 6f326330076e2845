/**
 * notify: turns every ended task (tasks.completed) with a callback into a signed Standard Webhooks
 * event, `video.succeeded` or `video.failed`. It has its own retry tiers and DLQ and writes no task
 * status: a webhook that keeps failing never fails the task. It also removes a succeeded task's
 * intermediates (see intermediates.ts): it reads tasks.completed read_committed, so publish's
 * output is durable by then and no redo of publish can need them.
 */
import { Counter } from 'prom-client';
import { defineStage } from '../runtime/stage.js';
import type { StageDeps } from './common.js';
import { resolveWebhookSecret } from '../domain/callbacks.js';
import { TOPICS } from './topics.js';
import { dropIntermediates } from './intermediates.js';
import { deliver } from './webhook.js';

/**
 * The notify stage (outside the task path: no task state). The signing secret resolves within the task's tenant only
 * (CALLBACK_SECRET_UNKNOWN, permanent: straight to the DLQ); a delivery is bounded by
 * SONIC_WEBHOOK_TIMEOUT_MS and ends at once when the stage stops or loses the partition.
 */
export const notify = defineStage({
  name: 'notify',
  doc: 'Delivers Standard Webhooks events; a failing receiver never fails the task.',
  input: TOPICS.completed,
  emitsStatus: false,
  concurrency: 8,
  retry: { delaysMs: [5_000, 30_000, 120_000, 600_000], maxAttempts: 5 },
  scaling: { maxReplicas: 2, lagThreshold: 100, targetDrainSeconds: 60 },
  resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '500m', memory: '256Mi' } },
  create: (deps: StageDeps) => {
    const cleanupFailures = new Counter({
      name: 'sonicflow_intermediates_cleanup_failures_total',
      help: "Succeeded tasks whose intermediates could not be removed (they stay until the task's retention).",
      registers: deps.registry ? [deps.registry] : [],
    });
    return {
      async handle(rec, ctx) {
        const v = rec.value;
        // before the webhook: a delivery that fails is retried, and deleting again finds nothing (or what a failed try left)
        if (v.outcome === 'SUCCEEDED') {
          await dropIntermediates(deps.blob, rec.key).then(
            (removed) => ctx.logger.debug({ removed }, 'intermediates removed'),
            (err: unknown) => {
              // never fails the task or the webhook: retention removes them later
              cleanupFailures.inc();
              ctx.logger.warn({ err }, 'intermediates not removed; they stay until the task expires');
            },
          );
        }
        const callback = v.request.callback;
        if (!callback) return {};
        const secret = resolveWebhookSecret(deps.config, v.request.tenant_id, callback.secret_ref);
        const succeeded = v.outcome === 'SUCCEEDED';
        const status = await deliver(
          callback.url,
          {
            id: `msg_${rec.key}_${v.outcome.toLowerCase()}`,
            type: succeeded ? 'video.succeeded' : 'video.failed',
            data: {
              task_id: rec.key,
              status: v.outcome,
              video_url: v.video_url,
              duration_s: v.duration_s,
              // the stages put only the client-safe message here (publicError); nothing else is copied
              error: v.error ? { code: v.error.code, message: v.error.message, retryable: v.error.retryable } : null,
              metadata: v.request.metadata,
              completed_at: v.completed_at.toISOString(),
            },
          },
          { secret, allowHosts: deps.config.webhookAllowHosts, timeoutMs: deps.config.webhookTimeoutMs, signal: ctx.signal },
        );
        ctx.logger.info({ url_host: new URL(callback.url).host, status, attempt: rec.attempt }, 'webhook delivered');
        return {};
      },
    };
  },
});
