//! The per-connection driver: read into a bounded buffer, decode every complete frame, have
//! admission decide its fate (`crate::admission`: one parse, the validation rules), append
//! what the decision says to journal to the shard's journal, wait for the group commit that
//! covers them (ACK_AFTER=journal), then write the answers, in frame order. The answers of one
//! read go out with one write while they fit `limits::ANSWER_BYTES_MAX` and
//! `limits::ANSWER_FRAMES_MAX`; a larger read is answered in chunks of that size, a write each,
//! yielding to the shard's other connections between chunks. The read buffer is not compacted until its whole answer is
//! written: pending verdicts hold offsets into it. A connection that has more than
//! `limits::REJECTED_FRAMES_MAX` frames rejected within `limits::REJECTED_FRAMES_WINDOW` (and no
//! message accepted) is closed: a flood of empty or junk frames costs a bounded number of ARs.
//!
//! Deadlines, one rule on both socket paths (a timer around the whole operation, never a
//! per-syscall timeout that any progress renews): IDLE_TIMEOUT between frames, FRAME_TIMEOUT
//! from a frame's start block (not reset by each byte), WRITE_TIMEOUT for each write (at most
//! `limits::ANSWER_BYTES_MAX` plus one ACK) from its first byte to its last. The buffer grows
//! only while a frame needs it, up to MAX_FRAME_SIZE + `limits::READ_BUFFER_SLACK_BYTES`.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::admission::{Cause, Context, Decision};
use crate::journal::{Append, RecordRef};
use crate::limits::{
    ANSWER_BYTES_MAX, ANSWER_FRAMES_MAX, CONNECTION_PAUSE, READ_BUFFER_BYTES_INITIAL,
    READ_BUFFER_GROWTH, READ_BUFFER_KEEP, READ_BUFFER_SLACK_BYTES, READ_BYTES_PER_TURN_MAX,
    REJECTED_FRAMES_MAX, REJECTED_FRAMES_WINDOW,
};
use crate::mllp::{Decoded, Decoder};

use super::clock;
use super::shard::{Shard, WakerSlot};
use super::tls_session::TlsSession;
use super::transport::{within, Socket, Wire};
use crate::tls::{Identity, ServerTls};

/// Why a connection ended. Logged once at close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// The peer closed (EOF) between or inside frames.
    PeerClosed,
    /// No byte between frames for IDLE_TIMEOUT.
    IdleTimeout,
    /// A frame was not complete FRAME_TIMEOUT after its start block.
    FrameTimeout,
    /// A write of ACKs could not be completed within WRITE_TIMEOUT.
    WriteTimeout,
    /// A frame exceeded MAX_FRAME_SIZE.
    FrameTooLarge,
    /// More than REJECTED_FRAMES_MAX frames rejected within REJECTED_FRAMES_WINDOW.
    RejectFlood,
    /// Reading failed (reset, …).
    ReadError(io::ErrorKind),
    /// Writing failed (reset, broken pipe, …).
    WriteError(io::ErrorKind),
    /// The server is draining and the connection was between frames.
    Drained,
    /// A plaintext connection opened with a TLS ClientHello.
    TlsHelloOnPlaintext,
    /// A TLS record did not decrypt or parse.
    TlsRecord,
}

impl Close {
    /// Whether the peer is owed a clean end (with TLS, a close_notify): the connection ended
    /// between frames by the peer, the idle deadline or the drain, not by an error.
    fn is_orderly(self) -> bool {
        matches!(
            self,
            Close::PeerClosed | Close::IdleTimeout | Close::Drained
        )
    }
}

/// Counters of one connection, logged at close.
#[derive(Debug, Default)]
struct Counts {
    /// Frames answered (or suppressed by MSH-15).
    frames: u64,
    /// Frames rejected (AR) because they did not parse.
    rejected: u64,
    /// Messages a validation rule answered AR or AE (or could not be evaluated on).
    failed_rules: u64,
    /// Messages the journal could not store (AE).
    not_stored: u64,
    /// Bytes read.
    bytes_in: u64,
    /// Bytes written.
    bytes_out: u64,
    /// Reads that returned data.
    reads: u64,
    /// Writes of ACKs (one per read, or one per chunk of a read answered in chunks).
    writes: u64,
    /// Bytes of the largest write.
    write_bytes_max: u64,
}

