#!/usr/bin/env bash
# Connector bench (issue 11 item 8): delivery rate per connector type, lag under sustained
# intake, and intake throughput with every connector running vs without, in the same run.
#
#   perf/connectors.sh [DURATION] [CONNECTIONS] [DEPTH]     (defaults: 10s 8 16; release build)
#   INTAKE=open RATE=500 (default): both phases offer RATE msgs/s open loop (mllp-bench --mode
#     open), a sustained intake the connectors can follow: the run drains in reasonable time and
#     the lag columns mean "lag under RATE msgs/s"; the ratio says whether intake kept RATE.
#   INTAKE=pipelined: CONNECTIONS x DEPTH in flight as fast as mllpd answers (`2s 1 1` is the
#     intake-ratio figure: one closed-loop sender, every ACK after an fdatasync).
#   CONNECTORS_ONLY="file mllp" limits phase 2 to those types (default: every type whose
#     downstream can be started here; postgres and nats are skipped with a note when missing).
#
# Phase 1: mllpd with no connector, the intake (mllp-bench) for DURATION: the baseline.
# Phase 2: the same intake into a fresh mllpd with every connector type at once (`file` into a
# temp dir, `mllp` into a second mllpd, `http` into a local Python HTTP server, `postgres` into
# a cluster made with initdb in a temp dir, `nats` into `nats-server -js`), /metrics
# scraped every second for each connector's lag (mllpd_connector_lag_messages / _seconds);
# after the intake stops, the time until each connector has confirmed everything gives its
# delivery rate (delivered / time from the first message to the last confirmation).
# Prints a table; the ratio intake(with)/intake(without) is the goal figure (>= 0.9).
#
# The downstreams stand in for other machines, so they do not sync to this machine's disk (the
# one the measured journal's fdatasync uses): the mllp downstream runs ACK_AFTER=receipt,
# PostgreSQL fsync=off, nats-server JetStream's default (no sync per message). With
# DOWNSTREAM_SYNC=1 they do (mllp downstream ACK_AFTER=journal, PostgreSQL fsync=on): what a
# one-disk deployment with everything local would see.
#
# Placement: the shards are pinned (SHARDS of them, from the first CPUs of the affinity mask);
# the delivery threads run on the CPUs no shard uses (the "delivery started" log line prints
# them: cpus=[...]) and float over the whole mask only when every CPU has a shard. The default
# here is SHARDS=1 so that, on a 2-CPU machine, delivery has CPU 1. The downstreams run there
# too, under `nice -n $DOWNSTREAM_NICE` (default 19): they stand for other machines, and on
# this one they must not take the CPU of the load generator (mllp-bench, not pinned), whose
# scheduling delay would otherwise be counted as mllpd's intake falling. For the same reason,
# without DOWNSTREAM_SYNC the mllp downstream's journal is on a tmpfs (/dev/shm), not on the
# disk the measured journal flushes to. mllpd's own work — the delivery threads, the journal
# reads, the file connector's writes and fsyncs on this disk — competes as it would in
# production.
#
# Adding a connector type (postgres, nats): start its downstream in start_downstreams, add a
# line to CONNECTORS below; the table picks it up.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-8}
DEPTH=${3:-16}
SHARDS=${SHARDS:-1}
INTAKE=${INTAKE:-open}
RATE=${RATE:-500}
DOWNSTREAM_SYNC=${DOWNSTREAM_SYNC:-0}
CONNECTORS_ONLY=${CONNECTORS_ONLY:-file mllp http postgres nats}
# The downstreams run on the CPUs the measured shards do not use (the shards take the first
# SHARDS CPUs of the mask): the mllp downstream is an mllpd whose own shard would otherwise pin
# itself to CPU 0, beside the measured one. With every CPU taken by a shard they float.
NCPU=$(nproc)
OFF_SHARDS=""
[ "$SHARDS" -lt "$NCPU" ] && OFF_SHARDS="$SHARDS-$((NCPU - 1))"
DOWNSTREAM_NICE=${DOWNSTREAM_NICE:-19}
OFF=(nice -n "$DOWNSTREAM_NICE")
[ -n "$OFF_SHARDS" ] && OFF+=(taskset -c "$OFF_SHARDS")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p mllpd -p mllpd-perf --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d)
SHM=$(mktemp -d /dev/shm/mllpd-connectors.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT

# start_mllpd NAME [ENV=VALUE...]: starts mllpd with DATA_DIR $WORK/NAME; sets ADDR and ADMIN.
# PLACE=off runs it on the CPUs no measured shard uses (the downstream).
start_mllpd() {
  local name=$1; shift
  local place=()
  [ "${PLACE:-}" = off ] && place=("${OFF[@]}")
  mkdir -p "$WORK/$name"
  local data="$WORK/$name/data"
  [ -n "${DATA_ROOT:-}" ] && data="$DATA_ROOT/$name"
  env LISTEN_ADDR=127.0.0.1:0 ADMIN_ADDR=127.0.0.1:0 LOG_LEVEL=info NO_COLOR=1 \
    DATA_DIR="$data" "$@" "${place[@]}" "$BIN/mllpd" >"$WORK/$name.log" 2>&1 &
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

# intake LABEL: the load into $ADDR (INTAKE: open at RATE, or pipelined); prints msgs/s.
intake() {
  local mode=(--mode pipelined --depth "$DEPTH")
  [ "$INTAKE" = open ] && mode=(--mode open --rate "$RATE")
  "$BIN/mllp-bench" -a "$ADDR" -c "$CONNS" "${mode[@]}" -d "$DURATION" \
    --warmup 1s --label "$1" --no-progress --json | jq -r '.msgs_per_s'
}

# wanted TYPE: whether CONNECTORS_ONLY lists TYPE.
wanted() { [[ " $CONNECTORS_ONLY " == *" $1 "* ]]; }

# free_port: a TCP port free now on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (30 s at most).
wait_port() {
  for _ in $(seq 300); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# pg_program NAME: NAME on PATH, or the newest in Debian's /usr/lib/postgresql/*/bin.
pg_program() {
  command -v "$1" 2>/dev/null && return 0
  ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}

# start_postgres: a cluster in $WORK/pg (trust on loopback), as the tests make one; sets PG_URL.
start_postgres() {
  local initdb postgres owner=()
  initdb=$(pg_program initdb); postgres=$(pg_program postgres)
  if [ -z "$initdb" ] || [ -z "$postgres" ]; then
    echo "postgres: initdb/postgres not found (apt-get install postgresql): skipped"; return 1
  fi
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" = 0 ]; then
    local user=postgres; id postgres >/dev/null 2>&1 || user=nobody
    chown "$user" "$WORK/pg"; chmod 755 "$WORK"
    owner=(setpriv "--reuid=$user" "--regid=$user" --init-groups --)
  fi
  (cd "$WORK/pg" && "${owner[@]}" "$initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 \
    --no-sync >"$WORK/pg-initdb.log" 2>&1) || { echo "postgres: initdb failed: skipped"; return 1; }
  local port fsync=off; port=$(free_port)
  [ "$DOWNSTREAM_SYNC" = 1 ] && fsync=on
  (cd "$WORK/pg" && exec "${OFF[@]}" "${owner[@]}" "$postgres" -D "$WORK/pg/data" -p "$port" -k "$WORK/pg" \
    -c listen_addresses=127.0.0.1 -c fsync=$fsync >"$WORK/pg.log" 2>&1) &
  PIDS+=($!)
  wait_port "$port" || { echo "postgres did not start: skipped"; return 1; }
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# start_nats: nats-server with JetStream in $WORK/nats; sets NATS_URL.
start_nats() {
  if ! command -v nats-server >/dev/null; then
    echo "nats: nats-server not found (apt-get install nats-server): skipped"; return 1
  fi
  local port; port=$(free_port)
  mkdir -p "$WORK/nats"
  "${OFF[@]}" nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$port" >"$WORK/nats.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || { echo "nats-server did not start: skipped"; return 1; }
  NATS_URL="nats://127.0.0.1:$port"
}

# metric TEXT NAME CONNECTOR: the sum of NAME's samples for CONNECTOR.
metric() {
  printf '%s\n' "$1" | awk -v n="$2" -v c="connector=\"$3\"" \
    'index($0, n"{") == 1 && index($0, c) { s += $NF } END { printf "%g\n", s + 0 }'
}

start_downstreams() {
  local ack_after=receipt
  local root=$SHM
  [ "$DOWNSTREAM_SYNC" = 1 ] && ack_after=journal && root=
  DATA_ROOT=$root PLACE=off start_mllpd downstream SHARDS=1 ACK_AFTER=$ack_after
  MLLP_DOWNSTREAM=$ADDR
  HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${OFF[@]}" python3 - "$HTTP_PORT" >/dev/null 2>&1 <<'PY' &
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

LOAD="$CONNS connections, depth $DEPTH"
[ "$INTAKE" = open ] && LOAD="open loop at $RATE msgs/s over $CONNS connections"
echo "== phase 1: intake without connectors (SHARDS=$SHARDS, $LOAD, $DURATION)"
start_mllpd plain SHARDS="$SHARDS"
WITHOUT=$(intake "no connectors")
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
echo "intake without connectors: $WITHOUT msg/s"

start_downstreams
mkdir -p "$WORK/out"
# name type url [extra YAML keys]
CONNECTORS=""
wanted file && CONNECTORS+="archive file file://$WORK/out"$'\n'
wanted mllp && CONNECTORS+="lab mllp mllp://$MLLP_DOWNSTREAM"$'\n'
wanted http && CONNECTORS+="web http http://127.0.0.1:$HTTP_PORT/hl7"$'\n'
if wanted postgres && start_postgres; then
  CONNECTORS+="pg postgres $PG_URL create_table: true"$'\n'
fi
if wanted nats && start_nats; then
  CONNECTORS+="bus nats $NATS_URL subject: 'hl7.{msh.msg_type}'"$'\n'
fi
{
  echo "connectors:"
  while read -r name type url extra; do
    [ -n "$name" ] && echo "  - {name: $name, type: $type, url: '$url'${extra:+, $extra}}"
  done <<<"$CONNECTORS"
} >"$WORK/connectors.yaml"
cat "$WORK/connectors.yaml"

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
printf '%-10s %-8s %12s %12s %14s %12s %12s\n' connector type delivered "rate msg/s" "max lag msgs" "max lag s" "drained s"
while read -r name type _; do
  [ -n "$name" ] || continue
  delivered=$(metric "$TEXT" mllpd_connector_delivered_total "$name")
  end=${DONE[$name]:-$(date +%s.%N)}
  python3 -c "
d=$delivered; t=$end-$STARTED
print('%-10s %-8s %12d %12.0f %14g %12g %12.1f' % ('$name', '$type', d, d/t if t>0 else 0, ${MAXLAG[$name]:-0}, ${MAXLAGS[$name]:-0}, t))"
done <<<"$CONNECTORS"
echo
python3 -c "
w=$WITH; wo=$WITHOUT
print('intake without connectors: %.0f msg/s; with all connectors: %.0f msg/s; ratio %.2f (goal >= 0.90)' % (wo, w, w/wo if wo else 0))"
