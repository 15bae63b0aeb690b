//! One connection's sending and ACK checking, and the threads that drive all connections.
//!
//! Invariant: `inflight` holds (sequence, time) of every message written and not yet
//! answered, oldest first; an ACK always settles the oldest.

use super::{control_id, Mode, Plan, Shared};
use crate::floor::next_frame;
use crate::message::Template;
use crate::verify::{check_ack, Mismatch};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Mismatch kinds, in the order of [`Stats::mismatches`].
pub const MISMATCH_KINDS: [Mismatch; 6] = [
    Mismatch::NotHl7,
    Mismatch::NotAck,
    Mismatch::NoMsa,
    Mismatch::Code,
    Mismatch::ControlId,
    Mismatch::Unsolicited,
];

/// What one connection (or, merged, the whole run) saw.
#[derive(Debug)]
pub struct Stats {
    /// Latency of measured ACKs, nanoseconds.
    pub hist: Histogram<u64>,
    /// Messages written (warmup included).
    pub sent: u64,
    /// Correct ACKs inside the measured window.
    pub measured: u64,
    /// Mismatched ACKs by kind (index as in [`MISMATCH_KINDS`]), warmup included.
    pub mismatches: [u64; 6],
    /// Connections that failed (connect, read, write, closed by the server).
    pub errors: u64,
    /// Messages never answered (in flight when the connection ended or the drain timed out).
    pub lost: u64,
    /// The first few error texts.
    pub error_samples: Vec<String>,
    /// Idle connections the server had closed by the end of the run.
    pub idle_closed: u64,
}

impl Stats {
    /// Empty stats.
    pub fn new() -> Stats {
        Stats {
            hist: Histogram::new_with_bounds(1, 120_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            sent: 0,
            measured: 0,
            mismatches: [0; 6],
            errors: 0,
            lost: 0,
            error_samples: Vec::new(),
            idle_closed: 0,
        }
    }

    /// Adds another connection's stats.
    pub fn merge(&mut self, other: Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.sent += other.sent;
        self.measured += other.measured;
        for (a, b) in self.mismatches.iter_mut().zip(other.mismatches) {
            *a += b;
        }
        self.errors += other.errors;
        self.lost += other.lost;
        self.idle_closed += other.idle_closed;
        for e in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
    }

    fn error(&mut self, text: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(text);
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// What the threads share while opening connections: the clock starts only once every
/// thread has opened its connections.
struct Gate {
    /// Threads and the driver meet here twice: all connections open; run state published.
    barrier: std::sync::Barrier,
    /// The run's clock and counters, made by the driver between the two meetings.
    shared: std::sync::OnceLock<Arc<Shared>>,
    /// Connections (sending and idle) that opened, all threads.
    opened: std::sync::atomic::AtomicUsize,
}

/// Runs the plan on `plan.threads` pinned threads and returns the run state and the merged
/// stats. Every thread first opens its connections (sending ones, then idle ones); then
/// `opened(n)` runs on this thread with the number that opened (e.g. to wait until the server
/// has accepted them all), the clock starts (`Shared::new`), `started` gets the run state (to
/// start samplers), and the threads send.
pub fn run(
    plan: &Plan,
    opened: impl FnOnce(usize),
    started: impl FnOnce(&Arc<Shared>),
) -> (Arc<Shared>, Stats) {
    let gate = Arc::new(Gate {
        barrier: std::sync::Barrier::new(plan.threads + 1),
        shared: std::sync::OnceLock::new(),
        opened: std::sync::atomic::AtomicUsize::new(0),
    });
    let mut handles = Vec::new();
    for thread in 0..plan.threads {
        let plan = plan.clone();
        let gate = gate.clone();
        handles.push(std::thread::spawn(move || run_thread(&plan, &gate, thread)));
    }
    gate.barrier.wait();
    opened(gate.opened.load(Ordering::Relaxed));
    let shared = Arc::new(Shared::new(plan));
    started(&shared);
    // Set before the second meeting, so every thread finds it there.
    let _ = gate.shared.set(shared.clone());
    gate.barrier.wait();
    let mut total = Stats::new();
    for handle in handles {
        match handle.join() {
            Ok(stats) => total.merge(stats),
            Err(_) => total.error("generator thread panicked".to_owned()),
        }
    }
    (shared, total)
}

/// One generator thread. It passes both meetings of `gate` whatever fails (a thread that
/// returned early would leave the others waiting forever).
fn run_thread(plan: &Plan, gate: &Gate, thread: usize) -> Stats {
    if let Some(&cpu) = plan.cpus.get(thread % plan.cpus.len().max(1)) {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let mut stats = Stats::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            stats.error(format!("tokio runtime: {e}"));
            gate.barrier.wait();
            gate.barrier.wait();
            return stats;
        }
    };
    let conns: Vec<usize> = (thread..plan.connections).step_by(plan.threads).collect();
    // A LocalSet: connection tasks share Cells between their read and write halves.
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut streams = Vec::with_capacity(conns.len());
        for conn in conns {
            match open(plan).await {
                Ok(stream) => streams.push((conn, stream)),
                Err(e) => stats.error(e),
            }
        }
        let idle = open_idle(plan, thread, &mut stats);
        gate.opened
            .fetch_add(streams.len() + idle.len(), Ordering::Relaxed);
        // Blocking this thread's runtime is harmless here: nothing of it runs yet.
        gate.barrier.wait();
        gate.barrier.wait();
        let Some(shared) = gate.shared.get() else {
            return stats.error("run state not published".to_owned());
        };
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(conn, stream)| {
                tokio::task::spawn_local(connection(plan.clone(), shared.clone(), conn, stream))
            })
            .collect();
        for task in tasks {
            match task.await {
                Ok(s) => stats.merge(s),
                Err(e) => stats.error(format!("connection task: {e}")),
            }
        }
        stats.idle_closed += idle_closed(&idle);
    });
    // Stay alive (and so in /proc/PID/task) until the CPU sampler has its end sample.
    let give_up = Instant::now() + Duration::from_secs(2);
    while let Some(shared) = gate.shared.get() {
        if shared.end_sampled.load(Ordering::Relaxed) || Instant::now() >= give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stats
}

