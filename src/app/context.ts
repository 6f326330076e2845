/**
 * The composition root: what every command and the API need, built once and lazily —
 * configuration, logger, Kafka client, serde, blob store, and the topology with its stages (the
 * built-in Sonic one, or a file given with --file).
 */
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfig, readKafkaCa, type Config } from '../core/config.js';
import { SonicError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/logger.js';
import { createKafka, type KafkaClient, type KafkaConnection } from '../kafka/client.js';
import { SchemaCatalog } from '../serde/catalog.js';
import { RegistryAdmin } from '../serde/registry-admin.js';
import { Serde } from '../serde/serde.js';
import { defineTopology, type Topology, type TopologyDecl } from '../runtime/topology.js';
import { withProfile } from '../runtime/profiles.js';
import { createBlobStore, type BlobStore } from '../blob/index.js';
import type { StageDeps } from '../stages/common.js';
import { sonicTopology } from '../../topologies/sonic.js';

/**
 * The Kafka connection the configuration describes: brokers, client id, timeouts, and TLS (the CA
 * of SONIC_KAFKA_SSL_CA_FILE, read here) and SASL when configured. Every client of the product is
 * made from it; so are the benchmarks' own clients (bench/kafka-connection.ts).
 */
export function kafkaConnection(c: Config): KafkaConnection {
  return {
    brokers: c.kafkaBrokers,
    client: c.kafkaClient,
    clientId: c.clientId,
    connectTimeoutMs: c.kafkaConnectTimeoutMs,
    requestTimeoutMs: c.kafkaRequestTimeoutMs,
    retryInitialMs: c.kafkaRetryInitialMs,
    ...(c.kafkaSsl ? { ssl: c.kafkaSslCaFile ? { ca: [readKafkaCa(c.kafkaSslCaFile)] } : true } : {}),
    ...(c.kafkaSaslMechanism ? { sasl: { mechanism: c.kafkaSaslMechanism, username: c.kafkaSaslUsername, password: c.kafkaSaslPassword } } : {}),
  };
}

export class Context {
  readonly config: Config;
  readonly logger: Logger;
  private kafkaClient?: KafkaClient;
  private serdeInstance?: Serde;

  constructor(env?: NodeJS.ProcessEnv, name = 'sonicflow') {
    this.config = loadConfig(env);
    this.logger = createLogger(name, this.config.logLevel);
    const c = this.config;
    if (!c.kafkaSsl && c.kafkaSslCaFile)
      this.logger.warn(
        { SONIC_KAFKA_SSL_CA_FILE: c.kafkaSslCaFile },
        'SONIC_KAFKA_SSL_CA_FILE is set but SONIC_KAFKA_SSL is not: Kafka is reached without TLS',
      );
    if (!c.kafkaSsl && c.kafkaSaslMechanism === 'plain')
      this.logger.warn('SASL/PLAIN without TLS (SONIC_KAFKA_SSL is not set): the Kafka password crosses the network in clear');
  }

  get kafka(): KafkaClient {
    this.kafkaClient ??= createKafka(kafkaConnection(this.config), this.logger);
    return this.kafkaClient;
  }

  get serde(): Serde {
    const c = this.config;
    this.serdeInstance ??= new Serde(new SchemaCatalog(), {
      url: c.schemaRegistryUrl,
      ...(c.schemaRegistryUsername ? { auth: { username: c.schemaRegistryUsername, password: c.schemaRegistryPassword } } : {}),
    });
    return this.serdeInstance;
  }

  private blobStore?: BlobStore;
  /** The configured blob store (filesystem or S3). */
  get blob(): BlobStore {
    this.blobStore ??= createBlobStore(this.config);
    return this.blobStore;
  }

  /** Closes the blob store if one was opened. */
  async blobClose(): Promise<void> {
    await this.blobStore?.close();
  }

  get registryAdmin(): RegistryAdmin {
    return new RegistryAdmin(this.serde);
  }

  /**
   * The built-in Sonic topology with the configured prefix, or the one declared in `file`, with
   * the environment profile SONIC_TOPOLOGY_PROFILE applied to its topics (replicas,
   * min.insync.replicas). Its stages carry their code: `stage.create(ctx.stageDeps)` builds a handler.
   */
  async topology(file?: string): Promise<Topology> {
    const t = file
      ? await loadTopologyFile(file, this.config.topicPrefix)
      : sonicTopology({ prefix: this.config.topicPrefix, retryDelayScale: this.config.retryDelayScale });
    return withProfile(t, this.config.topologyProfile);
  }

  /** What a stage's `create` gets in this process. */
  get stageDeps(): StageDeps {
    return { config: this.config, blob: this.blob, logger: this.logger };
  }
}

/**
 * Loads a topology from a module (default export: a Topology, a declaration, or a function of
 * `{prefix}` returning either) or from a JSON file holding a Topology or a declaration.
 */
export async function loadTopologyFile(file: string, prefix: string): Promise<Topology> {
  const path = resolve(file);
  let loaded: unknown;
  try {
    if (extname(path) === '.json') {
      const { readFile } = await import('node:fs/promises');
      loaded = JSON.parse(await readFile(path, 'utf8'));
    } else {
      loaded = ((await import(pathToFileURL(path).href)) as { default?: unknown }).default;
    }
  } catch (err) {
    throw new SonicError('TOPOLOGY_INVALID', `cannot load topology from ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (typeof loaded === 'function') loaded = (loaded as (o: { prefix: string }) => unknown)({ prefix });
  if (loaded && typeof loaded === 'object' && 'stages' in loaded) {
    // a Topology has its status topic's full name; a declaration names the status topic's key
    return 'statusTopic' in loaded ? (loaded as Topology) : defineTopology({ prefix, ...(loaded as Omit<TopologyDecl, 'prefix'>) } as TopologyDecl);
  }
  throw new SonicError('TOPOLOGY_INVALID', `${file} does not export a topology (a Topology, a declaration, or a function returning one)`);
}
