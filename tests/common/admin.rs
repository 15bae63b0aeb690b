//! Scraping a test server's admin endpoint (`/metrics`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{log_value, Server};

/// The admin endpoint's address, from the server's log.
pub fn admin_addr(server: &Server) -> SocketAddr {
    let line = server.wait_log(&["admin endpoint listening"], Duration::from_secs(10));
    log_value(&line, "admin")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in: {line}"))
}

/// `GET /metrics`: the body (asserts 200).
pub fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes until `done` holds (30 s at most; panics with `what` and the last scrape).
pub fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(addr);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}; metrics:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
