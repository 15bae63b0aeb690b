//! One shard: a glommio executor pinned to a CPU that accepts on its own SO_REUSEPORT listener
//! and owns every connection it accepts for its whole life. State here is shard-local (`Rc`,
//! `Cell`): nothing on the receive path is shared with another shard. The only cross-thread
//! values are the server-wide connection count (touched on accept and close, not per message)
//! and the shutdown flag (polled by a timer).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use tracing::{error, info, warn};

use crate::admission::{Admission, RulesSlot};
use crate::config::{AckAfter, Config, JournalSync};
use crate::hl7::ParseOptions;
use crate::journal::{shard_dir, FaultPlan, Journal, JournalOptions, RecoveryProgress, SyncMode};

use super::clock::{self, ControlIds};
use super::connection;
use super::listener;
use super::respond::Responder;
use super::Startup;

/// How often a shard looks at the process-wide shutdown flag. Signals arrive on the main
/// thread; 50 ms bounds the reaction time at negligible cost (20 wake-ups per second).
const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Least time between two "over MAX_CONNECTIONS" or accept-error log lines of one shard, so a
/// connection flood cannot flood the log too.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What all shards share: the configuration and two process-wide values.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// The address every shard binds (port 0 already resolved).
    pub listen_addr: SocketAddr,
    /// Set by the main thread when the drain starts.
    pub draining: AtomicBool,
    /// Open connections across all shards (MAX_CONNECTIONS).
    pub connections: AtomicUsize,
    /// Process start time, for ACK control ids.
    pub start_unix_seconds: u64,
    /// Where a shard reports a failure that must end the process (after a drain).
    pub events: std::sync::Mutex<std::sync::mpsc::Sender<super::Event>>,
    /// The validation rules in force (replaced on SIGHUP).
    pub rules: Arc<RulesSlot>,
    /// Each shard's journal watermark, shared with the delivery engine (issue 11).
    pub watermarks: Vec<Arc<crate::journal::Watermark>>,
    /// ACK_AFTER=delivery: the sync connectors' confirmations the ACKs wait for.
    pub sync_acks: Option<Arc<crate::route::SyncAcks>>,
    /// Every shard's counters and the readiness the admin endpoint reports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the audit lines go (AUDIT_LOG), if on.
    pub audit: Option<crate::audit::AuditSender>,
    /// The TLS configuration in force when the listener is TLS (replaced on SIGHUP, for
    /// connections accepted after).
    pub tls: Option<Arc<crate::tls::TlsSlot>>,
}

impl Shared {
    /// Reports a failure that must end the process: the main thread drains every shard and
    /// exits non-zero, so the supervisor restarts mllpd and recovery runs.
    pub fn fail(&self, reason: String) {
        self.metrics.readiness.failed.store(true, Ordering::Release);
        if let Ok(events) = self.events.lock() {
            let _ = events.send(super::Event::Fatal(reason));
        }
    }
}

/// Per-shard counters: atomics only this shard writes, read by the admin thread
/// (`crate::metrics`).
pub type ShardStats = crate::metrics::ShardCounters;

/// A slot for one task's waker, woken when the shard starts draining.
#[derive(Default)]
pub struct WakerSlot(Cell<Option<Waker>>);

impl std::fmt::Debug for WakerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WakerSlot")
    }
}

