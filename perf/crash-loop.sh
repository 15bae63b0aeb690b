#!/usr/bin/env bash
# Crash test, long form (issue 4 item 9): 20 rounds of 8 senders against mllpd, SIGKILL at a
# varying moment, restart (recovery), `journal export`, and a check that every acknowledged
# control id is in the journal exactly once. Then the control run (ACK before the flush), which
# must find a loss. CI runs the same test with 2 rounds (tests/durability.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
MLLPD_CRASH_ROUNDS="$rounds" cargo test --release --test durability -- \
  --nocapture --test-threads 1 sigkill_loses_no_acknowledged_message \
  crash_test_detects_loss_when_acks_precede_the_flush
