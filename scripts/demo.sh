#!/usr/bin/env bash
# `npm run demo`: brings up the local stack, deploys the Sonic topology (topics and schemas),
# prints the topology, then shows the result through Kafka's own tooling and the registry's API.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
eval "$(bash ops/stack/stack.sh up | grep -E '^(KAFKA_BROKERS|SCHEMA_REGISTRY_URL)=' | sed 's/^/export /')"
echo
echo "== topology"
node bin/sonicflow.mjs topology validate
node bin/sonicflow.mjs topology describe
echo "== deploy"
node bin/sonicflow.mjs topology deploy
echo
echo "== topics, as Kafka's own kafka-topics tool lists them"
bash ops/stack/stack.sh tool topics --bootstrap-server "${KAFKA_BROKERS%%,*}" --list | grep -v '^__' | grep -v '^kafkasql'
echo
echo "== subjects, as the schema registry lists them ($SCHEMA_REGISTRY_URL)"
curl -fsS "$SCHEMA_REGISTRY_URL/subjects" | tr -d '[]"' | tr ',' '\n'
echo
echo
echo "The stack keeps running; stop it with: npm run stack:down"
