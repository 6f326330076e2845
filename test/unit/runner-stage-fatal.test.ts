/**
 * A handler error that stops the stage (MODEL_UNAVAILABLE: the model cannot load) reaches the
 * runner's failure path like a refusal by the broker's authorizer: the runner fails (its `done`
 * rejects, so the process exits non-zero) instead of going back to the committed offset to redo
 * the batch here. No broker: the client points nowhere and nothing connects.
 */
import { describe, expect, it } from 'vitest';
import { SonicError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { createKafka } from '../../src/kafka/client.js';
import { Partition, type PartitionHost } from '../../src/runtime/partition.js';
import { StageRunner, type RunnerOptions } from '../../src/runtime/runner.js';
import { defineTopology } from '../../src/runtime/topology.js';
import { SchemaCatalog } from '../../src/serde/catalog.js';
import { MemorySerde } from '../../src/serde/codec.js';
import { taskStates } from '../../src/stages/status.js';

const topology = defineTopology({
  name: 'unit',
  prefix: 'f',
  status: { topic: 'status', hook: taskStates([{ name: 'work', state: 'INFERRING' }]) },
  defaults: { partitions: 1, retry: { delaysMs: [5_000], maxAttempts: 2 } },
  topics: {
    status: { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 'status' },
    in: { valueSchema: 'task-status', external: { producers: ['test'] }, doc: 'in' },
    out: { valueSchema: 'task-status', external: { consumers: ['test'] }, doc: 'out' },
  },
  stages: { work: { doc: 'work', input: 'in', outputs: { done: 'out' } } },
});

const options: RunnerOptions = {
  clientId: 'fatal-test',
  sessionTimeoutMs: 6000,
  heartbeatIntervalMs: 1000,
  rebalanceTimeoutMs: 6000,
  fetchMaxWaitMs: 100,
  transactionTimeoutMs: 10_000,
  drainTimeoutMs: 1000,
  reconnect: { initialMs: 10, maxMs: 10 },
};

function runner(): { runner: StageRunner; host: PartitionHost } {
  const logger = createLogger('test', 'silent');
  const kafka = createKafka({ brokers: ['127.0.0.1:1'], clientId: 'fatal-test' }, logger);
  const stage = topology.stages[0]!;
  const r = new StageRunner(kafka, new MemorySerde(new SchemaCatalog()), topology, stage, { handle: async () => ({}) }, logger, options);
  return { runner: r, host: (r as unknown as { host: PartitionHost }).host };
}

describe('stage runner and errors that stop the stage', () => {
  it('fails the stage on MODEL_UNAVAILABLE from a handler: no way back to the committed offset, done rejects with it', async () => {
    const { runner: r, host } = runner();
    const p = new Partition({ topic: 'f.in', partition: 0 }, host);
    const err = new SonicError('MODEL_UNAVAILABLE', 'the Sonic runner failed to load 3 times in a row');
    const handled = host.failed(p, err);
    const stillRunning = new Promise((resolve) => setTimeout(() => resolve('still running'), 2000));
    await expect(Promise.race([r.done, stillRunning])).rejects.toBe(err);
    await handled;
    expect(r.lifecycle.state).toBe('failed');
  });
});
