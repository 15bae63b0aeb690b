//! Routing: store-and-forward delivery from the shards' journals to the connectors (issue 11).
//!
//! Delivery never runs on a shard. The [`Engine`] runs one plain thread per connector and shard
//! (off the shards' CPUs when the affinity mask leaves any free), each with a
//! [`TailReader`] on that shard's journal (only what is durable: the shard publishes its
//! [`Watermark`]), the connector's [`Destination`] and a durable [`cursor::Cursor`]. Invariants:
//!
//! - **FIFO per connector and shard, never skipped.** A worker hands one message at a time to
//!   its destination and moves on only once it was confirmed: delivered, stored as a dead
//!   letter, or not selected by the connector's filter. Until then it retries it with
//!   exponential backoff and jitter ([`config::RetryOptions`]); `on_failure` says what happens
//!   after `max_attempts` (or on a rejection): a dead letter and the next message, or `block`
//!   (retry forever at `max_backoff`: only that connector on that shard stalls).
//! - **At least once.** The cursor is advanced after confirmation and written in batches: a
//!   crash re-delivers at most the confirmed-but-unwritten tail. Destinations that can
//!   de-duplicate make that exactly once (`file` rewrites the same name).
//! - **Retention waits for delivery.** The written cursors are the retention floor of each
//!   journal ([`Watermark::set_floor`]), set before the journals open, so a segment is deleted
//!   only once every connector has confirmed all of it.
//!
//! - **Replays after the backlog.** Dead letters handed back by `mllpd dlq replay` are noticed
//!   within [`REPLAY_CHECK_INTERVAL`]; the worker notes the durable watermark then and delivers
//!   them once it has confirmed everything up to it: after what was pending at the replay.
//! - **ACK_AFTER=delivery.** A `sync: true` connector's workers publish each confirmation to
//!   the shard's [`Confirmations`], which the shard's ACKs wait on ([`confirm`]).
//! - **Counted.** Each worker writes its [`ConnectorCounters`] (delivered, retries, failures by
//!   reason, dead letters, cursor, lag), read by `/metrics` at scrape.
//!
//! On-disk state lives in `DATA_DIR/connectors/NAME/`: `shard-N.cursor` and `dead-letters/`.

pub mod config;
pub mod confirm;
pub mod cursor;
pub mod dead_letter;
pub mod dlq;
mod durable;
pub mod file;
pub mod http;
pub mod instance;
pub mod mllp;
pub mod nats;
pub mod postgres;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::hl7::{Message, ParseOptions};
use crate::journal::{shard_dir, TailReader, Watermark};
use crate::limits::{
    DELIVERY_BATCH_BYTES_MAX, DELIVERY_BATCH_RECORDS_MAX, DELIVERY_IDLE_WAIT, DELIVERY_NICE,
    DELIVERY_STOP_TIMEOUT, REPLAY_CHECK_INTERVAL,
};
use crate::metrics::{failure_reason, ConnectorCounters, FailureReason};
use crate::rules::{Filter, MessageContext, RulesOptions};

pub use confirm::{Confirmations, Settled, SyncAcks};

pub use config::{ConnectorOptions, OnFailure, RetryOptions, RoutingOptions, Target};

/// The directory holding every connector's state under DATA_DIR.
pub const CONNECTORS_DIR: &str = "connectors";

/// The file in [`CONNECTORS_DIR`] recording SHARDS at the last start, so that `journal stats`
/// (run offline, without the configuration) can tell a journal whose shard no longer runs.
pub const SERVED_SHARDS_FILE: &str = "served-shards";

/// One message handed to a destination.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The shard whose journal holds it.
    pub shard: usize,
    /// Its sequence number there.
    pub seq: u64,
    /// The message exactly as received.
    pub payload: &'a [u8],
    /// Its MSH-10 (empty if the header could not be read).
    pub control_id: &'a [u8],
    /// The verified TLS client identity (CN, SANs) of the connection it came on, if journaled.
    pub client: Option<crate::journal::ClientIdentity<'a>>,
    /// When it was received, µs since the Unix epoch (a replayed dead letter keeps it; `None`
    /// only for one stored before dead letters kept it).
    pub received_unix_micros: Option<u64>,
    /// The sender's address, if recorded.
    pub peer: Option<IpAddr>,
}

/// What a destination made of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed by the destination.
    Delivered,
    /// Refused for good (AR, 4xx): retrying will not help. The reason has no message content.
    Rejected(String),
    /// Not delivered this time (AE, timeout, disconnect, IO error): retry.
    Failed(String),
}

/// A connector type's delivery: one message at a time, blocking, on the worker's thread.
pub trait Destination: Send {
    /// Tries once to deliver `delivery`.
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome;

    /// Whether [`Destination::deliver_batch`] is worth gathering a batch for.
    fn batches(&self) -> bool {
        false
    }

    /// Tries once to deliver `batch` (in journal order, all selected) as one unit, where that
    /// is cheaper than one at a time (`file`: one directory fsync for all). Returns how many of
    /// the leading ones are confirmed, each as surely as by [`Destination::deliver`]; the worker
    /// sends the rest one by one through `deliver`, which retries and says why.
    fn deliver_batch(&mut self, _batch: &[Delivery<'_>]) -> usize {
        0
    }

    /// How long a batch that is not full may wait for more durable messages before it goes
    /// (zero: it takes only what is durable already). For a destination whose batch costs
    /// flushes of the disk the journal flushes too (`file`), so that a trickle of single
    /// messages does not cost two flushes each.
    fn gather(&self) -> Duration {
        Duration::ZERO
    }
}

/// What the engine is started with (built by the server from its configuration).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// DATA_DIR: the journals (`shard-N/`) and the connectors' state.
    pub data_dir: PathBuf,
    /// Shards whose journals are delivered.
    pub shards: usize,
    /// The connectors and their policy.
    pub routing: RoutingOptions,
    /// CPUs the delivery threads may run on (those no shard is pinned to); empty: anywhere.
    pub cpus: Vec<usize>,
    /// How a message is parsed for its filter and control id.
    pub parse_options: ParseOptions,
}

