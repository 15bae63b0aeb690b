#!/usr/bin/env bash
# Compare mllpd against the reference receivers (the floor) and third-party MLLP receivers.
#
# Each server runs alone, pinned to CPU $SERVER_CPU (mllpd with SHARDS=1); mllp-bench runs on
# CPU $CLIENT_CPU. Every server is first checked for correct ACKs (mllp-bench --check): a
# server that answers wrongly is reported as wrong and not timed. Then, per connection count,
# a closed-loop run (one message in flight per connection) records msgs/s, latency and the
# server's CPU time per message (from /proc/PID/task/*/schedstat over the measured window);
# mllpd and the floors also run open loop at one fixed rate (equal offered load).
# Then the hub scenario (issue 13): open loop, many connections at a few messages per second
# each, idle connections held beside them (see perf/BENCH.md "Hub scenario"), on the bare ring
# (floor-uring2), the hosted floor (floor-uring2 --wake glommio) and mllpd receipt/journal; the
# disk's own fdatasync latency (disk-sync) is measured on DATA_DIR's file system right before
# each journal hub run. Last, mllpd with 1 and 2 shards at 64 connections, nothing pinned (the
# scaling note).
#
# Writes perf/results/<UTC date-time>.{json,md,svg}; raw runs stay in perf/results/tmp/.
# Environment: DURATION (5s), WARMUP (1s), CONNS ("1 16 64 256"), SERVERS (all; e.g.
# "floor-uring mllpd"), OPEN_RATE (20000) and OPEN_CONNS ("16 64") for the equal-load runs of
# mllpd and the floors, MLLPD_BIN (default: this checkout's release build), SKIP_SCALING=1.
# Hub: SKIP_HUB=1 skips it; HUB_CASES ("1000:5000:0 200:1000:10000": sending connections:
# msgs/s in all:idle connections), HUB_SERVERS ("floor-uring2 floor-uring2-glommio
# mllpd-receipt mllpd-journal"), HUB_DURATION (20s), HUB_WARMUP (2s), DISK_SYNC_DURATION (5s);
# HUB_SHORT=1 is the smoke form (cases 100:500:0 and 20:100:1000, 3s windows, 1s probe).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-"1 16 64 256"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-27575}
OPEN_RATE=${OPEN_RATE:-20000}
OPEN_CONNS=${OPEN_CONNS:-"16 64"}
ALL_SERVERS="mllpd-receipt mllpd-journal floor-glommio floor-uring floor-uring2 floor-uring2-glommio floor-tokio python-hl7 medplum"
SERVERS=${SERVERS:-$ALL_SERVERS}
if [ "${HUB_SHORT:-0}" = 1 ]; then
  HUB_CASES=${HUB_CASES:-"100:500:0 20:100:1000"}
  HUB_DURATION=${HUB_DURATION:-3s}
  HUB_WARMUP=${HUB_WARMUP:-1s}
  DISK_SYNC_DURATION=${DISK_SYNC_DURATION:-1s}
fi
HUB_CASES=${HUB_CASES:-"1000:5000:0 200:1000:10000"}
HUB_SERVERS=${HUB_SERVERS:-"floor-uring2 floor-uring2-glommio mllpd-receipt mllpd-journal"}
HUB_DURATION=${HUB_DURATION:-20s}
HUB_WARMUP=${HUB_WARMUP:-2s}
DISK_SYNC_DURATION=${DISK_SYNC_DURATION:-5s}

echo "== build (release)"
cargo build --release -p mllpd -p mllpd-perf --quiet
BIN=$CARGO_TARGET_DIR/release
MLLPD_BIN=${MLLPD_BIN:-$BIN/mllpd}
BENCH=$BIN/mllp-bench
MLLPD_HUB_ENV=()

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
RESULTS=$ROOT/perf/results
RAW=$RESULTS/tmp/$STAMP
mkdir -p "$RAW"
cut -d" " -f1-3 /proc/loadavg >"$RAW/loadavg_start.txt"

echo "== peers"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import hl7.mllp' 2>/dev/null; then
  "$PYTHON" -m pip install --quiet 'hl7==0.4.5' || echo "python-hl7 not installable; skipped"
