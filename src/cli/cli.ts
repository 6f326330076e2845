/**
 * The `sonicflow` command line. Every command has `--help`. Errors print as
 * `error [CODE]: message` on stderr and exit 1; usage errors exit 2.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { describeSettings, displayValue, isSet, longestRenderMs, parseDurationS, publicApiUrl } from '../core/config.js';
import { isSonicError, toSonicError } from '../core/errors.js';
import { AclAdmin } from '../kafka/acls.js';
import { TopicAdmin } from '../kafka/admin.js';
import { deriveAcls } from '../runtime/acls.js';
import { describeMermaid, describeTopology } from '../runtime/describe.js';
import { findStage } from '../runtime/topology.js';
import { assertNoReservedStageNames, assertValidTopology, validateTopology } from '../runtime/validate.js';
import { SchemaCatalog } from '../serde/catalog.js';
import { RegistryAdmin } from '../serde/registry-admin.js';
import { Serde } from '../serde/serde.js';
import { Context } from '../app/context.js';
import { startApi } from '../api/main.js';
import { formatList, formatShow, readDlq, replay, select } from '../ops/dlq.js';
import { formatGcReport, runGc } from '../ops/gc.js';
import { Autoscaler, lagOfStage } from '../ops/autoscale.js';
import { DEFAULT_PROMETHEUS_URL, DEFAULT_WEIGHTS_PATH, renderK8s, renderK8sWarnings, type RenderK8sOptions } from '../ops/k8s/render.js';
import { formatLag, lagSamples$, serveLagExporter, stageLag } from '../ops/lag.js';
import { runDemo } from '../ops/demo.js';
import { runStages } from '../ops/run.js';
import { checkSchemas, formatChecks, formatDiffs } from '../ops/schemas.js';
import { describeFace, downloadVideo, getTask, submitTask, waitForTask } from '../ops/submit.js';
import { applyDeploy, formatPlan, planDeploy, planIsEmpty, storePartitionedTopics, topicsInScope } from '../ops/deploy.js';
import { aclPlanIsEmpty, applyAcls, assertDistinctPrincipals, formatAclJson, formatAclPlan, formatAclTable, planAcls } from '../ops/acls.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = (s: string): boolean => process.stdout.write(s);

/** `sonicflow 0.1.0 (node v24.21.0)`: the package version and the Node running this process. */
function versionText(): string {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  return `sonicflow ${version} (node ${process.version})`;
}

/** A repeatable option's values, in order. */
const collect = (value: string, previous: string[]): string[] => [...previous, value];