impl WakerSlot {
    fn register(&self, waker: &Waker) {
        match self.0.take() {
            Some(old) if old.will_wake(waker) => self.0.set(Some(old)),
            _ => self.0.set(Some(waker.clone())),
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.0.take() {
            waker.wake();
        }
    }
}

/// The state of one shard.
#[derive(Debug)]
pub struct Shard {
    /// Index of this shard (0-based), in logs and connection ids.
    pub index: usize,
    /// What all shards share.
    pub shared: Arc<Shared>,
    /// Whether this shard is draining.
    draining: Cell<bool>,
    /// Waker slots of the tasks that wait for the drain: connections (by id) and the acceptor.
    waiters: RefCell<HashMap<u64, Rc<WakerSlot>>>,
    /// Connections of this shard still open.
    open: Cell<usize>,
    /// Woken when the last connection closes during a drain.
    all_closed: Rc<WakerSlot>,
    /// Connection ids handed out.
    next_connection: Cell<u64>,
    /// ACK writer shared by the shard's connections (single-threaded; never held across await).
    pub responder: RefCell<Responder>,
    /// Where the fate of each frame is decided: parse options, the rules in force, their
    /// counters (single-threaded; never held across await).
    pub admission: RefCell<Admission>,
    /// Last second the responder's timestamp was set for.
    clock_second: Cell<u64>,
    /// The shard's journal.
    pub journal: Rc<Journal>,
    /// The shard's socket ring (SOCKET_IO=uring), or none (glommio's sockets).
    pub sockets: Option<Rc<super::uring::Sockets>>,
    /// Whether a fatal failure was already reported.
    failed: Cell<bool>,
    /// When an evaluation error was last logged, and how many were not logged since.
    evaluation_errors_logged: Cell<(Option<Instant>, u64)>,
    /// When an oversized frame was last logged, and how many were not logged since.
    connection_errors_logged: Cell<(Option<Instant>, u64)>,
    /// Counters (shared with the admin thread; written only here).
    pub stats: Arc<ShardStats>,
}

/// Id reserved for the acceptor's waker slot (connection ids start at 1).
const ACCEPTOR_WAITER: u64 = 0;

impl Shard {
    /// A shard with the given index.
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        journal: Rc<Journal>,
        sockets: Option<Rc<super::uring::Sockets>>,
    ) -> Self {
        let parse_options = ParseOptions {
            default_charset: shared.config.default_charset,
        };
        let control_ids = ControlIds::new(shared.start_unix_seconds, index);
        Shard {
            index,
            draining: Cell::new(false),
            waiters: RefCell::new(HashMap::new()),
            open: Cell::new(0),
            all_closed: Rc::new(WakerSlot::default()),
            next_connection: Cell::new(0),
            responder: RefCell::new(Responder::new(control_ids)),
            admission: RefCell::new(Admission::new(parse_options, shared.rules.clone())),
            clock_second: Cell::new(u64::MAX),
            journal,
            sockets,
            failed: Cell::new(false),
            evaluation_errors_logged: Cell::new((None, 0)),
            connection_errors_logged: Cell::new((None, 0)),
            stats: shared
                .metrics
                .shards
                .get(index)
                .cloned()
                .unwrap_or_default(),
            shared,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Whether ACKs wait for the journal's flush (ACK_AFTER=journal, and =delivery, whose
    /// ACK also waits for the sync connectors).
    pub fn waits_for_journal(&self) -> bool {
        self.shared.config.ack_after != AckAfter::Receipt
    }

    /// Reports a failure that must end the process, once per shard.
    pub fn fail(&self, reason: &str) {
        if !self.failed.replace(true) {
            error!(shard = self.index, reason, "fatal: draining and exiting");
            self.shared.fail(format!("shard {}: {reason}", self.index));
        }
    }

    /// Whether an evaluation error may be logged now (at most one line per LOG_INTERVAL):
    /// `Some(errors not logged since the last line)`, or `None` when it is to be counted only.
    pub fn evaluation_error_log_due(&self) -> Option<u64> {
        log_due(&self.evaluation_errors_logged)
    }

    /// Like [`Shard::evaluation_error_log_due`], for oversized frames (each closes its
    /// connection): many connections failing alike must not flood the log; the metrics count
    /// every one. (A flood cut is logged each time: it already costs the sender 1000 frames.)
    pub fn connection_error_log_due(&self) -> Option<u64> {
        log_due(&self.connection_errors_logged)
    }

    /// Whether the shard is draining (no new frames are waited for between frames).
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves once the shard starts draining; `slot` holds the waiting task's waker.
    pub fn drain_signal<'s>(&'s self, slot: &'s WakerSlot) -> DrainSignal<'s> {
        DrainSignal { shard: self, slot }
    }

    /// Refreshes the ACK timestamp when the wall-clock second changed; `now_unix_micros` is
    /// the clock reading the caller already took for the read (one clock read per read).
    pub fn refresh_clock(&self, now_unix_micros: u64) {
        let now = now_unix_micros / 1_000_000;
        if now != self.clock_second.get() {
            self.clock_second.set(now);
            self.responder
                .borrow_mut()
                .set_timestamp(clock::format_timestamp(now));
        }
    }

    fn begin_drain(&self) {
        self.draining.set(true);
        for slot in self.waiters.borrow().values() {
            slot.wake();
        }
    }

    /// Registers a new connection; returns its id and waker slot.
    fn open_connection(&self) -> (u64, Rc<WakerSlot>) {
        let id = self.next_connection.get() + 1;
        self.next_connection.set(id);
        let slot = Rc::new(WakerSlot::default());
        self.waiters.borrow_mut().insert(id, slot.clone());
        self.open.set(self.open.get() + 1);
        self.stats.connections_open.set(self.open.get() as u64);
        (id, slot)
    }

    fn close_connection(&self, id: u64) {
        self.waiters.borrow_mut().remove(&id);
        self.open.set(self.open.get() - 1);
        self.stats.connections_open.set(self.open.get() as u64);
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        if self.open.get() == 0 {
            self.all_closed.wake();
        }
    }
}

/// Whether a rate-limited line may be logged now (at most one per LOG_INTERVAL): `Some(lines
/// not logged since the last one)`, or `None` when it is to be counted only.
fn log_due(state: &Cell<(Option<Instant>, u64)>) -> Option<u64> {
    let (last, unlogged) = state.get();
    let now = Instant::now();
    match last {
        Some(at) if now.saturating_duration_since(at) < LOG_INTERVAL => {
            state.set((last, unlogged + 1));
            None
        }
        _ => {
            state.set((Some(now), 0));
            Some(unlogged)
        }
    }
}

/// Future of [`Shard::drain_signal`].
pub struct DrainSignal<'s> {
    /// The shard watched.
    shard: &'s Shard,
    /// Where the waiting task's waker is kept.
    slot: &'s WakerSlot,
}

impl Future for DrainSignal<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shard.draining.get() {
            return Poll::Ready(());
        }
        self.slot.register(cx.waker());
        Poll::Pending
    }
}

