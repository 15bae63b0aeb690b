//! The per-connection driver: read into a bounded buffer, decode every complete frame, parse it
//! and append the good ones to the shard's journal, wait for the group commit that covers them
//! (ACK_AFTER=journal), then write all answers of one read, in frame order, with one write.
//! The read buffer is not touched while the answers are pending: verdicts hold offsets into it. Deadlines: IDLE_TIMEOUT between frames, FRAME_TIMEOUT from a frame's start block (not
//! reset by each byte), WRITE_TIMEOUT for the write of a batch. The buffer grows only while a
//! frame needs it, up to MAX_FRAME_SIZE + `limits::READ_BUFFER_SLACK_BYTES`.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::hl7::Message;
use crate::journal::{Append, DedupKey, RecordRef};
use crate::limits::{READ_BUFFER_BYTES_INITIAL, READ_BUFFER_SLACK_BYTES};
use crate::mllp::{Decoded, Decoder, FrameError};

use super::clock;
use super::respond::Verdict;
use super::shard::{Shard, WakerSlot};

/// Why a connection ended. Logged once at close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// The peer closed (EOF) between or inside frames.
    PeerClosed,
    /// No byte between frames for IDLE_TIMEOUT.
    IdleTimeout,
    /// A frame was not complete FRAME_TIMEOUT after its start block.
    FrameTimeout,
    /// The ACKs of a read could not be written within WRITE_TIMEOUT.
    WriteTimeout,
    /// A frame exceeded MAX_FRAME_SIZE.
    FrameTooLarge,
    /// Reading failed (reset, …).
    ReadError(io::ErrorKind),
    /// Writing failed (reset, broken pipe, …).
    WriteError(io::ErrorKind),
    /// The server is draining and the connection was between frames.
    Drained,
}

/// Counters of one connection, logged at close.
#[derive(Debug, Default)]
struct Counts {
    /// Frames answered (or suppressed by MSH-15).
    frames: u64,
    /// Frames rejected (AR).
    rejected: u64,
    /// Messages the journal could not store (AE).
    not_stored: u64,
    /// Bytes read.
    bytes_in: u64,
    /// Bytes written.
    bytes_out: u64,
    /// Reads that returned data.
    reads: u64,
    /// Writes of ACK batches (at most one per read).
    writes: u64,
}

/// One connection's buffers and framing state.
struct Connection {
    /// Read buffer; `buf[..filled]` holds bytes not yet consumed by the decoder.
    buf: Vec<u8>,
    /// Bytes of `buf` that hold data.
    filled: usize,
    /// Largest size `buf` may reach.
    buf_bytes_max: usize,
    /// ACKs of the current read, written at once.
    out: Vec<u8>,
    /// Frame decoder.
    decoder: Decoder,
    /// Frames of the current read and their verdicts, answered together.
    frames: Vec<Frame>,
    /// The peer's address (journaled with each message).
    peer: Option<SocketAddr>,
    /// When the open frame's start block arrived.
    frame_started: Option<Instant>,
    /// Counters.
    counts: Counts,
}

/// A connection's socket: glommio's, or one on the shard's ring (SOCKET_IO).
enum Socket {
    /// glommio's socket: a syscall per read and write.
    Glommio(TcpStream),
    /// On the shard's ring.
    Uring(super::uring::Handle),
}

impl Socket {
    /// One read, failing with `TimedOut` after `timeout`.
    async fn read(&mut self, buf: &mut [u8], timeout: std::time::Duration) -> io::Result<usize> {
        match self {
            Socket::Glommio(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.read(buf).await
            }
            Socket::Uring(handle) => within(timeout, handle.read(buf)).await,
        }
    }

    /// Writes all of `data`, failing with `TimedOut` after `timeout`.
    async fn write_all(&mut self, data: &[u8], timeout: std::time::Duration) -> io::Result<()> {
        match self {
            Socket::Glommio(stream) => {
                stream.set_write_timeout(Some(timeout))?;
                stream.write_all(data).await
            }
            Socket::Uring(handle) => within(timeout, handle.write_all(data)).await,
        }
    }
}

/// `io` bounded by `timeout` (`TimedOut` when it passes). The ring's operations are
/// cancel-safe, so dropping `io` at the deadline leaves nothing dangling.
async fn within<T>(
    timeout: std::time::Duration,
    io: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let expired = async {
        glommio::timer::sleep(timeout).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    future::or(io, expired).await
}

/// Serves `stream` until it closes; logs open and close.
pub async fn serve(shard: &Shard, stream: TcpStream, id: u64, slot: &WakerSlot) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let mut stream = match &shard.sockets {
        Some(sockets) => Socket::Uring(sockets.adopt(stream)),
        None => Socket::Glommio(stream),
    };
    info!(shard = shard.index, conn = id, peer = ?peer, "connection opened");
    let frame_bytes_max = shard.config().frame_bytes_max;
    let mut conn = Connection {
        buf: vec![0; READ_BUFFER_BYTES_INITIAL],
        filled: 0,
        buf_bytes_max: frame_bytes_max + READ_BUFFER_SLACK_BYTES,
        out: Vec::new(),
        decoder: Decoder::new(frame_bytes_max),
        frames: Vec::new(),
        peer,
        frame_started: None,
        counts: Counts::default(),
    };
    let close = conn.run(shard, id, &mut stream, slot).await;
    log_close(shard, id, peer, &conn, close);
}