/// One connection's buffers and framing state.
struct Connection {
    /// Read buffer; `buf[..filled]` holds bytes not yet consumed by the decoder.
    buf: Vec<u8>,
    /// Bytes of `buf` that hold data.
    filled: usize,
    /// Largest size `buf` may reach.
    buf_bytes_max: usize,
    /// ACKs not yet written: at most `ANSWER_BYTES_MAX` plus one ACK.
    out: Vec<u8>,
    /// Frame decoder.
    decoder: Decoder,
    /// Frames admitted and not yet answered, in order (at most `ANSWER_FRAMES_MAX`).
    frames: Vec<Frame>,
    /// Rejected frames in the current window, to cut a flood.
    rejections: Rejections,
    /// The peer's address (journaled with each message).
    peer: Option<SocketAddr>,
    /// When the open frame's start block arrived.
    frame_started: Option<Instant>,
    /// Counters.
    counts: Counts,
    /// Bytes read since this connection last let the shard's other connections run.
    unpaused_bytes: usize,
    /// Audit lines of the answers not yet handed to the audit writer (AUDIT_LOG).
    audit: Vec<u8>,
    /// The verified TLS client certificate's identity (for admission and the rules).
    identity: Option<Identity>,
}

/// Serves `stream` until it closes; logs open and close.
pub async fn serve(shard: &Shard, accepted: Accepted, id: u64, slot: &WakerSlot) {
    let peer = accepted.peer_addr();
    let wire = match (accepted, &shard.sockets) {
        (Accepted::Ring(socket), Some(sockets)) => {
            let _ = socket.set_nodelay(true);
            Wire::Uring(sockets.adopt(socket))
        }
        (Accepted::Glommio(stream), _) => {
            let _ = stream.set_nodelay(true);
            Wire::Glommio(stream)
        }
        (Accepted::Ring(_), None) => return, // Not made: the accept loop detaches only for a ring.
    };
    let (mut stream, identity) = match &shard.shared.tls {
        None => (Socket::plain(wire), None),
        Some(tls) => match handshake(shard, id, peer, wire, &tls.current()).await {
            Some((stream, identity)) => (stream, identity),
            None => return,
        },
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
        rejections: Rejections::default(),
        peer,
        frame_started: None,
        counts: Counts::default(),
        unpaused_bytes: 0,
        audit: Vec::new(),
        identity,
    };
    let close = conn.run(shard, id, &mut stream, slot).await;
    stream
        .close(close.is_orderly(), shard.config().write_timeout)
        .await;
    log_close(shard, id, peer, &conn, close);
}

/// An accepted connection, as the shard's socket path takes it.
pub enum Accepted {
    /// glommio's socket (SOCKET_IO=glommio).
    Glommio(TcpStream),
    /// Detached from glommio for the shard's ring ([`super::uring::detach`]).
    Ring(std::net::TcpStream),
}

impl Accepted {
    /// The peer's address, if the socket still knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Accepted::Glommio(stream) => stream.peer_addr().ok(),
            Accepted::Ring(socket) => socket.peer_addr().ok(),
        }
    }
}

/// Counts one answered frame in the shard's metrics (atomics only this shard writes).
fn count_answer(shard: &Shard, cause: &Cause, code: Option<crate::ack::AckCode>) {
    let stats = &shard.stats;
    stats.frames.inc();
    stats.ack(code);
    match cause {
        Cause::Unparsed(_) => stats.frames_unparsed.inc(),
        Cause::NotStored(_) => {
            stats.messages.inc();
            stats.messages_not_stored.inc();
        }
        Cause::Accepted | Cause::Rule(_) | Cause::Evaluation { .. } | Cause::NotDelivered(_) => {
            stats.messages.inc()
        }
    }
}

