/**
 * Lag figures against Kafka's own `kafka-consumer-groups --describe` on the real broker: our
 * `fetchGroupLag` and the exporter's kafka_exporter series must print the same CURRENT-OFFSET,
 * LOG-END-OFFSET and LAG for every partition the group committed, with transaction markers in
 * the log and a transaction still open (where the high watermark and the last stable offset
 * differ), and after a real stage run stopped half-way.
 */
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { TxProducer } from '../../src/kafka/io.js';
import { OffsetReader, fetchGroupLag, type PartitionLag } from '../../src/kafka/lag.js';
import { Context } from '../../src/app/context.js';
import { serveLagExporter } from '../../src/ops/lag.js';
import { groupId } from '../../src/runtime/names.js';
import { findStage } from '../../src/runtime/topology.js';
import { valueSubject } from '../../src/serde/serde.js';
import { deployChain, produce, startStage, waitUntil, type Chain } from '../helpers/chain.js';
import { kafkaTool, testContext, uniqueName } from '../helpers/infra.js';

interface ToolRow {
  topic: string;
  partition: number;
  current: string;
  end: string;
  lag: string;
}

/** The partition table of `kafka-consumer-groups --describe --group <group>`. */
function describeGroup(group: string): ToolRow[] {
  const text = kafkaTool('consumer-groups', ['--bootstrap-server', testContext().config.kafkaBrokers[0]!, '--describe', '--group', group]);
  const lines = text.split('\n').map((l) => l.trim());
  const at = lines.findIndex((l) => /^GROUP\s+TOPIC\s+PARTITION\s/.test(l));
  if (at < 0) return [];
  const head = lines[at]!.split(/\s+/);
  const col = (name: string): number => head.indexOf(name);
  return lines
    .slice(at + 1)
    .filter((l) => l.startsWith(`${group} `))
    .map((l) => l.split(/\s+/))
    .map((c) => ({
      topic: c[col('TOPIC')]!,
      partition: Number(c[col('PARTITION')]),
      current: c[col('CURRENT-OFFSET')]!,
      end: c[col('LOG-END-OFFSET')]!,
      lag: c[col('LAG')]!,
    }));
}

/** `name{labels} value` lines of a Prometheus text exposition. */
function series(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`))
    .map((l) => {
      const m = /^[^{]+\{(.*)\} (\S+)$/.exec(l)!;
      const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
      return { labels, value: Number(m[2]) };
    });
}

async function scrape(ctx: Context, chain: Chain): Promise<string> {
  const exporter = await serveLagExporter(ctx, chain.topology, 0, 60_000, { stages: ['first'] });
  try {
    return await (await fetch(`http://127.0.0.1:${exporter.port}/metrics`)).text();
  } finally {
    await exporter.close();
  }
}

/**
 * The group's lag once no transaction is open on `topics` (every partition's last stable offset
 * equals its high watermark: the commit markers are in) and `ready` holds.
 */
async function lagWhen(ctx: Context, group: string, topics: string[], ready: (rows: PartitionLag[]) => boolean = () => true): Promise<PartitionLag[]> {
  let rows: PartitionLag[] = [];
  await waitUntil(
    async () => {
      rows = await fetchGroupLag(ctx.kafka, group, topics);
      return rows.every((r) => r.stable === r.end) && ready(rows);
    },
    15_000,
    () => `the lag of ${group} to settle: ${JSON.stringify(rows, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`,
    100,
  );
  return rows;
}

/** Whether we and the tool see the same committed offsets (the same partitions, the same values). */
function sameCommitted(ours: PartitionLag[], tool: ToolRow[]): boolean {
  const a = ours.filter((r) => r.committed >= 0n).map((r) => `${r.topic}:${r.partition}@${r.committed}`);
  const b = tool.filter((r) => r.current !== '-').map((r) => `${r.topic}:${r.partition}@${r.current}`);
  return JSON.stringify(a.sort()) === JSON.stringify(b.sort());
}