fn log_close(shard: &Shard, id: u64, peer: Option<SocketAddr>, conn: &Connection, close: Close) {
    let stats = conn.decoder.stats();
    let c = &conn.counts;
    let abnormal = matches!(
        close,
        Close::FrameTooLarge | Close::FrameTimeout | Close::WriteTimeout | Close::WriteError(_)
    );
    macro_rules! close_event {
        ($level:ident) => {
            $level!(shard = shard.index, conn = id, peer = ?peer, reason = ?close,
                frames = c.frames, rejected = c.rejected, not_stored = c.not_stored, bytes_in = c.bytes_in,
                bytes_out = c.bytes_out, reads = c.reads, writes = c.writes, noise_bytes = stats.noise_bytes,
                abandoned_frames = stats.abandoned_frames, "connection closed")
        };
    }
    if abnormal {
        close_event!(warn);
    } else {
        close_event!(info);
    }
}

impl Connection {
    async fn run(
        &mut self,
        shard: &Shard,
        id: u64,
        stream: &mut Socket,
        slot: &WakerSlot,
    ) -> Close {
        loop {
            let in_frame = self.decoder.in_frame();
            if shard.draining() && !in_frame {
                return Close::Drained;
            }
            let n = match self.read(shard, stream, slot, in_frame).await {
                Ok(0) => return Close::PeerClosed,
                Ok(n) => n,
                Err(close) => return close,
            };
            self.filled += n;
            self.counts.bytes_in += n as u64;
            self.counts.reads += 1;
            let frame_error = self.answer_frames(shard, id).await;
            if !self.out.is_empty() {
                if let Err(close) = self.write(shard, stream).await {
                    return close;
                }
            }
            if frame_error.is_some() {
                return Close::FrameTooLarge;
            }
            self.reclaim();
        }
    }

    /// One read, bounded by the idle or frame deadline, and by the drain when between frames.
    async fn read(
        &mut self,
        shard: &Shard,
        stream: &mut Socket,
        slot: &WakerSlot,
        in_frame: bool,
    ) -> Result<usize, Close> {
        let config = shard.config();
        let (timeout, on_timeout) = match self.frame_started {
            Some(started) if in_frame => {
                let left = config.frame_timeout.saturating_sub(started.elapsed());
                (left, Close::FrameTimeout)
            }
            _ => (config.idle_timeout, Close::IdleTimeout),
        };
        if timeout.is_zero() {
            return Err(on_timeout);
        }
        self.make_room()?;
        let buf = &mut self.buf[self.filled..];
        let result = if in_frame {
            stream.read(buf, timeout).await
        } else {
            let drained = async {
                shard.drain_signal(slot).await;
                Err(io::Error::from(io::ErrorKind::Interrupted))
            };
            future::or(stream.read(buf, timeout), drained).await
        };
        result.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => on_timeout,
            io::ErrorKind::Interrupted => Close::Drained,
            kind => Close::ReadError(kind),
        })
    }

    /// Decodes every complete frame of the buffer, stores the good ones in the shard's journal,
    /// waits until they are durable (one group commit usually covers them all), and appends the
    /// answers, in frame order, to `out`.
    async fn answer_frames(&mut self, shard: &Shard, id: u64) -> Option<FrameError> {
        let received = clock::unix_micros_now();
        let mut pos = 0;
        let mut completed = false;
        let error = loop {
            let window = &self.buf[pos..self.filled];
            match self.decoder.decode(window) {
                Decoded::Frame { payload, consumed } => {
                    let range = pos + payload.start..pos + payload.end;
                    let record = Origin {
                        connection_id: id,
                        peer: self.peer,
                        received,
                    };
                    let (verdict, seq) = admit(shard, &self.buf[range.clone()], &record).await;
                    self.frames.push(Frame {
                        range,
                        verdict,
                        seq,
                    });
                    pos += consumed;
                    completed = true;
                }
                Decoded::Incomplete { consumed } => {
                    pos += consumed;
                    break None;
                }
                Decoded::Error { error, consumed } => {
                    pos += consumed;
                    let total = &shard.stats.frames_too_large;
                    total.set(total.get() + 1);
                    warn!(shard = shard.index, %error, frames_too_large_total = total.get(),
                        "frame rejected; closing connection");
                    break Some(error);
                }
            }
        };
        settle(shard, &mut self.frames).await;
        self.respond(shard, received);
        self.consume(pos);
        self.track_frame_start(completed);
        error
    }

    /// Appends the answers of the frames of this read to `out`.
    fn respond(&mut self, shard: &Shard, now_unix_micros: u64) {
        shard.refresh_clock(now_unix_micros);
        let mut responder = shard.responder.borrow_mut();
        for frame in self.frames.drain(..) {
            responder.respond(&self.buf[frame.range], frame.verdict, &mut self.out);
            self.counts.frames += 1;
            match frame.verdict {
                Verdict::Accepted => {}
                Verdict::Rejected(error) => {
                    self.counts.rejected += 1;
                    debug!(
                        shard = shard.index,
                        code = error.code().as_u16(),
                        offset = error.offset,
                        reason = error.text(),
                        "frame rejected"
                    );
                }
                Verdict::NotStored(error) => {
                    self.counts.not_stored += 1;
                    debug!(shard = shard.index, ?error, "message not stored");
                }
            }
        }
    }

    fn track_frame_start(&mut self, completed_a_frame: bool) {
        if !self.decoder.in_frame() {
            self.frame_started = None;
        } else if completed_a_frame || self.frame_started.is_none() {
            self.frame_started = Some(Instant::now());
        }
    }

    /// Writes every answer of this read at once.
    async fn write(&mut self, shard: &Shard, stream: &mut Socket) -> Result<(), Close> {
        let timeout = shard.config().write_timeout;
        let result = stream.write_all(&self.out, timeout).await;
        self.counts.bytes_out += self.out.len() as u64;
        self.counts.writes += 1;
        self.out.clear();
        result.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => Close::WriteTimeout,
            kind => Close::WriteError(kind),
        })
    }

    /// Drops the first `n` bytes of the buffer.
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.filled);
        if n > 0 {
            self.buf.copy_within(n..self.filled, 0);
            self.filled -= n;
        }
    }

    /// Ensures free space to read into, growing the buffer (up to its bound) when full.
    fn make_room(&mut self) -> Result<(), Close> {
        if self.filled < self.buf.len() {
            return Ok(());
        }
        let grown = (self.buf.len() * 2).min(self.buf_bytes_max);
        if grown <= self.buf.len() {
            // The decoder reports FrameTooLarge before an open frame can fill a buffer of
            // MAX_FRAME_SIZE + slack, so this is unreachable; closing is the safe answer.
            debug_assert!(false, "read buffer full at its bound");
            return Err(Close::FrameTooLarge);
        }
        self.buf.resize(grown, 0);
        Ok(())
    }

    /// Gives back memory a large frame needed once the buffer is empty again, so idle
    /// connections hold only the initial buffer.
    fn reclaim(&mut self) {
        if self.filled == 0 && self.buf.len() > READ_BUFFER_BYTES_INITIAL {
            self.buf = vec![0; READ_BUFFER_BYTES_INITIAL];
        }
        if self.out.capacity() > READ_BUFFER_BYTES_INITIAL * 8 {
            self.out = Vec::new();
        }
    }
}

