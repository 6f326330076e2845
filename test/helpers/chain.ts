/**
 * Harness for runtime tests on the real broker: deploys the two-hop chain of
 * test/fixtures/chain.ts under a unique prefix, produces records, runs stages as child processes
 * (`sonicflow run`), and reads topics back with a read_committed consumer.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { PlainProducer, readTopic, type InRecord } from '../../src/kafka/io.js';
import { loadTopologyFile } from '../../src/app/context.js';
import type { Topology } from '../../src/runtime/topology.js';
import { valueSubject } from '../../src/serde/serde.js';
import { ROOT, deployTopology, startSonicflow, testContext, uniqueName, type SonicflowProcess } from './infra.js';

export const CHAIN_FILE = join(ROOT, 'test', 'fixtures', 'chain.ts');

export interface Chain {
  prefix: string;
  topology: Topology;
  topic(name: 'in' | 'mid' | 'out' | 'status' | 'first.dlq' | 'second.dlq' | 'first.retry.1' | 'first.retry.2'): string;
}

/** Deploys a fresh chain (topics and subjects), removed after the file's tests. */
export async function deployChain(env: Record<string, string> = {}, file = CHAIN_FILE): Promise<Chain> {
  const prefix = uniqueName('chain').replace(/-/g, '_');
  Object.assign(process.env, env); // the fixture reads its retry delays at load time
  const topology = await loadTopologyFile(file, prefix);
  await deployTopology(topology);
  return { prefix, topology, topic: (name) => `${prefix}.${name}` };
}

/** Produces `n` records (fresh task ids) to the chain input; returns their keys. */
export async function produce(chain: Chain, n: number, fields: Record<string, unknown> = {}): Promise<string[]> {
  const ctx = testContext();
  const topic = chain.topic('in');
  const keys: string[] = [];
  const records = [];
  for (let i = 0; i < n; i++) {
    const id = randomUUID();
    keys.push(id);
    records.push({ key: id, value: await ctx.serde.encode(valueSubject(topic), 'task-status', { task_id: id, state: 'QUEUED', at: new Date(), ...fields }) });
  }
  const p = await new PlainProducer(ctx.kafka).connect();
  for (let i = 0; i < records.length; i += 100) await p.send(topic, records.slice(i, i + 100));
  await p.close();
  return keys;
}

/** Every committed record of a topic. */
export function readAll(topic: string, idleMs = 1500): Promise<InRecord[]> {
  return readTopic(testContext().kafka, topic, { isolation: 'read_committed', idleMs, timeoutMs: 60_000 });
}

/** Counts per key. */
export function countKeys(records: InRecord[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of records) m.set(r.key ?? '', (m.get(r.key ?? '') ?? 0) + 1);
  return m;
}

export type StageProcess = SonicflowProcess & { name: string };

/** Starts `sonicflow run <stage>` for the chain as a child process. */
export function startStage(chain: Chain, stage: 'first' | 'second', env: Record<string, string> = {}): StageProcess {
  const handle = startSonicflow(['run', stage, '--file', CHAIN_FILE], {
    SONIC_TOPIC_PREFIX: chain.prefix,
    SONIC_METRICS_PORT: '0',
    SONIC_LOG_LEVEL: 'info',
    SONIC_SESSION_TIMEOUT_MS: '6000',
    SONIC_HEARTBEAT_INTERVAL_MS: '1000',
    SONIC_REBALANCE_TIMEOUT_MS: '8000',
    SONIC_DRAIN_TIMEOUT_MS: '15000',
    ...env,
  });
  return Object.assign(handle, { name: stage });
}

export { waitUntil } from './wait.js';
