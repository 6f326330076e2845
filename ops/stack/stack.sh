#!/usr/bin/env bash
# The local sonicflow stack without Docker: a single-node Apache Kafka (KRaft), Apicurio Registry
# and S3Proxy (an S3-compatible blob server), all fetched from Maven Central through Maven, run as
# local Java processes. `up --brokers 3` starts a three-node KRaft cluster instead of the one broker.
# `--secure` (with any command) means the secured stack instead: Kafka with a SASL_SSL listener
# (SCRAM-SHA-512 users, a locally generated CA and broker certificate, the StandardAuthorizer) and
# a registry of its own connected to it over SASL_SSL, under $SONICFLOW_STATE_DIR/secure and on
# their own ports, beside the plaintext stack; S3Proxy is the plaintext stack's.
#
#   stack.sh up [--brokers 1|3] [--secure]   start all three, or reuse what already runs (idempotent)
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
#   SONIC_STACK_BROKERS [1]   brokers of `up` (1 or 3; `--brokers` wins); 3: a cluster under $STATE/cluster3
#   SONIC_KAFKA_PORTS [9092,9094,9096], SONIC_KAFKA_CONTROLLER_PORTS [9093,9095,9097]   its nodes' ports
#   SONIC_STACK_SECURE [0]   1: the secured stack (`--secure` says the same); it ignores KAFKA_BROKERS
#                     and SCHEMA_REGISTRY_URL
#   SONIC_KAFKA_SECURE_PORT [9192], SONIC_REGISTRY_SECURE_PORT [8181]   the secured stack's ports
#                     (controller: +1; three nodes: +0, +2, +4 and their controllers +1)
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
BROKERS=${SONIC_STACK_BROKERS:-1}
SECURE=${SONIC_STACK_SECURE:-0}
# the three-node cluster: broker i on the i-th of KAFKA_PORTS, its controller on the i-th of
# CONTROLLER_PORTS; the first broker keeps the single broker's port
KAFKA_PORTS=${SONIC_KAFKA_PORTS:-$KAFKA_PORT,$((KAFKA_PORT + 2)),$((KAFKA_PORT + 4))}
CONTROLLER_PORTS=${SONIC_KAFKA_CONTROLLER_PORTS:-$CONTROLLER_PORT,$((CONTROLLER_PORT + 2)),$((CONTROLLER_PORT + 4))}
CLUSTER="$STATE/cluster3"
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

# broker_ready PORT LOG-DIR
broker_ready() { port_open "$1" && grep -q 'Kafka Server started' "$2/server.log" 2>/dev/null; }
kafka_ready() { broker_ready "$KAFKA_PORT" "$STATE/kafka/logs"; }
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

# the cluster's node N: its broker port, controller port (the N-th of each list), directory
node_port() { echo "$KAFKA_PORTS" | cut -d, -f"$1"; }
node_controller_port() { echo "$CONTROLLER_PORTS" | cut -d, -f"$1"; }
node_dir() { echo "$CLUSTER/kafka-$1"; }
cluster_brokers() { echo "localhost:$(node_port 1),localhost:$(node_port 2),localhost:$(node_port 3)"; }
# true when a node of this stack's cluster runs
cluster_running() { our_pid cluster3/kafka-1 >/dev/null || our_pid cluster3/kafka-2 >/dev/null || our_pid cluster3/kafka-3 >/dev/null; }
# what clients bootstrap from when KAFKA_BROKERS is unset: the cluster when asked for or running
kafka_bootstrap() {
  if [ "$BROKERS" = 3 ] || cluster_running; then cluster_brokers; else echo "localhost:$KAFKA_PORT"; fi
}

# kafka_props NODE-ID PORT CONTROLLER-PORT VOTERS DIR NODES: the server.properties of one node.
# With three nodes the internal topics (offsets, transactions) get three replicas and the
# transaction log needs two in sync; topics created without a replication factor get three.
kafka_props() {
  local rf=1 isr=1 what="single-node KRaft broker for local development and CI"
  if [ "$6" -gt 1 ]; then rf=3 isr=2 what="node $1 of a $6-node KRaft cluster (broker and controller) for local development and CI"; fi
  cat <<EOF
# written by ops/stack/stack.sh — $what
process.roles=broker,controller
node.id=$1
controller.quorum.voters=$4
log.dirs=$5/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=1
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=12
transaction.max.timeout.ms=900000
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.check.interval.ms=60000
EOF
  if [ "$SECURE" = 1 ]; then secure_listener_props "$2" "$3"; else
    cat <<EOF
listeners=PLAINTEXT://localhost:$2,CONTROLLER://localhost:$3
advertised.listeners=PLAINTEXT://localhost:$2
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
  fi
}

