//! Adversarial suite, short forms (issue 8 item 5): every attack of `perf/abuse` for a few
//! seconds from two attacker processes, while a well-behaved sender sends 100 messages a second
//! on one connection and checks every ACK. Each test asserts the goals: the well-behaved sender
//! is never refused and its p99 stays under a bound, the server's RSS stays under a bound, its
//! descriptors return to the baseline, a fresh connection is served afterwards, and every
//! control id answered AA is in the exported journal. Each also asserts that the attack really
//! happened (connections made, bytes sent, the server's reaction), so none passes vacuously.
//!
//! The attacker processes are this test binary run again with `MLLPD_ABUSE_CHILD` set (entry
//! point: `attacker_process_entry`), under `nice -n 19`: on one machine an attacker competes
//! with the server for the CPU, which a remote one does not. The scenario code is
//! `perf/src/abuse/`, shared with the long forms (`perf/abuse/run.sh`) by `#[path]`.
//!
//! The p99 bound here is 500 ms, not the 10 ms goal of the long form: this is a debug build of
//! mllpd (several times the CPU per message of a release build) on a shared 2-core CI machine
//! that also runs the attackers and the well-behaved sender. It catches a shard starved by a
//! flood (before answers were bounded and floods cut, the empty-frame flood held the sender for
//! 3–19 s) but not a 10 ms tail: measured on the merged code, debug build, the empty-frame flood
//! gives p99 ≈ 190 ms and the 2 000-connection slow-loris burst ≈ 115–135 ms, so those two miss
//! a 50 ms bound. The long form (`perf/abuse/run.sh`, release build) is held to 10 ms and README
//! ("Adversarial suite") says which attacks meet it. The RSS bound is the one README
//! states. The journal goes to /dev/shm (see `harness`). The tests run one at a time (a lock),
//! as their timings would disturb each other. `MLLPD_TEST_SOCKET_IO=uring|glommio` picks the
//! socket path, as for the other end-to-end tests; `MLLPD_TEST_ECHO=1` prints the server's log.

#[allow(dead_code, unreachable_pub)]
#[path = "../perf/src/abuse/mod.rs"]
mod abuse;

use std::sync::Mutex;
use std::time::Duration;

use abuse::{Attack, Harness, Outcome, Scenario};

/// p99 of the well-behaved sender during an attack, CI short form (see the module doc).
const P99_DURING_MAX: Duration = Duration::from_millis(500);

/// The same bound for the 10 000-connection reset churn. In the debug build with a CPU hog
/// beside the suite, the shard's work for thousands of connections accepted and reset at once
/// (accept, arm, reset, close: all unoptimised) now and then sits in front of the sender's
/// message: in twelve runs with a hog its p99 was 8-300 ms, and once 818 ms (a CPU-hog round of
/// the whole suite). The release build's long form holds 10 ms (1.7 ms, README). 2 s still
/// catches a shard held by the churn for seconds.
const P99_DURING_MAX_RESET_CHURN: Duration = Duration::from_secs(2);

/// Peak RSS of the server during any attack (README, "Adversarial suite").
const RSS_KIB_MAX: u64 = 256 * 1024;

/// The scenarios run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// When one of the tests below starts this binary as an attacker process, this is where it
/// attacks (and exits); run by the test harness itself, it has nothing to do.
#[test]
fn attacker_process_entry() {
    if let Ok(spec) = std::env::var(abuse::CHILD_ENV) {
        std::process::exit(abuse::child_main(&spec));
    }
}

fn harness() -> Harness {
    Harness {
        mllpd: env!("CARGO_BIN_EXE_mllpd").into(),
        child_program: std::env::current_exe().expect("current_exe"),
        child_args: [
            "--exact",
            "attacker_process_entry",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ]
        .map(String::from)
        .to_vec(),
        socket_io: std::env::var("MLLPD_TEST_SOCKET_IO").unwrap_or_else(|_| "auto".to_owned()),
        nice: true,
        echo: std::env::var_os("MLLPD_TEST_ECHO").is_some(),
        // The journal on a tmpfs: fdatasync costs nothing there, so the latency figures show
        // what the attack costs the server, not the shared machine's disk (whose flushes took
        // up to a second while other jobs wrote). Durability itself is tested elsewhere; the
        // export still proves every AA'd message reached the journal.
        scratch: tmpfs_with_room().unwrap_or_else(|| {
            eprintln!("no /dev/shm with 256 MiB free: the journal goes to the temporary directory");
            std::env::temp_dir()
        }),
    }
}

