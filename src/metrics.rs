//! Counters of a running server, kept per shard and merged only when scraped.
//!
//! Each shard owns one [`ShardCounters`] (behind an `Arc` the admin thread also holds). Only
//! that shard's thread writes it: every [`Counter`] is an `AtomicU64` updated with a Relaxed
//! load and a Relaxed store (no read-modify-write, no lock, no syscall), which on x86-64 and
//! aarch64 compiles to plain moves; the admin thread reads them with Relaxed loads. What a shard
//! keeps outside its message path (journal statistics, per-rule counts) it publishes from its
//! heartbeat timer ([`ShardCounters::publish_journal`], [`ShardCounters::publish_rules`]), so a
//! scrape sees those at most one heartbeat late. [`encode`] merges the shards into Prometheus /
//! OpenMetrics text with the `prometheus-client` crate. Nothing here holds message content:
//! labels are shard numbers, ACK codes, error kinds and rule names from the configuration.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::ack::AckCode;

/// Upper bounds (µs) of the journal flush latency buckets; one more bucket is +Inf. From a
/// 50 µs O_DSYNC write on NVMe to a 1 s flush of a stalled disk.
pub const FLUSH_MICROS_BOUNDS: [u64; 11] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

/// Upper bounds (records) of the journal batch size buckets; one more bucket is +Inf.
pub const BATCH_RECORDS_BOUNDS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Index of the bucket `value` falls in: the first bound at least `value`, else the +Inf one.
pub fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|&bound| bound < value)
}

/// A counter written by one thread only (its shard) and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value (the owning thread only).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds `n` (the owning thread only: a load and a store, not a locked read-modify-write).
    pub fn add(&self, n: u64) {
        self.set(self.get().wrapping_add(n));
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
}

/// The ACK codes, in the order of [`ShardCounters::acks`].
pub const ACK_CODES: [AckCode; 6] = [
    AckCode::AA,
    AckCode::AE,
    AckCode::AR,
    AckCode::CA,
    AckCode::CE,
    AckCode::CR,
];

/// Index of `code` in [`ACK_CODES`].
fn ack_index(code: AckCode) -> usize {
    match code {
        AckCode::AA => 0,
        AckCode::AE => 1,
        AckCode::AR => 2,
        AckCode::CA => 3,
        AckCode::CE => 4,
        AckCode::CR => 5,
    }
}

/// What a shard's journal last published (by the heartbeat).
#[derive(Debug, Default)]
pub struct JournalCounters {
    /// Batches made durable.
    pub flushes: Counter,
    /// Records made durable.
    pub records: Counter,
    /// Bytes written by durable batches.
    pub bytes: Counter,
    /// Batches that failed for lack of space.
    pub batches_failed: Counter,
    /// Segment files, the active one included.
    pub segments: Counter,
    /// Bytes in those files.
    pub segment_bytes: Counter,
    /// Every sequence number up to this one is settled (durable or failed).
    pub durable_seq: Counter,
    /// Whether a failed flush poisoned the journal (0 or 1).
    pub poisoned: Counter,
    /// Flushes per latency bucket ([`FLUSH_MICROS_BOUNDS`], then +Inf); not cumulative.
    pub flush_buckets: [Counter; FLUSH_MICROS_BOUNDS.len() + 1],
    /// Total flush time, µs.
    pub flush_micros_total: Counter,
    /// Batches per size bucket ([`BATCH_RECORDS_BOUNDS`], then +Inf); not cumulative.
    pub batch_buckets: [Counter; BATCH_RECORDS_BOUNDS.len() + 1],
}

/// A snapshot of the journal figures [`ShardCounters::publish_journal`] takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalFigures {
    /// Batches made durable.
    pub flushes: u64,
    /// Records made durable.
    pub records: u64,
    /// Bytes written by durable batches.
    pub bytes: u64,
    /// Batches that failed for lack of space.
    pub batches_failed: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes in segment files.
    pub segment_bytes: u64,
    /// Settled sequence number.
    pub durable_seq: u64,
    /// Whether the journal is poisoned.
    pub poisoned: bool,
    /// Flush latency buckets.
    pub flush_buckets: [u64; FLUSH_MICROS_BOUNDS.len() + 1],
    /// Total flush time, µs.
    pub flush_micros_total: u64,
    /// Batch size buckets.
    pub batch_buckets: [u64; BATCH_RECORDS_BOUNDS.len() + 1],
}

