//! The server: glommio shards, the listener, the per-connection driver, timeouts, shutdown.
//!
//! `run` checks the kernel facilities, resolves the listen address (port 0 included) with a
//! reservation socket, starts one shard per CPU of the process's affinity mask (each pinned,
//! each binding the address with SO_REUSEPORT), prints the start line, and then waits on the
//! main thread for a signal: the first starts PRE_SHUTDOWN_DELAY then the drain, the second
//! exits at once; SIGHUP reloads (the validation rules, compiled on the signal thread and
//! taken by each shard between two messages; no connection is touched). `server/` is the only
//! module that awaits a socket.

mod clock;
mod connection;
mod listener;
mod placement;
mod preflight;
mod respond;
mod shard;
mod tls_session;
mod transport;
mod uring;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use tracing::{error, info, warn};

use crate::admission::RulesSlot;
use crate::config::Config;
use crate::limits;
use crate::rules::{RuleSet, RulesOptions};

pub use clock::format_timestamp;
pub use respond::Responder;

/// Memory glommio registers per shard for file IO. Sockets do not use it; the journal will
/// (its issue sizes this). Kept small so several shards fit in an 8 MiB RLIMIT_MEMLOCK.
const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;

/// What a shard tells the main thread while it starts.
pub(crate) enum Startup {
    /// Its journal recovery is still running and made progress.
    Recovering,
    /// Its journal is recovered; it goes on to bind (within BIND_TIMEOUT).
    Recovered,
    /// It serves, on this socket path ("uring" or "glommio").
    Serving(&'static str),
    /// It could not start, and why.
    Failed(String),
}

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The kernel (or a seccomp filter) does not allow io_uring.
    #[error("io_uring is unavailable: {0}")]
    IoUringUnavailable(String),
    /// RLIMIT_MEMLOCK is below what glommio needs.
    #[error("locked memory limit too small: {0}")]
    MemlockTooSmall(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// LISTEN_ADDR.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The drain did not finish within DRAIN_TIMEOUT, or a second signal cut it short.
    #[error("shutdown: {0}")]
    Shutdown(String),
    /// A shard failed in a way that must restart the process (a poisoned journal); the
    /// server drained first.
    #[error("fatal: {0}")]
    Fatal(String),
    /// Any other start-up or runtime failure.
    #[error("{0}")]
    Other(String),
}

/// What the main thread waits for.
pub(crate) enum Event {
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// A shard failed in a way that must end the process (a poisoned journal).
    Fatal(String),
    /// Every shard has finished; the strings are the failures.
    ShardsDone(Vec<String>),
}

/// Runs the server until shutdown completes.
pub fn run(config: Config) -> Result<(), ServerError> {
    preflight::check()?;
    preflight::log_unbounded_settings(
        config.connections_max,
        config.keep_alive_period,
        config.connect_timeout,
        config.tls_cert_file.is_some(),
    );
    let cpus = placement::affinity_cpus().map_err(ServerError::Other)?;
    let shard_cpus = placement::shard_cpus(&cpus, config.shards);
    let reservation =
        listener::bind(config.listen_addr, config.keep_alive_period).map_err(|source| {
            ServerError::Bind {
                addr: config.listen_addr,
                source,
            }
        })?;
    let listen_addr = reservation
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ServerError::Other("cannot read the bound address".to_owned()))?;
    crate::journal::create_dir_durable(&config.data_dir)
        .map_err(|e| ServerError::Other(format!("DATA_DIR {}: {e}", config.data_dir.display())))?;
    let rules = RuleSet::compile(&config.validation.rules, &RulesOptions::default())
        .map_err(|e| ServerError::Other(format!("validation: {e}")))?;
    if !rules.is_empty() {
        info!(
            generation = 1,
            rules = rules.len(),
            "validation rules loaded"
        );
    }
    let rules = RulesSlot::new(rules);
    let metrics = crate::metrics::Metrics::new(shard_cpus.len(), crate::logging::lines_dropped);
    start_admin(&config, listen_addr, &metrics)?;
    let (audit, audit_flush) = match &config.audit_log {
        None => (None, None),
        Some(path) => {
            let (sender, flush) = crate::audit::start(crate::audit::AuditOptions {
                path: path.clone(),
                file_bytes_max: limits::AUDIT_FILE_BYTES_MAX,
                files_max: limits::AUDIT_FILES_MAX,
            })
            .map_err(|e| ServerError::Other(format!("AUDIT_LOG {}: {e}", path.display())))?;
            (Some(sender), Some(flush))
        }
    };
    let tls = match crate::config::tls_server_options(&config) {
        None => None,
        Some(options) => {
            let loaded = crate::tls::ServerTls::load(&options)
                .map_err(|e| ServerError::Other(format!("TLS: {e}")))?;
            log_tls_loaded(&loaded, &options, 1, 0);
            Some((Arc::new(crate::tls::TlsSlot::new(loaded)), options))
        }
    };
    let (events_tx, events) = mpsc::channel();
    let mut reloads = vec![reload_rules(config.config_file.clone(), Arc::clone(&rules))];
    if let Some((slot, options)) = &tls {
        reloads.push(reload_tls(options.clone(), Arc::clone(slot)));
    }
    watch_signals(events_tx.clone(), reloads)?;
    let mut delivery = prepare_delivery(&config, &cpus, &shard_cpus)?;
    let _ = metrics.connectors.set(delivery.counters());
    let shared = Arc::new(shard::Shared {
        rules,
        watermarks: (0..shard_cpus.len())
            .map(|i| delivery.watermark(i))
            .collect(),
        sync_acks: (config.ack_after == crate::config::AckAfter::Delivery)
            .then(|| delivery.sync_acks())
            .flatten(),
        listen_addr,
        draining: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        start_unix_seconds: clock::unix_seconds_now(),
        events: std::sync::Mutex::new(events_tx.clone()),
        config,
        metrics,
        audit,
        tls: tls.map(|(slot, _)| slot),
    });
    let socket_io = start_shards(&shared, &shard_cpus, events_tx)?;
    shared
        .metrics
        .readiness
        .serving
        .store(true, Ordering::Release);
    drop(reservation);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listen_addr,
        shards = shard_cpus.len(),
        cpus = ?shard_cpus,
        data_dir = %shared.config.data_dir.display(),
        socket_io,
        "mllpd started"
    );
    // The journals are recovered (every shard serves): delivery may read them now.
    if let Err(e) = delivery.start() {
        shared.draining.store(true, Ordering::Release);
        delivery.stop();
        return Err(ServerError::Other(e));
    }
    let stopped = wait_for_shutdown(&shared, &events);
    // Intake has stopped (the shards drained, or the process is exiting): stop delivery; each
    // connector writes its cursor and resumes from it at the next start.
    delivery.stop();
    let cut_short = matches!(stopped, Err(ServerError::Shutdown(_)));
    if let Some(flush) = audit_flush.filter(|_| !cut_short) {
        // The shards are done: every line they queued is written out before the exit.
        if !flush.flush(limits::AUDIT_FLUSH_TIMEOUT) {
            error!("the audit log could not be written out at exit");
        }
    }
    stopped
}

