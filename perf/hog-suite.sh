#!/usr/bin/env bash
# Issue 8 item 6: the whole test suite N times in a row (default 10) with a CPU hog (one busy loop by default) beside it,
# on a 2-core machine, so timing margins are shown to hold when the machine is busy. Each round
# runs .ci/test, the test command of .ci/run (both socket paths for the end-to-end suites).
# Prints one line per round and a final "N passed, N failed" line; exits non-zero on any failure.
# Usage: perf/hog-suite.sh [ROUNDS] [HOGS]   (logs in $TMPDIR/hog-suite.*)
set -uo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
hogs="${2:-1}"
logs=$(mktemp -d "${TMPDIR:-/tmp}/hog-suite.XXXXXX")
cargo test --workspace --all-targets --no-run --quiet || exit 1

hog_pids=()
for _ in $(seq "$hogs"); do
  # A busy loop at normal priority: the tests compete with it for both cores.
  sh -c 'while :; do :; done' &
  hog_pids+=($!)
done
cleanup() { kill "${hog_pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT

passed=0
failed=0
for round in $(seq "$rounds"); do
  start=$(date +%s)
  log="$logs/round-$round.log"
  if bash .ci/test >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "round $round: ok in $(($(date +%s) - start)) s"
  else
    failed=$((failed + 1))
    echo "round $round: FAILED in $(($(date +%s) - start)) s — $log"
    grep -E '^test .* FAILED|panicked at' "$log" | head -20
  fi
done
echo "hog-suite: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
