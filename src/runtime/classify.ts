/**
 * The one place that decides what happens to a failed record: the next retry tier, or the DLQ.
 * Permanent errors (codes marked not retryable, and bugs such as TypeError, which become
 * INTERNAL) go to the DLQ at once; retryable ones go to the next tier until the stage's (or the
 * code's) attempts are used up. A code that stops the stage (a deployment fault such as a model
 * that cannot load, see `stopsStage`) goes nowhere: the runner stops with the batch uncommitted.
 */
import { maxAttemptsFor, stopsStage, toSonicError, type SonicError } from '../core/errors.js';
import type { RetrySpec } from './topology.js';

export type Decision =
  | { action: 'retry'; error: SonicError; tier: number; delayMs: number }
  | { action: 'dlq'; error: SonicError; reason: 'permanent' | 'exhausted' }
  | { action: 'stop'; error: SonicError };

/**
 * @param attempt the attempt that failed, 1 for the first try
 * @param retry the stage's tiers and attempt limit
 */
export function classify(err: unknown, attempt: number, retry: Pick<RetrySpec, 'delaysMs' | 'maxAttempts'>): Decision {
  const error = toSonicError(err);
  if (stopsStage(error)) return { action: 'stop', error };
  if (!error.retryable) return { action: 'dlq', error, reason: 'permanent' };
  const limit = Math.min(retry.maxAttempts, maxAttemptsFor(error.code) ?? Number.POSITIVE_INFINITY);
  if (attempt >= limit || retry.delaysMs.length === 0) return { action: 'dlq', error, reason: 'exhausted' };
  // attempt n failed -> tier n; beyond the last tier, the last tier again
  const tier = Math.min(attempt, retry.delaysMs.length);
  return { action: 'retry', error, tier, delayMs: retry.delaysMs[tier - 1]! };
}
