#!/usr/bin/env bash
# Interleaved comparison of the reference receivers (floors): which socket loop spends the
# least CPU per message.
#
# For every point (closed loop at each of $CONNS connections, then open loop at $OPEN_RATE
# msgs/s with $OPEN_CONNS connections) and every round, each floor runs once in turn
# (A B C D A B C D ...), so slow drifts of this shared machine hit every floor alike. Each run
# starts the floor fresh, pinned to CPU $SERVER_CPU (`--listen 127.0.0.1:0`, port read from its
# "listening on" line), with mllp-bench on CPU $CLIENT_CPU measuring the server's CPU from
# schedstat. Prints a markdown table of medians over the rounds: server CPU µs per message,
# msgs/s, p50 latency, and the CPU ratio to floor-tokio.
#
# Environment: FLOORS ("floor-tokio floor-glommio floor-uring floor-uring2"; a floor may carry
# its own flags after colons, e.g. "floor-uring2:--recv:single"), ROUNDS (3), DURATION (5s),
# WARMUP (1s), CONNS ("1 16 64 256"; "" for none), OPEN_RATE (20000), OPEN_CONNS (64; "" for none),
# SERVER_CPU (0), CLIENT_CPU (1), NO_BUILD=1. Raw JSON stays in perf/results/tmp/floors-<stamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FLOORS=${FLOORS:-"floor-tokio floor-glommio floor-uring floor-uring2"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS-"1 16 64 256"}
OPEN_RATE=${OPEN_RATE:-20000}
OPEN_CONNS=${OPEN_CONNS-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p mllpd-perf --quiet
fi
BIN=$CARGO_TARGET_DIR/release
RAW=$ROOT/perf/results/tmp/floors-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RAW"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); raw runs in $RAW" >&2

# Points: "closed:N" and "open:N".
POINTS=()
for c in $CONNS; do POINTS+=("closed:$c"); done
for c in $OPEN_CONNS; do POINTS+=("open:$c"); done

# run_one SPEC POINT ROUND: one fresh server, one timed run into $RAW.
run_one() {
  local spec=$1 point=$2 round=$3
  local name=${spec%%:*} flags=() mode=${point%%:*} conns=${point#*:}
  [ "$spec" != "$name" ] && IFS=: read -r -a flags <<<"${spec#*:}"
  local key=${spec//[: ]/_}__${mode}-${conns}__r$round
  local log=$RAW/$key.log
  taskset -c "$SERVER_CPU" "$BIN/$name" --listen 127.0.0.1:0 --cpu "$SERVER_CPU" "${flags[@]}" >"$log" 2>&1 &
  local pid=$! port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log" 2>/dev/null || true)
    [ -n "$port" ] && break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "  $spec did not start: $(cat "$log")" >&2
    kill "$pid" 2>/dev/null || true
    return
  fi
  local extra=()
  [ "$mode" = open ] && extra=(--mode open --rate "$OPEN_RATE")
  "$BIN/mllp-bench" -a "127.0.0.1:$port" -c "$conns" -d "$DURATION" --warmup "$WARMUP" \
    --cpu "$CLIENT_CPU" --server-pid "$pid" --json --no-progress --label "$spec" "${extra[@]}" \
    >"$RAW/$key.json" 2>"$RAW/$key.err" || echo "  $spec $point round $round: FAILED" >&2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  printf '  %-28s %-10s r%s %s\n' "$spec" "$point" "$round" \
    "$(jq -r '"\(.msgs_per_s|floor) msgs/s, \(.server_cpu_us_per_msg*100|round/100) us/msg, mismatches \(.mismatches)"' "$RAW/$key.json" 2>/dev/null)" >&2
}

for point in "${POINTS[@]}"; do
  for round in $(seq "$ROUNDS"); do
    for spec in $FLOORS; do
      run_one "$spec" "$point" "$round"
    done
  done
done

python3 - "$RAW" "$FLOORS" "$OPEN_RATE" "${POINTS[@]}" <<'EOF'
import json, statistics, sys, glob, os
raw, floors, open_rate, points = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4:]
def runs(spec, point):
    mode, conns = point.split(":")
    key = spec.replace(":", "_").replace(" ", "_")
    out = []
    for path in sorted(glob.glob(f"{raw}/{key}__{mode}-{conns}__r*.json")):
        try:
            r = json.load(open(path))
        except (OSError, ValueError):
            continue
        if r.get("mismatches") or r.get("errors") or r.get("server_cpu_us_per_msg") is None:
            continue
        out.append(r)
    return out
med = {}
for spec in floors:
    for point in points:
        rs = runs(spec, point)
        if rs:
            med[spec, point] = (
                statistics.median(r["server_cpu_us_per_msg"] for r in rs),
                statistics.median(r["msgs_per_s"] for r in rs),
                statistics.median(r["latency"]["p50_us"] for r in rs),
                len(rs),
            )
base = next((f for f in floors if f.split(":")[0] == "floor-tokio"), None)
label = lambda p: f"{p.split(':')[1]} conns" + (f" open {open_rate}/s" if p.startswith("open") else "")
print("Server CPU µs/msg (median over rounds), msgs/s, p50 µs, ratio of CPU/msg to floor-tokio:\n")
print("| floor | " + " | ".join(label(p) for p in points) + " |")
print("|---|" + "---:|" * len(points))
for spec in floors:
    cells = []
    for p in points:
        if (spec, p) not in med:
            cells.append("—")
            continue
        cpu, rate, p50, n = med[spec, p]
        ratio = ""
        if base and (base, p) in med:
            ratio = f" ×{cpu / med[base, p][0]:.2f}"
        cells.append(f"{cpu:.2f}{ratio}<br>{rate:,.0f}/s p50 {p50:.0f}")
    print(f"| {spec.replace(':', ' ')} | " + " | ".join(cells) + " |")
EOF
