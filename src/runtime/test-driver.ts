/**
 * An in-memory, broker-free driver for unit tests of stage logic, in the spirit of Kafka Streams'
 * TopologyTestDriver. It runs the same StageProgram (decode, handler, classify, retry/DLQ routing,
 * status events) as the Kafka runner, with an in-memory registry and a fake clock: piping a record
 * in runs every stage it reaches until the pipeline is quiet; `advanceTime` makes retries due.
 *
 * State stores live in memory: each record is its own transaction, so its store writes are
 * applied once it succeeds (a failure leaves none), its changelog records are appended to the
 * changelog topics like any output, and `store(stage, name)` shows a store's contents.
 */
import { createLogger, type Logger } from '../core/logger.js';
import { SchemaCatalog } from '../serde/catalog.js';
import { MemorySerde } from '../serde/codec.js';
import { valueSubject } from '../serde/wire.js';
import { StageProgram, type RawRecord } from './program.js';
import { MemoryStores, localKey } from './stage-stores.js';
import type { StageHandler } from './stage.js';
import type { Topology } from './topology.js';

export interface DriverRecord<T = unknown> {
  topic: string;
  /** The partition a 'balanced' sink chose; 0 otherwise (the driver keeps one log per topic). */
  partition: number;
  offset: string;
  key: string | null;
  /** Decoded value; undefined when the bytes do not decode (e.g. a poison pill in a DLQ). */
  value: T | undefined;
  raw: Buffer | null;
  headers: Record<string, string>;
}

export interface DriverOptions {
  /**
   * The dependencies each stage's `create` gets (what `sonicflow run` gives a stage); stages
   * declared without code, and stages listed in `handlers`, do not need them.
   */
  deps?: unknown;
  /** Handlers by stage name, instead of building them with `create` (e.g. one with a fake backend). */
  handlers?: Record<string, StageHandler>;
  /** Runs only these stages (all with a handler by default). */
  only?: string[];
  /** Start of the fake clock, epoch ms. */
  startMs?: number;
  catalog?: SchemaCatalog;
  logger?: Logger;
}

export class TopologyTestDriver {
  readonly codec: MemorySerde;
  private clockMs: number;
  private readonly topics = new Map<string, RawRecord[]>();
  private readonly cursors = new Map<string, number>();
  private readonly programs: StageProgram<never>[];
  /** The stores of each stage that declares some, by stage name. */
  private readonly stores = new Map<string, MemoryStores>();
  /** Progress status events (outside transactions), in order. */
  readonly progressEvents: RawRecord[] = [];

  constructor(
    readonly topology: Topology,
    options: DriverOptions = {},
  ) {
    this.clockMs = options.startMs ?? Date.UTC(2026, 0, 1);
    this.codec = new MemorySerde(options.catalog ?? new SchemaCatalog());
    const logger = options.logger ?? createLogger('test-driver', 'silent');
    const handlerOf = (s: Topology['stages'][number]): StageHandler | undefined =>
      options.handlers?.[s.name] ?? (options.deps !== undefined ? s.create?.(options.deps as never) : undefined);
    this.programs = topology.stages
      .filter((s) => !options.only || options.only.includes(s.name))
      .flatMap((s) => {
        const handler = handlerOf(s);
        return handler ? [{ s, handler }] : [];
      })
      .map(
        ({ s, handler }) =>
          new StageProgram<never>(topology, s, handler as StageHandler<never>, this.codec, {
            logger: logger.child({ stage: s.name }),
            clock: () => this.clockMs,
            onProgress: (r) => void this.progressEvents.push({ ...r, partition: 0, offset: '-1' }),
          }),
      );
    for (const p of this.programs) if (p.stage.stores.length > 0) this.stores.set(p.stage.name, new MemoryStores(p.stage.stores));
  }

