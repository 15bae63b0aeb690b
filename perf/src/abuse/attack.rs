//! The attacker process: what one child does for one [`Attack`], and the report it prints.
//!
//! A child gets its [`Spec`] in the environment ([`super::CHILD_ENV`]), attacks until the
//! spec's duration plus hold time is over, closes everything, and prints one `abuse-report`
//! line (and one `abuse-acked <id>` line per control id answered AA) on stdout. Every loop is
//! bounded by that deadline; no attack reads more than it must to keep the server writing.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{frame, message, msa, take_frame, Attack, Attackers, CR, EB, SB};

/// Connect timeout of attacker connections (a full accept backlog drops SYNs; do not wait for
/// the kernel's retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What one attacker process does.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The attack.
    pub attack: Attack,
    /// The server.
    pub addr: SocketAddr,
    /// Connections of this process.
    pub connections: usize,
    /// How long to attack.
    pub duration: Duration,
    /// How long to keep the connections after that.
    pub hold: Duration,
    /// This process's number (makes control ids unique).
    pub index: usize,
    /// The server's MAX_FRAME_SIZE.
    pub frame_bytes_max: usize,
}

impl Spec {
    /// `key=value` pairs separated by spaces.
    pub fn encode(&self) -> String {
        format!(
            "attack={} addr={} connections={} duration_ms={} hold_ms={} index={} frame_bytes_max={}",
            self.attack.name(),
            self.addr,
            self.connections,
            self.duration.as_millis(),
            self.hold.as_millis(),
            self.index,
            self.frame_bytes_max
        )
    }

    /// The inverse of [`Spec::encode`].
    pub fn decode(text: &str) -> Result<Spec, String> {
        let get = |key: &str| {
            text.split_whitespace()
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                .ok_or(format!("spec has no {key}: {text}"))
        };
        let number = |key: &str| -> Result<u64, String> {
            get(key)?
                .parse()
                .map_err(|_| format!("bad {key} in {text}"))
        };
        Ok(Spec {
            attack: Attack::from_name(get("attack")?).ok_or("unknown attack")?,
            addr: get("addr")?.parse().map_err(|_| "bad addr")?,
            connections: number("connections")? as usize,
            duration: Duration::from_millis(number("duration_ms")?),
            hold: Duration::from_millis(number("hold_ms")?),
            index: number("index")? as usize,
            frame_bytes_max: number("frame_bytes_max")? as usize,
        })
    }
}

/// Counters of one attacker process (shared by its threads).
#[derive(Debug, Default)]
struct Tally {
    /// Connections opened.
    connections: u64,
    /// Bytes written.
    bytes_out: u64,
    /// Bytes read.
    bytes_in: u64,
    /// Connections the server closed.
    closed_by_server: u64,
    /// Other failures.
    errors: u64,
    /// Wrong answers to valid messages.
    wrong: u64,
    /// Control ids answered AA.
    acked_ids: Vec<String>,
    /// First failure text.
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, what: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what.to_string().replace(' ', "_"));
        }
    }
}

type Shared = Arc<Mutex<Tally>>;

fn with(tally: &Shared, f: impl FnOnce(&mut Tally)) {
    if let Ok(mut t) = tally.lock() {
        f(&mut t);
    }
}

/// Runs the attack in `spec` (the encoded [`Spec`]) in this process, prints the report, and
/// returns the process's exit status.
pub fn child_main(spec: &str) -> i32 {
    let spec = match Spec::decode(spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("abuse child: {e}");
            return 2;
        }
    };
    if let Err(e) = super::raise_nofile(spec.connections as u64 + 64) {
        eprintln!("abuse child: {e}");
        return 2;
    }
    let tally: Shared = Arc::default();
    let deadline = Instant::now() + spec.duration;
    match spec.attack {
        Attack::SlowLoris | Attack::FdExhaustion => slow_loris(&spec, deadline, &tally),
        Attack::EmptyFrames => floods(&spec, deadline, &tally, empty_frames),
        Attack::MaxFrames => floods(&spec, deadline, &tally, max_frames),
        Attack::RandomBytes => floods(&spec, deadline, &tally, random_bytes),
        Attack::ResetChurn => reset_churn(&spec, deadline, &tally),
        Attack::StoppedReader => stopped_reader(&spec, deadline, &tally),
        Attack::HalfOpen => half_open(&spec, deadline, &tally),
        Attack::SplitBytes => split_bytes(&spec, deadline, &tally),
    }
    let Ok(t) = tally.lock() else { return 1 };
    let mut out = format!(
        "abuse-report connections={} bytes_out={} bytes_in={} closed_by_server={} errors={} \
         wrong={} first_error={}\n",
        t.connections,
        t.bytes_out,
        t.bytes_in,
        t.closed_by_server,
        t.errors,
        t.wrong,
        t.first_error.as_deref().unwrap_or("-"),
    );
    for id in &t.acked_ids {
        out.push_str(&format!("abuse-acked {id}\n"));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    0
}

