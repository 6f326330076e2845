/**
 * The HTTP API (fastify): bearer API keys, a rate limit per key, machine-readable errors
 * (`{code, message}` with the HTTP status the code implies), OpenAPI at /docs, health, readiness
 * and Prometheus metrics. Task routes live in tasks.ts.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Config } from '../core/config.js';
import { SonicError, isSonicError, publicError, type ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { createRegistry, type Registry } from '../core/metrics.js';
import { guardScope, parseApiKeys, rateLimitNamespace } from './auth.js';
import type { EventStreams } from './events.js';
import { PARAM_DEFAULTS, PARAM_RANGES } from '../domain/params.js';
import { uploadRoutes } from './media.js';
import { taskRoutes, type TaskRouteDeps } from './tasks.js';
import { consoleDlqRoutes, type DeadLetters } from './console/dlq.js';
import { consolePages } from './console/static.js';
import { consoleTaskRoutes } from './console/tasks.js';
import { consoleOverviewRoutes, type ConsoleOverviewDeps } from './console/overview.js';

const STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  TASK_NOT_FOUND: 404,
  VIDEO_NOT_READY: 409,
  // a referenced upload replaced while the submit copied it (see claimUpload): submit again
  CHECKSUM_MISMATCH: 409,
  // a replay confirmed after its dry run's letters changed: preview again
  DLQ_SELECTION_CHANGED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_AUDIO_FORMAT: 415,
  UNSUPPORTED_IMAGE_FORMAT: 415,
  MEDIA_MISMATCH: 415,
  RANGE_NOT_SATISFIABLE: 416,
  PARAMS_OUT_OF_RANGE: 422,
  INPUT_NOT_FOUND: 422,
  IDEMPOTENCY_KEY_INVALID: 422,
  IDEMPOTENCY_KEY_REUSED: 422,
  CALLBACK_URL_REFUSED: 422,
  CALLBACK_SECRET_UNKNOWN: 422,
  IMAGE_TOO_LARGE: 422,
  IMAGE_TOO_SMALL: 422,
  IMAGE_DECODE_FAILED: 422,
  AUDIO_DECODE_FAILED: 422,
  AUDIO_TOO_SHORT: 422,
  AUDIO_TOO_LONG: 422,
  RATE_LIMITED: 429,
  BROKER_UNAVAILABLE: 503,
  REGISTRY_UNAVAILABLE: 503,
  STORAGE_WRITE_FAILED: 503,
  INPUT_FETCH_FAILED: 503,
  API_OVERLOADED: 503,
};

/** HTTP status for an error code (500 for anything unexpected). */
export function httpStatus(code: ErrorCode): number {
  return STATUS[code] ?? 500;
}

export interface ApiDeps extends TaskRouteDeps {
  config: Config;
  logger: Logger;
  streams: EventStreams;
  /** Broker, registry and status view readiness (cheap: called per probe). */
  ready(): Promise<{ ready: boolean; checks: Record<string, boolean> }>;
  /** The dead letters the console shows and replays; without it the console has no DLQ pages. */
  deadLetters?: DeadLetters;
  /** The overview and topology pages' data; without it the console has neither. */
  overview?: Omit<ConsoleOverviewDeps, 'view' | 'streams'>;
}

const MULTIPART_LIMITS: Record<string, string> = {
  FST_PARTS_LIMIT: 'the form has too many parts',
  FST_FILES_LIMIT: 'the form has too many files',
  FST_FIELDS_LIMIT: 'the form has too many fields',
  FST_REQ_FILE_TOO_LARGE: 'a file is larger than allowed',
  FST_ERR_CTP_BODY_TOO_LARGE: 'the request body is larger than allowed',
};