# --- the secured stack -------------------------------------------------------------------------
# One listener for clients and between brokers, SASL_SSL with SCRAM-SHA-512: the brokers
# authenticate to each other as the SCRAM user `broker`. The controller listener is SASL_PLAINTEXT
# with PLAIN (SCRAM credentials live in the metadata log the controllers serve, so controllers
# cannot use them), user `controller`, on localhost only. Both are super users, with `admin` (for
# deploy, tools and tests) and `registry` (Apicurio creates its journal topic and a consumer group
# of a random name per start). Everyone else is denied unless an ACL allows.
SECURE_DIR_TLS() { echo "$STATE/tls"; }
SECURE_USERS=(admin registry broker)

# secure_credentials: writes $STATE/users.env once (a random password per user); sources it
secure_credentials() {
  local f="$STATE/users.env" u
  if [ ! -s "$f" ]; then
    if ls "$STATE"/kafka/data/meta.properties "$CLUSTER"/kafka-*/data/meta.properties >/dev/null 2>&1; then
      die "secure: the broker data under $STATE exists but its users ($f) are gone; start afresh with: stack.sh clean --secure"
    fi
    command -v openssl >/dev/null || die "secure: openssl not found (Debian: apt-get install openssl)"
    (
      umask 077
      for u in "${SECURE_USERS[@]}" controller; do echo "SECURE_PW_$u=$(openssl rand -hex 16)"; done >"$f.tmp"
      mv "$f.tmp" "$f"
    )
  fi
  # shellcheck disable=SC1090
  . "$f"
}
secure_pw() { local v="SECURE_PW_$1"; echo "${!v}"; }

# secure_certs: a CA and a broker certificate for localhost and 127.0.0.1 signed by it, made once
# with openssl under $STATE/tls; the broker's key and chain as a PKCS#12 keystore
secure_certs() {
  local d
  d=$(SECURE_DIR_TLS)
  [ -s "$d/broker.p12" ] && [ -s "$d/ca.pem" ] && return 0
  command -v openssl >/dev/null || die "secure: openssl not found (Debian: apt-get install openssl)"
  mkdir -p "$d"
  chmod 700 "$d"
  say "secure: generating a local CA and a broker certificate under $d"
  (
    set -e
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.pem \
      -subj "/CN=sonicflow local CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' >broker.ext
    openssl x509 -req -sha256 -days 825 -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -extfile broker.ext -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker -out broker.p12.tmp -passout "pass:$(secure_pw broker)"
    mv broker.p12.tmp broker.p12
    rm -f broker.csr broker.ext
  ) >"$STATE/tls.log" 2>&1 || die "secure: generating the certificates failed (log: $STATE/tls.log)"
}

# the server.properties lines of a secured node: NODE-PORT CONTROLLER-PORT
secure_listener_props() {
  local tls
  tls=$(SECURE_DIR_TLS)
  cat <<EOF
listeners=SASL_SSL://localhost:$1,CONTROLLER://localhost:$2
advertised.listeners=SASL_SSL://localhost:$1
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(secure_pw broker)";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$(secure_pw controller)" user_controller="$(secure_pw controller)";
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$(secure_pw broker)
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:registry;User:broker;User:controller
EOF
}

# the SCRAM users, written into the metadata log when the storage is formatted
secure_format_args() {
  local u
  for u in "${SECURE_USERS[@]}"; do printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$u,password=$(secure_pw "$u")]"; done
}

# the client settings of the secured stack: sonicflow's environment, and a Java client's
# properties for the Kafka tools (stack.sh tool ... --command-config $STATE/admin.properties)
secure_client_env() {
  echo "SONIC_KAFKA_SSL=true"
  echo "SONIC_KAFKA_SSL_CA_FILE=$(SECURE_DIR_TLS)/ca.pem"
  echo "SONIC_KAFKA_SASL_MECHANISM=scram-sha-512"
  echo "SONIC_KAFKA_SASL_USERNAME=admin"
  echo "SONIC_KAFKA_SASL_PASSWORD=$(secure_pw admin)"
}
secure_java_client_props() {
  cat <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$1" password="$(secure_pw "$1")";
ssl.truststore.type=PEM
ssl.truststore.location=$(SECURE_DIR_TLS)/ca.pem
EOF
}

random_cluster_id() { java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1; }

