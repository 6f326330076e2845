// ESLint (typescript-eslint) with the layer rules of docs/architecture.md: imports flow one way, down.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// src/kafka/handle.js turns the opaque client handle back into kafkajs' client, src/kafka/kafkajs.js is kafkajs itself; @platformatic/kafka is the second client (src/kafka/platformatic)
const kafkaClient = {
  group: ['kafkajs', '@platformatic/kafka', '@platformatic/kafka/**', '**/kafka/handle.js', '**/kafka/kafkajs.js'],
  message: 'Only src/kafka talks to the Kafka client.',
};
const registryClient = {
  group: ['@kafkajs/confluent-schema-registry', 'avsc'],
  message: 'Only src/serde talks to the schema registry and Avro.',
};
const up = (folders, message) => ({ group: folders.flatMap((f) => [`**/${f}/**`, `**/${f}`]), message });

/** Every folder of ours that a layer rule names (under src/, and topologies/). */
const FOLDERS = ['core', 'kafka', 'serde', 'media', 'blob', 'domain', 'runtime', 'stages', 'topologies', 'app', 'api', 'ops', 'cli'];

/**
 * The layer table of docs/architecture.md: what each layer may import of ours (everything else of
 * FOLDERS is forbidden), and which outside client it may talk to.
 */
const LAYERS = [
  { files: ['src/core/**'], may: [], why: 'src/core imports nothing of ours.' },
  { files: ['src/kafka/**'], may: ['core'], clients: [kafkaClient], why: 'src/kafka may import only src/core.' },
  { files: ['src/serde/**'], may: ['core'], clients: [registryClient], why: 'src/serde may import only src/core.' },
  { files: ['src/media/**', 'src/blob/**'], may: ['core'], why: 'media and blob may import only src/core.' },
  { files: ['src/domain/**'], may: ['core'], why: 'src/domain (Sonic records and rules) may import only src/core.' },
  { files: ['src/runtime/**'], may: ['core', 'kafka', 'serde'], why: 'src/runtime knows nothing of Sonic: it may import src/kafka, src/serde and src/core.' },
  {
    files: ['src/stages/**'],
    may: ['core', 'media', 'blob', 'domain', 'runtime'],
    why: 'A stage has no Kafka client: it may import src/domain, src/media, src/blob, src/core and the runtime.',
  },
  {
    files: ['topologies/**'],
    may: ['core', 'domain', 'runtime', 'stages'],
    why: 'A topology composes stages and topics: it may import src/stages, src/domain and src/runtime.',
  },
  {
    files: ['src/app/**'],
    may: ['core', 'kafka', 'serde', 'media', 'blob', 'domain', 'runtime', 'stages', 'topologies'],
    why: 'The composition root is imported by the services, never the other way.',
  },
  {
    files: ['src/api/**'],
    may: ['core', 'kafka', 'serde', 'media', 'blob', 'domain', 'runtime', 'app'],
    why: 'The API reaches stages and the topology only through src/app; it never imports src/ops.',
  },
  {
    files: ['src/ops/**'],
    may: ['core', 'kafka', 'serde', 'media', 'blob', 'domain', 'runtime', 'app'],
    why: 'Operations commands reach stages and the topology only through src/app; they never import src/api.',
  },
  { files: ['src/cli/**'], may: 'all', why: '' },
];

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
    // the console's pages run in the browser (served as they are, no build step)
    files: ['src/api/console/static/**'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'window',
          'document',
          'history',
          'location',
          'sessionStorage',
          'navigator',
          'URLSearchParams',
          'Blob',
          'File',
          'FormData',
          'MediaRecorder',
          'AudioContext',
          'PopStateEvent',
          'dispatchEvent',
          'addEventListener',
          'removeEventListener',
          'TextDecoderStream',
          'EventSource',
          'requestAnimationFrame',
          'ResizeObserver',
        ].map((g) => [g, 'readonly']),
      ),
    },
  },
  {
    // bin/node-runtime.mjs runs before any module of ours is loaded (it picks the Node to load them on)
    files: ['src/core/config.ts', 'src/cli/cli.ts', 'src/ops/demo.ts', 'bin/node-runtime.mjs', 'test/**', 'bench/**', 'scripts/**'],
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
  ...LAYERS.map(({ files, may, clients = [], why }) => ({
    files,
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...[kafkaClient, registryClient].filter((c) => !clients.includes(c)),
            ...(may === 'all'
              ? []
              : [
                  up(
                    FOLDERS.filter((f) => !may.includes(f) && !files.some((g) => g.startsWith(`src/${f}/`) || g.startsWith(`${f}/`))),
                    why,
                  ),
                ]),
          ],
        },
      ],
    },
  })),
);
