//! Correctness check of a receiver before it is timed: a peer that answers wrongly is
//! reported as wrong, never as fast.
//!
//! Steps (each on a fresh connection, blocking socket, every ACK read strictly: MSH present,
//! MSH-9 starts with `ACK`, MSA-1 accepted, MSA-2 equals the sent MSH-10):
//! 1. one message, one ACK;
//! 2. many messages in one write: one ACK each, in order (a pipelining sender);
//! 3. one message written in three pieces with pauses (TCP may split anywhere);
//! 4. every template of the run once (user message files).

use super::control_id;
use crate::floor::next_frame;
use crate::message::Template;
use crate::verify::check_ack;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Messages in the pipelined step.
const PIPELINED: usize = 50;

/// One step: its name, (control id, template) per message, and how many pieces to write
/// the bytes in.
type Step<'t> = (&'static str, Vec<(Vec<u8>, &'t Template)>, usize);

/// Result of one step.
#[derive(Debug, serde::Serialize)]
pub struct StepResult {
    /// Step name.
    pub step: &'static str,
    /// None when it passed; the first failure otherwise.
    pub failure: Option<String>,
}

/// Runs every step; the run passes when every `failure` is `None`.
pub fn run(
    addr: SocketAddr,
    templates: &[Template],
    accepted: &[Vec<u8>],
    connect_timeout: Duration,
) -> Vec<StepResult> {
    let mut seq = 0u64;
    let mut next_id = || {
        let mut buf = [0u8; 32];
        let len = control_id(std::process::id(), 9_999, seq, &mut buf);
        seq += 1;
        buf[..len].to_vec()
    };
    let first = &templates[0];
    let steps: [Step; 4] = [
        ("single", vec![(next_id(), first)], 1),
        (
            "pipelined",
            (0..PIPELINED).map(|_| (next_id(), first)).collect(),
            1,
        ),
        ("split", vec![(next_id(), first)], 3),
        (
            "templates",
            templates.iter().map(|t| (next_id(), t)).collect(),
            1,
        ),
    ];
    steps
        .into_iter()
        .map(|(step, messages, pieces)| StepResult {
            step,
            failure: run_step(addr, &messages, pieces, accepted, connect_timeout).err(),
        })
        .collect()
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(format!("connect {addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn run_step(
    addr: SocketAddr,
    messages: &[(Vec<u8>, &Template)],
    pieces: usize,
    accepted: &[Vec<u8>],
    connect_timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(addr, connect_timeout)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut out = Vec::new();
    for (id, template) in messages {
        template.write_frame(id, &mut out);
    }
    let piece = out.len().div_ceil(pieces);
    for chunk in out.chunks(piece) {
        stream.write_all(chunk).map_err(|e| format!("write: {e}"))?;
        if pieces > 1 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let mut buf = Vec::new();
    for (n, (id, _)) in messages.iter().enumerate() {
        let payload = read_frame(&mut stream, &mut buf)
            .map_err(|e| format!("ACK {} of {}: {e}", n + 1, messages.len()))?;
        check_ack(&payload, id, accepted, true).map_err(|kind| {
            format!(
                "ACK {} of {}: {} (sent MSH-10 {:?}, got {:?})",
                n + 1,
                messages.len(),
                kind.name(),
                String::from_utf8_lossy(id),
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            )
        })?;
    }
    Ok(())
}

/// Reads until one whole frame is in `buf`; returns its payload and keeps the rest.
fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    loop {
        if let Some((payload, consumed)) = next_frame(buf) {
            let frame = buf[payload].to_vec();
            buf.drain(..consumed);
            return Ok(frame);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed before the ACK".to_owned()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no ACK: {e}")),
        }
    }
}
