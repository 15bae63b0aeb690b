//! Every default bound and timeout of mllpd, with the reason for its value.
//!
//! A bound lives here once; `config` turns the user-facing ones into knobs, and the code that
//! enforces a bound names its constant so the reason is one click away. Each bound has its own
//! error and tests at N and N+1 where it is enforced.

use std::time::Duration;

/// Default largest MLLP frame payload accepted (MAX_FRAME_SIZE). 2 MiB covers ORU messages with
/// embedded base64 reports seen in practice while keeping a flood of open frames bounded
/// (10 000 connections × 2 MiB worst case is only reached by peers that actually send that much).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 2 * 1024 * 1024;

/// Smallest frame size a user may configure: an MSH segment alone needs a few dozen bytes, and
/// a limit below this would reject every real message.
pub const FRAME_BYTES_MAX_MIN: usize = 256;

/// Largest frame size a user may configure (1 GiB): the decoder reports offsets as `usize` but
/// the journal stores lengths as `u32`, and buffering more than this per connection is a
/// configuration mistake, not a use case.
pub const FRAME_BYTES_MAX_MAX: usize = 1 << 30;

/// Initial capacity of a connection's read buffer. Most HL7 messages are under 4 KiB; 8 KiB lets
/// a typical burst of pipelined frames land in one read without growing.
pub const READ_BUFFER_BYTES_INITIAL: usize = 8 * 1024;

/// Factor by which a connection's read buffer grows when a frame needs more room: 8 KiB,
/// 64 KiB, 512 KiB, 4 MiB, … up to MAX_FRAME_SIZE + slack. Doubling copied a 2 MiB frame's
/// bytes again at each of eight steps (measured with a flood of 2 MiB frames: 11 % of the
/// shard's CPU in those copies); a larger step copies less, and a buffer's untouched pages cost
/// no memory.
pub const READ_BUFFER_GROWTH: usize = 8;

/// How long a connection keeps a read buffer that a large frame grew, once it is empty, before
/// giving it back: a peer streaming large frames would otherwise grow it again for every frame
/// (measured with a flood of 2 MiB frames: reallocation and fresh pages were a third of the
/// shard's stalls), while a peer that pauses this long is not streaming, and 10 000 idle
/// connections must hold only the initial buffer each.
pub const READ_BUFFER_KEEP: Duration = Duration::from_millis(20);

/// Extra room above the largest frame (start block, end block, and the start of the next frame
/// that arrived in the same read): the read buffer never grows beyond
/// `frame_bytes_max + READ_BUFFER_SLACK_BYTES`.
pub const READ_BUFFER_SLACK_BYTES: usize = 64 * 1024;

/// Idle time between frames before a connection is closed (IDLE_TIMEOUT).
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Deadline for a whole frame from its start block (FRAME_TIMEOUT); not reset by each byte, so a
/// sender trickling one byte at a time cannot hold a connection open forever.
pub const FRAME_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Deadline for one write of ACKs (WRITE_TIMEOUT), from its first byte to its last, on both
/// socket paths: a peer that stops reading, or reads a few bytes at a time, must not pin a
/// buffer and a connection slot. A write holds at most [`ANSWER_BYTES_MAX`] (plus one ACK), so a
/// connection must take at least that much every WRITE_TIMEOUT; the answer to a large read is
/// several writes, each with its own deadline.
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Most connections the whole server holds at once (MAX_CONNECTIONS); divided among shards.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;

/// TCP keepalive idle period (KEEP_ALIVE_PERIOD): finds peers that vanished without a FIN
/// (a power-cut interface engine) on otherwise idle long-lived connections.
pub const KEEP_ALIVE_PERIOD_DEFAULT: Duration = Duration::from_secs(60);

/// Deadline for a TLS handshake (CONNECT_TIMEOUT), from accept to the handshake's end: a
/// client that sends part of a ClientHello and stalls holds a connection slot at most this long.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// A server certificate that expires within this time is warned about at start and at each
/// reload: two weeks leaves time to renew through a change process.
pub const TLS_CERT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Bytes of a verified TLS client's identity (subject CN and SANs) stored in each journal
/// record of its connection. A CN is at most 64 characters (X.520 ub-common-name) and a client
/// certificate carries a handful of SANs, so real identities fit many times over; a certificate
/// with hundreds of SANs must not add kilobytes to every message. SANs past the bound are left
/// out of the record (the connect log line and the rules still see them all).
pub const CLIENT_IDENTITY_BYTES_MAX: usize = 4 * 1024;