/// Runs the TLS handshake on `wire` within CONNECT_TIMEOUT, then checks the verified client
/// against TLS_CLIENT_ALLOWED. Logs the client's identity once; a failure is logged once,
/// counted, and closes the connection (`None`).
async fn handshake(
    shard: &Shard,
    id: u64,
    peer: Option<SocketAddr>,
    mut wire: Wire,
    tls: &ServerTls,
) -> Option<(Socket, Option<Identity>)> {
    let accept = async {
        TlsSession::accept(&mut wire, Arc::clone(&tls.config))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    };
    // CONNECT_TIMEOUT `0`: no deadline (the operator's choice, warned at start).
    let accepted = match shard.config().connect_timeout {
        Some(timeout) => within(timeout, accept).await,
        None => accept.await,
    };
    let session = match accepted {
        Ok(session) => session,
        Err(error) => {
            let total = &shard.stats.tls_handshake_failures;
            total.set(total.get() + 1);
            let reason = if error.kind() == io::ErrorKind::TimedOut {
                "not completed within CONNECT_TIMEOUT".to_owned()
            } else {
                error.to_string()
            };
            warn!(shard = shard.index, conn = id, peer = ?peer, reason,
                tls_handshake_failures_total = total.get(),
                "TLS handshake failed; connection closed");
            return None;
        }
    };
    let handshakes = &shard.stats.tls_handshakes;
    handshakes.set(handshakes.get() + 1);
    let identity = session.peer_certificate().and_then(crate::tls::identity);
    let version = session.version();
    let cipher = session.cipher_suite();
    let stream = Socket::tls(wire, session);
    if let Some(identity) = &identity {
        if !identity.is_allowed(&tls.client_allowed) {
            let total = &shard.stats.tls_clients_refused;
            total.set(total.get() + 1);
            warn!(shard = shard.index, conn = id, peer = ?peer, client_cn = ?identity.cn,
                client_sans = ?identity.sans, tls_clients_refused_total = total.get(),
                "TLS client not in TLS_CLIENT_ALLOWED; connection closed");
            stream.close(true, shard.config().write_timeout).await;
            return None;
        }
    }
    match &identity {
        Some(identity) => info!(shard = shard.index, conn = id, peer = ?peer, version, cipher,
            client_cn = ?identity.cn, client_sans = ?identity.sans, "TLS client verified"),
        None => info!(shard = shard.index, conn = id, peer = ?peer, version, cipher,
            "TLS session established"),
    }
    Some((stream, identity))
}