/// The retention holds of one shard: every connector's written cursor on it.
#[derive(Debug)]
struct ShardHolds {
    /// The shard's watermark (its floor is set from the cursors).
    watermark: Arc<Watermark>,
    /// The written cursor of each connector on this shard.
    cursors: Vec<Arc<AtomicU64>>,
}

impl ShardHolds {
    /// Sets the retention floor to the slowest written cursor + 1.
    fn refresh(&self) {
        let slowest = self.cursors.iter().map(|c| c.load(Ordering::SeqCst)).min();
        self.watermark
            .set_floor(slowest.map(|s| s.saturating_add(1)));
    }
}

/// The delivery engine: see the module documentation.
pub struct Engine {
    /// What it was prepared with.
    options: EngineOptions,
    /// The compiled filter of each connector.
    filters: Vec<Option<Arc<Filter>>>,
    /// Per shard (served ones first, then any journal left by a larger SHARDS): watermark
    /// and holds.
    holds: Vec<Arc<ShardHolds>>,
    /// Per shard: whether it has a journal to deliver (served, or left on disk).
    delivered: Vec<bool>,
    /// ACK_AFTER=delivery: the sync connectors' confirmations per served shard (none when no
    /// connector is `sync: true`).
    sync_acks: Option<Arc<SyncAcks>>,
    /// Per connector, then per shard: its delivery counters (read by `/metrics`).
    counters: Vec<Vec<Arc<ConnectorCounters>>>,
    /// Set to stop the workers.
    stop: Arc<AtomicBool>,
    /// The running workers.
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("connectors", &self.options.routing.connectors.len())
            .field("shards", &self.options.shards)
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// The state directory of connector `name` under `data_dir`.
pub fn connector_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(CONNECTORS_DIR).join(name)
}

