//! End-to-end tests of the `file` connector (issue 11 item 7 subset) on the real binary: a
//! corpus delivered in order and byte for byte, an outage of several seconds that loses and
//! duplicates nothing, a SIGKILL during delivery after which nothing is lost (the file
//! connector de-duplicates by name: exactly once), and the configuration refusals.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{adt, Client, Server};

/// Writes a CONFIG_FILE with one `file` connector named `archive` delivering to `out`.
fn config(dir: &Path, out: &Path) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: archive\n    type: file\n    url: file://{}\n\
         retry: {{initial_backoff: 100ms, max_backoff: 500ms, max_attempts: 1000}}\n",
        out.display()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(data_dir: &Path, config: &Path) -> Server {
    Server::start(&[
        ("DATA_DIR", data_dir.to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("SHARDS", "1"),
    ])
}

/// Sends every payload on one connection (pipelined) and returns those answered AA, in order.
fn send_all(server: &Server, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
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
    let mut accepted = Vec::new();
    for payload in payloads {
        if matches!(client.read_ack().code().as_str(), "AA" | "CA") {
            accepted.push(payload.clone());
        }
    }
    accepted
}

/// The delivered files of `out`, sorted by name (journal order), as contents.
fn delivered(out: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(out) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Waits until `out` holds `count` messages (60 s at most: a busy 2-core machine).
fn wait_delivered(out: &Path, count: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let files = delivered(out);
        if files.len() >= count || Instant::now() > deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The corpus in tests/data (but the two whose MSH-15 asks for no accept ACK: NE, ER), then
/// generated ADTs.
fn corpus(generated: usize) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir("tests/data")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .filter(|p| !p.ends_with("ack_v27_enhanced.hl7") && !p.ends_with("vxu_v04_v251.hl7"))
        .collect();
    names.sort();
    let mut out: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    out.extend((0..generated).map(|i| adt(&format!("GEN{i:05}"))));
    out
}

#[test]
fn a_corpus_is_delivered_in_order_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = config(dir.path(), &out);
    let server = start(&dir.path().join("data"), &config);
    let accepted = send_all(&server, &corpus(200));
    assert!(accepted.len() > 200, "most of the corpus is accepted");
    let files = wait_delivered(&out, accepted.len());
    assert_eq!(files.len(), accepted.len());
    assert!(files == accepted, "delivered out of order or altered");
    server.wait_log(
        &["delivery started", "connectors=1"],
        Duration::from_secs(5),
    );
    // Nothing is left behind half-written.
    let temps = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(temps, 0);
    // `journal stats` shows where the connector stands: caught up once its cursor is written
    // (batched, and flushed when idle), nothing dead-lettered.
    let count = accepted.len().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
            .env_clear()
            .args(["journal", "stats", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stats = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = stats
            .lines()
            .find(|l| l.starts_with("archive"))
            .unwrap_or_else(|| panic!("{stats}"))
            .to_owned();
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns == ["archive", "0", count.as_str(), "0", "0"] {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_outage_of_several_seconds_delays_but_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The destination cannot be created while a plain file stands where its parent should be.
    let blocker = dir.path().join("blocked");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let out = blocker.join("out");
    let config = config(dir.path(), &out);
    let server = start(&dir.path().join("data"), &config);
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| adt(&format!("OUT{i:03}"))).collect();
    let accepted = send_all(&server, &payloads);
    assert_eq!(accepted.len(), 50);
    let line = server.wait_log(
        &["delivery failed; will retry", "connector=archive"],
        Duration::from_secs(10),
    );
    assert!(line.contains("cannot create"), "{line}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(delivered(&out).is_empty());
    std::fs::remove_file(&blocker).unwrap();
    let files = wait_delivered(&out, 50);
    assert!(
        files == accepted,
        "{} files, out of order or altered",
        files.len()
    );
    server.wait_log(
        &["delivered after retries", "connector=archive"],
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delivered(&out).len(), 50, "nothing delivered twice");
}

#[test]
fn a_sigkill_during_delivery_loses_nothing_and_resumes_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let config = config(dir.path(), &out);
    let server = start(&data, &config);
    // Enough that delivery is still under way once all are accepted: files go out in batches
    // sharing their syncs, about as fast as the journal takes them in.
    let payloads: Vec<Vec<u8>> = (0..10_000).map(|i| adt(&format!("KILL{i:05}"))).collect();
    let mut accepted = Vec::new();
    for chunk in payloads.chunks(1000) {
        accepted.extend(send_all(&server, chunk)); // Bounded: ACKs must not fill the socket.
    }
    assert_eq!(accepted.len(), payloads.len());
    // Kill it once delivery is under way but not done, and the cursor has been written once
    // (every 200 ms or 1 000 records: on a fast disk the first 100 files can go out before
    // that).
    let cursor_file = data.join("connectors/archive/shard-0.cursor");
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = || std::fs::read_dir(&out).map_or(0, |d| d.count());
    while (count() < 100 || !cursor_file.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal("KILL");
    let at_kill = delivered(&out).len();
    drop(server);
    assert!(
        (100..payloads.len()).contains(&at_kill),
        "delivery was not caught mid-way ({at_kill} of {} delivered)",
        payloads.len()
    );
    let cursor = std::fs::read(data.join("connectors/archive/shard-0.cursor")).unwrap();
    assert_eq!(
        cursor.len(),
        20,
        "the cursor file was written before the kill"
    );
    let server = start(&data, &config);
    let files = wait_delivered(&out, payloads.len());
    assert_eq!(files.len(), payloads.len());
    assert!(
        files == accepted,
        "lost, reordered or altered after the restart"
    );
    drop(server);
}

/// `mllpd check-config` with `yaml` as CONFIG_FILE: (exit code, stderr).
fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mllpd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .arg("check-config")
        .env("CONFIG_FILE", &path)
        .env("DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_bad_connectors_naming_connector_and_key() {
    let (code, stderr) =
        check_config("connectors:\n  - {name: lab, type: mllp, url: 'mllp://127.0.0.1:2575'}\n");
    assert_eq!(code, 0, "{stderr}");
    let cases = [
        ("- {name: lab, type: mllp, url: 'mllp://h:1', timeout: 3s}", "connector \"lab\": timeout: unknown key"),
        ("- {name: lab, type: mllp, url: 'mllp://h'}", "connector \"lab\": url:"),
        ("- {name: lab, type: file, url: 'file:///x', filter: 'msh.msg_type =='}", "connector \"lab\": filter: does not compile"),
        ("- {name: lab, type: file, url: 'file:///x'}\n  - {name: lab, type: file, url: 'file:///y'}", "connector \"lab\": name: declared twice"),
    ];
    for (connectors, expected) in cases {
        let (code, stderr) = check_config(&format!("connectors:\n  {connectors}\n"));
        assert_ne!(code, 0, "{connectors}");
        assert!(stderr.contains(expected), "{connectors}: {stderr}");
    }
    let (code, stderr) = check_config("retry: {initial_backoff: 1s, max_bakoff: 2s}\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("max_bakoff"), "{stderr}");
    let (code, stderr) = check_config("on_failure: drop\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("on_failure"), "{stderr}");
}

#[test]
fn a_filter_selects_per_connector_and_a_message_matching_several_goes_to_each() {
    let dir = tempfile::tempdir().unwrap();
    let (labs, all) = (dir.path().join("labs"), dir.path().join("all"));
    let path = dir.path().join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n\
         \x20 - {{name: labs, type: file, url: 'file://{}', filter: 'msh.msg_type == \"ORU\"'}}\n\
         \x20 - {{name: all, type: file, url: 'file://{}'}}\n",
        labs.display(),
        all.display()
    );
    std::fs::write(&path, yaml).unwrap();
    let server = start(&dir.path().join("data"), &path);
    let oru = std::fs::read("tests/data/oru_r01_v231_escapes.hl7").unwrap();
    let payloads = vec![adt("F1"), oru.clone(), adt("F2"), oru.clone()];
    let accepted = send_all(&server, &payloads);
    assert_eq!(accepted.len(), 4);
    assert!(
        wait_delivered(&all, 4) == payloads,
        "`all` takes every message, in order"
    );
    let got = wait_delivered(&labs, 2);
    assert!(
        got == [oru.clone(), oru],
        "`labs` takes only the ORUs ({} got)",
        got.len()
    );
    // The ADTs were confirmed (filtered out) too: nothing else arrives later.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delivered(&labs).len(), 2);
}