/// One rule's counts, as last published by its shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleFigures {
    /// The rule's name (from CONFIG_FILE).
    pub rule: String,
    /// Messages it failed in generations before the current one.
    pub failed_before: u64,
    /// Messages it could not evaluate in generations before the current one.
    pub errored_before: u64,
    /// Messages it failed in the current generation, as last published.
    pub failed: u64,
    /// Messages it could not evaluate in the current generation, as last published.
    pub errored: u64,
}

impl RuleFigures {
    /// Failures since start.
    pub fn failed_total(&self) -> u64 {
        self.failed_before + self.failed
    }

    /// Evaluation errors since start.
    pub fn errored_total(&self) -> u64 {
        self.errored_before + self.errored
    }
}

/// A shard's per-rule counts and the rules generation they belong to.
#[derive(Debug, Default)]
pub struct RuleTable {
    /// The generation last published.
    pub generation: u64,
    /// Per rule name.
    pub rules: Vec<RuleFigures>,
}

/// The counters of one shard. Written only by that shard's thread.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Connections open now.
    pub connections_open: Counter,
    /// Connections accepted and served.
    pub connections_accepted: Counter,
    /// Connections closed at once because MAX_CONNECTIONS was reached.
    pub connections_refused: Counter,
    /// Accept calls that failed (EMFILE, ENFILE, ENOBUFS, …).
    pub accept_errors: Counter,
    /// Frames answered (or suppressed by MSH-15).
    pub frames: Counter,
    /// Frames that parsed as HL7 messages.
    pub messages: Counter,
    /// Bytes read from peers.
    pub bytes_in: Counter,
    /// Bytes written to peers.
    pub bytes_out: Counter,
    /// ACKs sent, by code ([`ACK_CODES`] order).
    pub acks: [Counter; 6],
    /// Answers suppressed by MSH-15 (enhanced mode).
    pub acks_suppressed: Counter,
    /// Connections closed because a frame exceeded MAX_FRAME_SIZE.
    pub frames_too_large: Counter,
    /// Connections closed for a flood of rejected frames.
    pub reject_floods: Counter,
    /// Frames that did not parse as HL7 (answered AR).
    pub frames_unparsed: Counter,
    /// Frames abandoned by a start block inside them (counted when the connection closes).
    pub frames_abandoned: Counter,
    /// Bytes outside frames, skipped (counted at close).
    pub noise_bytes: Counter,
    /// Messages the journal could not store (AE).
    pub messages_not_stored: Counter,
    /// TLS handshakes completed (before TLS_CLIENT_ALLOWED is checked).
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed or did not complete within CONNECT_TIMEOUT (plaintext MLLP
    /// on a TLS listener included).
    pub tls_handshake_failures: Counter,
    /// Verified TLS clients refused because neither their CN nor a SAN is in
    /// TLS_CLIENT_ALLOWED.
    pub tls_clients_refused: Counter,
    /// TLS connections closed for records that did not decrypt or parse after the handshake.
    pub tls_record_errors: Counter,
    /// Plaintext connections closed because they opened with a TLS ClientHello.
    pub tls_hellos_on_plaintext: Counter,
    /// Connections closed because a write of ACKs did not complete within WRITE_TIMEOUT (a
    /// peer that does not read), TLS or not.
    pub write_timeouts: Counter,
    /// The journal's figures (published by the heartbeat).
    pub journal: JournalCounters,
    /// Last heartbeat, ms since the Unix epoch (0: none yet).
    pub heartbeat_unix_millis: Counter,
    /// Per-rule counts (published by the heartbeat; never touched on the message path).
    pub rules: Mutex<RuleTable>,
}

impl ShardCounters {
    /// Counts an ACK written with `code`, or one suppressed (`None`).
    pub fn ack(&self, code: Option<AckCode>) {
        match code {
            Some(code) => self.acks[ack_index(code)].inc(),
            None => self.acks_suppressed.inc(),
        }
    }

    /// Publishes the journal's figures (the heartbeat, off the message path).
    pub fn publish_journal(&self, f: &JournalFigures) {
        let j = &self.journal;
        j.flushes.set(f.flushes);
        j.records.set(f.records);
        j.bytes.set(f.bytes);
        j.batches_failed.set(f.batches_failed);
        j.segments.set(f.segments);
        j.segment_bytes.set(f.segment_bytes);
        j.durable_seq.set(f.durable_seq);
        j.poisoned.set(u64::from(f.poisoned));
        for (counter, &value) in j.flush_buckets.iter().zip(&f.flush_buckets) {
            counter.set(value);
        }
        j.flush_micros_total.set(f.flush_micros_total);
        for (counter, &value) in j.batch_buckets.iter().zip(&f.batch_buckets) {
            counter.set(value);
        }
    }