fn log_close(shard: &Shard, id: u64, peer: Option<SocketAddr>, conn: &Connection, close: Close) {
    let stats = conn.decoder.stats();
    shard.stats.frames_abandoned.add(stats.abandoned_frames);
    shard.stats.noise_bytes.add(stats.noise_bytes);
    let c = &conn.counts;
    let abnormal = matches!(
        close,
        Close::FrameTooLarge
            | Close::FrameTimeout
            | Close::WriteTimeout
            | Close::WriteError(_)
            | Close::RejectFlood
            | Close::TlsHelloOnPlaintext
            | Close::TlsRecord
    );
    macro_rules! close_event {
        ($level:ident) => {
            $level!(shard = shard.index, conn = id, peer = ?peer, reason = ?close,
                frames = c.frames, rejected = c.rejected, failed_rules = c.failed_rules,
                not_stored = c.not_stored, bytes_in = c.bytes_in,
                bytes_out = c.bytes_out, reads = c.reads, writes = c.writes,
                largest_write = c.write_bytes_max, noise_bytes = stats.noise_bytes,
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
            if self.counts.reads == 0 && !stream.is_tls() && is_tls_hello(&self.buf[..n]) {
                let total = &shard.stats.tls_hellos_on_plaintext;
                total.set(total.get() + 1);
                return Close::TlsHelloOnPlaintext;
            }
            self.filled += n;
            self.counts.bytes_in += n as u64;
            shard.stats.bytes_in.add(n as u64);
            self.counts.reads += 1;
            let mut reading = Reading::new(clock::unix_micros_now());
            while self.answer_chunk(shard, id, &mut reading).await {
                // More than one write's worth: send this chunk, let the shard's other
                // connections run, then answer the rest of the buffer.
                if let Err(close) = self.write(shard, stream).await {
                    return close;
                }
                pause().await;
            }
            if let Err(close) = self.write(shard, stream).await {
                return close;
            }
            self.consume(reading.decoded);
            self.track_frame_start(reading.completed);
            if let Some(close) = reading.close {
                return close;
            }
            self.reclaim();
            // A read that completes no frame (random bytes, one endless frame) writes nothing
            // and so never pauses above, and on the ring a read of a full inbox returns without
            // suspending: without this, such a peer holds the shard until glommio's preempt
            // timer (100 ms), starving every other connection.
            self.unpaused_bytes += n;
            if self.unpaused_bytes >= READ_BYTES_PER_TURN_MAX {
                self.unpaused_bytes = 0;
                pause().await;
            }
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
        let mut timeout = timeout;
        let result = loop {
            // A buffer a large frame grew is kept while bytes keep coming (a stream of large
            // frames would otherwise pay the growth — copies and fresh pages — for every
            // frame), and given back once the peer pauses: idle connections hold only the
            // initial buffer.
            let keeping = self.filled == 0 && self.buf.len() > READ_BUFFER_BYTES_INITIAL;
            let wait = if keeping {
                timeout.min(READ_BUFFER_KEEP)
            } else {
                timeout
            };
            // One read takes at most a turn's worth: the copy of a larger one (a socket
            // buffer of megabytes) would hold the shard in one step.
            let end = (self.filled + READ_BYTES_PER_TURN_MAX).min(self.buf.len());
            let buf = &mut self.buf[self.filled..end];
            let result = if in_frame {
                stream.read(buf, wait).await
            } else {
                let drained = async {
                    shard.drain_signal(slot).await;
                    Err(io::Error::from(io::ErrorKind::Interrupted))
                };
                future::or(stream.read(buf, wait), drained).await
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::TimedOut && wait < timeout => {
                    self.buf = vec![0; READ_BUFFER_BYTES_INITIAL];
                    timeout -= wait;
                }
                result => break result,
            }
        };
        result.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => on_timeout,
            io::ErrorKind::Interrupted => Close::Drained,
            io::ErrorKind::InvalidData if stream.is_tls() => {
                let total = &shard.stats.tls_record_errors;
                total.set(total.get() + 1);
                Close::TlsRecord
            }
            kind => Close::ReadError(kind),
        })
    }

    /// Answers the next chunk of the buffer into `out`: decodes and admits frames until
    /// `ANSWER_FRAMES_MAX` are pending (storing the good ones in the shard's journal), waits until
    /// they are durable (one group commit usually covers them all), and answers them in frame
    /// order until `out` holds `ANSWER_BYTES_MAX`. Returns whether more is left to answer once
    /// `out` is written.
    async fn answer_chunk(&mut self, shard: &Shard, id: u64, reading: &mut Reading) -> bool {
        self.admit_frames(shard, id, reading).await;
        settle(shard, &mut self.frames).await;
        if let Some(acks) = &shard.shared.sync_acks {
            await_delivery(shard, acks, id, &mut self.frames).await;
        }
        self.respond(shard, reading.received);
        self.hand_over_audit(shard).await;
        !self.frames.is_empty() || !reading.done()
    }

    /// Decodes and admits frames from `reading.decoded` on, until the buffer holds no complete
    /// frame, `ANSWER_FRAMES_MAX` frames are pending, or the connection must close.
    async fn admit_frames(&mut self, shard: &Shard, id: u64, reading: &mut Reading) {
        while !reading.done() && self.frames.len() < ANSWER_FRAMES_MAX {
            let pos = reading.decoded;
            match self.decoder.decode(&self.buf[pos..self.filled]) {
                Decoded::Frame { payload, consumed } => {
                    reading.decoded += consumed;
                    reading.completed = true;
                    let range = pos + payload.start..pos + payload.end;
                    let origin = Origin {
                        connection_id: id,
                        peer: self.peer,
                        received: reading.received,
                        identity: self.identity.as_ref(),
                    };
                    let (decision, seq, stored) =
                        admit(shard, &self.buf[range.clone()], &origin).await;
                    if self.is_one_rejection_too_many(&decision, reading.at) {
                        let total = &shard.stats.reject_floods;
                        total.set(total.get() + 1);
                        warn!(shard = shard.index, conn = id, peer = ?self.peer,
                            rejected_max = REJECTED_FRAMES_MAX,
                            window_ms = REJECTED_FRAMES_WINDOW.as_millis() as u64,
                            reject_floods_total = total.get(),
                            "flood of rejected frames; closing connection");
                        reading.close = Some(Close::RejectFlood);
                        break;
                    }
                    let confirm = self.sync_confirm(shard, &decision, &range, stored);
                    self.frames.push(Frame {
                        range,
                        decision,
                        seq,
                        stored,
                        confirm,
                    });
                }
                Decoded::Incomplete { consumed } => {
                    reading.decoded += consumed;
                    reading.exhausted = true;
                }
                Decoded::Error { error, consumed } => {
                    reading.decoded += consumed;
                    let total = &shard.stats.frames_too_large;
                    total.set(total.get() + 1);
                    if let Some(unlogged) = shard.connection_error_log_due() {
                        warn!(shard = shard.index, %error, frames_too_large_total = total.get(),
                            unlogged_since_last = unlogged, "frame rejected; closing connection");
                    }
                    reading.close = Some(Close::FrameTooLarge);
                }
            }
        }
    }

    /// ACK_AFTER=delivery: the sequence number an accepted, stored message must have confirmed
    /// by the sync connectors before its answer; none when no sync connector's filter selects
    /// it (answered as soon as it is durable) or in the other modes.
    fn sync_confirm(
        &self,
        shard: &Shard,
        decision: &Decision,
        range: &Range<usize>,
        stored: Option<u64>,
    ) -> Option<u64> {
        let acks = shard.shared.sync_acks.as_ref()?;
        let seq = stored?;
        if !matches!(decision.cause(), Cause::Accepted) {
            return None;
        }
        let message = decision.message(&self.buf[range.clone()])?;
        acks.selects(&message, self.peer.map(|p| p.ip()))
            .then_some(seq)
    }

    /// Counts a frame's decision towards the flood bound; true when it is one rejection too
    /// many. Only frames that did not parse count: a message a rule refused is well formed (the
    /// rules' cost is bounded by the frame size and the rules), and neither counts nor clears.
    fn is_one_rejection_too_many(&mut self, decision: &Decision, at: Instant) -> bool {
        match decision.cause() {
            Cause::Unparsed(_) => self.rejections.reject(at),
            Cause::Accepted | Cause::NotStored(_) | Cause::NotDelivered(_) => {
                self.rejections.accept();
                false
            }
            Cause::Rule(_) | Cause::Evaluation { .. } => false,
        }
    }

    /// Appends the answers of pending frames to `out`, in order, until it holds
    /// `ANSWER_BYTES_MAX`; the rest stay pending for the next write.
    fn respond(&mut self, shard: &Shard, now_unix_micros: u64) {
        shard.refresh_clock(now_unix_micros);
        let mut responder = shard.responder.borrow_mut();
        let mut answered = 0;
        for frame in &self.frames {
            if self.out.len() >= ANSWER_BYTES_MAX {
                break;
            }
            answered += 1;
            let payload = &self.buf[frame.range.clone()];
            let code = responder.respond_coded(payload, &frame.decision, &mut self.out);
            self.counts.frames += 1;
            count_answer(shard, frame.decision.cause(), code);
            if shard.shared.audit.is_some() {
                audit_line(shard, self.peer, frame, payload, code, now_unix_micros)
                    .write_to(&mut self.audit);
            }
            match frame.decision.cause() {
                Cause::Accepted => {}
                Cause::Unparsed(error) => {
                    self.counts.rejected += 1;
                    debug!(
                        shard = shard.index,
                        code = error.code().as_u16(),
                        offset = error.offset,
                        reason = error.text(),
                        "frame rejected"
                    );
                }
                Cause::NotStored(error) => {
                    self.counts.not_stored += 1;
                    debug!(shard = shard.index, ?error, "message not stored");
                }
                Cause::NotDelivered(reason) => {
                    debug!(shard = shard.index, seq = ?frame.stored, reason = ?reason,
                        "message not confirmed by a sync connector (ACK_AFTER=delivery)");
                }
                Cause::Rule(rule) => {
                    self.counts.failed_rules += 1;
                    debug!(
                        shard = shard.index,
                        rule = rule.name(),
                        generation = rule.generation(),
                        "message failed a validation rule"
                    );
                }
                Cause::Evaluation { rule, reason, .. } => {
                    self.counts.failed_rules += 1;
                    let control_id = frame.decision.message(payload).map(|m| m.control_id());
                    log_evaluation_error(shard, rule.name(), control_id, reason);
                }
            }
        }
        self.frames.drain(..answered);
    }

    fn track_frame_start(&mut self, completed_a_frame: bool) {
        if !self.decoder.in_frame() {
            self.frame_started = None;
        } else if completed_a_frame || self.frame_started.is_none() {
            self.frame_started = Some(Instant::now());
        }
    }

    /// Writes the answers gathered in `out` (nothing when there are none), within one
    /// WRITE_TIMEOUT for the whole write.
    async fn write(&mut self, shard: &Shard, stream: &mut Socket) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = shard.config().write_timeout;
        let result = stream.write_all(&self.out, timeout).await;
        let bytes = self.out.len() as u64;
        self.counts.bytes_out += bytes;
        shard.stats.bytes_out.add(bytes);
        self.counts.writes += 1;
        self.counts.write_bytes_max = self.counts.write_bytes_max.max(bytes);
        self.out.clear();
        result.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => {
                shard.stats.write_timeouts.inc();
                Close::WriteTimeout
            }
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
        let grown = (self.buf.len() * READ_BUFFER_GROWTH).min(self.buf_bytes_max);
        if grown <= self.buf.len() {
            // The decoder reports FrameTooLarge before an open frame can fill a buffer of
            // MAX_FRAME_SIZE + slack, so this is unreachable; closing is the safe answer.
            debug_assert!(false, "read buffer full at its bound");
            return Err(Close::FrameTooLarge);
        }
        // A new zeroed buffer rather than `resize`: a large one comes as fresh pages that are
        // neither copied nor cleared, and cost memory only once written.
        let mut buf = vec![0; grown];
        buf[..self.filled].copy_from_slice(&self.buf[..self.filled]);
        self.buf = buf;
        Ok(())
    }

    /// Gives back the memory a large answer needed (the read buffer is given back in `read`,
    /// once the peer pauses).
    fn reclaim(&mut self) {
        if self.out.capacity() > READ_BUFFER_BYTES_INITIAL * 8 {
            self.out = Vec::new();
        }
    }
}

