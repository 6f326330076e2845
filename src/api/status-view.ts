/**
 * The API's view of every task, materialised from the compacted status topic (a KTable): the
 * latest event per task id, with a change stream (rxjs) that feeds the SSE endpoint. Events of
 * one task arrive in order (same key, same partition); a stale best-effort progress event never
 * moves a task backwards past a later state.
 */
import { Subject, type Observable } from 'rxjs';
import type { Logger } from '../core/logger.js';
import type { KafkaClient } from '../kafka/client.js';
import { TopicTail, type InRecord } from '../kafka/io.js';
import type { TaskState, TaskStatus } from '../domain/records.js';
import type { Codec } from '../serde/codec.js';

/** One status event: the value of the status topic (generated from schemas/task-status.avsc). */
export type StatusEvent = TaskStatus;

export interface TaskView {
  task_id: string;
  state: TaskState;
  stage: string | null;
  progress: number | null;
  attempt: number;
  error: { code: string; message: string; retryable: boolean } | null;
  result_url: string | null;
  tenant_id: string | null;
  created_at: string | null;
  updated_at: string;
}

export const TERMINAL: ReadonlySet<TaskState> = new Set(['SUCCEEDED', 'FAILED']);
const RANK: Record<TaskState, number> = { QUEUED: 0, VALIDATING: 1, PREPROCESSING: 2, INFERRING: 3, ENCODING: 4, PUBLISHING: 5, SUCCEEDED: 6, FAILED: 6 };

/** Whether `next` should replace `current` in the view. */
export function supersedes(current: StatusEvent | undefined, next: StatusEvent): boolean {
  if (!current) return true;
  if (current.state === 'SUCCEEDED') return false;
  // a DLQ replay restarts a FAILED task: later events win
  if (current.state === 'FAILED') return next.at.getTime() > current.at.getTime();
  if (RANK[next.state] < RANK[current.state] && next.error_code === null) return next.at.getTime() > current.at.getTime() && next.progress === null;
  return true;
}

export function toView(e: StatusEvent): TaskView {
  return {
    task_id: e.task_id,
    state: e.state,
    stage: e.stage,
    progress: e.progress,
    attempt: e.attempt,
    error: e.error_code ? { code: e.error_code, message: e.error_message ?? '', retryable: e.retryable ?? false } : null,
    result_url: e.result_url,
    tenant_id: e.tenant_id,
    created_at: e.created_at ? e.created_at.toISOString() : null,
    updated_at: e.at.toISOString(),
  };
}

export class StatusView {
  private readonly tasks = new Map<string, StatusEvent>();
  private readonly subject = new Subject<StatusEvent>();
  private readonly tail: TopicTail;
  /** Every accepted change, in order. */
  readonly changes$: Observable<StatusEvent> = this.subject.asObservable();

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

  private isCaughtUp = false;

  /** Resolves once the view has read what the topic held when it started. */
  get caughtUp(): Promise<void> {
    return this.tail.caughtUp;
  }

  /** True once `caughtUp` has resolved. */
  get ready(): boolean {
    return this.isCaughtUp;
  }

  get size(): number {
    return this.tasks.size;
  }

  async start(): Promise<void> {
    void this.tail.caughtUp.then(() => (this.isCaughtUp = true));
    let chain = Promise.resolve();
    await this.tail.start((records) => {
      // decode in order, one batch after the other
      chain = chain.then(() => this.ingest(records)).catch((err: unknown) => this.logger.error({ err }, 'status batch not applied'));
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

  /** Applies one event (also used by the API for its own QUEUED events: read your writes). */
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
