#!/usr/bin/env bash
# `npm run demo`: installs what is missing, brings the local stack up (Kafka, schema registry,
# S3-compatible store), then runs the whole pipeline on a generated sample and prints the MP4.
# Extra arguments go to `sonicflow demo` (e.g. `npm run demo -- --keep`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
eval "$(bash ops/stack/stack.sh up | grep -E '^(KAFKA_BROKERS|SCHEMA_REGISTRY_URL|SONIC_S3_ENDPOINT)=' | sed 's/^/export /')"
node bin/sonicflow.mjs demo "$@"
echo
echo "The stack keeps running; stop it with: npm run stack:down"
