//! The adversarial suite (issue 8 item 5): attacks on a running `mllpd` from several processes
//! at once, while a well-behaved sender keeps sending and the server's memory and descriptors
//! are watched before, during and after.
//!
//! One scenario: start `mllpd` on a fresh DATA_DIR; connect the well-behaved sender (a fixed
//! rate on one connection, every ACK checked: AA and MSA-2 = the MSH-10 sent; latency taken
//! from the intended send time, so a stall is counted in full); take a baseline of the server's
//! VmRSS and open descriptors; start the attacker processes (re-executions of the calling
//! program, see [`CHILD_ENV`]); sample while they run; let them go; wait for the descriptors to
//! return to the baseline; open a fresh connection and get an AA on it; stop the server with
//! SIGTERM; export the journal and look for every control id that was answered AA.
//!
//! Shared, by file, between `tests/abuse.rs` (short forms in CI, included with `#[path]` so the
//! test needs no dependency on the perf crate) and `mllp-abuse` (long forms,
//! `perf/abuse/run.sh`). It therefore uses only std, socket2 and nix, which both crates have,
//! and no `unsafe`. The goals are judged by the caller: the bounds differ between a debug build
//! on a shared CI machine and a release build.

mod attack;
mod sender;
mod server;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use attack::child_main;
pub use server::{fds, raise_nofile, rss_kib};

/// Environment variable that turns the calling program into an attacker process: it holds the
/// encoded [`attack::Spec`], and the program must call [`child_main`] with it and exit.
pub const CHILD_ENV: &str = "MLLPD_ABUSE_CHILD";

/// MLLP start block, end block and carriage return (HL7 v2 Appendix C).
const SB: u8 = 0x0B;
const EB: u8 = 0x1C;
const CR: u8 = 0x0D;

/// What the attacker processes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Many connections, each writing one byte of a frame per second (reopened when cut).
    SlowLoris,
    /// `0x0B 0x1C 0x0D` repeated as fast as the socket takes it; the answers are read.
    EmptyFrames,
    /// Frames of exactly MAX_FRAME_SIZE junk bytes, every eighth one byte too large.
    MaxFrames,
    /// Connect and reset (SO_LINGER 0): at once, inside a frame, or with an ACK pending.
    ResetChurn,
    /// Pipelines messages and never reads; the process stops itself (SIGSTOP) with ACKs pending.
    StoppedReader,
    /// Half-closed (FIN after a frame or inside one) and silent connections.
    HalfOpen,
    /// Slow-loris connections against a server whose descriptor limit is low (EMFILE).
    FdExhaustion,
    /// Random bytes as fast as the socket takes them; the answers are read.
    RandomBytes,
    /// Valid messages written one byte per write (TCP_NODELAY), each ACK checked.
    SplitBytes,
}

impl Attack {
    /// Every attack, in the order the suite runs them.
    pub const ALL: [Attack; 9] = [
        Attack::SlowLoris,
        Attack::EmptyFrames,
        Attack::MaxFrames,
        Attack::ResetChurn,
        Attack::StoppedReader,
        Attack::HalfOpen,
        Attack::FdExhaustion,
        Attack::RandomBytes,
        Attack::SplitBytes,
    ];

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Attack::SlowLoris => "slow-loris",
            Attack::EmptyFrames => "empty-frames",
            Attack::MaxFrames => "max-frames",
            Attack::ResetChurn => "reset-churn",
            Attack::StoppedReader => "stopped-reader",
            Attack::HalfOpen => "half-open",
            Attack::FdExhaustion => "fd-exhaustion",
            Attack::RandomBytes => "random-bytes",
            Attack::SplitBytes => "split-bytes",
        }
    }

    /// The attack called `name`.
    pub fn from_name(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Attacks whose connections the server must close by itself (deadlines), checked while
    /// the attacker processes still hold them.
    pub fn server_must_reclaim(self) -> bool {
        matches!(self, Attack::StoppedReader | Attack::HalfOpen)
    }
}

