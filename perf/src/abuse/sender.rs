//! The well-behaved sender: one connection, one message in flight, sent on a fixed schedule of
//! `rate` messages per second. Latency runs from the intended send time, so a stall delays the
//! messages scheduled behind it and shows up in full (no coordinated omission). Every ACK must
//! be AA with MSA-2 equal to the MSH-10 sent; anything else — a refused connect, a reset, a
//! timeout, a wrong ACK — is recorded as a refusal and the sender reconnects.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{frame, message, msa, take_frame, Latency};

/// How long the sender waits for one ACK before it counts the message as refused.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sender saw.
#[derive(Debug, Default)]
pub struct Report {
    /// (intended send time, latency in µs) of every AA.
    pub samples: Vec<(Instant, u64)>,
    /// Control ids answered AA.
    pub acked_ids: Vec<String>,
    /// Every failure, in order.
    pub errors: Vec<String>,
}

impl Report {
    /// Latency of the messages intended to be sent in `from..to`.
    pub fn latency(&self, from: Instant, to: Instant) -> Latency {
        let mut us: Vec<u64> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, us)| *us)
            .collect();
        us.sort_unstable();
        let pick = |q: f64| {
            if us.is_empty() {
                return 0;
            }
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            us[rank - 1]
        };
        Latency {
            count: us.len(),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            max_us: us.last().copied().unwrap_or(0),
        }
    }
}

/// The running sender thread.
pub struct Sender {
    /// Tells the thread to stop.
    stop: Arc<AtomicBool>,
    /// AA's so far.
    acked: Arc<AtomicU64>,
    /// The thread.
    thread: JoinHandle<Report>,
}

impl Sender {
    /// Starts sending to `addr` at `rate` messages per second.
    pub fn start(addr: SocketAddr, rate: f64) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || send_loop(addr, period, &stop, &acked))
        };
        Sender {
            stop,
            acked,
            thread,
        }
    }

    /// Waits until `n` messages were answered AA.
    pub fn wait_acked(&self, n: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline || self.thread.is_finished() {
                return Err(format!(
                    "the well-behaved sender got no {n} AAs in {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops the sender and returns what it saw.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| Report {
            errors: vec!["sender thread panicked".to_owned()],
            ..Report::default()
        })
    }
}

fn send_loop(addr: SocketAddr, period: Duration, stop: &AtomicBool, acked: &AtomicU64) -> Report {
    let mut report = Report::default();
    let mut connection: Option<Connection> = None;
    let start = Instant::now();
    for seq in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let intended = start + period * u32::try_from(seq).unwrap_or(u32::MAX);
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = format!("WB-{seq}");
        let result = match connection.as_mut() {
            Some(c) => c.round_trip(&id),
            None => Connection::open(addr).and_then(|mut c| {
                let result = c.round_trip(&id);
                connection = Some(c);
                result
            }),
        };
        match result {
            Ok(()) => {
                let us = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
                report.samples.push((intended, us));
                report.acked_ids.push(id);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                report.errors.push(format!("{id}: {e}"));
                connection = None;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    report
}

/// One blocking connection with its read buffer.
struct Connection {
    /// The socket.
    stream: TcpStream,
    /// Bytes read but not yet taken as a frame.
    pending: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(ACK_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Connection {
            stream,
            pending: Vec::new(),
        })
    }

    /// Sends one message with MSH-10 = `id` and checks its ACK.
    fn round_trip(&mut self, id: &str) -> Result<(), String> {
        self.stream
            .write_all(&frame(&message(id)))
            .map_err(|e| format!("write: {e}"))?;
        let ack = loop {
            if let Some(payload) = take_frame(&mut self.pending) {
                break payload;
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("closed by the server".to_owned()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        };
        match msa(&ack) {
            Some((code, echoed)) if code == "AA" && echoed == id => Ok(()),
            other => Err(format!("wrong ACK {other:?}")),
        }
    }
}

/// One message on a fresh connection; `Ok` when it was answered AA with its id.
pub fn one_message(addr: SocketAddr, id: &str) -> Result<(), String> {
    Connection::open(addr)?.round_trip(id)
}