/// Adds one child's stdout to `total`.
pub fn add_report(stdout: &str, total: &mut Attackers) {
    for line in stdout.lines() {
        if let Some(id) = line.strip_prefix("abuse-acked ") {
            total.acked_ids.push(id.to_owned());
        }
        let Some(report) = line.strip_prefix("abuse-report ") else {
            continue;
        };
        for pair in report.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let n = value.parse::<u64>().unwrap_or(0);
            match key {
                "connections" => total.connections += n,
                "bytes_out" => total.bytes_out += n,
                "bytes_in" => total.bytes_in += n,
                "closed_by_server" => total.closed_by_server += n,
                "errors" => total.errors += n,
                "wrong" => total.wrong += n,
                "first_error" if value != "-" && total.first_error.is_none() => {
                    total.first_error = Some(value.to_owned());
                }
                _ => {}
            }
        }
    }
}

fn connect(addr: SocketAddr, tally: &Shared) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            with(tally, |t| t.connections += 1);
            Some(stream)
        }
        Err(e) => {
            with(tally, |t| t.error(format!("connect: {e}")));
            None
        }
    }
}

fn sleep_until(when: Instant) {
    if let Some(wait) = when.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// True when a read or write error means the server closed or reset the connection.
fn closed(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

/// One slow connection: the frame it trickles and how far it got.
struct Loris {
    /// The socket (non-blocking), or `None` once the server closed it.
    stream: Option<TcpStream>,
    /// Bytes of the frame written so far.
    sent: usize,
}

/// Every connection writes the next byte of a frame once a second, the writes spread over the
/// second; a connection the server closed is reopened on the next round, so the pressure stays
/// at `connections` (the classic slow-loris, and a full descriptor table for FdExhaustion).
fn slow_loris(spec: &Spec, deadline: Instant, tally: &Shared) {
    let frame = frame(&message(&format!("LORIS-{}", spec.index)));
    let mut conns: Vec<Loris> = (0..spec.connections)
        .map(|_| Loris {
            stream: open_nonblocking(spec.addr, tally),
            sent: 0,
        })
        .collect();
    const SLICES: usize = 20;
    while Instant::now() < deadline {
        let round = Instant::now();
        for (slice, chunk) in conns
            .chunks_mut(spec.connections.div_ceil(SLICES).max(1))
            .enumerate()
        {
            for loris in chunk.iter_mut() {
                trickle(loris, &frame, spec.addr, tally);
            }
            sleep_until(round + Duration::from_secs(1) * (slice as u32 + 1) / SLICES as u32);
            if Instant::now() >= deadline {
                break;
            }
        }
        sleep_until(round + Duration::from_secs(1));
    }
    sleep_until(deadline + spec.hold);
}

fn open_nonblocking(addr: SocketAddr, tally: &Shared) -> Option<TcpStream> {
    let stream = connect(addr, tally)?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// One byte for one slow connection; notices a close by the server; reopens a closed one.
fn trickle(loris: &mut Loris, frame: &[u8], addr: SocketAddr, tally: &Shared) {
    let Some(stream) = loris.stream.as_mut() else {
        loris.stream = open_nonblocking(addr, tally);
        loris.sent = 0;
        return;
    };
    let mut buf = [0u8; 512];
    let gone = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => {
            with(tally, |t| t.bytes_in += n as u64);
            false
        }
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let byte = frame[loris.sent % frame.len()];
    let gone = gone
        || match stream.write(&[byte]) {
            Ok(n) => {
                loris.sent += n;
                with(tally, |t| t.bytes_out += n as u64);
                false
            }
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        };
    if gone {
        with(tally, |t| t.closed_by_server += 1);
        loris.stream = None;
    }
}

/// What a flood writes: the next chunk of bytes for a connection, and whether the server is
/// expected to close the connection after it (an oversized frame).
type Chunk = fn(&Spec, &mut Flood) -> (Vec<u8>, bool);

/// Per-connection flood state.
#[derive(Default)]
struct Flood {
    /// Chunks written on this connection.
    chunks: u64,
    /// xorshift state for random bytes.
    rng: u64,
}

/// `connections` threads, each flooding one connection with `chunk`s as fast as the socket
/// takes them while a second thread reads (and counts) the answers; reconnects when cut.
fn floods(spec: &Spec, deadline: Instant, tally: &Shared, chunk: Chunk) {
    let threads: Vec<_> = (0..spec.connections)
        .map(|c| {
            let (spec, tally) = (spec.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut flood = Flood {
                    chunks: 0,
                    rng: 0x9E37_79B9_7F4A_7C15 ^ ((spec.index as u64) << 32 | c as u64),
                };
                while Instant::now() < deadline {
                    let Some(stream) = connect(spec.addr, &tally) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    flood_one(&spec, stream, deadline, &tally, chunk, &mut flood);
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn flood_one(
    spec: &Spec,
    stream: TcpStream,
    deadline: Instant,
    tally: &Shared,
    chunk: Chunk,
    flood: &mut Flood,
) {
    // Set before this side shuts the socket down, so the reader does not count that end as a
    // close by the server.
    let ours = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = stream.try_clone().ok().map(|stream| {
        let (tally, ours) = (tally.clone(), ours.clone());
        std::thread::spawn(move || read_answers(stream, deadline, &tally, &ours))
    });
    let mut writer = stream;
    let _ = writer.set_write_timeout(Some(Duration::from_millis(500)));
    let mut expect_close = false;
    while Instant::now() < deadline {
        let (bytes, closes) = chunk(spec, flood);
        flood.chunks += 1;
        match writer.write_all(&bytes) {
            Ok(()) => with(tally, |t| t.bytes_out += bytes.len() as u64),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // The reader sees the close too, and counts it.
            Err(e) if closed(e.kind()) => break,
            Err(e) => {
                with(tally, |t| t.error(format!("write: {e}")));
                break;
            }
        }
        if closes {
            // The server must close after an oversized frame: wait for that, then reconnect.
            expect_close = true;
            break;
        }
    }
    if !expect_close {
        ours.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = writer.shutdown(Shutdown::Both);
    }
    if let Some(reader) = reader {
        let _ = reader.join();
    }
}

/// Reads and counts the answers of a flooded connection until it ends or the deadline passes.
fn read_answers(
    mut stream: TcpStream,
    deadline: Instant,
    tally: &Shared,
    ours: &std::sync::atomic::AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        let ended = match stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                with(tally, |t| t.bytes_in += n as u64);
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => {
                closed(e.kind()) || {
                    with(tally, |t| t.error(format!("read: {e}")));
                    false
                }
            }
        };
        if ended {
            if !ours.load(std::sync::atomic::Ordering::Relaxed) {
                with(tally, |t| t.closed_by_server += 1);
            }
            break;
        }
    }
}

/// Reads whatever a non-blocking connection has buffered; true when it ends in EOF or a reset
/// (the server closed it).
fn drained_to_close(stream: &mut TcpStream, tally: &Shared) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..1024 {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => with(tally, |t| t.bytes_in += n as u64),
            Err(e) => return closed(e.kind()),
        }
    }
    false
}

/// 64 KiB of `0x0B 0x1C 0x0D` (21 845 empty frames).
fn empty_frames(_: &Spec, _: &mut Flood) -> (Vec<u8>, bool) {
    ([SB, EB, CR].repeat(21_845), false)
}

/// One frame of exactly MAX_FRAME_SIZE junk bytes (AR: not HL7); every fourth frame on a
/// connection is one byte larger, which the server must refuse by closing the connection.
fn max_frames(spec: &Spec, flood: &mut Flood) -> (Vec<u8>, bool) {
    let oversized = flood.chunks % 4 == 3;
    let len = spec.frame_bytes_max + usize::from(oversized);
    let mut bytes = Vec::with_capacity(len + 3);
    bytes.push(SB);
    bytes.extend((0..len).map(|i| b'A' + (i % 26) as u8));
    bytes.extend_from_slice(&[EB, CR]);
    (bytes, oversized)
}

/// 64 KiB of xorshift64 output.
fn random_bytes(_: &Spec, flood: &mut Flood) -> (Vec<u8>, bool) {
    let mut bytes = Vec::with_capacity(64 * 1024);
    while bytes.len() < 64 * 1024 {
        flood.rng ^= flood.rng << 13;
        flood.rng ^= flood.rng >> 7;
        flood.rng ^= flood.rng << 17;
        bytes.extend_from_slice(&flood.rng.to_le_bytes());
    }
    (bytes, false)
}

/// `connections` connections one after another, each closed with a reset (SO_LINGER 0): one
/// in three at once, one in three inside a frame, one in three right after a whole message,
/// while its ACK is pending.
fn reset_churn(spec: &Spec, deadline: Instant, tally: &Shared) {
    for i in 0..spec.connections {
        if Instant::now() >= deadline {
            break;
        }
        let Some(mut stream) = connect(spec.addr, tally) else {
            continue;
        };
        let bytes = match i % 3 {
            0 => Vec::new(),
            1 => b"\x0bMSH|^~\\&|CHURN|".to_vec(),
            _ => frame(&message(&format!("CHURN-{}-{i}", spec.index))),
        };
        if !bytes.is_empty() && stream.write_all(&bytes).is_ok() {
            with(tally, |t| t.bytes_out += bytes.len() as u64);
        }
        if let Err(e) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
            with(tally, |t| t.error(format!("SO_LINGER: {e}")));
        }
    }
    // Done: the run ends when every attacker has (the deadline only bounds a slow server).
    std::thread::sleep(spec.hold);
}

/// One connection with a tiny receive buffer that pipelines messages and never reads, until
/// its writes have made no progress for [`BACKED_UP`]: the server has stopped reading because
/// its ACKs are backed up. Then the process stops itself (SIGSTOP; the parent continues it when
/// the attack is over). The server must close it (WRITE_TIMEOUT) while it is still stopped.
///
/// Stopped by the state of the connection, not at a fixed time: on a busy machine a second
/// was not always enough to send more than the socket buffers hold, and a reader stopped
/// before its ACKs back up holds nothing the server must cut.
fn stopped_reader(spec: &Spec, deadline: Instant, tally: &Shared) {
    /// Writes blocked this long: the server is not reading (its own writes are blocked). Long
    /// against a busy machine's scheduling stalls, short against WRITE_TIMEOUT's 2 s in CI.
    const BACKED_UP: Duration = Duration::from_secs(1);
    let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) {
        Ok(socket) => socket,
        Err(e) => return with(tally, |t| t.error(format!("socket: {e}"))),
    };
    let _ = socket.set_recv_buffer_size(4096);
    if let Err(e) = socket.connect_timeout(&spec.addr.into(), CONNECT_TIMEOUT) {
        return with(tally, |t| t.error(format!("connect: {e}")));
    }
    with(tally, |t| t.connections += 1);
    let mut stream: TcpStream = socket.into();
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let mut batch = Vec::new();
    let mut seq = 0u64;
    let mut blocked_since: Option<Instant> = None;
    let mut stopped = false;
    while Instant::now() < deadline {
        if !stopped && blocked_since.is_some_and(|t| t.elapsed() >= BACKED_UP) {
            stopped = true;
            // kill(1), as the parent signals: no unsafe code for one raise(3).
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
        }
        batch.clear();
        while batch.len() < 64 * 1024 {
            // Long control ids make long ACKs, and three of four messages lack MSH-9 (AR, not
            // journaled, so not paced by the flushes): the server's socket buffer fills with
            // ACKs within a second or two on a slow machine.
            let id = format!("STOP-{}-{seq:0>150}", spec.index);
            if seq % 4 == 0 {
                batch.extend(frame(&message(&id)));
            } else {
                let header =
                    format!("MSH|^~\\&|ABUSE|ABUSEFAC|MLLPD|HOSP|20260101120000|||{id}|P|2.5.1\r");
                batch.extend(frame(header.as_bytes()));
            }
            seq += 1;
        }
        match stream.write(&batch) {
            Ok(n) => {
                blocked_since = None;
                with(tally, |t| t.bytes_out += n as u64);
            }
            // SIGSTOP and SIGCONT interrupt a blocked write.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                blocked_since.get_or_insert_with(Instant::now);
            }
            // Counted by the probe below.
            Err(e) if closed(e.kind()) => break,
            Err(e) => return with(tally, |t| t.error(format!("write: {e}"))),
        }
    }
    sleep_until(deadline + spec.hold);
    if drained_to_close(&mut stream, tally) {
        with(tally, |t| t.closed_by_server += 1);
    }
}

/// A third of the connections send half a frame and go silent without closing, held to the
/// end: the server must close them itself (FRAME_TIMEOUT) while the attacker still holds them.
/// They are opened first, so that deadline passes early. Then a third send a whole message and
/// half-close (FIN): the server must still answer AA, then close; and a third send half a frame
/// and half-close: the server must close.
fn half_open(spec: &Spec, deadline: Instant, tally: &Shared) {
    let kinds = (0..spec.connections).map(|i| (i, i % 3));
    let (silent_kinds, closing_kinds): (Vec<_>, Vec<_>) = kinds.partition(|(_, k)| *k == 2);
    let mut silent = Vec::new();
    for (i, kind) in silent_kinds.into_iter().chain(closing_kinds) {
        let Some(mut stream) = connect(spec.addr, tally) else {
            continue;
        };
        let id = format!("HALF-{}-{i}", spec.index);
        let whole = frame(&message(&id));
        let bytes = if kind == 0 {
            &whole[..]
        } else {
            &whole[..whole.len() / 2]
        };
        if let Err(e) = stream.write_all(bytes) {
            with(tally, |t| t.error(format!("write: {e}")));
            continue;
        }
        with(tally, |t| t.bytes_out += bytes.len() as u64);
        if kind == 2 {
            silent.push(stream);
            continue;
        }
        let _ = stream.shutdown(Shutdown::Write);
        let expected = (kind == 0).then_some(id.as_str());
        answer_then_close(stream, expected, tally);
    }
    sleep_until(deadline);
    // Kept open (not consumed) until the hold is over.
    for stream in silent.iter_mut() {
        if drained_to_close(stream, tally) {
            with(tally, |t| t.closed_by_server += 1);
        }
    }
    sleep_until(deadline + spec.hold);
}

/// Reads a half-closed connection to its end: exactly one AA for `expected` (or no frame at all
/// when `None`), then EOF within 10 s.
fn answer_then_close(mut stream: TcpStream, expected: Option<&str>, tally: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if closed(e.kind()) => break true,
            Err(_) => break false,
        }
    };
    with(tally, |t| {
        t.bytes_in += received.len() as u64;
        if ended {
            t.closed_by_server += 1;
        } else {
            t.error("half-closed connection not closed by the server within 10 s");
        }
        let answer = take_frame(&mut received);
        match (expected, answer) {
            (Some(id), Some(ack)) if msa(&ack) == Some(("AA".to_owned(), id.to_owned())) => {
                t.acked_ids.push(id.to_owned())
            }
            (None, None) => {}
            _ => t.wrong += 1,
        }
    });
}