/// One run: an attack, its size, and how long each phase lasts.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The attack.
    pub attack: Attack,
    /// Attacker processes.
    pub processes: usize,
    /// Connections per attacker process (for reset churn: connections made in turn).
    pub connections: usize,
    /// How long the attack lasts.
    pub duration: Duration,
    /// Measured time before the attack.
    pub before: Duration,
    /// Measured time after the descriptors returned to the baseline.
    pub after: Duration,
    /// Messages per second of the well-behaved sender.
    pub rate: f64,
    /// Settings of the server on top of the defaults (e.g. a short IDLE_TIMEOUT).
    pub server_env: Vec<(String, String)>,
    /// RLIMIT_NOFILE of the server (`prlimit --nofile`), for descriptor exhaustion.
    pub server_nofile: Option<u64>,
    /// MAX_FRAME_SIZE of the server (the attackers size their frames by it).
    pub frame_bytes_max: usize,
    /// Longest wait for the server's descriptors to return to the baseline.
    pub fd_settle: Duration,
}

/// How to start the server and the attacker processes.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The `mllpd` binary.
    pub mllpd: PathBuf,
    /// Program that becomes an attacker when [`CHILD_ENV`] is set (the caller itself).
    pub child_program: PathBuf,
    /// Arguments for it (e.g. the test harness's filter for the child entry point).
    pub child_args: Vec<String>,
    /// SOCKET_IO of the server.
    pub socket_io: String,
    /// Run attackers under `nice -n 19`: on one machine they compete with the server for the
    /// CPU, which a remote attacker does not; the server's own work is what is measured.
    pub nice: bool,
    /// Print the server's log lines to stderr.
    pub echo: bool,
    /// Where each scenario's DATA_DIR is made: a disk (fdatasync as deployed) or a tmpfs such as
    /// /dev/shm (no disk latency, so the figures show what the attack costs, not the disk).
    pub scratch: PathBuf,
}

/// Latency of the well-behaved sender in one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// ACKs received.
    pub count: usize,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
}

/// The server's footprint at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Footprint {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// Open descriptors, journal files excepted (sockets, rings, pipes, …).
    pub fds: usize,
    /// Open descriptors on journal files (DATA_DIR): they come and go as the journal grows.
    pub journal_fds: usize,
}

/// What the attacker processes reported, summed.
#[derive(Clone, Debug, Default)]
pub struct Attackers {
    /// Connections opened.
    pub connections: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes read (answers).
    pub bytes_in: u64,
    /// Connections the server closed (EOF or reset seen by the attacker).
    pub closed_by_server: u64,
    /// Connect, read or write failures that were not a close by the server.
    pub errors: u64,
    /// Wrong answers to valid messages (not AA, or MSA-2 not the MSH-10 sent).
    pub wrong: u64,
    /// Control ids the attackers got AA for (split bytes, half-open): checked in the journal.
    pub acked_ids: Vec<String>,
    /// First error text, for diagnosis.
    pub first_error: Option<String>,
}

/// Everything measured in one scenario.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The attack.
    pub attack: Attack,
    /// Well-behaved sender before, during and after the attack.
    pub latency: [Latency; 3],
    /// When, from the start of the attack, the slowest message during it was due: tells a stall
    /// at connection set-up (a burst of accepts) from one spread over the attack.
    pub worst_during_at: Option<Duration>,
    /// Failures of the well-behaved sender: refused, reset, timed out, wrong ACK.
    pub refused: Vec<String>,
    /// Footprint before the attack (the baseline).
    pub before: Footprint,
    /// Largest footprint seen during the attack (sampled every 100 ms).
    pub peak: Footprint,
    /// Footprint at the end of the attack, attackers still running.
    pub end_of_attack: Footprint,
    /// Footprint after the attack, once settled.
    pub after: Footprint,
    /// Time from the end of the attack until the descriptors were back at the baseline.
    pub fds_settled_in: Option<Duration>,
    /// Server CPU time during the attack ÷ its duration.
    pub server_cpu_share: f64,
    /// A connection opened after the attack got its AA.
    pub fresh_connection_ok: bool,
    /// AA'd control ids (well-behaved sender and attackers).
    pub acked: usize,
    /// AA'd control ids missing from the exported journal.
    pub lost: Vec<String>,
    /// Exit status of the server after SIGTERM.
    pub server_exit: Option<i32>,
    /// What the attackers reported.
    pub attackers: Attackers,
    /// Close reasons the server logged (`reason=…`), with counts.
    pub close_reasons: Vec<(String, u64)>,
    /// Log lines saying an accept failed.
    pub accept_failures: u64,
}

