/**
 * `sonicflow dlq list|show|replay <stage>`: inspect a stage's dead letters (values decoded through
 * the registry, context headers printed) and re-inject selected ones into the stage's input.
 * A replay starts the record afresh (attempt 1), records itself in `sonicflow.replay.*` headers,
 * and is written in one transaction, so a replay is all-or-nothing.
 */
import type { InRecord } from '../kafka/io.js';
import { HEADERS } from '../runtime/headers.js';
import type { Context } from '../app/context.js';
import { decodeDeadLetter } from '../app/dlq.js';

// reading, selecting and replaying live in src/app/dlq.ts, shared with the console
export { readDlq, replay, select, type ReplaySelection } from '../app/dlq.js';

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
  const d = await decodeDeadLetter(ctx, r);
  if (!d) lines.push('value: (null)');
  else if ('undecodable' in d) lines.push(`value: ${d.bytes} bytes that do not decode (${d.undecodable})`, `  hex: ${d.hex}`);
  else lines.push(`value (schema id ${d.schemaId}):`, JSON.stringify(d.value, null, 2));
  return `${lines.join('\n')}\n`;
}
