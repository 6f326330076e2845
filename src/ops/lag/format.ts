/** The lag report as text, for `sonicflow lag`. */
import type { StageLagReport } from '../../app/lag/report.js';

const num = (n: number | null, digits = 1): string => (n === null ? '-' : n.toFixed(digits));

/** 0s, 42s, 3m05s, 2h04m; '-' for unknown. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null) return '-';
  if (!Number.isFinite(seconds)) return 'inf';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function table(head: string[], rows: string[][], rightAligned: Set<number>): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]!) : i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

/**
 * The report as text: one line per stage (stage, group, partitions, lag, in/s, out/s, drain, the
 * two replica counts), and with `partitions` a section per stage with one line per partition in
 * the Kafka tool's terms (CURRENT-OFFSET `-` when the group has not committed; LAG is then the
 * retained backlog).
 */
export function formatLag(report: StageLagReport, opts: { partitions?: boolean } = {}): string {
  const head = ['STAGE', 'GROUP', 'PARTITIONS', 'LAG', 'IN/S', 'OUT/S', 'DRAIN', 'KEDA', 'SONICFLOW'];
  const rows = report.stages.map((s) => [
    s.stage,
    s.groupId,
    String(s.partitions),
    s.lag.toString(),
    num(s.inRate),
    num(s.outRate),
    formatDuration(s.drainSeconds),
    String(s.replicas.keda),
    s.replicas.sonicflow === null ? '-' : String(s.replicas.sonicflow),
  ]);
  const parts = [table(head, rows, new Set([2, 3, 4, 5, 6, 7, 8]))];
  const rateNote = report.intervalSeconds === null ? 'no rates yet (one sample)' : `rates over ${report.intervalSeconds.toFixed(1)} s`;
  parts.push(`${report.at.toISOString()}  ${rateNote}; replicas: KEDA ceil(lag/lagThreshold), sonicflow ceil(lag*s_per_record/targetDrainSeconds)`);
  const missing = report.stages.flatMap((s) => s.missingTopics);
  if (missing.length > 0) parts.push(`missing topics (not deployed): ${missing.join(', ')}`);
  if (opts.partitions) {
    for (const s of report.stages) {
      const prow = s.rows.map((r) => [
        r.topic,
        String(r.partition),
        r.committed < 0n ? '-' : r.committed.toString(),
        r.end.toString(),
        r.lag.toString(),
        num(r.inRate),
        num(r.outRate),
      ]);
      parts.push(
        `\n${s.stage} (${s.groupId}, ${s.members} member(s))\n${table(['TOPIC', 'PARTITION', 'CURRENT-OFFSET', 'LOG-END-OFFSET', 'LAG', 'IN/S', 'OUT/S'], prow, new Set([1, 2, 3, 4, 5, 6]))}`,
      );
    }
    if (report.stages.some((s) => s.rows.some((r) => r.committed < 0n)))
      parts.push('CURRENT-OFFSET -: nothing committed; LAG is then the retained backlog (log end - log start).');
  }
  return `${parts.join('\n')}\n`;
}
