/**
 * Adding a stage takes its own file and one line in the topology: with nothing else changed, the
 * throw-away `audit` stage (test/fixtures/extra-stage) is validated, described, drawn, deployed
 * (compose, Kubernetes, Prometheus), started by the demo and the test pipeline, and runs under the
 * test driver; and the stage's types hold from the schema to the sink.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { createLogger } from '../../src/core/logger.js';
import { PARAM_DEFAULTS } from '../../src/domain/params.js';
import type { Schemas, TaskCompleted } from '../../src/domain/records.js';
import { demoStages } from '../../src/ops/demo.js';
import { renderK8sObjects } from '../../src/ops/k8s/render.js';
import { describeMermaid, describeTopology } from '../../src/runtime/describe.js';
import { defineStage, topicRefs } from '../../src/runtime/stage.js';
import { TopologyTestDriver } from '../../src/runtime/test-driver.js';
import { defineTopology } from '../../src/runtime/topology.js';
import { validateTopology } from '../../src/runtime/validate.js';
import { SchemaCatalog } from '../../src/serde/catalog.js';
import { taskStage } from '../../src/stages/common.js';
import { taskStates } from '../../src/stages/status.js';
import { TOPICS } from '../../src/stages/topics.js';
import { SONIC_STAGES, sonicTopology } from '../../topologies/sonic.js';
import { opsArtifacts } from '../../scripts/gen-ops.js';
import { audit, trail } from '../fixtures/extra-stage/audit.js';
import { withAudit } from '../fixtures/extra-stage/topology.js';
import { pipelineStages } from '../helpers/pipeline.js';

const topology = withAudit();
const catalog = new SchemaCatalog();

describe('adding a stage: its file and one topology line', () => {
  it('validates, with the retry tiers and DLQ derived for it', () => {
    expect(validateTopology(topology, (n) => catalog.has(n))).toEqual([]);
    const spec = topology.stages.find((s) => s.name === 'audit')!;
    expect(spec).toMatchObject({ input: 'sonic.tasks.completed', emitsStatus: false, concurrency: 2, dlq: 'sonic.audit.dlq' });
    expect(spec.retry.topics).toEqual(['sonic.audit.retry.1', 'sonic.audit.retry.2', 'sonic.audit.retry.3']);
    expect(topology.topics['sonic.audit.dlq']?.valueSchema).toBe('task-completed');
  });

  it('is described and drawn', () => {
    expect(describeTopology(topology)).toMatch(/Processor: audit/);
    expect(describeMermaid(topology)).toContain('sonic_tasks_completed --> audit');
  });

  it('is in every generated operations file: compose, Prometheus targets, the architecture doc', () => {
    const files = Object.fromEntries(opsArtifacts(topology).map((a) => [a.path, a.content]));
    expect(files['ops/docker-compose.yml']).toMatch(/\n {2}audit:\n/);
    expect(files['ops/docker-compose.yml']).toContain('command: ["run", "audit"]');
    expect(JSON.parse(files['ops/prometheus/targets/stages.json']!)).toContainEqual(expect.objectContaining({ labels: { stage: 'audit' } }));
    expect(JSON.parse(files['ops/prometheus/targets-compose/stages.json']!)).toContainEqual(expect.objectContaining({ labels: { stage: 'audit' } }));
    expect(files['docs/architecture.md']).toContain('audit{{audit}}');
  });

  it('gets a Deployment and a lag-driven ScaledObject in Kubernetes', () => {
    const objects = renderK8sObjects(topology, { drainTimeoutMs: 30_000, brokers: ['kafka:9092'], clientId: 'sonicflow' });
    const named = objects.filter((o) => o.metadata.name.endsWith('audit'));
    expect(named.map((o) => o.kind).sort()).toEqual(['Deployment', 'ScaledObject']);
  });

  it('is started by the demo and by the test pipeline', () => {
    expect(demoStages(topology)).toContain('audit');
    expect(pipelineStages(topology)).toContain('audit');
  });

  it('runs under the test driver from its declaration, failing for good into its own DLQ', async () => {
    const config = loadConfig({});
    const driver = new TopologyTestDriver(topology, { deps: { config, logger: createLogger('test', 'silent'), blob: undefined }, only: ['audit'] });
    const outcome = (tenant: string): TaskCompleted => ({
      task_id: '6f1c4c9e-1d2b-4c1a-9a3e-0b9f1f0c2d3e',
      request: {
        task_id: '6f1c4c9e-1d2b-4c1a-9a3e-0b9f1f0c2d3e',
        tenant_id: tenant,
        image: { uri: 'file:///i.png', content_type: null, size_bytes: null, sha256: null },
        audio: { uri: 'file:///a.wav', content_type: null, size_bytes: null, sha256: null },
        params: PARAM_DEFAULTS,
        max_duration_s: 60,
        callback: null,
        idempotency_key: null,
        metadata: {},
        created_at: new Date(0),
        expires_at: null,
        schema_version: 1,
        truncate_audio: false,
        priority: 0,
        traceparent: null,
      },
      outcome: 'SUCCEEDED',
      video: null,
      video_url: null,
      duration_s: null,
      error: null,
      completed_at: new Date(0),
    });
    trail.length = 0;
    await driver.pipeInput('sonic.tasks.completed', '6f1c4c9e-1d2b-4c1a-9a3e-0b9f1f0c2d3e', outcome('acme'));
    expect(trail).toEqual([`acme/6f1c4c9e-1d2b-4c1a-9a3e-0b9f1f0c2d3e: SUCCEEDED at ${new Date(driver.now()).toISOString()}`]);
    await driver.pipeInput('sonic.tasks.completed', '6f1c4c9e-1d2b-4c1a-9a3e-0b9f1f0c2d3e', outcome(''));
    expect((await driver.read('sonic.audit.dlq')).map((r) => r.headers['sonicflow.error.code'])).toEqual(['INVALID_REQUEST']);
    expect(await driver.read('sonic.tasks.status')).toEqual([]);
  });
});

describe('typed sinks', () => {
  const topic = topicRefs<Schemas>();

  it('a handler emits only to the sinks its declaration names, values of their types (tsc checks the lines marked @ts-expect-error)', () => {
    const declared = [
      defineStage({
        name: 'right',
        doc: 'emits its input where it belongs',
        input: TOPICS.completed,
        sinks: { next: TOPICS.completed },
        create: () => ({ handle: async (rec) => ({ emit: [{ sink: 'next', value: rec.value }], status: { anything: 1 } }) }),
      }),
      defineStage({
        name: 'unnamed',
        doc: 'emits to a sink it does not name',
        input: TOPICS.completed,
        sinks: { next: TOPICS.completed },
        // @ts-expect-error -- no sink named `elsewhere`
        create: () => ({ handle: async (rec) => ({ emit: [{ sink: 'elsewhere', value: rec.value }] }) }),
      }),
      defineStage({
        name: 'no-sinks',
        doc: 'declares no sinks, so emits nothing',
        input: TOPICS.completed,
        // @ts-expect-error -- a stage without sinks cannot emit
        create: () => ({ handle: async (rec) => ({ emit: [{ sink: 'next', value: rec.value }] }) }),
      }),
      defineStage({
        name: 'wrong-type',
        doc: 'emits a task-request where a task-validated belongs',
        input: TOPICS.requested,
        sinks: { validated: TOPICS.validated },
        // @ts-expect-error -- the input (a task-request) is not a task-validated
        create: () => ({ handle: async (rec) => ({ emit: [{ sink: 'validated', value: rec.value }] }) }),
      }),
      defineStage({
        name: 'forged-ref',
        doc: 'a topic reference not made by topicRefs carries no type',
        input: TOPICS.completed,
        // @ts-expect-error -- a plain object is no TopicRef
        sinks: { out: { topic: 'tasks.validated', schema: 'task-validated' } },
        create: () => ({ handle: async () => ({}) }),
      }),
    ];
    // @ts-expect-error -- a schema name that has no file
    topic('tasks.completed', 'task-complete');
    const needsOther = defineStage({
      name: 'other-deps',
      doc: 'x',
      input: TOPICS.completed,
      emitsStatus: false,
      create: (deps: { db: string }) => ({ handle: async () => (deps.db ? {} : {}) }),
    });
    // @ts-expect-error -- the Sonic topology builds its stages from StageDeps, which has no `db`
    sonicTopology({ stages: [...SONIC_STAGES, needsOther] });
    expect(declared.map((d) => d.name)).toEqual(['right', 'unnamed', 'no-sinks', 'wrong-type', 'forged-ref']);
  });

  it('a task-path stage needs its failed sink, and its status fields are the task status fields', () => {
    expect(() =>
      taskStage({
        name: 'nofail',
        doc: 'x',
        state: 'ENCODING',
        input: TOPICS.rendered,
        // @ts-expect-error -- no `failed` sink: the FAILED outcome would have nowhere to go
        sinks: { encoded: TOPICS.encoded },
        create: () => ({ handle: async () => ({}) }),
      }),
    ).toThrow('stage:nofail: a task-path stage needs a `failed` sink of task-completed records for its FAILED outcome');
    const typed = taskStage({
      name: 'typed-status',
      doc: 'x',
      state: 'ENCODING',
      input: TOPICS.rendered,
      sinks: { encoded: TOPICS.encoded, failed: TOPICS.completed },
      // @ts-expect-error -- result_url is a string or null, and there is no field `resutl_url`
      create: () => ({ handle: async () => ({ status: { result_url: 42, resutl_url: 'x' } }) }),
    });
    expect(typed.state).toBe('ENCODING');
  });

  it('the task states refuse a status-writing stage without a state, and a task path whose stages do not follow each other', () => {
    expect(() => sonicTopology({ stages: [...SONIC_STAGES, { ...audit, emitsStatus: true }] })).toThrow(
      'stage:audit: stage audit writes task status events but names no task state',
    );
    const [validate, preprocess, ...rest] = SONIC_STAGES;
    expect(() => sonicTopology({ stages: [preprocess!, validate!, ...rest] })).toThrow(
      'stage:validate: stage validate follows preprocess in the task path (state VALIDATING after PREPROCESSING) but does not read what preprocess writes',
    );
  });

  it('validation checks the status hook against the status topic, and refuses a stage with code that writes status without a hook', () => {
    const status = { role: 'status' as const, valueSchema: 'task-request', configs: { 'cleanup.policy': 'compact' }, doc: 's' };
    const work = defineStage({ name: 'work', doc: 'w', input: TOPICS.completed, create: () => ({ handle: async () => ({}) }) });
    const topics = { 'tasks.completed': { valueSchema: 'task-completed', external: { producers: ['x'] }, doc: 'x' }, 'tasks.status': status };
    const withHook = defineTopology({
      name: 't',
      prefix: 't',
      status: { topic: 'tasks.status', hook: taskStates([{ ...work, state: 'ENCODING' }]) },
      topics,
      stages: [work],
    });
    expect(validateTopology(withHook).map((p) => `${p.node}: ${p.message}`)).toContain(
      'topic:t.tasks.status: the status hook writes task-status records, but status topic t.tasks.status holds task-request',
    );
    const noHook = defineTopology({ name: 't', prefix: 't', status: 'tasks.status', topics, stages: [work] });
    expect(validateTopology(noHook).map((p) => `${p.node}: ${p.message}`)).toContain(
      'stage:work: stage work writes status events but the topology has no status hook to build them',
    );
    expect(() => defineTopology({ name: 't', prefix: 't', status: 'tasks.status', topics, stages: [work], defaults: { retryDelayScale: 0 } })).toThrow(
      'retryDelayScale must be a number > 0, got 0',
    );
  });

  it('a stage typed against another schema than its topic holds is refused, naming the stage and the sink', () => {
    const mistyped = defineStage({
      name: 'mistyped',
      doc: 'reads requests from the completed topic',
      input: topic('tasks.completed', 'task-request'),
      sinks: { out: topic('tasks.completed', 'task-status') },
      emitsStatus: false,
      create: () => ({ handle: async () => ({}) }),
    });
    const t = defineTopology({
      name: 't',
      prefix: 't',
      status: 'tasks.status',
      topics: {
        'tasks.completed': { valueSchema: 'task-completed', external: { producers: ['x'] }, doc: 'x' },
        'tasks.status': { role: 'status', valueSchema: 'task-status', configs: { 'cleanup.policy': 'compact' }, doc: 's' },
      },
      stages: [mistyped],
    });
    const problems = validateTopology(t).map((p) => `${p.node}: ${p.message}`);
    expect(problems).toContain('stage:mistyped: stage mistyped reads task-request records, but its input t.tasks.completed holds task-completed');
    expect(problems).toContain('stage:mistyped: stage mistyped sink out writes task-status records, but topic t.tasks.completed holds task-completed');
  });
});