impl Engine {
    /// Loads every cursor and sets each shard's retention floor from them; call before the
    /// journals open (their first retention pass must already respect the cursors). Starts
    /// nothing.
    ///
    /// A journal of a shard that no longer runs (`shard-N` with N ≥ SHARDS, left by a larger
    /// SHARDS or machine) is delivered too: all of it is durable (nothing writes it any more),
    /// and nothing deletes it (retention runs in the writer).
    pub fn prepare(options: EngineOptions) -> Result<Engine, String> {
        cursor::arm_faults_from_env();
        let root = options.data_dir.join(CONNECTORS_DIR);
        durable::create_dir(&root)
            .and_then(|()| {
                durable::write_atomic(
                    &root,
                    SERVED_SHARDS_FILE,
                    format!("{}\n", options.shards).as_bytes(),
                )
            })
            .map_err(|e| format!("{}: {e}", root.join(SERVED_SHARDS_FILE).display()))?;
        let stale = stale_journals(&options.data_dir, options.shards);
        let count = stale.last().map_or(options.shards, |&last| last + 1);
        let mut filters = Vec::new();
        let mut cursors: Vec<Vec<Arc<AtomicU64>>> = vec![Vec::new(); count];
        for connector in &options.routing.connectors {
            let filter = match &connector.filter {
                Some(expression) => Some(Arc::new(
                    Filter::compile(&connector.name, expression, &RulesOptions::default())
                        .map_err(|e| format!("connector {:?}: filter: {e}", connector.name))?,
                )),
                None => None,
            };
            filters.push(filter);
            let dir = connector_dir(&options.data_dir, &connector.name);
            durable::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (shard, list) in cursors.iter_mut().enumerate() {
                let seq = cursor::load(&dir, shard)?;
                list.push(Arc::new(AtomicU64::new(seq)));
            }
        }
        let holds: Vec<Arc<ShardHolds>> = cursors
            .into_iter()
            .map(|cursors| {
                let holds = ShardHolds {
                    watermark: Arc::new(Watermark::new()),
                    cursors,
                };
                holds.refresh();
                Arc::new(holds)
            })
            .collect();
        let delivered: Vec<bool> = (0..count)
            .map(|shard| shard < options.shards || stale.contains(&shard))
            .collect();
        let sync_acks = sync_acks(&options, &filters, &holds);
        let counters = options
            .routing
            .connectors
            .iter()
            .map(|connector| {
                holds
                    .iter()
                    .enumerate()
                    .map(|(shard, h)| {
                        Arc::new(ConnectorCounters::new(
                            connector.name.clone(),
                            shard,
                            Arc::clone(&h.watermark),
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for &shard in &stale {
            // Nothing writes it any more: everything in it is as durable as it will get.
            holds[shard].watermark.publish(u64::MAX);
            holds[shard].watermark.close();
            if !options.routing.connectors.is_empty() {
                tracing::warn!(
                    shard,
                    shards = options.shards,
                    "the journal of a shard that no longer runs (SHARDS lowered?) is delivered \
                     to its end and kept"
                );
            }
        }
        Ok(Engine {
            delivered,
            sync_acks,
            counters,
            options,
            filters,
            holds,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        })
    }

    /// The watermark shard `shard`'s journal must publish into (and read its floor from).
    ///
    /// # Panics
    /// If `shard` is not below the shard count it was prepared with.
    pub fn watermark(&self, shard: usize) -> Arc<Watermark> {
        Arc::clone(&self.holds[shard].watermark)
    }

    /// ACK_AFTER=delivery: what the shards wait on, when some connector is `sync: true`.
    pub fn sync_acks(&self) -> Option<Arc<SyncAcks>> {
        self.sync_acks.clone()
    }

    /// The delivery counters of every connector on every shard with a journal to deliver, for
    /// `/metrics` (written by the workers, read at scrape).
    pub fn counters(&self) -> Vec<Arc<ConnectorCounters>> {
        self.counters
            .iter()
            .flat_map(|per_shard| {
                per_shard
                    .iter()
                    .filter(|c| self.delivered.get(c.shard).copied().unwrap_or(false))
                    .cloned()
            })
            .collect()
    }

    /// Starts one worker per connector and shard. Call once the journals are recovered.
    pub fn start(&mut self) -> Result<(), String> {
        let routing = &self.options.routing;
        let keyed = routing.connectors.iter().any(|c| {
            matches!(
                c.target,
                Target::Http { .. } | Target::Postgres(_) | Target::Nats(_)
            )
        });
        let instance = match keyed {
            true => instance::load_or_create(&self.options.data_dir)?,
            false => String::new(),
        };
        for (index, connector) in routing.connectors.iter().enumerate() {
            for (shard, holds) in self.holds.iter().enumerate() {
                if !self.delivered[shard] {
                    continue;
                }
                let dir = connector_dir(&self.options.data_dir, &connector.name);
                let written = Arc::clone(&holds.cursors[index]);
                let start = written.load(Ordering::SeqCst);
                let sync = self.sync_acks.as_ref().and_then(|acks| {
                    let position = routing.connectors[..index]
                        .iter()
                        .filter(|c| c.sync.is_some())
                        .count();
                    let confirmations = acks.shards.get(shard)?;
                    connector
                        .sync
                        .map(|_| (Arc::clone(confirmations), position))
                });
                // A connector the sender's ACK waits for (ACK_AFTER=delivery) is intake's
                // latency and keeps the default priority; every other one yields to intake.
                let nice = match sync {
                    Some(_) => 0,
                    None => DELIVERY_NICE,
                };
                let worker = Worker {
                    name: connector.name.clone(),
                    shard,
                    sync,
                    rejection: None,
                    counters: Arc::clone(&self.counters[index][shard]),
                    replay_after: None,
                    destination: destination(&connector.target, &instance)
                        .map_err(|e| format!("connector {:?}: {e}", connector.name))?,
                    filter: self.filters[index].clone(),
                    reader: TailReader::new(
                        shard_dir(&self.options.data_dir, shard),
                        Arc::clone(&holds.watermark),
                        start,
                    ),
                    cursor: cursor::Cursor::new(dir.clone(), shard, written),
                    dir,
                    holds: Arc::clone(holds),
                    retry: routing.retry,
                    on_failure: routing.on_failure,
                    stop: Arc::clone(&self.stop),
                    parse_options: self.options.parse_options,
                    batch: Batch::default(),
                    payload: Vec::new(),
                    client: Vec::new(),
                    received: None,
                    jitter: seed(index, shard),
                };
                let cpu = (!self.options.cpus.is_empty()).then(|| {
                    self.options.cpus[(index * self.holds.len() + shard) % self.options.cpus.len()]
                });
                let thread = std::thread::Builder::new()
                    .name(format!("mllpd-deliver-{}-{shard}", connector.name))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                        }
                        lower_priority(nice);
                        worker.run();
                    })
                    .map_err(|e| format!("cannot start a delivery thread: {e}"))?;
                self.threads.push(thread);
            }
        }
        if !self.threads.is_empty() {
            tracing::info!(connectors = routing.connectors.len(), threads = self.threads.len(),
                cpus = ?self.options.cpus, nice = DELIVERY_NICE, "delivery started");
        }
        Ok(())
    }

    /// Stops the workers (each abandons its current wait, writes its cursor) and waits for them
    /// up to [`DELIVERY_STOP_TIMEOUT`]; a worker still inside an attempt then (a downstream
    /// that accepted the message and has not answered) is left behind: its message is not
    /// confirmed, so the next start sends it again.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for holds in &self.holds {
            holds.watermark.close(); // Wakes idle readers at once.
        }
        let deadline = Instant::now() + DELIVERY_STOP_TIMEOUT;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (done, stuck): (Vec<_>, Vec<_>) = self.threads.drain(..).partition(|t| t.is_finished());
        for thread in done {
            let _ = thread.join();
        }
        if !stuck.is_empty() {
            tracing::warn!(threads = stuck.len(), timeout = ?DELIVERY_STOP_TIMEOUT,
                "delivery threads still in an attempt at shutdown; their messages will be sent \
                 again at the next start");
        }
    }
}

/// For `mllpd journal stats`: per connector found under `data_dir` and per shard in
/// `journals` (shard, last sequence on disk), the written cursor, how many sequence numbers
/// it is behind (gaps count: an upper bound) and the dead letters waiting. A connector far
/// behind is what holds journal segments from retention.
pub fn delivery_report(data_dir: &Path, journals: &[(usize, Option<u64>)]) -> String {
    let root = data_dir.join(CONNECTORS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return String::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = format!(
        "{:<20} {:<6} {:>20} {:>12} {:>12}\n",
        "connector", "shard", "cursor", "behind", "dead_letters"
    );
    // Per shard: the connectors still behind on it (name, how far).
    let mut holding: Vec<Vec<(String, String)>> = vec![Vec::new(); journals.len()];
    for name in &names {
        let dir = root.join(name);
        let letters = dead_letter::list(&dir).unwrap_or_default();
        for (i, &(shard, last)) in journals.iter().enumerate() {
            let cursor = match cursor::load(&dir, shard) {
                Ok(seq) => seq.to_string(),
                Err(_) => "damaged".to_owned(),
            };
            let behind = last
                .zip(cursor.parse::<u64>().ok())
                .map_or_else(|| "-".to_owned(), |(l, c)| l.saturating_sub(c).to_string());
            if behind != "0" && behind != "-" || cursor == "damaged" {
                holding[i].push((name.clone(), behind.clone()));
            }
            let prefix = format!("{shard:03}-");
            let waiting = letters
                .iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
                .count();
            out.push_str(&format!(
                "{name:<20} {shard:<6} {cursor:>20} {behind:>12} {waiting:>12}\n"
            ));
        }
    }
    let orphans = orphans(&root, &names, journals, &holding);
    if names.is_empty() {
        return orphans.trim_start().to_owned(); // No connector table to show.
    }
    out.push_str(&orphans);
    out
}

/// The lines naming each journal whose shard no longer ran at the last start (shard number at
/// or above the recorded SHARDS), and whether connectors still hold it.
fn orphans(
    root: &Path,
    names: &[String],
    journals: &[(usize, Option<u64>)],
    holding: &[Vec<(String, String)>],
) -> String {
    let Some(served) = std::fs::read_to_string(root.join(SERVED_SHARDS_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    else {
        return String::new();
    };
    let mut out = String::new();
    for (i, &(shard, last)) in journals.iter().enumerate() {
        if shard < served {
            continue;
        }
        let state = if last.is_none() {
            "empty: it can be removed".to_owned()
        } else if names.is_empty() {
            "no connector delivers it: it is kept (nothing deletes it); export it or remove it"
                .to_owned()
        } else if holding[i].is_empty() {
            "delivered to its end by every connector: it can be removed".to_owned()
        } else {
            let held: Vec<String> = holding[i]
                .iter()
                .map(|(name, behind)| format!("{name} ({behind} behind)"))
                .collect();
            format!(
                "still being delivered, kept until then; held by {}",
                held.join(", ")
            )
        };
        out.push_str(&format!(
            "orphan journal: shard-{shard} (its shard no longer runs: SHARDS={served} at the last \
             start): {state}\n"
        ));
    }
    if out.is_empty() {
        return out;
    }
    format!("\n{out}")
}

/// The shard numbers at or above `shards` with a journal in `data_dir`, ascending.
fn stale_journals(data_dir: &Path, shards: usize) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut out: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let shard = name
                .to_str()?
                .strip_prefix("shard-")?
                .parse::<usize>()
                .ok()?;
            (shard >= shards && crate::journal::has_segments(&e.path())).then_some(shard)
        })
        .collect();
    out.sort_unstable();
    out
}

/// The confirmations ACK_AFTER=delivery waits on: one per served shard, over the `sync: true`
/// connectors (in configuration order), each starting at its loaded cursor. `None` when no
/// connector is `sync: true`.
fn sync_acks(
    options: &EngineOptions,
    filters: &[Option<Arc<Filter>>],
    holds: &[Arc<ShardHolds>],
) -> Option<Arc<SyncAcks>> {
    let connectors = &options.routing.connectors;
    let sync: Vec<usize> = (0..connectors.len())
        .filter(|&i| connectors[i].sync.is_some())
        .collect();
    if sync.is_empty() {
        return None;
    }
    let timeout = sync
        .iter()
        .filter_map(|&i| connectors[i].sync)
        .max()
        .unwrap_or(crate::limits::SYNC_TIMEOUT_DEFAULT);
    let cursors: Vec<Vec<u64>> = holds
        .iter()
        .take(options.shards)
        .map(|h| {
            sync.iter()
                .map(|&i| h.cursors[i].load(Ordering::SeqCst))
                .collect()
        })
        .collect();
    Some(Arc::new(SyncAcks::new(
        sync.iter().map(|&i| connectors[i].name.clone()).collect(),
        sync.iter().map(|&i| filters[i].clone()).collect(),
        timeout,
        &cursors,
    )))
}

/// The destination of a target (`instance`: this DATA_DIR's id, for those that key on it);
/// `Err` when an environment variable it needs is not set.
fn destination(target: &Target, instance: &str) -> Result<Box<dyn Destination>, String> {
    Ok(match target {
        Target::Mllp { address, tls } => {
            Box::new(mllp::MllpDestination::new(address.clone(), tls.as_ref())?)
        }
        Target::File { dir } => Box::new(file::FileDestination::new(dir.clone())),
        Target::Http { url, headers } => {
            let mut values = Vec::with_capacity(headers.len());
            for (name, variable) in headers {
                let value = std::env::var(variable).map_err(|_| {
                    format!("header {name}: environment variable {variable} is not set")
                })?;
                values.push((name.clone(), value));
            }
            Box::new(http::HttpDestination::new(
                url.clone(),
                values,
                instance.to_owned(),
            ))
        }
        Target::Postgres(options) => Box::new(postgres::PostgresDestination::new(
            options.clone(),
            instance.to_owned(),
        )?),
        Target::Nats(options) => Box::new(nats::NatsDestination::new(
            options.clone(),
            instance.to_owned(),
        )?),
    })
}

/// A seed for a worker's jitter: different per worker and per start.
fn seed(index: usize, shard: usize) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (now ^ ((index as u64) << 32) ^ shard as u64) | 1
}