/// /dev/shm when it has room for the journals of a scenario (containers often give it 64 MiB).
fn tmpfs_with_room() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/dev/shm");
    let stat = nix::sys::statvfs::statvfs(&path).ok()?;
    let free = u128::from(stat.blocks_available()) * u128::from(stat.fragment_size());
    (free >= 256 * 1024 * 1024).then_some(path)
}

fn scenario(attack: Attack, processes: usize, connections: usize, seconds: u64) -> Scenario {
    Scenario {
        attack,
        processes,
        connections,
        duration: Duration::from_secs(seconds),
        before: Duration::from_secs(1),
        after: Duration::from_secs(1),
        rate: 100.0,
        server_env: Vec::new(),
        server_nofile: None,
        frame_bytes_max: 2 * 1024 * 1024,
        fd_settle: Duration::from_secs(10),
    }
}

/// Runs `scenario`, prints its figures, and checks the goals every attack shares; returns the
/// outcome for the attack's own checks and the list of goals missed so far.
fn run(scenario: &Scenario) -> (Outcome, Vec<String>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let needed = (scenario.processes * scenario.connections) as u64 + 1024;
    if let Err(e) = abuse::raise_nofile(needed) {
        panic!("{e}");
    }
    let outcome = abuse::run(&harness(), scenario).expect("the scenario ran");
    eprintln!("{}", outcome.summary());
    let mut missed = Vec::new();
    let mut goal = |ok: bool, what: String| {
        if !ok {
            missed.push(what);
        }
    };
    goal(
        outcome.refused.is_empty(),
        format!("well-behaved sender refused: {:?}", outcome.refused),
    );
    let during = outcome.latency[1];
    let p99_max = match scenario.attack {
        Attack::ResetChurn => P99_DURING_MAX_RESET_CHURN,
        _ => P99_DURING_MAX,
    };
    goal(
        during.count > 0 && Duration::from_micros(during.p99_us) < p99_max,
        format!("p99 during the attack {} µs ≥ {p99_max:?}", during.p99_us),
    );
    goal(
        outcome.peak.rss_kib < RSS_KIB_MAX,
        format!("peak RSS {} KiB ≥ {RSS_KIB_MAX} KiB", outcome.peak.rss_kib),
    );
    goal(
        outcome.fds_settled_in.is_some() && outcome.after.fds == outcome.before.fds,
        format!(
            "descriptors did not return to the baseline {}: {} after the attack",
            outcome.before.fds, outcome.after.fds
        ),
    );
    goal(
        outcome.fresh_connection_ok,
        "a fresh connection after the attack got no AA".to_owned(),
    );
    goal(
        outcome.lost.is_empty() && outcome.acked > 0,
        format!("AA'd but not in the journal: {:?}", outcome.lost),
    );
    goal(
        outcome.server_exit == Some(0),
        format!("server exit after SIGTERM: {:?}", outcome.server_exit),
    );
    if scenario.attack.server_must_reclaim() {
        goal(
            outcome.end_of_attack.fds <= outcome.before.fds,
            format!(
                "the server still held {} descriptors (baseline {}) at the end of the attack",
                outcome.end_of_attack.fds, outcome.before.fds
            ),
        );
    }
    (outcome, missed)
}

fn assert_goals(outcome: &Outcome, missed: &[String]) {
    assert!(
        missed.is_empty(),
        "{}: goals missed:\n  {}\n{}",
        outcome.attack.name(),
        missed.join("\n  "),
        outcome.summary()
    );
}

