#!/usr/bin/env bash
# TLS 1.3 against plaintext (issue 10 item 7; goals: throughput >= 0.7x plaintext, server CPU
# per message <= 1.5x), and full TLS handshakes per second per shard (mllp-bench --mode
# reconnect: $HS_CONNS connections each looping connect, full handshake, one message, close). One release build of
# mllpd, SHARDS=1 pinned to CPU $SERVER_CPU, ACK_AFTER=receipt (so the disk does not dominate
# what is compared), mllp-bench pinned to CPU $CLIENT_CPU, closed loop, the built-in ADT^A01.
# Plaintext and TLS alternate for $ROUNDS rounds at each connection count in $CONNS, so drift of
# the machine hits both alike. TLS runs use TLS_MIN_VERSION=1.3 and mutual TLS (a client
# certificate), each connection's handshake done before the window opens. Handshakes: mllp-bench
# in reconnect mode against the same single shard (and plaintext reconnects for comparison),
# cross-checked by `openssl s_time -new` (one connection at a time, so latency-bound). Certificates are made here with openssl (EC P-256). Prints every run, the ratios
# of the medians, and the handshake rate. Raw runs go to perf/results/tmp/tls-<UTC stamp>/.
# Environment: DURATION (5s), WARMUP (1s), CONNS ("16 64"), ROUNDS (3), HS_CONNS (16), SERVER_CPU (0),
# CLIENT_CPU (1), PORT (27577), MLLPD_BIN (default: this checkout's release build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-"16 64"}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-27577}
HS_CONNS=${HS_CONNS:-16}

echo "== build (release)"
cargo build --release -p mllpd -p mllpd-perf --quiet
BIN=$CARGO_TARGET_DIR/release
MLLPD_BIN=${MLLPD_BIN:-$BIN/mllpd}
BENCH=$BIN/mllp-bench
RAW=$ROOT/perf/results/tmp/tls-$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$RAW"

echo "== certificates (openssl, EC P-256)"
(
  cd "$RAW"
  ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  ec ca.key
  openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.pem 2>/dev/null
  for who in server client; do
    ec $who.key
    openssl req -new -key $who.key -subj /CN=bench-$who -out $who.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=%s\n' \
      "$([ $who = server ] && echo serverAuth || echo clientAuth)" >$who.ext
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile $who.ext -out $who.pem 2>/dev/null
  done
)
TLS_ENV=(TLS_CERT_FILE="$RAW/server.pem" TLS_KEY_FILE="$RAW/server.key"
  TLS_CLIENT_CA="$RAW/ca.pem" TLS_MIN_VERSION=1.3)
TLS_BENCH=(--tls-ca "$RAW/ca.pem" --tls-cert "$RAW/client.pem" --tls-key "$RAW/client.key"
  --tls-server-name localhost)

# start NAME ROUND: a single-shard server, plaintext or TLS; sets $pid.
start() {
  local name=$1 round=$2 extra=()
  [ "$name" = tls ] && extra=("${TLS_ENV[@]}")
  env LISTEN_ADDR=127.0.0.1:$PORT ADMIN_ADDR=off SHARDS=1 ACK_AFTER=receipt LOG_LEVEL=warn NO_COLOR=1 \
    DATA_DIR="$RAW/data-$name-$round" "${extra[@]}" \
    taskset -c "$SERVER_CPU" "$MLLPD_BIN" >"$RAW/$name-$round.log" 2>&1 &
  pid=$!
  # Wait until it listens: reconnect mode counts a refused connect as an error.
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.1
  done
}

stop() {
  kill "$pid"; wait "$pid" || true
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || break
    sleep 0.1
  done
}