/// µs since the Unix epoch, now.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The MSH-10 of `payload` (empty if the header cannot be read).
fn control_id(payload: &[u8]) -> &[u8] {
    Message::parse_header(payload).map_or(&b""[..], |m| m.control_id())
}

/// A message read from the journal, waiting in a [`Batch`].
#[derive(Debug, Default)]
struct Pending {
    /// Its sequence number.
    seq: u64,
    /// The sender's address, if recorded.
    peer: Option<IpAddr>,
    /// When it was received, µs since the Unix epoch.
    received: u64,
    /// The message as received.
    payload: Vec<u8>,
    /// Its client-identity section; empty: none.
    client: Vec<u8>,
}

/// The messages a worker read at once (what was durable, up to the batch bounds); the buffers
/// are kept from batch to batch.
#[derive(Debug, Default)]
struct Batch {
    /// The messages; only the first `len` are current.
    pending: Vec<Pending>,
    /// How many are current.
    len: usize,
    /// Their payload bytes.
    bytes: usize,
}

impl Batch {
    /// Whether it reached [`DELIVERY_BATCH_RECORDS_MAX`] or [`DELIVERY_BATCH_BYTES_MAX`].
    fn full(&self) -> bool {
        self.len >= DELIVERY_BATCH_RECORDS_MAX || self.bytes >= DELIVERY_BATCH_BYTES_MAX
    }