/// The delivery engine for `config`, its cursors loaded (before the journals open, whose
/// retention must respect them). Its threads go on the CPUs of the affinity mask no shard is
/// pinned to; when every CPU has a shard they are left to the scheduler (the shards are
/// pinned, the delivery threads are not).
fn prepare_delivery(
    config: &Config,
    cpus: &[usize],
    shard_cpus: &[usize],
) -> Result<crate::route::Engine, ServerError> {
    let free: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|cpu| !shard_cpus.contains(cpu))
        .collect();
    crate::route::Engine::prepare(crate::route::EngineOptions {
        data_dir: config.data_dir.clone(),
        shards: shard_cpus.len(),
        routing: config.routing.clone(),
        cpus: free,
        parse_options: crate::hl7::ParseOptions {
            default_charset: config.default_charset,
        },
    })
    .map_err(|e| ServerError::Other(format!("delivery: {e}")))
}

/// Binds ADMIN_ADDR (unless off) and starts the admin thread; it answers 503 on `/readyz` until
/// every shard serves. Refused when it is the MLLP address (the configuration already refuses
/// equal values; this catches LISTEN_ADDR port 0 resolving to it).
fn start_admin(
    config: &Config,
    listen_addr: SocketAddr,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<(), ServerError> {
    let Some(addr) = config.admin_addr else {
        return Ok(());
    };
    if addr == listen_addr {
        return Err(ServerError::Other(format!(
            "ADMIN_ADDR {addr} is the MLLP listen address; use another port, or off"
        )));
    }
    let options = crate::admin::AdminOptions {
        addr,
        heartbeat_stale: limits::HEARTBEAT_STALE,
    };
    let admin = crate::admin::Admin::bind(options)
        .map_err(|e| ServerError::Other(format!("cannot listen on ADMIN_ADDR {addr}: {e}")))?;
    let bound = admin
        .local_addr()
        .map_err(|e| ServerError::Other(e.to_string()))?;
    admin
        .spawn(Arc::clone(metrics))
        .map_err(|e| ServerError::Other(format!("cannot start the admin thread: {e}")))?;
    info!(admin = %bound, "admin endpoint listening");
    Ok(())
}

/// One SIGHUP, as the signal thread hands it to every part that reloads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReloadEvent {
    /// How many SIGHUPs were received, this one included.
    pub number: u64,
}

