/**
 * Dead letters, shared by `sonicflow dlq` (src/ops) and the console (src/api): read a stage's DLQ,
 * pick dead letters (all, by task id, by error code), decode one through the registry, and replay
 * them into the stage's input. A replay starts the record afresh (attempt 1), records itself in
 * `sonicflow.replay.*` headers, and is written in one transaction, so a replay is all-or-nothing.
 */
import { SonicError } from '../core/errors.js';
import { readTopic, TxProducer, type InRecord } from '../kafka/io.js';
import { HEADERS, replayHeaders } from '../runtime/headers.js';
import { readerGroupPrefix, transactionalId } from '../runtime/names.js';
import { findStage, type StageSpec, type Topology } from '../runtime/topology.js';
import { isTaskId } from '../domain/ids.js';
import type { TaskStatus } from '../domain/records.js';
import { statusEvent } from '../domain/status-event.js';
import { valueSubject } from '../serde/wire.js';
import type { Context } from './context.js';

export interface ReplaySelection {
  all?: boolean;
  taskIds?: string[];
  code?: string;
}

export function stageOf(t: Topology, name: string): StageSpec {
  const s = findStage(t, name);
  if (!s) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${name}" (stages: ${t.stages.map((x) => x.name).join(', ')})`);
  return s;
}

/** Every record of the stage's DLQ, oldest first per partition; read with a throw-away group under the deployment's reader prefix (the operators' ACL). */
export async function readDlq(ctx: Context, t: Topology, stage: string, o: { idleMs?: number } = {}): Promise<InRecord[]> {
  const s = stageOf(t, stage);
  const records = await readTopic(ctx.kafka, s.dlq, { idleMs: o.idleMs ?? 1500, timeoutMs: 60_000, groupPrefix: readerGroupPrefix(ctx.config.clientId, t) });
  return records.sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
}

/** A dead letter's value decoded through the registry, or why it does not decode (with its first bytes). */
export async function decodeDeadLetter(
  ctx: Context,
  r: InRecord,
): Promise<{ value: unknown; schemaId: number } | { undecodable: string; bytes: number; hex: string } | null> {
  if (!r.value) return null;
  try {
    const { value, schemaId } = await ctx.serde.decode(r.value);
    return { value, schemaId };
  } catch (err) {
    return { undecodable: (err as Error).message, bytes: r.value.length, hex: `${r.value.subarray(0, 64).toString('hex')}${r.value.length > 64 ? '…' : ''}` };
  }
}

/** The dead letters a selection picks. Refuses an empty selection: say --all to mean all. */
export function select(records: InRecord[], sel: ReplaySelection): InRecord[] {
  if (!sel.all && !sel.taskIds?.length && !sel.code) {
    throw new SonicError('INVALID_REQUEST', 'say what to replay: --all, --task-id <id> or --code <ERROR_CODE>', { safe: true });
  }
  return records.filter(
    (r) => (sel.all || !sel.taskIds?.length || (r.key !== null && sel.taskIds.includes(r.key))) && (!sel.code || r.headers[HEADERS.errorCode] === sel.code),
  );
}

/** The status event a replay writes for a task: QUEUED again, `replayed_by` who replayed it. */
export function replayedEvent(taskId: string, by: string, nowMs: number): TaskStatus {
  return statusEvent({ task_id: taskId, state: 'QUEUED', at: new Date(nowMs), replayed_by: by });
}

/**
 * Re-injects the picked dead letters into the stage's input topic in one transaction. `by` (the
 * console key's id, never the key; `cli` for `sonicflow dlq replay`) goes in `sonicflow.replay.by`
 * and, when the topology's status topic carries task-status events, on a QUEUED event per task
 * written in the same transaction: the task's timeline shows who replayed it and when, and the task
 * is no longer FAILED once the replay is committed.
 */
export async function replay(ctx: Context, t: Topology, stage: string, picked: InRecord[], by = 'cli'): Promise<void> {
  if (picked.length === 0) return;
  const s = stageOf(t, stage);
  const now = Date.now();
  const statusSchema = t.topics[t.statusTopic]?.valueSchema;
  const tasks = statusSchema === 'task-status' ? [...new Set(picked.map((r) => r.key))].filter((k): k is string => k !== null && isTaskId(k)) : [];
  const status = await Promise.all(
    tasks.map(async (id) => ({ key: id, value: await ctx.serde.encode(valueSubject(t.statusTopic), statusSchema!, replayedEvent(id, by, now)) })),
  );
  const producer = await new TxProducer(ctx.kafka, transactionalId(ctx.config.clientId, { kind: 'dlq-replay', topology: t, stage: s })).connect();
  try {
    await producer.inTransaction(async (send) => {
      await send(
        s.input,
        picked.map((r) => ({
          key: r.key,
          value: r.value,
          headers: replayHeaders(r.headers, { topic: r.topic, partition: r.partition, offset: r.offset }, now, by),
        })),
      );
      if (status.length) await send(t.statusTopic, status);
    });
  } finally {
    await producer.close();
  }
}
