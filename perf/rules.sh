#!/usr/bin/env bash
# Server CPU per message with five typical validation rules against none (issue 9 item 8, the
# server half; goal: at most 1.15x). One release build of mllpd, SHARDS=1 pinned to CPU
# $SERVER_CPU, ACK_AFTER=receipt (so the disk does not dominate what is compared), mllp-bench
# pinned to CPU $CLIENT_CPU, $CONNS connections closed loop, the built-in 316-byte ADT^A01.
# The two configurations alternate for $ROUNDS rounds (none, rules, none, rules, ...) so drift
# of the machine hits both alike; each server is first checked for correct ACKs (--check: the
# five rules all pass on the load, so every answer must be AA). Prints each run's server CPU
# per message (from /proc/PID/task/*/schedstat over the measured window) and the ratio of the
# medians. Raw runs go to perf/results/tmp/rules-<UTC stamp>/.
# Environment: DURATION (5s), WARMUP (1s), CONNS (64), ROUNDS (3), SERVER_CPU (0),
# CLIENT_CPU (1), PORT (27576), MLLPD_BIN (default: this checkout's release build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-27576}

echo "== build (release)"
cargo build --release -p mllpd -p mllpd-perf --quiet
BIN=$CARGO_TARGET_DIR/release
MLLPD_BIN=${MLLPD_BIN:-$BIN/mllpd}
BENCH=$BIN/mllp-bench
RAW=$ROOT/perf/results/tmp/rules-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RAW"

# The five rules of benches/rules.rs, with the load's sending facility (BENCHFAC) allowed.
cat >"$RAW/none.yaml" <<'YAML'
validation:
  rules: []
YAML
cat >"$RAW/rules.yaml" <<'YAML'
validation:
  rules:
    - name: pid3-required
      expression: 'pid.id != ""'
      message: PID-3 is required
      code: 101
    - name: known-message-types
      expression: 'msh.msg_type in ["ADT", "ORU", "ORM", "SIU"]'
      message: message type not accepted here
      code: 200
    - name: msh4-required
      expression: 'msh.sending_fac != ""'
      message: MSH-4 is required
      code: 101
    - name: known-facilities
      expression: 'msh.sending_fac in ["NORTHGATE", "RIVERSIDE", "EASTFIELD", "BENCHFAC"]'
      message: sending facility not allowed
    - name: inpatients-have-a-bed
      expression: 'pv1.patient_class != "I" || field("PV1-3.3") != ""'
      message: an inpatient needs a bed (PV1-3.3)
YAML

# run NAME ROUND: one server with CONFIG_FILE=$RAW/NAME.yaml, checked, then timed.
run() {
  local name=$1 round=$2 out=$RAW/$1-$2.json
  "$MLLPD_BIN" check-config --config-file "$RAW/$name.yaml" >/dev/null
  env LISTEN_ADDR=127.0.0.1:$PORT SHARDS=1 ACK_AFTER=receipt LOG_LEVEL=info NO_COLOR=1 \
    DATA_DIR="$RAW/data-$name-$round" CONFIG_FILE="$RAW/$name.yaml" \
    taskset -c "$SERVER_CPU" "$MLLPD_BIN" >"$RAW/$name-$round.log" 2>&1 &
  local pid=$!
  if ! taskset -c "$CLIENT_CPU" "$BENCH" -a 127.0.0.1:$PORT --check --json --label "$name" \
      --connect-timeout 30s >"$RAW/$name-$round.check.json"; then
    echo "  $name: WRONG ACKs: $(jq -c '.steps' "$RAW/$name-$round.check.json")"
    kill "$pid"; wait "$pid" || true
    exit 1
  fi
  taskset -c "$CLIENT_CPU" "$BENCH" -a 127.0.0.1:$PORT -c "$CONNS" -d "$DURATION" \
    --warmup "$WARMUP" --server-pid "$pid" --label "$name" --json --no-progress >"$out"
  jq -r '"  \(.label) round '"$round"': \(.msgs_per_s|floor) msgs/s, p99 \(.latency.p99_us) us, server \(.server_cpu_us_per_msg*1000|round/1000) us/msg"' "$out"
  kill "$pid"; wait "$pid" || true
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || break
    sleep 0.1
  done
}

echo "== $CONNS connections, $ROUNDS rounds, $DURATION each"
for round in $(seq "$ROUNDS"); do
  run none "$round"
  run rules "$round"
done

python3 - "$RAW" <<'PY'
import json, statistics, sys, pathlib
raw = pathlib.Path(sys.argv[1])
cpu = {name: [json.loads(p.read_text())["server_cpu_us_per_msg"]
              for p in sorted(raw.glob(f"{name}-[0-9]*.json")) if not p.name.endswith("check.json")]
       for name in ("none", "rules")}
none, rules = statistics.median(cpu["none"]), statistics.median(cpu["rules"])
print(f"== server CPU per message, medians: none {none:.3f} us, five rules {rules:.3f} us, "
      f"ratio {rules / none:.3f} (goal <= 1.15)")
PY
echo "raw runs: $RAW"
