//! End-to-end durability tests (issue 4): what mllpd acknowledged is in its journal, storage
//! faults turn into AE rather than AA, and a crash loses nothing that was acknowledged — with a
//! control run that ACKs before the flush to show the crash test can see a loss.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{adt, Client, Server};

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn acknowledged_messages_are_exported_byte_for_byte() {
    let dir = data_dir();
    let path = dir.path().to_str().expect("utf-8 path");
    let mut server = Server::start(&[("DATA_DIR", path), ("SHARDS", "1")]);
    let mut client = server.connect();
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| adt(&format!("DUR-{i}"))).collect();
    for (i, payload) in payloads.iter().enumerate() {
        client.send_message(payload);
        client.expect_adt_ack("AA", &format!("DUR-{i}"));
    }
    drop(client);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .args(["journal", "export", "--output", "-", "--data-dir", path])
        .output()
        .expect("export");
    let expected: Vec<u8> = payloads.iter().flat_map(|p| common::frame(p)).collect();
    assert_eq!(output.stdout, expected);
}

#[test]
fn failed_flush_answers_ae_then_drains_and_exits_non_zero() {
    let mut server = Server::start(&[("SHARDS", "1"), ("MLLPD_FAULT_FAILED_SYNC_AFTER", "2")]);
    let mut client = server.connect();
    for i in 0..2 {
        client.send_message(&adt(&format!("SYNC-{i}")));
        client.expect_adt_ack("AA", &format!("SYNC-{i}"));
    }
    client.send_message(&adt("SYNC-2"));
    let ack = client.read_ack();
    assert_eq!(
        (ack.code().as_str(), ack.control_id().as_str()),
        ("AE", "SYNC-2")
    );
    assert!(ack.field("ERR", 3).starts_with("207^"), "{ack:?}");
    server.wait_log(&["fatal"], Duration::from_secs(5));
    let code = server.wait_exit(Duration::from_secs(15));
    assert_ne!(
        code,
        Some(0),
        "a poisoned journal must make the supervisor restart mllpd"
    );
}

