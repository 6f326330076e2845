/**
 * notify: turns every ended task (tasks.completed) with a callback into a signed Standard Webhooks
 * event, `video.succeeded` or `video.failed`. It has its own retry tiers and DLQ and writes no task
 * status: a webhook that keeps failing never fails the task.
 */
import { SonicError } from '../core/errors.js';
import { defineStage } from '../runtime/stage.js';
import type { StageDeps } from './common.js';
import type { TaskCompleted } from './records.js';
import { deliver } from './webhook.js';

/** The signing secret for a callback: the named one, or the default. */
export function secretFor(config: StageDeps['config'], ref: string | null): string {
  if (ref) {
    const entry = config.webhookSecrets.find((s) => s.startsWith(`${ref}=`));
    if (!entry) throw new SonicError('CONFIG_INVALID', `callback secret_ref "${ref}" is not in SONIC_WEBHOOK_SECRETS`);
    return entry.slice(ref.length + 1);
  }
  if (!config.webhookSecret) throw new SonicError('CONFIG_INVALID', 'no webhook signing secret: set SONIC_WEBHOOK_SECRET (whsec_...)');
  return config.webhookSecret;
}

export function notifyStage(deps: StageDeps) {
  return defineStage<TaskCompleted>({
    name: 'notify',
    runningState: 'SUCCEEDED',
    doneState: 'SUCCEEDED',
    async handle(rec, ctx) {
      const v = rec.value;
      const callback = v.request.callback;
      if (!callback) return {};
      const succeeded = v.outcome === 'SUCCEEDED';
      const status = await deliver(
        callback.url,
        {
          id: `msg_${rec.taskId}_${v.outcome.toLowerCase()}`,
          type: succeeded ? 'video.succeeded' : 'video.failed',
          data: {
            task_id: rec.taskId,
            status: v.outcome,
            video_url: v.video_url,
            duration_s: v.duration_s,
            error: v.error,
            metadata: v.request.metadata,
            completed_at: v.completed_at.toISOString(),
          },
        },
        { secret: secretFor(deps.config, callback.secret_ref), allowHosts: deps.config.webhookAllowHosts, timeoutMs: deps.config.webhookTimeoutMs },
      );
      ctx.logger.info({ url_host: new URL(callback.url).host, status, attempt: rec.attempt }, 'webhook delivered');
      return {};
    },
  });
}
