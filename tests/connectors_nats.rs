//! End-to-end tests of the `nats` connector (issue 11 items 2 and 7) against a real
//! nats-server with JetStream, started by the test in a temporary directory: a corpus published
//! in order and byte for byte, on the templated subject, each with its `Nats-Msg-Id`; the server
//! stopped for seconds → everything in the stream once, in order, when it is back; SIGKILL of
//! mllpd mid-delivery → nothing lost, nothing twice (the stream drops re-sends by Nats-Msg-Id);
//! a message the stream refuses → dead letter, replayed after the fix; an unreachable server and
//! a server without JetStream (the stream missing and not creatable) → a clear log line,
//! retries, nothing skipped.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/downstream.rs"]
mod downstream;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{adt, Server};
use downstream::{
    check_config, control_id, corpus, dlq, free_port, require_nats, runtime, send_all,
    stream_count, stream_messages, wait_until, Nats, Stored,
};

/// The stream the connector writes.
const STREAM: &str = "HL7TEST";

/// A CONFIG_FILE with one `nats` connector `js` to `url` and `stream`.
fn config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: js\n    type: nats\n    url: {url}\n    stream: {STREAM}\n\
         \x20   subject: 'hl7.{{msh.sending_fac}}.{{msh.msg_type}}'\n\
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
    ])
}

fn stored(nats: &Nats) -> Vec<Stored> {
    stream_messages(&[nats.url()], STREAM)
}

/// Waits (60 s at most) until the stream holds `count` messages; returns their payloads.
fn wait_stored(nats: &Nats, count: usize) -> Vec<Vec<u8>> {
    wait_until(Duration::from_secs(60), || {
        stream_count(&[nats.url()], STREAM) >= count as u64
    });
    stored(nats).into_iter().map(|m| m.payload).collect()
}

#[test]
fn a_corpus_is_published_in_order_byte_for_byte_with_subject_and_msg_id() {
    if !require_nats() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), true);
    let data = dir.path().join("data");
    let server = start(&data, &config(dir.path(), &nats.url()));
    let accepted = send_all(&server, &corpus(200, "JS"));
    assert!(accepted.len() > 200, "most of the corpus is accepted");
    let payloads = wait_stored(&nats, accepted.len());
    assert_eq!(payloads.len(), accepted.len());
    assert!(payloads == accepted, "published out of order or altered");
    let instance = std::fs::read_to_string(data.join("connectors/instance")).unwrap();
    let messages = stored(&nats);
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(message.msg_id, format!("{}:0:{}", instance.trim(), i + 1));
    }
    let adt = messages
        .iter()
        .find(|m| control_id(&m.payload) == "JS00007")
        .unwrap();
    assert_eq!(adt.subject, "hl7.SENDFAC.ADT");
    for message in &messages {
        let tokens: Vec<&str> = message.subject.split('.').collect();
        assert_eq!(tokens.len(), 3, "{}", message.subject);
        assert!(
            tokens
                .iter()
                .all(|t| !t.is_empty() && !t.contains(['*', '>', ' '])),
            "{}",
            message.subject
        );
    }
    server.wait_log(
        &["JetStream stream created", STREAM],
        Duration::from_secs(5),
    );
}

#[test]
fn a_server_down_for_seconds_gets_everything_once_in_order_when_it_is_back() {
    if !require_nats() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&dir.path().join("nats"), true);
    let server = start(&dir.path().join("data"), &config(dir.path(), &nats.url()));
    let first: Vec<Vec<u8>> = (0..10).map(|i| adt(&format!("UP{i:03}"))).collect();
    assert_eq!(send_all(&server, &first).len(), 10);
    assert_eq!(wait_stored(&nats, 10).len(), 10);
    nats.stop();
    let second: Vec<Vec<u8>> = (0..40).map(|i| adt(&format!("DOWN{i:03}"))).collect();
    assert_eq!(send_all(&server, &second).len(), 40, "intake goes on");
    server.wait_log(
        &["delivery failed; will retry", "connector=js"],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(3));
    nats.resume();
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    wait_stored(&nats, all.len());
    std::thread::sleep(Duration::from_secs(1));
    let payloads: Vec<Vec<u8>> = stored(&nats).into_iter().map(|m| m.payload).collect();
    assert!(
        payloads == all,
        "{} in the stream, out of order, lost or duplicated",
        payloads.len()
    );
}

