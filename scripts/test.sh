#!/usr/bin/env bash
# `npm test`: installs what is missing, then the format check (Prettier), lint, type check, import-cycle check, and every test
# tier: the unit tier first (pure code, the topology test driver, ffmpeg; it runs with the broker,
# registry and store pointing nowhere), then the integration tier against the real broker,
# registry and S3 store, then the runtime's conformance tests again on the second Kafka client. Arguments go to one vitest run of both tiers instead (a file, a filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
echo "== format"; npx prettier --check . >/dev/null || { npx prettier --list-different .; echo "formatting differs: run npm run format"; exit 1; }
echo "== lint"; npx eslint .
echo "== typecheck"; npx tsc --noEmit -p tsconfig.json
echo "== import cycles"; npx madge --circular --warning --extensions ts --ts-config tsconfig.json src topologies
if [ $# -gt 0 ]; then
  echo "== stack"; bash ops/stack/stack.sh up >/dev/null
  echo "== tests"; npx vitest run "$@"
  exit
fi
echo "== unit tests (no broker, registry or store)"; npx vitest run --project unit
# the secured stack beside it, for test/integration/secure-kafka.test.ts (which would start it too)
echo "== stack"; bash ops/stack/stack.sh up >/dev/null; bash ops/stack/stack.sh up --secure >/dev/null
# the integration tier, and in the same pool the conformance project: the stage runtime's
# exactly-once, crash, zombie, fencing-mid-backlog, retry/DLQ, store and end-to-end tests again,
# every process of them on the second Kafka client (@platformatic/kafka, KIP-447, src/kafka/port.ts)
echo "== integration tests, and the runtime's conformance tests on @platformatic/kafka"
npx vitest run --project integration --project conformance
