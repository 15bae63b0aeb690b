//! The connection driver's transport seam: one type with read, write and close, and one
//! deadline rule (a timer around the whole operation, never a per-syscall timeout that any
//! progress renews), whichever socket path carries the bytes — glommio's sockets or the shard's
//! own ring (SOCKET_IO) — and whether or not TLS sits on top. TLS is implemented once, here, on
//! the two paths' raw receive and send (`super::tls_session`): it decrypts from the bytes the
//! socket received and encrypts all the answers of one write into one send.

use std::io;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::tls_session::TlsSession;

/// The raw byte carrier: glommio's socket, or one on the shard's ring.
pub(super) enum Wire {
    /// glommio's socket: a syscall per read and write.
    Glommio(TcpStream),
    /// On the shard's ring.
    Uring(super::uring::Handle),
}

impl Wire {
    /// One receive, without a deadline of its own (the caller's `within` bounds the whole
    /// operation it is part of). 0: the peer closed its side.
    pub(super) async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Glommio(stream) => stream.read(buf).await,
            Wire::Uring(handle) => handle.read(buf).await,
        }
    }

    /// Sends all of `data`, without a deadline of its own.
    pub(super) async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Wire::Glommio(stream) => stream.write_all(data).await,
            Wire::Uring(handle) => handle.write_all(data).await,
        }
    }
}

/// A connection's transport: the wire, and the TLS session on it when the listener is TLS.
pub(super) struct Socket {
    /// The raw socket.
    wire: Wire,
    /// The TLS session, once its handshake completed (boxed: it is large, and absent on
    /// plaintext listeners).
    tls: Option<Box<TlsSession>>,
}

impl Socket {
    /// A plaintext transport on `wire`.
    pub(super) fn plain(wire: Wire) -> Self {
        Socket { wire, tls: None }
    }

    /// A TLS transport on `wire`, whose handshake `session` completed on it.
    pub(super) fn tls(wire: Wire, session: Box<TlsSession>) -> Self {
        Socket {
            wire,
            tls: Some(session),
        }
    }

    /// Whether TLS is on this transport.
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// One read of (plaintext) bytes, failing with `TimedOut` once `timeout` has passed since
    /// the call. 0: the peer closed.
    pub(super) async fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        match &mut self.tls {
            None => within(timeout, self.wire.recv(buf)).await,
            Some(tls) => within(timeout, tls.read(&mut self.wire, buf)).await,
        }
    }

    /// Writes all of `data`, failing with `TimedOut` once `timeout` has passed since the call,
    /// however many bytes went out before: one deadline for the whole write. (glommio's own
    /// `set_write_timeout` bounds each wait for the socket to become writable, so a peer that
    /// takes a few bytes before each deadline would hold the write open for ever.) With TLS,
    /// `data` is encrypted into one send.
    pub(super) async fn write_all(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        match &mut self.tls {
            None => within(timeout, self.wire.send(data)).await,
            Some(tls) => within(timeout, tls.write_all(&mut self.wire, data)).await,
        }
    }

    /// Ends the connection. `orderly`: the peer is owed a clean end (with TLS, a close_notify
    /// alert, sent within `timeout`); otherwise the socket just closes. The socket itself is
    /// closed when the wire is dropped here (the ring's slot is released by its handle's
    /// `Drop`, glommio's socket by its own).
    pub(super) async fn close(mut self, orderly: bool, timeout: Duration) {
        if let (true, Some(tls)) = (orderly, &mut self.tls) {
            let _ = within(timeout, tls.close_notify(&mut self.wire)).await;
        }
        drop(self.wire);
    }
}

/// `io` bounded by `timeout` (`TimedOut` when it passes). Both paths are cancel-safe: the
/// ring's operations keep their bytes until the kernel is done with them, and glommio's socket
/// reads and writes are non-blocking syscalls issued when the socket is ready, so dropping `io`
/// at the deadline leaves nothing dangling (a write cut short ends the connection).
pub(super) async fn within<T>(
    timeout: Duration,
    io: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let expired = async {
        crate::timers::sleep(timeout).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    future::or(io, expired).await
}
