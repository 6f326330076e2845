/**
 * The routing core shared by the Kafka runner and the topology test driver: decode one input
 * record, run the handler, and turn its result or failure into the records one transaction must
 * write (outputs, status event, retry or DLQ record). No Kafka here, so both drivers run exactly
 * this code.
 */
import { SonicError, toSonicError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { InRecord } from '../kafka/io.js';
import type { Codec } from '../serde/codec.js';
import { valueSubject } from '../serde/wire.js';
import { classify, type Decision } from './classify.js';
import { HEADERS, attemptOf, childTraceparent, dueOf, failureHeaders, type FailureContext } from './headers.js';
import type { Emit, KeyValueStore, StageHandler, StageRecord, StatusFields, StatusPhase, StatusHook } from './stage.js';
import type { StageSpec, Topology } from './topology.js';

/** A record as read from a topic (the test driver's records carry no timestamp). */
export type RawRecord = Omit<InRecord, 'timestamp'> & { timestamp?: number };

/** A record to write. */
export interface Produced {
  topic: string;
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
  /** Set for sinks partitioned 'balanced'; otherwise the producer partitions by key. */
  partition?: number;
}

/**
 * A record's view of its stage's state stores (see stage-stores.ts): `keep` turns its writes into
 * changelog records of its transaction, `discard` forgets them.
 */
export interface RecordStores {
  readonly view: Readonly<Record<string, KeyValueStore>>;
  keep(): Produced[];
  discard(): void;
}

const NO_STORES: Readonly<Record<string, KeyValueStore>> = Object.freeze({});

export type Outcome =
  | {
      kind: 'ok' | 'retry' | 'dlq';
      /** Set when the handler dropped the record on purpose (`StageResult.skip`): why. */
      skipped?: string;
      taskId: string | null;
      /** Everything the transaction writes for this input, in order. */
      records: Produced[];
      decision?: Decision;
      handlerMs: number;
    }
  | { kind: 'aborted'; taskId: string | null; handlerMs: number };

export interface ProgramOptions {
  logger: Logger;
  /** Epoch ms; a fake clock in the test driver. */
  clock?: () => number;
  /** Receives best-effort progress status events (outside the transaction). */
  onProgress?: (record: Produced) => void;
}

export class StageProgram<In = unknown> {
  readonly inputSchema: string;
  private readonly sinks: Map<string, { topic: string; schema: string; balanced?: { partitions: number; next: number } }>;
  private readonly statusSchema: string | undefined;
  private readonly statusHook: StatusHook | undefined;
  private readonly retryTopics: Set<string>;
  private readonly clock: () => number;

  constructor(
    readonly topology: Topology,
    readonly stage: StageSpec,
    readonly handler: StageHandler<In>,
    private readonly codec: Codec,
    private readonly options: ProgramOptions,
  ) {
    const schemaOf = (topic: string): string => {
      const schema = topology.topics[topic]?.valueSchema;
      if (!schema) throw new SonicError('TOPOLOGY_INVALID', `topic ${topic} of stage ${stage.name} has no value schema`);
      return schema;
    };
    this.inputSchema = schemaOf(stage.input);
    this.sinks = new Map(
      Object.entries(stage.outputs).map(([sink, topic]) => {
        const spec = topology.topics[topic];
        // round robin from a random start, so that several processes do not all begin at partition 0
        const balanced = spec?.partitioning === 'balanced' ? { partitions: spec.partitions, next: Math.floor(Math.random() * spec.partitions) } : undefined;
        return [sink, { topic, schema: schemaOf(topic), ...(balanced ? { balanced } : {}) }];
      }),
    );
    this.statusSchema = stage.emitsStatus ? schemaOf(topology.statusTopic) : undefined;
    this.statusHook = topology.statusHook;
    if (this.statusSchema && !this.statusHook)
      throw new SonicError('TOPOLOGY_INVALID', `stage ${stage.name} writes status events but the topology has no status hook`);
    this.retryTopics = new Set(stage.retry.topics);
    this.clock = options.clock ?? Date.now;
  }

  /** True for the stage's retry tier topics. */
  isRetryTopic(topic: string): boolean {
    return this.retryTopics.has(topic);
  }

  /** When a record may be processed: its due time on a retry tier, at once otherwise. */
  dueAt(raw: RawRecord): number {
    return this.isRetryTopic(raw.topic) ? dueOf(raw.headers) : 0;
  }

  /**
   * Runs one record through the handler and routes the result. Never throws for record-level
   * failures; throws a handler's error that stops the stage (`stopsStage`: a deployment fault). `stores` is the record's view of the stage's stores (stages that declare some):
   * its writes join the outcome's records when the handler succeeds, and are dropped otherwise.
   */
  async process(raw: RawRecord, signal: AbortSignal, stores?: RecordStores): Promise<Outcome> {
    try {
      const outcome = await this.route(raw, signal, stores);
      if (outcome.kind === 'ok' && stores) outcome.records.push(...stores.keep());
      return outcome;
    } finally {
      stores?.discard(); // no-op once kept
    }
  }

  private async route(raw: RawRecord, signal: AbortSignal, stores: RecordStores | undefined): Promise<Outcome> {
    const taskId = raw.key;
    const attempt = attemptOf(raw.headers);
    // most records log nothing: the per-record child logger is made on first use only
    let child: Logger | undefined;
    const parent = this.options.logger;
    const log = (): Logger => (child ??= parent.child({ task_id: taskId, topic: raw.topic, partition: raw.partition, offset: raw.offset, attempt }));
    let value: In;
    try {
      if (raw.value === null) throw new SonicError('DESERIALIZATION_FAILED', 'record has no value (tombstone)');
      if (taskId === null) throw new SonicError('DESERIALIZATION_FAILED', 'record has no key; keys are task ids');
      value = (await this.codec.decode<In>(raw.value, this.inputSchema)).value;
    } catch (err) {
      const error = toSonicError(err);
      if (error.code !== 'DESERIALIZATION_FAILED') throw err; // registry unreachable: not the record's fault
      log().warn({ err: error }, 'undecodable record sent to the DLQ');
      return this.toDlq(raw, attempt, error, 'undecodable', 0, {});
    }

    const started = this.clock();
    const traceparent = childTraceparent(raw.headers[HEADERS.traceparent]);
    const extra: StatusFields = this.handler.statusOf?.(value) ?? {};
    const record: StageRecord<In> = {
      key: taskId,
      value,
      attempt,
      topic: raw.topic,
      partition: raw.partition,
      offset: raw.offset,
      headers: raw.headers,
    };
    if (this.handler.reportStart) this.emitProgress(taskId, attempt, 0, extra);
    try {
      const result = await this.handler.handle(record, {
        stage: this.stage.name,
        signal,
        stores: stores?.view ?? NO_STORES,
        get logger() {
          return log();
        },
        now: () => new Date(this.clock()),
        progress: (fraction) => this.emitProgress(taskId, attempt, fraction, extra),
      });
      const handlerMs = this.clock() - started;
      if (signal.aborted) return { kind: 'aborted', taskId, handlerMs };
      // dropped on purpose: nothing is written for it but its store writes
      if (result.skip !== undefined) return { kind: 'ok', skipped: result.skip, taskId, records: [], handlerMs };
      const records = await this.encodeEmits(result.emit ?? [], taskId, traceparent);
      const status = await this.status(taskId, 'succeeded', { fields: { ...extra, ...result.status }, attempt }, traceparent);
      if (status) records.push(status);
      return { kind: 'ok', taskId, records, handlerMs };
    } catch (err) {
      const handlerMs = this.clock() - started;
      if (signal.aborted) return { kind: 'aborted', taskId, handlerMs };
      const decision = classify(err, attempt, this.stage.retry);
      // not the record's fault: nothing is written for it, the runner stops the stage (runner.ts)
      if (decision.action === 'stop') throw decision.error;
      if (decision.action === 'dlq') {
        log().warn({ err: decision.error, reason: decision.reason }, 'record sent to the DLQ');
        const dead = await this.toDlq(raw, attempt, decision.error, decision.reason, handlerMs, extra, decision);
        if (dead.kind === 'dlq') dead.records.push(...(await this.failureEmits(record, decision.error, traceparent, log())));
        return dead;
      }
      const now = this.clock();
      const dueMs = now + decision.delayMs;
      log().info({ err: decision.error, tier: decision.tier, due_ms: dueMs }, 'record sent to a retry tier');
      const headers = this.failureHeaders(raw, attempt, decision.error, now, { dueMs, tier: decision.tier });
      const records: Produced[] = [{ topic: this.stage.retry.topics[decision.tier - 1]!, key: raw.key, value: raw.value, headers }];
      const status = await this.status(taskId, 'retrying', { fields: extra, attempt: attempt + 1, error: decision.error }, traceparent);
      if (status) records.push(status);
      return { kind: 'retry', taskId, records, decision, handlerMs };
    }
  }

  /** The failure headers of `raw` failing in this stage (retry tier or DLQ, per `routing`). */
  private failureHeaders(
    raw: RawRecord,
    attempt: number,
    error: SonicError,
    nowMs: number,
    routing: Pick<FailureContext, 'dueMs' | 'tier' | 'dlqReason'>,
  ): Record<string, string> {
    return failureHeaders(raw.headers, {
      stage: this.stage.name,
      topic: raw.topic,
      partition: raw.partition,
      offset: raw.offset,
      attempt,
      error,
      nowMs,
      ...routing,
    });
  }

  /** Encodes a handler's emits for their sinks. */
  private async encodeEmits(emits: Emit[], taskId: string, traceparent: string): Promise<Produced[]> {
    const records: Produced[] = [];
    for (const e of emits) {
      const sink = this.sinks.get(e.sink);
      if (!sink) throw new SonicError('INTERNAL', `stage ${this.stage.name} has no sink named "${e.sink}" (sinks: ${[...this.sinks.keys()].join(', ')})`);
      records.push({
        topic: sink.topic,
        key: e.key ?? taskId,
        value: await this.codec.encode(valueSubject(sink.topic), sink.schema, e.value),
        headers: { ...e.headers, [HEADERS.traceparent]: traceparent },
        ...(sink.balanced ? { partition: sink.balanced.next++ % sink.balanced.partitions } : {}),
      });
    }
    return records;
  }

  /** What the stage wants published when a task fails for good (e.g. a failure outcome for webhooks). */
  private async failureEmits(record: StageRecord<In>, error: SonicError, traceparent: string, log: Logger): Promise<Produced[]> {
    if (!this.handler.onFailure) return [];
    try {
      const ctx = { stage: this.stage.name, now: () => new Date(this.clock()) };
      return await this.encodeEmits(this.handler.onFailure(record, error, ctx).emit ?? [], record.key, traceparent);
    } catch (err) {
      log.error({ err }, 'onFailure hook failed; the DLQ record is written without its failure outputs');
      return [];
    }
  }

  private async toDlq(
    raw: RawRecord,
    attempt: number,
    error: SonicError,
    reason: 'permanent' | 'exhausted' | 'undecodable',
    handlerMs: number,
    extra: StatusFields,
    decision?: Decision,
  ): Promise<Outcome> {
    const headers = this.failureHeaders(raw, attempt, error, this.clock(), { dlqReason: reason });
    const records: Produced[] = [{ topic: this.stage.dlq, key: raw.key, value: raw.value, headers }];
    if (raw.key !== null) {
      const status = await this.status(raw.key, 'failed', { fields: extra, attempt, error }, childTraceparent(raw.headers[HEADERS.traceparent]));
      if (status) records.push(status);
    }
    return { kind: 'dlq', taskId: raw.key, records, handlerMs, ...(decision ? { decision } : {}) };
  }

  /** The status event of a transition, built by the topology's hook; none when the stage writes none. */
  private async status(
    key: string,
    phase: StatusPhase,
    t: { fields: StatusFields; attempt: number; progress?: number; error?: SonicError },
    traceparent: string,
  ): Promise<Produced | undefined> {
    if (!this.statusSchema || !this.statusHook) return undefined;
    const value = this.statusHook.event({ stage: this.stage.name, key, phase, ...t, at: new Date(this.clock()) });
    if (value === undefined) return undefined;
    return {
      topic: this.topology.statusTopic,
      key,
      value: await this.codec.encode(valueSubject(this.topology.statusTopic), this.statusSchema, value),
      headers: { [HEADERS.traceparent]: traceparent },
    };
  }

  private emitProgress(taskId: string, attempt: number, fraction: number, extra: StatusFields): void {
    const sink = this.options.onProgress;
    if (!sink || !Number.isFinite(fraction)) return;
    const progress = Math.min(1, Math.max(0, fraction));
    this.status(taskId, 'progress', { fields: extra, attempt, progress }, childTraceparent(undefined))
      .then((r) => r && sink(r))
      .catch((err: unknown) => this.options.logger.warn({ err }, 'progress event dropped'));
  }
}