# run NAME CONNS ROUND: one timed closed-loop run.
run() {
  local name=$1 conns=$2 round=$3 out=$RAW/$1-$2-$3.json extra=()
  [ "$name" = tls ] && extra=("${TLS_BENCH[@]}")
  start "$name" "$round"
  taskset -c "$CLIENT_CPU" "$BENCH" -a 127.0.0.1:$PORT -c "$conns" -d "$DURATION" \
    --warmup "$WARMUP" --server-pid "$pid" --label "$name" --json --no-progress \
    --connect-timeout 30s "${extra[@]}" >"$out"
  jq -r '"  \(.label) \('"$conns"') conns round '"$round"': \(.msgs_per_s|floor) msgs/s, p99 \(.latency.p99_us) us, server \(.server_cpu_us_per_msg*1000|round/1000) us/msg, errors \(.errors // 0)"' "$out"
  stop
}

for conns in $CONNS; do
  echo "== $conns connections, $ROUNDS rounds, $DURATION each"
  for round in $(seq "$ROUNDS"); do
    run plain "$conns" "$round"
    run tls "$conns" "$round"
  done
done

echo "== full handshakes per second, one shard ($HS_CONNS connections, mllp-bench --mode reconnect)"
# Each connection in a loop: connect, full handshake (TLS 1.3, mTLS, no resumption), one
# message, its ACK, close_notify. Plaintext the same way, for what the handshake adds.
for name in plain tls; do
  extra=()
  [ "$name" = tls ] && extra=("${TLS_BENCH[@]}")
  start "$name" hs
  out=$RAW/$name-reconnect.json
  taskset -c "$CLIENT_CPU" "$BENCH" -a 127.0.0.1:$PORT -c "$HS_CONNS" -d "$DURATION" \
    --warmup "$WARMUP" --server-pid "$pid" --label "$name-reconnect" --json --no-progress \
    --connect-timeout 30s --mode reconnect "${extra[@]}" >"$out"
  jq -r '"  \(.label): \(.msgs_per_s|floor) connections/s (one shard, one message each), p99 \(.latency.p99_us) us, server \(.server_cpu_us_per_msg|floor) us per connection, errors \(.errors // 0)"' "$out"
  stop
done

echo "== cross-check: openssl s_time -new ($DURATION, one connection at a time: latency-bound)"
start tls st
seconds=$(python3 -c "import sys,re; t=sys.argv[1]; m=re.fullmatch(r'(\d+)(ms|s|m)?',t); v=int(m[1]); print(max(1, {'ms':v//1000,'s':v,'m':v*60,None:v}[m[2]]))" "$DURATION")
sleep 1
taskset -c "$CLIENT_CPU" openssl s_time -connect 127.0.0.1:$PORT -new -time "$seconds" \
  -CAfile "$RAW/ca.pem" -cert "$RAW/client.pem" -key "$RAW/client.key" \
  >"$RAW/handshakes.txt" 2>&1 || true
# s_time's wall-clock line counts whole seconds: the rate is connections / real seconds.
real=$(grep -oE '^[0-9]+ connections in [0-9]+ real seconds' "$RAW/handshakes.txt" | head -1 || true)
[ -n "$real" ] && awk '{printf "  %.0f full handshakes/s (openssl s_time, wall clock)\n", $1/$4}' <<<"$real"
stop

python3 - "$RAW" "$CONNS" <<'PY'
import json, statistics, sys, pathlib
raw, conns = pathlib.Path(sys.argv[1]), sys.argv[2].split()
for c in conns:
    runs = {n: [json.loads(p.read_text()) for p in sorted(raw.glob(f"{n}-{c}-[0-9]*.json"))]
            for n in ("plain", "tls")}
    med = lambda n, k: statistics.median(r[k] for r in runs[n])
    tput = med("tls", "msgs_per_s") / med("plain", "msgs_per_s")
    cpu = med("tls", "server_cpu_us_per_msg") / med("plain", "server_cpu_us_per_msg")
    print(f"== {c} connections: TLS 1.3 / plaintext throughput {tput:.2f} (goal >= 0.7), "
          f"server CPU per message {cpu:.2f}x (goal <= 1.5)")
PY
echo "raw runs: $RAW"