impl Outcome {
    /// One line per figure, for test output and the perf report.
    pub fn summary(&self) -> String {
        let l = |p: &Latency| {
            format!(
                "n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
                p.count,
                p.p50_us as f64 / 1000.0,
                p.p99_us as f64 / 1000.0,
                p.max_us as f64 / 1000.0
            )
        };
        let f = |f: &Footprint| {
            format!(
                "rss={:.1}MiB fds={}+{}",
                f.rss_kib as f64 / 1024.0,
                f.fds,
                f.journal_fds
            )
        };
        let a = &self.attackers;
        format!(
            "attack {}\n  latency before: {}\n  latency during: {} (slowest due {:?} into the attack)\n  \
             latency after:  {}\n  \
             footprint (fds: others+journal) before: {} peak: {} end of attack: {} after: {} \
             (settled in {:?})\n  \
             server CPU share during attack: {:.2}\n  refused: {:?}\n  fresh connection ok: {}\n  \
             acked {} lost {:?} server exit {:?}\n  attackers: connections={} bytes_out={} \
             bytes_in={} closed_by_server={} errors={} wrong={} acked={} first_error={:?}\n  \
             server close reasons: {:?} accept failures: {}",
            self.attack.name(),
            l(&self.latency[0]),
            l(&self.latency[1]),
            self.worst_during_at,
            l(&self.latency[2]),
            f(&self.before),
            f(&self.peak),
            f(&self.end_of_attack),
            f(&self.after),
            self.fds_settled_in,
            self.server_cpu_share,
            self.refused,
            self.fresh_connection_ok,
            self.acked,
            self.lost,
            self.server_exit,
            a.connections,
            a.bytes_out,
            a.bytes_in,
            a.closed_by_server,
            a.errors,
            a.wrong,
            a.acked_ids.len(),
            a.first_error,
            self.close_reasons,
            self.accept_failures,
        )
    }
}

/// A small valid ADT^A01 with MSH-10 = `id`, CR segment separators.
fn message(id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ABUSE|ABUSEFAC|MLLPD|HOSP|20260101120000||ADT^A01^ADT_A01|{id}|P|2.5.1\r\
         EVN|A01|20260101120000\r\
         PID|1||12345^^^HOSP^MR||DOE^JOHN||19800101|M\r\
         PV1|1|I|WARD^101^1\r"
    )
    .into_bytes()
}

/// `payload` wrapped in an MLLP frame.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(SB);
    out.extend_from_slice(payload);
    out.extend_from_slice(&[EB, CR]);
    out
}

/// Takes the next complete frame's payload out of `pending`, if there is one.
fn take_frame(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let start = pending.iter().position(|&b| b == SB)?;
    let end = start + pending[start..].windows(2).position(|w| w == [EB, CR])?;
    let payload = pending[start + 1..end].to_vec();
    pending.drain(..end + 2);
    Some(payload)
}

/// (MSA-1, MSA-2) of an ACK payload, split with the ACK's own field separator.
fn msa(ack: &[u8]) -> Option<(String, String)> {
    let separator = *ack.get(3)?;
    let segment = ack
        .split(|&b| b == CR)
        .find(|segment| segment.starts_with(b"MSA"))?;
    let mut fields = segment.split(|&b| b == separator).skip(1);
    let code = String::from_utf8_lossy(fields.next()?).into_owned();
    let id = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    Some((code, id))
}