# launch_broker NAME DIR CLUSTER-ID: formats DIR/data once (with CLUSTER-ID, or a fresh one when
# empty), then starts the node of DIR/server.properties in the background, pid in $STATE/NAME.pid
launch_broker() {
  local name=$1 dir=$2 id=$3
  # readiness is read from server.log: a restarted node must not pass on its last run's lines
  if [ -f "$dir/logs/server.log" ]; then mv -f "$dir/logs/server.log" "$dir/logs/server.log.previous"; fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    local scram=()
    if [ "$SECURE" = 1 ]; then mapfile -t scram < <(secure_format_args); fi
    java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format -t "${id:-$(random_cluster_id)}" \
      -c "$dir/server.properties" "${scram[@]}" >"$dir/logs/format.log" 2>&1 || die "$name: formatting the KRaft storage failed (log: $dir/logs/format.log)"
  fi
  setsid nohup java $MARK -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/$name.pid"
}

up_kafka() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then say "kafka: KAFKA_BROKERS=$KAFKA_BROKERS is set; using it, starting nothing"; return; fi
  local pid
  if cluster_running; then say "kafka: the three-node cluster of this stack runs on $(cluster_brokers); reusing it"; return; fi
  if pid=$(our_pid kafka) && port_open "$KAFKA_PORT"; then say "kafka: already running (pid $pid) on localhost:$KAFKA_PORT, reusing it"; return; fi
  if port_open "$KAFKA_PORT"; then say "kafka: something not started by this script listens on localhost:$KAFKA_PORT; reusing it (down leaves it alone)"; return; fi
  port_open "$CONTROLLER_PORT" && die "kafka: controller port $CONTROLLER_PORT is taken by another process (set SONIC_KAFKA_CONTROLLER_PORT)"
  fetch_kafka
  mkdir -p "$STATE/kafka/data" "$STATE/kafka/logs"
  kafka_props 1 "$KAFKA_PORT" "$CONTROLLER_PORT" "1@localhost:$CONTROLLER_PORT" "$STATE/kafka" 1 >"$STATE/kafka/server.properties"
  say "kafka: starting Apache Kafka $KAFKA_VERSION (KRaft) on localhost:$KAFKA_PORT"
  launch_broker kafka "$STATE/kafka" ""
  wait_until kafka "$(cat "$STATE/kafka.pid")" "$STATE/kafka/logs/server.log" kafka_ready
  say "kafka: ready on localhost:$KAFKA_PORT (log: $STATE/kafka/logs/server.log)"
}

# Three combined broker+controller nodes with a three-voter quorum, under $STATE/cluster3. Nodes
# of it that already run are reused; the others are started (so `up` also brings back a node that
# was stopped or killed). A running single broker of this stack is refused, not stopped.
up_cluster() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then say "kafka: KAFKA_BROKERS=$KAFKA_BROKERS is set; using it, starting nothing"; return; fi
  local pid i port cport voters=""
  if pid=$(our_pid kafka); then
    die "kafka: the single broker of this stack runs (pid $pid) on localhost:$KAFKA_PORT; stop it first (stack.sh down), or give the cluster its own SONICFLOW_STATE_DIR, SONIC_KAFKA_PORTS and SONIC_KAFKA_CONTROLLER_PORTS"
  fi
  for i in 1 2 3; do
    port=$(node_port "$i") cport=$(node_controller_port "$i")
    [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ ]] ||
      die "kafka: SONIC_KAFKA_PORTS ($KAFKA_PORTS) and SONIC_KAFKA_CONTROLLER_PORTS ($CONTROLLER_PORTS) must each list three ports"
    voters+="${voters:+,}$i@localhost:$cport"
    our_pid "cluster3/kafka-$i" >/dev/null && continue
    port_open "$port" && die "kafka-$i: port $port is taken by another process (set SONIC_KAFKA_PORTS)"
    port_open "$cport" && die "kafka-$i: controller port $cport is taken by another process (set SONIC_KAFKA_CONTROLLER_PORTS)"
  done
  fetch_kafka
  mkdir -p "$CLUSTER"
  [ -s "$CLUSTER/cluster.id" ] || random_cluster_id >"$CLUSTER/cluster.id"
  local started=() dir
  for i in 1 2 3; do
    port=$(node_port "$i") dir=$(node_dir "$i")
    if pid=$(our_pid "cluster3/kafka-$i"); then say "kafka-$i: already running (pid $pid) on localhost:$port, reusing it"; continue; fi
    mkdir -p "$dir/data" "$dir/logs"
    kafka_props "$i" "$port" "$(node_controller_port "$i")" "$voters" "$dir" 3 >"$dir/server.properties"
    say "kafka-$i: starting Apache Kafka $KAFKA_VERSION (KRaft, node $i of 3) on localhost:$port"
    launch_broker "cluster3/kafka-$i" "$dir" "$(cat "$CLUSTER/cluster.id")"
    started+=("$i")
  done
  # a node becomes ready once the quorum (two of the three controllers) has formed
  for i in "${started[@]}"; do
    dir=$(node_dir "$i")
    wait_until "kafka-$i" "$(cat "$CLUSTER/kafka-$i.pid")" "$dir/logs/server.log" broker_ready "$(node_port "$i")" "$dir/logs"
  done
  say "kafka: three-node cluster ready on $(cluster_brokers) (logs: $CLUSTER/kafka-<n>/logs/server.log)"
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
  local brokers=${KAFKA_BROKERS:-$(kafka_bootstrap)}
  # Quarkus reads config/application.properties of its working directory: the secured stack's
  # registry connects as the SCRAM user `registry` over SASL_SSL (apicurio.kafka.common.* goes to
  # every Kafka client of its kafkasql storage)
  rm -f "$STATE/registry/config/application.properties"
  if [ "$SECURE" = 1 ]; then
    mkdir -p "$STATE/registry/config"
    (umask 077; secure_java_client_props registry | sed 's/^/apicurio.kafka.common./' >"$STATE/registry/config/application.properties")
  fi
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