/// A part of the server that reloads on SIGHUP: the validation rules today; TLS certificates
/// and connectors will hook in the same way. It runs on the signal thread, off the shards, and
/// must leave what is in force untouched when what it reads is not valid.
pub(crate) type ReloadHook = Box<dyn Fn(ReloadEvent) + Send>;

/// The hook that re-reads CONFIG_FILE's validation rules, compiles them and, when they are
/// valid, publishes them to `slot` as the next generation (each shard takes it before its next
/// message); otherwise the rules in force stay and the error is logged.
fn reload_rules(config_file: Option<std::path::PathBuf>, slot: Arc<RulesSlot>) -> ReloadHook {
    Box::new(move |event| {
        let Some(path) = &config_file else {
            info!(
                reload = event.number,
                "SIGHUP: no CONFIG_FILE; validation rules unchanged"
            );
            return;
        };
        match crate::config::load_rules(path) {
            Ok(set) => {
                let rules = set.len();
                let generation = slot.publish(set);
                info!(
                    reload = event.number,
                    generation, rules, "validation rules reloaded"
                );
            }
            Err(error) => error!(
                reload = event.number,
                generation = slot.generation(),
                %error,
                "validation rules reload refused; the rules in force stay"
            ),
        }
    })
}

/// The hook that re-reads the TLS certificate, key and client CA and, when they make a valid
/// configuration, puts it in force for connections accepted from now on (established ones keep
/// their session); otherwise the configuration in force stays and the error is logged.
fn reload_tls(options: crate::tls::ServerOptions, slot: Arc<crate::tls::TlsSlot>) -> ReloadHook {
    Box::new(move |event| match crate::tls::ServerTls::load(&options) {
        Ok(loaded) => {
            let generation = slot.publish(loaded);
            log_tls_loaded(&slot.current(), &options, generation, event.number);
        }
        Err(error) => error!(
            reload = event.number,
            %error,
            "TLS reload refused; the certificate, key and client CA in force stay"
        ),
    })
}

/// Logs a TLS configuration put in force, and warns when its certificate expires within
/// `limits::TLS_CERT_EXPIRY_WARNING`.
fn log_tls_loaded(
    tls: &crate::tls::ServerTls,
    options: &crate::tls::ServerOptions,
    generation: u64,
    reload: u64,
) {
    info!(
        reload,
        generation,
        cert_file = %options.cert_file.display(),
        subject_cn = ?tls.subject_cn,
        client_ca = ?options.client_ca,
        min_version = ?options.min_version,
        client_allowed = ?options.client_allowed,
        "TLS certificate loaded"
    );
    let now = clock::unix_seconds_now() as i64;
    if let Some(days) = tls.expires_soon(now) {
        warn!(
            reload,
            cert_file = %options.cert_file.display(),
            days_left = days,
            not_after_unix_seconds = tls.not_after_unix_seconds,
            "TLS certificate expires within 14 days"
        );
    }
}

