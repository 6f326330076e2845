#!/usr/bin/env bash
# `npm test`: installs what is missing, then lint, type check, import-cycle check, and every test
# tier (unit, topology driver, integration against the real broker and registry).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
echo "== lint"; npx eslint .
echo "== typecheck"; npx tsc --noEmit -p tsconfig.json
echo "== import cycles"; npx madge --circular --warning --extensions ts --ts-config tsconfig.json src topologies
echo "== stack"; bash ops/stack/stack.sh up >/dev/null
echo "== tests"; npx vitest run "$@"
