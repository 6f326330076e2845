/**
 * Configuration: the only module that interprets `process.env` (elsewhere the environment is only
 * passed on to child processes, or shown by `sonicflow config`). Each setting has its name, default,
 * parser and doc together (in the spirit of Kafka's ConfigDef); `loadConfig` validates them all
 * once at start and throws `CONFIG_INVALID` naming the variable.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SonicError } from './errors.js';

type Parser<T> = (raw: string, name: string) => T;

interface SettingDef<T> {
  env: string;
  default: T;
  doc: string;
  parse: Parser<T>;
}

const str: Parser<string> = (raw) => raw;

const int =
  (min: number, max: number): Parser<number> =>
  (raw, name) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new SonicError('CONFIG_INVALID', `${name} must be an integer in [${min}, ${max}], got "${raw}"`, {
        details: { variable: name },
      });
    }
    return n;
  };

/** 0 (the setting's "not set": another source decides), else what `parse` accepts. */
const zeroOr =
  (parse: Parser<number>): Parser<number> =>
  (raw, name) =>
    raw.trim() === '0' ? 0 : parse(raw, name);

const num =
  (min: number, max: number): Parser<number> =>
  (raw, name) => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new SonicError('CONFIG_INVALID', `${name} must be a number in [${min}, ${max}], got "${raw}"`, { details: { variable: name } });
    }
    return n;
  };

const oneOf =
  <T extends string>(...values: T[]): Parser<T> =>
  (raw, name) => {
    if (!(values as string[]).includes(raw)) {
      throw new SonicError('CONFIG_INVALID', `${name} must be one of ${values.join(', ')}, got "${raw}"`, {
        details: { variable: name },
      });
    }
    return raw as T;
  };

const brokerList: Parser<string[]> = (raw, name) => {
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (list.length === 0 || list.some((b) => !/^[^\s:]+:\d+$/.test(b))) {
    throw new SonicError('CONFIG_INVALID', `${name} must be a comma-separated list of host:port, got "${raw}"`, {
      details: { variable: name },
    });
  }
  return list;
};

const url: Parser<string> = (raw, name) => {
  try {
    const u = new URL(raw);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('protocol');
  } catch {
    throw new SonicError('CONFIG_INVALID', `${name} must be an http(s) URL, got "${raw}"`, { details: { variable: name } });
  }
  return raw.replace(/\/+$/, '');
};

const topicPrefix: Parser<string> = (raw, name) => {
  if (!/^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$/.test(raw)) {
    throw new SonicError('CONFIG_INVALID', `${name} must be dot-separated [a-zA-Z0-9_-] words, got "${raw}"`, {
      details: { variable: name },
    });
  }
  return raw;
};

const profileName: Parser<string> = (raw, name) => {
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(raw)) {
    throw new SonicError('CONFIG_INVALID', `${name} must be a profile name of [a-zA-Z0-9_-], got "${raw}"`, { details: { variable: name } });
  }
  return raw;
};

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const path: Parser<string> = (raw, name) => {
  if (!raw.startsWith('/') && !raw.startsWith('~')) {
    throw new SonicError('CONFIG_INVALID', `${name} must be an absolute path (or start with ~), got "${raw}"`, { details: { variable: name } });
  }
  return raw.startsWith('~') ? join(homedir(), raw.slice(1)) : raw;
};

const optionalUrl: Parser<string> = (raw, name) => (raw === '' ? '' : url(raw, name));

/** `redis://` or `rediss://` URL, or empty (no Redis). */
const optionalRedisUrl: Parser<string> = (raw, name) => {
  if (raw === '') return '';
  let ok = false;
  try {
    ok = ['redis:', 'rediss:'].includes(new URL(raw).protocol);
  } catch {
    // not a URL
  }
  // the URL may hold a password: never echoed
  if (!ok) throw new SonicError('CONFIG_INVALID', `${name} must be a redis:// or rediss:// URL`, { details: { variable: name } });
  return raw;
};

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** A duration in whole seconds from `30d`, `12h`, `90m`, `45s` or a bare number of seconds; undefined for anything else. */
export function parseDurationS(raw: string): number | undefined {
  const m = /^(\d+)\s*([smhd]?)$/.exec(raw.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * DURATION_UNITS[m[2] || 's']!;
  return Number.isSafeInteger(n) ? n : undefined;
}

const duration =
  (minS: number, maxS = Number.POSITIVE_INFINITY): Parser<number> =>
  (raw, name) => {
    const s = parseDurationS(raw);
    if (s === undefined || s < minS || s > maxS) {
      const range = Number.isFinite(maxS) ? `from ${minS} s to ${maxS} s` : `of at least ${minS} s`;
      throw new SonicError('CONFIG_INVALID', `${name} must be a duration ${range} (\`30d\`, \`12h\`, \`90m\`, \`45s\` or seconds), got "${raw}"`, {
        details: { variable: name },
      });
    }
    return s;
  };

const optionalPath: Parser<string> = (raw, name) => (raw === '' ? '' : path(raw, name));

const list: Parser<string[]> = (raw) =>
  raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const bool: Parser<boolean> = (raw, name) => {
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new SonicError('CONFIG_INVALID', `${name} must be true or false, got "${raw}"`, { details: { variable: name } });
};

/** A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes (as the spec recommends). Never echoed. */
function checkWebhookSecret(secret: string, name: string, what: string): void {
  const m = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret);
  const bytes = m ? Buffer.from(m[1]!, 'base64').length : 0;
  if (bytes < 24 || bytes > 64) {
    throw new SonicError('CONFIG_INVALID', `${name}: ${what} must be whsec_ followed by the base64 of 24 to 64 random bytes`, { details: { variable: name } });
  }
}

