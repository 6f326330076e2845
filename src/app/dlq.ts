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

/** Re-injects the picked dead letters into the stage's input topic in one transaction. */
export async function replay(ctx: Context, t: Topology, stage: string, picked: InRecord[]): Promise<void> {
  if (picked.length === 0) return;
  const s = stageOf(t, stage);
  const producer = await new TxProducer(ctx.kafka, transactionalId(ctx.config.clientId, { kind: 'dlq-replay', topology: t, stage: s })).connect();
  try {
    const now = Date.now();
    await producer.inTransaction(async (send) => {
      await send(
        s.input,
        picked.map((r) => ({
          key: r.key,
          value: r.value,
          headers: replayHeaders(r.headers, { topic: r.topic, partition: r.partition, offset: r.offset }, now),
        })),
      );
    });
  } finally {
    await producer.close();
  }
}