/// The journal options of shard `shard` from the server's configuration (the journal takes its
/// own options; only `server` reads `config`).
fn journal_options(config: &Config, shard: usize) -> JournalOptions {
    JournalOptions {
        dedup_window: config.dedup_window,
        retention_age: config.retention_age,
        retention_bytes: config.retention_bytes,
        faults: FaultPlan::from_env().map(Rc::new),
        // ACK_AFTER=receipt promises no durability wait, so nothing waits for a flush: the AA
        // leaves once the record is in the in-memory batch, before the direct write (a crash or
        // kill of mllpd loses what was not yet written), and nothing is fdatasync'ed (an OS
        // crash or power loss loses what the device had not stored).
        sync: match config.ack_after {
            AckAfter::Journal | AckAfter::Delivery => match config.journal_sync {
                JournalSync::Fdatasync => SyncMode::Data,
                JournalSync::Dsync => SyncMode::Dsync,
            },
            AckAfter::Receipt => SyncMode::Disabled,
        },
        // Nothing waits for a receipt-mode write: gather them (one write per window at light
        // load, not one per message).
        group_delay: (config.ack_after == AckAfter::Receipt)
            .then_some(crate::limits::RECEIPT_GROUP_DELAY),
        ..JournalOptions::new(shard_dir(&config.data_dir, shard))
    }
}

