/**
 * What a stage author writes: a StageDefinition with one handler `(record, ctx) => result`.
 * The runtime turns it into a correct consumer/producer (exactly-once hops, retries, DLQ);
 * the handler never sees Kafka.
 */
import type { SonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

export type TaskState = 'QUEUED' | 'VALIDATING' | 'PREPROCESSING' | 'INFERRING' | 'ENCODING' | 'PUBLISHING' | 'SUCCEEDED' | 'FAILED';

/** One input record, decoded. */
export interface StageRecord<V = unknown> {
  /** The record key: the task id. */
  taskId: string;
  value: V;
  /** 1 on the first try, +1 per retry. */
  attempt: number;
  topic: string;
  partition: number;
  offset: string;
  headers: Readonly<Record<string, string>>;
}

export interface StageContext {
  readonly stage: string;
  /** Fires when the partition is revoked or the process stops: stop work, the result is dropped. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** Reports progress in [0, 1] as a status event (best effort, outside the transaction). */
  progress(fraction: number): void;
  now(): Date;
}

/** What `onFailure` may use: the stage's clock (the test driver's fake one under test). */
export interface FailureContext {
  readonly stage: string;
  now(): Date;
}

/** Fields a handler may add to its status event. */
export interface StatusExtra {
  result_url?: string | null;
  tenant_id?: string | null;
  created_at?: Date | null;
  progress?: number | null;
}

export interface Emit {
  /** Sink name from the topology (e.g. `validated`). */
  sink: string;
  value: unknown;
  /** Defaults to the input's key (the task id). */
  key?: string;
  headers?: Record<string, string>;
}

export interface StageResult {
  emit?: Emit[];
  status?: StatusExtra;
}

export interface StageDefinition<In = unknown> {
  name: string;
  /** State shown while the stage works on a task, and while its retries wait. */
  runningState: TaskState;
  /** State written when the stage succeeds. */
  doneState: TaskState;
  /**
   * Does the work. Throw a SonicError with a code to fail: retryable codes go to the retry tiers,
   * others to the DLQ. Anything else thrown is a bug (INTERNAL, DLQ at once).
   */
  handle(record: StageRecord<In>, ctx: StageContext): Promise<StageResult>;
  /** Emit a progress-0 status event when work on a record starts (for long stages such as infer). */
  reportStart?: boolean;
  /** Optional fields for every status event of a task, from its input value (tenant, created time). */
  statusOf?(value: In): StatusExtra;
  /**
   * Called when a task fails for good in this stage (permanent error or retries exhausted), with
   * the decoded record: its emits are published in the same transaction as the DLQ record
   * (for example a FAILED outcome that turns into a webhook).
   */
  onFailure?(record: StageRecord<In>, error: SonicError, ctx: FailureContext): StageResult;
  /** Releases resources when the process stops. */
  close?(): Promise<void>;
}

/** Identity helper that keeps the handler's input type. */
export function defineStage<In>(def: StageDefinition<In>): StageDefinition<In> {
  return def;
}
