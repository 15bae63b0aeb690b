//! The load generator behind `mllp-bench`.
//!
//! Client design: one tokio `current_thread` runtime per generator thread (default one,
//! pinned), one task per connection. An epoll loop on one thread is the cheapest way to drive
//! hundreds of sockets from one core: blocking threads would spend the core on context
//! switches at 256 connections, and the generator must leave the server's core alone.
//!
//! Every connection reads into one buffer and answers all the ACKs of a read with one write of
//! new messages (closed and pipelined modes), taking the clock once per read. Latency is
//! measured from the send time (closed, pipelined) or from the intended send time of a fixed
//! schedule (open loop), so a stalled server shows up as latency instead of silently lowering
//! the offered load (no coordinated omission).
//!
//! Every connection (sending and idle) is opened before the clock starts: warmup and window
//! time only messages, never connects or handshakes. The open loop offsets each connection's
//! schedule by its share of the per-connection interval, so N connections at R msgs/s in all
//! make one even stream of R msgs/s, not N messages in a burst every N/R seconds.
//!
//! Invariants: MLLP answers arrive in order on a connection, so each connection keeps a FIFO of
//! (sequence, time) for its messages in flight; every ACK is checked against the head of that
//! FIFO (MSA-2 = MSH-10, MSA-1 in the expected set) and counted as a mismatch otherwise.

pub mod check;
pub mod conn;
pub mod report;

use crate::message::Template;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How messages are offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `depth` messages in flight per connection; each ACK releases the next message.
    /// Depth 1 is the closed loop of a real MLLP sender.
    Window {
        /// Messages in flight per connection.
        depth: usize,
    },
    /// A fixed schedule: `rate` messages per second over all connections, sent whether or
    /// not earlier ones were answered.
    Open {
        /// Messages per second, all connections together.
        rate: f64,
    },
    /// Each connection in turn: connect (with TLS, a full handshake: no resumption), send one
    /// message, read its ACK, close (close_notify with TLS), again. Latency runs from the
    /// connect, so the rate is connections — full handshakes — per second.
    Reconnect,
}

/// Everything a run needs; built from the command line.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections that send, all opened (TCP connect and, with TLS, the handshake) before
    /// the run's clock starts.
    pub connections: usize,
    /// Idle connections: opened (plain TCP) before the clock starts, after the sending ones,
    /// held without a byte for the whole run, and checked at the end (closed by the server or
    /// not). Plain blocking sockets outside the event loop: 10 000 of them cost the generator
    /// a descriptor each and nothing per turn.
    pub idle: usize,
    /// Offered load.
    pub mode: Mode,
    /// Measured window (after warmup); the run may end earlier on `count`.
    pub duration: Duration,
    /// Stop after this many measured ACKs.
    pub count: Option<u64>,
    /// Time before the window: sent and verified, not recorded.
    pub warmup: Duration,
    /// Messages to send, rotated per connection.
    pub templates: Arc<Vec<Template>>,
    /// Accepted MSA-1 codes.
    pub accepted_codes: Arc<Vec<Vec<u8>>>,
    /// Generator threads (connections are dealt round-robin).
    pub threads: usize,
    /// CPUs to pin generator threads to (thread i → cpus[i % len]).
    pub cpus: Vec<usize>,
    /// How long to keep retrying the first connect (server still starting).
    pub connect_timeout: Duration,
    /// How long to wait for the last ACKs after the window.
    pub drain_timeout: Duration,
    /// Prefix making control ids unique across runs (a journaling server may dedupe).
    pub run_tag: u32,
    /// TLS client configuration (`--tls-ca`); none: plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name the server's certificate is checked against (`--tls-server-name`).
    pub tls_server_name: String,
}

/// State every connection reads: the clock boundaries and the counters the progress bar shows.
#[derive(Debug)]
pub struct Shared {
    /// Run start.
    pub t0: Instant,
    /// Start of the measured window.
    pub measure_start: Instant,
    /// End of the measured window (duration bound).
    pub measure_end: Instant,
    /// Count bound, if any.
    pub count: Option<u64>,
    /// Set when the count bound is reached; senders stop.
    pub done: AtomicBool,
    /// Set by the driver once every connection has ended (sampler and progress bar stop).
    pub finished: AtomicBool,
    /// Set by the CPU sampler after its last sample: generator threads wait for it before
    /// exiting, because an exited thread's CPU time leaves `/proc/PID/task`.
    pub end_sampled: AtomicBool,
    /// Nanoseconds from `measure_start` to the moment the count bound was reached.
    pub done_at_ns: AtomicU64,
    /// ACKs recorded inside the window, all connections (for the count bound and progress).
    pub measured: AtomicU64,
    /// ACKs received, warmup included (progress).
    pub acked: AtomicU64,
    /// ACK mismatches so far (progress; the report counts them per kind).
    pub mismatches: AtomicU64,
}

impl Shared {
    /// New shared state starting now.
    pub fn new(plan: &Plan) -> Shared {
        let t0 = Instant::now();
        let measure_start = t0 + plan.warmup;
        Shared {
            t0,
            measure_start,
            measure_end: measure_start + plan.duration,
            count: plan.count,
            done: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            end_sampled: AtomicBool::new(false),
            done_at_ns: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
        }
    }

    /// True once senders must stop offering new messages.
    pub fn stopping(&self, now: Instant) -> bool {
        now >= self.measure_end || self.done.load(Ordering::Relaxed)
    }

    /// Whether an ACK received at `now` is inside the measured window.
    pub fn in_window(&self, now: Instant) -> bool {
        now >= self.measure_start && now < self.measure_end && !self.done.load(Ordering::Relaxed)
    }

    /// Counts `n` measured ACKs; trips the count bound.
    pub fn add_measured(&self, n: u64, now: Instant) {
        let total = self.measured.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(count) = self.count {
            if total >= count && !self.done.swap(true, Ordering::Relaxed) {
                let ns = now.saturating_duration_since(self.measure_start).as_nanos();
                self.done_at_ns
                    .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        }
    }

    /// True once the run is over or the count bound was reached.
    pub fn over(&self) -> bool {
        self.finished.load(Ordering::Relaxed) || self.done.load(Ordering::Relaxed)
    }

    /// Length of the measured window as it actually ran.
    pub fn window(&self) -> Duration {
        if self.done.load(Ordering::Relaxed) {
            Duration::from_nanos(self.done_at_ns.load(Ordering::Relaxed))
        } else {
            self.measure_end - self.measure_start
        }
    }
}

/// Writes a control id `<run>.<conn>.<seq>` (at most 20 bytes, the ST length of MSH-10 in
/// v2.5) into `buf` and returns its length.
pub fn control_id(run: u32, conn: u32, seq: u64, buf: &mut [u8; 32]) -> usize {
    let mut len = 0;
    for (i, part) in [
        u64::from(run % 100_000),
        u64::from(conn),
        seq % 10_000_000_000,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        len += write_decimal(part, &mut buf[len..]);
    }
    len
}

fn write_decimal(mut value: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_unique_and_short() {
        let mut buf = [0u8; 32];
        let n = control_id(123_456, 255, 9_999_999_999, &mut buf);
        assert_eq!(&buf[..n], b"23456.255.9999999999");
        assert!(n <= 20);
        let n = control_id(0, 0, 0, &mut buf);
        assert_eq!(&buf[..n], b"0.0.0");
        let mut a = [0u8; 32];
        let la = control_id(1, 2, 34, &mut a);
        let lb = control_id(1, 23, 4, &mut buf);
        assert_ne!(&a[..la], &buf[..lb]);
    }
}
