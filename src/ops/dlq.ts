/**
 * `sonicflow dlq list|show|replay <stage>`: inspect a stage's dead letters (values decoded through
 * the registry, context headers printed) and re-inject selected ones into the stage's input.
 * A replay starts the record afresh (attempt 1), records itself in `sonicflow.replay.*` headers,
 * and is written in one transaction, so a replay is all-or-nothing.
 */
import { SonicError } from '../core/errors.js';
import { readTopic, TxProducer, type InRecord } from '../kafka/io.js';
import { HEADERS, replayHeaders } from '../runtime/headers.js';
import { readerGroupPrefix, transactionalId } from '../runtime/names.js';
import { findStage, type StageSpec, type Topology } from '../runtime/topology.js';
import type { Context } from '../app/context.js';

export interface ReplaySelection {
  all?: boolean;
  taskIds?: string[];
  code?: string;
}

function stageOf(t: Topology, name: string): StageSpec {
  const s = findStage(t, name);
  if (!s) throw new SonicError('TOPOLOGY_INVALID', `no stage named "${name}" (stages: ${t.stages.map((x) => x.name).join(', ')})`);
  return s;
}

/** Every record of the stage's DLQ, oldest first per partition; read with a throw-away group under the deployment's reader prefix (the operators' ACL). */
export async function readDlq(ctx: Context, t: Topology, stage: string): Promise<InRecord[]> {
  const s = stageOf(t, stage);
  const records = await readTopic(ctx.kafka, s.dlq, { idleMs: 1500, timeoutMs: 60_000, groupPrefix: readerGroupPrefix(ctx.config.clientId, t) });
  return records.sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
}

/** One line per dead letter. */
export function formatList(records: InRecord[]): string {
  if (records.length === 0) return 'The DLQ is empty.\n';
  const rows = records.map((r) => {
    const h = r.headers;
    const at = h[HEADERS.failedAtMs] ? new Date(Number(h[HEADERS.failedAtMs])).toISOString() : '-';
    return [
      `${r.partition}:${r.offset}`,
      r.key ?? '-',
      h[HEADERS.errorCode] ?? '-',
      h[HEADERS.dlqReason] ?? '-',
      h[HEADERS.attempt] ?? '-',
      at,
      (h[HEADERS.errorMessage] ?? '').slice(0, 60),
    ];
  });
  const head = ['POSITION', 'TASK', 'CODE', 'REASON', 'ATTEMPT', 'FAILED AT', 'MESSAGE'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return `${[line(head), ...rows.map(line)].join('\n')}\n${records.length} dead letter(s)\n`;
}

/** Headers and the value decoded through the registry (or the raw bytes when they do not decode). */
export async function formatShow(ctx: Context, r: InRecord): Promise<string> {
  const lines = [`position: ${r.topic} ${r.partition}:${r.offset}`, `key: ${r.key ?? '(none)'}`, 'headers:'];
  for (const [k, v] of Object.entries(r.headers).sort()) lines.push(`  ${k}: ${v.includes('\n') ? `\n    ${v.split('\n').join('\n    ')}` : v}`);
  if (!r.value) lines.push('value: (null)');
  else {
    try {
      const { value, schemaId } = await ctx.serde.decode(r.value);
      lines.push(`value (schema id ${schemaId}):`, JSON.stringify(value, null, 2));
    } catch (err) {
      lines.push(
        `value: ${r.value.length} bytes that do not decode (${(err as Error).message})`,
        `  hex: ${r.value.subarray(0, 64).toString('hex')}${r.value.length > 64 ? '…' : ''}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

/** The dead letters a selection picks. Refuses an empty selection: say --all to mean all. */
export function select(records: InRecord[], sel: ReplaySelection): InRecord[] {
  if (!sel.all && !sel.taskIds?.length && !sel.code) {
    throw new SonicError('INVALID_REQUEST', 'say what to replay: --all, --task-id <id> or --code <ERROR_CODE>');
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