/// Where answering the current read stands.
#[derive(Debug)]
struct Reading {
    /// When the read returned, in µs since the Unix epoch (journaled, and the ACKs' MSH-7).
    received: u64,
    /// When the read returned, for the flood window.
    at: Instant,
    /// Bytes of the buffer the decoder is done with; dropped once the read is answered.
    decoded: usize,
    /// Whether a frame completed in this read (restarts the frame deadline).
    completed: bool,
    /// The buffer holds no further complete frame.
    exhausted: bool,
    /// Why the connection closes once the answers before it are written.
    close: Option<Close>,
}

impl Reading {
    fn new(received: u64) -> Self {
        Reading {
            received,
            at: Instant::now(),
            decoded: 0,
            completed: false,
            exhausted: false,
            close: None,
        }
    }

    /// No frame is left to admit from this read.
    fn done(&self) -> bool {
        self.exhausted || self.close.is_some()
    }
}

/// Frames rejected since a connection's last accepted message, in windows of
/// `REJECTED_FRAMES_WINDOW` (pure; the caller passes the time).
#[derive(Debug, Default)]
struct Rejections {
    /// When the current window started.
    since: Option<Instant>,
    /// Rejected frames in it.
    count: u32,
}

impl Rejections {
    /// Records a rejected frame at `now`; true when it passes `REJECTED_FRAMES_MAX` in the window.
    fn reject(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if now.saturating_duration_since(since) < REJECTED_FRAMES_WINDOW => {}
            _ => {
                self.since = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count > REJECTED_FRAMES_MAX
    }

    /// An accepted message: the sender is not flooding; the count starts again.
    fn accept(&mut self) {
        self.since = None;
        self.count = 0;
    }
}

/// Whether the first bytes of a connection are a TLS handshake record (content type 22, major
/// version 3): a TLS client on a plaintext listener. An MLLP frame starts with 0x0b, so no
/// MLLP peer is mistaken for one.
fn is_tls_hello(first: &[u8]) -> bool {
    first.starts_with(&[0x16, 0x03])
}

/// Lets the shard's other tasks run between two chunks of one read's answer: glommio is
/// cooperative, so a read of thousands of frames answered without a break would hold every other
/// connection of the shard until it is done. A plain yield is not enough: the task stays
/// runnable, and glommio polls for socket events only when no task is runnable or its preempt
/// timer (100 ms) fires, so the other connections' bytes would wait that long (measured on the
/// glommio path: p50 106 ms for a well-behaved connection beside a flood). Sleeping on a timer
/// takes this task off the run queue until the executor's next poll, which also reaps every
/// ready socket. On the ring path the timer is the shard's own ([`crate::timers`]): the task
/// waits for the driver's first turn past the deadline, and that turn reaps the ring.
async fn pause() {
    crate::timers::sleep(CONNECTION_PAUSE).await;
}

/// A frame of the current read: where its payload is, and what was decided.
#[derive(Debug)]
struct Frame {
    /// The payload's offsets in the read buffer.
    range: Range<usize>,
    /// What admission decided (a journal failure turns it into AE).
    decision: Decision,
    /// The journal sequence number to wait for before answering, if any.
    seq: Option<u64>,
    /// The journal sequence number it was stored as (or a duplicate of), if any.
    stored: Option<u64>,
    /// ACK_AFTER=delivery: the sequence number the sync connectors must confirm before the
    /// answer, if a sync connector's filter selects the message.
    confirm: Option<u64>,
}

/// Where and when a frame came from, as journaled.
struct Origin<'c> {
    /// The verified TLS client's identity, if any.
    identity: Option<&'c Identity>,
    /// The connection's id within its shard.
    connection_id: u64,
    /// The peer's address.
    peer: Option<SocketAddr>,
    /// When the read that completed the frame returned, in µs since the Unix epoch.
    received: u64,
}