#[test]
fn slow_loris_2000_connections() {
    let (outcome, mut missed) = run(&scenario(Attack::SlowLoris, 2, 1000, 4));
    let a = &outcome.attackers;
    if a.connections < 2000 || outcome.peak.fds < outcome.before.fds + 1900 {
        missed.push(format!(
            "the attack did not hold 2000 connections: {} opened, peak {} descriptors",
            a.connections, outcome.peak.fds
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn empty_frame_flood() {
    let (outcome, mut missed) = run(&scenario(Attack::EmptyFrames, 2, 2, 3));
    if outcome.attackers.bytes_out < 1024 * 1024 {
        missed.push(format!(
            "the flood sent only {} bytes",
            outcome.attackers.bytes_out
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn max_size_frame_flood() {
    let (outcome, mut missed) = run(&scenario(Attack::MaxFrames, 2, 2, 3));
    // Every fourth frame is one byte too large: the server must cut those connections (or cut
    // the flooder sooner as a junk flood); the attackers see the cuts.
    let too_large = close_count(&outcome, "FrameTooLarge");
    if outcome.attackers.bytes_out < 32 * 1024 * 1024 || outcome.attackers.closed_by_server == 0 {
        missed.push(format!(
            "the flood sent {} bytes and was cut {} times ({too_large} for a frame too large)",
            outcome.attackers.bytes_out, outcome.attackers.closed_by_server
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn connect_reset_churn_10000_connections() {
    // 20 s is only the bound: the attack ends when both processes have made their 5 000.
    let (outcome, mut missed) = run(&scenario(Attack::ResetChurn, 2, 5000, 20));
    if outcome.attackers.connections < 10_000 {
        missed.push(format!(
            "only {} of 10 000 connections were made",
            outcome.attackers.connections
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn stopped_reader_with_acks_pending_is_cut() {
    // A reader stops itself once its writes have been blocked for a second (the server's
    // socket buffer filled with ACKs, MiBs, and it stopped reading); then WRITE_TIMEOUT runs.
    // Stopped at a fixed second instead, a reader on a busy machine (the CPU-hog rounds) had
    // sent too little to back the ACKs up, so there was nothing to cut.
    let mut s = scenario(Attack::StoppedReader, 2, 1, 12);
    s.server_env = vec![("WRITE_TIMEOUT".to_owned(), "2s".to_owned())];
    let (outcome, mut missed) = run(&s);
    // Closed while still stopped: checked by the common goals (descriptors at the baseline at
    // the end of the attack). Here: the readers really had ACKs backed up.
    if outcome.attackers.bytes_out < 1024 * 1024 {
        missed.push(format!(
            "the stopped readers sent only {} bytes",
            outcome.attackers.bytes_out
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn half_open_and_silent_connections() {
    let mut s = scenario(Attack::HalfOpen, 2, 60, 4);
    s.server_env = vec![
        ("FRAME_TIMEOUT".to_owned(), "2s".to_owned()),
        ("IDLE_TIMEOUT".to_owned(), "2s".to_owned()),
    ];
    let (outcome, mut missed) = run(&s);
    let a = &outcome.attackers;
    // 2 × 60: 40 whole messages then FIN (AA, then closed), 40 half frames then FIN (closed),
    // 40 silent (closed by FRAME_TIMEOUT while held).
    if a.connections != 120 || a.acked_ids.len() != 40 || a.wrong != 0 || a.closed_by_server != 120
    {
        missed.push(format!(
            "half-open: {} connections, {} AA'd of 40, {} wrong answers, {} of 120 closed by \
             the server, errors {} ({:?})",
            a.connections,
            a.acked_ids.len(),
            a.wrong,
            a.closed_by_server,
            a.errors,
            a.first_error
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn descriptor_exhaustion_hits_emfile_and_recovers() {
    let mut s = scenario(Attack::FdExhaustion, 2, 200, 3);
    s.server_nofile = Some(256);
    let (outcome, mut missed) = run(&s);
    if outcome.accept_failures == 0 {
        missed.push("accept never failed: the descriptor table did not fill".to_owned());
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn random_bytes_flood() {
    let (outcome, mut missed) = run(&scenario(Attack::RandomBytes, 2, 2, 3));
    if outcome.attackers.bytes_out < 1024 * 1024 {
        missed.push(format!(
            "the flood sent only {} bytes",
            outcome.attackers.bytes_out
        ));
    }
    assert_goals(&outcome, &missed);
}

#[test]
fn frames_split_at_every_byte() {
    let (outcome, mut missed) = run(&scenario(Attack::SplitBytes, 2, 2, 3));
    let a = &outcome.attackers;
    if a.acked_ids.len() < 20 || a.wrong != 0 || a.errors != 0 {
        missed.push(format!(
            "split senders: {} AA'd, {} wrong, {} errors ({:?})",
            a.acked_ids.len(),
            a.wrong,
            a.errors,
            a.first_error
        ));
    }
    assert_goals(&outcome, &missed);
}

fn close_count(outcome: &Outcome, reason: &str) -> u64 {
    outcome
        .close_reasons
        .iter()
        .filter(|(r, _)| r.starts_with(reason))
        .map(|(_, n)| n)
        .sum()
}
