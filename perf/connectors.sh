#!/usr/bin/env bash
# Connector bench (issue 11 item 8): delivery rate per connector type, lag under sustained
# intake, and intake throughput with every connector running vs without, in the same run.
#
#   perf/connectors.sh [DURATION] [CONNECTIONS] [DEPTH]     (defaults: 10s 8 16; release build)
#
# Phase 1: mllpd with no connector, pipelined intake (mllp-bench) for DURATION: the baseline.
# Phase 2: the same intake into a fresh mllpd with every connector type at once (`file` into a
# temp dir, `mllp` into a second mllpd, `http` into a local Python HTTP server), /metrics
# scraped every second for each connector's lag (mllpd_connector_lag_messages / _seconds);
# after the intake stops, the time until each connector has confirmed everything gives its
# delivery rate (delivered / time from the first message to the last confirmation).
# Prints a table; the ratio intake(with)/intake(without) is the goal figure (>= 0.9).
#
# Placement: the shards are pinned (SHARDS of them, from the first CPUs of the affinity mask);
# the delivery threads run on the CPUs no shard uses (the "delivery started" log line prints
# them: cpus=[...]) and float over the whole mask only when every CPU has a shard. The default
# here is SHARDS=1 so that, on a 2-CPU machine, delivery has CPU 1 to itself. The downstreams
# (second mllpd, Python HTTP server) and mllp-bench are not pinned: on a small machine they
# compete with everything, which is what the lead's quiet-machine run is for.
#
# Adding a connector type (postgres, nats): start its downstream in start_downstreams, add a
# line to CONNECTORS below; the table picks it up.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-8}
DEPTH=${3:-16}
SHARDS=${SHARDS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p mllpd -p mllpd-perf --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_mllpd NAME [ENV=VALUE...]: starts mllpd with DATA_DIR $WORK/NAME; sets ADDR and ADMIN.
start_mllpd() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  env LISTEN_ADDR=127.0.0.1:0 ADMIN_ADDR=127.0.0.1:0 LOG_LEVEL=info NO_COLOR=1 \
    DATA_DIR="$WORK/$name/data" "$@" "$BIN/mllpd" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  local pid=$!
  ADDR=; ADMIN=
  for _ in $(seq 200); do
    ADDR=$(grep -o 'listen=[^ ]*' "$WORK/$name.log" | head -1 | cut -d= -f2 | tr -d '"') || true
    ADMIN=$(grep -o 'admin=[^ ]*' "$WORK/$name.log" | head -1 | cut -d= -f2 | tr -d '"') || true
    [ -n "$ADDR" ] && [ -n "$ADMIN" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "mllpd $name exited:"; cat "$WORK/$name.log"; exit 1; }
    sleep 0.1
  done
  echo "mllpd $name did not start"; cat "$WORK/$name.log"; exit 1
}

# intake LABEL: pipelined load into $ADDR; prints msgs/s.
intake() {
  "$BIN/mllp-bench" -a "$ADDR" -c "$CONNS" --mode pipelined --depth "$DEPTH" -d "$DURATION" \
    --warmup 1s --label "$1" --no-progress --json | jq -r '.msgs_per_s'
}

# metric TEXT NAME CONNECTOR: the sum of NAME's samples for CONNECTOR.
metric() {
  printf '%s\n' "$1" | awk -v n="$2" -v c="connector=\"$3\"" \
    'index($0, n"{") == 1 && index($0, c) { s += $NF } END { printf "%g\n", s + 0 }'
}

start_downstreams() {
  start_mllpd downstream SHARDS=1
  MLLP_DOWNSTREAM=$ADDR
  HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 - "$HTTP_PORT" >/dev/null 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  PIDS+=($!)
}

echo "== phase 1: intake without connectors (SHARDS=$SHARDS, $CONNS connections, depth $DEPTH, $DURATION)"
start_mllpd plain SHARDS="$SHARDS"
WITHOUT=$(intake "no connectors")
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
echo "intake without connectors: $WITHOUT msg/s"

start_downstreams
mkdir -p "$WORK/out"
# name type url
CONNECTORS="
archive file file://$WORK/out
lab mllp mllp://$MLLP_DOWNSTREAM
web http http://127.0.0.1:$HTTP_PORT/hl7
"
{
  echo "connectors:"
  while read -r name type url; do
    [ -n "$name" ] && echo "  - {name: $name, type: $type, url: '$url'}"
  done <<<"$CONNECTORS"
} >"$WORK/connectors.yaml"

echo "== phase 2: the same intake with every connector running"
start_mllpd routed SHARDS="$SHARDS" CONFIG_FILE="$WORK/connectors.yaml"
grep -o 'delivery started.*' "$WORK/routed.log" | head -1 || true
grep -o 'mllpd started.*cpus=[^ ]*' "$WORK/routed.log" | grep -o 'cpus=[^ ]*' | sed 's/^/shard /' || true
declare -A MAXLAG MAXLAGS DONE
STARTED=$(date +%s.%N)
intake "all connectors" >"$WORK/with" &
BENCH=$!
sample_lag() {
  local text; text=$(curl -s "http://$ADMIN/metrics")
  while read -r name _ _; do
    [ -n "$name" ] || continue
    local m s; m=$(metric "$text" mllpd_connector_lag_messages "$name"); s=$(metric "$text" mllpd_connector_lag_seconds "$name")
    MAXLAG[$name]=$(python3 -c "print(max(${MAXLAG[$name]:-0}, $m))")
    MAXLAGS[$name]=$(python3 -c "print(round(max(${MAXLAGS[$name]:-0}, $s), 3))")
    if [ "${DONE[$name]:-}" = "" ] && [ "$INTAKE_DONE" = 1 ] && [ "$m" = 0 ]; then DONE[$name]=$(date +%s.%N); fi
  done <<<"$CONNECTORS"
}
INTAKE_DONE=0
while kill -0 "$BENCH" 2>/dev/null; do sample_lag; sleep 1; done
wait "$BENCH"
WITH=$(cat "$WORK/with")
INTAKE_DONE=1
for _ in $(seq 600); do
  sample_lag
  left=0
  while read -r name _ _; do [ -n "$name" ] && [ -z "${DONE[$name]:-}" ] && left=1; done <<<"$CONNECTORS"
  [ "$left" = 0 ] && break
  sleep 0.5
done
TEXT=$(curl -s "http://$ADMIN/metrics")
echo
printf '%-10s %-6s %12s %12s %14s %12s %12s\n' connector type delivered "rate msg/s" "max lag msgs" "max lag s" "drained s"
while read -r name type _; do
  [ -n "$name" ] || continue
  delivered=$(metric "$TEXT" mllpd_connector_delivered_total "$name")
  end=${DONE[$name]:-$(date +%s.%N)}
  python3 -c "
d=$delivered; t=$end-$STARTED
print('%-10s %-6s %12d %12.0f %14g %12g %12.1f' % ('$name', '$type', d, d/t if t>0 else 0, ${MAXLAG[$name]:-0}, ${MAXLAGS[$name]:-0}, t))"
done <<<"$CONNECTORS"
echo
python3 -c "
w=$WITH; wo=$WITHOUT
print('intake without connectors: %.0f msg/s; with all connectors: %.0f msg/s; ratio %.2f (goal >= 0.90)' % (wo, w, w/wo if wo else 0))"
