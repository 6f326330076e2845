/**
 * kafkajs stays inside src/kafka: the client handle exposes none of its API (the type checker
 * proves it, `npx tsc` runs over this file), and no declaration src/kafka exports mentions a
 * kafkajs type (the declarations TypeScript would emit for the modules are checked). The one
 * door back to kafkajs, src/kafka/handle.ts, is closed to the rest of src by ESLint.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { createKafka, type KafkaClient } from '../../src/kafka/client.js';
import { adoptKafkajs, kafkajsOf } from '../../src/kafka/handle.js';

const ROOT = join(import.meta.dirname, '..', '..');
const KAFKA_DIR = join(ROOT, 'src', 'kafka');
/** A declaration that imports a client library's types: kafkajs or @platformatic/kafka. */
const CLIENT_IMPORT = /(from |import\()['"](kafkajs|@platformatic\/kafka)(\/[^'"]*)?['"]/;

/** The .d.ts TypeScript emits for each module of src/kafka, by file name. */
function kafkaDeclarations(): Map<string, string> {
  const configPath = join(ROOT, 'tsconfig.json');
  const { config } = ts.readConfigFile(configPath, (p) => ts.sys.readFile(p));
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, ROOT);
  const files = readdirSync(KAFKA_DIR, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(KAFKA_DIR, f));
  const program = ts.createProgram(files, {
    ...parsed.options,
    noEmit: false,
    declaration: true,
    emitDeclarationOnly: true,
    rootDir: ROOT,
    outDir: join(ROOT, '.d.ts-check'),
  });
  const out = new Map<string, string>();
  const emitted = program.emit(undefined, (name, text) => {
    const rel = name.split(`${join('.d.ts-check', 'src', 'kafka')}/`)[1];
    if (rel !== undefined) out.set(rel, text);
  });
  const errors = emitted.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  expect(errors).toEqual([]);
  return out;
}

describe('the Kafka port', () => {
  it('hands out an opaque client: no kafkajs method is on its type or on the object', () => {
    // no string-named member at all: nothing of kafkajs' Kafka (admin, producer, consumer, logger)
    expectTypeOf<Extract<keyof KafkaClient, string>>().toBeNever();
    expectTypeOf<KafkaClient>().not.toHaveProperty('admin');
    const client = createKafka({ brokers: ['127.0.0.1:1'], clientId: 'port-test' }, createLogger('test', 'silent'));
    // @ts-expect-error -- kafkajs' API is not reachable through the handle
    expect(client.producer).toBeUndefined();
    expect(Object.isFrozen(client)).toBe(true);
    expect(Reflect.ownKeys(client)).toEqual([]);
    // inside src/kafka the handle leads back to the kafkajs client (which connects nowhere until asked)
    expect(typeof kafkajsOf(client).admin).toBe('function');
    expect(kafkajsOf(adoptKafkajs(kafkajsOf(client)))).toBe(kafkajsOf(client));
    expect(() => kafkajsOf({} as KafkaClient)).toThrow(/not a Kafka client handle/);
  });

  it('exports no client library type (kafkajs, @platformatic/kafka) from any module but the handle', () => {
    const declarations = kafkaDeclarations();
    // every module of src/kafka was emitted
    expect([...declarations.keys()].sort()).toEqual(
      readdirSync(KAFKA_DIR, { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts'))
        .map((f) => f.replace(/\.ts$/, '.d.ts'))
        .sort(),
    );
    const leaking = [...declarations]
      // the handle, and kafkajs itself as src/kafka loads it (its produce path mended: send-messages.ts)
      .filter(([file]) => file !== 'handle.d.ts' && file !== 'kafkajs.d.ts')
      .filter(([, text]) => CLIENT_IMPORT.test(text))
      .map(
        ([file, text]) =>
          `${file}:\n${text
            .split('\n')
            .filter((l) => CLIENT_IMPORT.test(l))
            .join('\n')}`,
      );
    expect(leaking).toEqual([]);
  }, 60_000);
});
