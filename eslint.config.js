// ESLint (typescript-eslint) with the layer rules of docs/architecture.md: imports flow one way, down.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// src/kafka/handle.js turns the opaque client handle back into kafkajs' client
const kafkaClient = { group: ['kafkajs', '**/kafka/handle.js'], message: 'Only src/kafka talks to the Kafka client.' };
const registryClient = {
  group: ['@kafkajs/confluent-schema-registry', 'avsc'],
  message: 'Only src/serde talks to the schema registry and Avro.',
};
const up = (folders, message) => ({ group: folders.flatMap((f) => [`**/${f}/**`, `**/${f}`]), message });

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'bench/results/**', 'coverage/**', '.scratch/**', 'bench/kafka-streams/target/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        AbortController: 'readonly',
        AbortSignal: 'readonly',
        fetch: 'readonly',
        Response: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'Read configuration through src/core/config.ts.' }],
    },
  },
  {
    files: ['src/core/config.ts', 'src/cli/cli.ts', 'src/ops/demo.ts', 'test/**', 'bench/**', 'scripts/**'],
    rules: { 'no-restricted-properties': 'off' },
  },
  {
    // a dynamic import() would pass the layer rules below unseen; only the composition root loads
    // a module by path (a topology file given with --file)
    files: ['src/**'],
    ignores: ['src/app/context.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: 'ImportExpression', message: 'No dynamic import() outside src/app/context.ts: the layer rules check static imports only.' },
      ],
    },
  },
  {
    files: ['src/core/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(
              ['kafka', 'serde', 'runtime', 'domain', 'stages', 'api', 'ops', 'app', 'cli', 'media', 'blob', 'topologies'],
              'src/core imports nothing of ours.',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['src/kafka/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            registryClient,
            up(['serde', 'runtime', 'domain', 'stages', 'api', 'ops', 'app', 'cli', 'media', 'blob', 'topologies'], 'src/kafka may import only src/core.'),
          ],
        },
      ],
    },
  },
  {
    files: ['src/serde/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            up(['kafka', 'runtime', 'domain', 'stages', 'api', 'ops', 'app', 'cli', 'media', 'blob', 'topologies'], 'src/serde may import only src/core.'),
          ],
        },
      ],
    },
  },
  {
    files: ['src/runtime/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(
              ['domain', 'stages', 'api', 'ops', 'app', 'cli', 'media', 'blob', 'topologies'],
              'src/runtime knows nothing of Sonic: it may import src/kafka, src/serde and src/core.',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['src/domain/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(
              ['kafka', 'serde', 'runtime', 'stages', 'api', 'ops', 'app', 'cli', 'media', 'blob', 'topologies'],
              'src/domain (Sonic records and rules) may import only src/core.',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['src/stages/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(
              ['kafka', 'serde', 'api', 'ops', 'app', 'cli', 'topologies'],
              'A stage has no Kafka client: it may import src/domain, src/media, src/blob, src/core and the runtime.',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['src/media/**', 'src/blob/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(['kafka', 'serde', 'runtime', 'domain', 'stages', 'api', 'ops', 'app', 'cli', 'topologies'], 'media and blob may import only src/core.'),
          ],
        },
      ],
    },
  },
  {
    files: ['topologies/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(['kafka', 'serde', 'api', 'ops', 'app', 'cli'], 'A topology composes stages and topics: it may import src/stages, src/domain and src/runtime.'),
          ],
        },
      ],
    },
  },
  {
    files: ['src/app/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [kafkaClient, registryClient, up(['api', 'ops', 'cli'], 'The composition root is imported by the services, never the other way.')] },
      ],
    },
  },
  {
    files: ['src/api/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(['stages', 'topologies', 'ops', 'cli'], 'The API reaches stages and the topology only through src/app; it never imports src/ops.'),
          ],
        },
      ],
    },
  },
  {
    files: ['src/ops/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            kafkaClient,
            registryClient,
            up(['stages', 'topologies', 'api', 'cli'], 'Operations commands reach stages and the topology only through src/app; they never import src/api.'),
          ],
        },
      ],
    },
  },
  {
    files: ['src/cli/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [kafkaClient, registryClient] }] },
  },
);
