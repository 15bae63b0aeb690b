#!/usr/bin/env bash
# Adversarial suite, long forms (issue 8 item 5; README "Adversarial suite").
#
# For every attack (slow-loris 5 000 connections, empty-frame flood, max-size-frame flood,
# 10 000 connect/reset, stopped reader, half-open, descriptor exhaustion, random bytes, frames
# split at every byte) `mllp-abuse` starts a fresh release mllpd, runs the attack from several
# processes (nice 19) while a well-behaved sender sends RATE messages a second on one connection
# with every ACK checked, and prints one Markdown row: latency before / during / after, RSS and
# descriptors before → peak → after, server CPU, refusals, AA'd and lost control ids, and
# the goals (p99 < 10 ms during the attack, never refused, RSS < 256 MiB, descriptors back at
# the baseline, nothing AA'd missing from the exported journal).
#
# Usage: perf/abuse/run.sh [mllp-abuse options, e.g. --attack slow-loris,half-open --seconds 20]
# Env:   SOCKET_IO_PATHS (default "uring glommio"): one pass per socket path.
# Output: the table on stdout and in perf/results/abuse-<time>.md; the details (every phase's
# latency, footprints, what the attackers and the server's log counted) on stderr and in
# perf/results/abuse-<time>.log.
# Exit status: 0 when every goal held on every path, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --quiet --bin mllpd
cargo build --release --quiet -p mllpd-perf --bin mllp-abuse

# A shared target directory may get another checkout's build at any time: run copies.
bin_dir=$(mktemp -d /tmp/mllpd-abuse-bin.XXXXXX)
trap 'rm -rf "$bin_dir"' EXIT
cp target/release/mllpd target/release/mllp-abuse "$bin_dir/"

# 5 000 slow-loris connections from the attackers and as many accepted by the server; the
# binary raises its soft limit itself, this raises the hard one where the shell may.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p perf/results
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out="perf/results/abuse-$stamp.md"
details="perf/results/abuse-$stamp.log"
{
  echo "# Adversarial suite, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) CPUs, kernel $(uname -r), release build; options: ${*:-none}"
  echo
} >"$out"
status=0
for io in ${SOCKET_IO_PATHS:-uring glommio}; do
  if ! "$bin_dir/mllp-abuse" --mllpd "$bin_dir/mllpd" --socket-io "$io" "$@" \
      2> >(tee -a "$details" >&2) | tee -a "$out"; then
    status=1
  fi
  echo >>"$out"
done
echo "results: $out, details: $details" >&2
exit "$status"