# stop_cluster: SIGTERM to every node of the cluster at once (one by one, the last would wait for
# a quorum that is gone), SIGKILL to those still running after 30 s
stop_cluster() {
  local i pid pids=() ports=()
  for i in 1 2 3; do
    [ -f "$CLUSTER/kafka-$i.pid" ] || continue
    if ! pid=$(our_pid "cluster3/kafka-$i"); then rm -f "$CLUSTER/kafka-$i.pid"; say "kafka-$i: not running"; continue; fi
    say "kafka-$i: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    ports+=("$(sed -n 's|^advertised.listeners=[A-Z_]*://localhost:\([0-9]*\)$|\1|p' "$(node_dir "$i")/server.properties" 2>/dev/null || true)")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  local deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then say "kafka: pid $pid still running after 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  deadline=$((SECONDS + 15))
  for port in "${ports[@]}"; do
    while [ -n "$port" ] && port_open "$port" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.3; done
  done
  rm -f "$CLUSTER"/kafka-*.pid
  say "kafka: cluster stopped"
}

# status_one NAME WHERE OK [LABEL]
status_one() {
  local name=$1 where=$2 ok=$3 label=${4:-$1} pid
  if pid=$(our_pid "$name"); then
    if $ok; then echo "$label: running (pid $pid, started by sonicflow) at $where"; else echo "$label: starting or unhealthy (pid $pid) at $where"; return 1; fi
  elif $ok; then echo "$label: running at $where (not started by sonicflow)"
  else echo "$label: not running ($where)"; return 1; fi
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

# `down`: stop what this stack started (the secured stack's own services when SECURE=1; S3Proxy
# is the plaintext stack's). Called in this process by `down` and `clean`, which hold the lock.
down_all() {
  if [ "$SECURE" = 0 ]; then stop_one s3 "$S3_PORT"; fi
  stop_one registry "$REGISTRY_PORT"
  # a cluster's stack has no single broker to report on
  if [ -f "$STATE/kafka.pid" ] || ! ls "$CLUSTER"/kafka-*.pid >/dev/null 2>&1; then stop_one kafka "$KAFKA_PORT"; fi
  stop_cluster
}

cmd=${1:-status}
shift || true
while [ $# -gt 0 ] && [ "$cmd" != tool ]; do
  case "$1" in
    --brokers) [ $# -ge 2 ] || die "--brokers needs a value (1 or 3)"; BROKERS=$2; shift 2 ;;
    --brokers=*) BROKERS=${1#--brokers=}; shift ;;
    --secure) SECURE=1; shift ;;
    *) die "$cmd: unknown option '$1' (--brokers 1|3, --secure)" ;;
  esac
done
[ "$BROKERS" = 1 ] || [ "$BROKERS" = 3 ] || die "brokers: 1 or 3 (SONIC_STACK_BROKERS or --brokers), got '$BROKERS'"
[ "$SECURE" = 0 ] || [ "$SECURE" = 1 ] || die "secure: 0 or 1 (SONIC_STACK_SECURE or --secure), got '$SECURE'"
# the secured stack: its own state directory (data, certificates, users, pid files), ports and
# process mark; S3Proxy and the lock stay the plaintext stack's
BASE_STATE=$STATE
if [ "$SECURE" = 1 ]; then
  STATE="$BASE_STATE/secure"
  KAFKA_PORT=${SONIC_KAFKA_SECURE_PORT:-9192}
  CONTROLLER_PORT=$((KAFKA_PORT + 1))
  KAFKA_PORTS="$KAFKA_PORT,$((KAFKA_PORT + 2)),$((KAFKA_PORT + 4))"
  CONTROLLER_PORTS="$CONTROLLER_PORT,$((CONTROLLER_PORT + 2)),$((CONTROLLER_PORT + 4))"
  REGISTRY_PORT=${SONIC_REGISTRY_SECURE_PORT:-8181}
  CLUSTER="$STATE/cluster3"
  MARK="-Dsonicflow.stack=$STATE"
  unset KAFKA_BROKERS SCHEMA_REGISTRY_URL