/// Has admission decide a payload's fate and carries out what it says about the journal:
/// appends the payload when the decision says so. Returns the decision (AE when the journal
/// failed), the sequence number to wait for (none with ACK_AFTER=receipt), and the one it was
/// stored as.
async fn admit(
    shard: &Shard,
    payload: &[u8],
    origin: &Origin<'_>,
) -> (Decision, Option<u64>, Option<u64>) {
    let context = Context {
        peer: origin.peer,
        tls_client_cn: origin.identity.and_then(|i| i.cn.as_deref()),
        tls_client_sans: origin.identity.map_or(&[], |i| i.sans.as_slice()),
    };
    let mut decision = shard.admission.borrow_mut().decide(payload, &context);
    let Some(dedup_key) = decision.dedup_key(payload) else {
        return (decision, None, None);
    };
    let record = RecordRef {
        receive_time_unix_micros: origin.received,
        connection_id: origin.connection_id,
        peer: origin.peer,
        payload,
        dedup_key: Some(dedup_key),
        client: origin.identity.map(|i| crate::journal::ClientRef {
            cn: i.cn.as_deref(),
            sans: &i.sans,
        }),
    };
    let appended = shard.journal.append_in_turn(&record).await;
    match appended {
        Ok(append) => {
            let seq = append_seq(append);
            let wait = shard.waits_for_journal().then_some(seq);
            (decision, wait, Some(seq))
        }
        Err(error) => {
            decision.not_stored(error);
            (decision, None, None)
        }
    }
}

