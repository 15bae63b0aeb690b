//! TLS on the transport seam, once for both socket paths: rustls' `ServerConnection` driven over
//! byte buffers. Received bytes (from the ring's inbox or glommio's socket) go through
//! `read_tls`/`process_new_packets` and come out of `reader()`; the plaintext of one write goes
//! into `writer()` and leaves as the records `write_tls` makes, in one send. Deadlines are the
//! caller's (`transport::within` around the whole operation; CONNECT_TIMEOUT around the
//! handshake).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::limits::TLS_RECORD_READ_BYTES;

use super::transport::Wire;

/// The first byte of an MLLP frame (start block): a peer that sends it to a TLS listener speaks
/// plaintext MLLP.
const MLLP_START_BLOCK: u8 = 0x0b;

/// Why a handshake failed (logged once, then the connection closes).
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// The first bytes were an MLLP start block: plaintext MLLP sent to a TLS listener.
    PlaintextMllp,
    /// The peer violated TLS or failed verification (no or a bad client certificate, a version
    /// below TLS_MIN_VERSION, …).
    Tls(rustls::Error),
    /// The peer closed before the handshake completed.
    PeerClosed,
    /// Reading or writing the socket failed.
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::PlaintextMllp => write!(f, "plaintext MLLP sent to a TLS listener"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
            HandshakeError::PeerClosed => write!(f, "peer closed during the handshake"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// One connection's TLS state.
pub(super) struct TlsSession {
    /// rustls' state machine.
    conn: ServerConnection,
    /// Bytes received and not yet given to rustls: `raw[start..end]`.
    raw: Box<[u8]>,
    /// First byte of `raw` not yet given to rustls.
    start: usize,
    /// End of the received bytes in `raw`.
    end: usize,
    /// Records to send (handshake messages, encrypted answers, alerts).
    out: Vec<u8>,
}

impl TlsSession {
    /// Runs a server handshake on `wire` with `config`. Unbounded: the caller puts
    /// CONNECT_TIMEOUT around it.
    pub(super) async fn accept(
        wire: &mut Wire,
        config: Arc<ServerConfig>,
    ) -> Result<Box<TlsSession>, HandshakeError> {
        let mut conn = ServerConnection::new(config).map_err(HandshakeError::Tls)?;
        // What one write hands rustls is bounded by the connection driver (ANSWER_BYTES_MAX
        // plus one ACK) and sent at once; rustls' own 64 KiB bound would cut it short.
        conn.set_buffer_limit(None);
        let mut session = Box::new(TlsSession {
            conn,
            raw: vec![0; TLS_RECORD_READ_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::new(),
        });
        let mut first = true;
        while session.conn.is_handshaking() {
            if session.start == session.end {
                let n = wire
                    .recv(&mut session.raw)
                    .await
                    .map_err(HandshakeError::Io)?;
                if n == 0 {
                    return Err(HandshakeError::PeerClosed);
                }
                if first && session.raw[0] == MLLP_START_BLOCK {
                    return Err(HandshakeError::PlaintextMllp);
                }
                first = false;
                session.start = 0;
                session.end = n;
            }
            let fed = session.feed();
            // Handshake messages and alerts go out whether the records were good or not: a
            // refused client learns why.
            session.flush(wire).await.map_err(HandshakeError::Io)?;
            fed.map_err(HandshakeError::Tls)?;
        }
        Ok(session)
    }

    /// The verified client certificate (leaf), if the client presented one.
    pub(super) fn peer_certificate(&self) -> Option<&[u8]> {
        self.conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.as_ref())
    }

    /// The negotiated protocol version, e.g. `TLSv1_3`.
    pub(super) fn version(&self) -> String {
        self.conn
            .protocol_version()
            .map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}"))
    }

    /// The negotiated cipher suite.
    pub(super) fn cipher_suite(&self) -> String {
        self.conn
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()))
    }

    /// Reads decrypted bytes into `buf`: what rustls already holds, else one receive's worth of
    /// records decrypted. 0: the peer closed (close_notify or end of stream). A record that does
    /// not decrypt or parse is `InvalidData` (the alert rustls queued is sent first).
    pub(super) async fn read(&mut self, wire: &mut Wire, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.start == self.end {
                let n = wire.recv(&mut self.raw).await?;
                if n == 0 {
                    return Ok(0);
                }
                self.start = 0;
                self.end = n;
            }
            let fed = self.feed();
            self.flush(wire).await?;
            fed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Encrypts all of `data` and sends the records in one send.
    pub(super) async fn write_all(&mut self, wire: &mut Wire, data: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.flush(wire).await
    }

    /// Sends a close_notify alert (an orderly end of the TLS stream).
    pub(super) async fn close_notify(&mut self, wire: &mut Wire) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush(wire).await
    }

    /// Gives rustls the received bytes it takes and has it process them.
    fn feed(&mut self) -> Result<(), rustls::Error> {
        while self.start < self.end {
            let mut pending = &self.raw[self.start..self.end];
            match self.conn.read_tls(&mut pending) {
                Ok(0) => break,
                Ok(n) => self.start += n,
                // rustls' buffers are full: process what it holds first.
                Err(_) => {
                    self.conn.process_new_packets()?;
                    if self.conn.wants_read() {
                        continue;
                    }
                    break;
                }
            }
            self.conn.process_new_packets()?;
        }
        Ok(())
    }

    /// Sends every record rustls has queued, in one send.
    async fn flush(&mut self, wire: &mut Wire) -> io::Result<()> {
        self.out.clear();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        if self.out.is_empty() {
            return Ok(());
        }
        wire.send(&self.out).await
    }
}