/// `connections` threads, each sending valid messages one byte per write (TCP_NODELAY) and
/// checking every ACK (AA, MSA-2 = MSH-10).
fn split_bytes(spec: &Spec, deadline: Instant, tally: &Shared) {
    let threads: Vec<_> = (0..spec.connections)
        .map(|c| {
            let (spec, tally) = (spec.clone(), tally.clone());
            std::thread::spawn(move || {
                let Some(mut stream) = connect(spec.addr, &tally) else {
                    return;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut pending = Vec::new();
                for n in 0u64.. {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let id = format!("SPLIT-{}-{c}-{n}", spec.index);
                    if let Err(e) = split_round_trip(&mut stream, &id, &mut pending, &tally) {
                        with(&tally, |t| t.error(e));
                        break;
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn split_round_trip(
    stream: &mut TcpStream,
    id: &str,
    pending: &mut Vec<u8>,
    tally: &Shared,
) -> Result<(), String> {
    let bytes = frame(&message(id));
    for byte in &bytes {
        stream
            .write_all(std::slice::from_ref(byte))
            .map_err(|e| format!("write: {e}"))?;
    }
    with(tally, |t| t.bytes_out += bytes.len() as u64);
    let ack = loop {
        if let Some(ack) = take_frame(pending) {
            break ack;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return Err("closed by the server".to_owned()),
            Ok(n) => {
                with(tally, |t| t.bytes_in += n as u64);
                pending.extend_from_slice(&buf[..n]);
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    with(tally, |t| match msa(&ack) {
        Some((code, echoed)) if code == "AA" && echoed == id => t.acked_ids.push(id.to_owned()),
        _ => t.wrong += 1,
    });
    Ok(())
}