/** Every partition the tool lists with a committed offset agrees with ours and with the exporter; ours lists no other commits. */
function expectAgreement(group: string, ours: PartitionLag[], tool: ToolRow[], metrics: string): void {
  const committedTool = tool.filter((r) => r.current !== '-');
  const committedOurs = ours.filter((r) => r.committed >= 0n);
  expect(committedTool.length).toBeGreaterThan(0);
  const key = (t: string, p: number): string => `${t}:${p}`;
  expect(committedOurs.map((r) => key(r.topic, r.partition)).sort()).toEqual(committedTool.map((r) => key(r.topic, r.partition)).sort());

  const lag = new Map(
    series(metrics, 'kafka_consumergroup_lag')
      .filter((s) => s.labels.consumergroup === group)
      .map((s) => [key(s.labels.topic!, Number(s.labels.partition)), s.value]),
  );
  const offset = new Map(
    series(metrics, 'kafka_consumergroup_current_offset')
      .filter((s) => s.labels.consumergroup === group)
      .map((s) => [key(s.labels.topic!, Number(s.labels.partition)), s.value]),
  );
  const end = new Map(series(metrics, 'kafka_topic_partition_current_offset').map((s) => [key(s.labels.topic!, Number(s.labels.partition)), s.value]));
  for (const t of committedTool) {
    const o = ours.find((r) => r.topic === t.topic && r.partition === t.partition)!;
    const k = key(t.topic, t.partition);
    expect({ k, current: o.committed.toString(), end: o.end.toString(), lag: o.lag.toString() }).toEqual({ k, current: t.current, end: t.end, lag: t.lag });
    expect({ k, exporterLag: lag.get(k), exporterOffset: offset.get(k), exporterEnd: end.get(k) }).toEqual({
      k,
      exporterLag: Number(t.lag),
      exporterOffset: Number(t.current),
      exporterEnd: Number(t.end),
    });
  }
  // a partition the tool shows without an offset has none in ours, and -1 in the exporter
  for (const t of tool.filter((r) => r.current === '-')) {
    expect(ours.find((r) => r.topic === t.topic && r.partition === t.partition)?.committed).toBe(-1n);
    expect(lag.get(key(t.topic, t.partition)) ?? -1).toBe(-1);
  }
  const sums = series(metrics, 'kafka_consumergroup_lag_sum').filter((s) => s.labels.consumergroup === group);
  const topics = [...new Set(committedTool.map((r) => r.topic))];
  expect(sums.map((s) => s.labels.topic).sort()).toEqual(topics.sort());
  for (const topic of topics) {
    const want = committedTool.filter((r) => r.topic === topic).reduce((n, r) => n + Number(r.lag), 0);
    expect({ topic, sum: sums.find((s) => s.labels.topic === topic)?.value }).toEqual({ topic, sum: want });
  }
}