#[test]
fn a_sigkill_during_delivery_loses_nothing_and_the_stream_holds_each_once() {
    if !require_nats() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), true);
    let data = dir.path().join("data");
    let config = config(dir.path(), &nats.url());
    let server = start(&data, &config);
    let sent: Vec<Vec<u8>> = (0..3000).map(|i| adt(&format!("KILL{i:05}"))).collect();
    let accepted = send_all(&server, &sent);
    assert_eq!(accepted.len(), sent.len());
    let cursor_file = data.join("connectors/js/shard-0.cursor");
    wait_until(Duration::from_secs(60), || {
        cursor_file.exists() && stream_count(&[nats.url()], STREAM) >= 100
    });
    server.signal("KILL");
    drop(server);
    let at_kill = stored(&nats).len();
    assert_eq!(
        std::fs::read(&cursor_file).unwrap().len(),
        20,
        "the cursor was written"
    );
    assert!(
        (100..sent.len()).contains(&at_kill),
        "delivery was not caught mid-way ({at_kill} published)"
    );
    eprintln!("killed with {at_kill} delivered");
    let server = start(&data, &config);
    server.wait_log(&["connected to NATS"], Duration::from_secs(20));
    wait_stored(&nats, accepted.len());
    std::thread::sleep(Duration::from_secs(1));
    let messages = stored(&nats);
    let ids: BTreeSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id twice");
    let payloads: Vec<Vec<u8>> = messages.into_iter().map(|m| m.payload).collect();
    assert_eq!(payloads.len(), accepted.len(), "lost or duplicated");
    assert!(payloads == accepted, "lost, reordered or duplicated");
    drop(server);
}

/// Sets the test stream's largest message (`-1`: unlimited), creating it if needed.
fn set_max_message_size(nats: &Nats, bytes: i32) {
    // JetStream may still be starting: try for a while.
    let done = wait_until(Duration::from_secs(20), || {
        try_max_message_size(nats, bytes).is_ok()
    });
    assert!(done, "cannot set the stream's max_msg_size");
}

