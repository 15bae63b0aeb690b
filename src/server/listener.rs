//! The listening socket of a shard: SO_REUSEPORT so every shard binds the same address and the
//! kernel spreads connections across them; TCP keepalive and TCP_NODELAY set on the listener so
//! every accepted socket inherits them (Linux copies both into the accepted socket) without a
//! setsockopt per connection.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

/// Accept backlog per shard. The kernel caps it at `net.core.somaxconn` (4096 by default); a
/// burst of reconnecting senders after a failover should queue, not be refused.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Probes sent before a silent peer is declared dead, and their interval: with the default
/// KEEP_ALIVE_PERIOD of 60 s a vanished peer is found within about 60 + 3 × 10 s.
const KEEPALIVE_PROBES: u32 = 3;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A socket with the listener's options, bound to `addr` but not listening. Used by the main
/// thread to resolve port 0 and hold it while the shards bind the same port.
/// `keep_alive_period` `None` leaves keepalive off (KEEP_ALIVE_PERIOD `0`). `[::]` takes IPv4
/// too (dual-stack, whatever the sysctl `net.ipv6.bindv6only` says), as `:PORT` means.
pub fn bind(addr: SocketAddr, keep_alive_period: Option<Duration>) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.set_keepalive(keep_alive_period.is_some())?;
    if let Some(period) = keep_alive_period {
        let keepalive = TcpKeepalive::new()
            .with_time(period)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// A shard's listening socket: the glommio listener it accepts on, and a second descriptor of the
/// same socket with which the shard stops listening the moment it starts to drain.
pub struct Listener {
    pub accept: glommio::net::TcpListener,
    control: Socket,
}

impl Listener {
    /// Stops listening now: later connection attempts are refused (RST) and any still queued in
    /// the backlog are reset, so a load balancer or sender moves on to another instance instead
    /// of waiting on a socket nobody will accept from. Dropping the glommio listener is not
    /// enough: the accept glommio left submitted in io_uring holds the socket open, and it keeps
    /// completing handshakes until the ring is torn down, which the kernel does asynchronously
    /// even after the process has exited. `shutdown(SHUT_RD)` on a listening socket moves it to
    /// CLOSE at once and fails that pending accept.
    pub fn stop(&self) {
        // ENOTCONN can be reported on some kernels even though the socket did stop listening;
        // nothing else can fail on a valid listening socket.
        if let Err(e) = self.control.shutdown(std::net::Shutdown::Read) {
            tracing::debug!(error = %e, "listener shutdown");
        }
    }
}

/// A glommio listener for this shard on `addr` (a concrete port).
pub fn listen(addr: SocketAddr, keep_alive_period: Option<Duration>) -> std::io::Result<Listener> {
    let socket = bind(addr, keep_alive_period)?;
    socket.listen(LISTEN_BACKLOG)?;
    let control = socket.try_clone()?;
    Ok(Listener {
        accept: into_glommio(socket),
        control,
    })
}

#[allow(unsafe_code)]
fn into_glommio(socket: Socket) -> glommio::net::TcpListener {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`, so it is an open, bound, listening TCP
    // socket owned by nobody else; glommio takes ownership and closes it on drop. glommio has
    // no safe constructor from a configured socket, and its own `bind` cannot set keepalive.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd) }
}