fi
MEDPLUM=$ROOT/perf/peers/node/node_modules/.bin/medplum
if [ ! -x "$MEDPLUM" ]; then
  (cd perf/peers/node && npm ci --no-audit --no-fund --silent) || echo "medplum not installable; skipped"
fi

# mllpd with the journal answers after fsync (ACK_AFTER=journal) or after receipt. A build
# without ACK_AFTER is run once, labelled as what it is.
if "$MLLPD_BIN" --help 2>/dev/null | grep -q ACK_AFTER; then
  HAS_JOURNAL=1
else
  HAS_JOURNAL=0
fi

# Starts server $1 pinned to $2 ("" = not pinned) on $PORT; sets SERVER_PID and LABEL.
# Returns 1 when the server cannot run here (skipped).
start_server() {
  local name=$1 cpus=$2 pin=()
  [ -n "$cpus" ] && pin=(taskset -c "$cpus")
  local log=$RAW/$name.log addr=127.0.0.1:$PORT
  # MLLPD_HUB_ENV: the hub runs' extra settings (connection limit, idle timeout).
  # ADMIN_ADDR beside PORT: the default 9575 may be held by another mllpd on the machine
  # (mllpd then refuses to start).
  local mllpd_env=(env LISTEN_ADDR="$addr" ADMIN_ADDR="127.0.0.1:$((PORT + 1))" SHARDS="${SHARDS:-1}" LOG_LEVEL=info NO_COLOR=1
    DATA_DIR="$RAW/mllpd-data-$name${DATA_SUFFIX:-}" "${MLLPD_HUB_ENV[@]}")
  case $name in
    mllpd-receipt)
      if [ $HAS_JOURNAL = 1 ]; then LABEL="mllpd receipt"; mllpd_env+=(ACK_AFTER=receipt)
      else LABEL="mllpd parse-ack (no journal)"; fi
      "${mllpd_env[@]}" "${pin[@]}" "$MLLPD_BIN" >"$log" 2>&1 & ;;
    mllpd-journal)
      [ $HAS_JOURNAL = 1 ] || return 1
      LABEL="mllpd journal"
      "${mllpd_env[@]}" ACK_AFTER=journal "${pin[@]}" "$MLLPD_BIN" >"$log" 2>&1 & ;;
    mllpd-shards-*)
      LABEL="mllpd ${name#mllpd-shards-} shard(s), unpinned"
      [ $HAS_JOURNAL = 1 ] && mllpd_env+=(ACK_AFTER=receipt)
      "${mllpd_env[@]}" SHARDS="${name#mllpd-shards-}" "$MLLPD_BIN" >"$log" 2>&1 & ;;
    floor-uring2-glommio)
      # The hosted floor: floor-uring2's ring as one task of a glommio executor pinned like
      # an mllpd shard.
      LABEL="floor-uring2 --wake glommio (hosted floor)"
      local cpu_arg=()
      [[ "$cpus" =~ ^[0-9]+$ ]] && cpu_arg=(--cpu "$cpus")
      "${pin[@]}" "$BIN/floor-uring2" --listen "$addr" --wake glommio "${cpu_arg[@]}" >"$log" 2>&1 & ;;
    floor-*)
      LABEL="$name (floor)"
      "${pin[@]}" "$BIN/$name" --listen "$addr" >"$log" 2>&1 & ;;
    python-hl7)
      "$PYTHON" -c 'import hl7.mllp' 2>/dev/null || return 1
      LABEL="python-hl7 $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("hl7"))')"
      "${pin[@]}" "$PYTHON" perf/peers/hl7_server.py 127.0.0.1 "$PORT" >"$log" 2>&1 & ;;
    medplum)
      [ -x "$MEDPLUM" ] || return 1
      LABEL="medplum hl7 listen $(node -p 'require("./perf/peers/node/node_modules/@medplum/cli/package.json").version')"
      # It prints every message to stdout: sent to a file, as an operator would log it.
      "${pin[@]}" "$MEDPLUM" hl7 listen "$PORT" >"$log" 2>&1 & ;;
    *) echo "unknown server $name" >&2; return 1 ;;
  esac
  SERVER_PID=$!
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  # The next server binds the same port; wait until it is free.
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || return 0
    sleep 0.1
  done
}