    /// Publishes per-rule counts of rules generation `generation` (the heartbeat, off the
    /// message path). A shard's counts start again when the rules are reloaded, so what the
    /// generation before counted moves to the `_before` totals and the published figures only
    /// grow. (Counts of the last heartbeat interval before a reload are not seen.)
    pub fn publish_rules(
        &self,
        generation: u64,
        current: impl Iterator<Item = (String, u64, u64)>,
    ) {
        // try_lock: the shard never waits for a scrape; a busy table is updated next beat.
        let mut table = match self.rules.try_lock() {
            Ok(table) => table,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if table.generation != generation {
            table.generation = generation;
            for r in &mut table.rules {
                r.failed_before += std::mem::take(&mut r.failed);
                r.errored_before += std::mem::take(&mut r.errored);
            }
        }
        for (rule, failed, errored) in current {
            match table.rules.iter_mut().find(|r| r.rule == rule) {
                Some(r) => {
                    r.failed = failed;
                    r.errored = errored;
                }
                None => table.rules.push(RuleFigures {
                    rule,
                    failed,
                    errored,
                    ..RuleFigures::default()
                }),
            }
        }
    }

    /// Records a heartbeat now.
    pub fn beat(&self) {
        self.heartbeat_unix_millis.set(unix_millis_now());
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a delivery attempt (or the bookkeeping around it) failed: the `reason` label of
/// `mllpd_connector_failures`. A fixed set, so a downstream cannot grow the label space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The downstream could not be resolved or connected to (unreachable host, refused).
    Connect = 0,
    /// No answer in time.
    Timeout,
    /// Refused for good (AR/CR, HTTP 4xx).
    Rejected,
    /// A transient error answered by the downstream (AE/CE, HTTP 5xx, a redirect).
    DownstreamError,
    /// An answer that is not what the protocol says (no MSA, another message's ACK), or a
    /// connection closed or reset mid-exchange.
    Protocol,
    /// A local IO error (a `file` destination's disk).
    Io,
    /// The connector's filter could not decide (the message becomes a dead letter).
    Filter,
    /// The connector's cursor could not be written (disk full): delivery goes on, a crash
    /// would re-deliver more.
    CursorWrite,
    /// A dead letter could not be stored (retried; the message is kept).
    DeadLetterWrite,
    /// The journal could not be read (retried; nothing is skipped).
    JournalRead,
    /// Anything else.
    Other,
}

/// The label of each [`FailureReason`], in order.
pub const FAILURE_REASONS: [&str; 11] = [
    "connect",
    "timeout",
    "rejected",
    "downstream_error",
    "protocol",
    "io",
    "filter",
    "cursor_write",
    "dead_letter_write",
    "journal_read",
    "other",
];

/// The reason class of a destination's failure text (`Outcome::Failed`): the texts are the
/// connectors' own, so this matches the words they use.
pub fn failure_reason(text: &str) -> FailureReason {
    let t = text.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&["timed out", "timeout", "no ack within"]) {
        FailureReason::Timeout
    } else if any(&[
        "cannot connect",
        "cannot resolve",
        "resolves to no",
        "connection refused",
        "dns",
    ]) {
        FailureReason::Connect
    } else if any(&[
        "answered ae",
        "answered ce",
        "answered http 5",
        "answered http 3",
    ]) {
        FailureReason::DownstreamError
    } else if any(&["answered ar", "answered cr", "answered http 4"]) {
        FailureReason::Rejected
    } else if any(&[
        "not an ack",
        "another message",
        "unknown msa",
        "closed the connection",
        "ack larger",
        "send failed",
        "receive failed",
        "reset",
        "broken pipe",
    ]) {
        FailureReason::Protocol
    } else if any(&[
        "no space",
        "disk",
        "permission denied",
        "read-only",
        "i/o error",
        "write",
    ]) {
        FailureReason::Io
    } else {
        FailureReason::Other
    }
}

/// The delivery counters of one connector on one shard. Written only by that connector's
/// worker thread for that shard (atomics: a load and a store, no lock), read at scrape.
#[derive(Debug)]
pub struct ConnectorCounters {
    /// The connector's name (from CONFIG_FILE).
    pub connector: String,
    /// The shard whose journal it delivers.
    pub shard: usize,
    /// Messages the destination confirmed.
    pub delivered: Counter,
    /// Failed attempts followed by a retry.
    pub retried: Counter,
    /// Messages stored as dead letters.
    pub dead_lettered: Counter,
    /// Messages the connector's filter did not select.
    pub filtered: Counter,
    /// Batches handed to a destination that takes them whole (`file`): delivered ÷ batches is
    /// the mean batch, what each pair of flushes was shared by.
    pub batches: Counter,
    /// Failures by [`FailureReason`] (attempts, and bookkeeping failures).
    pub failures: [Counter; FAILURE_REASONS.len()],
    /// The last sequence number confirmed (the cursor in memory).
    pub confirmed_seq: Counter,
    /// Receive time (µs since the Unix epoch) of the message being delivered; 0 when the
    /// connector has caught up.
    pub pending_since_micros: Counter,
    /// The shard's durable watermark (lag = what is durable and not yet confirmed).
    pub watermark: Arc<crate::journal::Watermark>,
}

impl ConnectorCounters {
    /// Zeroed counters of `connector` on `shard`, whose journal publishes `watermark`.
    pub fn new(
        connector: String,
        shard: usize,
        watermark: Arc<crate::journal::Watermark>,
    ) -> ConnectorCounters {
        ConnectorCounters {
            connector,
            shard,
            delivered: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            filtered: Counter::default(),
            batches: Counter::default(),
            failures: Default::default(),
            confirmed_seq: Counter::default(),
            pending_since_micros: Counter::default(),
            watermark,
        }
    }

