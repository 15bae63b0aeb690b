//! End-to-end tests of the `http` connector (issue 11 item 7 subset) against an HTTP server in
//! the test: messages POSTed in order, byte for byte, with the HL7 media type, an
//! Idempotency-Key of shard:sequence and a header whose value comes from an environment
//! variable; 4xx → dead letter, 5xx → retried; the server down for several seconds → everything
//! delivered once, in order, when it is up.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{adt, Client, Server};

/// One request the test server received.
#[derive(Clone, Debug)]
struct Request {
    /// Request line.
    line: String,
    /// Headers, names lowercased.
    headers: BTreeMap<String, String>,
    /// The body.
    body: Vec<u8>,
}

/// An HTTP server answering each POST by the body's MSH-10 (`answer(control id, times seen
/// before)` gives the status).
struct HttpPeer {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpPeer {
    fn start_on(listener: TcpListener, answer: fn(&str, usize) -> u16) -> HttpPeer {
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log, answer));
            }
        });
        HttpPeer { address, requests }
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.bodies().iter().map(|b| control_id(b)).collect()
    }
}

fn control_id(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    text.split('|').nth(9).unwrap_or_default().to_owned()
}

/// Serves keep-alive requests on one connection.
fn serve(mut stream: TcpStream, log: &Mutex<Vec<Request>>, answer: fn(&str, usize) -> u16) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap_or_default().to_owned();
            let headers: BTreeMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + length {
                let body = pending[end + 4..end + 4 + length].to_vec();
                pending.drain(..end + 4 + length);
                let id = control_id(&body);
                let seen = {
                    let mut log = log.lock().unwrap();
                    let seen = log.iter().filter(|r| control_id(&r.body) == id).count();
                    log.push(Request {
                        line,
                        headers,
                        body,
                    });
                    seen
                };
                let status = answer(&id, seen);
                let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

fn config(dir: &Path, address: SocketAddr) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: api\n    type: http\n    url: http://{address}/hl7\n\
         \x20   headers: {{Authorization: LAB_TOKEN}}\n\
         retry: {{initial_backoff: 100ms, max_backoff: 1s, max_attempts: 1000}}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(data: &Path, config: &Path) -> Server {
    Server::start(&[
        ("DATA_DIR", data.to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("SHARDS", "1"),
        ("LAB_TOKEN", "Bearer s3cret"),
    ])
}

fn send_all(server: &Server, payloads: &[Vec<u8>]) {
    let mut client = Client::connect(server.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut frames = Vec::new();
    for payload in payloads {
        frames.extend_from_slice(&common::frame(payload));
    }
    client.send(&frames);
    for _ in payloads {
        assert!(matches!(client.read_ack().code().as_str(), "AA" | "CA"));
    }
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn messages_are_posted_in_order_byte_for_byte_with_their_headers() {
    let peer = HttpPeer::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), |_, _| 200);
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &config(dir.path(), peer.address));
    let mut payloads: Vec<Vec<u8>> = ["oru_r01_1k", "custom_delims_hash", "iso8859_v25"]
        .iter()
        .map(|name| std::fs::read(format!("tests/data/{name}.hl7")).unwrap())
        .collect();
    payloads.extend((0..200).map(|i| adt(&format!("HTTP{i:04}"))));
    send_all(&server, &payloads);
    wait_for(|| peer.bodies().len() >= payloads.len());
    assert!(peer.bodies() == payloads, "out of order or altered");
    let requests = peer.requests.lock().unwrap().clone();
    let instance = std::fs::read_to_string(dir.path().join("data/connectors/instance"))
        .expect("instance id")
        .trim()
        .to_owned();
    assert_eq!(instance.len(), 16, "{instance}");
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.line, "POST /hl7 HTTP/1.1");
        let header = |name: &str| request.headers.get(name).cloned().unwrap_or_default();
        assert_eq!(header("content-type"), "x-application/hl7-v2+er7");
        assert_eq!(
            header("idempotency-key"),
            format!("{instance}:0:{}", i + 1),
            "INSTANCE:SHARD:SEQUENCE"
        );
        assert_eq!(header("authorization"), "Bearer s3cret");
    }
    let logs = server.logs().join("\n");
    assert!(!logs.contains("s3cret"), "a header value was logged");
}