# bench NAME CONNS EXTRA_ARGS...: one timed run into $RAW/NAME__CONNS.json (NAME__open-CONNS
# when $KEY_PREFIX=open-).
bench() {
  local name=$1 conns=$2; shift 2
  local out=$RAW/${name}__${KEY_PREFIX:-}${conns}.json
  if "$BENCH" -a 127.0.0.1:$PORT -c "$conns" -d "$DURATION" --warmup "$WARMUP" \
      --server-pid "$SERVER_PID" --label "$LABEL" --json --no-progress "$@" >"$out" 2>"$RAW/${name}__${conns}.err"; then
    jq -r '"  \(.mode) \(.connections) conns: \(.msgs_per_s|floor) msgs/s, p50 \(.latency.p50_us) us, p99 \(.latency.p99_us) us, server \(.server_cpu_us_per_msg*100|round/100) us/msg"' "$out"
  else
    echo "  ${KEY_PREFIX:-}$conns conns: FAILED (mismatches or errors): $(jq -c '{mismatches, mismatch_kinds, errors, lost, error_samples}' "$out" 2>/dev/null || cat "$RAW/${name}__${conns}.err")"
  fi
}

for name in $SERVERS; do
  [ "$name" = none ] && continue # SERVERS=none: no closed-loop runs (e.g. the hub alone)
  echo "== $name"
  if ! start_server "$name" "$SERVER_CPU"; then
    echo "  skipped (not available here)"
    echo "{\"server\":\"$name\",\"skipped\":true}" >"$RAW/${name}__check.json"
    continue
  fi
  if ! taskset -c "$CLIENT_CPU" "$BENCH" -a 127.0.0.1:$PORT --check --json --label "$LABEL" \
      --connect-timeout 30s >"$RAW/${name}__check.json"; then
    echo "  WRONG ACKs, not timed: $(jq -c '.steps' "$RAW/${name}__check.json")"
    stop_server
    continue
  fi
  echo "  $LABEL: ACKs correct"
  for conns in $CONNS; do
    bench "$name" "$conns" --cpu "$CLIENT_CPU"
  done
  # Equal offered load: in a closed loop a slower server batches more per wakeup and so looks
  # cheaper per message; at a fixed rate every fast server does the same work per second.
  case $name in
    mllpd-*|floor-*)
      for conns in $OPEN_CONNS; do
        KEY_PREFIX=open- bench "$name" "$conns" --cpu "$CLIENT_CPU" --mode open --rate "$OPEN_RATE"
      done ;;
  esac
  stop_server
done