    /// Adds a copy of `view` (copied out of the reader's buffer).
    fn fill(&mut self, view: crate::journal::RecordView<'_>) {
        if self.len == 0 {
            self.bytes = 0;
        }
        if self.pending.len() == self.len {
            self.pending.push(Pending::default());
        }
        let pending = &mut self.pending[self.len];
        pending.seq = view.seq;
        pending.peer = view.peer.map(|p| p.ip());
        pending.received = view.receive_time_unix_micros;
        pending.payload.clear();
        pending.payload.extend_from_slice(view.payload);
        pending.client.clear();
        if let Some(client) = view.client {
            pending.client.extend_from_slice(client.as_bytes());
        }
        self.len += 1;
        self.bytes += view.payload.len();
    }
}

/// How a worker's handling of one message ended.
enum Handled {
    /// Delivered, dead-lettered or filtered out: the cursor may pass it.
    Confirmed,
    /// The engine stops; the message stays unconfirmed (delivered again after the restart).
    Stopped,
}

/// One connector on one shard.
struct Worker {
    /// The connector's name.
    name: String,
    /// The shard.
    shard: usize,
    /// ACK_AFTER=delivery, a `sync: true` connector: where its confirmations go, and its
    /// index among the sync connectors.
    sync: Option<(Arc<Confirmations>, usize)>,
    /// Why the message just handled was given up (a dead letter), for the sync confirmation.
    rejection: Option<String>,
    /// Its counters in `/metrics`.
    counters: Arc<ConnectorCounters>,
    /// A replay was asked for: its dead letters go once everything that was durable then
    /// (pending at the time of the replay) is confirmed, this sequence number.
    replay_after: Option<u64>,
    /// The connector's state directory.
    dir: PathBuf,
    /// Where messages go.
    destination: Box<dyn Destination>,
    /// Which messages go.
    filter: Option<Arc<Filter>>,
    /// The shard's journal from the cursor on.
    reader: TailReader,
    /// The durable cursor.
    cursor: cursor::Cursor,
    /// The shard's retention holds (refreshed after each cursor write).
    holds: Arc<ShardHolds>,
    /// Backoff policy.
    retry: RetryOptions,
    /// What a failed-for-good message becomes.
    on_failure: OnFailure,
    /// Set when the engine stops.
    stop: Arc<AtomicBool>,
    /// Parsing for the filter and control id.
    parse_options: ParseOptions,
    /// The messages read at once.
    batch: Batch,
    /// The message being handled alone (copied out of the reader's buffer, or a replayed dead
    /// letter).
    payload: Vec<u8>,
    /// The current message's client-identity section (copied likewise); empty: none.
    client: Vec<u8>,
    /// Its receive time (`None` for a replayed dead letter).
    received: Option<u64>,
    /// xorshift state for the jitter.
    jitter: u64,
}

impl Worker {
    /// Delivers until the engine stops.
    fn run(mut self) {
        let mut read_errors = 0u64;
        let mut replay_checked: Option<Instant> = None;
        let mut caught_up = false;
        while !self.stop.load(Ordering::SeqCst) {
            if replay_checked.is_none_or(|at| at.elapsed() >= REPLAY_CHECK_INTERVAL) {
                replay_checked = Some(Instant::now());
                self.note_replays();
            }
            if self.replay_due(caught_up) && !self.replays() {
                break;
            }
            match self.reader.next(DELIVERY_IDLE_WAIT) {
                Ok(Some(view)) => {
                    caught_up = false;
                    self.batch.fill(view);
                }
                Ok(None) => {
                    caught_up = true;
                    self.counters.pending_since_micros.set(0);
                    self.flush_cursor();
                    if self.holds.watermark.is_closed() {
                        // Nothing more will come (a journal no longer served, or closed): the
                        // reader no longer waits, so wait here rather than spin.
                        self.pause(DELIVERY_IDLE_WAIT);
                    }
                    continue;
                }
                Err(error) => {
                    read_errors += 1;
                    self.counters.fail(FailureReason::JournalRead);
                    if read_errors % 100 == 1 {
                        tracing::error!(connector = %self.name, shard = self.shard, %error,
                            "cannot read the journal for delivery; retrying (nothing is skipped)");
                    }
                    self.pause(Duration::from_secs(1));
                    continue;
                }
            }
            if self.destination.batches() {
                // What else is durable now, or within the destination's gathering window; a
                // read error ends the batch here (the next turn reads the same record again
                // and reports it).
                let until = Instant::now() + self.destination.gather();
                while !self.batch.full() {
                    let wait = until.saturating_duration_since(Instant::now());
                    match self.reader.next(wait) {
                        Ok(Some(view)) => self.batch.fill(view),
                        _ => break,
                    }
                }
            }
            if !self.deliver_batch() {
                break;
            }
        }
        self.flush_cursor();
    }