/// The audit line of one answered frame: the decision and header fields, never content.
fn audit_line<'a>(
    shard: &Shard,
    peer: Option<SocketAddr>,
    frame: &'a Frame,
    payload: &[u8],
    code: Option<crate::ack::AckCode>,
    now_unix_micros: u64,
) -> crate::audit::AuditLine<'a> {
    use crate::admission::Parsed;
    use crate::audit::field;
    let header = match frame.decision.parsed() {
        Parsed::Message(header) | Parsed::Header(header) => Some(header.attach(payload)),
        Parsed::Nothing => None,
    };
    let cause = match frame.decision.cause() {
        Cause::Accepted => None,
        Cause::Unparsed(_) => Some("unparsed"),
        Cause::Rule(_) => Some("rule"),
        Cause::Evaluation { .. } => Some("evaluation"),
        Cause::NotStored(_) => Some("not_stored"),
        Cause::NotDelivered(_) => Some("not_delivered"),
    };
    crate::audit::AuditLine {
        time: crate::audit::time(now_unix_micros),
        shard: shard.index,
        seq: frame.stored,
        peer,
        tls_client_cn: None,
        sending_application: header.as_ref().and_then(|m| field(m.sending_application())),
        sending_facility: header.as_ref().and_then(|m| field(m.sending_facility())),
        message_type: header.as_ref().and_then(|m| field(m.msh(9))),
        control_id: header.as_ref().and_then(|m| field(m.control_id())),
        ack_code: code.map_or("none", |c| {
            std::str::from_utf8(c.as_bytes()).unwrap_or("??")
        }),
        rule: frame.decision.rule().map(|r| r.name()),
        cause,
    }
}

impl Connection {
    /// Hands the audit lines of the answers just built to the audit writer before they are
    /// written: when its queue is full this waits, delaying this connection's ACKs
    /// (back-pressure), and never drops a line. A writer that stopped ends the process.
    async fn hand_over_audit(&mut self, shard: &Shard) {
        let Some(audit) = &shard.shared.audit else {
            return;
        };
        if self.audit.is_empty() {
            return;
        }
        if audit.send(std::mem::take(&mut self.audit)).await.is_err() {
            shard.fail("the audit log writer stopped");
        }
    }
}

