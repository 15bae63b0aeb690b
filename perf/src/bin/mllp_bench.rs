//! `mllp-bench`: MLLP load generator. Closed loop (one message in flight per connection, as
//! MLLP senders work), pipelined (`--depth D`) or open loop at a fixed rate (`--rate R`,
//! latency from the intended send time). Every ACK is verified; `--check` verifies a server
//! without timing it. Exit status: 0 when messages were answered and none wrongly, 1 otherwise.

use clap::{Parser, ValueEnum};
use mllpd_perf::bench::report::{CpuWindow, Report};
use mllpd_perf::bench::{check, conn, Mode, Plan, Shared};
use mllpd_perf::cpu::process_cpu_ns;
use mllpd_perf::message::{self, Template};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load modes on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// One message in flight per connection.
    Closed,
    /// `--depth` messages in flight per connection.
    Pipelined,
    /// Fixed rate (`--rate`), latency from the intended send time.
    Open,
    /// A new connection (with --tls-ca, a full TLS handshake) for each message, closed after
    /// its ACK: connections (handshakes) per second.
    Reconnect,
}

/// MLLP load generator with ACK verification.
#[derive(Debug, Parser)]
#[command(name = "mllp-bench", version)]
struct Args {
    /// Server address.
    #[arg(long, short = 'a', default_value = "127.0.0.1:2575")]
    addr: String,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
    /// Idle connections besides the sending ones: opened (plain TCP) before the clock starts,
    /// held without a byte, checked at the end (the report counts those the server closed).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Load mode.
    #[arg(long, value_enum, default_value = "closed")]
    mode: ModeArg,
    /// Messages in flight per connection (pipelined mode).
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Messages per second over all connections (open mode).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured window (e.g. 5s, 500ms, 2m).
    #[arg(long, short = 'd', default_value = "10s", value_parser = mllpd_perf::parse_duration)]
    duration: Duration,
    /// Stop after this many measured messages (whichever of this and --duration comes first).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Warmup before the window: sent and verified, not recorded.
    #[arg(long, default_value = "1s", value_parser = mllpd_perf::parse_duration)]
    warmup: Duration,
    /// File (one or many messages) or directory of files; default a built-in ADT^A01.
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Accepted MSA-1 codes, separated by `|` or `,`.
    #[arg(long, default_value = "AA|CA")]
    expect: String,
    /// CPU(s) to pin the generator threads to, e.g. `1` or `2,3`.
    #[arg(long, value_delimiter = ',')]
    cpu: Vec<usize>,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Measure this process's CPU time (all threads) over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only verify the server's ACKs (single, pipelined, split, every template); no timing.
    #[arg(long)]
    check: bool,
    /// Name of the server under test, for the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Keep retrying the first connect this long (server still starting).
    #[arg(long, default_value = "10s", value_parser = mllpd_perf::parse_duration)]
    connect_timeout: Duration,
    /// Wait this long for the last ACKs after the window.
    #[arg(long, default_value = "5s", value_parser = mllpd_perf::parse_duration)]
    drain_timeout: Duration,
    /// Never draw the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Speak TLS, trusting the CA certificates of this PEM file (closed loop and pipelined
    /// modes: each connection's full handshake is done before the window opens; reconnect
    /// mode: a full handshake per message).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that require mTLS; with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
}

/// The TLS client configuration the TLS options ask for (ring provider, TLS 1.2 and 1.3).
fn tls_config(args: &Args) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &args.tls_ca else {
        return Ok(None);
    };
    let certs = |path: &std::path::Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs(cert)?, key)
                .map_err(|e| e.to_string())?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("mllp-bench: {e}");
            std::process::exit(2);
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

fn run(args: Args) -> Result<bool, String> {
    let addr = resolve(&args.addr)?;
    let templates = match &args.messages {
        Some(path) => message::load(path)?,
        None => vec![Template::parse(message::BUILTIN_ADT_A01.as_bytes())?],
    };
    let accepted: Vec<Vec<u8>> = args
        .expect
        .split(['|', ','])
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect();
    if args.check {
        return Ok(run_check(&args, addr, &templates, &accepted));
    }
    let plan = plan(&args, addr, templates, accepted)?;
    raise_nofile(plan.connections + plan.idle)?;
    let mut sampler = None;
    let mut progress = None;
    let (shared, stats) = conn::run(
        &plan,
        |opened| {
            if let Some(pid) = args.server_pid {
                wait_accepted(pid, opened, args.connect_timeout);
            }
        },
        |shared| {
            sampler = Some(spawn_sampler(shared.clone(), args.server_pid));
            progress = spawn_progress(shared, &plan, args.no_progress);
        },
    );
    shared.finished.store(true, Ordering::Relaxed);
    let cpu = sampler.and_then(|s| s.join().ok()).unwrap_or_default();
    if let Some(p) = progress {
        let _ = p.join();
    }
    let report = Report::new(args.label.clone(), &plan, &shared, &stats, cpu);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.text());
    }
    Ok(report.passed())
}