    /// Delivers the gathered batch, confirming its messages in order: those the destination
    /// took as one unit (or the filter passed over), then the rest one by one through
    /// [`Worker::handle`]. Returns false if the engine stopped meanwhile.
    fn deliver_batch(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        let count = batch.len;
        let mut selected = Vec::with_capacity(count);
        for pending in &batch.pending[..count] {
            let verdict = self.selected(&pending.payload, pending.peer);
            let stop = verdict.is_err();
            selected.push(verdict);
            if stop {
                break; // Handled alone, as is everything after it.
            }
        }
        selected.resize_with(count, || Err(String::new()));
        let mut taken = 0;
        if self.destination.batches() {
            let chosen: Vec<&Pending> = batch.pending[..count]
                .iter()
                .zip(&selected)
                .take_while(|(_, verdict)| verdict.is_ok())
                .filter(|(_, verdict)| matches!(verdict, Ok(true)))
                .map(|(pending, _)| pending)
                .collect();
            let deliveries: Vec<Delivery<'_>> = chosen
                .iter()
                .map(|pending| Delivery {
                    shard: self.shard,
                    seq: pending.seq,
                    payload: &pending.payload,
                    control_id: control_id(&pending.payload),
                    client: crate::journal::ClientIdentity::parse(&pending.client).ok(),
                    received_unix_micros: Some(pending.received),
                    peer: pending.peer,
                })
                .collect();
            if !deliveries.is_empty() {
                self.counters.batches.inc();
                taken = self.destination.deliver_batch(&deliveries);
            }
        }
        let mut stopped = false;
        for (pending, verdict) in batch.pending[..count].iter_mut().zip(selected) {
            self.counters
                .pending_since_micros
                .set(pending.received.max(1));
            let handled = match verdict {
                Ok(false) => {
                    self.counters.filtered.inc();
                    Handled::Confirmed
                }
                Ok(true) if taken > 0 => {
                    taken -= 1;
                    self.counters.delivered.inc();
                    Handled::Confirmed
                }
                _ => {
                    std::mem::swap(&mut self.payload, &mut pending.payload);
                    std::mem::swap(&mut self.client, &mut pending.client);
                    self.received = Some(pending.received);
                    let handled = self.handle(pending.seq, pending.peer);
                    std::mem::swap(&mut self.payload, &mut pending.payload);
                    std::mem::swap(&mut self.client, &mut pending.client);
                    handled
                }
            };
            match handled {
                Handled::Confirmed => self.confirmed(pending.seq),
                Handled::Stopped => {
                    stopped = true;
                    break;
                }
            }
        }
        batch.len = 0;
        self.batch = batch;
        !stopped
    }

    /// The message `seq` was confirmed (delivered, dead-lettered or filtered out): tells a
    /// waiting ACK (ACK_AFTER=delivery), advances the cursor, publishes the lag.
    fn confirmed(&mut self, seq: u64) {
        if let Some((confirmations, index)) = &self.sync {
            confirmations.confirm(*index, seq, self.rejection.as_deref());
        }
        self.rejection = None;
        if self.cursor.confirm(seq) {
            self.holds.refresh();
        }
        if seq >= self.holds.watermark.durable() {
            self.counters.pending_since_micros.set(0); // Caught up: no lag.
        }
        self.count_cursor();
    }

    /// Looks for dead letters handed back by `mllpd dlq replay`; when there are some and none
    /// are already scheduled, schedules them after what is pending now: everything durable at
    /// this moment (a journal no longer served: to its end).
    fn note_replays(&mut self) {
        if self.replay_after.is_some() {
            return;
        }
        let prefix = format!("{:03}-", self.shard);
        let waiting = dead_letter::replays(&self.dir).is_ok_and(|files| {
            files.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
        });
        if waiting {
            let durable = self.holds.watermark.durable();
            self.replay_after = Some(durable);
            tracing::info!(connector = %self.name, shard = self.shard,
                after_seq = (durable != u64::MAX).then_some(durable),
                "dead letters handed back; they go after the messages pending now");
        }
    }

    /// Whether the scheduled replays are due: everything pending when they were noticed is
    /// confirmed, or nothing is pending at all.
    fn replay_due(&mut self, caught_up: bool) -> bool {
        match self.replay_after {
            Some(after) if caught_up || self.cursor.confirmed() >= after => {
                self.replay_after = None;
                true
            }
            _ => false,
        }
    }

    /// Publishes the cursor's position and write failures to the counters.
    fn count_cursor(&self) {
        self.counters.confirmed_seq.set(self.cursor.confirmed());
        self.counters.failures[FailureReason::CursorWrite as usize].set(self.cursor.write_failures);
    }

