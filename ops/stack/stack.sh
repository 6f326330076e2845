#!/usr/bin/env bash
# The local sonicflow stack without Docker: a single-node Apache Kafka (KRaft), Apicurio Registry
# and S3Proxy (an S3-compatible blob server), all fetched from Maven Central through Maven, run as
# local Java processes.
#
#   stack.sh up       start all three, or reuse what already runs (idempotent)
#   stack.sh down     stop exactly the processes this script started
#   stack.sh status   report the services; exit 0 only when all answer
#   stack.sh clean    down, then delete the stack's data and logs
#   stack.sh fetch    only download and cache the artifacts
#   stack.sh tool NAME [ARGS]   run a Kafka command-line tool (topics, consumer-groups,
#                     console-consumer, configs, producer-perf, consumer-perf, get-offsets)
#
# Environment (defaults in brackets) — see docs/configuration.md:
#   KAFKA_BROKERS, SCHEMA_REGISTRY_URL   when set, that service is used as is and not started
#   SONIC_S3_ENDPOINT   when set to other than http://localhost:$SONIC_S3_PORT, no S3Proxy is started
#   SONICFLOW_CACHE_DIR [${XDG_CACHE_HOME:-~/.cache}/sonicflow]   downloaded artifacts
#   SONICFLOW_STATE_DIR [${XDG_STATE_HOME:-~/.local/state}/sonicflow]   data, logs, pid files
#   SONIC_KAFKA_PORT [9092], SONIC_KAFKA_CONTROLLER_PORT [9093], SONIC_REGISTRY_PORT [8081],
#   SONIC_S3_PORT [9000]
#   SONIC_STACK_TIMEOUT_S [120]   how long to wait for each service to answer
set -euo pipefail

KAFKA_VERSION=4.1.1
APICURIO_VERSION=3.0.9
S3PROXY_VERSION=2.6.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SONICFLOW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sonicflow}
STATE=${SONICFLOW_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/sonicflow}
KAFKA_PORT=${SONIC_KAFKA_PORT:-9092}
CONTROLLER_PORT=${SONIC_KAFKA_CONTROLLER_PORT:-9093}
REGISTRY_PORT=${SONIC_REGISTRY_PORT:-8081}
S3_PORT=${SONIC_S3_PORT:-9000}
TIMEOUT_S=${SONIC_STACK_TIMEOUT_S:-120}
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
APICURIO_HOME="$CACHE/apicurio-registry-$APICURIO_VERSION"
S3PROXY_HOME="$CACHE/s3proxy-$S3PROXY_VERSION"
S3PROXY_ARTIFACT="org.gaul:s3proxy:$S3PROXY_VERSION:jar:jar-with-dependencies"
# The identity and credential of the local S3Proxy: the defaults of SONIC_S3_ACCESS_KEY_ID and
# SONIC_S3_SECRET_ACCESS_KEY, for a server that listens on 127.0.0.1 only.
S3_IDENTITY=local-identity
S3_CREDENTIAL=local-credential
# Marks the processes we start so that `down` never stops anything else.
MARK="-Dsonicflow.stack=$STATE"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid from a pid file when that process is alive and is one of ours
our_pid() {
  local f="$STATE/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$MARK" || return 1
  echo "$pid"
}

need_java() {
  command -v java >/dev/null || die "java not found: install a JDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "${v:-0}" -ge 17 ] || die "java $v found; Kafka $KAFKA_VERSION and Apicurio $APICURIO_VERSION need 17 or newer"
}

fetch_kafka() {
  [ -f "$KAFKA_HOME/.complete" ] && return 0
  command -v mvn >/dev/null || die "kafka: mvn not found; install Maven (apt-get install maven) to fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  say "kafka: fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies from Maven Central"
  mkdir -p "$KAFKA_HOME"
  mvn -q -B -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$KAFKA_HOME/fetch.log" 2>&1 ||
    die "kafka: Maven could not fetch the broker (see $KAFKA_HOME/fetch.log)"
  touch "$KAFKA_HOME/.complete"
}