    /// Counts a failure of `reason`.
    pub fn fail(&self, reason: FailureReason) {
        self.failures[reason as usize].inc();
    }

    /// Sequence numbers durable and not yet confirmed (gaps count: an upper bound); `None` for
    /// a journal no longer written (its end is not published).
    pub fn lag_messages(&self) -> Option<u64> {
        let durable = self.watermark.durable();
        (durable != u64::MAX).then(|| durable.saturating_sub(self.confirmed_seq.get()))
    }

    /// Age of the oldest message not yet confirmed, seconds (0 when caught up).
    pub fn lag_seconds(&self, now_unix_micros: u64) -> f64 {
        match self.pending_since_micros.get() {
            0 => 0.0,
            since => now_unix_micros.saturating_sub(since) as f64 / 1e6,
        }
    }
}

/// Whether the process may take traffic, as `/readyz` tells a load balancer.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every shard recovered its journal and serves.
    pub serving: AtomicBool,
    /// A shutdown signal arrived (PRE_SHUTDOWN_DELAY and the drain follow).
    pub terminating: AtomicBool,
    /// A shard failed in a way that ends the process (a poisoned journal).
    pub failed: AtomicBool,
}

/// Every counter of the process: one [`ShardCounters`] per shard, and process-wide ones.
#[derive(Debug)]
pub struct Metrics {
    /// Per shard, by index.
    pub shards: Vec<Arc<ShardCounters>>,
    /// Readiness.
    pub readiness: Readiness,
    /// Reads how many log lines were dropped because the log queue was full.
    pub log_lines_dropped: fn() -> u64,
    /// Every connector's counters on every shard, set once when delivery is prepared.
    pub connectors: OnceLock<Vec<Arc<ConnectorCounters>>>,
}

impl Metrics {
    /// Counters for `shards` shards; `log_lines_dropped` reads the log writer's drop counter.
    pub fn new(shards: usize, log_lines_dropped: fn() -> u64) -> Arc<Metrics> {
        Arc::new(Metrics {
            shards: (0..shards)
                .map(|_| Arc::new(ShardCounters::default()))
                .collect(),
            readiness: Readiness::default(),
            log_lines_dropped,
            connectors: OnceLock::new(),
        })
    }

    /// Why the process is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<&'static str> {
        let r = &self.readiness;
        if r.terminating.load(Ordering::Acquire) {
            Some("shutting down")
        } else if r.failed.load(Ordering::Acquire) {
            Some("a shard failed")
        } else if !r.serving.load(Ordering::Acquire) {
            Some("starting")
        } else if self.shards.iter().any(|s| s.journal.poisoned.get() != 0) {
            Some("a journal is poisoned")
        } else {
            None
        }
    }

    /// Shards whose last heartbeat is older than `stale_millis` at `now_millis` (or missing).
    pub fn stale_shards(&self, now_millis: u64, stale_millis: u64) -> Vec<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let beat = s.heartbeat_unix_millis.get();
                beat == 0 || now_millis.saturating_sub(beat) > stale_millis
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// Label set of one shard.
fn shard_label(index: usize) -> [(&'static str, String); 1] {
    [("shard", index.to_string())]
}

/// Writes one metric family: a descriptor and one sample per label set.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => sample.encode_gauge(&(value as i64))?,
        }
    }
    Ok(())
}