const webhookSecret: Parser<string> = (raw, name) => {
  checkWebhookSecret(raw, name, 'the secret');
  return raw;
};

/** Tenant ids as they come from SONIC_API_KEYS (no `/`, `=`, `,` or spaces), secret names. */
const WEBHOOK_TENANT = /^[^/=,\s]{1,128}$/;
const WEBHOOK_SECRET_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * `[tenant/]name=whsec_...` entries, normalised to `tenant/name=whsec_...` (tenant `default` when
 * omitted: the tenant of bare API keys and of disabled auth). Errors name the entry, never its secret.
 */
const webhookSecretList: Parser<string[]> = (raw, name) => {
  const seen = new Set<string>();
  return list(raw, name).map((entry, i) => {
    const eq = entry.indexOf('=');
    const key = eq < 0 ? entry : entry.slice(0, eq);
    const slash = key.indexOf('/');
    const [tenant, secretName] = slash < 0 ? ['default', key] : [key.slice(0, slash), key.slice(slash + 1)];
    if (eq < 0 || !WEBHOOK_TENANT.test(tenant) || !WEBHOOK_SECRET_NAME.test(secretName)) {
      throw new SonicError('CONFIG_INVALID', `${name} entry ${i + 1} must be tenant/name=whsec_... (name of [A-Za-z0-9_.-], at most 64)`, {
        details: { variable: name },
      });
    }
    checkWebhookSecret(entry.slice(eq + 1), name, `the secret of ${tenant}/${secretName}`);
    if (seen.has(`${tenant}/${secretName}`))
      throw new SonicError('CONFIG_INVALID', `${name} names ${tenant}/${secretName} twice`, { details: { variable: name } });
    seen.add(`${tenant}/${secretName}`);
    return `${tenant}/${secretName}=${entry.slice(eq + 1)}`;
  });
};

function def<T>(env: string, dflt: T, parse: Parser<T>, doc: string): SettingDef<T> {
  return { env, default: dflt, parse, doc };
}

