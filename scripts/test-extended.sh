#!/usr/bin/env bash
# `npm run test:extended`: the long runs beside `npm test` (vitest.config.ts EXTENDED: a broker's
# outages of a minute, private brokers, the secured stack with TLS, SASL and ACLs end to end, the
# stack script's start/stop, the dispatcher's and infer workers' kill drills, the stage lifecycle's
# long handler and SIGTERM drills, the autoscaler's bursts) and, in the same pool,
# the stage runtime's conformance tests on the second Kafka client (@platformatic/kafka, KIP-447).
# Starts the local stack and the secured one when they are not up. Arguments go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
echo "== stack"; bash ops/stack/stack.sh up >/dev/null; bash ops/stack/stack.sh up --secure >/dev/null
echo "== extended tests, and the runtime's conformance tests on @platformatic/kafka"
npx vitest run --project extended --project conformance "$@"