/// Bytes of TLS records received per read of a TLS connection: one maximal record (16 KiB of
/// plaintext plus its 256 bytes of overhead and header) is decrypted per read, so the buffer is
/// fixed per connection and one read's plaintext never exceeds what rustls buffers by default.
pub const TLS_RECORD_READ_BYTES: usize = 16 * 1024 + 256 + 5;

/// Time to keep serving after SIGTERM so a load balancer can remove the endpoint first.
pub const PRE_SHUTDOWN_DELAY_DEFAULT: Duration = Duration::ZERO;

/// Longest time to finish in-flight frames after SIGTERM before exiting anyway.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Back-off after an accept error such as EMFILE, so a full fd table does not spin a shard.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Longest MSA-3 / ERR text mllpd writes into an ACK; reasons are short, and bounding them
/// bounds the ACK buffer.
pub const ACK_TEXT_BYTES_MAX: usize = 200;

/// Longest control id (MSH-10) echoed into MSA-2. HL7 v2.5+ allows 199 characters; a longer
/// value is still echoed when the frame fits, this only sizes the initial ACK buffer.
pub const CONTROL_ID_BYTES_TYPICAL: usize = 64;

/// Received bytes a connection may hold on the uring socket path (SOCKET_IO=uring) before its
/// multishot receive is paused: the connection reads them in buffer-sized steps, and past this
/// the kernel's socket buffer pushes back on the sender, as it does when glommio issues no
/// read. Resumed at half. The pause is a cancel of the multishot receive that reaches the
/// kernel on the shard's next ring turn, and completions already queued still land, so an inbox
/// may overshoot this by up to about as much again (measured: 245 KB over, tests/server.rs
/// push-back test): memory per connection under a flood is bounded by twice this plus its
/// read buffer.
pub const SOCKET_INBOX_BYTES_MAX: usize = 256 * 1024;

/// Wait before entering a shard's socket ring again after `io_uring_enter` failed with EAGAIN
/// (the kernel lacked memory for new requests for now). The failure is transient, so it is
/// retried rather than failing the shard; 1 ms lets completions and reclaim free memory without
/// spinning the shard's CPU, and is small against every socket timeout (WRITE_TIMEOUT: 5 s).
pub const SOCKET_RING_ENTER_BACKOFF: Duration = Duration::from_millis(1);

/// Most ACK bytes gathered before they are written: one write carries at most this plus one
/// ACK. The answers of a read of pipelined messages fit far below it (an 8 KiB read buffer of
/// real messages earns a few KiB of ACKs), so such a read is still answered with one write; but
/// a read of tiny frames earns many times its size (`0x0B 0x1C 0x0D` is 3 bytes and earns a
/// 208-byte AR: a 2 MiB read would be ~145 MB of ACKs held at once). 64 KiB bounds what a
/// connection holds for its answers while one send still carries ~300 ACKs, so answering a
/// long pipelined burst costs a send per 300 messages, not one per message.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// How long a connection sleeps to let the shard's other connections run (after a chunk of
/// answers, or [`READ_BYTES_PER_TURN_MAX`] bytes read). Only there to reach the executor's next
/// poll, but long enough not to have passed before the timer is first polled (1 µs had, in a
/// debug build, so the task never left the CPU); 50 µs per chunk of `ANSWER_FRAMES_MAX`
/// frames costs a flood little.
pub const CONNECTION_PAUSE: Duration = Duration::from_micros(50);

/// Most bytes a connection reads before it lets the shard's other connections run, whether or
/// not those bytes completed a frame: a peer streaming bytes that never close a frame (random
/// bytes, measured: a neighbour's p99 690 ms on the ring path) writes nothing and so never hits
/// [`ANSWER_BYTES_MAX`]. 64 KiB is ~200 typical messages, so a real sender pauses rarely.
pub const READ_BYTES_PER_TURN_MAX: usize = 64 * 1024;

