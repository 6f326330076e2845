#!/usr/bin/env bash
# `npm run bench`: installs what is missing, brings the local stack up, and runs every benchmark
# side by side (bench/run.ts); extra arguments go to it (e.g. `npm run bench -- --runs 1`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
eval "$(bash ops/stack/stack.sh up | grep -E '^(KAFKA_BROKERS|SCHEMA_REGISTRY_URL|SONIC_S3_ENDPOINT)=' | sed 's/^/export /')"
node --import tsx bench/run.ts "$@"
