#!/usr/bin/env bash
# CI smoke of the bench harness against a fresh mllpd (issue 5 item 7): about 5 s of load.
# Asserts the ACKs, not the speed: mllp-bench --check must pass, then a closed-loop run and a
# pipelined run must get more than zero ACKs and zero mismatches / errors. Exits non-zero
# otherwise. Usage: perf/smoke.sh   (builds release; CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p mllpd -p mllpd-perf --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d)
LISTEN_ADDR=127.0.0.1:0 SHARDS=1 LOG_LEVEL=info NO_COLOR=1 DATA_DIR=$WORK/data \
  "$BIN/mllpd" >"$WORK/mllpd.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

ADDR=
for _ in $(seq 100); do
  ADDR=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/mllpd.log" | grep -o 'listen=[^ ]*' | head -1 | cut -d= -f2 | tr -d '"') || true
  [ -n "$ADDR" ] && break
  kill -0 "$PID" 2>/dev/null || { echo "smoke: mllpd exited:"; cat "$WORK/mllpd.log"; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "smoke: mllpd printed no listen address"; cat "$WORK/mllpd.log"; exit 1; }

echo "smoke: mllpd on $ADDR"
"$BIN/mllp-bench" -a "$ADDR" --check --label mllpd
"$BIN/mllp-bench" -a "$ADDR" -c 16 -d 2s --warmup 500ms --server-pid "$PID" --label "mllpd closed" --no-progress
"$BIN/mllp-bench" -a "$ADDR" -c 4 --mode pipelined --depth 16 -d 1s --warmup 200ms --label "mllpd pipelined" --no-progress
"$BIN/mllp-bench" -a "$ADDR" -c 4 --mode open --rate 2000 -d 1s --warmup 200ms --label "mllpd open 2000/s" --no-progress
echo "smoke: passed"
