//! The mllpd binary: CLI → Config → logging → run. Everything else lives in the library.

use std::process::ExitCode;

use mllpd::cli::{self, DlqCommand, Invocation};
use mllpd::config::{Config, Overrides};
use mllpd::route::dlq as dead_letters;

// mimalloc: thread-local free lists suit thread-per-core shards that each allocate and free
// their own connection buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when the server failed, or `check-config` found the configuration invalid.
const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line or configuration that cannot be used to start.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let invocation = match cli::parse_from(std::env::args_os()) {
        Ok(invocation) => invocation,
        // clap prints help and version to stdout with status 0, errors to stderr with 2.
        Err(error) => error.exit(),
    };
    match invocation {
        Invocation::Serve(overrides) => serve(&overrides),
        Invocation::CheckConfig(overrides) => check_config(&overrides),
        Invocation::Send(args) => mllpd::send::run(&args),
        Invocation::Validate(args) => mllpd::validate::run(&args),
        Invocation::Health(args) => match health(&args) {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mllpd: {error}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Invocation::Dlq(command) => match dlq(&command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mllpd: {error}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Invocation::Journal(command) => match mllpd::journal::export::run(&command) {
            Ok(()) => {
                if let cli::JournalCommand::Stats { data_dir } = &command {
                    print_delivery(data_dir);
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mllpd: {error}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
    }
}

/// `mllpd serve`: validates the configuration, sets up logging and runs the server.
fn serve(overrides: &Overrides) -> ExitCode {
    // Before anything starts: a release build never arms test faults by accident.
    if let Err(refused) = mllpd::journal::FaultPlan::check_env() {
        eprintln!("mllpd: {refused}");
        return ExitCode::from(EXIT_USAGE);
    }
    let config = match Config::resolve(overrides) {
        Ok(resolved) => resolved.config,
        Err(error) => {
            eprintln!("mllpd: invalid configuration: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Held to the end: dropping it writes out the queued log lines and reports drops.
    let _log = match mllpd::logging::init(&config) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("mllpd: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match mllpd::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mllpd: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `mllpd health`: one GET of /healthz (or /readyz) on the admin endpoint; `Ok` with the
/// status line on 200, `Err` with the status line and reason otherwise.
fn health(args: &cli::HealthArgs) -> Result<String, String> {
    use mllpd::limits::{HEALTH_PROBE_BYTES_MAX, HEALTH_PROBE_TIMEOUT};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let text = match args.admin_addr.as_str() {
        "off" => return Err("ADMIN_ADDR is off: there is no admin endpoint to ask".to_owned()),
        a if a.starts_with(':') => format!("127.0.0.1{a}"),
        a => a.to_owned(),
    };
    let fail = |e: std::io::Error| format!("admin endpoint {text}{path}: {e}");
    let addr = text.to_socket_addrs().map_err(fail)?.next();
    let addr = addr.ok_or_else(|| format!("admin endpoint {text}: no address"))?;
    // A server listening on every interface is asked on loopback.
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    };
    let mut stream = TcpStream::connect_timeout(&addr, HEALTH_PROBE_TIMEOUT).map_err(fail)?;
    stream
        .set_read_timeout(Some(HEALTH_PROBE_TIMEOUT))
        .map_err(fail)?;
    stream
        .set_write_timeout(Some(HEALTH_PROBE_TIMEOUT))
        .map_err(fail)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: mllpd\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut answer = Vec::new();
    stream
        .take(HEALTH_PROBE_BYTES_MAX)
        .read_to_end(&mut answer)
        .map_err(fail)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or("no answer").trim();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    match status.split(' ').nth(1) {
        Some("200") => Ok(format!("{path}: {status}")),
        _ => Err(format!("{path}: {status}: {body}")),
    }
}

/// `mllpd check-config`: validates every setting, the CONFIG_FILE and DATA_DIR, and prints a
/// summary.
fn check_config(overrides: &Overrides) -> ExitCode {
    let checked = Config::resolve(overrides)
        .and_then(|resolved| {
            resolved.check_data_dir()?;
            Ok(resolved)
        })
        .map_err(|error| error.to_string())
        .and_then(|resolved| {
            check_tls(&resolved.config)?;
            Ok(resolved)
        });
    match checked {
        Ok(resolved) => {
            println!("configuration is valid:\n{}", resolved.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mllpd: invalid configuration: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Loads the TLS files as the server would at start (certificate chain, key, client CA, and
/// that the key matches the certificate), so a bad or missing file fails `check-config`
/// naming it, not the first connection.
fn check_tls(config: &Config) -> Result<(), String> {
    let Some(options) = mllpd::config::tls_server_options(config) else {
        return Ok(());
    };
    mllpd::tls::ServerTls::load(&options)
        .map(|_| ())
        .map_err(|error| format!("TLS: {error}"))
}

/// `mllpd dlq …`: a connector's dead letters (issue 11).
fn dlq(command: &DlqCommand) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List(t) => dead_letters::list(&t.data_dir, &t.connector, &mut out),
        DlqCommand::Show { target: t, id } => {
            dead_letters::show(&t.data_dir, &t.connector, id, &mut out)
        }
        DlqCommand::Replay {
            target: t,
            ids,
            all,
        } => {
            let count = dead_letters::replay(&t.data_dir, &t.connector, ids, *all)?;
            println!(
                "{count} dead letter(s) handed back to connector {}",
                t.connector
            );
            Ok(())
        }
        DlqCommand::Purge {
            target: t,
            ids,
            all,
        } => {
            let count = dead_letters::purge(&t.data_dir, &t.connector, ids, *all)?;
            println!(
                "{count} dead letter(s) purged from connector {}",
                t.connector
            );
            Ok(())
        }
    }
}

/// After `journal stats`: where each connector's delivery stands (issue 11).
fn print_delivery(data_dir: &std::path::Path) {
    let journals: Vec<(usize, Option<u64>)> = mllpd::journal::export::stats(data_dir)
        .map(|s| s.iter().map(|s| (s.shard, s.last_seq)).collect())
        .unwrap_or_default();
    let report = mllpd::route::delivery_report(data_dir, &journals);
    if !report.is_empty() {
        print!("\n{report}");
    }
}
