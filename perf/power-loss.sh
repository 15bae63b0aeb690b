#!/usr/bin/env bash
# Power-loss test, long form (issue 8 item 1): ROUNDS rounds (default 10) of 6 senders against
# mllpd with DATA_DIR on mllpd-lazyfs (lazyfs/), the plug pulled at a varying moment (unsynced
# writes discarded, mllpd SIGKILLed), remount, recovery, `journal export`, and a check that
# every AA'd control id is in the journal exactly once. Then as many control rounds with the
# batch fdatasync skipped (MLLPD_FAULT_SKIP_FLUSH=1), each of which must lose AA'd messages.
# CI runs one round of each (tests/power_loss.rs). Needs /dev/fuse and fusermount3 (fuse3), root.
#
# The debug build is enough: FUSE round trips, not mllpd's CPU, bound the load on this file
# system. The figures are printed per round ("power-loss round N: ...").
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
MLLPD_POWER_LOSS_ROUNDS="$rounds" cargo test --test power_loss -- --nocapture --test-threads 1 \
  power_loss_loses_no_acknowledged_message power_loss_test_detects_loss_when_the_flush_is_skipped
