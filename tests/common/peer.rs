//! A scripted MLLP downstream for connector tests: records the control id of each message it
//! receives (in order) and answers as its script says, after an optional delay, or not at all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the peer does with one message.
pub enum Answer {
    /// An ACK with this MSA-1 code, echoing the control id, with this MSA-3 text (may be empty).
    Code(&'static str, &'static str),
    /// An ACK with this MSA-1 code whose MSA-2 names another message (this control id).
    Misdirected(&'static str, &'static str),
    /// Nothing: the message is read and never answered.
    Silence,
}

/// The script: (control id, times seen before) → answer.
pub type Script = fn(&str, usize) -> Answer;

/// A running scripted peer (its threads live as long as the test process).
pub struct Peer {
    /// Where it listens.
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Starts a peer that answers after `delay`.
    pub fn start(script: Script, delay: Duration) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind peer");
        let address = listener.local_addr().expect("peer address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log, script, delay));
            }
        });
        Peer { address, received }
    }

    /// The control ids received so far, in order.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().expect("peer log").clone()
    }
}

/// MSH-10 of a payload.
pub fn control_id(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let first = text.split(['\r', '\n']).next().unwrap_or_default();
    first.split('|').nth(9).unwrap_or_default().to_owned()
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<String>>, script: Script, delay: Duration) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        while let Some(start) = pending.iter().position(|&b| b == 0x0B) {
            let Some(end) = pending[start..].windows(2).position(|w| w == [0x1C, 0x0D]) else {
                break;
            };
            let payload = pending[start + 1..start + end].to_vec();
            pending.drain(..start + end + 2);
            let id = control_id(&payload);
            let seen = {
                let mut log = log.lock().expect("peer log");
                let seen = log.iter().filter(|s| **s == id).count();
                log.push(id.clone());
                seen
            };
            // Deliberate: a downstream this slow to answer (the script's choice, often zero).
            std::thread::sleep(delay);
            let (code, msa2, text) = match script(&id, seen) {
                Answer::Code(code, text) => (code, id.as_str(), text),
                Answer::Misdirected(code, other) => (code, other, ""),
                Answer::Silence => continue,
            };
            let ack = format!(
                "MSH|^~\\&|PEER|PEER|X|X|20260101||ACK^A01^ACK|A{seen}|P|2.5.1\rMSA|{code}|{msa2}|{text}\r"
            );
            if stream.write_all(&super::frame(ack.as_bytes())).is_err() {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
