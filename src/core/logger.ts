/**
 * Logging: one pino root logger per process; stages and services take children bound to
 * `{stage, topic, partition, task_id}`. Messages are constant, variables go in the object,
 * errors under `err`. Secrets are redacted wherever they appear in a logged object.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger } from 'pino';

const REDACT = [
  'password',
  'sasl',
  '*.sasl',
  'secretAccessKey',
  '*.secretAccessKey',
  'apiKeys',
  '*.apiKeys',
  'secret',
  'apiKey',
  'authorization',
  '*.password',
  '*.secret',
  '*.apiKey',
  '*.authorization',
  '*.sasl.password',
  'headers.authorization',
];

/** Creates the process's root logger, writing JSON lines to stderr (stdout stays for command output). */
export function createLogger(name: string, level: LogLevel = 'info', destination: DestinationStream = pino.destination(2)): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: '[redacted]' },
      serializers: { err: pino.stdSerializers.err },
    },
    destination,
  );
}