/// ACK_AFTER=receipt: how long the journal lets records gather before it writes them (nothing
/// waits for that write: the AA has left). At light load a write per message was a direct IO —
/// a virtio kick and an interrupt, a wake of the shard — per message; with 5 ms, at most 200
/// writes a second whatever the rate. It is also how much more than the in-memory batch a
/// crash of mllpd itself loses in this mode (already documented as losing AA'd messages), and
/// how much later the delivery engine sees a record.
pub const RECEIPT_GROUP_DELAY: Duration = Duration::from_millis(5);

/// ACK_AFTER=receipt: pending record bytes that start the journal's write before
/// [`RECEIPT_GROUP_DELAY`] (a busy shard writes in steps of this, not of the batch bound).
pub const RECEIPT_GROUP_BYTES: usize = 256 * 1024;

/// Most frames decoded, admitted and waited for before their answers are written and the
/// shard's other connections get a turn. Bounds the verdicts pending at once, and the time one
/// connection holds the shard's CPU between yields (1024 parses and ACKs: well under a
/// millisecond in a release build), also where answers are tiny or none (MSH-15 `NE`
/// suppresses them). Above the ~300 ARs that fill [`ANSWER_BYTES_MAX`], so for answered frames
/// the byte bound decides.
pub const ANSWER_FRAMES_MAX: usize = 1024;

/// Most frames a connection may have rejected (AR) within [`REJECTED_FRAMES_WINDOW`] with no
/// accepted message among them; one more closes it, unanswered (logged once, counted in the
/// shard's stats). A sender that waits for each ACK, as MLLP senders do, and is rejected stays
/// far below this (an interface engine retries a rejected message after seconds, not
/// microseconds); a peer flooding empty or junk frames reaches it within one read, and then
/// has cost 1000 ARs (~200 KB), not one per frame it sent. A sender whose messages are mostly
/// good is never cut: an accepted message restarts the count.
pub const REJECTED_FRAMES_MAX: u32 = 1000;

/// The window of [`REJECTED_FRAMES_MAX`]: a sender with a persistent fault (every message
/// rejected) that sends one at a time stays connected and keeps getting its ARs.
pub const REJECTED_FRAMES_WINDOW: Duration = Duration::from_secs(1);

/// Least time between two log lines about a reused control id stored as a new message (same
/// MSH-3, MSH-4, MSH-10 within DEDUP_WINDOW, another payload): a sender whose counter is stuck
/// reuses an id for every message, and one line per message would flood the log; the journal
/// counts every one and each line says how many went unlogged.
pub const DEDUP_REUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Smallest step a journal segment grows by: small, so a server that starts and receives a
/// handful of messages (tests, a quiet feed) writes little; steps double with the segment.
pub const JOURNAL_EXTEND_STEP_MIN: u64 = 256 * 1024;

/// Largest step a journal segment grows by when a batch has to wait for space (only when it
/// outran the readying ahead, below).
pub const JOURNAL_EXTEND_STEP_MAX: u64 = 8 * 1024 * 1024;

/// Space the journal readies ahead of its records in the background (zeros written and made
/// durable, in pieces of this size, while batches go on below them), started once less than
/// twice this is left. One piece: ~6 ms of writing on this VM's disk; a batch flushed while
/// a piece is in flight carries at most this much more to the disk. In front of a batch, the
/// 8 MiB steps took 40-75 ms every few seconds at hub load, which was the journal's p99.
pub const JOURNAL_READY_AHEAD_BYTES: u64 = 1024 * 1024;

/// How long the shards have to bind and serve once their journals are recovered, before
/// start-up is declared failed: binding takes milliseconds, so this only catches a shard stuck
/// (a socket ring that cannot be set up). Journal recovery is not bounded by it.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often journal recovery reports its progress (logged by the shard): a recovery that takes
/// minutes (a large journal or dedup window) is seen to advance.
pub const RECOVERY_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Longest time journal recovery may go without progress (no record read, no segment done)
/// before start-up is declared failed: recovery of any size may take as long as it needs while
/// it advances, but a read stuck this long is a failing disk, better reported than waited on
/// silently. Many progress intervals, so a slow, busy disk is not mistaken for a stuck one.
pub const RECOVERY_STALL_TIMEOUT: Duration = Duration::from_secs(120);