/** Every setting sonicflow reads from the environment, with its default and meaning. */
export const SETTINGS = {
  kafkaBrokers: def(
    'KAFKA_BROKERS',
    ['localhost:9092'],
    brokerList,
    'Kafka bootstrap servers, comma-separated host:port. When set, `stack:up` starts no broker.',
  ),
  schemaRegistryUrl: def(
    'SCHEMA_REGISTRY_URL',
    'http://localhost:8081/apis/ccompat/v7',
    url,
    'Confluent-compatible schema registry base URL. When set, `stack:up` starts no registry.',
  ),
  topicPrefix: def('SONIC_TOPIC_PREFIX', 'sonic', topicPrefix, 'Prefix of every topic name (`<prefix>.tasks.requested`, ...).'),
  topologyProfile: def(
    'SONIC_TOPOLOGY_PROFILE',
    'local',
    profileName,
    "Environment profile of the topology: each topic's replication factor and `min.insync.replicas` (Sonic: `local` 1 replica; `replicated` 3 replicas, 2 in sync).",
  ),
  clientId: def('SONIC_CLIENT_ID', 'sonicflow', str, 'Kafka client id and prefix of consumer groups and transactional ids.'),
  kafkaClient: def<'kafkajs' | 'platformatic'>(
    'SONIC_KAFKA_CLIENT',
    'kafkajs',
    oneOf('kafkajs', 'platformatic'),
    'Kafka client of the stage runtime: `kafkajs` (one transactional producer per input partition) or `platformatic` (@platformatic/kafka: KIP-447, one transactional producer per stage). Admin, tools and the API use kafkajs either way.',
  ),
  kafkaRetryInitialMs: def(
    'SONIC_KAFKA_RETRY_INITIAL_MS',
    20,
    int(1, 10_000),
    'First backoff of a retried Kafka request, ms (kafkajs uses 100; 20 matches the Java client for back-to-back transactions).',
  ),
  kafkaSaslMechanism: def<'' | 'plain' | 'scram-sha-256' | 'scram-sha-512'>(
    'SONIC_KAFKA_SASL_MECHANISM',
    '',
    oneOf('', 'plain', 'scram-sha-256', 'scram-sha-512'),
    'SASL mechanism for the brokers; empty for none.',
  ),
  kafkaSaslUsername: def('SONIC_KAFKA_SASL_USERNAME', '', str, 'SASL user name.'),
  kafkaSaslPassword: def('SONIC_KAFKA_SASL_PASSWORD', '', str, 'SASL password (redacted in logs and `sonicflow config`).'),
  kafkaSsl: def('SONIC_KAFKA_SSL', false, bool, 'TLS to the brokers.'),
  kafkaSslCaFile: def('SONIC_KAFKA_SSL_CA_FILE', '', str, "PEM file of the CA that signed the brokers' certificates (default: the system CAs)."),
  schemaRegistryUsername: def('SCHEMA_REGISTRY_USERNAME', '', str, 'Basic-auth user of the schema registry; empty for none.'),
  schemaRegistryPassword: def('SCHEMA_REGISTRY_PASSWORD', '', str, 'Basic-auth password of the schema registry (redacted).'),
  logLevel: def<LogLevel>('SONIC_LOG_LEVEL', 'info', oneOf(...LOG_LEVELS), 'pino log level.'),
  kafkaConnectTimeoutMs: def('SONIC_KAFKA_CONNECT_TIMEOUT_MS', 5000, int(100, 600_000), 'Timeout of one broker connection attempt, ms.'),
  kafkaRequestTimeoutMs: def('SONIC_KAFKA_REQUEST_TIMEOUT_MS', 30000, int(100, 600_000), 'Timeout of one Kafka request, ms.'),
  sessionTimeoutMs: def(
    'SONIC_SESSION_TIMEOUT_MS',
    0,
    zeroOr(int(6000, 1_800_000)),
    "Consumer group session timeout, ms: how soon a stage process that died without leaving loses its partitions. 0: the stage's own (infer and dispatch declare 6000, so a dead GPU worker's tasks go to another within seconds), else 30000.",
  ),
  heartbeatIntervalMs: def(
    'SONIC_HEARTBEAT_INTERVAL_MS',
    3000,
    int(100, 600_000),
    'Consumer heartbeat interval, ms; at most a third of the session timeout is used.',
  ),
  rebalanceTimeoutMs: def('SONIC_REBALANCE_TIMEOUT_MS', 60000, int(1000, 1_800_000), 'How long the group waits for members to rejoin during a rebalance, ms.'),
  fetchMaxWaitMs: def('SONIC_FETCH_MAX_WAIT_MS', 100, int(1, 30_000), 'Longest a fetch waits for new records, ms; also the pause-poll granularity.'),
  transactionTimeoutMs: def(
    'SONIC_TRANSACTION_TIMEOUT_MS',
    60000,
    int(1000, 900_000),
    'Kafka transaction timeout, ms. Transactions are short: work happens before them.',
  ),
  dispatchQueuePerWorker: def(
    'SONIC_DISPATCH_QUEUE_PER_WORKER',
    1,
    int(0, 100),
    'A dispatcher stage: records queued for each worker besides the one it works on (the next one is there when it finishes).',
  ),
  dispatchLeadMs: def(
    'SONIC_DISPATCH_LEAD_MS',
    500,
    int(0, 600_000),
    "A dispatcher stage: a worker gets more than 1 + SONIC_DISPATCH_QUEUE_PER_WORKER records (at most 32) while what it holds is estimated at less than this, so short tasks do not run out between two dispatches; 0: never more. A Sonic render is estimated at 5 s at least, so it changes nothing for infer's GPU tasks.",
  ),
  dispatchAgingMs: def(
    'SONIC_DISPATCH_AGING_MS',
    60000,
    int(0, 86_400_000),
    "A dispatcher stage: a waiting record's priority rises by one per this many ms waited (0: never), so low priorities are not starved.",
  ),
  dispatchPollMs: def(
    'SONIC_DISPATCH_POLL_MS',
    50,
    int(5, 60_000),
    "A dispatcher stage: how often it reads the workers' committed offsets and their group's assignment, ms.",
  ),
  dispatchMaxBacklog: def(
    'SONIC_DISPATCH_MAX_BACKLOG',
    10000,
    int(1, 10_000_000),
    'A dispatcher stage: most records held in its backlog; beyond it, its input is not read (priorities apply among those held).',
  ),
  // up to Node's longest timer (2^31 - 1 ms, 24.8 days): `render k8s` gives a GPU stage's pods the longest render, which may pass an hour
  drainTimeoutMs: def('SONIC_DRAIN_TIMEOUT_MS', 30000, int(0, 2_147_483_647), 'On SIGTERM, how long in-flight work may finish before it is abandoned, ms.'),
  metricsPort: def(
    'SONIC_METRICS_PORT',
    9464,
    int(0, 65535),
    'Port of /metrics, /healthz and /readyz of a stage process; 0 picks a free port, which `sonicflow run` prints on stdout (`metrics on :<port>/metrics`).',
  ),
  batchMaxRecords: def('SONIC_BATCH_MAX_RECORDS', 0, int(0, 100_000), 'Records per transaction; 0 keeps the topology value of the stage.'),
  batchMaxWaitMs: def(
    'SONIC_BATCH_MAX_WAIT_MS',
    -1,
    int(-1, 600_000),
    'Longest a batch collects before it commits, ms (the commit interval); -1 keeps the topology value.',
  ),
  concurrency: def(
    'SONIC_CONCURRENCY',
    0,
    int(0, 1024),
    'Handlers a stage process runs at once (records of one partition stay in order; a batch commits while the next one is handled, so up to twice as many partitions are worked on); 0 keeps the topology value.',
  ),
  reconnectBackoffMs: def(
    'SONIC_RECONNECT_BACKOFF_MS',
    500,
    int(10, 600_000),
    'First wait before a stage process tries the broker again (connecting, restarting its consumer, reading a committed offset), ms; waits grow, jittered, up to SONIC_RECONNECT_BACKOFF_MAX_MS.',
  ),
  reconnectBackoffMaxMs: def(
    'SONIC_RECONNECT_BACKOFF_MAX_MS',
    10_000,
    int(10, 3_600_000),
    'Longest wait between tries while the broker is away, ms. A stage process waits for the broker without limit.',
  ),
  brokerCheckCacheMs: def('SONIC_BROKER_CHECK_CACHE_MS', 1000, int(0, 60_000), 'How long /readyz reuses its last broker check, ms.'),
  brokerCheckTimeoutMs: def(
    'SONIC_BROKER_CHECK_TIMEOUT_MS',
    2000,
    int(100, 60_000),
    'Longest /readyz waits for the broker to answer, ms; no answer is not ready.',
  ),
  retryDelayScale: def(
    'SONIC_RETRY_DELAY_SCALE',
    1,
    num(0.0001, 1000),
    'Multiplies every retry tier delay of the Sonic topology (tests and demos shrink them).',
  ),
  // blob store
  blobStore: def<'fs' | 's3'>('SONIC_BLOB_STORE', 'fs', oneOf('fs', 's3'), 'Where media lives: `fs` (a directory) or `s3` (any S3-compatible store).'),
  dataDir: def('SONIC_DATA_DIR', '~/.local/share/sonicflow', path, 'Root directory of the filesystem blob store.'),
  s3Endpoint: def(
    'SONIC_S3_ENDPOINT',
    'http://localhost:9000',
    optionalUrl,
    'S3 endpoint URL; empty for AWS itself. The default is the local S3Proxy of `stack:up`.',
  ),
  s3Bucket: def('SONIC_S3_BUCKET', 'sonicflow', str, 'S3 bucket (created when missing).'),
  s3Region: def('SONIC_S3_REGION', 'us-east-1', str, 'S3 region.'),
  s3AccessKeyId: def('SONIC_S3_ACCESS_KEY_ID', 'local-identity', str, 'S3 access key id.'),
  s3SecretAccessKey: def('SONIC_S3_SECRET_ACCESS_KEY', 'local-credential', str, 'S3 secret access key (redacted in logs).'),
  s3ForcePathStyle: def('SONIC_S3_FORCE_PATH_STYLE', true, bool, 'Path-style S3 URLs (MinIO, S3Proxy); false for virtual-hosted buckets.'),
  blobTimeoutMs: def(
    'SONIC_BLOB_TIMEOUT_MS',
    300_000,
    int(1000, 86_400_000),
    'Longest one S3 call may take in all, body included, ms (a store that trickles is cut off; videos served to clients are not bounded by it).',
  ),
  publicBaseUrl: def(
    'SONIC_PUBLIC_BASE_URL',
    '',
    optionalUrl,
    'Base URL where published videos are served (a CDN); empty: the API serves them at /v1/tasks/{id}/video.',
  ),
  // HTTP API
  apiHost: def('SONIC_API_HOST', '127.0.0.1', str, 'Address the HTTP API listens on.'),
  apiPort: def(
    'SONIC_API_PORT',
    8080,
    int(0, 65535),
    'Port of the HTTP API; 0 picks a free port, which `sonicflow api` prints on stdout (`API listening on <url>`).',
  ),
  apiPublicUrl: def(
    'SONIC_API_PUBLIC_URL',
    '',
    optionalUrl,
    'How clients reach the API; video links use it when SONIC_PUBLIC_BASE_URL is empty. Empty: `http://localhost:<SONIC_API_PORT>`, where the API process itself names the port it listens on (with SONIC_API_PORT=0, the one it got).',
  ),
  apiAuth: def<'required' | 'disabled'>(
    'SONIC_API_AUTH',
    'required',
    oneOf('required', 'disabled'),
    'Bearer API keys: `required`, or `disabled` (local demos only).',
  ),
  apiKeys: def(
    'SONIC_API_KEYS',
    [] as string[],
    list,
    'API keys, comma-separated `tenant:key` (or bare `key` for tenant `default`), each optionally followed by `;expires=<ISO-8601>`; tenants are 1-64 of [A-Za-z0-9_-].',
  ),
  apiRateLimitPerMinute: def('SONIC_API_RATE_LIMIT_PER_MINUTE', 600, int(1, 10_000_000), 'Requests per minute per API key (per address without auth).'),
  redisUrl: def(
    'SONIC_REDIS_URL',
    '',
    optionalRedisUrl,
    'Redis shared by the API replicas for the per-key rate limit (`redis://[:password@]host:port[/db]`, `rediss://` for TLS); empty: each API process counts on its own (redacted).',
  ),
  redisTimeoutMs: def(
    'SONIC_REDIS_TIMEOUT_MS',
    250,
    int(10, 60_000),
    'Longest one Redis command or connection attempt of the rate limit may take, ms; past it the request is let through uncounted (fail-open) and counted in `sonicflow_api_rate_limit_store_errors_total`.',
  ),
  consoleMetricsUrls: def(
    'SONIC_CONSOLE_METRICS_URLS',
    [] as string[],
    (raw, name) => list(raw, name).map((u) => url(u, name)),
    "Where the console's overview reads the stages' runtime figures (records/s, handler time, in flight, retries): comma-separated Prometheus text endpoints, each a stage process's `/metrics` or a Prometheus server's `/federate?match[]={__name__=~\"sonicflow_.*\"}` (a comma inside a URL as %2C); empty: the overview shows Kafka's figures only.",
  ),
  consoleSampleMs: def(
    'SONIC_CONSOLE_SAMPLE_MS',
    2000,
    int(250, 600_000),
    "How often the console's overview samples the stages' lag, groups and metrics while someone watches it, ms.",
  ),
  apiKey: def('SONIC_API_KEY', '', str, 'API key the `sonicflow submit` client sends (redacted in logs).'),
  apiSecret: def(
    'SONIC_API_SECRET',
    '',
    str,
    'Server secret (32+ characters) that keys idempotent task ids; empty: generated once into SONIC_STATE_DIR. Replicas must share it (redacted).',
  ),
  stateDir: def(
    'SONIC_STATE_DIR',
    '~/.local/state/sonicflow',
    path,
    "Directory of local state: the generated API secret, the API's status view store unless SONIC_API_VIEW_DIR says otherwise, and the local copies of stage state stores (`stores/<group>/<slot>`).",
  ),
  apiViewDir: def(
    'SONIC_API_VIEW_DIR',
    '',
    str,
    "Directory of this API replica's status view store (LMDB); empty: `<SONIC_STATE_DIR>/views/<status topic>/<instance>`. One per process.",
  ),
  apiReadWaitMs: def(
    'SONIC_API_READ_WAIT_MS',
    2000,
    int(0, 60_000),
    'Longest a read of a task this replica does not know yet waits for its view to catch up with what other replicas committed, ms.',
  ),
  apiInstanceId: def(
    'SONIC_API_INSTANCE_ID',
    '',
    str,
    'Names this API replica in its transactional id (stable across restarts, unique per replica); empty: the host name.',
  ),
  apiTrustProxyHops: def(
    'SONIC_API_TRUST_PROXY_HOPS',
    0,
    int(0, 10),
    'Reverse proxies in front of the API whose X-Forwarded-For is trusted for the client address (rate limits per address); 0 trusts none.',
  ),
  apiFailedAuthPerMinute: def(
    'SONIC_API_FAILED_AUTH_PER_MINUTE',
    20,
    int(1, 1_000_000),
    'Failed authentications per minute per client address before it is answered 429.',
  ),
  apiRequestTimeoutMs: def(
    'SONIC_API_REQUEST_TIMEOUT_MS',
    120_000,
    int(1000, 3_600_000),
    'Longest a client may take to send a whole request (uploads included), ms; slower ones are cut off.',
  ),
  apiHeadersTimeoutMs: def('SONIC_API_HEADERS_TIMEOUT_MS', 10_000, int(500, 600_000), 'Longest a client may take to send the request headers, ms.'),
  apiIdleTimeoutMs: def('SONIC_API_IDLE_TIMEOUT_MS', 60_000, int(1000, 3_600_000), 'A connection with no traffic either way for this long is closed, ms.'),
  apiMaxConcurrentUploads: def(
    'SONIC_API_MAX_CONCURRENT_UPLOADS',
    32,
    int(1, 100_000),
    'Uploads (multipart submits and POST /v1/uploads) in progress at once; more are answered 503 API_OVERLOADED.',
  ),
  apiMaxUploadsPerKey: def(
    'SONIC_API_MAX_UPLOADS_PER_KEY',
    8,
    int(1, 100_000),
    'Uploads in progress at once per API key; more are answered 429 RATE_LIMITED, so one tenant cannot take every slot.',
  ),
  apiProducers: def(
    'SONIC_API_PRODUCERS',
    8,
    int(1, 64),
    'Transactional producers of one API process taking turns at writing submits (one waits for its commit markers while another writes); ids `<client id>.<prefix>.api.<instance>.<n>`.',
  ),
  apiEnqueueTimeoutMs: def(
    'SONIC_API_ENQUEUE_TIMEOUT_MS',
    10_000,
    int(100, 600_000),
    'Longest a submit waits for Kafka to take the task, ms; then 503 BROKER_UNAVAILABLE and nothing is enqueued.',
  ),
  apiMaxStreamsPerKey: def('SONIC_API_MAX_STREAMS_PER_KEY', 16, int(1, 100_000), 'Open event streams (SSE) per API key.'),
  apiMaxStreams: def('SONIC_API_MAX_STREAMS', 1000, int(1, 1_000_000), 'Open event streams (SSE) on one API process.'),
  apiStreamMaxS: def(
    'SONIC_API_STREAM_MAX_S',
    3600,
    int(1, 86_400),
    'Longest an event stream stays open, s; the client reconnects and gets the current state.',
  ),
  maxAudioBytes: def('SONIC_MAX_AUDIO_BYTES', 50 * 1024 * 1024, int(1, 2 ** 31), 'Largest accepted audio upload, bytes.'),
  maxImageBytes: def('SONIC_MAX_IMAGE_BYTES', 20 * 1024 * 1024, int(1, 2 ** 31), 'Largest accepted image upload, bytes.'),
  maxAudioSeconds: def('SONIC_MAX_AUDIO_SECONDS', 60, int(1, 400), 'Longest accepted audio, s (Sonic cannot go past 400 s).'),
  // media checks (API uploads, validate, preprocess, encode)
  maxImagePixels: def(
    'SONIC_MAX_IMAGE_PIXELS',
    25_000_000,
    int(1, 2 ** 31 - 1),
    'Most pixels (width × height) of a portrait, read from its header before anything decodes it; also the `-max_pixels` of every decoder run.',
  ),
  maxImageSide: def('SONIC_MAX_IMAGE_SIDE', 8192, int(16, 65_535), 'Longest accepted long side of a portrait, px.'),
  minImageShortSide: def('SONIC_MIN_IMAGE_SHORT_SIDE', 256, int(1, 65_535), 'Shortest accepted short side of a portrait, px.'),
  maxImageShortSide: def('SONIC_MAX_IMAGE_SHORT_SIDE', 4096, int(1, 65_535), 'Longest accepted short side of a portrait, px.'),
  mediaTimeoutS: def('SONIC_MEDIA_TIMEOUT_S', 60, int(1, 86_400), 'Deadline of one ffmpeg/ffprobe run of validate, preprocess and encode, s ...'),
  mediaTimeoutPerAudioS: def(
    'SONIC_MEDIA_TIMEOUT_PER_AUDIO_S',
    2,
    num(0, 3_600),
    '... plus this many per second of audio for runs whose work grows with it (audio decoding, encoding).',
  ),
  scratchDir: def(
    'SONIC_SCRATCH_DIR',
    '',
    optionalPath,
    "Scratch directory of the stage processes and of the API's upload spool; empty: `<os tmpdir>/sonicflow-scratch-<uid>`. Each process works in its own subdirectory and sweeps those of dead processes.",
  ),
  // inference
  inferBackend: def<'builtin' | 'command' | 'cog' | 'worker'>(
    'SONIC_INFER_BACKEND',
    'builtin',
    oneOf('builtin', 'command', 'cog', 'worker'),
    'Inference backend: `builtin` (CPU preview renderer, not lip-sync), `command` (Sonic CLI or a script), `cog` (a Cog model server), `worker` (one long-lived Sonic runner per process that loads the weights once).',
  ),
  inferCommand: def(
    'SONIC_INFER_COMMAND',
    '',
    str,
    'Command template of the `command` backend, e.g. `python3 demo.py {image} {audio} {output} --dynamic_scale {dynamic_scale}`.',
  ),
  inferCwd: def('SONIC_INFER_CWD', '', str, 'Working directory of the `command` backend (the Sonic checkout).'),
  inferTimeoutBaseS: def('SONIC_INFER_TIMEOUT_BASE_S', 120, int(1, 86_400), 'Inference time budget of every backend (builtin included): this many seconds ...'),
  inferTimeoutPerAudioS: def('SONIC_INFER_TIMEOUT_PER_AUDIO_S', 60, int(0, 3_600), '... plus this many per second of audio.'),
  cogMode: def<'sync' | 'poll'>(
    'SONIC_COG_MODE',
    'sync',
    oneOf('sync', 'poll'),
    'How the `cog` backend waits: `sync` (one blocking request, stock Cog) or `poll` (async + GET polling with progress).',
  ),
  cogUrl: def('SONIC_COG_URL', 'http://localhost:5000', optionalUrl, 'Base URL of the Cog server of the `cog` backend.'),
  workerPython: def('SONIC_WORKER_PYTHON', 'python3', str, 'Python interpreter that runs the Sonic runner of the `worker` backend.'),
  workerRunner: def(
    'SONIC_WORKER_RUNNER',
    '',
    optionalPath,
    "The `worker` backend's runner script; empty: the package's own `ops/sonic/runner.py`, found from the package root (not the working directory).",
  ),
  workerSonicDir: def(
    'SONIC_WORKER_SONIC_DIR',
    '/opt/Sonic',
    path,
    "The Sonic checkout the `worker` backend's runner loads (it holds `sonic.py` and `checkpoints/`).",
  ),
  workerDevice: def('SONIC_WORKER_DEVICE', 0, int(0, 255), "CUDA device index the `worker` backend's runner renders on."),
  workerInterpolate: def(
    'SONIC_WORKER_INTERPOLATE',
    true,
    bool,
    "Whether the `worker` backend's runner interpolates frames as Sonic does by default; false starts it with `--no-interpolate`.",
  ),
  workerLoadTimeoutS: def(
    'SONIC_WORKER_LOAD_TIMEOUT_S',
    900,
    int(1, 86_400),
    "How long the `worker` backend's runner may take to load Sonic and answer `ready`, s; past it the runner is killed and started again after a backoff (1 s doubling to 60 s).",
  ),
  // retention
  taskRetentionS: def(
    'SONIC_TASK_RETENTION',
    30 * 86_400,
    duration(1),
    'How long an ended task (SUCCEEDED or FAILED) is kept after its last status change: `30d`, `12h`, `90m`, `45s` or seconds; then its blobs are deleted and its status tombstoned.',
  ),
  uploadRetentionS: def(
    'SONIC_UPLOAD_RETENTION',
    86_400,
    duration(1),
    'How long a file uploaded with POST /v1/uploads is kept (from its upload), same syntax; a task that references it must get past preprocess within that time.',
  ),
  dedupWindowS: def(
    'SONIC_DEDUP_WINDOW',
    15 * 60,
    duration(1, 12 * 3600),
    "validate's duplicate window, same syntax, at most `12h`: a request for a task id whose first request was created less than this earlier is a duplicate and dropped; a later one is a new task. The `seen` store keeps an entry a day after its last write (its retention), so the window must stay well inside that.",
  ),
  janitorIntervalMs: def(
    'SONIC_JANITOR_INTERVAL_MS',
    3_600_000,
    int(0, 86_400_000),
    'How often the janitor removes expired tasks and uploads, ms; 0: never (run `sonicflow gc` instead).',
  ),
  janitorBatch: def('SONIC_JANITOR_BATCH', 1000, int(1, 1_000_000), 'Most expired tasks one janitor run (or `sonicflow gc` without --limit) removes.'),
  // webhooks
  webhookSecret: def(
    'SONIC_WEBHOOK_SECRET',
    '',
    webhookSecret,
    'Fallback Standard Webhooks signing secret (`whsec_...`) for tasks without `secret_ref` whose tenant has no `<tenant>/default`; shared by all such tenants.',
  ),
  webhookSecrets: def(
    'SONIC_WEBHOOK_SECRETS',
    [] as string[],
    webhookSecretList,
    "Signing secrets per tenant, comma-separated `tenant/name=whsec_...` (a bare `name=` belongs to tenant `default`); a task's `secret_ref` names one of its own tenant, `<tenant>/default` is used without one.",
  ),
  webhookAllowHosts: def(
    'SONIC_WEBHOOK_ALLOW_HOSTS',
    [] as string[],
    list,
    'Callback hosts (exact names or IP literals) exempt from the public-address policy: development and tests only.',
  ),
  webhookTimeoutMs: def(
    'SONIC_WEBHOOK_TIMEOUT_MS',
    6000,
    int(100, 120_000),
    'Total deadline of one webhook delivery (DNS, connect, TLS, request, response headers, first 4 KiB of the body), ms.',
  ),
} as const;