/// A frame of the current read: where its payload is, and what was decided.
#[derive(Debug)]
struct Frame {
    /// The payload's offsets in the read buffer.
    range: Range<usize>,
    /// The verdict so far.
    verdict: Verdict,
    /// The journal sequence number to wait for before answering, if any.
    seq: Option<u64>,
}

/// Where and when a frame came from, as journaled.
struct Origin {
    /// The connection's id within its shard.
    connection_id: u64,
    /// The peer's address.
    peer: Option<SocketAddr>,
    /// When the read that completed the frame returned, in µs since the Unix epoch.
    received: u64,
}

/// Parses a payload and, when it is a message, appends it to the shard's journal. Returns the
/// verdict and the sequence number to wait for (none with ACK_AFTER=receipt).
async fn admit(shard: &Shard, payload: &[u8], origin: &Origin) -> (Verdict, Option<u64>) {
    let message = match Message::parse(payload, shard.responder.borrow().parse_options()) {
        Ok(message) => message,
        Err(error) => return (Verdict::Rejected(error), None),
    };
    let record = RecordRef {
        receive_time_unix_micros: origin.received,
        connection_id: origin.connection_id,
        peer: origin.peer,
        payload,
        dedup_key: Some(DedupKey::of(&message)),
    };
    let appended = shard.journal.append_in_turn(&record).await;
    match appended {
        Ok(append) if shard.waits_for_journal() => (Verdict::Accepted, Some(append_seq(append))),
        Ok(_) => (Verdict::Accepted, None),
        Err(error) => (Verdict::NotStored(error), None),
    }
}

fn append_seq(append: Append) -> u64 {
    match append {
        Append::Stored(seq) | Append::Duplicate(seq) => seq,
    }
}

/// Waits until every journaled frame of this read is durable (or failed). Records of one read
/// are appended back to back, so the first wait usually covers all of them.
async fn settle(shard: &Shard, frames: &mut [Frame]) {
    for frame in frames.iter_mut() {
        if let Some(seq) = frame.seq.take() {
            if let Err(error) = shard.journal.wait_durable(seq).await {
                frame.verdict = Verdict::NotStored(error);
            }
        }
    }
    if shard.journal.is_poisoned() {
        shard.fail("journal flush failed; the journal can no longer be trusted");
    }
}
