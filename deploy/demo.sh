#!/usr/bin/env bash
# The demo (`make demo`): local broker, a trained model, the worker, a replay, and predictions, category
# demand and audience entries arriving.
# Ctrl-C stops everything this script started. Environment: CLICKSTREAM_DATA_DIR (real samples), DEMO_SPEED.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STATE=.state/demo
MODEL=${CLICKSTREAM_MODEL_DIR:-artifacts/model}
SPEED=${DEMO_SPEED:-3600x}
mkdir -p "$STATE"
export CLICKSTREAM_MODEL_DIR=$MODEL

started_kafka=0
deploy/kafka/kafka.sh status >/dev/null 2>&1 || started_kafka=1
deploy/kafka/kafka.sh up
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping what it started"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $started_kafka == 1 ]]; then deploy/kafka/kafka.sh down; fi
}
trap cleanup INT TERM EXIT

sample=${CLICKSTREAM_DATA_DIR:-../shared/data}/taobao/UserBehavior-sample.csv
if [[ -f $sample ]]; then
  log=$sample
  echo "demo: using the real Taobao sample $log"
else
  log=$STATE/synthetic.csv
  echo "demo: no real sample found (set CLICKSTREAM_DATA_DIR); generating synthetic shoppers in $log"
  [[ -f $log ]] || $BIN/python -m core.synthetic "$log" --users 2000 --events 150000
fi
if ! $BIN/python -c "import sys; from model.artifact import read_manifest; read_manifest(sys.argv[1])" "$MODEL" \
    2>/dev/null; then  # missing, or written by an older version of the code
  echo "demo: training a model into $MODEL (a few minutes on 2 cores)"
  $BIN/clickstream train "$log" --format taobao --out "$MODEL"
fi
$BIN/clickstream topics
echo "demo: starting the worker (log: $STATE/worker.log; metrics: http://127.0.0.1:6066/metrics)"
$BIN/faust -A streams.app worker -l info >"$STATE/worker.log" 2>&1 &
pids+=($!)
worker=$!
worker_gone() {  # one line: the worker's exit code and the last error in its log
  local code=0
  wait "$worker" 2>/dev/null || code=$?
  local why
  why=$(grep -E '^error: |\[CRITICAL\]|\[ERROR\]|Error: ' "$STATE/worker.log" | tail -n 1 | cut -c1-300)
  echo "demo: the worker stopped (exit $code): ${why:-no error in its log} (log: $STATE/worker.log)" >&2
  exit 1
}
until grep -q "shapes warmed" "$STATE/worker.log"; do
  kill -0 "$worker" 2>/dev/null || worker_gone
  sleep 1
done
# what arrives, each in its own file; the loop below shows the newest of each (the commands' output)
$BIN/clickstream subscribe --table >"$STATE/predictions.txt" 2>&1 &
pids+=($!)
$BIN/clickstream demand --size "${DEMO_DEMAND_SIZE:-3600}" --top 8 >"$STATE/demand.txt" 2>&1 &
pids+=($!)
$BIN/clickstream audience >"$STATE/audiences.jsonl" 2>&1 &
pids+=($!)
sleep 2  # the consumers start at the end of their topics: let them join before the replay
echo "demo: replaying $log at $SPEED (log: $STATE/replay.log); Ctrl-C to stop"
$BIN/clickstream replay "$log" --format taobao --speed "$SPEED" --id-prefix "demo-$(date +%s)" -q \
  >"$STATE/replay.log" 2>&1 &
pids+=($!)
newest() {  # the last table a command printed: from its last line matching $2
  tac "$1" 2>/dev/null | sed "/$2/q" | tac
}
while true; do
  kill -0 "$worker" 2>/dev/null || worker_gone
  view=$(
    echo "== predictions: newest per user (clickstream subscribe --table)"
    newest "$STATE/predictions.txt" "predictions, .* users" | head -12
    echo
    echo "== category demand, newest closed window summed over partitions (clickstream demand)"
    newest "$STATE/demand.txt" "demand records" | head -11
    echo
    echo "== audiences: $(wc -l <"$STATE/audiences.jsonl") entries; newest (clickstream audience)"
    tail -n 4 "$STATE/audiences.jsonl" | cut -c1-150
  )
  if [[ -t 1 ]]; then printf '\033[H\033[2J'; fi
  echo "$view"
  sleep 2
done
