#!/usr/bin/env bash
# Runs orderflow as one process per role on this machine, against PostgreSQL, RabbitMQ and
# Redis, the way it runs when one machine is not enough. Ctrl-C stops them all.
#
#   scripts/distributed.sh            # builds (release) and starts everything
#
# Engines (override with the environment):
#   ORDERFLOW_STORE  event store   [postgres://postgres@127.0.0.1:5432/test?schema=orderflow]
#   ORDERFLOW_BUS    topic         [amqp://guest:guest@127.0.0.1:5672/%2f?prefix=orderflow]
#   ORDERFLOW_CACHE  read models   [redis://127.0.0.1:6379?prefix=orderflow]
# Ports: the web UI and API on 8080, the other roles' /health, /ready and /metrics on 8081-8086.
set -euo pipefail
cd "$(dirname "$0")/.."

export ORDERFLOW_STORE=${ORDERFLOW_STORE:-postgres://postgres@127.0.0.1:5432/test?schema=orderflow}
export ORDERFLOW_BUS=${ORDERFLOW_BUS:-amqp://guest:guest@127.0.0.1:5672/%2f?prefix=orderflow}
export ORDERFLOW_CACHE=${ORDERFLOW_CACHE:-redis://127.0.0.1:6379?prefix=orderflow}
export ORDERFLOW_DATA=${ORDERFLOW_DATA:-./data/distributed}
logs="$ORDERFLOW_DATA/logs"
mkdir -p "$logs"

cargo build --release --quiet
bin=./target/release/orderflow
$bin migrate

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping ${#pids[@]} processes"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
}
trap stop INT TERM EXIT

start() { # role port [extra args]
  local role=$1 port=$2; shift 2
  $bin serve --role "$role" --listen "127.0.0.1:$port" "$@" >"$logs/$role-$port.log" 2>&1 &
  pids+=($!)
  echo "$role on http://127.0.0.1:$port (log: $logs/$role-$port.log)"
}

start web 8080
start relay 8081
start processor 8082
start processor 8083
start projector 8084
start notifier 8085 --push-log "$logs/pushes.jsonl"
start relay 8086   # a standby: takes over if the first relay dies
echo "open http://127.0.0.1:8080 — Ctrl-C stops everything"
wait