fi
# S3Proxy always belongs to the plaintext stack
base_s3() { (STATE=$BASE_STATE MARK="-Dsonicflow.stack=$BASE_STATE" && "$@"); }
# one `up`/`down`/`clean` at a time: parallel test workers or shells must not start a second broker
# (the services are started with fd 9 closed, so they do not hold the lock)
if [ "$cmd" = up ] || [ "$cmd" = down ] || [ "$cmd" = clean ]; then
  mkdir -p "$BASE_STATE"
  exec 9>"$BASE_STATE/stack.lock"
  flock -w "$TIMEOUT_S" 9 || die "another stack.sh $cmd holds $BASE_STATE/stack.lock for more than ${TIMEOUT_S}s"
fi
case "$cmd" in
  up)
    need_java
    mkdir -p "$STATE"
    if [ "$SECURE" = 1 ]; then secure_credentials; secure_certs; fi
    if [ "$BROKERS" = 3 ]; then up_cluster; else up_kafka; fi
    up_registry
    base_s3 up_s3
    {
      echo "KAFKA_BROKERS=${KAFKA_BROKERS:-$(kafka_bootstrap)}"
      echo "SCHEMA_REGISTRY_URL=${SCHEMA_REGISTRY_URL:-$(registry_url)}"
      if s3_external; then echo "SONIC_S3_ENDPOINT=${SONIC_S3_ENDPOINT%/}"; else echo "SONIC_S3_ENDPOINT=$(s3_url)"; fi
      if [ "$SECURE" = 1 ]; then secure_client_env; fi
    } | if [ "$SECURE" = 1 ]; then
      # also kept for scripts and tests: $STATE/client.env, and admin.properties for the Kafka tools
      (umask 077; tee "$STATE/client.env.tmp"; mv "$STATE/client.env.tmp" "$STATE/client.env"; secure_java_client_props admin >"$STATE/admin.properties")
    else cat; fi
    ;;
  down) down_all ;;
  status)
    rc=0
    if [ -n "${KAFKA_BROKERS:-}" ]; then echo "kafka: external, KAFKA_BROKERS=$KAFKA_BROKERS"
    elif [ "$BROKERS" = 3 ] || ls "$CLUSTER"/kafka-*.pid >/dev/null 2>&1; then
      for i in 1 2 3; do
        status_one "cluster3/kafka-$i" "localhost:$(node_port "$i")" "$(broker_ready "$(node_port "$i")" "$(node_dir "$i")/logs" && echo true || echo false)" "kafka-$i" || rc=1
      done
    else status_one kafka "localhost:$KAFKA_PORT" "$(port_open "$KAFKA_PORT" && echo true || echo false)" || rc=1; fi
    if [ -n "${SCHEMA_REGISTRY_URL:-}" ]; then echo "registry: external, SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL"
    else status_one registry "$(registry_url)" "$(registry_ready && echo true || echo false)" || rc=1; fi
    if s3_external; then echo "s3: external, SONIC_S3_ENDPOINT=$SONIC_S3_ENDPOINT"
    else base_s3 status_one s3 "$(s3_url)" "$(s3_ready && echo true || echo false)" || rc=1; fi
    echo "data and logs: $STATE"
    exit $rc
    ;;
  clean)
    # in this process: a child `stack.sh down` would wait for the lock this one holds
    down_all
    if [ "$SECURE" = 1 ]; then
      # the certificates and users go with the data they were formatted into
      rm -rf "$STATE/kafka" "$STATE/registry" "$CLUSTER" "$STATE/tls" "$STATE"/users.env "$STATE"/client.env "$STATE"/admin.properties
    else
      rm -rf "$STATE/kafka" "$STATE/registry" "$STATE/s3" "$CLUSTER"
    fi
    say "removed data and logs under $STATE"
    ;;
  fetch) need_java; fetch_kafka; fetch_apicurio; fetch_s3proxy ;;
  tool) tool "$@" ;;
  -h|--help|help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (up, down, status, clean, fetch, tool, --help)" ;;
esac
