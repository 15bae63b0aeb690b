//! The `mllp` connector: sends each message in an MLLP frame over a connection it keeps open,
//! waits for the ACK and checks that MSA-2 echoes the MSH-10 it sent (HL7 v2 chapter 2,
//! original and enhanced acknowledgment modes): AA/CA → delivered; AR/CR → rejected (dead
//! letter); AE/CE, no ACK in time, a disconnect or an ACK for another message → failed (retry,
//! on a new connection when the stream may be out of step).
//!
//! `mllps://` speaks the same over TLS, with the client code of `mllpd send --tls`
//! ([`crate::tls::ClientTls`]): the files are read once (a bad one stops the start, naming it),
//! and each new connection runs its handshake within CONNECTOR_CONNECT_TIMEOUT.
//!
//! Plain blocking `std::net` on the connector's own thread: one message in flight per
//! connection, which is what keeps delivery FIFO.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Delivery, Destination, Outcome};
use crate::limits::{
    CONNECTOR_ACK_BYTES_MAX, CONNECTOR_CONNECT_TIMEOUT, CONNECTOR_RESPONSE_TIMEOUT,
};
use crate::tls::{ClientOptions, ClientStream, ClientTls};

/// MLLP start block.
const SB: u8 = 0x0B;
/// MLLP end block (followed by CR).
const EB: u8 = 0x1C;
/// Carriage return.
const CR: u8 = 0x0D;

/// Delivers to an MLLP peer.
#[derive(Debug)]
pub struct MllpDestination {
    /// `host:port`.
    address: String,
    /// TLS for `mllps://`; `None`: plaintext.
    tls: Option<ClientTls>,
    /// The open connection, if any.
    stream: Option<ClientStream>,
    /// Reused frame and ACK buffers.
    out: Vec<u8>,
    /// Bytes read while waiting for the ACK.
    input: Vec<u8>,
    /// How long an ACK may take.
    response_timeout: Duration,
}

impl MllpDestination {
    /// A destination for `address` (`host:port`), over TLS with `tls` (its files are read
    /// here); connects at the first delivery.
    pub fn new(address: String, tls: Option<&ClientOptions>) -> Result<MllpDestination, String> {
        let tls = tls
            .map(|options| ClientTls::new(options, &address))
            .transpose()
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(MllpDestination {
            address,
            tls,
            stream: None,
            out: Vec::new(),
            input: Vec::new(),
            response_timeout: CONNECTOR_RESPONSE_TIMEOUT,
        })
    }

    /// The open connection, connecting (and running the TLS handshake) first if needed.
    fn connection(&mut self) -> Result<&mut ClientStream, String> {
        if self.stream.is_none() {
            let addresses = self
                .address
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {}: {e}", self.address))?;
            let mut last = format!("{} resolves to no address", self.address);
            for address in addresses {
                let tcp = match TcpStream::connect_timeout(&address, CONNECTOR_CONNECT_TIMEOUT) {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        last = format!("cannot connect to {address}: {e}");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => self.stream = Some(ClientStream::Plain(tcp)),
                    Some(tls) => match tls.connect(tcp, CONNECTOR_CONNECT_TIMEOUT) {
                        Ok(stream) => self.stream = Some(stream),
                        Err(e) => {
                            last = format!("TLS handshake with {address} failed: {e}");
                            continue;
                        }
                    },
                }
                break;
            }
            if self.stream.is_none() {
                return Err(last);
            }
        }
        self.stream
            .as_mut()
            .ok_or_else(|| "not connected".to_owned())
    }

    /// Sends the frame and reads the ACK's payload into `self.input[start..end]`.
    fn exchange(&mut self, payload: &[u8]) -> Result<(usize, usize), String> {
        self.out.clear();
        self.out.push(SB);
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(&[EB, CR]);
        let deadline = Instant::now() + self.response_timeout;
        let out = std::mem::take(&mut self.out);
        let sent = self.connection().and_then(|stream| {
            let _ = stream
                .tcp()
                .set_write_timeout(Some(CONNECTOR_RESPONSE_TIMEOUT));
            stream
                .write_all(&out)
                .and_then(|()| stream.flush())
                .map_err(|e| format!("send failed: {e}"))
        });
        self.out = out;
        sent?;
        self.input.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(found) = ack_frame(&self.input) {
                return Ok(found);
            }
            if self.input.len() > CONNECTOR_ACK_BYTES_MAX {
                return Err(format!("ACK larger than {CONNECTOR_ACK_BYTES_MAX} bytes"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no ACK within {:?}", self.response_timeout));
            }
            let stream = self.connection()?;
            let _ = stream.tcp().set_read_timeout(Some(left));
            match stream.read(&mut chunk) {
                Ok(0) => return Err("the downstream closed the connection".to_owned()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!("no ACK within {:?}", self.response_timeout))
                }
                Err(e) => return Err(format!("receive failed: {e}")),
            }
        }
    }
}