  /**
   * The contents of a stage's store: `get(key, partition)` (partition 0 unless the record came
   * from a 'balanced' topic) and every entry as `<partition>/<key>` → value.
   */
  store<V = unknown>(stage: string, name: string): { get(key: string, partition?: number): V | undefined; entries(): Map<string, V> } {
    const data = this.stores.get(stage)?.data.get(name);
    if (!data) throw new Error(`stage ${stage} has no store ${name} (or does not run in this driver)`);
    return { get: (key, partition = 0) => data.get(localKey(partition, key)) as V | undefined, entries: () => new Map(data) as Map<string, V> };
  }

  /** The fake clock, epoch ms. */
  now(): number {
    return this.clockMs;
  }

  /** Encodes `value` with the topic's schema, appends it, and runs the pipeline until quiet. */
  async pipeInput(topic: string, key: string, value: unknown, headers: Record<string, string> = {}): Promise<void> {
    const schema = this.topology.topics[topic]?.valueSchema;
    if (!schema) throw new Error(`topic ${topic} is not in the topology or has no schema`);
    await this.pipeRaw(topic, key, await this.codec.encode(valueSubject(topic), schema, value), headers);
  }

  /** Appends raw bytes (for poison pills), then runs the pipeline until quiet. */
  async pipeRaw(topic: string, key: string | null, value: Buffer | null, headers: Record<string, string> = {}): Promise<void> {
    this.append({ topic, key, value, headers });
    await this.run();
  }

  /** Moves the fake clock forward and handles the retries that became due. */
  async advanceTime(ms: number): Promise<void> {
    this.clockMs += ms;
    await this.run();
  }

  /** Every record of a topic, decoded with the topic's schema where possible. */
  async read<T = unknown>(topic: string): Promise<DriverRecord<T>[]> {
    const schema = this.topology.topics[topic]?.valueSchema;
    return Promise.all(
      (this.topics.get(topic) ?? []).map(async (r) => {
        let value: T | undefined;
        if (r.value && schema)
          value = await this.codec.decode<T>(r.value, schema).then(
            (d) => d.value,
            () => undefined,
          );
        return { topic, partition: r.partition, offset: r.offset, key: r.key, value, raw: r.value, headers: r.headers };
      }),
    );
  }

  /** The status events written for a task (transactional ones), in order. */
  async statuses<T = Record<string, unknown>>(taskId: string): Promise<T[]> {
    return (await this.read<T>(this.topology.statusTopic)).filter((r) => r.key === taskId).map((r) => r.value!);
  }

  private append(r: Omit<RawRecord, 'partition' | 'offset'> & { partition?: number }): void {
    const log = this.topics.get(r.topic) ?? [];
    log.push({ ...r, partition: r.partition ?? 0, offset: String(log.length), timestamp: this.clockMs });
    this.topics.set(r.topic, log);
  }

  /** Handles every record that is due, stage by stage, until nothing moves. */
  private async run(): Promise<void> {
    for (let moved = true; moved;) {
      moved = false;
      for (const program of this.programs) {
        for (const topic of [program.stage.input, ...program.stage.retry.topics]) {
          const log = this.topics.get(topic) ?? [];
          const cursorKey = `${program.stage.name}\u0000${topic}`;
          let cursor = this.cursors.get(cursorKey) ?? 0;
          while (cursor < log.length && program.dueAt(log[cursor]!) <= this.clockMs) {
            const stores = this.stores.get(program.stage.name);
            const writes = stores?.batch(log[cursor]!.partition);
            const outcome = await program.process(log[cursor]!, new AbortController().signal, writes?.forRecord());
            if (outcome.kind !== 'aborted') for (const r of outcome.records) this.append(r);
            // one record, one transaction: committed, its store writes are applied
            if (outcome.kind !== 'aborted' && writes) stores!.apply(writes);
            cursor += 1;
            moved = true;
          }
          this.cursors.set(cursorKey, cursor);
        }
      }
    }
  }
}