/// Logs a rule that could not be evaluated: the rule, the message's control id and the
/// reason (which names types and functions, never content). A sender can make every message
/// err, so a shard logs at most one such line per second and counts the rest.
fn log_evaluation_error(shard: &Shard, rule: &str, control_id: Option<&[u8]>, reason: &str) {
    let Some(unlogged) = shard.evaluation_error_log_due() else {
        return;
    };
    let control_id = String::from_utf8_lossy(control_id.unwrap_or_default());
    warn!(shard = shard.index, rule, control_id = %control_id, reason,
        unlogged_since_last = unlogged, "validation rule could not be evaluated; answered AE");
}

fn append_seq(append: Append) -> u64 {
    match append {
        Append::Stored(seq) | Append::Duplicate(seq) => seq,
    }
}

/// Waits until every journaled frame still pending is durable (or failed); frames already
/// waited for are skipped. Records of one chunk are appended back to back, so the first wait
/// usually covers all of them.
async fn settle(shard: &Shard, frames: &mut [Frame]) {
    for frame in frames.iter_mut() {
        if let Some(seq) = frame.seq.take() {
            if let Err(error) = shard.journal.wait_durable(seq).await {
                frame.decision.not_stored(error);
            }
        }
    }
    if shard.journal.is_poisoned() {
        shard.fail("journal flush failed; the journal can no longer be trusted");
    }
}

/// ACK_AFTER=delivery: waits until the sync connectors settled every durable frame that needs
/// it (`crate::route::confirm`), at most the sync timeout for the whole chunk (one timer, from
/// now), and turns a rejection into AR with its reason and a timeout into AE. The wait registers
/// the connection's waker (`id` names it) only when the message is not settled yet.
async fn await_delivery(
    shard: &Shard,
    acks: &crate::route::SyncAcks,
    id: u64,
    frames: &mut [Frame],
) {
    let Some(confirmations) = acks.shards.get(shard.index) else {
        return;
    };
    let deadline = Instant::now() + acks.timeout;
    for frame in frames.iter_mut() {
        let Some(seq) = frame.confirm.take() else {
            continue;
        };
        if !matches!(frame.decision.cause(), Cause::Accepted) {
            continue; // Not stored after all (AE already).
        }
        let registered = ForgetOnDrop { confirmations, id };
        let settled = future::poll_fn(|cx| match confirmations.poll_settled(id, seq, cx.waker()) {
            Some(settled) => std::task::Poll::Ready(Some(settled)),
            None => std::task::Poll::Pending,
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = async {
            crate::timers::sleep(left).await;
            None
        };
        let outcome = future::or(settled, timed_out).await;
        drop(registered);
        match outcome {
            Some(crate::route::Settled::Delivered) => {}
            Some(crate::route::Settled::Rejected(reason)) => {
                frame.decision.not_delivered(Some(reason));
            }
            None => frame.decision.not_delivered(None),
        }
    }
}

/// Removes a connection's waiter registration when its wait ends, however it ends.
struct ForgetOnDrop<'c> {
    /// Where it is registered.
    confirmations: &'c crate::route::Confirmations,
    /// The connection id it is registered under.
    id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.confirmations.forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rejection_past_the_bound_within_the_window_is_one_too_many() {
        let start = Instant::now();
        let mut rejections = Rejections::default();
        for i in 0..REJECTED_FRAMES_MAX {
            assert!(
                !rejections.reject(start),
                "rejection {} of the bound",
                i + 1
            );
        }
        assert!(rejections.reject(start + REJECTED_FRAMES_WINDOW / 2));
    }

    #[test]
    fn a_new_window_starts_the_count_again() {
        let start = Instant::now();
        let mut rejections = Rejections::default();
        for _ in 0..REJECTED_FRAMES_MAX {
            assert!(!rejections.reject(start));
        }
        let later = start + REJECTED_FRAMES_WINDOW;
        for _ in 0..REJECTED_FRAMES_MAX {
            assert!(!rejections.reject(later));
        }
        assert!(rejections.reject(later + Duration::from_millis(1)));
    }

    #[test]
    fn an_accepted_message_starts_the_count_again() {
        let start = Instant::now();
        let mut rejections = Rejections::default();
        for round in 0..3 {
            for _ in 0..REJECTED_FRAMES_MAX {
                assert!(!rejections.reject(start), "round {round}");
            }
            rejections.accept();
        }
        for _ in 0..REJECTED_FRAMES_MAX {
            assert!(!rejections.reject(start));
        }
        assert!(rejections.reject(start));
    }
}