const _: () = assert!(FRAME_BYTES_MAX_MIN <= FRAME_BYTES_MAX_DEFAULT);
const _: () =
    assert!(RECOVERY_PROGRESS_INTERVAL.as_secs() * 10 <= RECOVERY_STALL_TIMEOUT.as_secs());
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT <= FRAME_BYTES_MAX_MAX);
const _: () = assert!(READ_BUFFER_BYTES_INITIAL <= FRAME_BYTES_MAX_MIN + READ_BUFFER_SLACK_BYTES);
const _: () = assert!(FRAME_BYTES_MAX_MAX <= u32::MAX as usize);

/// Most validation rules one configuration may hold. Every rule runs on every message until
/// one fails, so the count bounds the CPU a message costs; 256 is far above the few dozen
/// rules a real interface needs, and a longer list is a generated file gone wrong.
pub const RULES_MAX: usize = 256;

/// Longest CEL expression (bytes) of one rule or connector filter. Compilation, the
/// parser's recursion and the size of the evaluated tree all grow with it; 4 KiB holds the
/// longest allow-list written by hand, and anything longer belongs in several rules.
pub const RULE_EXPRESSION_BYTES_MAX: usize = 4 * 1024;

/// Longest rule name or message (bytes): both are written into ACKs (MSA-3, ERR) and logs,
/// whose text is bounded by `ACK_TEXT_BYTES_MAX` anyway.
pub const RULE_TEXT_BYTES_MAX: usize = 1024;

/// Bytes the tailing journal reader (delivery) reads at once: many typical records per read
/// syscall, little memory per connector and shard; a larger record is read whole on its own.
pub const TAIL_READ_BYTES: usize = 256 * 1024;

/// Longest a delivery thread sleeps waiting for the journal's watermark before it looks at its
/// stop flag again: bounds how long shutdown waits for an idle connector.
pub const DELIVERY_IDLE_WAIT: Duration = Duration::from_millis(200);

/// Most messages a delivery worker gathers into one batch for a destination that takes batches
/// (`file`: one directory fsync for the batch instead of one per message). It takes what is
/// durable already, and what becomes durable within the destination's gathering window
/// (`FILE_BATCH_GATHER`); a batch is confirmed as a whole, so this also bounds the work redone
/// after a failed batch (its unconfirmed messages go again one by one).
pub const DELIVERY_BATCH_RECORDS_MAX: usize = 256;

/// ... and most payload bytes: the batch's copies of the messages live in the worker's memory
/// (one per connector and shard), so a few MiB at most, while still many typical messages.
pub const DELIVERY_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// How long a `file` connector's batch that is not full waits for more durable messages before
/// it is written. Each batch costs two flushes of the disk (the files' fdatasync and the
/// directory's fsync), usually the disk the journal flushes for intake: at a trickle of one
/// message per batch they competed with intake's own flushes (1 connection, depth 1: intake
/// with a file connector 0.52x of intake without). A few milliseconds gather a trickle into
/// batches and add only that to delivery latency, small beside the flushes themselves.
pub const FILE_BATCH_GATHER: Duration = Duration::from_millis(5);

/// Entries of the io_uring a `file` connector's worker syncs a batch's files through: that many
/// fdatasyncs in flight at once (the kernel runs them on at most a few workers per CPU anyway);
/// a larger batch goes in chunks of this.
pub const FILE_SYNC_RING_ENTRIES: u32 = 64;

/// Nice value of the delivery threads of connectors the sender's ACK does not wait for. Delivery
/// is store-and-forward: it may lag and catch up, intake may not. Where they share a CPU (every
/// CPU has a shard, or the senders' side of a small machine), weight 110 against a shard's 1024
/// gives intake ~90 % of a contended CPU, while an idle CPU still runs delivery at full speed.
/// Measured on 2 CPUs (shard on CPU 0, five connectors and the load generator on CPU 1,
/// `INTAKE=pipelined perf/connectors.sh 3s 16 8`, alternating builds): intake with five
/// connectors running was 6-31 k msg/s at nice 0 and 64-77 k at nice 10 (nice 19: no better
/// within the noise, and slower delivery). A connector whose confirmation the ACK waits for
/// (`sync: true` with ACK_AFTER=delivery) keeps nice 0: it is intake's latency.
pub const DELIVERY_NICE: i32 = 10;

