#!/usr/bin/env bash
# `npm test`: installs what is missing, then the format check (Prettier), lint, type check, import-cycle check, and the two test
# tiers: the unit tier first (pure code, the topology test driver, ffmpeg; it runs with the broker,
# registry and store pointing nowhere), then the integration tier against the real broker,
# registry and S3 store. Arguments go to one vitest run of both tiers instead (a file, a filter).
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
echo "== stack"; bash ops/stack/stack.sh up >/dev/null
# the integration tier; the long runs (broker outages, private brokers, the secured stack, the
# dispatcher's and workers' kill drills) and the conformance tests on the second Kafka client are
# `npm run test:extended` (scripts/test-extended.sh), which CI runs after this
echo "== integration tests"
npx vitest run --project integration
