#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) from Maven Central artifacts.
#
#   deploy/kafka/kafka.sh up       start (a no-op when already running), wait until it answers
#   deploy/kafka/kafka.sh down     stop the process this script started, wait until the port is free
#   deploy/kafka/kafka.sh status   print whether it runs and where it listens
#   deploy/kafka/kafka.sh log      print the tail of the broker log
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_STATE_DIR (<repo>/.state/kafka),
# KAFKA_HEAP_OPTS (-Xmx1g -Xms256m), KAFKA_START_TIMEOUT_S (90); KAFKA_SASL_PORT adds a SASL_PLAINTEXT listener
# with SCRAM-SHA-256 for KAFKA_SASL_USER / KAFKA_SASL_PASSWORD (alice / alice-secret) on a new state folder;
# KAFKA_SSL_PORT adds an SSL listener that requires client certificates (mutual TLS), from PEM files in
# KAFKA_SSL_DIR: broker.pem (certificate chain, then its unencrypted PKCS#8 key) and ca.pem (trusted for clients).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
state=${KAFKA_STATE_DIR:-$repo/.state/kafka}
timeout_s=${KAFKA_START_TIMEOUT_S:-90}
pid_file=$state/broker.pid
log_dir=$state/logs
data_dir=$state/data
cp_file=$state/classpath.txt

say() { echo "kafka: $*"; }
die() { echo "kafka: error: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  [[ -f $pid_file ]] || return 1
  local pid
  pid=$(<"$pid_file")
  kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid must not be mistaken for our broker.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka.Kafka' || return 1
  echo "$pid"
}

classpath() {
  if [[ ! -s $cp_file || $here/pom.xml -nt $cp_file ]]; then
    command -v mvn >/dev/null || die "Maven (mvn) is required to fetch Kafka; install it or use deploy/docker-compose.yml"
    say "resolving Kafka jars with Maven (first run only)" >&2
    mvn -q -B -f "$here/pom.xml" dependency:build-classpath -Dmdep.outputFile="$cp_file" >"$state/maven.log" 2>&1 \
      || { cat "$state/maven.log" >&2; die "Maven could not resolve the Kafka artifacts (log above)"; }
  fi
  cat "$cp_file"
}

up() {
  mkdir -p "$state" "$log_dir" "$data_dir"
  local pid
  if pid=$(running_pid); then
    say "already running (pid $pid) on 127.0.0.1:$port"
    return 0
  fi
  command -v java >/dev/null || die "Java 17+ is required to run Kafka 4.x"
  port_open "$port" && die "127.0.0.1:$port is already taken by another process; set KAFKA_PORT"
  local cp
  cp=$(classpath)
  sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@DATA_DIR@|$data_dir|g" \
    "$here/server.properties.in" >"$state/server.properties"
  local format_extra=()
  if [[ -n ${KAFKA_SASL_PORT:-} ]]; then
    # an extra SASL_PLAINTEXT listener with SCRAM-SHA-256 (tests of authentication errors); later keys win
    local sasl=SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
    {
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,$sasl"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port,$sasl"
      echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
      echo "sasl.enabled.mechanisms=SCRAM-SHA-256"
      echo "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    } >>"$state/server.properties"
    format_extra=(--add-scram "SCRAM-SHA-256=[name=${KAFKA_SASL_USER:-alice},password=${KAFKA_SASL_PASSWORD:-alice-secret}]")
  fi
  if [[ -n ${KAFKA_SSL_PORT:-} ]]; then
    # an extra SSL listener with required client certificates (tests of mutual TLS); later keys win
    [[ -f ${KAFKA_SSL_DIR:-}/broker.pem && -f ${KAFKA_SSL_DIR:-}/ca.pem ]] \
      || die "KAFKA_SSL_PORT needs KAFKA_SSL_DIR with broker.pem and ca.pem"
    local ssl=SSL://127.0.0.1:$KAFKA_SSL_PORT
    {
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,$ssl"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port,$ssl"
      echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL"
      echo "listener.name.ssl.ssl.keystore.type=PEM"
      echo "listener.name.ssl.ssl.keystore.location=$KAFKA_SSL_DIR/broker.pem"
      echo "listener.name.ssl.ssl.truststore.type=PEM"
      echo "listener.name.ssl.ssl.truststore.location=$KAFKA_SSL_DIR/ca.pem"
      echo "listener.name.ssl.ssl.client.auth=required"
    } >>"$state/server.properties"
  fi
  local java_opts=(-cp "$cp" "-Dlog4j2.configurationFile=$here/log4j2.properties" "-Dkafka.logs.dir=$log_dir")
  if [[ ! -f $data_dir/meta.properties ]]; then
    local cluster_id
    cluster_id=$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid)
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" \
      ${format_extra[@]+"${format_extra[@]}"} \
      >"$log_dir/format.log" 2>&1 || { cat "$log_dir/format.log" >&2; die "formatting the storage failed"; }
  fi
  # shellcheck disable=SC2086
  nohup java ${KAFKA_HEAP_OPTS:--Xmx1g -Xms256m} -XX:+UseG1GC -Djava.awt.headless=true "${java_opts[@]}" \
    kafka.Kafka "$state/server.properties" >"$log_dir/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pid_file"
  local deadline=$((SECONDS + timeout_s))
  until port_open "$port" && grep -q 'Kafka Server started' "$log_dir/server.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$log_dir/stdout.log" "$log_dir/server.log" >&2 2>/dev/null || true
      rm -f "$pid_file"
      die "the broker exited during start-up (log above)"
    fi
    if ((SECONDS > deadline)); then
      tail -n 40 "$log_dir/server.log" >&2 2>/dev/null || true
      die "the broker did not answer within ${timeout_s}s (log above; still running as pid $pid)"
    fi
    sleep 0.5
  done
  say "started (pid $pid), listening on 127.0.0.1:$port; data and logs in $state"
}

down() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pid_file"
    say "not running"
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      say "no clean shutdown after 60s, killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.3
  done
  while port_open "$port"; do sleep 0.2; done
  rm -f "$pid_file"
  say "stopped (pid $pid); port $port is free"
}

status() {
  local pid
  if pid=$(running_pid); then
    say "running (pid $pid) on 127.0.0.1:$port"
  else
    say "not running"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  log) tail -n "${2:-60}" "$log_dir/server.log" ;;
  *) echo "usage: $0 up|down|status|log [lines]" >&2; exit 2 ;;
esac