/// Starts the signal thread: SIGTERM and SIGINT go to the main thread (shutdown); SIGHUP is a
/// reload event handed to every hook in `reloads`, in order, on this thread.
fn watch_signals(events: mpsc::Sender<Event>, reloads: Vec<ReloadHook>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| ServerError::Other(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("mllpd-signals".to_owned())
        .spawn(move || {
            let mut reload = ReloadEvent { number: 0 };
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload.number += 1;
                    for hook in &reloads {
                        hook(reload);
                    }
                    continue;
                }
                if events.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| ServerError::Other(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

fn start_shards(
    shared: &Arc<shard::Shared>,
    shard_cpus: &[usize],
    events: mpsc::Sender<Event>,
) -> Result<&'static str, ServerError> {
    let (bound_tx, bound_rx) = mpsc::channel();
    let next_index = Arc::new(AtomicUsize::new(0));
    let shard_shared = shared.clone();
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Custom(
        placement::cpu_sets(shard_cpus).map_err(ServerError::Other)?,
    ))
    .name("mllpd-shard")
    .io_memory(SHARD_IO_MEMORY_BYTES)
    .on_all_shards(move || {
        let index = next_index.fetch_add(1, Ordering::Relaxed);
        shard::run(index, shard_shared, bound_tx)
    })
    .map_err(|e| ServerError::Other(format!("cannot start shards: {e}")))?;
    std::thread::Builder::new()
        .name("mllpd-join".to_owned())
        .spawn(move || {
            let failures = handles
                .join_all()
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string()))
                .collect();
            let _ = events.send(Event::ShardsDone(failures));
        })
        .map_err(|e| ServerError::Other(format!("cannot start the join thread: {e}")))?;
    let started = wait_for_shards(&bound_rx, shard_cpus.len());
    if started.is_err() {
        shared.draining.store(true, Ordering::Release);
    }
    started
}

/// Waits until `shards` shards serve; returns the socket path they took. Journal recovery is
/// not bounded by the bind timeout: while a shard recovers, start-up waits as long as it reports
/// progress (failing only after RECOVERY_STALL_TIMEOUT without any); once every shard has
/// recovered, they have the bind timeout to serve.
fn wait_for_shards(
    bound_rx: &mpsc::Receiver<Startup>,
    shards: usize,
) -> Result<&'static str, ServerError> {
    let bind_timeout = bind_timeout();
    let (mut recovered, mut serving) = (0, 0);
    let mut bind_deadline: Option<Instant> = None;
    // The socket path the shards took (SOCKET_IO=auto decides per shard, all alike in practice).
    let mut socket_io = None;
    while serving < shards {
        let timeout = match bind_deadline {
            None => limits::RECOVERY_STALL_TIMEOUT,
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        };
        match bound_rx.recv_timeout(timeout) {
            Ok(Startup::Recovering) => {}
            Ok(Startup::Recovered) => recovered += 1,
            Ok(Startup::Serving(path)) => {
                serving += 1;
                socket_io = match socket_io {
                    Some(seen) if seen != path => Some("mixed"),
                    _ => Some(path),
                };
            }
            Ok(Startup::Failed(message)) => return Err(ServerError::Other(message)),
            Err(mpsc::RecvTimeoutError::Timeout) if bind_deadline.is_none() => {
                return Err(ServerError::Other(format!(
                    "journal recovery made no progress for {:?}",
                    limits::RECOVERY_STALL_TIMEOUT
                )));
            }
            Err(_) => return Err(ServerError::Other("a shard failed to start".to_owned())),
        }
        if recovered == shards && bind_deadline.is_none() {
            bind_deadline = Some(Instant::now() + bind_timeout);
        }
    }
    Ok(socket_io.unwrap_or("none"))
}