function fastifyErrorToSonic(err: { code?: string; statusCode?: number; message: string; validation?: unknown }): SonicError {
  if (isSonicError(err)) return err;
  const limit = err.code ? MULTIPART_LIMITS[err.code] : undefined;
  if (limit || err.statusCode === 413) return new SonicError('PAYLOAD_TOO_LARGE', limit ?? 'the request is larger than allowed', { safe: true });
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.code === 'FST_INVALID_MULTIPART_CONTENT_TYPE' || err.statusCode === 415) {
    return new SonicError('INVALID_REQUEST', 'send multipart/form-data (audio and image files) or application/json (references to uploaded files)', {
      safe: true,
    });
  }
  if (err.code === 'FST_ERR_CTP_INVALID_JSON' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError) {
    return new SonicError('INVALID_REQUEST', 'the JSON body is malformed', { safe: true });
  }
  if (err.code === 'FST_PROTO_VIOLATION') return new SonicError('INVALID_REQUEST', 'a field name is not allowed', { safe: true });
  if (err.code === 'FST_MP_PREMATURE_CLOSE') return new SonicError('INVALID_REQUEST', 'the upload ended before the form was complete', { safe: true });
  if (err.validation || (err.statusCode && err.statusCode >= 400 && err.statusCode < 500))
    return new SonicError('INVALID_REQUEST', err.message, { safe: true });
  return new SonicError('INTERNAL', 'internal error', { cause: err });
}