impl Destination for MllpDestination {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
        let (start, end) = match self.exchange(delivery.payload) {
            Ok(found) => found,
            Err(reason) => {
                self.stream = None; // The stream may be out of step: start afresh.
                return Outcome::Failed(reason);
            }
        };
        let Some((code, control_id)) = msa(&self.input[start..end]) else {
            self.stream = None;
            return Outcome::Failed("the answer is not an ACK (no MSA segment)".to_owned());
        };
        if control_id != delivery.control_id {
            self.stream = None;
            return Outcome::Failed("the ACK is for another message (MSA-2 ≠ MSH-10)".to_owned());
        }
        match code {
            b"AA" | b"CA" => Outcome::Delivered,
            b"AR" | b"CR" => Outcome::Rejected(format!(
                "downstream answered {}{}",
                String::from_utf8_lossy(code),
                msa_text(&self.input[start..end])
            )),
            b"AE" | b"CE" => Outcome::Failed(format!(
                "downstream answered {}",
                String::from_utf8_lossy(code)
            )),
            _ => Outcome::Failed("the ACK has an unknown MSA-1 code".to_owned()),
        }
    }
}

/// The payload of the first complete frame in `bytes`, as (start, end); bytes before the start
/// block are noise.
fn ack_frame(bytes: &[u8]) -> Option<(usize, usize)> {
    let start = memchr::memchr(SB, bytes)? + 1;
    let end = memchr::memmem::find(&bytes[start..], &[EB, CR])? + start;
    Some((start, end))
}

/// `": " + MSA-3` (the downstream's reason) of an ACK payload, printable ASCII only and cut to
/// `limits::ACK_TEXT_BYTES_MAX`, with HL7 escapes left as sent; empty when there is none. It
/// goes into the dead letter and, with ACK_AFTER=delivery, the AR to the sender.
fn msa_text(ack: &[u8]) -> String {
    let Some(&separator) = ack.get(3) else {
        return String::new();
    };
    let text = ack
        .split(|&b| b == CR || b == b'\n')
        .find(|s| s.len() > 3 && s.starts_with(b"MSA") && s[3] == separator)
        .and_then(|segment| segment.split(|&b| b == separator).nth(3))
        .unwrap_or_default();
    let clean: String = text
        .iter()
        .take(crate::limits::ACK_TEXT_BYTES_MAX)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                ' '
            }
        })
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        String::new()
    } else {
        format!(": {clean}")
    }
}

/// MSA-1 (acknowledgment code) and MSA-2 (control id) of an ACK payload.
fn msa(ack: &[u8]) -> Option<(&[u8], &[u8])> {
    if !ack.starts_with(b"MSH") || ack.len() < 4 {
        return None;
    }
    let separator = ack[3];
    let segment = ack
        .split(|&b| b == CR || b == b'\n')
        .find(|s| s.len() > 3 && s.starts_with(b"MSA") && s[3] == separator)?;
    let mut fields = segment.split(|&b| b == separator).skip(1);
    let code = fields.next()?;
    let control_id = fields.next().unwrap_or_default();
    Some((code, control_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ack_code_and_control_id() {
        let ack = b"MSH|^~\\&|A|B|C|D|20240101||ACK^A01^ACK|X1|P|2.5\rMSA|AR|MSG7|bad\rERR|x\r";
        assert_eq!(msa(ack), Some((&b"AR"[..], &b"MSG7"[..])));
        let ack = b"MSH#^~\\&#A\nMSA#CA#9\n";
        assert_eq!(msa(ack), Some((&b"CA"[..], &b"9"[..])));
        assert_eq!(msa(b"MSH|^~\\&|A\rPID|1\r"), None);
        assert_eq!(msa(b"garbage"), None);
        let ack = b"MSH|^~\\&|A|B|C|D|20240101||ACK^A01^ACK|X1|P|2.5\rMSA|AR|MSG7|PID-3 \x01missing\rERR|x\r";
        assert_eq!(msa_text(ack), ": PID-3  missing");
        assert_eq!(msa_text(b"MSH|^~\\&|A\rMSA|AR|7\r"), "");
    }

    #[test]
    fn a_frame_is_found_after_noise_and_only_when_complete() {
        assert_eq!(ack_frame(b"xx\x0bMSH\x1c\x0d"), Some((3, 6)));
        assert_eq!(ack_frame(b"\x0bMSH\x1c"), None);
        assert_eq!(ack_frame(b"MSH"), None);
    }
}