/// Longest shutdown waits for the delivery threads once intake has stopped: an idle thread
/// stops within `DELIVERY_IDLE_WAIT`, one in a backoff at once; one inside an attempt (a
/// downstream that took the message and has not answered) is left behind, since its message is
/// unconfirmed and is sent again at the next start.
pub const DELIVERY_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A connector's cursor file is rewritten at most this often (it is advanced in memory after
/// every confirmation): each write costs an fsync of the file and of its directory, and a crash
/// re-delivers at most what was confirmed since the last write.
pub const CURSOR_WRITE_INTERVAL: Duration = Duration::from_millis(200);

/// ... or once this many records were confirmed since the last write, whichever comes first:
/// bounds the re-delivered tail after a crash at a fast rate (with the interval above, about
/// 1 000 records or 200 ms of traffic per connector and shard).
pub const CURSOR_WRITE_RECORDS: u64 = 1000;

/// Default first wait before a failed delivery is retried (`retry.initial_backoff`): long
/// enough not to hammer a downstream that just refused, short enough that a blip costs little.
pub const RETRY_INITIAL_BACKOFF_DEFAULT: Duration = Duration::from_secs(1);

/// Default longest wait between retries (`retry.max_backoff`): the backoff doubles up to this,
/// so a downstream back after a long outage is noticed within a minute.
pub const RETRY_MAX_BACKOFF_DEFAULT: Duration = Duration::from_secs(60);

/// Default attempts before a message's delivery is given up (`retry.max_attempts`) and
/// `on_failure` applies: with the backoffs above about 4.5 minutes, enough to ride out a
/// downstream restart without dead-lettering the whole queue behind it.
pub const RETRY_MAX_ATTEMPTS_DEFAULT: u32 = 10;

/// How long a connector waits for a TCP connection to its downstream: a host that does not
/// answer within this is counted as a failed attempt and retried with backoff.
pub const CONNECTOR_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an `mllp` connector waits for the downstream's ACK (and a `file` or `http` one for
/// its write or answer): a downstream that accepts and never answers is retried, not waited on
/// forever.
pub const CONNECTOR_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest ACK frame an `mllp` connector reads from its downstream: an ACK is a few hundred
/// bytes; a peer sending megabytes without an end block is broken and is disconnected.
pub const CONNECTOR_ACK_BYTES_MAX: usize = 64 * 1024;

/// The duplicate window of a JetStream stream the `nats` connector creates: a re-send with the
/// same `Nats-Msg-Id` within it is dropped by the stream. A re-send happens after a crash (the
/// cursor lags confirmation by at most `CURSOR_WRITE_INTERVAL`) once mllpd is back, or after a
/// lost ack; ten minutes covers a restart with room to spare (JetStream's default is two), and
/// the stream keeps the ids of only that long a stretch in memory.
pub const NATS_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// How long the `nats` connector waits for a JetStream ack (and a JetStream API answer): an ack
/// takes milliseconds; the longest wait expected is a stream leader election after a node
/// loss (a few seconds), and a publish lost with a failed node is re-sent after this rather
/// than after `CONNECTOR_RESPONSE_TIMEOUT`.
pub const NATS_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest subject token the `nats` connector makes from one header field: NATS subjects are
/// meant to be short (every server matches them against its interest graph), and a field can be
/// up to a frame long.
pub const NATS_SUBJECT_TOKEN_BYTES_MAX: usize = 64;

/// How often a delivery worker looks for dead letters handed back by `mllpd dlq replay`: a
/// directory listing per connector and shard, cheap at this rate, and a replay is picked up
/// within about a second.
pub const REPLAY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Most connectors one configuration may declare: each takes a thread per shard and a cursor
/// per shard.
pub const CONNECTORS_MAX: usize = 64;

/// Default `sync_timeout` of a `sync: true` connector (ACK_AFTER=delivery): how long a sender's
/// ACK waits for the downstream's confirmation before it is answered AE (the message stays
/// journaled and its delivery goes on). Below the 30 s senders commonly wait for an ACK, so the
/// sender hears AE from mllpd rather than timing out itself, and above a downstream's usual
/// round trip even with a retry or two at the default backoff.
pub const SYNC_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Longest `sync_timeout` a connector may set: beyond this the sender has long given up.
pub const SYNC_TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// Rejections (AR from downstream, dead letters) a shard remembers for ACK_AFTER=delivery, so
/// that the ACK waiting for that message can say AR and why: a waiting ACK reads its outcome
/// within moments of the worker's confirmation, so a few thousand (a few hundred KiB at worst)
/// covers any burst; a resend of a message rejected longer ago is answered AA.
pub const SYNC_REJECTIONS_MAX: usize = 4096;