#[test]
fn duplicate_within_the_window_is_acknowledged_but_stored_once_across_a_restart() {
    let dir = data_dir();
    let path = dir.path().to_str().expect("utf-8 path");
    let env = [("DATA_DIR", path), ("SHARDS", "1"), ("DEDUP_WINDOW", "10m")];
    for _ in 0..2 {
        let mut server = Server::start(&env);
        let mut client = server.connect();
        client.send_message(&adt("DUP-1"));
        // The same answer both times: a duplicate is acknowledged as if stored.
        client.expect_adt_ack("AA", "DUP-1");
        drop(client);
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    assert_eq!(
        common::journal_control_ids(dir.path()),
        vec!["DUP-1".to_owned()]
    );
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` (the test skips) only where [`common::require`] allows it: never under CI.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = data_dir();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let failure = match &output {
            Ok(output) if output.status.success() => return Some(Tmpfs(dir)),
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        common::require(
            &format!("permission to mount a tmpfs for the disk-full test ({failure})"),
            false,
            "run the tests as root",
        );
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_answers_ae_without_aa_and_recovers_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let data = tmpfs.0.path().join("data");
    let server = Server::start(&[
        ("DATA_DIR", data.to_str().expect("utf-8")),
        ("SHARDS", "1"),
        ("RETENTION_AGE", "off"),
    ]);
    // Fill the file system but for a little room.
    let filler = tmpfs.0.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .output();
    let mut client = server.connect();
    let mut codes = Vec::new();
    for i in 0..400 {
        client.send_message(&adt(&format!("FULL-{i}")));
        let ack = client.read_ack();
        assert_eq!(ack.control_id(), format!("FULL-{i}"));
        codes.push(ack.code());
        if ack.code() == "AE" {
            assert!(ack.field("ERR", 3).starts_with("207^"), "{ack:?}");
            break;
        }
    }
    assert_eq!(
        codes.last().map(String::as_str),
        Some("AE"),
        "the disk never filled: {codes:?}"
    );
    client.send_message(&adt("FULL-again"));
    assert_eq!(client.read_ack().code(), "AE", "still full: no AA");
    std::fs::remove_file(&filler).expect("free space");
    client.send_message(&adt("FULL-after"));
    let ack = client.read_ack();
    assert_eq!(
        (ack.code().as_str(), ack.control_id().as_str()),
        ("AA", "FULL-after")
    );
    drop(server);
    let ids = common::journal_control_ids(&data);
    assert!(ids.contains(&"FULL-after".to_owned()));
    assert!(
        !ids.contains(&"FULL-again".to_owned()),
        "an AE'd message is not journaled"
    );
}

/// Runs senders against a server, kills it with SIGKILL `kill_after` past its 11th ACK,
/// restarts it on the same DATA_DIR (recovery), and returns (acknowledged ids, ids in the
/// journal).
fn crash_round(env: &[(&str, &str)], kill_after: Duration) -> (HashSet<String>, Vec<String>) {
    let dir = data_dir();
    let path = dir.path().to_str().expect("utf-8 path");
    let mut full_env = env.to_vec();
    full_env.push(("DATA_DIR", path));
    let server = Server::start(&full_env);
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let addr = server.addr;
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0.. {
                    let id = format!("CRASH-{sender}-{i}");
                    if client.stream.set_nodelay(true).is_err() {
                        break;
                    }
                    if std::io::Write::write_all(&mut client.stream, &common::frame(&adt(&id)))
                        .is_err()
                    {
                        break;
                    }
                    let Some(payload) = client.read_frame() else {
                        break;
                    };
                    let ack = common::Ack::parse(&payload);
                    if ack.code() == "AA" && ack.control_id() == id {
                        acked.lock().expect("acked").insert(id);
                    }
                }
            })
        })
        .collect();
    // Enough acknowledged to judge, then a deliberate window of load whose length varies.
    common::wait_for("more than 10 AAs", Duration::from_secs(30), || {
        acked.lock().expect("acked").len() > 10
    });
    std::thread::sleep(kill_after);
    server.signal("KILL");
    for sender in senders {
        sender.join().expect("sender");
    }
    drop(server);
    // Restart: recovery truncates a torn tail; then stop cleanly and export.
    let mut restarted = Server::start(&full_env);
    restarted.signal("TERM");
    assert_eq!(restarted.wait_exit(Duration::from_secs(10)), Some(0));
    let acked = acked.lock().expect("acked").clone();
    (acked, common::journal_control_ids(dir.path()))
}

fn rounds() -> usize {
    std::env::var("MLLPD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[test]
fn sigkill_loses_no_acknowledged_message() {
    let started = Instant::now();
    for round in 0..rounds() {
        // A kill moment that varies from round to round (no rand dependency needed).
        let jitter = (started.elapsed().subsec_nanos() % 700) as u64;
        let kill_after = Duration::from_millis(300 + jitter);
        let (acked, journaled) = crash_round(&[("SHARDS", "2")], kill_after);
        assert!(
            acked.len() > 10,
            "round {round}: too few messages to judge: {}",
            acked.len()
        );
        let (missing, twice) = common::journal_losses(&acked, &journaled);
        assert!(
            missing.is_empty(),
            "round {round}: AA'd but lost: {missing:?}"
        );
        assert!(twice.is_empty(), "round {round}: stored twice: {twice:?}");
        eprintln!(
            "round {round}: {} acknowledged, {} journaled, none lost",
            acked.len(),
            journaled.len()
        );
    }
}

#[test]
fn crash_test_detects_loss_when_acks_precede_the_flush() {
    // Control: ACK on receipt and hold every flush 300 ms, so a kill always falls inside a
    // window of acknowledged, unwritten messages. If this found no loss, the test above would
    // be blind.
    let env = [
        ("SHARDS", "2"),
        ("ACK_AFTER", "receipt"),
        ("MLLPD_FAULT_FLUSH_DELAY", "300ms"),
    ];
    let (acked, journaled) = crash_round(&env, Duration::from_millis(700));
    let (missing, _) = common::journal_losses(&acked, &journaled);
    assert!(
        !missing.is_empty(),
        "control run lost nothing: the crash test cannot see a loss"
    );
}
