/**
 * A private single-node Kafka (or three-node cluster) for tests that stop, restart, freeze or kill brokers: it runs on its
 * own ports with its own data directory (through ops/stack/stack.sh), so that the shared broker
 * the other test files use is never disturbed. The schema registry and the S3 store stay the
 * shared ones (the registry keeps its schemas in the shared broker).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../bench/lib.js';
import { Context } from '../../src/app/context.js';
import { TopicAdmin } from '../../src/kafka/admin.js';
import { ROOT, onCleanup } from './infra.js';

export interface PrivateBroker {
  /** `localhost:<port>`, for KAFKA_BROKERS. */
  brokers: string;
  /** Environment for sonicflow processes that should use this broker. */
  env: Record<string, string>;
  /** A Context (quiet logs) on this broker, the shared registry and store. */
  context(): Context;
  /** Stops the broker (SIGTERM, then waits for the port to close); its data stays. */
  stop(): void;
  /** Starts it again on the same ports and data. */
  start(): void;
  /** Freezes the process (SIGSTOP): connections stay open and nothing answers. */
  freeze(): void;
  /** Thaws a frozen broker (SIGCONT). */
  thaw(): void;
}

/** Starts a private broker (about 10-20 s; up to three tries on fresh ports); it is stopped and its data removed after the file's tests. */
export async function startPrivateBroker(): Promise<PrivateBroker> {
  return onFreshPorts(launchPrivateBroker);
}

/**
 * The environment of a private stack.sh run: its own state directory and broker ports, the
 * shared registry and S3 store (on another port than the endpoint's, so stack.sh treats the
 * shared store as external and starts none).
 */
function privateStackEnv(state: string, s3Port: number, ports: Record<string, string>): { registry: string; s3: string; stackEnv: NodeJS.ProcessEnv } {
  const registry = process.env.SCHEMA_REGISTRY_URL || 'http://localhost:8081/apis/ccompat/v7';
  const s3 = process.env.SONIC_S3_ENDPOINT || 'http://127.0.0.1:9000';
  return {
    registry,
    s3,
    stackEnv: {
      ...process.env,
      KAFKA_BROKERS: '',
      SCHEMA_REGISTRY_URL: registry,
      SONIC_S3_ENDPOINT: s3,
      SONIC_S3_PORT: String(s3Port),
      SONICFLOW_STATE_DIR: state,
      ...ports,
    },
  };
}

/**
 * Runs `stack up`; a start that fails is stopped and its state removed, and a started one is
 * stopped (after `beforeDown`, e.g. thawing a frozen broker) and removed after the file's tests.
 */
function bringUp(stack: (cmd: string) => void, state: string, beforeDown: () => void = () => undefined): void {
  const clean = (): void => {
    try {
      stack('down');
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  };
  try {
    stack('up');
  } catch (err) {
    clean();
    throw err;
  }
  onCleanup(async () => {
    beforeDown();
    clean();
  });
}

/**
 * Ports are chosen before a broker binds them (its controller address must be known up front), so
 * another process may take one meanwhile (a port-0 server gets one from the same range): a start
 * that fails is tried again on other ports, up to three times.
 */
async function onFreshPorts<T>(launch: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch();
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

async function launchPrivateBroker(): Promise<PrivateBroker> {
  const state = mkdtempSync(join(tmpdir(), 'sonicflow-private-kafka-'));
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [kafkaPort, controllerPort, s3Port] = [...ports] as [number, number, number];
  const { registry, s3, stackEnv } = privateStackEnv(state, s3Port, {
    SONIC_KAFKA_PORT: String(kafkaPort),
    SONIC_KAFKA_CONTROLLER_PORT: String(controllerPort),
  });
  const stack = (cmd: string): void => {
    const r = spawnSync('bash', [join(ROOT, 'ops/stack/stack.sh'), cmd], { env: stackEnv, encoding: 'utf8', timeout: 180_000 });
    if (r.status !== 0) throw new Error(`stack.sh ${cmd} (private broker on ${kafkaPort}) failed: ${r.stderr}`);
  };
  const pid = (): number => Number(readFileSync(join(state, 'kafka.pid'), 'utf8').trim());
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(pid(), sig);
    } catch {
      // already gone
    }
  };
  bringUp(stack, state, () => signal('SIGCONT'));
  const brokers = `localhost:${kafkaPort}`;
  const env = { KAFKA_BROKERS: brokers, SCHEMA_REGISTRY_URL: registry, SONIC_S3_ENDPOINT: s3 };
  let ctx: Context | undefined;
  return {
    brokers,
    env,
    context: () => (ctx ??= new Context({ ...process.env, ...env, SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'error' }, 'test')),
    stop: () => stack('down'),
    start: () => stack('up'),
    freeze: () => signal('SIGSTOP'),
    thaw: () => signal('SIGCONT'),
  };
}

