//! ACK_AFTER=delivery end to end (issue 11 item 5): the sender's ACK waits until every
//! `sync: true` connector confirmed the message. A scripted MLLP downstream answers AA, AR with
//! a reason, or never; the ACKs are compared byte for byte (MSH-7 and MSH-10 masked).
//!
//! - AA downstream → AA, and only once the downstream has the message;
//! - AR downstream → AR with the downstream's reason in MSA-3 and ERR-8;
//! - silent downstream → AE after `sync_timeout`, and the message is still delivered later;
//! - a message no sync connector's filter selects → AA at once, downstream silent or not;
//! - ACK_AFTER=delivery with no `sync: true` connector is refused by check-config and at start.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::peer::{Answer, Peer};
use common::{adt, expected_adt_ack, Client, Server};

/// The CONFIG_FILE: one sync `mllp` connector `lab` to `peer` with `extra` keys.
fn config(dir: &Path, peer: &Peer, extra: &str) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: lab\n    type: mllp\n    url: mllp://{}\n    sync: true\n\
         {extra}retry: {{initial_backoff: 100ms, max_backoff: 500ms, max_attempts: 1000}}\n",
        peer.address
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(dir: &Path, config: &Path) -> Server {
    Server::start(&[
        ("DATA_DIR", dir.join("data").to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("ACK_AFTER", "delivery"),
        ("SHARDS", "1"),
    ])
}

/// Sends `adt(id)` and reads its ACK: (masked ACK, how long it took).
fn send(server: &Server, id: &str) -> (String, Duration) {
    let mut client = Client::connect(server.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    client.send_message(&adt(id));
    let ack = client.read_ack();
    (ack.masked(), started.elapsed())
}

/// The ACK mllpd sends for `adt(id)` with MSA-1 `code` and text `text` (MSA-3 and ERR-8,
/// ERR-3 207), masked like [`common::Ack::masked`].
fn expected_error_ack(code: &str, id: &str, text: &str) -> String {
    let plain = expected_adt_ack(code, id);
    let head = plain.strip_suffix('\r').unwrap();
    format!("{head}|{text}\rERR|||207^Application internal error^HL70357|E||||{text}\r")
}

#[test]
fn an_aa_from_downstream_is_an_aa_sent_only_once_the_downstream_has_the_message() {
    let peer = Peer::start(|_, _| Answer::Code("AA", ""), Duration::from_millis(700));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config(dir.path(), &peer, ""));
    for id in ["SYNC1", "SYNC2"] {
        let (ack, took) = send(&server, id);
        assert_eq!(ack, expected_adt_ack("AA", id));
        assert!(
            peer.received().contains(&id.to_owned()),
            "ACK before delivery"
        );
        assert!(
            took >= Duration::from_millis(600),
            "did not wait for the downstream: {took:?}"
        );
    }
}

#[test]
fn an_ar_from_downstream_is_an_ar_with_the_downstream_reason() {
    let peer = Peer::start(
        |id, _| match id {
            "BAD" => Answer::Code("AR", "PID-3 missing"),
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &config(dir.path(), &peer, ""));
    let (ack, _) = send(&server, "BAD");
    assert_eq!(
        ack,
        expected_error_ack(
            "AR",
            "BAD",
            "connector lab: downstream answered AR: PID-3 missing"
        )
    );
    let (ack, _) = send(&server, "GOOD");
    assert_eq!(ack, expected_adt_ack("AA", "GOOD"));
    // The rejected message is a dead letter, as without ACK_AFTER=delivery.
    let letters = mllpd::route::dead_letter::list(&dir.path().join("data/connectors/lab")).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
}

#[test]
fn a_silent_downstream_is_an_ae_after_the_sync_timeout_and_delivery_goes_on() {
    // Silent the first time it sees a message, then AA.
    let peer = Peer::start(
        |_, seen| match seen {
            0 => Answer::Silence,
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &config(dir.path(), &peer, "    sync_timeout: 2s\n"),
    );
    let (ack, took) = send(&server, "SLOW");
    assert_eq!(
        ack,
        expected_error_ack(
            "AE",
            "SLOW",
            "message stored, not yet confirmed by its destination; retry later"
        )
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(20)).contains(&took),
        "{took:?}"
    );
    assert_eq!(peer.received(), ["SLOW"]);
    // The connector's own response timeout (30 s) then a retry delivers it; not waited for here:
    // the server is alive and answers the next message by its own fate.
    assert!(server.logs().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn a_message_no_sync_connector_selects_is_answered_at_once() {
    // The downstream never answers anything: only an unselected message can be AA'd.
    let peer = Peer::start(|_, _| Answer::Silence, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let extra = "    sync_timeout: 5s\n    filter: 'msh.msg_type == \"ORU\"'\n";
    let server = start(dir.path(), &config(dir.path(), &peer, extra));
    let (ack, took) = send(&server, "ADTONLY");
    assert_eq!(ack, expected_adt_ack("AA", "ADTONLY"));
    assert!(
        took < Duration::from_secs(4),
        "waited for the downstream: {took:?}"
    );
    assert!(peer.received().is_empty());
}

/// `mllpd check-config` with `yaml` and ACK_AFTER=delivery: (exit code, stderr).
fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mllpd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .arg("check-config")
        .env("CONFIG_FILE", &path)
        .env("ACK_AFTER", "delivery")
        .env("DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn delivery_without_a_sync_connector_is_refused_by_check_config_and_at_start() {
    let plain = "connectors:\n  - {name: lab, type: file, url: 'file:///tmp/x'}\n";
    let (code, stderr) = check_config(plain);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("ACK_AFTER") && stderr.contains("sync: true"),
        "{stderr}"
    );
    let (code, stderr) = check_config(
        "connectors:\n  - {name: lab, type: file, url: 'file:///tmp/x', sync: true}\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mllpd.yaml");
    std::fs::write(&path, plain).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .env("CONFIG_FILE", &path)
        .env("ACK_AFTER", "delivery")
        .env("DATA_DIR", dir.path().join("data"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sync: true"), "{stderr}");
}
