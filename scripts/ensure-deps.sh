#!/usr/bin/env bash
# Installs what sonicflow needs and is missing: node_modules (npm ci), a JDK and Maven for the
# local Kafka and registry, ffmpeg/ffprobe for media, espeak-ng for the demo's synthetic speech.
# Debian packages need root (or sudo); everything else stays in the project or the user's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[deps] installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
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
# ss (the security tests count the API's connections to the broker)
command -v ss >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "[deps] installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