describe('consumer-group lag vs kafka-consumer-groups --describe (real broker)', () => {
  let chain: Chain;
  let topics: string[];
  beforeAll(async () => {
    chain = await deployChain();
    await produce(chain, 300);
    const first = findStage(chain.topology, 'first')!;
    topics = [first.input, ...first.retry.topics];
  });

  it('offsets committed through a transaction, markers in the log, a transaction open: equal for every committed partition', async () => {
    // a group of our own (its own client id), so the stage run below does not meet it
    const ctx = new Context({ ...process.env, SONIC_CLIENT_ID: uniqueName('lagtest'), SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'warn' }, 'test');
    const group = groupId(ctx.config.clientId, chain.topology, 'first');
    const input = chain.topic('in');
    const producer = await new TxProducer(ctx.kafka, uniqueName('lagtest-tx')).connect();
    try {
      // 40 records in one committed transaction: a commit marker after them on each partition
      const value = await testContext().serde.encode(valueSubject(input), 'task-status', { task_id: randomUUID(), state: 'QUEUED', at: new Date() });
      await producer.inTransaction(async (send) =>
        send(
          input,
          Array.from({ length: 40 }, (_, i) => ({ key: `k${i}`, value, partition: i % 4 })),
        ),
      );
      const ends = new Map((await lagWhen(ctx, group, [input])).map((r) => [r.partition, r.end]));
      expect([...ends.values()].every((e) => e > 10n)).toBe(true);
      // p0 half-way, p1 past the commit marker (all read), p2 at the marker (as a runner committing last+1 leaves it), p3 nothing
      const commits = [
        { topic: input, partition: 0, offset: ends.get(0)! / 2n },
        { topic: input, partition: 1, offset: ends.get(1)! },
        { topic: input, partition: 2, offset: ends.get(2)! - 1n },
        { topic: chain.topic('first.retry.1'), partition: 0, offset: 0n },
      ];
      await producer.inTransaction(async () => undefined, {
        offsets: commits.map((c) => ({ groupId: group, topic: c.topic, partition: c.partition, offset: c.offset.toString() })),
      });
      // the offsets show once the transaction's markers are in
      const isCommitted = (rows: PartitionLag[]): boolean =>
        commits.every((c) => rows.find((r) => r.topic === c.topic && r.partition === c.partition)?.committed === c.offset);
      const settled = await lagWhen(ctx, group, topics, isCommitted);
      const asText = (t: string, p: number, o: bigint): string => `${t}:${p}@${o}`;
      expect(
        settled
          .filter((r) => r.committed >= 0n)
          .map((r) => asText(r.topic, r.partition, r.committed))
          .sort(),
      ).toEqual(commits.map((c) => asText(c.topic, c.partition, c.offset)).sort());
      expect(settled.find((r) => r.topic === input && r.partition === 2)!.lag).toBe(1n);

      // 5 records in a transaction left open while we measure: in the high watermark, not in the LSO
      await producer.inTransaction(
        async (send) => {
          await send(
            input,
            Array.from({ length: 5 }, (_, i) => ({ key: `open${i}`, value, partition: 0 })),
          );
          const ours = await fetchGroupLag(ctx.kafka, group, topics);
          const p0 = ours.find((r) => r.topic === input && r.partition === 0)!;
          expect(p0.end - p0.stable).toBe(5n);
          expect(p0.end).toBe(ends.get(0)! + 5n);
          const metrics = await scrape(ctx, chain);
          const tool = describeGroup(group);
          expectAgreement(group, ours, tool, metrics);
          // the partition without a commit: '-' in the tool (when listed), backlog in ours, -1 in the exporter
          expect(tool.find((r) => r.topic === input && r.partition === 3)?.current ?? '-').toBe('-');
          expect(ours.find((r) => r.topic === input && r.partition === 3)!.lag).toBe(ends.get(3)!);
          expect(
            series(metrics, 'kafka_consumergroup_lag').find((s) => s.labels.consumergroup === group && s.labels.topic === input && s.labels.partition === '3')
              ?.value,
          ).toBe(-1);
        },
        { commit: false },
      );
    } finally {
      await producer.close();
    }
  });

  it('a stage run stopped half-way: fetchGroupLag and the exporter equal the tool for every committed partition', async () => {
    const ctx = testContext();
    const group = groupId(ctx.config.clientId, chain.topology, 'first');
    const reader = await new OffsetReader(ctx.kafka).connect();
    const stage = startStage(chain, 'first', { CHAIN_DELAY_MS: '50', SONIC_BATCH_MAX_RECORDS: '5', SONIC_LOG_LEVEL: 'warn' });
    try {
      const consumed = async (): Promise<bigint> =>
        (await reader.groupLag(group, [chain.topic('in')])).reduce((n, r) => n + (r.committed >= 0n ? r.committed - r.earliest : 0n), 0n);
      await waitUntil(async () => (await consumed()) >= 20n, 40_000, 'the stage to commit some records');
    } finally {
      await reader.close();
      stage.proc.kill('SIGTERM');
      await stage.exited;
    }
    // the stage's last offsets show once its last transaction's markers are in: read until the
    // tool shows the offsets we do (or time out: then they disagree)
    let ours: PartitionLag[] = [];
    let tool: ToolRow[] = [];
    await waitUntil(
      async () => {
        ours = await lagWhen(ctx, group, topics);
        tool = describeGroup(group);
        return sameCommitted(ours, tool);
      },
      30_000,
      () => `the same committed offsets in ours and the tool's: ${JSON.stringify(tool)}`,
      100,
    );
    const onInput = ours.filter((r) => r.topic === chain.topic('in'));
    const total = onInput.reduce((n, r) => n + r.end - r.earliest, 0n);
    const left = onInput.reduce((n, r) => n + r.lag, 0n);
    expect(left > 0n && left < total).toBe(true); // some but not all consumed
    expectAgreement(group, ours, tool, await scrape(ctx, chain));
  });
});