/// Runs shard `index` until it has drained: opens its journal (recovery), binds its listener,
/// serves, drains, closes the journal. `bound` is told once the shard serves (and on which socket
/// path: "uring" or "glommio"), or why not.
pub async fn run(index: usize, shared: Arc<Shared>, bound: std::sync::mpsc::Sender<Startup>) {
    let config = &shared.config;
    let started = Instant::now();
    let mut progress = |p: &RecoveryProgress| {
        info!(shard = index, segments = p.segments, segments_done = p.segments_done,
            records_scanned = p.records_scanned, elapsed = ?p.elapsed, "journal recovery running");
        let _ = bound.send(Startup::Recovering);
    };
    let options = JournalOptions {
        watermark: Arc::clone(&shared.watermarks[index]),
        ..journal_options(config, index)
    };
    let (journal, recovery) = match Journal::open_reporting(options, &mut progress).await {
        Ok(opened) => opened,
        Err(e) => {
            let message = format!("shard {index}: cannot open the journal: {e}");
            let _ = bound.send(Startup::Failed(message));
            return;
        }
    };
    info!(
        shard = index,
        segments = recovery.segments,
        next_seq = recovery.next_seq,
        truncated_bytes = recovery.truncated_bytes,
        dedup_keys = recovery.dedup_keys,
        records_scanned = recovery.records_scanned,
        elapsed_ms = started.elapsed().as_millis(),
        "journal recovered"
    );
    let _ = bound.send(Startup::Recovered);
    let listener = match listener::listen(shared.listen_addr, config.keep_alive_period) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = bound.send(Startup::Failed(format!("shard {index}: cannot bind: {e}")));
            return;
        }
    };
    let sockets = match config.socket_io {
        crate::config::SocketIo::Glommio => None,
        mode => match super::uring::Sockets::new() {
            Ok(sockets) => Some(sockets),
            Err(e) if mode == crate::config::SocketIo::Auto => {
                warn!(shard = index, error = %e, "no socket ring (needs Linux 6.1 or later); \
                    using glommio's sockets");
                None
            }
            Err(e) => {
                let _ = bound.send(Startup::Failed(format!(
                    "shard {index}: cannot set up the socket ring (SOCKET_IO=uring needs Linux \
                     6.1 or later for multishot receive, provided-buffer rings and \
                     DEFER_TASKRUN; SOCKET_IO=glommio works on older kernels): {e}"
                )));
                return;
            }
        },
    };
    let shard = Rc::new(Shard::new(index, shared.clone(), journal, sockets));
    let driver = shard.sockets.clone().map(|sockets| {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            if let Err(e) = sockets.drive().await {
                // Its connections can no longer make progress: drain and exit non-zero so the
                // supervisor restarts the process.
                shard.fail(&format!("socket ring failed: {e}"));
            }
        })
        .detach()
    });
    // The first heartbeat before the shard reports serving: once /readyz says ready, /healthz
    // says alive too.
    publish(&shard);
    let _ = bound.send(Startup::Serving(if shard.sockets.is_some() {
        "uring"
    } else {
        "glommio"
    }));
    let watcher = glommio::spawn_local(watch_shutdown(shard.clone()));
    let heartbeat = glommio::spawn_local(heartbeat(shard.clone()));
    accept_loop(&shard, &listener.accept).await;
    listener.stop();
    drop(listener);
    wait_connections_closed(&shard).await;
    watcher.cancel().await;
    heartbeat.cancel().await;
    if let (Some(sockets), Some(driver)) = (&shard.sockets, driver) {
        sockets.stop();
        let _ = driver.await;
    }
    if let Err(e) = shard.journal.close().await {
        warn!(shard = index, error = ?e, "journal close failed");
    }
    let stats = shard.journal.stats();
    info!(
        shard = index,
        flushes = stats.flushes,
        records_flushed = stats.records_flushed,
        bytes_flushed = stats.bytes_flushed,
        batches_failed = stats.batches_failed,
        duplicates = stats.duplicates,
        batch_full = stats.batch_full,
        space_waits = stats.space_waits,
        pieces_readied = stats.pieces_readied,
        last_seq = stats.last_seq,
        flush_mean_us = stats
            .flush_micros_total
            .checked_div(stats.flushes)
            .unwrap_or(0),
        sync_mean_us = stats
            .sync_micros_total
            .checked_div(stats.flushes)
            .unwrap_or(0),
        "journal closed"
    );
}

async fn wait_connections_closed(shard: &Shard) {
    let pending = shard.open.get();
    if pending > 0 {
        info!(
            shard = shard.index,
            connections = pending,
            "draining connections"
        );
    }
    future::poll_fn(|cx| {
        if shard.open.get() == 0 {
            Poll::Ready(())
        } else {
            shard.all_closed.register(cx.waker());
            Poll::Pending
        }
    })
    .await;
}

/// Bumps the shard's heartbeat (`/healthz`) and publishes what the admin thread cannot read
/// directly, the journal's and the rules' figures, every `limits::HEARTBEAT_INTERVAL`: off the
/// message path, so the mutex of the rule table is taken only here and at a scrape.
async fn heartbeat(shard: Rc<Shard>) {
    let mut stall = stall_fault(shard.index);
    loop {
        publish(&shard);
        if let Some(stall) = stall.take() {
            // Test hook: the shard's thread is blocked, as by a runaway computation.
            std::thread::sleep(stall);
        }
        crate::timers::sleep(crate::limits::HEARTBEAT_INTERVAL).await;
    }
}