type Settings = typeof SETTINGS;
/** The validated configuration, one typed field per setting. */
export type Config = { readonly [K in keyof Settings]: Settings[K]['default'] };

/** Whether `env` sets the setting (a value that is not empty), rather than leaving it to its default. */
export function isSet(key: keyof Settings, env: NodeJS.ProcessEnv = process.env): boolean {
  const raw = env[SETTINGS[key].env];
  return raw !== undefined && raw !== '';
}

/**
 * The longest render the configuration lets infer run, ms: its time budget
 * (SONIC_INFER_TIMEOUT_BASE_S + SONIC_INFER_TIMEOUT_PER_AUDIO_S per second of audio, as
 * `inferenceBudgetMs`) for the longest audio the API accepts (SONIC_MAX_AUDIO_SECONDS).
 */
export function longestRenderMs(c: Pick<Config, 'inferTimeoutBaseS' | 'inferTimeoutPerAudioS' | 'maxAudioSeconds'>): number {
  return (c.inferTimeoutBaseS + c.inferTimeoutPerAudioS * c.maxAudioSeconds) * 1000;
}

/** Reads and validates every setting. Throws `SonicError('CONFIG_INVALID')` naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SETTINGS) as [string, SettingDef<unknown>][]) {
    const raw = env[setting.env];
    if (raw !== undefined && raw !== '') out[key] = setting.parse(raw, setting.env);
    // string defaults go through their parser too (so `~` expands)
    else out[key] = typeof setting.default === 'string' && setting.default !== '' ? setting.parse(setting.default, setting.env) : setting.default;
  }
  return Object.freeze(out) as Config;
}

/**
 * How clients reach the API: SONIC_API_PUBLIC_URL, else `http://localhost:<SONIC_API_PORT>`.
 *
 * @throws SonicError `CONFIG_INVALID` when neither says: SONIC_API_PORT=0 lets the API pick its
 *   port, which only the API process learns (it puts the port it got into its own config); every
 *   other process that links to the API then needs SONIC_API_PUBLIC_URL.
 */