const _: () = assert!(CURSOR_WRITE_RECORDS > 0);
const _: () = assert!(DELIVERY_BATCH_RECORDS_MAX > 0 && DELIVERY_BATCH_BYTES_MAX > 0);
const _: () =
    assert!(RETRY_INITIAL_BACKOFF_DEFAULT.as_millis() <= RETRY_MAX_BACKOFF_DEFAULT.as_millis());
/// Default admin endpoint (ADMIN_ADDR): loopback only, so metrics and health are not exposed
/// to the network unless an operator (or a manifest) asks for it; 9575 sits beside MLLP's 2575.
pub const ADMIN_ADDR_DEFAULT: &str = "127.0.0.1:9575";

/// Deadline for one admin request, from accept to the last byte of the answer. The admin
/// thread serves one request at a time (a scrape every few seconds needs no more), so a client
/// that connects and says nothing holds it at most this long.
pub const ADMIN_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest admin request head (request line and headers): a GET of three short paths needs a
/// few hundred bytes; anything longer is not a probe or a scraper and is refused.
pub const ADMIN_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How often a shard bumps its heartbeat and publishes its journal and rule figures for the
/// admin thread: the staleness of those metrics, at two wake-ups per second per shard.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// A shard whose heartbeat is older than this fails `/healthz`: many intervals, so a busy
/// 2-core machine or a long journal flush is not taken for a stuck shard, and well inside a
/// Kubernetes liveness probe's default budget (3 failures × 10 s).
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(5);

/// Log lines the non-blocking log writer queues before it drops (and counts) new ones: a
/// shard never waits for stderr. 64 Ki lines is several seconds of a connection flood's
/// rate-limited lines, and at most a few tens of MiB.
pub const LOG_QUEUE_LINES: usize = 64 * 1024;

/// How often the count of dropped log lines is reported in the log (when it grew).
pub const LOG_DROPS_REPORT_INTERVAL: Duration = Duration::from_secs(10);

const _: () = assert!(HEARTBEAT_INTERVAL.as_millis() * 4 <= HEARTBEAT_STALE.as_millis());

/// Longest header field (MSH-3, MSH-4, MSH-9, MSH-10) copied into an audit line, in bytes: a
/// control id is at most 199 bytes (HL7 v2.7), an application name far less; a sender's longer
/// field is cut, so a line stays small whatever arrives.
pub const AUDIT_FIELD_BYTES_MAX: usize = 256;

/// Batches (one per answered chunk of a read) the audit queue holds before shards wait: with
/// up to `ANSWER_FRAMES_MAX` lines of about 300 bytes each, at most tens of MiB, and many
/// fsyncs' worth of traffic, so only a stalled disk makes shards wait.
pub const AUDIT_QUEUE_BATCHES: usize = 1024;

/// How long the audit writer waits before retrying a failed write (a full or failing disk).
pub const AUDIT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Size at which the audit file is rotated: 64 MiB is about 200 000 decisions, a few minutes
/// at full speed or a day of a busy interface, and quick to scan or ship.
pub const AUDIT_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Audit files kept, the current one included: at most 512 MiB on disk.
pub const AUDIT_FILES_MAX: usize = 8;

/// Longest wait at exit for the audit writer to write out what is queued (a full queue is tens
/// of MiB: seconds on any disk; longer means the disk is failing, and exiting is better).
pub const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Deadline of `mllpd health` (a container's HEALTHCHECK) for its whole exchange with the admin
/// endpoint: the admin thread answers within ADMIN_IO_TIMEOUT or not at all.
pub const HEALTH_PROBE_TIMEOUT: Duration = ADMIN_IO_TIMEOUT;

/// Most bytes of the admin endpoint's answer `mllpd health` reads: a status line and a reason.
pub const HEALTH_PROBE_BYTES_MAX: u64 = 8 * 1024;