fn plan(
    args: &Args,
    addr: SocketAddr,
    templates: Vec<Template>,
    accepted: Vec<Vec<u8>>,
) -> Result<Plan, String> {
    if args.connections == 0 || args.threads == 0 {
        return Err("--connections and --threads must be at least 1".to_owned());
    }
    if args.idle > 0 && args.tls_ca.is_some() {
        return Err("--idle: idle connections are plain TCP (no --tls-ca)".to_owned());
    }
    let mode = match args.mode {
        ModeArg::Closed => Mode::Window { depth: 1 },
        ModeArg::Pipelined => Mode::Window {
            depth: args.depth.max(1),
        },
        ModeArg::Reconnect => Mode::Reconnect,
        ModeArg::Open => Mode::Open {
            rate: args
                .rate
                .filter(|r| *r > 0.0)
                .ok_or("--mode open needs --rate > 0")?,
        },
    };
    let run_tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() % 100_000) as u32);
    Ok(Plan {
        addr,
        connections: args.connections,
        idle: args.idle,
        mode,
        duration: args.duration,
        count: args.count,
        warmup: args.warmup,
        templates: Arc::new(templates),
        accepted_codes: Arc::new(accepted),
        threads: args.threads.min(args.connections),
        cpus: args.cpu.clone(),
        connect_timeout: args.connect_timeout,
        drain_timeout: args.drain_timeout,
        run_tag,
        tls: tls_config(args)?,
        tls_server_name: args.tls_server_name.clone(),
    })
}

fn run_check(args: &Args, addr: SocketAddr, templates: &[Template], accepted: &[Vec<u8>]) -> bool {
    let results = check::run(addr, templates, accepted, args.connect_timeout);
    let passed = results.iter().all(|r| r.failure.is_none());
    if args.json {
        let value = serde_json::json!({ "label": args.label, "addr": addr.to_string(), "check": if passed { "pass" } else { "fail" }, "steps": results });
        println!("{value}");
    } else {
        for r in &results {
            match &r.failure {
                None => println!("{} {}: ok", args.label, r.step),
                Some(f) => println!("{} {}: WRONG: {f}", args.label, r.step),
            }
        }
    }
    passed
}

/// Raises this process's soft RLIMIT_NOFILE (up to the hard limit) so `connections` sockets
/// fit beside the process's own descriptors; an error when the hard limit is too low.
fn raise_nofile(connections: usize) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // Descriptors besides the connections: stdio, the runtimes' epoll and eventfds, /proc reads.
    let needed = connections as u64 + 64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if needed <= soft {
        return Ok(());
    }
    if needed > hard {
        return Err(format!(
            "{connections} connections need {needed} descriptors; RLIMIT_NOFILE hard limit is \
             {hard} (raise it: ulimit -Hn, or prlimit --nofile)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).map_err(|e| e.to_string())
}

/// Waits until server `pid` holds at least `opened` descriptors (it has accepted every
/// connection, so no accept falls into the window), or its count has not moved for 500 ms
/// (it closed some: the report shows them), or `limit` has passed.
fn wait_accepted(pid: u32, opened: usize, limit: Duration) {
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let deadline = Instant::now() + limit;
    let mut last = (fds(), Instant::now());
    while last.0 < opened && Instant::now() < deadline {
        // Polling /proc: the server offers no event to wait on.
        std::thread::sleep(Duration::from_millis(20));
        let now = fds();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(500) {
            return;
        }
    }
}

/// Samples server and generator CPU at the window's start and end.
fn spawn_sampler(
    shared: Arc<Shared>,
    server_pid: Option<u32>,
) -> std::thread::JoinHandle<CpuWindow> {
    std::thread::spawn(move || {
        let own = std::process::id();
        let sample = || {
            (
                server_pid.and_then(|p| process_cpu_ns(p).ok()),
                process_cpu_ns(own).ok(),
            )
        };
        sleep_until(shared.measure_start, &shared);
        let (s0, c0) = sample();
        sleep_until(shared.measure_end, &shared);
        let (s1, c1) = sample();
        shared.end_sampled.store(true, Ordering::Relaxed);
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        CpuWindow {
            server_ns: delta(s0, s1),
            client_ns: delta(c0, c1),
        }
    })
}

fn sleep_until(when: Instant, shared: &Shared) {
    while Instant::now() < when && !shared.over() {
        // Short naps: the count bound may end the window early.
        std::thread::sleep((when - Instant::now()).min(Duration::from_millis(1)));
    }
}

/// A progress bar over warmup + window on runs of 3 s or more; indicatif draws nothing when
/// stderr is not a terminal.
fn spawn_progress(
    shared: &Arc<Shared>,
    plan: &Plan,
    disabled: bool,
) -> Option<std::thread::JoinHandle<()>> {
    let total = plan.warmup + plan.duration;
    if disabled || total < Duration::from_secs(3) {
        return None;
    }
    let shared = shared.clone();
    Some(std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut last = (Instant::now(), 0u64);
        while !shared.over() {
            std::thread::sleep(Duration::from_millis(250));
            let acked = shared.acked.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (acked - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, acked);
            bar.set_position((now - shared.t0).as_millis() as u64);
            bar.set_message(format!(
                "{rate:.0} msgs/s, {} mismatches",
                shared.mismatches.load(Ordering::Relaxed)
            ));
        }
        bar.finish_and_clear();
    }))
}