/// `MLLPD_FAULT_STALL_SHARD=<duration>`: a test hook that blocks shard 0's thread that long,
/// once, as soon as it serves, so `/healthz` can be seen to fail (debug builds, or with
/// MLLPD_ALLOW_FAULT_INJECTION=1, like every MLLPD_FAULT_* hook).
fn stall_fault(index: usize) -> Option<Duration> {
    if index != 0
        || !matches!(
            crate::journal::FaultPlan::gate_env(),
            crate::journal::FaultGate::Armed
        )
    {
        return None;
    }
    let stall = std::env::var("MLLPD_FAULT_STALL_SHARD").ok()?;
    let stall = humantime::parse_duration(&stall).ok()?;
    warn!(
        shard = index,
        ?stall,
        "shard stall armed (MLLPD_FAULT_STALL_SHARD): test use only"
    );
    Some(stall)
}

fn publish(shard: &Shard) {
    let j = shard.journal.stats();
    shard
        .stats
        .publish_journal(&crate::metrics::JournalFigures {
            flushes: j.flushes,
            records: j.records_flushed,
            bytes: j.bytes_flushed,
            batches_failed: j.batches_failed,
            segments: j.segments as u64,
            segment_bytes: j.segment_bytes,
            durable_seq: j.settled_seq,
            poisoned: j.poisoned,
            flush_buckets: j.flush_micros_buckets,
            flush_micros_total: j.flush_micros_total,
            batch_buckets: j.batch_records_buckets,
        });
    if let Ok(admission) = shard.admission.try_borrow() {
        let generation = admission.rules().generation;
        let counts = admission
            .rule_counts()
            .map(|(rule, c)| (rule.to_owned(), c.failed, c.errored));
        shard.stats.publish_rules(generation, counts);
    }
    shard.stats.beat();
}

async fn watch_shutdown(shard: Rc<Shard>) {
    while !shard.shared.draining.load(Ordering::Acquire) {
        crate::timers::sleep(SHUTDOWN_POLL_INTERVAL).await;
    }
    shard.begin_drain();
}

async fn accept_loop(shard: &Rc<Shard>, listener: &glommio::net::TcpListener) {
    let slot = Rc::new(WakerSlot::default());
    shard
        .waiters
        .borrow_mut()
        .insert(ACCEPTOR_WAITER, slot.clone());
    let mut last_log: Option<Instant> = None;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.drain_signal(&slot).await;
            None
        })
        .await;
        // On the ring path the socket is detached from glommio at once; no descriptor left for
        // that is as good as a failed accept.
        let accepted = accepted.map(|result| {
            result
                .map_err(std::io::Error::from)
                .and_then(|stream| match shard.sockets {
                    Some(_) => super::uring::detach(stream).map(connection::Accepted::Ring),
                    None => Ok(connection::Accepted::Glommio(stream)),
                })
        });
        match accepted {
            None => break,
            Some(Ok(accepted)) => admit_connection(shard, accepted, &mut last_log),
            Some(Err(e)) => {
                shard
                    .stats
                    .accept_errors
                    .set(shard.stats.accept_errors.get() + 1);
                if should_log(&mut last_log) {
                    warn!(shard = shard.index, error = %e, "accept failed; backing off");
                }
                crate::timers::sleep(crate::limits::ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    shard.waiters.borrow_mut().remove(&ACCEPTOR_WAITER);
}

fn admit_connection(
    shard: &Rc<Shard>,
    stream: connection::Accepted,
    last_log: &mut Option<Instant>,
) {
    // No MAX_CONNECTIONS (`0`): only the open-file limit bounds connections (accept errors).
    let max = shard.config().connections_max.unwrap_or(usize::MAX);
    let before = shard.shared.connections.fetch_add(1, Ordering::AcqRel);
    if before >= max {
        shard.shared.connections.fetch_sub(1, Ordering::AcqRel);
        shard
            .stats
            .connections_refused
            .set(shard.stats.connections_refused.get() + 1);
        if should_log(last_log) {
            let peer = stream.peer_addr();
            warn!(
                shard = shard.index,
                ?peer,
                connections_max = max,
                refused_total = shard.stats.connections_refused.get(),
                "MAX_CONNECTIONS reached; connection closed"
            );
        }
        return;
    }
    shard
        .stats
        .connections_accepted
        .set(shard.stats.connections_accepted.get() + 1);
    let (id, slot) = shard.open_connection();
    let shard = shard.clone();
    glommio::spawn_local(async move {
        connection::serve(&shard, stream, id, &slot).await;
        shard.close_connection(id);
    })
    .detach();
}

fn should_log(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    match last {
        Some(at) if now.duration_since(*at) < LOG_INTERVAL => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}