/// The per-shard counter families: (name, help, kind, reader).
type ShardFamily = (
    &'static str,
    &'static str,
    MetricType,
    fn(&ShardCounters) -> u64,
);

const SHARD_FAMILIES: [ShardFamily; 17] = [
    (
        "mllpd_connections_open",
        "Connections open now.",
        MetricType::Gauge,
        |s| s.connections_open.get(),
    ),
    (
        "mllpd_connections_accepted",
        "Connections accepted.",
        MetricType::Counter,
        |s| s.connections_accepted.get(),
    ),
    (
        "mllpd_connections_refused",
        "Connections closed at once: MAX_CONNECTIONS reached.",
        MetricType::Counter,
        |s| s.connections_refused.get(),
    ),
    (
        "mllpd_accept_errors",
        "Accept calls that failed (EMFILE, ENFILE, ...).",
        MetricType::Counter,
        |s| s.accept_errors.get(),
    ),
    (
        "mllpd_frames",
        "MLLP frames answered (or suppressed by MSH-15).",
        MetricType::Counter,
        |s| s.frames.get(),
    ),
    (
        "mllpd_messages",
        "Frames that parsed as HL7 messages.",
        MetricType::Counter,
        |s| s.messages.get(),
    ),
    (
        "mllpd_messages_not_stored",
        "Messages the journal could not store (answered AE).",
        MetricType::Counter,
        |s| s.messages_not_stored.get(),
    ),
    (
        "mllpd_received_bytes",
        "Bytes read from senders.",
        MetricType::Counter,
        |s| s.bytes_in.get(),
    ),
    (
        "mllpd_sent_bytes",
        "Bytes written to senders.",
        MetricType::Counter,
        |s| s.bytes_out.get(),
    ),
    (
        "mllpd_journal_flushes",
        "Journal batches made durable.",
        MetricType::Counter,
        |s| s.journal.flushes.get(),
    ),
    (
        "mllpd_journal_records",
        "Journal records made durable.",
        MetricType::Counter,
        |s| s.journal.records.get(),
    ),
    (
        "mllpd_journal_written_bytes",
        "Bytes of durable journal batches.",
        MetricType::Counter,
        |s| s.journal.bytes.get(),
    ),
    (
        "mllpd_journal_batches_failed",
        "Journal batches that failed for lack of space.",
        MetricType::Counter,
        |s| s.journal.batches_failed.get(),
    ),
    (
        "mllpd_journal_segments",
        "Journal segment files.",
        MetricType::Gauge,
        |s| s.journal.segments.get(),
    ),
    (
        "mllpd_journal_bytes",
        "Bytes in journal segment files.",
        MetricType::Gauge,
        |s| s.journal.segment_bytes.get(),
    ),
    (
        "mllpd_journal_durable_seq",
        "Durable watermark: every sequence number up to this one is settled.",
        MetricType::Gauge,
        |s| s.journal.durable_seq.get(),
    ),
    (
        "mllpd_journal_poisoned",
        "1 when a failed flush poisoned the shard's journal.",
        MetricType::Gauge,
        |s| s.journal.poisoned.get(),
    ),
];