fetch_apicurio() {
  [ -f "$APICURIO_HOME/.complete" ] && return 0
  command -v mvn >/dev/null || die "registry: mvn not found; install Maven to fetch io.apicurio:apicurio-registry-app:$APICURIO_VERSION"
  say "registry: fetching io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all from Maven Central"
  mkdir -p "$APICURIO_HOME"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy -Dmdep.overWriteReleases=true \
    -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$APICURIO_HOME/download" >"$APICURIO_HOME/fetch.log" 2>&1 ||
    die "registry: Maven could not fetch the registry (see $APICURIO_HOME/fetch.log)"
  tar -xzf "$APICURIO_HOME"/download/*.tar.gz -C "$APICURIO_HOME" ||
    die "registry: could not unpack $APICURIO_HOME/download"
  rm -rf "$APICURIO_HOME/download"
  touch "$APICURIO_HOME/.complete"
}

fetch_s3proxy() {
  [ -f "$S3PROXY_HOME/.complete" ] && return 0
  command -v mvn >/dev/null || die "s3: mvn not found; install Maven to fetch $S3PROXY_ARTIFACT"
  say "s3: fetching $S3PROXY_ARTIFACT from Maven Central"
  mkdir -p "$S3PROXY_HOME"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy -Dmdep.overWriteReleases=true -Dmdep.stripVersion=true \
    -Dmdep.stripClassifier=true -Dartifact="$S3PROXY_ARTIFACT" \
    -DoutputDirectory="$S3PROXY_HOME" >"$S3PROXY_HOME/fetch.log" 2>&1 ||
    die "s3: Maven could not fetch S3Proxy (see $S3PROXY_HOME/fetch.log)"
  [ -f "$S3PROXY_HOME/s3proxy.jar" ] || die "s3: no s3proxy.jar in $S3PROXY_HOME after fetching (see $S3PROXY_HOME/fetch.log)"
  touch "$S3PROXY_HOME/.complete"
}

# wait_until NAME PID LOG CHECK-COMMAND...
wait_until() {
  local name=$1 pid=$2 log=$3; shift 3
  local deadline=$((SECONDS + TIMEOUT_S))
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name: the process exited during start-up; last lines of $log:"
      tail -n 20 "$log" >&2 || true
      die "$name failed to start (log: $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name: no answer after ${TIMEOUT_S}s; last lines of $log:"
      tail -n 20 "$log" >&2 || true
      die "$name did not become ready within ${TIMEOUT_S}s (log: $log; pid $pid left running, stop it with: stack.sh down)"
    fi
    sleep 0.5
  done
}

kafka_ready() { port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$STATE/kafka/logs/server.log" 2>/dev/null; }
registry_url() { echo "http://localhost:$REGISTRY_PORT/apis/ccompat/v7"; }
registry_ready() { curl -fsS -m 5 -o /dev/null "$(registry_url)/subjects" 2>/dev/null; }
s3_url() { echo "http://localhost:$S3_PORT"; }
# Any S3 server answers an anonymous request with an error that carries a request id.
s3_ready() { curl -sS -m 5 -o /dev/null -D - "$(s3_url)/" 2>/dev/null | grep -qi '^x-amz-request-id:'; }
# true when SONIC_S3_ENDPOINT names another server than the local default
s3_external() {
  local e=${SONIC_S3_ENDPOINT:-}
  e=${e%/}
  [ -n "$e" ] && [ "$e" != "$(s3_url)" ] && [ "$e" != "http://127.0.0.1:$S3_PORT" ]
}

up_kafka() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then say "kafka: KAFKA_BROKERS=$KAFKA_BROKERS is set; using it, starting nothing"; return; fi
  local pid
  if pid=$(our_pid kafka) && port_open "$KAFKA_PORT"; then say "kafka: already running (pid $pid) on localhost:$KAFKA_PORT, reusing it"; return; fi
  if port_open "$KAFKA_PORT"; then say "kafka: something not started by this script listens on localhost:$KAFKA_PORT; reusing it (down leaves it alone)"; return; fi
  port_open "$CONTROLLER_PORT" && die "kafka: controller port $CONTROLLER_PORT is taken by another process (set SONIC_KAFKA_CONTROLLER_PORT)"
  fetch_kafka
  mkdir -p "$STATE/kafka/data" "$STATE/kafka/logs"
  local props="$STATE/kafka/server.properties"
  cat >"$props" <<EOF
# written by ops/stack/stack.sh — single-node KRaft broker for local development and CI
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:$CONTROLLER_PORT
listeners=PLAINTEXT://localhost:$KAFKA_PORT,CONTROLLER://localhost:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://localhost:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$STATE/kafka/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=12
transaction.max.timeout.ms=900000
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.check.interval.ms=60000
EOF
  if [ ! -f "$STATE/kafka/data/meta.properties" ]; then
    java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format -t "$(java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      -c "$props" >"$STATE/kafka/logs/format.log" 2>&1 || die "kafka: formatting the KRaft storage failed (log: $STATE/kafka/logs/format.log)"
  fi
  say "kafka: starting Apache Kafka $KAFKA_VERSION (KRaft) on localhost:$KAFKA_PORT"
  local out="$STATE/kafka/logs/stdout.log"
  setsid nohup java $MARK -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$STATE/kafka/logs" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$props" >"$out" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/kafka.pid"
  wait_until kafka "$!" "$STATE/kafka/logs/server.log" kafka_ready
  say "kafka: ready on localhost:$KAFKA_PORT (log: $STATE/kafka/logs/server.log)"
}

up_registry() {
  if [ -n "${SCHEMA_REGISTRY_URL:-}" ]; then say "registry: SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL is set; using it, starting nothing"; return; fi
  local pid
  if pid=$(our_pid registry) && registry_ready; then say "registry: already running (pid $pid) at $(registry_url), reusing it"; return; fi
  if port_open "$REGISTRY_PORT"; then
    registry_ready || die "registry: port $REGISTRY_PORT is taken by something that is not a Confluent-compatible registry (set SONIC_REGISTRY_PORT)"
    say "registry: a registry not started by this script answers at $(registry_url); reusing it (down leaves it alone)"; return
  fi
  fetch_apicurio
  mkdir -p "$STATE/registry"
  local jar log="$STATE/registry/registry.log"
  jar=$(ls "$APICURIO_HOME"/*-runner.jar "$APICURIO_HOME"/quarkus-run.jar 2>/dev/null | head -1) || true
  [ -n "$jar" ] || die "registry: no runnable jar in $APICURIO_HOME (delete it to fetch again)"
  local brokers=${KAFKA_BROKERS:-localhost:$KAFKA_PORT}
  say "registry: starting Apicurio Registry $APICURIO_VERSION (kafkasql storage on $brokers) at $(registry_url)"
  # Schemas are stored in the Kafka topic kafkasql-journal, so they survive a registry restart.
  APICURIO_STORAGE_KIND=kafkasql APICURIO_KAFKASQL_BOOTSTRAP_SERVERS="$brokers" \
    QUARKUS_HTTP_PORT="$REGISTRY_PORT" QUARKUS_HTTP_HOST=127.0.0.1 \
    setsid nohup env -C "$STATE/registry" java $MARK -Xms128m -Xmx512m -jar "$jar" >"$log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/registry.pid"
  wait_until registry "$!" "$log" registry_ready
  say "registry: ready at $(registry_url) (log: $log)"
}

up_s3() {
  if s3_external; then say "s3: SONIC_S3_ENDPOINT=$SONIC_S3_ENDPOINT is set; using it, starting nothing"; return; fi
  local pid
  if pid=$(our_pid s3) && s3_ready; then say "s3: already running (pid $pid) at $(s3_url), reusing it"; return; fi
  if port_open "$S3_PORT"; then
    s3_ready || die "s3: port $S3_PORT is taken by something that is not an S3 server (set SONIC_S3_PORT)"
    say "s3: an S3 server not started by this script answers at $(s3_url); reusing it (down leaves it alone)"; return
  fi
  fetch_s3proxy
  mkdir -p "$STATE/s3/data"
  local conf="$STATE/s3/s3proxy.conf" log="$STATE/s3/s3proxy.log"
  # filesystem-nio2 keeps objects as files under data/<bucket>/<key> and their metadata in xattrs;
  # jclouds.identity/credential are unused by it but S3Proxy insists on them.
  cat >"$conf" <<EOF
# written by ops/stack/stack.sh — S3Proxy for local development and CI
s3proxy.endpoint=http://127.0.0.1:$S3_PORT
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$S3_IDENTITY
s3proxy.credential=$S3_CREDENTIAL
jclouds.provider=filesystem-nio2
jclouds.filesystem.basedir=$STATE/s3/data
jclouds.identity=$S3_IDENTITY
jclouds.credential=$S3_CREDENTIAL
EOF
  say "s3: starting S3Proxy $S3PROXY_VERSION (filesystem storage under $STATE/s3/data) at $(s3_url)"
  setsid nohup java $MARK -Xms64m -Xmx256m -jar "$S3PROXY_HOME/s3proxy.jar" --properties "$conf" >"$log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/s3.pid"
  wait_until s3 "$!" "$log" s3_ready
  say "s3: ready at $(s3_url) (log: $log)"
}

stop_one() {
  local name=$1 port=$2 pid
  if ! pid=$(our_pid "$name"); then
    rm -f "$STATE/$name.pid"
    say "$name: not started by this script; nothing to stop"
    return
  fi
  say "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.3; done
  if kill -0 "$pid" 2>/dev/null; then say "$name: still running after 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  deadline=$((SECONDS + 15))
  while port_open "$port" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.3; done
  rm -f "$STATE/$name.pid"
  say "$name: stopped"
}

status_one() {
  local name=$1 where=$2 ok=$3 pid
  if pid=$(our_pid "$name"); then
    if $ok; then echo "$name: running (pid $pid, started by sonicflow) at $where"; else echo "$name: starting or unhealthy (pid $pid) at $where"; return 1; fi
  elif $ok; then echo "$name: running at $where (not started by sonicflow)"
  else echo "$name: not running ($where)"; return 1; fi
}

tool() {
  local name=${1:-}; shift || true
  local cls
  case "$name" in
    topics) cls=org.apache.kafka.tools.TopicCommand ;;
    consumer-groups) cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    console-consumer) cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    configs) cls=kafka.admin.ConfigCommand ;;
    producer-perf) cls=org.apache.kafka.tools.ProducerPerformance ;;
    consumer-perf) cls=org.apache.kafka.tools.ConsumerPerformance ;;
    get-offsets) cls=org.apache.kafka.tools.GetOffsetShell ;;
    *) die "tool: unknown tool '$name' (topics, consumer-groups, console-consumer, configs, producer-perf, consumer-perf, get-offsets)" ;;
  esac
  need_java
  fetch_kafka
  exec java -Xmx512m -Dlog4j2.configurationFile="$HERE/log4j2-tools.properties" -cp "$KAFKA_HOME/libs/*" "$cls" "$@"
}

cmd=${1:-status}
shift || true
# one `up`/`down`/`clean` at a time: parallel test workers or shells must not start a second broker
# (the services are started with fd 9 closed, so they do not hold the lock)
if [ "$cmd" = up ] || [ "$cmd" = down ] || [ "$cmd" = clean ]; then
  mkdir -p "$STATE"
  exec 9>"$STATE/stack.lock"
  flock -w "$TIMEOUT_S" 9 || die "another stack.sh $cmd holds $STATE/stack.lock for more than ${TIMEOUT_S}s"
fi
case "$cmd" in
  up)
    need_java
    mkdir -p "$STATE"
    up_kafka
    up_registry
    up_s3
    echo "KAFKA_BROKERS=${KAFKA_BROKERS:-localhost:$KAFKA_PORT}"
    echo "SCHEMA_REGISTRY_URL=${SCHEMA_REGISTRY_URL:-$(registry_url)}"
    if s3_external; then echo "SONIC_S3_ENDPOINT=${SONIC_S3_ENDPOINT%/}"; else echo "SONIC_S3_ENDPOINT=$(s3_url)"; fi
    ;;
  down)
    stop_one s3 "$S3_PORT"
    stop_one registry "$REGISTRY_PORT"
    stop_one kafka "$KAFKA_PORT"
    ;;
  status)
    rc=0
    if [ -n "${KAFKA_BROKERS:-}" ]; then echo "kafka: external, KAFKA_BROKERS=$KAFKA_BROKERS"
    else status_one kafka "localhost:$KAFKA_PORT" "$(port_open "$KAFKA_PORT" && echo true || echo false)" || rc=1; fi
    if [ -n "${SCHEMA_REGISTRY_URL:-}" ]; then echo "registry: external, SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL"
    else status_one registry "$(registry_url)" "$(registry_ready && echo true || echo false)" || rc=1; fi
    if s3_external; then echo "s3: external, SONIC_S3_ENDPOINT=$SONIC_S3_ENDPOINT"
    else status_one s3 "$(s3_url)" "$(s3_ready && echo true || echo false)" || rc=1; fi
    echo "data and logs: $STATE"
    exit $rc
    ;;
  clean)
    "$0" down
    rm -rf "$STATE/kafka" "$STATE/registry" "$STATE/s3"
    say "removed data and logs under $STATE"
    ;;
  fetch) need_java; fetch_kafka; fetch_apicurio; fetch_s3proxy ;;
  tool) tool "$@" ;;
  -h|--help|help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (up, down, status, clean, fetch, tool, --help)" ;;
esac