function buildCli(ctx: () => Context): Command {
  const program = new Command('sonicflow')
    .description('Portrait + speech -> talking-head video with Sonic, as an exactly-once Kafka stage topology.')
    .showHelpAfterError()
    .exitOverride()
    .version(versionText(), '-v, --version', 'print the sonicflow and Node versions');

  program
    .command('version')
    .description('Print the sonicflow version and the Node version running it.')
    .action(() => void out(`${versionText()}\n`));

  const topology = program.command('topology').description('Describe, check and deploy the stage topology.');
  const fileOpt = (): Option => new Option('--file <path>', 'topology module (.ts/.js) or JSON instead of the built-in Sonic topology');

  topology
    .command('describe')
    .description("Print the topology in Kafka Streams' Topology#describe() style, or as a Mermaid diagram.")
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'mermaid']).default('text'))
    .addOption(fileOpt())
    .action(async (opts: { format: string; file?: string }) => {
      const t = await ctx().topology(opts.file);
      out(opts.format === 'mermaid' ? describeMermaid(t) : describeTopology(t));
    });

  topology
    .command('validate')
    .description('Check the topology: producers for consumed topics, schemas, names, partitions vs replicas. Exit 1 on problems.')
    .addOption(fileOpt())
    .action(async (opts: { file?: string }) => {
      const t = await ctx().topology(opts.file);
      const catalog = new SchemaCatalog();
      const problems = validateTopology(t, (name) => catalog.has(name));
      if (problems.length === 0) {
        out(`topology ${t.name} is valid: ${t.stages.length} stages, ${Object.keys(t.topics).length} topics\n`);
        return;
      }
      for (const p of problems) process.stderr.write(`${p.node}: ${p.message}\n`);
      process.stderr.write(`topology ${t.name} has ${problems.length} problem(s)\n`);
      process.exitCode = 1;
    });

  const prefixOpt = (): Option =>
    new Option('--principal-prefix <p>', "principals are User:<p>-<stage>, User:<p>-api, User:<p>-ops, User:<p>-keda (default: the topology's prefix)");

  topology
    .command('acls')
    .description('Print the least-privilege ACLs derived from the topology: one principal per stage, the API and the operators.')
    .option('--stage <name>', "only one stage's principal")
    .addOption(prefixOpt())
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json']).default('table'))
    .addOption(fileOpt())
    .action(async (opts: { stage?: string; principalPrefix?: string; format: string; file?: string }) => {
      const c = ctx();
      const principals = deriveAcls(assertNoReservedStageNames(await c.topology(opts.file)), {
        clientId: c.config.clientId,
        ...(opts.principalPrefix ? { principalPrefix: opts.principalPrefix } : {}),
        ...(opts.stage ? { stage: opts.stage } : {}),
      });
      assertDistinctPrincipals(principals);
      out(opts.format === 'json' ? formatAclJson(principals) : formatAclTable(principals));
    });

  topology
    .command('deploy')
    .description(
      'Plan, then create or grow topics, set configs and register schemas with their compatibility; with --acls, the derived ACLs too. Never shrinks.',
    )
    .option('--stage <name>', 'only the topics of one stage (input, retry tiers, DLQ, outputs, status), and with --acls its principal')
    .option('--dry-run', 'print the plan and change nothing')
    .option(
      '--acls',
      'also create the ACLs derived from the topology (`topology acls`) that the broker lacks; report bindings of these principals it does not derive',
    )
    .option('--prune-acls', 'with --acls: remove the bindings of the derived principals that the topology does not derive')
    .addOption(prefixOpt())
    .addOption(new Option('--schemas <dir>', "directory of .avsc files to use instead of the project's schemas/"))
    .addOption(fileOpt())
    .action(
      async (opts: { stage?: string; dryRun?: boolean; acls?: boolean; pruneAcls?: boolean; principalPrefix?: string; file?: string; schemas?: string }) => {
        const c = ctx();
        const t = await c.topology(opts.file);
        const catalog = opts.schemas ? new SchemaCatalog(opts.schemas) : c.serde.catalog;
        // nothing is planned for a topology that cannot work: the problems name their nodes
        assertValidTopology(t, (schema) => catalog.has(schema));
        const admin = await new TopicAdmin(c.kafka).connect();
        const acls = opts.acls ? await new AclAdmin(c.kafka).connect() : undefined;
        try {
          const registry = opts.schemas ? new RegistryAdmin(new Serde(catalog, { url: c.config.schemaRegistryUrl })) : c.registryAdmin;
          const plan = await planDeploy(topicsInScope(t, opts.stage), admin, registry, storePartitionedTopics(t));
          out(formatPlan(plan));
          const prune = !!opts.pruneAcls;
          const aclPlan = acls
            ? await planAcls(
                deriveAcls(t, {
                  clientId: c.config.clientId,
                  ...(opts.principalPrefix ? { principalPrefix: opts.principalPrefix } : {}),
                  ...(opts.stage ? { stage: opts.stage } : {}),
                }),
                acls,
              )
            : undefined;
          if (aclPlan) out(formatAclPlan(aclPlan, prune));
          if (plan.refusals.length > 0) {
            process.stderr.write('deploy refused: nothing was changed\n');
            process.exitCode = 1;
            return;
          }
          if (opts.dryRun) return;
          const topicsChange = !planIsEmpty(plan);
          const aclsChange = aclPlan !== undefined && !aclPlanIsEmpty(aclPlan, prune);
          if (topicsChange) await applyDeploy(plan, admin, registry);
          if (aclsChange && acls && aclPlan) await applyAcls(aclPlan, acls, prune);
          if (topicsChange || aclsChange) out('Applied.\n');
        } finally {
          await admin.close();
          await acls?.close();
        }
      },
    );

  program
    .command('run')
    .description('Run a stage as this process: consume its input and retry tiers, publish exactly once. SIGTERM drains and exits 0.')
    .argument('<stages...>', 'stage name(s) of the topology, as `topology describe` lists them (several share the process)')
    .addOption(fileOpt())
    .action(async (stages: string[], opts: { file?: string }) => {
      process.exitCode = await runStages(ctx(), stages, opts.file);
    });

  program
    .command('api')
    .description('Run the HTTP API: POST /v1/tasks, GET /v1/tasks/:id (+ /events, /video), /docs, /healthz, /readyz, /metrics.')
    .action(async () => {
      const c = ctx();
      const api = await startApi(c);
      out(`API listening on ${api.url} (OpenAPI at ${api.url}/docs)\n`);
      const signalled = new Promise<void>((resolve) => {
        process.once('SIGTERM', () => resolve());
        process.once('SIGINT', () => resolve());
      });
      // a signal stops it (exit 0); so does a failure it cannot go on from, which is reported (exit 1)
      const failure = await Promise.race([signalled.then(() => undefined), api.failed]);
      await api.close();
      if (failure) throw failure;
    });

  program
    .command('submit')
    .description('Submit a portrait and a speech recording to the API; with --wait, show progress and print where the video is.')
    .requiredOption('--audio <file>', 'speech recording (wav, mp3, m4a/aac, flac, ogg)')
    .requiredOption('--image <file>', 'portrait (jpeg, png, webp)')
    .option('--api <url>', 'API base URL (default SONIC_API_PUBLIC_URL)')
    .option('--param <name=value...>', 'Sonic parameters, e.g. --param min_resolution=512 inference_steps=25')
    .option('--idempotency-key <key>', 'a retried submit with the same key returns the same task')
    .option('--callback <url>', 'webhook URL for the end of the task')
    .option('--wait', 'follow the task until it ends')
    .option('--output <file>', 'with --wait: save the MP4 here')
    .action(
      async (o: {
        audio: string;
        image: string;
        api?: string;
        param?: string[];
        idempotencyKey?: string;
        callback?: string;
        wait?: boolean;
        output?: string;
      }) => {
        const c = ctx();
        const api = (o.api ?? publicApiUrl(c.config)).replace(/\/+$/, '');
        const params = Object.fromEntries((o.param ?? []).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
        const common = { api, ...(c.config.apiKey ? { apiKey: c.config.apiKey } : {}), progress: process.stderr };
        const taskId = await submitTask({
          ...common,
          audio: o.audio,
          image: o.image,
          params,
          wait: !!o.wait,
          ...(o.idempotencyKey ? { idempotencyKey: o.idempotencyKey } : {}),
          ...(o.callback ? { callback: o.callback } : {}),
        });
        out(`task ${taskId}\n`);
        if (!o.wait) return;
        const status = await waitForTask(common, taskId);
        if (status.face) out(`${describeFace(status.face)}\n`);
        if (status.state !== 'SUCCEEDED') {
          process.stderr.write(`task ${taskId} ${status.state}: ${status.error?.code ?? ''} ${status.error?.message ?? ''}\n`);
          process.exitCode = 1;
          return;
        }
        out(`video ${status.video_url}\n`);
        if (o.output) {
          await downloadVideo(common, status, o.output);
          out(`saved ${o.output}\n`);
        }
      },
    );

  program
    .command('status')
    .description("Print a task's status: its state, error, and the face and crop preprocess chose (pixels of the uploaded picture).")
    .argument('<task-id>', 'the id submit printed')
    .option('--api <url>', 'API base URL (default SONIC_API_PUBLIC_URL)')
    .option('--json', 'print the API answer as JSON')
    .action(async (taskId: string, o: { api?: string; json?: boolean }) => {
      const c = ctx();
      const api = (o.api ?? publicApiUrl(c.config)).replace(/\/+$/, '');
      const s = await getTask({ api, ...(c.config.apiKey ? { apiKey: c.config.apiKey } : {}) }, taskId);
      if (o.json) return void out(`${JSON.stringify(s, null, 2)}\n`);
      out(`task ${s.task_id} ${s.state}${s.error ? `: ${s.error.code} ${s.error.message}` : ''}\n`);
      if (s.face) out(`${describeFace(s.face)}\n`);
      if (s.video_url) out(`video ${s.video_url}\n`);
    });

  program
    .command('demo')
    .description('Run the whole pipeline locally on a generated sample and print the MP4 (expects the stack up: npm run demo does that).')
    .option('--keep', 'keep the API and stages running after the demo, until Ctrl-C')
    .action(async (o: { keep?: boolean }) => {
      process.exitCode = await runDemo(ctx(), { keep: !!o.keep, out });
    });

  program
    .command('lag')
    .description("Consumer lag per stage: lag, input and processing rates, time to drain, replicas by KEDA's rule and by sonicflow's.")
    .option('--watch', 'refresh every --interval-ms until Ctrl-C')
    .option('--partitions', 'also one line per partition')
    .option('--interval-ms <ms>', 'sampling interval (rates need two samples)', '5000')
    .option('--exporter <port>', 'serve kafka_consumergroup_lag and sonicflow_stage_* metrics on this port (0: a free one, printed) instead of printing')
    .option('--stages <names>', 'comma-separated stages (default: all)')
    .addOption(fileOpt())
    .action(async (o: { watch?: boolean; partitions?: boolean; intervalMs: string; exporter?: string; stages?: string; file?: string }) => {
      const c = ctx();
      const topology = await c.topology(o.file);
      const opts = o.stages ? { stages: o.stages.split(',') } : {};
      const intervalMs = Number(o.intervalMs);
      if (o.exporter) {
        const exporter = await serveLagExporter(c, topology, Number(o.exporter), intervalMs, opts);
        out(`lag exporter on :${exporter.port}/metrics (refreshed every ${intervalMs} ms)\n`);
        await new Promise<void>((resolve) => {
          const stop = (): void => void exporter.close().then(resolve);
          process.once('SIGTERM', stop);
          process.once('SIGINT', stop);
        });
        return;
      }
      if (!o.watch) {
        out(formatLag(await stageLag(c, topology, { ...opts, sampleMs: Math.min(intervalMs, 2000) }), { partitions: !!o.partitions }));
        return;
      }
      await new Promise<void>((resolve, reject) => {
        const sub = lagSamples$(c, topology, intervalMs, opts).subscribe({
          next: (r) => out(`${process.stdout.isTTY ? '\x1b[2J\x1b[H' : '\n'}${new Date().toISOString()}\n${formatLag(r, { partitions: !!o.partitions })}`),
          error: reject,
        });
        process.once('SIGINT', () => (sub.unsubscribe(), resolve()));
        process.once('SIGTERM', () => (sub.unsubscribe(), resolve()));
      });
    });

  program
    .command('render')
    .description('Render deployment manifests from the topology.')
    .command('k8s')
    .description(
      'Kubernetes: a Deployment and a KEDA ScaledObject per stage (on its lag; the workers of a dispatcher on the GPU-seconds it holds, queried from Prometheus), the API (a StatefulSet), a PodMonitor and the ConfigMap (YAML on stdout). Kafka TLS and SASL follow SONIC_KAFKA_SSL, SONIC_KAFKA_SSL_CA_FILE (its CA becomes a Secret the pods mount) and SONIC_KAFKA_SASL_MECHANISM (then a Secret with the SASL user per stage, the API and KEDA; passwords are never rendered).',
    )
    .option('--stage <name>', "only one stage's Deployment and ScaledObject")
    .option('--image <image>', 'container image', 'ghcr.io/sonicflow/sonicflow:latest')
    .option('--namespace <ns>', 'namespace', 'sonicflow')
    .option('--api-state-storage <size>', "size of each API replica's state volume (its status view store)", '2Gi')
    .option('--storage-class <name>', "StorageClass of the API's state volumes (default: the cluster's default class)")
    .option(
      '--prometheus-url <url>',
      "Prometheus that KEDA queries to scale a dispatcher's workers on its backlog's GPU-seconds (it must scrape the rendered PodMonitor)",
      DEFAULT_PROMETHEUS_URL,
    )
    .option('--gpu-image <image>', 'image of the GPU stage pods (infer), e.g. the Sonic worker image (default: --image)')
    .option(
      '--infer-backend <name>',
      'SONIC_INFER_BACKEND of the GPU stage pods, e.g. worker (default: none set in them: the ConfigMap or secrets decide, else builtin)',
    )
    .option(
      '--weights-pvc <claim>',
      `PersistentVolumeClaim with Sonic's weights, mounted read-only in the GPU stage pods at --weights-path; SONIC_WORKER_SONIC_DIR is its parent (default: none; the worker backend then cannot load Sonic, with a warning)`,
    )
    .option('--weights-path <path>', `where --weights-pvc is mounted (default ${DEFAULT_WEIGHTS_PATH})`)
    .addOption(new Option('--gpu-node-selector <key=value>', 'node label the GPU stage pods must run on (repeatable)').argParser(collect).default([], 'none'))
    .addOption(
      new Option('--gpu-toleration <key[=value]:Effect>', 'node taint the GPU stage pods tolerate (repeatable; replaces the default)')
        .argParser(collect)
        .default([], 'nvidia.com/gpu:NoSchedule, any value'),
    )
    .option(
      '--gpus <n>',
      "GPUs the cluster has for sonicflow: caps the GPU stages' max replicas at floor(n / GPUs per pod), shared fairly between GPU stages (default: no cap but partitions and maxReplicas)",
    )
    .addOption(prefixOpt())
    .addOption(fileOpt())
    .action(
      async (o: {
        stage?: string;
        image: string;
        namespace: string;
        apiStateStorage: string;
        storageClass?: string;
        prometheusUrl: string;
        gpuImage?: string;
        inferBackend?: string;
        weightsPvc?: string;
        weightsPath?: string;
        gpuNodeSelector: string[];
        gpuToleration: string[];
        gpus?: string;
        principalPrefix?: string;
        file?: string;
      }) => {
        const c = ctx();
        const topology = assertNoReservedStageNames(await c.topology(o.file));
        const gpu: Partial<RenderK8sOptions> = {
          ...(o.gpuImage !== undefined ? { gpuImage: o.gpuImage } : {}),
          ...(o.inferBackend !== undefined ? { inferBackend: o.inferBackend } : {}),
          ...(o.weightsPvc !== undefined ? { weightsPvc: o.weightsPvc } : {}),
          ...(o.weightsPath !== undefined ? { weightsPath: o.weightsPath } : {}),
          ...(o.gpuNodeSelector.length > 0 ? { gpuNodeSelector: o.gpuNodeSelector } : {}),
          ...(o.gpuToleration.length > 0 ? { gpuTolerations: o.gpuToleration } : {}),
          ...(o.gpus !== undefined ? { gpus: Number(o.gpus) } : {}),
        };
        const opts: RenderK8sOptions = {
          ...gpu,
          ...(o.stage ? { stage: o.stage } : {}),
          image: o.image,
          namespace: o.namespace,
          apiStateStorage: o.apiStateStorage,
          ...(o.storageClass ? { storageClass: o.storageClass } : {}),
          prometheusUrl: o.prometheusUrl,
          drainTimeoutMs: c.config.drainTimeoutMs,
          // a GPU stage's pods drain for the longest render this configuration allows, unless SONIC_DRAIN_TIMEOUT_MS is set
          drainTimeoutExplicit: isSet('drainTimeoutMs'),
          longestRenderMs: longestRenderMs(c.config),
          metricsPort: c.config.metricsPort || 9464,
          brokers: c.config.kafkaBrokers,
          schemaRegistryUrl: c.config.schemaRegistryUrl,
          clientId: c.config.clientId,
          ...(o.principalPrefix ? { principalPrefix: o.principalPrefix } : {}),
          // as the product connects (SONIC_KAFKA_*); the user name and password are per principal, never taken from here
          kafkaSsl: c.config.kafkaSsl,
          ...(c.config.kafkaSslCaFile ? { kafkaSslCaFile: c.config.kafkaSslCaFile } : {}),
          ...(c.config.kafkaSaslMechanism ? { kafkaSaslMechanism: c.config.kafkaSaslMechanism } : {}),
        };
        const yaml = renderK8s(topology, opts);
        // on stderr, not in the manifests piped to kubectl
        for (const w of renderK8sWarnings(topology, opts)) process.stderr.write(`warning: ${w}\n`);
        out(yaml);
      },
    );

  program
    .command('autoscale')
    .description(
      "Supervise every stage as worker processes on this machine and scale each on its backlog (lag × seconds per record vs target drain time; a dispatcher's workers on its backlog and outstanding GPU-seconds).",
    )
    .option('--stages <names>', 'comma-separated stages to supervise (default: all)')
    .option('--interval-ms <ms>', 'sampling interval', '5000')
    .option('--up-cooldown-ms <ms>', 'minimum time between two scale-ups of a stage', '15000')
    .option('--down-stabilization-ms <ms>', 'how long fewer replicas must be enough before scaling down', '60000')
    .option('--max <n>', 'upper bound of replicas per stage (also capped by partitions and the topology)')
    .addOption(fileOpt())
    .action(async (o: { stages?: string; intervalMs: string; upCooldownMs: string; downStabilizationMs: string; max?: string; file?: string }) => {
      const c = ctx();
      const topology = await c.topology(o.file);
      const scaler = new Autoscaler(topology, lagOfStage(c, topology), c.logger.child({ component: 'autoscale' }), {
        ...(o.stages ? { stages: o.stages.split(',') } : {}),
        intervalMs: Number(o.intervalMs),
        upCooldownMs: Number(o.upCooldownMs),
        downStabilizationMs: Number(o.downStabilizationMs),
        ...(o.max ? { maxReplicas: Number(o.max) } : {}),
        defaultSecondsPerRecord: 1,
        dispatchQueuePerWorker: c.config.dispatchQueuePerWorker,
        env: process.env,
        ...(o.file ? { runArgs: ['--file', o.file] } : {}),
      });
      scaler.start();
      out('autoscaling; Ctrl-C drains every worker and stops\n');
      await new Promise<void>((resolve) => {
        const stop = (): void => void scaler.stop().then(resolve);
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });

  const dlq = program.command('dlq').description("Inspect and replay a stage's dead letters.");
  dlq
    .command('list')
    .description('List the dead letters of a stage: position, task, error code, reason, attempt, time, message.')
    .argument('<stage>', 'stage name')
    .addOption(fileOpt())
    .action(async (stage: string, opts: { file?: string }) => {
      const c = ctx();
      out(formatList(await readDlq(c, await c.topology(opts.file), stage)));
    });
  dlq
    .command('show')
    .description('Show dead letters in full: every header and the value decoded through the registry.')
    .argument('<stage>', 'stage name')
    .option('--task-id <id>', 'the dead letters of one task')
    .option('--position <partition:offset>', 'one dead letter by position')
    .addOption(fileOpt())
    .action(async (stage: string, opts: { file?: string; taskId?: string; position?: string }) => {
      const c = ctx();
      const all = await readDlq(c, await c.topology(opts.file), stage);
      const picked = all.filter((r) => (!opts.taskId || r.key === opts.taskId) && (!opts.position || `${r.partition}:${r.offset}` === opts.position));
      if (picked.length === 0) {
        process.stderr.write('no dead letter matches\n');
        process.exitCode = 1;
        return;
      }
      for (const r of picked) out(`${await formatShow(c, r)}\n`);
    });
  dlq
    .command('replay')
    .description("Re-inject dead letters into the stage's input (attempt 1 again, the replay recorded in headers), in one transaction.")
    .argument('<stage>', 'stage name')
    .option('--all', 'every dead letter of the stage')
    .option('--task-id <id...>', 'the dead letters of these tasks')
    .option('--code <code>', 'the dead letters with this error code')
    .option('--dry-run', 'print what would be replayed and change nothing')
    .addOption(fileOpt())
    .action(async (stage: string, opts: { file?: string; all?: boolean; taskId?: string[]; code?: string; dryRun?: boolean }) => {
      const c = ctx();
      const t = await c.topology(opts.file);
      const picked = select(await readDlq(c, t, stage), { all: opts.all, taskIds: opts.taskId, code: opts.code });
      out(formatList(picked).replace(/dead letter\(s\)\n$/, `dead letter(s) ${opts.dryRun ? 'would be' : 'are being'} replayed\n`));
      if (opts.dryRun || picked.length === 0) return;
      await replay(c, t, stage, picked);
      out(`Replayed ${picked.length} record(s) into ${findStage(t, stage)?.input}.\n`);
    });

  const durationArg = (raw: string): number => {
    const s = parseDurationS(raw);
    if (s === undefined) throw new InvalidArgumentError('expected a duration: 30d, 12h, 90m, 45s or seconds');
    return s;
  };
  program
    .command('gc')
    .description(
      "Remove what is past retention: ended tasks (their blobs, then a tombstone on the status topic) and old uploads. Reads the status topic through the API's status view, kept on disk (--view-dir). The janitor (SONIC_JANITOR_INTERVAL_MS) does the same on a timer.",
    )
    .option('--dry-run', 'print what would be removed and change nothing')
    .addOption(new Option('--older-than <duration>', 'task retention instead of SONIC_TASK_RETENTION (30d, 12h, 90m, 45s or seconds)').argParser(durationArg))
    .addOption(new Option('--uploads-older-than <duration>', 'upload retention instead of SONIC_UPLOAD_RETENTION').argParser(durationArg))
    .addOption(
      new Option('--limit <n>', 'most tasks to remove (default SONIC_JANITOR_BATCH)').argParser((raw) => {
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
        return n;
      }),
    )
    .option(
      '--view-dir <dir>',
      "keep the status view's store (LMDB) in this directory: the next run with it reads only what is new; default: a temporary one, removed at the end. One process per directory: never a running API's",
    )
    .addOption(fileOpt())
    .action(async (opts: { dryRun?: boolean; olderThan?: number; uploadsOlderThan?: number; limit?: number; viewDir?: string; file?: string }) => {
      const c = ctx();
      try {
        const report = await runGc(c, await c.topology(opts.file), {
          dryRun: opts.dryRun ?? false,
          ...(opts.olderThan === undefined ? {} : { olderThanS: opts.olderThan }),
          ...(opts.uploadsOlderThan === undefined ? {} : { uploadsOlderThanS: opts.uploadsOlderThan }),
          ...(opts.limit === undefined ? {} : { limit: opts.limit }),
          ...(opts.viewDir === undefined ? {} : { viewDir: opts.viewDir }),
        });
        out(formatGcReport(report));
        if (report.failed.length > 0) process.exitCode = 1;
      } finally {
        await c.blobClose();
      }
    });

  const schemas = program.command('schemas').description('Govern the Avro schemas: schemas/ is the source of truth, the registry follows it.');
  const schemasOpt = (): Option => new Option('--schemas <dir>', "directory of .avsc files to use instead of the project's schemas/");
  const schemaChecks = async (o: { file?: string; schemas?: string }) => {
    const c = ctx();
    const catalog = o.schemas ? new SchemaCatalog(o.schemas) : c.serde.catalog;
    const registry = new RegistryAdmin(o.schemas ? new Serde(catalog, { url: c.config.schemaRegistryUrl }) : c.serde);
    return { registry, checks: await checkSchemas(await c.topology(o.file), catalog, registry) };
  };
  schemas
    .command('check')
    .description("Check every local schema against the registry under its subject's compatibility level; exit 1 on an incompatible change.")
    .addOption(schemasOpt())
    .addOption(fileOpt())
    .action(async (o: { file?: string; schemas?: string }) => {
      const { checks } = await schemaChecks(o);
      out(formatChecks(checks, false));
      if (checks.some((x) => x.verdict === 'incompatible')) process.exitCode = 1;
    });
  schemas
    .command('diff')
    .description('Show field-level changes of every local schema against the latest registered version.')
    .addOption(schemasOpt())
    .addOption(fileOpt())
    .action(async (o: { file?: string; schemas?: string }) => {
      out(formatDiffs((await schemaChecks(o)).checks));
    });
  schemas
    .command('register')
    .description('Register new and compatibly changed schemas with their compatibility levels; refuses everything if one is incompatible.')
    .addOption(schemasOpt())
    .addOption(fileOpt())
    .action(async (o: { file?: string; schemas?: string }) => {
      const { registry, checks } = await schemaChecks(o);
      out(formatChecks(checks, true));
      if (checks.some((x) => x.verdict === 'incompatible')) {
        process.stderr.write('nothing registered\n');
        process.exitCode = 1;
        return;
      }
      const topology = await ctx().topology(o.file);
      for (const x of checks.filter((y) => y.verdict === 'new' || y.verdict === 'compatible')) {
        const level = Object.values(topology.topics).find((t) => `${t.name}-value` === x.subject)!.compatibility;
        out(`registered ${x.subject} as schema id ${await registry.register(x.subject, x.schema, level)}\n`);
      }
    });

  const stack = program.command('stack').description('The local Kafka broker and schema registry (no Docker needed).');
  for (const [name, doc] of [
    ['up', 'start Kafka (KRaft) and Apicurio Registry, or reuse them when running'],
    ['down', 'stop exactly what `stack up` started'],
    ['status', 'report both services'],
    ['clean', 'stop, then delete the local data and logs'],
  ] as const) {
    stack
      .command(name)
      .description(doc)
      .option('--secure', 'the secured stack instead: Kafka over SASL_SSL with SCRAM users and its own registry (docs/operations.md)')
      .action((o: { secure?: boolean }) => {
        const r = spawnSync('bash', [join(ROOT, 'ops', 'stack', 'stack.sh'), name, ...(o.secure ? ['--secure'] : [])], { stdio: 'inherit' });
        process.exitCode = r.status ?? 1;
      });
  }

  program
    .command('config')
    .description('List every environment variable sonicflow reads, with its default and current value.')
    .action(() => {
      for (const s of describeSettings()) {
        const now = process.env[s.env];
        out(`${s.env}=${displayValue(s.env, now ?? s.default)}${now === undefined ? '  (default)' : ''}\n    ${s.doc}\n`);
      }
    });

  return program;
}

/** Runs the CLI with `argv` (node, script, ...args) and returns the exit code. */
export async function main(argv: string[] = process.argv): Promise<number> {
  let context: Context | undefined;
  const program = buildCli(() => (context ??= new Context()));
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const e = toSonicError(err);
    process.stderr.write(`error [${e.code}]: ${e.message}\n`);
    if (!isSonicError(err)) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    return 1;
  }
}