export function publicApiUrl(config: Pick<Config, 'apiPublicUrl' | 'apiPort'>): string {
  if (config.apiPublicUrl) return config.apiPublicUrl;
  if (config.apiPort === 0) {
    throw new SonicError(
      'CONFIG_INVALID',
      'SONIC_API_PORT is 0 and SONIC_API_PUBLIC_URL is not set: set SONIC_API_PUBLIC_URL to the URL clients reach the API at',
    );
  }
  return `http://localhost:${config.apiPort}`;
}

/** Variables whose values are secrets: never printed or logged. */
export const SECRET_SETTINGS: ReadonlySet<string> = new Set([
  'SONIC_KAFKA_SASL_PASSWORD',
  'SCHEMA_REGISTRY_PASSWORD',
  'SONIC_S3_SECRET_ACCESS_KEY',
  'SONIC_API_KEYS',
  'SONIC_API_KEY',
  'SONIC_API_SECRET',
  'SONIC_REDIS_URL',
  'SONIC_WEBHOOK_SECRET',
  'SONIC_WEBHOOK_SECRETS',
]);

/** A value for display: secrets become `[redacted]` (or stay empty when unset). */
export function displayValue(env: string, value: string): string {
  return SECRET_SETTINGS.has(env) && value !== '' ? '[redacted]' : value;
}

/** Rows for the documentation table: variable, default, meaning. */
export function describeSettings(): { env: string; default: string; doc: string }[] {
  return Object.values(SETTINGS).map((s: SettingDef<unknown>) => ({
    env: s.env,
    default: Array.isArray(s.default) ? s.default.join(',') : String(s.default),
    doc: s.doc,
  }));
}

/** The PEM CA bundle of SONIC_KAFKA_SSL_CA_FILE; CONFIG_INVALID when it cannot be read or holds no certificate. */
export function readKafkaCa(path: string): string {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new SonicError('CONFIG_INVALID', `SONIC_KAFKA_SSL_CA_FILE: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      cause: err,
      details: { variable: 'SONIC_KAFKA_SSL_CA_FILE' },
    });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----'))
    throw new SonicError('CONFIG_INVALID', `SONIC_KAFKA_SSL_CA_FILE: ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`, {
      details: { variable: 'SONIC_KAFKA_SSL_CA_FILE' },
    });
  return pem;
}
