//! Talking to a test server's admin endpoint: its address, `GET`, and reading `/metrics`.
//! The one copy for every test file (tests/common/mod.rs re-exports it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{log_value, Server};

/// The admin endpoint's address, from the server's start-up log.
pub fn admin_addr(server: &Server) -> SocketAddr {
    let line = server.wait_log(&["admin endpoint listening"], Duration::from_secs(10));
    log_value(&line, "admin")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in: {line}"))
}

/// GET `path`: (status, body); panics when nothing answers.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path).unwrap_or_else(|| panic!("no HTTP answer from {addr}{path}"))
}

/// GET `path` from an HTTP server (the admin endpoint): (status, body); `None` when nothing
/// answers (refused, reset, or no status line).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `GET /metrics`: the body (asserts 200).
pub fn metrics(addr: SocketAddr) -> String {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

/// The sum (over shards) of the samples of `name` whose labels include every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// [`sample`] of a counter or gauge that holds a whole number (asserts it does).
pub fn count(text: &str, name: &str, labels: &[&str]) -> u64 {
    let value = sample(text, name, labels);
    assert!(
        value >= 0.0 && value.fract() == 0.0,
        "{name}{labels:?} = {value}, not a count"
    );
    value as u64
}

/// Polls `/metrics` until `done` holds (figures the heartbeat publishes lag by up to 0.5 s);
/// panics with `what` and the last scrape after 30 s (a busy 2-core machine).
pub fn metrics_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(addr);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}; metrics:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