export interface PrivateCluster {
  /** `localhost:<port>,...` of the three brokers, for KAFKA_BROKERS. */
  brokers: string;
  /** Environment for sonicflow processes that should use this cluster. */
  env: Record<string, string>;
  /** The node ids, 1 to 3, and the port of each. */
  ports: Record<number, number>;
  /** A Context (quiet logs) on this cluster, the shared registry and store, with `env` added. */
  context(env?: Record<string, string>): Context;
  /** SIGKILLs node `id` (no shutdown, no leadership handed over) and waits until it is gone. */
  kill(id: number): Promise<void>;
  /** Starts the nodes that do not run (stack.sh up --brokers 3). */
  start(): void;
}

/**
 * Starts a private three-node KRaft cluster (stack.sh up --brokers 3 on free ports, its own state
 * directory; up to three tries on fresh ports, like startPrivateBroker); it is stopped and its data
 * removed after the file's tests. The registry and the S3 store stay the shared ones.
 */
export async function startPrivateCluster(): Promise<PrivateCluster> {
  return onFreshPorts(launchPrivateCluster);
}

async function launchPrivateCluster(): Promise<PrivateCluster> {
  const state = mkdtempSync(join(tmpdir(), 'sonicflow-private-cluster-'));
  const free = new Set<number>();
  while (free.size < 7) free.add(await freePort());
  const [p1, p2, p3, c1, c2, c3, s3Port] = [...free] as number[];
  const { registry, s3, stackEnv } = privateStackEnv(state, s3Port!, {
    SONIC_STACK_BROKERS: '3',
    SONIC_KAFKA_PORTS: `${p1},${p2},${p3}`,
    SONIC_KAFKA_CONTROLLER_PORTS: `${c1},${c2},${c3}`,
  });
  const stack = (cmd: string): void => {
    const r = spawnSync('bash', [join(ROOT, 'ops/stack/stack.sh'), cmd], { env: stackEnv, encoding: 'utf8', timeout: 240_000 });
    if (r.status !== 0) throw new Error(`stack.sh ${cmd} --brokers 3 (private cluster on ${p1},${p2},${p3}) failed: ${r.stderr}`);
  };
  bringUp(stack, state);
  const ports: Record<number, number> = { 1: p1!, 2: p2!, 3: p3! };
  const brokers = Object.values(ports)
    .map((p) => `localhost:${p}`)
    .join(',');
  const env = { KAFKA_BROKERS: brokers, SCHEMA_REGISTRY_URL: registry, SONIC_S3_ENDPOINT: s3 };
  return {
    brokers,
    env,
    ports,
    context: (more = {}) => new Context({ ...process.env, ...env, SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'error', ...more }, 'test'),
    async kill(id) {
      const pid = Number(readFileSync(join(state, 'cluster3', `kafka-${id}.pid`), 'utf8').trim());
      process.kill(pid, 'SIGKILL');
      for (;;) {
        try {
          process.kill(pid, 0);
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 100)); // poll until the process is gone
      }
    },
    start: () => stack('up'),
  };
}

export interface SaslBroker {
  /** `localhost:<port>`, for KAFKA_BROKERS. */
  brokers: string;
  /** The super user (`User:admin`) that deploys topics and ACLs. */
  admin: { username: string; password: string };
  /** Environment for a sonicflow process connecting as `user` (one of the users it was started with, or `admin`). */
  env(user: string): Record<string, string>;
  /** A Context (quiet logs) connecting as `user`, on this broker, the shared registry and store. */
  context(user: string, env?: Record<string, string>): Context;
  /** The password of `user` (`<user>-secret`). */
  password(user: string): string;
}

const KAFKA_VERSION = '4.1.1';

/**
 * Starts a private single Kafka node whose one client listener is SASL_PLAINTEXT with
 * SCRAM-SHA-512, and whose authorizer (the StandardAuthorizer, `allow.everyone.if.no.acl.found=false`)
 * allows nothing but to the super user `admin`: what a stage may do is exactly what ACLs grant.
 * The SCRAM users (`users` and `admin`, password `<user>-secret`) are created when the storage
 * is formatted. It runs from the Kafka distribution that ops/stack/stack.sh caches (the shared
 * stack's start fetched it), on free ports; it is stopped and its data removed after the file's
 * tests. The registry and S3 store stay the shared ones.
 */