/// Runs one scenario from start to finish; `Err` when the harness itself failed (the server
/// did not start, an attacker could not be spawned), not when a goal was missed.
pub fn run(harness: &Harness, scenario: &Scenario) -> Result<Outcome, String> {
    let data_dir = server::scratch_dir(&harness.scratch)?;
    let result = run_in(harness, scenario, &data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

fn run_in(
    harness: &Harness,
    scenario: &Scenario,
    data_dir: &std::path::Path,
) -> Result<Outcome, String> {
    let mut mllpd = server::Mllpd::start(harness, scenario, data_dir)?;
    let pid = mllpd.pid();
    let sender = sender::Sender::start(mllpd.addr, scenario.rate);
    sender.wait_acked(5, Duration::from_secs(20))?;
    let measured_from = Instant::now();
    std::thread::sleep(scenario.before);
    let before = footprint(pid, data_dir);
    let fd_targets_before = server::fd_targets(pid, data_dir);
    let attack_started = Instant::now();
    let cpu_started = server::cpu_time(pid);
    let (mut children, reports) = spawn_attackers(harness, scenario, mllpd.addr)?;
    let (peak, end_of_attack) =
        watch_attack(scenario, pid, data_dir, &mut children, attack_started);
    let server_cpu_share = (server::cpu_time(pid).saturating_sub(cpu_started)).as_secs_f64()
        / attack_started.elapsed().as_secs_f64();
    if scenario.attack == Attack::StoppedReader {
        signal_all(&children, "CONT");
    }
    let attack_ended = Instant::now();
    let attackers = collect_attackers(
        &mut children,
        reports,
        scenario.duration + Duration::from_secs(30),
    );
    let fds_settled_in = server::wait_fds(pid, data_dir, before.fds, scenario.fd_settle)
        .map(|_| attack_ended.elapsed());
    if fds_settled_in.is_none() {
        // Name what stayed open, to tell a leaked socket from a runtime's own descriptor.
        let mut extra = server::fd_targets(pid, data_dir);
        for target in &fd_targets_before {
            if let Some(i) = extra.iter().position(|t| t == target) {
                extra.swap_remove(i);
            }
        }
        eprintln!("  descriptors not back at the baseline: {extra:?}");
    }
    std::thread::sleep(scenario.after);
    let after = footprint(pid, data_dir);
    let fresh_connection_ok = sender::one_message(mllpd.addr, "FRESH-1").is_ok();
    let report = sender.stop();
    let server_exit = mllpd.stop(Duration::from_secs(40));
    let logs = mllpd.log_stats();
    let exported: HashSet<String> = server::exported_ids(&harness.mllpd, data_dir)?
        .into_iter()
        .collect();
    let mut acked: Vec<String> = report.acked_ids.clone();
    acked.extend(attackers.acked_ids.iter().cloned());
    if fresh_connection_ok {
        acked.push("FRESH-1".to_owned());
    }
    let lost = acked
        .iter()
        .filter(|id| !exported.contains(*id))
        .cloned()
        .collect();
    let phases = [
        (measured_from, attack_started),
        (attack_started, attack_ended),
        (attack_ended, Instant::now()),
    ];
    Ok(Outcome {
        attack: scenario.attack,
        latency: phases.map(|(from, to)| report.latency(from, to)),
        worst_during_at: report
            .samples
            .iter()
            .filter(|(at, _)| (attack_started..attack_ended).contains(at))
            .max_by_key(|(_, us)| *us)
            .map(|(at, _)| at.duration_since(attack_started)),
        refused: report.errors,
        before,
        peak,
        end_of_attack,
        after,
        fds_settled_in,
        server_cpu_share,
        fresh_connection_ok,
        acked: acked.len(),
        lost,
        server_exit,
        attackers,
        close_reasons: logs.reasons.into_iter().collect(),
        accept_failures: logs.accept_failures,
    })
}

fn footprint(pid: u32, data_dir: &std::path::Path) -> Footprint {
    let (all, journal) = fds(pid, data_dir).unwrap_or((0, 0));
    Footprint {
        rss_kib: rss_kib(pid).unwrap_or(0),
        fds: all - journal,
        journal_fds: journal,
    }
}

/// Samples the server every 100 ms until the attack's duration is over (or every attacker has
/// exited). (The stopped readers stop themselves once their ACKs are backed up.) Returns the
/// peak and the footprint at the end, taken while the attackers still hold their connections.
fn watch_attack(
    scenario: &Scenario,
    pid: u32,
    data_dir: &std::path::Path,
    children: &mut [Child],
    started: Instant,
) -> (Footprint, Footprint) {
    let mut peak = Footprint::default();
    // Ends early when every attacker is done (reset churn: a fixed number of connections).
    while started.elapsed() < scenario.duration
        && !children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
    {
        let now = footprint(pid, data_dir);
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        peak.fds = peak.fds.max(now.fds);
        peak.journal_fds = peak.journal_fds.max(now.journal_fds);
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = footprint(pid, data_dir);
    peak.rss_kib = peak.rss_kib.max(end.rss_kib);
    peak.fds = peak.fds.max(end.fds);
    (peak, end)
}

fn signal_all(children: &[Child], signal: &str) {
    for child in children {
        let _ = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status();
    }
}

/// How long attackers keep their connections after the attack's duration, so the footprint at
/// the end of the attack is taken while they still hold them.
const HOLD_AFTER_DURATION: Duration = Duration::from_secs(1);

/// An attacker's stdout, read while it runs: its report lists every control id it got AA for,
/// more than a pipe holds, so it must not wait for its exit to be read.
type Report = std::thread::JoinHandle<String>;

fn spawn_attackers(
    harness: &Harness,
    scenario: &Scenario,
    addr: std::net::SocketAddr,
) -> Result<(Vec<Child>, Vec<Report>), String> {
    let mut children = Vec::new();
    let mut reports = Vec::new();
    for index in 0..scenario.processes {
        let spec = attack::Spec {
            attack: scenario.attack,
            addr,
            connections: scenario.connections,
            duration: scenario.duration,
            hold: HOLD_AFTER_DURATION,
            index,
            frame_bytes_max: scenario.frame_bytes_max,
        };
        let mut command = if harness.nice {
            let mut command = Command::new("nice");
            command.args(["-n", "19"]).arg(&harness.child_program);
            command
        } else {
            Command::new(&harness.child_program)
        };
        let mut child = command
            .args(&harness.child_args)
            .env(CHILD_ENV, spec.encode())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn attacker {}: {e}", harness.child_program.display()))?;
        let stdout = child.stdout.take();
        reports.push(std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stdout) = stdout {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            }
            text
        }));
        children.push(child);
    }
    Ok((children, reports))
}

