//! `mllp-abuse`: the adversarial suite, long forms (`perf/abuse/run.sh`). For each attack it
//! starts `mllpd` (release build), runs the attack from several processes (this binary again,
//! see `mllpd_perf::abuse::CHILD_ENV`) while a well-behaved sender sends at a fixed rate, and
//! prints the figures and the goals: the sender never refused and its p99 under 10 ms during
//! the attack, RSS under the stated bound, descriptors back to the baseline, nothing AA'd lost.
//! Exit status 0 when every goal held, 1 when one was missed, 2 when the harness failed.

use clap::Parser;
use mllpd_perf::abuse::{self, Attack, Harness, Outcome, Scenario};
use std::path::PathBuf;
use std::time::Duration;

/// Adversarial suite against mllpd.
#[derive(Debug, Parser)]
#[command(name = "mllp-abuse")]
struct Args {
    /// The mllpd binary (a release build).
    #[arg(long, default_value = "target/release/mllpd")]
    mllpd: PathBuf,
    /// Attacks to run (comma separated), or `all`.
    #[arg(long, default_value = "all")]
    attack: String,
    /// SOCKET_IO of the server.
    #[arg(long, default_value = "auto")]
    socket_io: String,
    /// Length of each attack but slow-loris.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Length of the slow-loris attack: by default FRAME_TIMEOUT + 10 s, so the server cuts
    /// every connection once and the attackers reopen them.
    #[arg(long, default_value_t = 70)]
    loris_seconds: u64,
    /// Attacker processes per attack.
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// Messages per second of the well-behaved sender.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Goal: p99 of the well-behaved sender during the attack, ms.
    #[arg(long, default_value_t = 10.0)]
    p99_ms: f64,
    /// Goal: peak RSS of the server, MiB.
    #[arg(long, default_value_t = 256)]
    rss_mib: u64,
    /// Run attackers at normal priority instead of `nice -n 19`.
    #[arg(long)]
    no_nice: bool,
    /// Print the server's log.
    #[arg(long)]
    echo: bool,
    /// Directory to make each DATA_DIR in (default: the system's temporary directory, a disk
    /// here; /dev/shm takes the disk's fdatasync latency out of the figures).
    #[arg(long)]
    scratch: Option<PathBuf>,
}

fn main() {
    if let Ok(spec) = std::env::var(abuse::CHILD_ENV) {
        std::process::exit(abuse::child_main(&spec));
    }
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("mllp-abuse: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let attacks: Vec<Attack> = if args.attack == "all" {
        Attack::ALL.to_vec()
    } else {
        args.attack
            .split(',')
            .map(|name| Attack::from_name(name).ok_or(format!("unknown attack {name}")))
            .collect::<Result<_, _>>()?
    };
    abuse::raise_nofile(12_000)?;
    let harness = Harness {
        mllpd: args.mllpd.clone(),
        child_program: std::env::current_exe().map_err(|e| e.to_string())?,
        child_args: Vec::new(),
        socket_io: args.socket_io.clone(),
        nice: !args.no_nice,
        echo: args.echo,
        scratch: args.scratch.clone().unwrap_or_else(std::env::temp_dir),
    };
    println!(
        "| attack (SOCKET_IO={}) | size | p50 / p99 / max before, ms | p50 / p99 / max during, ms | p99 after, ms | RSS before → peak → after, MiB | fds before → peak → after | server CPU | refused | AA'd / lost | goals |",
        args.socket_io
    );
    println!("|---|---|---|---|---|---|---|---:|---:|---|---|");
    let mut all_met = true;
    for attack in attacks {
        let scenario = scenario(args, attack);
        let outcome = abuse::run(&harness, &scenario)?;
        eprintln!("{}", outcome.summary());
        let missed = goals(args, &scenario, &outcome);
        all_met &= missed.is_empty();
        println!("{}", row(&scenario, &outcome, &missed));
    }
    Ok(all_met)
}

/// The long form of each attack.
fn scenario(args: &Args, attack: Attack) -> Scenario {
    let p = args.processes.max(1);
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let mut s = Scenario {
        attack,
        processes: p,
        connections: 2,
        duration: Duration::from_secs(args.seconds),
        before: Duration::from_secs(3),
        after: Duration::from_secs(3),
        rate: args.rate,
        server_env: Vec::new(),
        server_nofile: None,
        frame_bytes_max: 2 * 1024 * 1024,
        fd_settle: Duration::from_secs(30),
    };
    match attack {
        Attack::SlowLoris => {
            s.connections = 5000 / p;
            s.duration = Duration::from_secs(args.loris_seconds);
        }
        Attack::ResetChurn => s.connections = 10_000 / p,
        Attack::StoppedReader => s.connections = 1,
        Attack::HalfOpen => {
            s.connections = 300;
            s.server_env = env(&[("FRAME_TIMEOUT", "5s"), ("IDLE_TIMEOUT", "5s")]);
        }
        Attack::FdExhaustion => {
            s.connections = 400;
            s.server_nofile = Some(1024);
        }
        Attack::SplitBytes => s.connections = 4,
        Attack::EmptyFrames | Attack::MaxFrames | Attack::RandomBytes => {}
    }
    s
}

fn goals(args: &Args, scenario: &Scenario, o: &Outcome) -> Vec<&'static str> {
    let mut missed = Vec::new();
    if !o.refused.is_empty() {
        missed.push("refused");
    }
    if o.latency[1].count == 0 || o.latency[1].p99_us as f64 >= args.p99_ms * 1000.0 {
        missed.push("p99");
    }
    if o.peak.rss_kib >= args.rss_mib * 1024 {
        missed.push("RSS");
    }
    let reclaimed = !scenario.attack.server_must_reclaim() || o.end_of_attack.fds <= o.before.fds;
    if o.fds_settled_in.is_none() || o.after.fds != o.before.fds || !reclaimed {
        missed.push("fds");
    }
    if !o.lost.is_empty() || o.acked == 0 || !o.fresh_connection_ok || o.server_exit != Some(0) {
        missed.push("lost/served");
    }
    missed
}

fn row(scenario: &Scenario, o: &Outcome, missed: &[&str]) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let l = |i: usize| {
        let p = o.latency[i];
        format!(
            "{:.2} / {:.2} / {:.1}",
            ms(p.p50_us),
            ms(p.p99_us),
            ms(p.max_us)
        )
    };
    format!(
        "| {} | {} × {} conns, {} s | {} | {} | {:.2} | {:.0} → {:.0} → {:.0} | {} → {} → {} | {:.0} % | {} | {} / {} | {} |",
        scenario.attack.name(),
        scenario.processes,
        scenario.connections,
        scenario.duration.as_secs(),
        l(0),
        l(1),
        ms(o.latency[2].p99_us),
        mib(o.before.rss_kib),
        mib(o.peak.rss_kib),
        mib(o.after.rss_kib),
        o.before.fds,
        o.peak.fds,
        o.after.fds,
        o.server_cpu_share * 100.0,
        o.refused.len(),
        o.acked,
        o.lost.len(),
        if missed.is_empty() {
            "met".to_owned()
        } else {
            format!("**missed: {}**", missed.join(", "))
        },
    )
}