/// This thread's share of the idle connections (dealt round-robin), opened with blocking
/// connects. A connect that fails is an error of the run.
fn open_idle(plan: &Plan, thread: usize, stats: &mut Stats) -> Vec<std::net::TcpStream> {
    let count = (thread..plan.idle).step_by(plan.threads).count();
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        match std::net::TcpStream::connect_timeout(&plan.addr, plan.connect_timeout) {
            Ok(stream) => idle.push(stream),
            Err(e) => stats.error(format!("idle connect {}: {e}", plan.addr)),
        }
    }
    idle
}

/// How many idle connections the server has closed (end of stream, or reset): a peek that
/// does not wait tells an open, silent connection (`WouldBlock`) from a closed one.
fn idle_closed(idle: &[std::net::TcpStream]) -> u64 {
    let mut closed = 0;
    for stream in idle {
        let mut byte = [0u8; 1];
        let gone = match stream
            .set_nonblocking(true)
            .and_then(|()| stream.peek(&mut byte))
        {
            Ok(0) => true,
            Ok(_) => false, // bytes from the server on a silent connection: open, if odd
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        closed += u64::from(gone);
    }
    closed
}

async fn connect(plan: &Plan) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + plan.connect_timeout;
    loop {
        match TcpStream::connect(plan.addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A sending connection as opened before the clock starts.
enum Opened {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Reconnect mode: each message opens its own.
    Later,
}

/// Opens one sending connection: TCP connect (retried for `connect_timeout` while the server
/// starts) and, with TLS in the window modes, the full handshake.
async fn open(plan: &Plan) -> Result<Opened, String> {
    if let Mode::Reconnect = plan.mode {
        return Ok(Opened::Later);
    }
    let stream = connect(plan)
        .await
        .map_err(|e| format!("connect {}: {e}", plan.addr))?;
    match (&plan.tls, plan.mode) {
        (None, _) => Ok(Opened::Plain(stream)),
        (Some(_), Mode::Open { .. }) => Err(
            "--tls-ca: only the closed loop, pipelined and reconnect modes speak TLS".to_owned(),
        ),
        (Some(config), _) => {
            let name = rustls::pki_types::ServerName::try_from(plan.tls_server_name.clone())
                .map_err(|e| format!("TLS server name: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            match connector.connect(name, stream).await {
                Ok(tls) => Ok(Opened::Tls(Box::new(tls))),
                Err(e) => Err(format!("TLS handshake: {e}")),
            }
        }
    }
}

/// One connection from its first message to drain.
async fn connection(plan: Plan, shared: Arc<Shared>, conn: usize, stream: Opened) -> Stats {
    let mut stats = Stats::new();
    let sender = Sender::new(&plan, conn);
    match (stream, plan.mode) {
        (_, Mode::Reconnect) => reconnect_loop(&plan, &shared, sender, &mut stats).await,
        (Opened::Tls(tls), Mode::Window { depth }) => {
            window_loop(tls, &shared, sender, depth, &mut stats).await
        }
        (Opened::Plain(stream), Mode::Window { depth }) => {
            window_loop(stream, &shared, sender, depth, &mut stats).await
        }
        (Opened::Plain(stream), Mode::Open { rate }) => {
            let per_conn = rate / plan.connections as f64;
            // Connection k's schedule starts k/N of an interval in: together an even stream.
            let phase = Duration::from_secs_f64(conn as f64 / rate);
            open_loop(
                stream,
                &shared,
                sender,
                per_conn,
                phase,
                plan.drain_timeout,
                &mut stats,
            )
            .await
        }
        (Opened::Tls(_) | Opened::Later, Mode::Open { .. })
        | (Opened::Later, Mode::Window { .. }) => {
            stats.error("connection opened for another mode".to_owned())
        }
    }
    stats
}

/// Builds the frames of one connection: unique control ids, templates rotated.
struct Sender {
    /// The run's templates.
    templates: Arc<Vec<Template>>,
    /// Accepted MSA-1 codes.
    accepted_codes: Arc<Vec<Vec<u8>>>,
    /// Run tag (first part of the control id).
    run_tag: u32,
    /// Connection number (second part).
    conn: u32,
    /// Next sequence number (third part); a Cell so the open loop's reader can check ACKs
    /// while its writer pushes.
    next_seq: Cell<u64>,
    /// How long to wait for the last ACKs.
    drain_timeout: Duration,
}

impl Sender {
    fn new(plan: &Plan, conn: usize) -> Sender {
        Sender {
            templates: plan.templates.clone(),
            accepted_codes: plan.accepted_codes.clone(),
            run_tag: plan.run_tag,
            conn: u32::try_from(conn).unwrap_or(u32::MAX),
            next_seq: Cell::new(0),
            drain_timeout: plan.drain_timeout,
        }
    }

    /// Appends the next message to `out`; returns its sequence number.
    fn push(&self, out: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let mut id = [0u8; 32];
        let len = control_id(self.run_tag, self.conn, seq, &mut id);
        let n = self.templates.len();
        let template = &self.templates[((seq as usize) + self.conn as usize) % n];
        template.write_frame(&id[..len], out);
        seq
    }

    /// Checks an ACK payload against message `seq`.
    fn check(&self, payload: &[u8], seq: u64) -> Result<(), Mismatch> {
        let mut id = [0u8; 32];
        let len = control_id(self.run_tag, self.conn, seq, &mut id);
        check_ack(payload, &id[..len], &self.accepted_codes, false)
    }
}

/// Settles every complete ACK in `buf[..filled]` against `inflight`; returns bytes consumed
/// and how many ACKs were settled.
fn settle(
    buf: &[u8],
    inflight: &mut VecDeque<(u64, Instant)>,
    sender: &Sender,
    shared: &Shared,
    now: Instant,
    stats: &mut Stats,
) -> (usize, u64) {
    let mut used = 0;
    let mut settled = 0;
    let mut measured = 0;
    let in_window = shared.in_window(now);
    while let Some((payload, consumed)) = next_frame(&buf[used..]) {
        let payload = &buf[used + payload.start..used + payload.end];
        used += consumed;
        settled += 1;
        let result = match inflight.pop_front() {
            Some((seq, sent)) => sender.check(payload, seq).map(|()| sent),
            None => Err(Mismatch::Unsolicited),
        };
        match result {
            Ok(sent) if in_window => {
                let ns = now.saturating_duration_since(sent).as_nanos();
                stats
                    .hist
                    .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                measured += 1;
            }
            Ok(_) => {}
            Err(kind) => {
                let index = MISMATCH_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
                stats.mismatches[index] += 1;
                shared.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if measured > 0 {
        stats.measured += measured;
        shared.add_measured(measured, now);
    }
    shared.acked.fetch_add(settled, Ordering::Relaxed);
    (used, settled)
}

/// Reads more bytes into `buf[*filled..]`, compacting/growing first. `Ok(false)` on EOF.
async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    filled: &mut usize,
) -> std::io::Result<bool> {
    if *filled == buf.len() {
        buf.resize(buf.len() * 2, 0);
    }
    let n = reader.read(&mut buf[*filled..]).await?;
    *filled += n;
    Ok(n > 0)
}

fn consume(buf: &mut [u8], filled: &mut usize, used: usize) {
    buf.copy_within(used..*filled, 0);
    *filled -= used;
}

/// Closed loop (depth 1) or pipelined (depth D): each settled ACK releases one new message;
/// all new messages of one read go out in one write.
async fn window_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    shared: &Shared,
    sender: Sender,
    depth: usize,
    stats: &mut Stats,
) {
    let mut inflight = VecDeque::with_capacity(depth);
    let mut out = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut to_send = depth as u64;
    loop {
        let now = Instant::now();
        if !shared.stopping(now) {
            for _ in 0..to_send {
                inflight.push_back((sender.push(&mut out), now));
            }
            stats.sent += to_send;
        }
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                stats.lost += inflight.len() as u64;
                return stats.error(format!("write: {e}"));
            }
            out.clear();
        }
        if inflight.is_empty() {
            return;
        }
        let read = tokio::time::timeout(
            sender.drain_timeout,
            read_more(&mut stream, &mut buf, &mut filled),
        );
        match read.await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return lose(stats, &inflight, "server closed the connection"),
            Ok(Err(e)) => return lose(stats, &inflight, &format!("read: {e}")),
            Err(_) => return lose(stats, &inflight, "no ACK within the drain timeout"),
        }
        let (used, settled) = settle(
            &buf[..filled],
            &mut inflight,
            &sender,
            shared,
            Instant::now(),
            stats,
        );
        consume(&mut buf, &mut filled, used);
        to_send = settled;
    }
}

/// Reconnect mode: a connection per message, until the window ends; see [`Mode::Reconnect`].
async fn reconnect_loop(plan: &Plan, shared: &Shared, sender: Sender, stats: &mut Stats) {
    // Full handshakes: no session is resumed.
    let tls = plan.tls.as_ref().map(|config| {
        let mut config = (**config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    });
    let name = match rustls::pki_types::ServerName::try_from(plan.tls_server_name.clone()) {
        Ok(name) => name,
        Err(e) => return stats.error(format!("TLS server name: {e}")),
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let started = Instant::now();
        if shared.stopping(started) {
            return;
        }
        let tcp = match TcpStream::connect(plan.addr).await {
            Ok(tcp) => tcp,
            Err(e) => return stats.error(format!("connect {}: {e}", plan.addr)),
        };
        let _ = tcp.set_nodelay(true);
        let result = match &tls {
            None => one_message(tcp, shared, &sender, started, &mut buf, stats).await,
            Some(connector) => match connector.connect(name.clone(), tcp).await {
                Ok(stream) => one_message(stream, shared, &sender, started, &mut buf, stats).await,
                Err(e) => Err(format!("TLS handshake: {e}")),
            },
        };
        if let Err(e) = result {
            stats.lost += 1;
            return stats.error(e);
        }
    }
}

/// Sends one message on `stream`, settles its ACK (latency from `started`), and closes the
/// stream (with TLS, close_notify).
async fn one_message<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    shared: &Shared,
    sender: &Sender,
    started: Instant,
    buf: &mut Vec<u8>,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut out = Vec::with_capacity(1024);
    let mut inflight = VecDeque::with_capacity(1);
    inflight.push_back((sender.push(&mut out), started));
    stats.sent += 1;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut filled = 0;
    while !inflight.is_empty() {
        let read = tokio::time::timeout(
            sender.drain_timeout,
            read_more(&mut stream, buf, &mut filled),
        );
        match read.await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err("server closed the connection".to_owned()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => return Err("no ACK within the drain timeout".to_owned()),
        }
        let (used, _) = settle(
            &buf[..filled],
            &mut inflight,
            sender,
            shared,
            Instant::now(),
            stats,
        );
        consume(buf, &mut filled, used);
    }
    let _ = stream.shutdown().await;
    Ok(())
}

fn lose(stats: &mut Stats, inflight: &VecDeque<(u64, Instant)>, why: &str) {
    stats.lost += inflight.len() as u64;
    stats.error(why.to_owned());
}

/// Open loop: message k of this connection is due at `start + phase + k / rate`; whatever is due is
/// written at once (one write), whether or not earlier messages were answered. Latency runs
/// from the due time, so a slow server cannot hide behind a sender that waited for it.
async fn open_loop(
    mut stream: TcpStream,
    shared: &Shared,
    sender: Sender,
    rate: f64,
    phase: Duration,
    drain_timeout: Duration,
    stats: &mut Stats,
) {
    let side = OpenSide {
        shared,
        sender: &sender,
        inflight: RefCell::new(VecDeque::new()),
        writer_done: Cell::new(false),
        sent: Cell::new(0),
    };
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let (reader, writer) = stream.split();
    let (write_result, (local, read_result)) = tokio::join!(
        open_writer(&side, writer, interval, shared.t0 + phase),
        open_reader(&side, reader, drain_timeout)
    );
    stats.merge(local);
    stats.sent += side.sent.get();
    if let Err(e) = read_result.and(write_result) {
        lose(stats, &side.inflight.borrow(), &e);
    }
}

/// State shared by the two halves of an open-loop connection (one task, so Cells suffice).
struct OpenSide<'a> {
    /// Run-wide clock and counters.
    shared: &'a Shared,
    /// Frames and ACK checks of this connection.
    sender: &'a Sender,
    /// Messages written and not yet answered, with their due times.
    inflight: RefCell<VecDeque<(u64, Instant)>>,
    /// The writer has stopped; the reader ends once `inflight` is empty.
    writer_done: Cell<bool>,
    /// Messages written.
    sent: Cell<u64>,
}

async fn open_writer(
    side: &OpenSide<'_>,
    mut writer: tokio::net::tcp::WriteHalf<'_>,
    interval: Duration,
    first_due: Instant,
) -> Result<(), String> {
    let mut out = Vec::with_capacity(4096);
    let mut next_due = first_due;
    let mut result = Ok(());
    while !side.shared.stopping(Instant::now()) {
        let now = Instant::now();
        while next_due <= now {
            let seq = side.sender.push(&mut out);
            side.inflight.borrow_mut().push_back((seq, next_due));
            side.sent.set(side.sent.get() + 1);
            next_due += interval;
        }
        if let Err(e) = writer.write_all(&out).await {
            result = Err(format!("write: {e}"));
            break;
        }
        out.clear();
        // tokio's timer has 1 ms ticks; sleeping to the due time would send up to 1 ms
        // late and in bursts. Sleep to 1 ms before it, then yield (a busy generator core,
        // but on its own core, and the latency measured is the server's).
        let wait = next_due.saturating_duration_since(Instant::now());
        if wait > Duration::from_millis(2) {
            tokio::time::sleep_until((next_due - Duration::from_millis(1)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    side.writer_done.set(true);
    result
}

async fn open_reader(
    side: &OpenSide<'_>,
    mut reader: tokio::net::tcp::ReadHalf<'_>,
    drain_timeout: Duration,
) -> (Stats, Result<(), String>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut local = Stats::new();
    let mut idle_since = Instant::now();
    loop {
        if side.writer_done.get() && side.inflight.borrow().is_empty() {
            return (local, Ok(()));
        }
        // A bounded wait: the writer may finish while nothing is in flight.
        let read = tokio::time::timeout(
            Duration::from_millis(50),
            read_more(&mut reader, &mut buf, &mut filled),
        );
        match read.await {
            Ok(Ok(true)) => idle_since = Instant::now(),
            Ok(Ok(false)) => return (local, Err("server closed the connection".to_owned())),
            Ok(Err(e)) => return (local, Err(format!("read: {e}"))),
            Err(_) if side.writer_done.get() && idle_since.elapsed() > drain_timeout => {
                return (local, Err("no ACK within the drain timeout".to_owned()))
            }
            Err(_) => continue,
        }
        let mut inflight = side.inflight.borrow_mut();
        let (used, _) = settle(
            &buf[..filled],
            &mut inflight,
            side.sender,
            side.shared,
            Instant::now(),
            &mut local,
        );
        drop(inflight);
        consume(&mut buf, &mut filled, used);
    }
}