    /// Delivers the dead letters of this shard handed back by `mllpd dlq replay`, oldest
    /// first, removing each once handled (delivered, or a dead letter again). Returns false if
    /// the engine stopped meanwhile (the rest stay for the next start).
    fn replays(&mut self) -> bool {
        let prefix = format!("{:03}-", self.shard);
        let files = match dead_letter::replays(&self.dir) {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(connector = %self.name, %error, "cannot list dead letters to replay");
                return true;
            }
        };
        let mine = files.into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        });
        for path in mine {
            let (fields, payload) = match dead_letter::read(&path) {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(connector = %self.name, %error,
                        "a dead letter to replay cannot be read; left in place");
                    continue;
                }
            };
            let seq = fields
                .iter()
                .find(|(key, _)| key == "sequence")
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0);
            // Delivered as the first attempt was: its receive time, sender and client identity.
            let origin = dead_letter::Origin::from_fields(&fields);
            self.payload = payload;
            self.client = origin.client;
            self.received = origin.received_unix_micros;
            let handled = self.handle(seq, origin.peer);
            self.rejection = None; // Not the journal's message: no sync confirmation.
            if let Handled::Stopped = handled {
                return false;
            }
            let removed = std::fs::remove_file(&path)
                .and_then(|()| durable::sync_dir(path.parent().unwrap_or(&self.dir)));
            if let Err(error) = removed {
                tracing::warn!(connector = %self.name, %error,
                    "a replayed dead letter was handled but cannot be removed (it will be sent again)");
            }
            tracing::info!(connector = %self.name, shard = self.shard, seq, "dead letter replayed");
        }
        true
    }

    /// Writes the cursor if it is behind, and refreshes the shard's retention floor.
    fn flush_cursor(&mut self) {
        if self.cursor.confirmed() != self.cursor.written() && self.cursor.flush() {
            self.holds.refresh();
        }
        self.count_cursor();
    }

    /// Whether the connector takes this message; `Err` when its filter cannot decide.
    fn selected(&self, payload: &[u8], peer: Option<IpAddr>) -> Result<bool, String> {
        let Some(filter) = &self.filter else {
            return Ok(true);
        };
        let message = Message::parse(payload, &self.parse_options)
            .map_err(|e| format!("the message cannot be parsed for the filter: {e:?}"))?;
        let context = MessageContext {
            peer_ip: peer,
            ..MessageContext::default()
        };
        filter
            .matches(&message, &context)
            .map_err(|e| format!("the filter cannot decide: {e}"))
    }

    /// Filters, delivers with retries, dead-letters or blocks; see the module invariants.
    fn handle(&mut self, seq: u64, peer: Option<IpAddr>) -> Handled {
        match self.selected(&self.payload, peer) {
            Ok(true) => {}
            Ok(false) => {
                self.counters.filtered.inc();
                return Handled::Confirmed;
            }
            Err(reason) => {
                self.counters.fail(FailureReason::Filter);
                return self.give_up(seq, peer, 0, reason);
            }
        }
        let control_id = control_id(&self.payload).to_vec();
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let delivery = Delivery {
                shard: self.shard,
                seq,
                payload: &self.payload,
                control_id: &control_id,
                client: crate::journal::ClientIdentity::parse(&self.client).ok(),
                received_unix_micros: self.received,
                peer,
            };
            let reason = match self.destination.deliver(&delivery) {
                Outcome::Delivered => {
                    self.counters.delivered.inc();
                    if attempts > 1 {
                        tracing::info!(connector = %self.name, shard = self.shard, seq, attempts,
                            "delivered after retries");
                    }
                    return Handled::Confirmed;
                }
                Outcome::Rejected(reason) => {
                    self.counters.fail(FailureReason::Rejected);
                    if self.on_failure == OnFailure::DeadLetter {
                        return self.give_up(seq, peer, attempts, reason);
                    }
                    reason
                }
                Outcome::Failed(reason) => {
                    self.counters.fail(failure_reason(&reason));
                    if attempts >= self.retry.max_attempts
                        && self.on_failure == OnFailure::DeadLetter
                    {
                        return self.give_up(seq, peer, attempts, reason);
                    }
                    reason
                }
            };
            let wait = self.backoff(attempts);
            self.counters.retried.inc();
            tracing::warn!(connector = %self.name, shard = self.shard, seq, attempts,
                %reason, retry_in = ?wait, blocked = attempts >= self.retry.max_attempts,
                "delivery failed; will retry");
            if !self.pause(wait) {
                return Handled::Stopped;
            }
        }
    }

    /// Stores the message as a dead letter (retrying the store itself until it succeeds or the
    /// engine stops: a message is never confirmed without it).
    fn give_up(
        &mut self,
        seq: u64,
        peer: Option<IpAddr>,
        attempts: u32,
        reason: String,
    ) -> Handled {
        let letter = dead_letter::DeadLetter {
            shard: self.shard,
            seq,
            attempts,
            time_unix_micros: now_micros(),
            reason,
            origin: dead_letter::Origin {
                received_unix_micros: self.received,
                peer,
                client: self.client.clone(),
            },
        };
        let mut tries = 0u32;
        loop {
            match dead_letter::store(&self.dir, &letter, &self.payload) {
                Ok(()) => {
                    self.counters.dead_lettered.inc();
                    self.rejection = Some(letter.reason.clone());
                    tracing::warn!(connector = %self.name, shard = self.shard, seq, attempts,
                        "message stored as a dead letter");
                    tracing::debug!(connector = %self.name, seq, reason = %letter.reason,
                        "dead letter reason");
                    return Handled::Confirmed;
                }
                Err(error) => {
                    tries += 1;
                    self.counters.fail(FailureReason::DeadLetterWrite);
                    tracing::error!(connector = %self.name, shard = self.shard, seq, %error,
                        "cannot store a dead letter; retrying (the message is kept)");
                    let wait = self.backoff(tries);
                    if !self.pause(wait) {
                        return Handled::Stopped;
                    }
                }
            }
        }
    }

    /// The wait before attempt `attempts + 1`: `initial × 2^(attempts-1)`, capped at the
    /// maximum, then a random point in its upper half (jitter: workers that failed together do
    /// not retry together).
    fn backoff(&mut self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let full = self
            .retry
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.retry.max_backoff);
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let fraction = 0.5 + (self.jitter % 1000) as f64 / 2000.0;
        full.mul_f64(fraction)
    }

    /// Sleeps `wait` unless the engine stops first; returns false if it stopped.
    fn pause(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while !self.stop.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(DELIVERY_IDLE_WAIT));
        }
        false
    }
}

