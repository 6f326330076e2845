/**
 * Reading a topology's consumer groups from Kafka: one sample, the two samples of `sonicflow lag`,
 * and the sampler behind `sonicflow lag --watch` and the exporter.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { EMPTY, Observable, catchError, defer, exhaustMap, finalize, from, map, timer } from 'rxjs';
import { SonicError } from '../../core/errors.js';
import { OffsetReader, combineLag } from '../../kafka/lag.js';
import { groupId as stageGroupId } from '../../runtime/names.js';
import type { StageSpec, Topology } from '../../runtime/topology.js';
import type { Context } from '../context.js';
import { buildReport, type LagOptions, type OffsetSample, type StageLagReport } from './report.js';

function selectStages(topology: Topology, only?: string[]): StageSpec[] {
  if (!only || only.length === 0) return topology.stages;
  const unknown = only.filter((n) => !topology.stages.some((s) => s.name === n));
  if (unknown.length > 0)
    throw new SonicError('TOPOLOGY_INVALID', `no stage named ${unknown.join(', ')} (stages: ${topology.stages.map((s) => s.name).join(', ')})`);
  return topology.stages.filter((s) => only.includes(s.name));
}

/**
 * Reads every selected stage's group: committed offsets first, then the end offsets of all
 * topics (also what the tests wait on to know a stage has consumed everything).
 */
export async function sampleOffsets(reader: OffsetReader, clientId: string, topology: Topology, only?: string[]): Promise<OffsetSample> {
  const stages = selectStages(topology, only);
  const wanted = stages.map((s) => [s.input, ...s.retry.topics]);
  const existing = new Set(await reader.existing([...new Set(wanted.flat())]));
  const at = Date.now();
  const perStage = await Promise.all(
    stages.map(async (s, i) => {
      const topics = wanted[i]!.filter((t) => existing.has(t));
      const groupId = stageGroupId(clientId, topology, s);
      const [committed, members] = await Promise.all([reader.committed(groupId, topics), reader.members(groupId)]);
      return { s, groupId, topics, missing: wanted[i]!.filter((t) => !existing.has(t)), committed, members };
    }),
  );
  const offsets = await reader.offsets([...existing]);
  return {
    at,
    stages: perStage.map(({ s, groupId, topics, missing, committed, members }) => ({
      stage: s.name,
      groupId,
      topics,
      missingTopics: missing,
      members,
      partitions: combineLag(
        groupId,
        committed,
        offsets.filter((o) => topics.includes(o.topic)),
      ),
    })),
  };
}
/** Two samples `sampleMs` apart (default 2 s), reported with rates, drain times and replica counts. */
export async function stageLag(ctx: Context, topology: Topology, opts: LagOptions & { sampleMs?: number } = {}): Promise<StageLagReport> {
  const reader = new OffsetReader(ctx.kafka);
  try {
    const first = await sampleOffsets(reader, ctx.config.clientId, topology, opts.stages);
    await delay(opts.sampleMs ?? 2000);
    const second = await sampleOffsets(reader, ctx.config.clientId, topology, opts.stages);
    return buildReport(topology, second, first, opts);
  } finally {
    await reader.close();
  }
}

/**
 * A report every `intervalMs` (the first at once, without rates), for `sonicflow lag --watch` and
 * the exporter. One Kafka connection per subscription, closed on unsubscribe. A sample that fails
 * is logged and skipped (the next one tries again); a slow one makes the ticks it overlaps skip.
 */
export function lagSamples$(ctx: Context, topology: Topology, intervalMs: number, opts: LagOptions = {}): Observable<StageLagReport> {
  return defer(() => {
    // an unknown stage or a bad interval fails the subscription, not every tick
    if (!(intervalMs > 0)) throw new SonicError('INVALID_REQUEST', `the sampling interval must be > 0 ms, got ${intervalMs}`);
    selectStages(topology, opts.stages);
    const reader = new OffsetReader(ctx.kafka);
    let previous: OffsetSample | undefined;
    return timer(0, intervalMs).pipe(
      exhaustMap(() =>
        from(sampleOffsets(reader, ctx.config.clientId, topology, opts.stages)).pipe(
          catchError((err: unknown) => {
            ctx.logger.warn({ err }, 'lag sample failed');
            return EMPTY;
          }),
        ),
      ),
      map((sample) => {
        const report = buildReport(topology, sample, previous, opts);
        previous = sample;
        return report;
      }),
      finalize(() => void reader.close()),
    );
  });
}
