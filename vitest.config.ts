import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Two tiers, run together by `npx vitest run` (and `npm test`), or alone with `--project`:
 *   unit         test/unit: pure code, the topology test driver, ffmpeg and local files. It needs
 *                no broker, registry or S3 store: their settings point nowhere, and
 *                test/helpers/no-services.ts fails a test that connects to one of them.
 *   integration  test/integration and test/security: the real broker, registry and store (but
 *                the long runs of `extended`).
 *   extended     the long runs (EXTENDED): `npm run test:extended` with conformance, after `npm test` in CI.
 *   conformance  the runtime's conformance files of test/integration again, on @platformatic/kafka.
 *   cluster      test/cluster: a private three-broker cluster it starts itself (minutes), with the
 *                shared registry and store; `npm run test:cluster`, not part of `npm test`.
 */
const NOWHERE: Record<string, string> = {
  KAFKA_BROKERS: '127.0.0.1:1',
  SCHEMA_REGISTRY_URL: 'http://127.0.0.1:1',
  SONIC_S3_ENDPOINT: 'http://127.0.0.1:1',
};

/**
 * The long runs, beside `npm test` (CI runs them after it: `npm run test:extended`): outages of a
 * broker lasting a minute by design, private brokers started and stopped (JVMs), the secured stack
 * (a second broker: TLS, SASL, the derived ACLs enforced, end to end with one principal per
 * process), the stack script's own start/stop, the SIGKILL/SIGSTOP drills of the dispatcher and
 * the infer workers, a handler outliving three session timeouts and SIGTERM mid-batch, and the
 * autoscaler's bursts (hundreds of tasks scaled up and back down). Each takes minutes of both
 * cores; `npm test` keeps the rest within its time budget (the ACLs' derivation and rendering and
 * the autoscaler's rule stay there as unit tests, the crash and zombie tests as integration tests).
 */
const EXTENDED = [
  'test/integration/runtime-broker-outage.test.ts',
  'test/integration/runtime-broker-health.test.ts',
  'test/security/api-availability.test.ts',
  'test/integration/stack.test.ts',
  'test/integration/secure-kafka.test.ts',
  'test/integration/acls.test.ts',
  'test/integration/pipeline-acls.test.ts',
  'test/integration/dispatch.test.ts',
  'test/integration/pipeline-worker.test.ts',
  'test/integration/runtime-lifecycle.test.ts',
  'test/integration/autoscale.test.ts',
  'test/integration/autoscale-dispatch.test.ts',
];

/** The exactly-once, crash, zombie, fencing-mid-backlog, retry/DLQ, store and end-to-end tests of the stage runtime. */
const CONFORMANCE = [
  'test/integration/runtime-zombie.test.ts',
  'test/integration/runtime-crash.test.ts',
  'test/integration/runtime-retry-dlq.test.ts',
  'test/integration/runtime-stores.test.ts',
  'test/integration/pipeline-e2e.test.ts',
];

export default defineConfig({
  test: {
    // integration tests share one broker and registry; files run in parallel, 2 at a time on 2 cores
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          setupFiles: ['test/helpers/no-services.ts'],
          env: {
            ...NOWHERE,
            // the services this environment named, for the guard to refuse as well
            SONICFLOW_UNIT_REFUSED: Object.keys(NOWHERE)
              // eslint-disable-next-line no-restricted-properties -- the test runner's own settings, not the service's
              .map((k) => process.env[k] ?? '')
              .filter((v) => v !== '' && !Object.values(NOWHERE).includes(v))
              .join(','),
          },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/security/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...EXTENDED],
        },
      },
      {
        // the long runs (EXTENDED above): `npm run test:extended`, with the conformance project
        extends: true,
        test: {
          name: 'extended',
          include: EXTENDED,
        },
      },
      {
        // the stage runtime's conformance tests again, every process of them on the second Kafka
        // client (@platformatic/kafka, KIP-447); `npm run test:extended` runs this project in one
        // pool with the long runs (the integration tier runs the same files on kafkajs)
        extends: true,
        test: {
          name: 'conformance',
          include: CONFORMANCE,
          env: { SONIC_KAFKA_CLIENT: 'platformatic' },
        },
      },
      {
        extends: true,
        test: {
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
        },
      },
    ],
  },
});