/// Raises the calling thread's nice value to `nice` (0: leaves it), so that the scheduler
/// prefers the shards, and the senders' traffic they serve, whenever delivery and intake want
/// the same CPU; an idle CPU still runs delivery at full speed. On Linux the nice value belongs
/// to the thread (setpriority with the thread id), and raising it needs no privilege. A
/// failure is logged and changes nothing else.
#[allow(unsafe_code)]
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: gettid(2) and setpriority(2) take no pointers.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if result != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(),
            "cannot lower a delivery thread's priority");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn options(data_dir: &Path, names: &[&str]) -> EngineOptions {
        EngineOptions {
            data_dir: data_dir.to_owned(),
            shards: 2,
            routing: RoutingOptions {
                connectors: names
                    .iter()
                    .map(|name| ConnectorOptions {
                        name: (*name).to_owned(),
                        target: Target::File {
                            dir: data_dir.join("out"),
                        },
                        filter: None,
                        sync: None,
                    })
                    .collect(),
                ..RoutingOptions::default()
            },
            cpus: Vec::new(),
            parse_options: ParseOptions::default(),
        }
    }

    fn write_cursor(data_dir: &Path, name: &str, shard: usize, seq: u64) {
        let dir = connector_dir(data_dir, name);
        durable::create_dir(&dir).unwrap();
        let mut cursor = cursor::Cursor::new(dir, shard, Arc::new(AtomicU64::new(0)));
        cursor.confirm(seq);
        assert!(cursor.flush());
    }

    #[test]
    fn the_retention_floor_is_the_slowest_written_cursor_before_anything_starts() {
        let data = tempfile::tempdir().unwrap();
        write_cursor(data.path(), "fast", 0, 900);
        write_cursor(data.path(), "slow", 0, 41);
        write_cursor(data.path(), "fast", 1, 7);
        let engine = Engine::prepare(options(data.path(), &["fast", "slow"])).unwrap();
        assert_eq!(engine.watermark(0).floor(), Some(42));
        // "slow" has no cursor on shard 1 yet: it needs that journal from its start.
        assert_eq!(engine.watermark(1).floor(), Some(1));
        let engine = Engine::prepare(options(data.path(), &[])).unwrap();
        assert_eq!(
            engine.watermark(0).floor(),
            None,
            "no connector holds nothing"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_its_upper_half() {
        let data = tempfile::tempdir().unwrap();
        let mut engine = Engine::prepare(options(data.path(), &["a"])).unwrap();
        engine.options.routing.retry = RetryOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_attempts: 5,
        };
        let destination = destination(
            &Target::File {
                dir: data.path().to_owned(),
            },
            "",
        )
        .unwrap();
        let mut worker = worker(&engine, data.path(), destination);
        for (attempts, full_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            for _ in 0..50 {
                let wait = worker.backoff(attempts);
                let full = Duration::from_millis(full_ms);
                assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait:?}");
            }
        }
    }

    /// A worker of `engine`'s first connector on shard 0, state in `dir`, delivering to
    /// `destination`.
    fn worker(engine: &Engine, dir: &Path, destination: Box<dyn Destination>) -> Worker {
        let holds = Arc::clone(&engine.holds[0]);
        Worker {
            name: "a".to_owned(),
            shard: 0,
            sync: None,
            rejection: None,
            counters: Arc::clone(&engine.counters[0][0]),
            replay_after: None,
            dir: dir.to_owned(),
            destination,
            filter: None,
            reader: TailReader::new(dir, Arc::clone(&holds.watermark), 0),
            cursor: cursor::Cursor::new(dir.to_owned(), 0, Arc::new(AtomicU64::new(0))),
            holds,
            retry: engine.options.routing.retry,
            on_failure: OnFailure::DeadLetter,
            stop: Arc::new(AtomicBool::new(false)),
            parse_options: ParseOptions::default(),
            batch: Batch::default(),
            payload: Vec::new(),
            client: Vec::new(),
            received: None,
            jitter: seed(0, 0),
        }
    }

    /// What a destination was handed: (seq, receive time, client section, peer).
    type Seen = Arc<std::sync::Mutex<Vec<(u64, Option<u64>, Vec<u8>, Option<IpAddr>)>>>;

    /// Rejects the first attempt, accepts the rest, and records what it was handed.
    struct Recording {
        seen: Seen,
    }

    impl Destination for Recording {
        fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
            let mut seen = self.seen.lock().unwrap();
            seen.push((
                delivery.seq,
                delivery.received_unix_micros,
                delivery
                    .client
                    .map(|c| c.as_bytes().to_vec())
                    .unwrap_or_default(),
                delivery.peer,
            ));
            match seen.len() {
                1 => Outcome::Rejected("downstream answered AR".to_owned()),
                _ => Outcome::Delivered,
            }
        }
    }

    #[test]
    fn a_replayed_dead_letter_reaches_the_connector_with_its_receive_time_and_client() {
        let data = tempfile::tempdir().unwrap();
        let engine = Engine::prepare(options(data.path(), &["a"])).unwrap();
        let seen = Seen::default();
        let dir = connector_dir(data.path(), "a");
        let recording = Box::new(Recording { seen: seen.clone() });
        let mut worker = worker(&engine, &dir, recording);
        // CN "lab" and one SAN "lab.example.org", as the journal encodes them.
        let mut client = vec![1, 3, 0, b'l', b'a', b'b', 1, 0, 15, 0];
        client.extend_from_slice(b"lab.example.org");
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        worker.payload = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|ID1|P|2.5\r".to_vec();
        worker.client = client.clone();
        worker.received = Some(1_700_000_000_123_456);
        assert!(matches!(worker.handle(9, Some(peer)), Handled::Confirmed));
        let mut shown = Vec::new();
        dlq::show(
            data.path(),
            "a",
            &dead_letter::file_name(0, 9).replace(".dl", ""),
            &mut shown,
        )
        .unwrap();
        let shown = String::from_utf8(shown).unwrap();
        for line in [
            "received: 2023-11-14T22:13:20.123456Z",
            "peer: 10.1.2.3",
            "client_cn: lab",
            "client_sans: lab.example.org",
        ] {
            assert!(shown.contains(line), "{line:?} missing from:\n{shown}");
        }
        assert_eq!(dlq::replay(data.path(), "a", &[], true), Ok(1));
        // Another message was handled meanwhile: the replay must not take its origin.
        worker.client.clear();
        worker.received = Some(1);
        assert!(worker.replays());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[1],
            (9, Some(1_700_000_000_123_456), client, Some(peer))
        );
    }
}
