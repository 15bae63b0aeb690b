//! End-to-end tests of the `mllp` connector (issue 11 item 7 subset): a second mllpd is the
//! downstream (its journal, read with `journal export`, shows what it accepted), plus a scripted
//! MLLP peer for the answers mllpd itself would not give (AR, AE, a wrong MSA-2).
//!
//! - a corpus delivered in order, byte for byte;
//! - the downstream down for several seconds (connection refused: the unreachable-host case)
//!   → a clear log line, then everything delivered once, in order, once it is up;
//! - SIGKILL of the upstream during delivery → after the restart nothing is lost, and with the
//!   downstream's DEDUP_WINDOW on nothing is stored twice (the unconfirmed tail is re-sent, the
//!   downstream recognises it);
//! - AR → dead letter (stored with reason and attempts), the next messages go on; AE and an ACK
//!   for another message → retried.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::peer::{Answer, Peer};
use common::{adt, Client, Server};

/// Writes a CONFIG_FILE with one `mllp` connector named `lab` to `address`.
fn config(dir: &Path, address: SocketAddr) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: lab\n    type: mllp\n    url: mllp://{address}\n\
         retry: {{initial_backoff: 100ms, max_backoff: 1s, max_attempts: 1000}}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start_upstream(data_dir: &Path, config: &Path) -> Server {
    Server::start(&[
        ("DATA_DIR", data_dir.to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("SHARDS", "1"),
    ])
}

fn start_downstream(data_dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("DATA_DIR", data_dir.to_str().unwrap()), ("SHARDS", "1")];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// Sends every payload on one connection (pipelined); all must be accepted.
fn send_all(server: &Server, payloads: &[Vec<u8>]) {
    let mut client = Client::connect(server.addr);
    // Thousands of pipelined messages on a busy 2-core machine: ACKs may take a while.
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

/// What the downstream has journaled, in journal order.
fn received(data_dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if mllpd::journal::export::export(data_dir, None, 0, &mut out).is_err() {
        return Vec::new();
    }
    out.split(|&b| b == 0x0B)
        .skip(1)
        .map(|frame| frame[..frame.len() - 2].to_vec())
        .collect()
}

/// Waits until the downstream journaled `count` messages (60 s at most).
fn wait_received(data_dir: &Path, count: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = received(data_dir);
        if got.len() >= count || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An address nothing listens on yet (bound then released; the test starts its server there).
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_corpus_is_delivered_in_order_byte_for_byte_into_a_second_mllpd() {
    let dir = tempfile::tempdir().unwrap();
    let downstream_data = dir.path().join("downstream");
    let downstream = start_downstream(&downstream_data, &[]);
    let config = config(dir.path(), downstream.addr);
    let upstream = start_upstream(&dir.path().join("upstream"), &config);
    let mut payloads: Vec<Vec<u8>> = [
        "adt_a01_v23",
        "oru_r01_1k",
        "custom_delims_hash",
        "iso8859_v25",
        "oru_r01_v24_lf",
        "utf8_names_v251",
        "zsegments_v24",
    ]
    .iter()
    .map(|name| std::fs::read(format!("tests/data/{name}.hl7")).unwrap())
    .collect();
    payloads.extend((0..300).map(|i| adt(&format!("CORPUS{i:04}"))));
    send_all(&upstream, &payloads);
    let got = wait_received(&downstream_data, payloads.len());
    assert_eq!(got.len(), payloads.len());
    assert!(got == payloads, "delivered out of order or altered");
}

#[test]
fn an_unreachable_downstream_is_retried_and_everything_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let config = config(dir.path(), address);
    let upstream = start_upstream(&dir.path().join("upstream"), &config);
    let payloads: Vec<Vec<u8>> = (0..40).map(|i| adt(&format!("OUTAGE{i:03}"))).collect();
    send_all(&upstream, &payloads);
    let line = upstream.wait_log(
        &[
            "delivery failed; will retry",
            "connector=lab",
            "cannot connect",
        ],
        Duration::from_secs(10),
    );
    assert!(line.contains(&address.to_string()), "{line}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(upstream.child.id() > 0);
    let downstream_data = dir.path().join("downstream");
    let address_text = address.to_string();
    let downstream = start_downstream(&downstream_data, &[("LISTEN_ADDR", &address_text)]);
    let got = wait_received(&downstream_data, payloads.len());
    std::thread::sleep(Duration::from_millis(500));
    let got_later = received(&downstream_data);
    assert!(
        got == payloads,
        "{} received, out of order or altered",
        got.len()
    );
    assert_eq!(got_later.len(), payloads.len(), "nothing delivered twice");
    upstream.wait_log(&["delivered after retries"], Duration::from_secs(5));
    drop(downstream);
}

#[test]
fn a_sigkill_during_delivery_loses_nothing_and_a_deduplicating_downstream_stores_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let downstream_data = dir.path().join("downstream");
    let downstream = start_downstream(
        &downstream_data,
        &[("DEDUP_WINDOW", "1h"), ("ACK_AFTER", "journal")],
    );
    let config = config(dir.path(), downstream.addr);
    let upstream_data = dir.path().join("upstream");
    let upstream = start_upstream(&upstream_data, &config);
    let payloads: Vec<Vec<u8>> = (0..2000).map(|i| adt(&format!("KILL{i:05}"))).collect();
    send_all(&upstream, &payloads);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received(&downstream_data).len() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    upstream.signal("KILL");
    drop(upstream);
    let at_kill = received(&downstream_data).len();
    assert!(
        (100..payloads.len()).contains(&at_kill),
        "delivery was not caught mid-way ({at_kill} of {})",
        payloads.len()
    );
    let upstream = start_upstream(&upstream_data, &config);
    let got = wait_received(&downstream_data, payloads.len());
    std::thread::sleep(Duration::from_millis(500));
    let got = received(&downstream_data).len().max(got.len());
    assert_eq!(got, payloads.len(), "lost or stored twice");
    assert!(
        received(&downstream_data) == payloads,
        "out of order or altered"
    );
    drop(upstream);
}

#[test]
fn ar_is_a_dead_letter_ae_and_a_wrong_msa2_are_retried_and_order_holds() {
    let peer = Peer::start(
        |id, seen| match (id, seen) {
            ("POISON", _) => Answer::Code("AR", ""),
            ("FLAKY", 0) => Answer::Code("AE", ""),
            ("ASKEW", 0) => Answer::Misdirected("AA", "SOMETHING-ELSE"),
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), peer.address);
    let data = dir.path().join("upstream");
    let upstream = start_upstream(&data, &config);
    let ids = ["A", "POISON", "B", "FLAKY", "C", "ASKEW", "D"];
    let payloads: Vec<Vec<u8>> = ids.iter().map(|id| adt(id)).collect();
    send_all(&upstream, &payloads);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !peer.received().contains(&"D".to_owned()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        peer.received(),
        ["A", "POISON", "B", "FLAKY", "FLAKY", "C", "ASKEW", "ASKEW", "D"],
        "AR not retried, AE and a wrong MSA-2 retried, FIFO kept"
    );
    upstream.wait_log(
        &["message stored as a dead letter", "connector=lab"],
        Duration::from_secs(5),
    );
    let letters = mllpd::route::dead_letter::list(&data.join("connectors/lab")).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (fields, payload) = mllpd::route::dead_letter::read(&letters[0]).unwrap();
    assert_eq!(payload, adt("POISON"));
    assert!(fields.contains(&("reason".to_owned(), "downstream answered AR".to_owned())));
    assert!(fields.contains(&("attempts".to_owned(), "1".to_owned())));
    assert!(fields.contains(&("sequence".to_owned(), "2".to_owned())));
    let logs = upstream.logs().join("\n");
    assert!(!logs.contains("PID|"), "message content logged");
}

/// `mllpd dlq ARGS --connector lab --data-dir DATA`: (exit code, stdout).
fn dlq(data: &Path, args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .arg("dlq")
        .args(args)
        .args(["--connector", "lab", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() || !stderr.is_empty());
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned() + &stderr,
    )
}

#[test]
fn dead_letters_are_listed_shown_replayed_into_the_running_server_and_purged() {
    // The downstream refuses POISON once (then "fixed"), and GONE always.
    let peer = Peer::start(
        |id, seen| match (id, seen) {
            ("POISON", 0) | ("GONE", _) => Answer::Code("AR", ""),
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), peer.address);
    let data = dir.path().join("upstream");
    let upstream = start_upstream(&data, &config);
    let ids = ["A", "POISON", "GONE", "B"];
    send_all(&upstream, &ids.iter().map(|id| adt(id)).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !peer.received().contains(&"B".to_owned()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, listed) = dlq(&data, &["list"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains("2 dead letter(s)"), "{listed}");
    assert!(
        listed.contains("000-00000000000000000002 shard=\"0\" sequence=\"2\" attempts=\"1\""),
        "{listed}"
    );
    assert!(
        listed.contains("reason=\"downstream answered AR\""),
        "{listed}"
    );
    let (code, shown) = dlq(&data, &["show", "000-00000000000000000002"]);
    assert_eq!(code, 0);
    assert!(
        shown.contains(&String::from_utf8(adt("POISON")).unwrap()),
        "{shown}"
    );
    let (code, out) = dlq(&data, &["purge", "000-00000000000000000003"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = dlq(&data, &["replay", "--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 dead letter(s) handed back"), "{out}");
    upstream.wait_log(
        &["dead letter replayed", "connector=lab", "seq=2"],
        Duration::from_secs(10),
    );
    assert_eq!(peer.received(), ["A", "POISON", "GONE", "B", "POISON"]);
    let (_, listed) = dlq(&data, &["list"]);
    assert!(listed.contains("0 dead letter(s)"), "{listed}");
    let (code, out) = dlq(&data, &["replay", "nope"]);
    assert_ne!(code, 0);
    assert!(out.contains("no dead letter \"nope\""), "{out}");
}

/// A CONFIG_FILE with connector `lab` to `address` and the given retry / on_failure lines.
fn config_with(dir: &Path, address: SocketAddr, policy: &str) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml =
        format!("connectors:\n  - name: lab\n    type: mllp\n    url: mllp://{address}\n{policy}");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn max_attempts_of_ae_end_in_a_dead_letter_and_block_stalls_instead() {
    // AE for STUCK, always: retried max_attempts times, then a dead letter (default policy).
    let peer = Peer::start(
        |id, _| match id {
            "STUCK" => Answer::Code("AE", ""),
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = "retry: {initial_backoff: 50ms, max_backoff: 100ms, max_attempts: 3}\n";
    let config = config_with(dir.path(), peer.address, policy);
    let data = dir.path().join("dead-letter");
    let upstream = start_upstream(&data, &config);
    send_all(&upstream, &[adt("A"), adt("STUCK"), adt("B")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !peer.received().contains(&"B".to_owned()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(peer.received(), ["A", "STUCK", "STUCK", "STUCK", "B"]);
    let letters = mllpd::route::dead_letter::list(&data.join("connectors/lab")).unwrap();
    let (fields, _) = mllpd::route::dead_letter::read(&letters[0]).unwrap();
    assert!(
        fields.contains(&("attempts".to_owned(), "3".to_owned())),
        "{fields:?}"
    );
    assert!(fields.contains(&("reason".to_owned(), "downstream answered AE".to_owned())));
    drop(upstream);

    // The same with on_failure: block: STUCK is retried past max_attempts, B never overtakes.
    let peer = Peer::start(
        |id, _| match id {
            "STUCK" => Answer::Code("AR", ""),
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = format!("{policy}on_failure: block\n");
    let config = config_with(dir.path(), peer.address, &policy);
    let data = dir.path().join("block");
    let upstream = start_upstream(&data, &config);
    send_all(&upstream, &[adt("A"), adt("STUCK"), adt("B")]);
    std::thread::sleep(Duration::from_secs(3));
    let received = peer.received();
    assert!(!received.contains(&"B".to_owned()), "{received:?}");
    let tries = received.iter().filter(|id| *id == "STUCK").count();
    assert!(
        tries > 3,
        "blocked, still retrying past max_attempts: {received:?}"
    );
    assert!(
        mllpd::route::dead_letter::list(&data.join("connectors/lab"))
            .unwrap()
            .is_empty()
    );
    upstream.wait_log(
        &["delivery failed; will retry", "blocked=true"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_silent_downstream_does_not_hold_shutdown_and_its_message_is_sent_again() {
    // Takes connections and bytes, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let got_bytes = Arc::new(Mutex::new(0usize));
    let counter = got_bytes.clone();
    std::thread::spawn(move || {
        for stream in silent.incoming() {
            let Ok(mut stream) = stream else { break };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    *counter.lock().unwrap() += n;
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("upstream");
    let config = config(dir.path(), address);
    let mut upstream = Server::start(&[
        ("DATA_DIR", data.to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("SHARDS", "1"),
        ("PRE_SHUTDOWN_DELAY", "0s"),
    ]);
    send_all(&upstream, &[adt("SILENT")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while *got_bytes.lock().unwrap() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(*got_bytes.lock().unwrap() > 0, "the message was sent");
    let stopping = Instant::now();
    upstream.signal("TERM");
    assert_eq!(upstream.wait_exit(Duration::from_secs(25)), Some(0));
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "shutdown waited {took:?} for the ACK"
    );
    upstream.wait_log(
        &["delivery threads still in an attempt at shutdown"],
        Duration::from_secs(1),
    );
    drop(upstream);
    // Restarted against an answering downstream: the unconfirmed message goes again.
    let peer = Peer::start(|_, _| Answer::Code("AA", ""), Duration::ZERO);
    let answering = self::config(dir.path(), peer.address);
    let upstream = start_upstream(&data, &answering);
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer.received().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(peer.received(), ["SILENT"]);
    drop(upstream);
}

/// Issue 10 item 5: `mllps://` delivers over TLS with a client certificate (the client code of
/// `mllpd send --tls`) to a TLS mllpd requiring mTLS; the server name defaults to the URL's
/// host (127.0.0.1, a SAN of the server certificate), and the downstream journals the
/// upstream's verified identity with each message.
#[test]
fn mllps_delivers_with_a_client_certificate_into_a_tls_mllpd() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::tls::Pki::new();
    let downstream_data = dir.path().join("downstream");
    let downstream = common::tls::start(&pki, &downstream_data, &[("SHARDS", "1")]);
    let config = dir.path().join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: lab\n    type: mllp\n    url: mllps://{}\n\
         \x20   tls_ca: {}\n    tls_cert: {}\n    tls_key: {}\n\
         retry: {{initial_backoff: 100ms, max_backoff: 1s, max_attempts: 1000}}\n",
        downstream.addr,
        pki.p("ca.pem"),
        pki.p("good.pem"),
        pki.p("good.key"),
    );
    std::fs::write(&config, yaml).unwrap();
    let upstream = start_upstream(&dir.path().join("upstream"), &config);
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| adt(&format!("TLS{i:03}"))).collect();
    send_all(&upstream, &payloads);
    let got = wait_received(&downstream_data, payloads.len());
    assert!(
        got == payloads,
        "{} of {} delivered",
        got.len(),
        payloads.len()
    );
    let mut frames = Vec::new();
    let mut metadata = Vec::new();
    mllpd::journal::export::export_with_metadata(
        &downstream_data,
        None,
        0,
        &mut frames,
        Some(&mut metadata),
    )
    .unwrap();
    let metadata = String::from_utf8(metadata).unwrap();
    assert_eq!(metadata.lines().count(), payloads.len());
    assert!(
        metadata
            .lines()
            .all(|l| l.contains(r#""client_cn":"lab-system""#)),
        "{metadata}"
    );
}