export async function startSaslBroker(users: string[]): Promise<SaslBroker> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await launchSaslBroker(users);
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

async function launchSaslBroker(users: string[]): Promise<SaslBroker> {
  const cache = process.env.SONICFLOW_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'sonicflow');
  const kafkaHome = join(cache, `kafka-${KAFKA_VERSION}`);
  const dir = mkdtempSync(join(tmpdir(), 'sonicflow-sasl-kafka-'));
  mkdirSync(join(dir, 'logs'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const password = (user: string): string => `${user}-secret`;
  const props = [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@localhost:${controllerPort}`,
    `listeners=SASL_PLAINTEXT://localhost:${port},CONTROLLER://localhost:${controllerPort}`,
    `advertised.listeners=SASL_PLAINTEXT://localhost:${port}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=SASL_PLAINTEXT',
    'listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT',
    'sasl.enabled.mechanisms=SCRAM-SHA-512',
    'sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512',
    `listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${password('admin')}";`,
    'authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer',
    'allow.everyone.if.no.acl.found=false',
    // the controller listener is PLAINTEXT on localhost: the node talks to itself as ANONYMOUS
    'super.users=User:admin;User:ANONYMOUS',
    `log.dirs=${join(dir, 'data')}`,
    'num.partitions=1',
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=12',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=12',
    'group.initial.rebalance.delay.ms=0',
    'auto.create.topics.enable=false',
    'delete.topic.enable=true',
  ];
  writeFileSync(join(dir, 'server.properties'), `${props.join('\n')}\n`);
  const cp = join(kafkaHome, 'libs', '*');
  const scram = ['admin', ...users].flatMap((u) => ['--add-scram', `SCRAM-SHA-512=[name=${u},password=${password(u)}]`]);
  const format = spawnSync(
    'java',
    ['-cp', cp, 'kafka.tools.StorageTool', 'format', '-t', 'c2FzbC1hY2xzLXRlc3QtMQ', '-c', join(dir, 'server.properties'), ...scram],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (format.status !== 0) throw new Error(`formatting the SASL broker failed: ${format.stderr || format.stdout}`);
  const proc = spawn(
    'java',
    [
      '-Xms128m',
      '-Xmx512m',
      '-XX:+UseG1GC',
      '-Djava.awt.headless=true',
      `-Dkafka.logs.dir=${join(dir, 'logs')}`,
      `-Dlog4j2.configurationFile=${join(ROOT, 'ops', 'stack', 'log4j2.properties')}`,
      '-cp',
      cp,
      'kafka.Kafka',
      join(dir, 'server.properties'),
    ],
    { stdio: 'ignore', detached: false },
  );
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  onCleanup(async () => {
    proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const brokers = `localhost:${port}`;
  const registry = process.env.SCHEMA_REGISTRY_URL || 'http://localhost:8081/apis/ccompat/v7';
  const s3 = process.env.SONIC_S3_ENDPOINT || 'http://127.0.0.1:9000';
  const env = (user: string): Record<string, string> => ({
    KAFKA_BROKERS: brokers,
    SCHEMA_REGISTRY_URL: registry,
    SONIC_S3_ENDPOINT: s3,
    SONIC_KAFKA_SASL_MECHANISM: 'scram-sha-512',
    SONIC_KAFKA_SASL_USERNAME: user,
    SONIC_KAFKA_SASL_PASSWORD: password(user),
  });
  const context = (user: string, more: Record<string, string> = {}): Context =>
    new Context({ ...process.env, ...env(user), SONIC_LOG_LEVEL: process.env.SONIC_LOG_LEVEL ?? 'error', ...more }, 'test');
  // ready when the port is open and the super user can list topics
  const deadline = Date.now() + 90_000;
  const portOpen = (): Promise<boolean> =>
    new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
  while (!(await portOpen())) {
    if (proc.exitCode !== null) throw new Error(`the SASL broker exited during start-up (logs: ${join(dir, 'logs')})`);
    if (Date.now() > deadline) throw new Error(`the SASL broker did not listen on ${port} within 90 s`);
    await new Promise((r) => setTimeout(r, 250)); // poll until it listens
  }
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the SASL broker exited during start-up (logs: ${join(dir, 'logs')})`);
    const ctx = context('admin');
    const admin = new TopicAdmin(ctx.kafka);
    try {
      await admin.connect();
      await admin.list();
      break;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the SASL broker on ${brokers} did not answer within 90 s: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 500)); // poll until it answers
    } finally {
      await admin.close().catch(() => undefined);
    }
  }
  return { brokers, admin: { username: 'admin', password: password('admin') }, env, context, password };
}
