/**
 * The HTTP API (fastify): bearer API keys, a rate limit per key, machine-readable errors
 * (`{code, message}` with the HTTP status the code implies), OpenAPI at /docs, health, readiness
 * and Prometheus metrics. Task routes live in tasks.ts.
 */
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { Counter, Histogram } from 'prom-client';
import type { Config } from '../core/config.js';
import { SonicError, isSonicError, type ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { createRegistry, type Registry } from '../core/metrics.js';
import { taskRoutes, type TaskRouteDeps } from './tasks.js';

const STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  TASK_NOT_FOUND: 404,
  VIDEO_NOT_READY: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_AUDIO_FORMAT: 415,
  UNSUPPORTED_IMAGE_FORMAT: 415,
  PARAMS_OUT_OF_RANGE: 422,
  INPUT_NOT_FOUND: 422,
  IDEMPOTENCY_KEY_INVALID: 422,
  CALLBACK_URL_REFUSED: 422,
  RATE_LIMITED: 429,
  BROKER_UNAVAILABLE: 503,
  REGISTRY_UNAVAILABLE: 503,
  STORAGE_WRITE_FAILED: 503,
  INPUT_FETCH_FAILED: 503,
};

/** HTTP status for an error code (500 for anything unexpected). */
export function httpStatus(code: ErrorCode): number {
  return STATUS[code] ?? 500;
}

declare module 'fastify' {
  interface FastifyRequest {
    tenant: string;
    apiKey: string | null;
  }
}

export interface ApiDeps extends TaskRouteDeps {
  config: Config;
  logger: Logger;
  /** Broker, registry and status view readiness. */
  ready(): Promise<{ ready: boolean; checks: Record<string, boolean> }>;
}

/** Parses SONIC_API_KEYS (`tenant:key` or bare `key`) into key → tenant. */
export function parseApiKeys(entries: string[]): Map<string, string> {
  return new Map(
    entries.map((e) => {
      const i = e.indexOf(':');
      return i > 0 ? [e.slice(i + 1), e.slice(0, i)] : [e, 'default'];
    }),
  );
}

function fastifyErrorToSonic(err: { code?: string; statusCode?: number; message: string; validation?: unknown }): SonicError {
  if (isSonicError(err)) return err;
  if (err.code === 'FST_REQ_FILE_TOO_LARGE' || err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) {
    return new SonicError('PAYLOAD_TOO_LARGE', `the upload is larger than allowed: ${err.message}`);
  }
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.statusCode === 415) {
    return new SonicError('INVALID_REQUEST', 'send multipart/form-data (audio and image files) or application/json (references to stored blobs)');
  }
  if (err.code === 'FST_ERR_CTP_INVALID_JSON' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError) {
    return new SonicError('INVALID_REQUEST', `the JSON body is malformed: ${err.message}`);
  }
  if (err.validation || (err.statusCode && err.statusCode >= 400 && err.statusCode < 500)) return new SonicError('INVALID_REQUEST', err.message);
  return new SonicError('INTERNAL', 'internal error', { cause: err });
}

export async function buildApi(deps: ApiDeps): Promise<{ app: FastifyInstance; registry: Registry }> {
  const { config } = deps;
  const app = Fastify({ loggerInstance: deps.logger.child({ component: 'api' }) as unknown as FastifyBaseLogger, disableRequestLogging: true, bodyLimit: 1_048_576 });
  const registry = createRegistry({ service: 'api' });
  const requests = new Counter({ name: 'sonicflow_http_requests_total', help: 'HTTP requests by route and status.', labelNames: ['route', 'status'], registers: [registry] });
  const duration = new Histogram({
    name: 'sonicflow_http_request_duration_seconds',
    help: 'HTTP request duration by route.',
    labelNames: ['route'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });

  app.setErrorHandler((err, req, reply) => {
    const e = fastifyErrorToSonic(err as never);
    if (e.code === 'INTERNAL') req.log.error({ err }, 'request failed');
    const status = (err as { statusCode?: number }).statusCode === 429 ? 429 : httpStatus(e.code);
    void reply.status(status).send({ code: status === 429 ? 'RATE_LIMITED' : e.code, message: status === 429 ? (err as Error).message : e.message, retryable: status === 429 || e.retryable, ...(Object.keys(e.details).length ? { details: e.details } : {}) });
  });
  app.setNotFoundHandler((req, reply) => void reply.status(404).send({ code: 'INVALID_REQUEST', message: `no route ${req.method} ${req.url}`, retryable: false }));
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unknown';
    requests.inc({ route, status: String(reply.statusCode) });
    duration.observe({ route }, reply.elapsedTime / 1000);
  });

  const keys = parseApiKeys(config.apiKeys);
  if (config.apiAuth === 'required' && keys.size === 0) {
    throw new SonicError('CONFIG_INVALID', 'SONIC_API_AUTH=required but SONIC_API_KEYS is empty: set keys, or SONIC_API_AUTH=disabled for a local demo');
  }
  app.decorateRequest('tenant', '');
  app.decorateRequest('apiKey', null);
  app.addHook('onRequest', async (req: FastifyRequest) => {
    if (!req.url.startsWith('/v1/')) return;
    if (config.apiAuth === 'disabled') {
      req.tenant = 'default';
      return;
    }
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    const tenant = m ? keys.get(m[1]!) : undefined;
    if (!m || tenant === undefined) throw new SonicError('UNAUTHORIZED', m ? 'the API key is not valid' : 'send an API key: Authorization: Bearer <key>');
    req.tenant = tenant;
    req.apiKey = m[1]!;
  });

  await app.register(rateLimit, {
    global: true,
    hook: 'preHandler',
    max: config.apiRateLimitPerMinute,
    timeWindow: 60_000,
    keyGenerator: (req) => req.apiKey ?? req.ip,
    allowList: (req) => !req.url.startsWith('/v1/'),
    errorResponseBuilder: (_req, ctx) => {
      const e = new SonicError('RATE_LIMITED', `rate limit of ${ctx.max} requests per minute reached; retry in ${Math.ceil(ctx.ttl / 1000)} s`) as SonicError & { statusCode: number };
      e.statusCode = 429;
      return e;
    },
  });
  await app.register(multipart, { limits: { fileSize: Math.max(config.maxAudioBytes, config.maxImageBytes) + 1, files: 2, fields: 32 } });
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

  await app.register(taskRoutes(deps), { prefix: '/v1' });
  return { app, registry };
}