/// [`limits::BIND_TIMEOUT`], or `MLLPD_FAULT_BIND_TIMEOUT` when set: a test hook that shortens
/// it, so a test can show that a recovery longer than the bind timeout still starts.
fn bind_timeout() -> Duration {
    let hook = std::env::var("MLLPD_FAULT_BIND_TIMEOUT").ok();
    match hook.and_then(|v| humantime::parse_duration(&v).ok()) {
        Some(timeout) => {
            warn!(
                ?timeout,
                "bind timeout shortened (MLLPD_FAULT_BIND_TIMEOUT): test use only"
            );
            timeout
        }
        None => limits::BIND_TIMEOUT,
    }
}

fn wait_for_shutdown(
    shared: &shard::Shared,
    events: &mpsc::Receiver<Event>,
) -> Result<(), ServerError> {
    let mut fatal = None;
    match events.recv() {
        Ok(Event::Signal(signal)) => {
            // Not ready from this moment: a load balancer polling /readyz takes this instance
            // out of rotation during PRE_SHUTDOWN_DELAY, while it still serves.
            shared
                .metrics
                .readiness
                .terminating
                .store(true, Ordering::Release);
            info!(signal, delay = ?shared.config.pre_shutdown_delay,
                "shutdown requested; serving until PRE_SHUTDOWN_DELAY ends");
            match wait(events, shared.config.pre_shutdown_delay) {
                Wake::Quiet => {}
                Wake::Signal => return Err(second_signal()),
                Wake::Fatal(reason) => fatal = Some(reason),
                Wake::Done(failures) => return shards_done(failures),
            }
        }
        Ok(Event::Fatal(reason)) => fatal = Some(reason),
        Ok(Event::ShardsDone(failures)) => return shards_done(failures),
        Err(_) => return Err(ServerError::Other("event channel closed".to_owned())),
    }
    info!(timeout = ?shared.config.drain_timeout, "draining: no new connections");
    shared.draining.store(true, Ordering::Release);
    let deadline = Instant::now() + shared.config.drain_timeout;
    loop {
        match wait(events, deadline.saturating_duration_since(Instant::now())) {
            Wake::Quiet => {
                error!(timeout = ?shared.config.drain_timeout, "drain did not finish in time");
                let reason = "DRAIN_TIMEOUT passed with connections open".to_owned();
                return Err(ServerError::Shutdown(reason));
            }
            Wake::Signal => return Err(second_signal()),
            Wake::Fatal(reason) => {
                fatal.get_or_insert(reason);
            }
            Wake::Done(failures) => {
                return match fatal {
                    Some(reason) => Err(ServerError::Fatal(reason)),
                    None => shards_done(failures),
                };
            }
        }
    }
}

/// What ended a wait of the main thread.
enum Wake {
    /// The period passed.
    Quiet,
    /// Another signal.
    Signal,
    /// A shard reported a fatal failure.
    Fatal(String),
    /// Every shard finished.
    Done(Vec<String>),
}

fn wait(events: &mpsc::Receiver<Event>, period: Duration) -> Wake {
    match events.recv_timeout(period) {
        Ok(Event::Signal(_)) => Wake::Signal,
        Ok(Event::Fatal(reason)) => Wake::Fatal(reason),
        Ok(Event::ShardsDone(failures)) => Wake::Done(failures),
        Err(mpsc::RecvTimeoutError::Timeout) => Wake::Quiet,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Wake::Done(vec!["event channel closed".to_owned()])
        }
    }
}

fn second_signal() -> ServerError {
    warn!("second signal; exiting without finishing the drain");
    ServerError::Shutdown("second signal".to_owned())
}

fn shards_done(failures: Vec<String>) -> Result<(), ServerError> {
    if failures.is_empty() {
        info!("all shards drained; exiting");
        Ok(())
    } else {
        Err(ServerError::Other(format!(
            "shards failed: {}",
            failures.join("; ")
        )))
    }
}