/// Waits for every attacker to exit (killed after `timeout`, which counts as an error) and sums
/// their reports.
fn collect_attackers(
    children: &mut Vec<Child>,
    reports: Vec<Report>,
    timeout: Duration,
) -> Attackers {
    let deadline = Instant::now() + timeout;
    let mut total = Attackers::default();
    for child in children.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = child.try_wait() {
            total.errors += 1;
            total
                .first_error
                .get_or_insert("attacker still running at the deadline; killed".to_owned());
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    children.clear();
    for report in reports {
        attack::add_report(&report.join().unwrap_or_default(), &mut total);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_in_order() {
        let mut pending = b"noise".to_vec();
        pending.extend(frame(b"A"));
        pending.extend(frame(b"B\x1cC"));
        pending.extend(&[SB, b'D']);
        assert_eq!(take_frame(&mut pending), Some(b"A".to_vec()));
        assert_eq!(take_frame(&mut pending), Some(b"B\x1cC".to_vec()));
        assert_eq!(take_frame(&mut pending), None);
        assert_eq!(pending, vec![SB, b'D']);
    }

    #[test]
    fn msa_uses_the_acks_own_separator() {
        let ack = b"MSH#^~\\&#A\rMSA#AA#ID-1#x\r";
        assert_eq!(msa(ack), Some(("AA".to_owned(), "ID-1".to_owned())));
        assert_eq!(
            msa(b"MSH|^~\\&|A\rMSA|AR\r"),
            Some(("AR".to_owned(), String::new()))
        );
        assert_eq!(msa(b"MSH|^~\\&|A\r"), None);
    }

    #[test]
    fn spec_survives_the_environment() {
        let spec = attack::Spec {
            attack: Attack::HalfOpen,
            addr: "127.0.0.1:2575".parse().expect("addr"),
            connections: 60,
            duration: Duration::from_millis(4_000),
            hold: Duration::from_millis(1_000),
            index: 1,
            frame_bytes_max: 2 * 1024 * 1024,
        };
        let back = attack::Spec::decode(&spec.encode()).expect("decode");
        assert_eq!(back.encode(), spec.encode());
        assert!(attack::Spec::decode("attack=nonsense").is_err());
    }

    #[test]
    fn percentiles_count_every_sample_of_the_window() {
        let t0 = Instant::now();
        let report = sender::Report {
            samples: (1..=200u64)
                .map(|i| (t0 + Duration::from_millis(i), i * 10))
                .collect(),
            ..sender::Report::default()
        };
        let all = report.latency(t0, t0 + Duration::from_secs(1));
        assert_eq!(
            (all.count, all.p50_us, all.p99_us, all.max_us),
            (200, 1000, 1980, 2000)
        );
        let none = report.latency(t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        assert_eq!(none.count, 0);
    }

    #[test]
    fn attack_names_round_trip() {
        for attack in Attack::ALL {
            assert_eq!(Attack::from_name(attack.name()), Some(attack));
        }
    }
}