export async function buildApi(deps: ApiDeps): Promise<{ app: FastifyInstance; registry: Registry }> {
  const { config } = deps;
  // Node's own request and header deadlines, checked every second rather than every 30 s:
  // a client that trickles its request is cut off on time (slow-loris)
  // (fastify applies no idle timeout to a server of our own: set it here, or a client that stops
  // reading a video would hold its connection and the open blob forever)
  const serverFactory = (handler: (req: IncomingMessage, res: ServerResponse) => void) => {
    const server = createServer(
      {
        requestTimeout: config.apiRequestTimeoutMs,
        headersTimeout: Math.min(config.apiHeadersTimeoutMs, config.apiRequestTimeoutMs),
        connectionsCheckingInterval: 1000,
      },
      handler,
    );
    server.setTimeout(config.apiIdleTimeoutMs);
    server.keepAliveTimeout = Math.min(5000, config.apiIdleTimeoutMs);
    return server;
  };
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'api' }) as unknown as FastifyBaseLogger,
    disableRequestLogging: true,
    bodyLimit: 1_048_576,
    serverFactory,
    requestTimeout: config.apiRequestTimeoutMs,
    connectionTimeout: config.apiIdleTimeoutMs,
    // the client address for the per-address limits: trust only as many proxy hops as configured
    trustProxy: config.apiTrustProxyHops > 0 ? (_address: string, hop: number) => hop < config.apiTrustProxyHops : false,
    genReqId: () => randomUUID(),
    forceCloseConnections: true,
  }) as unknown as FastifyInstance;
  const registry = createRegistry({ service: 'api' });
  const requests = new Counter({
    name: 'sonicflow_http_requests_total',
    help: 'HTTP requests by route and status.',
    labelNames: ['route', 'status'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'sonicflow_http_request_duration_seconds',
    help: 'HTTP request duration by route.',
    labelNames: ['route'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  // the bounded resources, as they are now
  new Gauge({
    name: 'sonicflow_api_uploads_in_progress',
    help: 'Uploads holding an upload slot.',
    registers: [registry],
    collect() {
      this.set(deps.slots.inUse);
    },
  });
  new Gauge({
    name: 'sonicflow_api_event_streams',
    help: 'Open event streams.',
    registers: [registry],
    collect() {
      this.set(deps.streams.size);
    },
  });

  app.setErrorHandler((err, req, reply) => {
    const e = fastifyErrorToSonic(err as never);
    const status = (err as { statusCode?: number }).statusCode === 429 ? 429 : httpStatus(e.code);
    if (status >= 500) req.log[e.code === 'INTERNAL' ? 'error' : 'warn']({ err, request_id: req.id }, 'request failed');
    const answer = publicError(e);
    const wait = answer.details?.retryAfterS;
    if ((status === 429 || status === 503) && !reply.hasHeader('retry-after')) void reply.header('retry-after', String(typeof wait === 'number' ? wait : 2));
    // A body that was partly read (an upload refused midway) is not read further: close the
    // connection, or it would wait for the rest before the next request. A body nobody started
    // to read is discarded by Node itself, and the connection lives on.
    const partlyRead = !req.raw.readableEnded && req.raw.readableFlowing !== null;
    if (partlyRead || status === 503) void reply.header('connection', 'close');
    void reply.status(status).send({ ...answer, ...(status >= 500 ? { request_id: req.id } : {}) });
  });
  app.setNotFoundHandler(
    (req, reply) => void reply.status(404).send({ code: 'INVALID_REQUEST', message: `no route ${req.method} ${req.url.slice(0, 200)}`, retryable: false }),
  );
  app.addHook('onSend', async (req, reply) => {
    void reply.header('x-request-id', req.id);
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unknown';
    requests.inc({ route, status: String(reply.statusCode) });
    duration.observe({ route }, reply.elapsedTime / 1000);
  });
  app.addHook('preClose', async () => deps.streams.closeAll());

  const keys = parseApiKeys(config.apiKeys);
  if (config.apiAuth === 'required' && keys.length === 0) {
    throw new SonicError('CONFIG_INVALID', 'SONIC_API_AUTH=required but SONIC_API_KEYS is empty: set keys, or SONIC_API_AUTH=disabled for a local demo');
  }
  app.decorateRequest('tenant', '');
  app.decorateRequest('keyId', null);
  app.decorateRequest('role', 'tenant');

  await app.register(swagger, {
    openapi: {
      info: { title: 'sonicflow API', version: '1', description: 'Submit a portrait and a speech recording; get a lip-synced talking-head video.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    const r = await deps.ready();
    return reply.status(r.ready ? 200 : 503).send(r);
  });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  // Authentication and the rate limit belong to the /v1 scope itself: every route registered in
  // it has them, whatever spelling of its path the router matched.
  await app.register(
    async (v1) => {
      await guardScope(v1, {
        auth: config.apiAuth,
        keys,
        perMinute: config.apiRateLimitPerMinute,
        failedPerMinute: config.apiFailedAuthPerMinute,
        trustsProxy: config.apiTrustProxyHops > 0,
        ...(config.redisUrl
          ? { shared: { url: config.redisUrl, timeoutMs: config.redisTimeoutMs, namespace: rateLimitNamespace(config.clientId, config.topicPrefix) } }
          : {}),
        registry,
      });
      await v1.register(multipart);
      await v1.register(taskRoutes({ ...deps, registry }));
      await v1.register(uploadRoutes(deps));
      // the console's data: the same keys, rate limits and tenant boundaries as the public API
      v1.get('/console/me', { schema: { hide: true } }, async (req) => ({
        tenant: req.tenant,
        role: req.role,
        key_id: req.keyId,
        auth: config.apiAuth,
        dlq_stages: deps.deadLetters?.stages ?? [],
        overview: deps.overview !== undefined,
        // the new-task form shows the ranges and defaults the submit checks
        params: { ranges: PARAM_RANGES, defaults: PARAM_DEFAULTS },
      }));
      await v1.register(consoleTaskRoutes(deps));
      if (deps.overview) await v1.register(consoleOverviewRoutes({ ...deps.overview, view: deps.view, streams: deps.streams }));
      if (deps.deadLetters)
        await v1.register(
          consoleDlqRoutes(deps.deadLetters, (id) => deps.view.get(id)?.state, deps.logger.child({ component: 'console' }), {
            publicUrl: config.apiPublicUrl,
            trustsProxy: config.apiTrustProxyHops > 0,
            authDisabled: config.apiAuth === 'disabled',
          }),
        );
    },
    { prefix: '/v1' },
  );
  await app.register(consolePages());
  return { app, registry };
}