# The hub scenario (issue 13 item 1). Per case, each server starts fresh (mllpd with a fresh
# DATA_DIR), its ACKs are checked, then one open-loop run: every connection (sending and
# idle) is opened, and mllp-bench waits until the server holds them all, before warmup and
# window; latency runs from each message's intended send time; server CPU over the window.
if [ "${SKIP_HUB:-0}" != 1 ]; then
  HUB=$RAW/hub
  mkdir -p "$HUB"
  # Each side holds every connection: raise the open-file limit (children inherit it).
  need=0
  for case in $HUB_CASES; do
    IFS=: read -r active rate idle <<<"$case"
    (( active + idle > need )) && need=$((active + idle))
  done
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && (( hard < need + 256 )); then
    echo "== hub: SKIPPED: RLIMIT_NOFILE hard limit $hard < $((need + 256)) (raise it: ulimit -Hn, /etc/security/limits.conf)" |
      tee "$HUB/skipped.txt"
  else
    want=$(( need + 256 > 65536 ? need + 256 : 65536 ))
    [ "$hard" != unlimited ] && (( want > hard )) && want=$hard
    ulimit -n "$want"
    for case in $HUB_CASES; do
      IFS=: read -r active rate idle <<<"$case"
      key="c${active}-r${rate}-i${idle}"
      echo "== hub $key: $active sending connections, $rate msgs/s in all, $idle idle"
      # mllpd refuses connections over MAX_CONNECTIONS (default 10 000) and closes idle ones
      # after IDLE_TIMEOUT (default 30 s): both set so the hub's connections all stay.
      MLLPD_HUB_ENV=(MAX_CONNECTIONS=$((active + idle + 64)) IDLE_TIMEOUT=10m)
      for name in $HUB_SERVERS; do
        if [ "$name" = mllpd-journal ]; then
          # The disk's own flush, right before the journal run, on DATA_DIR's file system.
          echo "  disk-sync on $(stat -f -c %T "$RAW") ($RAW), $DISK_SYNC_DURATION"
          when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
          if taskset -c "$SERVER_CPU" "$BIN/disk-sync" --dir "$RAW" --duration "$DISK_SYNC_DURATION" \
              --cpu "$SERVER_CPU" --json >"$HUB/disk-sync__$key.raw" 2>"$HUB/disk-sync__$key.err"; then
            jq --arg when "$when" --arg fs "$(stat -f -c %T "$RAW")" --arg case "$key" \
              '. + {ran_at: $when, filesystem: $fs, before: "mllpd-journal, hub \($case)"}' \
              "$HUB/disk-sync__$key.raw" >"$HUB/disk-sync__$key.json"
            jq -r '"  fdatasync p50 \(.fdatasync.p50_us) us, p99 \(.fdatasync.p99_us) us, p99.9 \(.fdatasync.p999_us) us, max \(.fdatasync.max_us) us (\(.rounds) rounds, direct \(.direct))"' \
              "$HUB/disk-sync__$key.json"
          else
            echo "  disk-sync FAILED: $(cat "$HUB/disk-sync__$key.err")"
          fi
          rm -f "$HUB/disk-sync__$key.raw"
        fi
        DATA_SUFFIX=-hub-$key
        if ! start_server "$name" "$SERVER_CPU"; then
          echo "  $name: skipped (not available here)"
          DATA_SUFFIX=
          continue
        fi
        DATA_SUFFIX=
        if ! taskset -c "$CLIENT_CPU" "$BENCH" -a 127.0.0.1:$PORT --check --json --label "$LABEL" \
            --connect-timeout 30s >"$HUB/${name}__$key.check.json"; then
          echo "  $LABEL: WRONG ACKs, not timed"
          stop_server
          continue
        fi
        out=$HUB/${name}__$key.json
        if "$BENCH" -a 127.0.0.1:$PORT -c "$active" --idle "$idle" --mode open --rate "$rate" \
            -d "$HUB_DURATION" --warmup "$HUB_WARMUP" --connect-timeout 60s --cpu "$CLIENT_CPU" \
            --server-pid "$SERVER_PID" --label "$LABEL" --json --no-progress \
            >"$out" 2>"$HUB/${name}__$key.err"; then
          jq -r '"  \(.label): \(.msgs_per_s|floor) msgs/s, p50 \(.latency.p50_us) p99 \(.latency.p99_us) p99.9 \(.latency.p999_us) max \(.latency.max_us) us, server \(.server_cpu_us_per_msg*100|round/100) us/msg"' "$out"
        else
          echo "  $LABEL: FAILED: $(jq -c '{messages, errors, lost, idle_closed, mismatches, error_samples}' "$out" 2>/dev/null || cat "$HUB/${name}__$key.err")"
        fi
        stop_server
      done
      MLLPD_HUB_ENV=()
    done
  fi
fi

if [ "${SKIP_SCALING:-0}" != 1 ]; then
  for shards in 1 2; do
    name=mllpd-shards-$shards
    echo "== $name (64 connections, server and generator unpinned)"
    start_server "$name" ""
    "$BENCH" -a 127.0.0.1:$PORT --check --json --connect-timeout 30s --label "$LABEL" \
      >"$RAW/${name}__check.json" ||
      { echo "  WRONG ACKs"; stop_server; continue; }
    bench "$name" 64 --threads 2
    stop_server
    # Connections per shard, from the shards' own "connection opened" log lines (the 4 of
    # --check included).
    sed 's/\x1b\[[0-9;]*m//g' "$RAW/$name.log" | grep 'connection opened' |
      grep -o 'shard=[0-9]*' | sort | uniq -c | awk '{printf "  %s: %s connections\n", $2, $1}' |
      tee "$RAW/${name}__spread.txt"
  done
fi

echo "== report"
"$PYTHON" perf/report.py "$RAW" "$RESULTS/$STAMP"
echo "wrote $RESULTS/$STAMP.json, $RESULTS/$STAMP.md, $RESULTS/$STAMP.svg$([ -f "$RESULTS/$STAMP-hub.svg" ] && echo ", $RESULTS/$STAMP-hub.svg")"