#[test]
fn a_4xx_is_a_dead_letter_a_5xx_is_retried_and_order_holds() {
    let peer = HttpPeer::start_on(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        |id, seen| match (id, seen) {
            ("POISON", _) => 422,
            ("FLAKY", 0 | 1) => 503,
            _ => 200,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &config(dir.path(), peer.address));
    let ids = ["A", "POISON", "B", "FLAKY", "C"];
    send_all(&server, &ids.iter().map(|id| adt(id)).collect::<Vec<_>>());
    wait_for(|| peer.ids().contains(&"C".to_owned()));
    assert_eq!(
        peer.ids(),
        ["A", "POISON", "B", "FLAKY", "FLAKY", "FLAKY", "C"]
    );
    server.wait_log(
        &["message stored as a dead letter", "connector=api"],
        Duration::from_secs(5),
    );
    let letters = mllpd::route::dead_letter::list(&data.join("connectors/api")).unwrap();
    assert_eq!(letters.len(), 1);
    let (fields, payload) = mllpd::route::dead_letter::read(&letters[0]).unwrap();
    assert_eq!(payload, adt("POISON"));
    assert!(fields.contains(&(
        "reason".to_owned(),
        "downstream answered HTTP 422".to_owned()
    )));
}

#[test]
fn a_server_down_for_seconds_gets_everything_once_in_order_when_it_is_up() {
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &config(dir.path(), address));
    let payloads: Vec<Vec<u8>> = (0..30).map(|i| adt(&format!("DOWN{i:03}"))).collect();
    send_all(&server, &payloads);
    server.wait_log(
        &[
            "delivery failed; will retry",
            "connector=api",
            "cannot POST",
        ],
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(3));
    let peer = HttpPeer::start_on(TcpListener::bind(address).unwrap(), |_, _| 200);
    wait_for(|| peer.bodies().len() >= payloads.len());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        peer.bodies() == payloads,
        "{} received",
        peer.bodies().len()
    );
}

/// Issue 10: a message that came over mutual TLS is POSTed with its client's verified CN and
/// SANs as headers; one that came in plaintext carries neither header.
#[test]
fn a_tls_clients_verified_identity_is_sent_as_headers() {
    let peer = HttpPeer::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), |_, _| 200);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), peer.address);
    let pki = common::tls::Pki::new();
    let tls_data = dir.path().join("tls-data");
    let tls_server = common::tls::start(
        &pki,
        &tls_data,
        &[
            ("CONFIG_FILE", config.to_str().unwrap()),
            ("SHARDS", "1"),
            ("LAB_TOKEN", "Bearer s3cret"),
        ],
    );
    let mut client = common::tls::connect(&tls_server, &pki, Some("good")).unwrap();
    assert_eq!(
        common::tls::exchange(&mut client, "TLS1").as_deref(),
        Some("AA")
    );
    let plain = start(&dir.path().join("plain-data"), &config);
    send_all(&plain, &[adt("PLAIN1")]);
    wait_for(|| peer.bodies().len() >= 2);
    let requests = peer.requests.lock().unwrap().clone();
    let by_id = |id: &str| {
        let request = requests.iter().find(|r| control_id(&r.body) == id);
        request.unwrap_or_else(|| panic!("{id} not posted")).clone()
    };
    let tls = by_id("TLS1");
    assert_eq!(
        tls.headers.get("x-mllp-client-cn").map(String::as_str),
        Some("lab-system")
    );
    assert_eq!(
        tls.headers.get("x-mllp-client-sans").map(String::as_str),
        Some("lab.example")
    );
    let plain = by_id("PLAIN1");
    assert!(!plain.headers.contains_key("x-mllp-client-cn"), "{plain:?}");
    assert!(
        !plain.headers.contains_key("x-mllp-client-sans"),
        "{plain:?}"
    );
}