impl prometheus_client::collector::Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = || self.shards.iter().enumerate();
        for (name, help, kind, read) in SHARD_FAMILIES {
            family(
                &mut encoder,
                name,
                help,
                kind,
                shards().map(|(i, s)| (shard_label(i), read(s))),
            )?;
        }
        family(
            &mut encoder,
            "mllpd_acks",
            "ACKs sent, by MSA-1 code (suppressed: none sent, MSH-15).",
            MetricType::Counter,
            shards().flat_map(|(i, s)| {
                let codes = ACK_CODES.iter().enumerate().map(move |(k, code)| {
                    let code = String::from_utf8_lossy(code.as_bytes()).into_owned();
                    ([("shard", i.to_string()), ("code", code)], s.acks[k].get())
                });
                let suppressed = std::iter::once((
                    [("shard", i.to_string()), ("code", "suppressed".to_owned())],
                    s.acks_suppressed.get(),
                ));
                codes.chain(suppressed)
            }),
        )?;
        family(
            &mut encoder,
            "mllpd_frame_errors",
            "Frame errors, by kind: too_large and reject_flood close the connection; unparsed is \
             answered AR; abandoned: a start block inside an open frame (counted at close).",
            MetricType::Counter,
            shards().flat_map(|(i, s)| {
                [
                    ("too_large", s.frames_too_large.get()),
                    ("reject_flood", s.reject_floods.get()),
                    ("unparsed", s.frames_unparsed.get()),
                    ("abandoned", s.frames_abandoned.get()),
                ]
                .map(|(kind, v)| ([("shard", i.to_string()), ("kind", kind.to_owned())], v))
            }),
        )?;
        family(
            &mut encoder,
            "mllpd_tls_handshakes",
            "TLS handshakes completed (failures are in mllpd_tls_failures).",
            MetricType::Counter,
            shards().map(|(i, s)| ([("shard", i.to_string())], s.tls_handshakes.get())),
        )?;
        family(
            &mut encoder,
            "mllpd_tls_failures",
            "TLS connections closed, by reason: handshake (failed, or not done within \
             CONNECT_TIMEOUT), client_refused (not in TLS_CLIENT_ALLOWED), record (garbage after \
             the handshake), hello_on_plaintext (a ClientHello on a plaintext listener).",
            MetricType::Counter,
            shards().flat_map(|(i, s)| {
                [
                    ("handshake", s.tls_handshake_failures.get()),
                    ("client_refused", s.tls_clients_refused.get()),
                    ("record", s.tls_record_errors.get()),
                    ("hello_on_plaintext", s.tls_hellos_on_plaintext.get()),
                ]
                .map(|(kind, v)| ([("shard", i.to_string()), ("reason", kind.to_owned())], v))
            }),
        )?;
        family(
            &mut encoder,
            "mllpd_write_timeouts",
            "Connections closed because a write of ACKs did not complete within WRITE_TIMEOUT \
             (a peer that does not read its ACKs).",
            MetricType::Counter,
            shards().map(|(i, s)| (shard_label(i), s.write_timeouts.get())),
        )?;
        family(
            &mut encoder,
            "mllpd_noise_bytes",
            "Bytes outside frames, skipped.",
            MetricType::Counter,
            shards().map(|(i, s)| (shard_label(i), s.noise_bytes.get())),
        )?;
        self.encode_rules(&mut encoder)?;
        self.encode_connectors(&mut encoder)?;
        self.encode_histograms(&mut encoder)?;
        encoder
            .encode_descriptor(
                "mllpd_log_lines_dropped",
                "Log lines dropped because the log queue was full.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&(self.log_lines_dropped)(), None)?;
        encoder
            .encode_descriptor(
                "mllpd_ready",
                "1 when /readyz answers 200.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&i64::from(self.not_ready().is_none()))?;
        let mut info = encoder.encode_descriptor(
            "mllpd_build",
            "Build information.",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

/// The per-connector counter families: (name, help, reader).
type ConnectorFamily = (&'static str, &'static str, fn(&ConnectorCounters) -> u64);

const CONNECTOR_FAMILIES: [ConnectorFamily; 5] = [
    (
        "mllpd_connector_delivered",
        "Messages a connector's destination confirmed.",
        |c| c.delivered.get(),
    ),
    (
        "mllpd_connector_retries",
        "Failed delivery attempts followed by a retry.",
        |c| c.retried.get(),
    ),
    (
        "mllpd_connector_dead_letters",
        "Messages a connector stored as dead letters.",
        |c| c.dead_lettered.get(),
    ),
    (
        "mllpd_connector_filtered",
        "Messages a connector's filter did not select.",
        |c| c.filtered.get(),
    ),
    (
        "mllpd_connector_batches",
        "Batches handed whole to a connector's destination (file: one directory fsync each).",
        |c| c.batches.get(),
    ),
];

/// Label set of one connector on one shard.
fn connector_labels(c: &ConnectorCounters) -> [(&'static str, String); 2] {
    [
        ("connector", c.connector.clone()),
        ("shard", c.shard.to_string()),
    ]
}

impl Metrics {
    fn encode_connectors(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(connectors) = self.connectors.get().filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        for (name, help, read) in CONNECTOR_FAMILIES {
            family(
                encoder,
                name,
                help,
                MetricType::Counter,
                connectors.iter().map(|c| (connector_labels(c), read(c))),
            )?;
        }
        family(
            encoder,
            "mllpd_connector_failures",
            "Connector failures by reason: connect, timeout, rejected, downstream_error, \
             protocol, io (attempts); filter, cursor_write, dead_letter_write, journal_read \
             (bookkeeping; nothing is skipped); other.",
            MetricType::Counter,
            connectors.iter().flat_map(|c| {
                FAILURE_REASONS.iter().enumerate().map(move |(k, reason)| {
                    let [connector, shard] = connector_labels(c);
                    (
                        [connector, shard, ("reason", (*reason).to_owned())],
                        c.failures[k].get(),
                    )
                })
            }),
        )?;
        family(
            encoder,
            "mllpd_connector_cursor_seq",
            "Last journal sequence number a connector confirmed on a shard.",
            MetricType::Gauge,
            connectors
                .iter()
                .map(|c| (connector_labels(c), c.confirmed_seq.get())),
        )?;
        family(
            encoder,
            "mllpd_connector_lag_messages",
            "Sequence numbers durable in the journal and not yet confirmed by the connector.",
            MetricType::Gauge,
            connectors
                .iter()
                .filter_map(|c| Some((connector_labels(c), c.lag_messages()?))),
        )?;
        let now = unix_millis_now().saturating_mul(1000);
        let mut metric = encoder.encode_descriptor(
            "mllpd_connector_lag_seconds",
            "Age of the oldest message a connector has not yet confirmed (0: caught up).",
            None,
            MetricType::Gauge,
        )?;
        for c in connectors {
            metric
                .encode_family(&connector_labels(c))?
                .encode_gauge(&c.lag_seconds(now))?;
        }
        Ok(())
    }

    fn encode_rules(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut merged: Vec<RuleFigures> = Vec::new();
        for shard in &self.shards {
            let table = shard.rules.lock().unwrap_or_else(|e| e.into_inner());
            for r in &table.rules {
                match merged.iter_mut().find(|m| m.rule == r.rule) {
                    Some(m) => {
                        m.failed += r.failed_total();
                        m.errored += r.errored_total();
                    }
                    None => merged.push(RuleFigures {
                        rule: r.rule.clone(),
                        failed: r.failed_total(),
                        errored: r.errored_total(),
                        ..RuleFigures::default()
                    }),
                }
            }
        }
        family(
            encoder,
            "mllpd_rule_failures",
            "Messages a validation rule failed (result=failed) or could not evaluate \
             (result=errored), since start.",
            MetricType::Counter,
            merged.iter().flat_map(|r| {
                [("failed", r.failed), ("errored", r.errored)].map(|(result, v)| {
                    ([("rule", r.rule.clone()), ("result", result.to_owned())], v)
                })
            }),
        )
    }

    fn encode_histograms(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "mllpd_journal_flush_seconds",
            "Time of one journal group commit (write and sync).",
            None,
            MetricType::Histogram,
        )?;
        for (i, s) in self.shards.iter().enumerate() {
            let j = &s.journal;
            let (buckets, count) = buckets(&FLUSH_MICROS_BOUNDS, &j.flush_buckets, 1e6);
            let sum = j.flush_micros_total.get() as f64 / 1e6;
            metric
                .encode_family(&shard_label(i))?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut metric = encoder.encode_descriptor(
            "mllpd_journal_batch_records",
            "Records in one journal group commit.",
            None,
            MetricType::Histogram,
        )?;
        for (i, s) in self.shards.iter().enumerate() {
            let j = &s.journal;
            let (buckets, count) = buckets(&BATCH_RECORDS_BOUNDS, &j.batch_buckets, 1.0);
            let sum = j.records.get() as f64;
            metric
                .encode_family(&shard_label(i))?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Buckets as `encode_histogram` takes them (upper bound / `divisor`, this bucket's own count;
/// the encoder makes them cumulative; `f64::MAX` is its +Inf), and the total count.
fn buckets(bounds: &[u64], counts: &[Counter], divisor: f64) -> (Vec<(f64, u64)>, u64) {
    let buckets: Vec<(f64, u64)> = counts
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let bound = bounds.get(k).map_or(f64::MAX, |&b| b as f64 / divisor);
            (bound, c.get())
        })
        .collect();
    let total = buckets.iter().map(|(_, n)| n).sum();
    (buckets, total)
}

/// The Prometheus text (OpenMetrics) of `metrics`.
pub fn encode(metrics: &Arc<Metrics>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Arc::clone(metrics)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_the_first_bound_at_least_the_value() {
        assert_eq!(bucket(&[1, 2, 4], 0), 0);
        assert_eq!(bucket(&[1, 2, 4], 1), 0);
        assert_eq!(bucket(&[1, 2, 4], 3), 2);
        assert_eq!(bucket(&[1, 2, 4], 4), 2);
        assert_eq!(bucket(&[1, 2, 4], 5), 3);
    }

    #[test]
    fn shards_are_merged_at_scrape() {
        let metrics = Metrics::new(2, || 3);
        metrics.shards[0].ack(Some(AckCode::AA));
        metrics.shards[0].ack(Some(AckCode::AA));
        metrics.shards[1].ack(Some(AckCode::AR));
        metrics.shards[1].connections_open.set(4);
        metrics.shards[0].publish_rules(1, [("pid-required".to_owned(), 2, 0)].into_iter());
        // Shard 1 counted one failure in generation 1, then its counts restarted on reload.
        metrics.shards[1].publish_rules(1, [("pid-required".to_owned(), 1, 0)].into_iter());
        metrics.shards[1].publish_rules(2, [("pid-required".to_owned(), 0, 1)].into_iter());
        let mut figures = JournalFigures::default();
        figures.flush_buckets[0] = 2;
        figures.flush_buckets[11] = 1;
        figures.flush_micros_total = 2_000_100;
        metrics.shards[0].publish_journal(&figures);
        let text = encode(&metrics);
        for line in [
            "mllpd_acks_total{shard=\"0\",code=\"AA\"} 2",
            "mllpd_acks_total{shard=\"1\",code=\"AR\"} 1",
            "mllpd_connections_open{shard=\"1\"} 4",
            "mllpd_rule_failures_total{rule=\"pid-required\",result=\"failed\"} 3",
            "mllpd_rule_failures_total{rule=\"pid-required\",result=\"errored\"} 1",
            "mllpd_journal_flush_seconds_bucket{le=\"0.00005\",shard=\"0\"} 2",
            "mllpd_journal_flush_seconds_bucket{le=\"+Inf\",shard=\"0\"} 3",
            "mllpd_journal_flush_seconds_count{shard=\"0\"} 3",
            "mllpd_log_lines_dropped_total 3",
            "mllpd_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn connector_counters_are_encoded_with_failures_by_reason_and_lag() {
        let metrics = Metrics::new(1, || 0);
        let watermark = Arc::new(crate::journal::Watermark::new());
        watermark.publish(10);
        let lab = Arc::new(ConnectorCounters::new("lab".into(), 0, watermark));
        lab.delivered.add(7);
        lab.confirmed_seq.set(7);
        lab.fail(failure_reason(
            "cannot connect to 127.0.0.1:1: Connection refused",
        ));
        lab.fail(failure_reason("no ACK within 30s"));
        lab.fail(failure_reason("downstream answered HTTP 503"));
        lab.pending_since_micros.set(1);
        metrics.connectors.set(vec![lab]).unwrap();
        let text = encode(&metrics);
        for line in [
            "mllpd_connector_delivered_total{connector=\"lab\",shard=\"0\"} 7",
            "mllpd_connector_failures_total{connector=\"lab\",shard=\"0\",reason=\"connect\"} 1",
            "mllpd_connector_failures_total{connector=\"lab\",shard=\"0\",reason=\"timeout\"} 1",
            "mllpd_connector_failures_total{connector=\"lab\",shard=\"0\",reason=\"downstream_error\"} 1",
            "mllpd_connector_lag_messages{connector=\"lab\",shard=\"0\"} 3",
            "mllpd_connector_cursor_seq{connector=\"lab\",shard=\"0\"} 7",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("mllpd_connector_lag_seconds{connector=\"lab\",shard=\"0\"} 17"));
    }

    #[test]
    fn readiness_needs_serving_and_no_signal() {
        let metrics = Metrics::new(1, || 0);
        assert_eq!(metrics.not_ready(), Some("starting"));
        metrics.readiness.serving.store(true, Ordering::Release);
        assert_eq!(metrics.not_ready(), None);
        metrics.readiness.terminating.store(true, Ordering::Release);
        assert_eq!(metrics.not_ready(), Some("shutting down"));
    }

    #[test]
    fn a_shard_without_a_recent_heartbeat_is_stale() {
        let metrics = Metrics::new(2, || 0);
        metrics.shards[0].heartbeat_unix_millis.set(10_000);
        metrics.shards[1].heartbeat_unix_millis.set(5_000);
        assert_eq!(metrics.stale_shards(11_000, 2_000), vec![1]);
        assert_eq!(metrics.stale_shards(20_000, 2_000), vec![0, 1]);
    }
}