fn try_max_message_size(nats: &Nats, bytes: i32) -> Result<(), String> {
    runtime().block_on(async {
        let client = async_nats::connect(nats.url())
            .await
            .map_err(|e| e.to_string())?;
        let jetstream = async_nats::jetstream::new(client);
        let config = async_nats::jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["hl7.*.*".to_owned()],
            max_message_size: bytes,
            num_replicas: 1,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        };
        if jetstream.get_stream(STREAM).await.is_ok() {
            jetstream
                .update_stream(config)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            jetstream
                .create_stream(config)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[test]
fn a_message_the_stream_refuses_is_a_dead_letter_and_is_published_after_the_fix_and_a_replay() {
    if !require_nats() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), true);
    // The operator made the stream with a 2 000-byte limit.
    set_max_message_size(&nats, 2000);
    let data = dir.path().join("data");
    let server = start(&data, &config(dir.path(), &nats.url()));
    let mut poison = adt("POISON");
    poison.extend_from_slice(format!("NTE|1||{}\r", "x".repeat(3000)).as_bytes());
    let sent = vec![adt("A"), poison.clone(), adt("B")];
    assert_eq!(send_all(&server, &sent).len(), 3);
    server.wait_log(
        &["message stored as a dead letter", "connector=js", "seq=2"],
        Duration::from_secs(20),
    );
    assert!(
        wait_stored(&nats, 2) == [adt("A"), adt("B")],
        "B is not held up by the poison"
    );
    let (code, listed) = dlq(&data, "js", &["list"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains("1 dead letter(s)"), "{listed}");
    assert!(
        listed.contains("the stream refused the message"),
        "{listed}"
    );
    set_max_message_size(&nats, -1);
    let (code, out) = dlq(&data, "js", &["replay", "--all"]);
    assert_eq!(code, 0, "{out}");
    server.wait_log(
        &["dead letter replayed", "connector=js", "seq=2"],
        Duration::from_secs(20),
    );
    assert!(
        wait_stored(&nats, 3) == [adt("A"), adt("B"), poison],
        "replayed after the fix"
    );
}

#[test]
fn an_unreachable_server_and_a_stream_that_cannot_be_created_are_logged_and_retried() {
    if !require_nats() {
        return;
    }
    // Unreachable: nothing listens there.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let server = start(&dir.path().join("data"), &config(dir.path(), &url));
    assert_eq!(send_all(&server, &[adt("U1")]).len(), 1);
    let line = server.wait_log(
        &["delivery failed; will retry", "connector=js"],
        Duration::from_secs(30),
    );
    assert!(line.contains("cannot connect to NATS"), "{line}");
    drop(server);

    // A server without JetStream: the stream is missing and cannot be created.
    let dir = tempfile::tempdir().unwrap();
    let mut plain = Nats::start(&dir.path().join("nats"), false);
    let data = dir.path().join("data");
    let config = config(dir.path(), &plain.url());
    let server = start(&data, &config);
    let ids: Vec<Vec<u8>> = (0..5).map(|i| adt(&format!("NOJS{i}"))).collect();
    assert_eq!(send_all(&server, &ids).len(), 5);
    let line = server.wait_log(
        &["delivery failed; will retry", "connector=js", "stream"],
        Duration::from_secs(60),
    );
    assert!(line.contains("JetStream not enabled"), "{line}");
    let (_, listed) = dlq(&data, "js", &["list"]);
    assert!(listed.contains("0 dead letter(s)"), "{listed}");
    // With JetStream on (same port), everything is published: nothing was skipped.
    plain.stop();
    let js = Nats::start_on(&dir.path().join("nats"), plain.port, true);
    assert!(
        wait_stored(&js, 5) == ids,
        "not all published once JetStream is on"
    );
    drop(server);
}

#[test]
fn check_config_refuses_bad_nats_connectors_naming_connector_and_key() {
    let good = "connectors:\n  - {name: js, type: nats, url: ['nats://a:4222', 'nats://b:4222'], replicas: 3}\n";
    let (code, stderr) = check_config(good);
    assert_eq!(code, 0, "{stderr}");
    let cases = [
        (
            "- {name: js, type: nats, url: 'nats://a:4222', subject: 'hl7.{msh.sending_facility}'}",
            "connector \"js\": subject: ",
        ),
        (
            "- {name: js, type: nats, url: 'nats://a:4222', subject: 'hl7.>'}",
            "connector \"js\": subject: ",
        ),
        (
            "- {name: js, type: nats, url: 'nats://a:4222', stream: 'a.b'}",
            "connector \"js\": stream: ",
        ),
        (
            "- {name: js, type: nats, url: 'nats://a:4222', replicas: 0}",
            "connector \"js\": replicas: ",
        ),
        (
            "- {name: js, type: nats, url: 'nats//a:4222'}",
            "connector \"js\": url: ",
        ),
        (
            "- {name: js, type: nats, url: 'nats://a:4222', streams: x}",
            "connector \"js\": streams: unknown key",
        ),
    ];
    for (connectors, expected) in cases {
        let (code, stderr) = check_config(&format!("connectors:\n  {connectors}\n"));
        assert_ne!(code, 0, "{connectors}");
        assert!(stderr.contains(expected), "{connectors}: {stderr}");
    }
}
