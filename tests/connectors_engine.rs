//! The delivery engine's own duties (issue 11 items 4 and 7, issue 12 item 2):
//!
//! - per-connector counters in `/metrics` move with what the workers do: delivered, retries,
//!   failures by reason, dead letters, lag (messages and seconds);
//! - bad input never crashes or skips: an unreachable host (mllp, http) and a full disk while
//!   writing a cursor (`MLLPD_FAULT_CURSOR_NOSPACE`) each get a clear log line and a metric,
//!   and every message still arrives, in order;
//! - a replayed dead letter is delivered after every message pending when it was handed back.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use common::admin::{admin_addr, metrics_until, sample};
use common::peer::{Answer, Peer};
use common::{adt, Client, Server};

fn start(data: &Path, yaml: &str, env: &[(&str, &str)]) -> Server {
    std::fs::create_dir_all(data).unwrap();
    let config = data.with_extension("yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut all = vec![
        ("DATA_DIR", data.to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("SHARDS", "1"),
    ];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// Sends every payload pipelined on one connection; all must be accepted.
fn send_all(server: &Server, ids: &[String]) {
    let mut client = Client::connect(server.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut frames = Vec::new();
    for id in ids {
        frames.extend_from_slice(&common::frame(&adt(id)));
    }
    client.send(&frames);
    for _ in ids {
        assert_eq!(client.read_ack().code(), "AA");
    }
}

/// An address nothing listens on.
fn unreachable() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The files a `file` connector wrote to `out`, in name (journal) order: their control ids.
fn delivered_files(out: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(out)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p: &std::path::PathBuf| {
        !p.file_name().unwrap().to_string_lossy().starts_with('.')
    });
    names.sort();
    names
        .iter()
        .map(|p| common::peer::control_id(&std::fs::read(p).unwrap()))
        .collect()
}

#[test]
fn connector_metrics_move_with_delivery_failures_dead_letters_and_lag() {
    let peer = Peer::start(
        |id, _| match id {
            "POISON" => Answer::Code("AR", "no"),
            _ => Answer::Code("AA", ""),
        },
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let yaml = format!(
        "connectors:\n\
         \x20 - {{name: archive, type: file, url: 'file://{}'}}\n\
         \x20 - {{name: lab, type: mllp, url: 'mllp://{}'}}\n\
         \x20 - {{name: gone, type: mllp, url: 'mllp://{}'}}\n\
         \x20 - {{name: web, type: http, url: 'http://{}/hl7'}}\n\
         retry: {{initial_backoff: 50ms, max_backoff: 200ms, max_attempts: 100000}}\n",
        out.display(),
        peer.address,
        unreachable(),
        unreachable()
    );
    let server = start(&dir.path().join("data"), &yaml, &[]);
    let admin = admin_addr(&server);
    let ids: Vec<String> = ["A", "POISON", "B", "C"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    send_all(&server, &ids);
    let text = metrics_until(admin, "counters did not move", |t| {
        sample(
            t,
            "mllpd_connector_delivered_total",
            &["connector=\"archive\""],
        ) == 4.0
            && sample(t, "mllpd_connector_delivered_total", &["connector=\"lab\""]) == 3.0
            && sample(
                t,
                "mllpd_connector_dead_letters_total",
                &["connector=\"lab\""],
            ) == 1.0
            && sample(t, "mllpd_connector_retries_total", &["connector=\"gone\""]) >= 3.0
            && sample(t, "mllpd_connector_retries_total", &["connector=\"web\""]) >= 3.0
            && sample(t, "mllpd_connector_lag_seconds", &["connector=\"gone\""]) > 0.2
    });
    for (name, labels, value) in [
        (
            "mllpd_connector_failures_total",
            &["connector=\"lab\"", "reason=\"rejected\""][..],
            1.0,
        ),
        (
            "mllpd_connector_retries_total",
            &["connector=\"lab\""][..],
            0.0,
        ),
        (
            "mllpd_connector_lag_messages",
            &["connector=\"archive\""][..],
            0.0,
        ),
        (
            "mllpd_connector_lag_messages",
            &["connector=\"gone\""][..],
            4.0,
        ),
        (
            "mllpd_connector_cursor_seq",
            &["connector=\"gone\""][..],
            0.0,
        ),
        (
            "mllpd_connector_lag_seconds",
            &["connector=\"lab\""][..],
            0.0,
        ),
        (
            "mllpd_connector_delivered_total",
            &["connector=\"gone\""][..],
            0.0,
        ),
        (
            "mllpd_connector_delivered_total",
            &["connector=\"web\""][..],
            0.0,
        ),
    ] {
        assert_eq!(
            sample(&text, name, labels),
            value,
            "{name}{labels:?}:\n{text}"
        );
    }
    // Unreachable hosts: counted as connect failures, logged clearly, the process alive.
    for connector in ["gone", "web"] {
        let connect = [
            format!("connector=\"{connector}\""),
            "reason=\"connect\"".to_owned(),
        ];
        let connect: Vec<&str> = connect.iter().map(String::as_str).collect();
        assert!(
            sample(&text, "mllpd_connector_failures_total", &connect) >= 3.0,
            "{text}"
        );
        server.wait_log(
            &[
                "delivery failed; will retry",
                &format!("connector={connector}"),
            ],
            Duration::from_secs(5),
        );
    }
    assert!(server.logs().join("\n").contains("Connection refused"));
    assert_eq!(delivered_files(&out), ids);
}

#[test]
fn a_full_disk_while_writing_a_cursor_is_logged_counted_and_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = dir.path().join("data");
    let yaml = format!(
        "connectors:\n  - {{name: archive, type: file, url: 'file://{}'}}\n",
        out.display()
    );
    let server = start(&data, &yaml, &[("MLLPD_FAULT_CURSOR_NOSPACE", "3")]);
    let admin = admin_addr(&server);
    let first: Vec<String> = (0..20).map(|i| format!("DISK{i:02}")).collect();
    send_all(&server, &first);
    server.wait_log(
        &["cannot write a connector cursor", "delivery goes on"],
        Duration::from_secs(10),
    );
    let more: Vec<String> = (20..40).map(|i| format!("DISK{i:02}")).collect();
    send_all(&server, &more);
    let text = metrics_until(admin, "cursor failures not counted or cursor stuck", |t| {
        sample(
            t,
            "mllpd_connector_failures_total",
            &["reason=\"cursor_write\""],
        ) == 3.0
            && sample(t, "mllpd_connector_cursor_seq", &["connector=\"archive\""]) == 40.0
    });
    assert_eq!(sample(&text, "mllpd_connector_delivered_total", &[]), 40.0);
    let all: Vec<String> = first.into_iter().chain(more).collect();
    assert_eq!(delivered_files(&out), all, "skipped or out of order");
    // Once the disk has room again the cursor file catches up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cursor = data.join("connectors/archive");
    while mllpd::route::cursor::load(&cursor, 0).unwrap() != 40 {
        assert!(
            Instant::now() < deadline,
            "the cursor file was never written again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mllpd dlq ARGS --connector lab --data-dir DATA` must succeed.
/// A trickle (one message at a time, each sent once the previous one was acknowledged) is
/// written by the `file` connector in gathered batches, not one batch (two disk flushes) per
/// message: `FILE_BATCH_GATHER` waits a few milliseconds for more before writing. 60 messages
/// at one every ~1 ms (a 5 ms window holds several) must take at most 20 batches; without the
/// window each message was its own batch (60).
#[test]
fn a_trickle_reaches_the_file_connector_in_gathered_batches() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = dir.path().join("data");
    let yaml = format!(
        "connectors:\n  - {{name: archive, type: file, url: 'file://{}'}}\n",
        out.display()
    );
    // Journal mode (the default): each message is flushed, and so made visible to delivery,
    // on its own before its ACK (receipt mode would group them by time already).
    let server = start(&data, &yaml, &[]);
    let admin = admin_addr(&server);
    let ids: Vec<String> = (0..60).map(|i| format!("TRKL{i:02}")).collect();
    let mut client = Client::connect(server.addr);
    for id in &ids {
        client.send(&common::frame(&adt(id)));
        assert_eq!(client.read_ack().code(), "AA");
        std::thread::sleep(Duration::from_millis(1));
    }
    let text = metrics_until(admin, "the trickle was not all delivered", |t| {
        sample(t, "mllpd_connector_delivered_total", &[]) == 60.0
    });
    let batches = sample(&text, "mllpd_connector_batches_total", &[]);
    assert!(
        (1.0..=20.0).contains(&batches),
        "60 messages took {batches} batches (each batch costs two disk flushes)"
    );
    assert_eq!(delivered_files(&out), ids, "skipped or out of order");
}

fn dlq(data: &Path, args: &[&str]) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .arg("dlq")
        .args(args)
        .args(["--connector", "lab", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_replayed_dead_letter_goes_after_everything_pending_at_the_replay() {
    // POISON is refused the first time only; every answer takes 150 ms, so a queue builds up.
    let peer = Peer::start(
        |id, seen| match (id, seen) {
            ("POISON", 0) => Answer::Code("AR", ""),
            _ => Answer::Code("AA", ""),
        },
        Duration::from_millis(150),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let yaml = format!(
        "connectors:\n  - {{name: lab, type: mllp, url: 'mllp://{}'}}\n",
        peer.address
    );
    let server = start(&data, &yaml, &[]);
    send_all(&server, &["POISON".to_owned()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mllpd::route::dead_letter::list(&data.join("connectors/lab"))
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "POISON never became a dead letter"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pending: Vec<String> = (0..12).map(|i| format!("PENDING{i:02}")).collect();
    send_all(&server, &pending);
    // About 1.8 s of deliveries are queued now; hand the dead letter back meanwhile.
    dlq(&data, &["replay", "--all"]);
    server.wait_log(&["dead letter replayed", "seq=1"], Duration::from_secs(30));
    let mut expected = vec!["POISON".to_owned()];
    expected.extend(pending);
    expected.push("POISON".to_owned());
    assert_eq!(peer.received(), expected, "the replay jumped the queue");
}

/// Whether python-hl7's MLLP server (PyPI `hl7`, `hl7.mllp`) can be imported.
fn python_hl7_mllp_present() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import hl7.mllp"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_third_party_mllp_listener_receives_every_message_in_order() {
    if !common::require(
        "python-hl7's MLLP server (python3 -c 'import hl7.mllp')",
        python_hl7_mllp_present(),
        "pip install hl7==0.4.5, as .ci/install-deps does",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received.txt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python_hl7_listener.py");
    let mut listener = std::process::Command::new("python3")
        .arg(&script)
        .arg(&received)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut first = String::new();
    let stdout = listener.stdout.take().unwrap();
    let _listener = Kill(listener);
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    let port: u16 = first.trim().strip_prefix("port=").unwrap().parse().unwrap();
    let yaml =
        format!("connectors:\n  - {{name: lab, type: mllp, url: 'mllp://127.0.0.1:{port}'}}\n");
    let server = start(&dir.path().join("data"), &yaml, &[]);
    let ids: Vec<String> = (0..50).map(|i| format!("PYHL7{i:03}")).collect();
    send_all(&server, &ids);
    let expected: Vec<String> = ids
        .iter()
        .map(|id| {
            String::from_utf8(adt(id))
                .unwrap()
                .trim_end_matches('\r')
                .replace('\r', "\\r")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<String> = std::fs::read_to_string(&received)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim_end_matches("\\r").to_owned())
            .collect();
        if got.len() >= expected.len() || Instant::now() > deadline {
            assert_eq!(got, expected, "not every message, in order, as sent");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        sample(
            &common::admin::metrics(admin_addr(&server)),
            "mllpd_connector_delivered_total",
            &[]
        ),
        50.0
    );
}

/// The nice value of each of `pid`'s threads whose name starts with `prefix`, by name.
fn thread_nice(pid: u32, prefix: &str) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim_end().to_owned();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the name's closing parenthesis start at field 3 (state); nice is 19.
        let nice = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok());
        if let Some(nice) = nice {
            found.push((comm, nice));
        }
    }
    found.sort();
    found
}

#[test]
fn delivery_yields_to_intake_except_for_a_connector_the_ack_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Thread names are cut to 15 bytes: "mllpd-deliver-" and the name's first letter.
    let yaml = format!(
        "connectors:\n  - {{name: archive, type: file, url: 'file://{}'}}\n  \
         - {{name: mirror, type: file, url: 'file://{}', sync: true}}\n",
        dir.path().join("a").display(),
        dir.path().join("m").display()
    );
    let server = start(&data, &yaml, &[("ACK_AFTER", "delivery")]);
    let pid = server.child.id();
    let nice = i64::from(mllpd::limits::DELIVERY_NICE);
    let expected = vec![
        ("mllpd-deliver-a".to_owned(), nice),
        ("mllpd-deliver-m".to_owned(), 0),
    ];
    // A thread is named when it starts and lowers its priority a moment later: poll until the
    // expected state or the deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut threads = thread_nice(pid, "mllpd-deliver");
    while threads != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        threads = thread_nice(pid, "mllpd-deliver");
    }
    assert_eq!(
        threads, expected,
        "the store-and-forward connector must run at DELIVERY_NICE, the one the ACK waits for at 0"
    );
    // The shard itself keeps the default priority.
    let shards = thread_nice(pid, "mllpd-shard");
    assert!(
        !shards.is_empty() && shards.iter().all(|(_, n)| *n == 0),
        "{shards:?}"
    );
    // And delivery still works.
    let mut client = Client::connect(server.addr);
    client.send(&common::frame(&adt("NICE1")));
    assert_eq!(client.read_ack().code(), "AA");
}
