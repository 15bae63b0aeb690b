//! The admin endpoint (ADMIN_ADDR): `/metrics`, `/healthz` and `/readyz` over HTTP/1.1, served
//! by one thread of its own, never a shard's.
//!
//! A plain `std::net` server rather than hyper on a tokio runtime: three GET paths answered from
//! atomics need no async runtime, no connection reuse and no request bodies, and a few dozen
//! lines with hard bounds (one request per connection, `limits::ADMIN_REQUEST_BYTES_MAX` of
//! request head, `limits::ADMIN_IO_TIMEOUT` for the whole exchange, one connection at a time)
//! are easier to audit than a second runtime in the process. Every answer closes the
//! connection. What it reads are the shards' counters ([`crate::metrics`]); it takes no lock a
//! shard takes on its message path.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::limits::{ADMIN_IO_TIMEOUT, ADMIN_REQUEST_BYTES_MAX};
use crate::metrics::{self, Metrics};

/// Options of the admin endpoint.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// Where to listen (ADMIN_ADDR).
    pub addr: SocketAddr,
    /// A shard whose heartbeat is older than this fails `/healthz`.
    pub heartbeat_stale: Duration,
}

/// A bound admin endpoint, not yet serving.
#[derive(Debug)]
pub struct Admin {
    /// The listening socket.
    listener: TcpListener,
    /// Options.
    options: AdminOptions,
}

impl Admin {
    /// Binds ADMIN_ADDR (before the shards start, so a taken port refuses start-up).
    pub fn bind(options: AdminOptions) -> io::Result<Admin> {
        let listener = TcpListener::bind(options.addr)?;
        Ok(Admin { listener, options })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves on a thread of its own until the process exits.
    pub fn spawn(self, metrics: Arc<Metrics>) -> io::Result<()> {
        std::thread::Builder::new()
            .name("mllpd-admin".to_owned())
            .spawn(move || self.serve(&metrics))?;
        Ok(())
    }

    fn serve(self, metrics: &Arc<Metrics>) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(admin = %addr, "admin endpoint serving /metrics, /healthz, /readyz");
        }
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else {
                // EMFILE and the like: a short pause instead of a busy loop.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            if let Err(error) = self.answer(stream, metrics) {
                debug!(%error, "admin request failed");
            }
        }
    }

    /// Reads one request and writes its answer, within `ADMIN_IO_TIMEOUT` in all.
    fn answer(&self, mut stream: TcpStream, metrics: &Arc<Metrics>) -> io::Result<()> {
        let deadline = Instant::now() + ADMIN_IO_TIMEOUT;
        let head = read_head(&mut stream, deadline)?;
        let response = match parse_request_line(&head) {
            Some(("GET" | "HEAD", path)) => route(path, metrics, &self.options),
            Some(_) => Response::text(405, "method not allowed\n"),
            None => Response::text(400, "bad request\n"),
        };
        let head_only = head.starts_with(b"HEAD ");
        stream.set_write_timeout(Some(left(deadline)?))?;
        stream.write_all(&response.to_bytes(head_only))?;
        stream.flush()
    }
}

/// Time left before `deadline`, or `TimedOut`.
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// Reads up to the end of the request head (`\r\n\r\n`), at most `ADMIN_REQUEST_BYTES_MAX`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&chunk[..n]);
        if memchr::memmem::find(&head, b"\r\n\r\n").is_some() {
            return Ok(head);
        }
        if head.len() > ADMIN_REQUEST_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

/// The method and path (query string cut) of an HTTP/1.x request line.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = memchr::memchr(b'\r', head).unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

/// An answer: status, content type, body.
#[derive(Debug)]
struct Response {
    /// HTTP status code.
    status: u16,
    /// Content-Type.
    content_type: &'static str,
    /// The body.
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Service Unavailable",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The answer for `path`.
fn route(path: &str, metrics: &Arc<Metrics>, options: &AdminOptions) -> Response {
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: metrics::encode(metrics),
        },
        "/healthz" => {
            let stale_millis =
                u64::try_from(options.heartbeat_stale.as_millis()).unwrap_or(u64::MAX);
            let stale = metrics.stale_shards(metrics::unix_millis_now(), stale_millis);
            if stale.is_empty() {
                Response::text(200, "ok\n")
            } else {
                Response::text(
                    503,
                    format!(
                        "no heartbeat within {:?} from shard(s) {stale:?}\n",
                        options.heartbeat_stale
                    ),
                )
            }
        }
        "/readyz" => match metrics.not_ready() {
            None => Response::text(200, "ready\n"),
            Some(reason) => Response::text(503, format!("not ready: {reason}\n")),
        },
        _ => Response::text(404, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET / HTTP/2 x\r\n"), None);
        assert_eq!(parse_request_line(b"\xff\xfe"), None);
    }

    #[test]
    fn readyz_and_healthz_answer_from_the_counters() {
        let metrics = Metrics::new(1, || 0);
        let options = AdminOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            heartbeat_stale: Duration::from_secs(5),
        };
        assert_eq!(route("/readyz", &metrics, &options).status, 503);
        assert_eq!(route("/healthz", &metrics, &options).status, 503);
        metrics.shards[0].beat();
        metrics
            .readiness
            .serving
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(route("/readyz", &metrics, &options).status, 200);
        assert_eq!(route("/healthz", &metrics, &options).status, 200);
        assert_eq!(route("/nope", &metrics, &options).status, 404);
    }
}
