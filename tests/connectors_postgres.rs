//! End-to-end tests of the `postgres` connector (issue 11 items 2 and 7) against a real
//! PostgreSQL cluster the test makes with initdb in a temporary directory: a corpus stored in
//! order and byte for byte with its columns; the server stopped for seconds → everything stored
//! once, in order, when it is back; SIGKILL of mllpd mid-delivery → nothing lost, no duplicate
//! (the key is (instance, shard, sequence) and the insert says ON CONFLICT DO NOTHING); a row the
//! table refuses → dead letter, replayed after the fix; an unreachable host and wrong
//! credentials → a clear log line, retries, nothing skipped.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/downstream.rs"]
mod downstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{adt, Server};
use downstream::{
    check_config, corpus, dlq, free_port, send_all, wait_until, Postgres, PG_PASSWORD,
};

/// The table the connector writes.
const TABLE: &str = "hl7_inbox";

/// A CONFIG_FILE with one `postgres` connector `pg` to `url` (password from MLLPD_PG_PASSWORD).
fn config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("mllpd.yaml");
    let yaml = format!(
        "connectors:\n  - name: pg\n    type: postgres\n    url: {url}\n\
         \x20   password_env: MLLPD_PG_PASSWORD\n    table: {TABLE}\n    create_table: true\n\
         retry: {{initial_backoff: 100ms, max_backoff: 1s, max_attempts: 1000}}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(data: &Path, config: &Path, password: &str) -> Server {
    Server::start(&[
        ("DATA_DIR", data.to_str().unwrap()),
        ("CONFIG_FILE", config.to_str().unwrap()),
        ("SHARDS", "1"),
        ("MLLPD_PG_PASSWORD", password),
    ])
}

/// The payloads stored, in key order.
fn payloads(pg: &Postgres) -> Vec<Vec<u8>> {
    pg.rows(TABLE).into_iter().map(|r| r.4).collect()
}

/// Waits (60 s at most: a busy 2-core machine) until `count` rows are stored.
fn wait_rows(pg: &Postgres, count: usize) -> Vec<Vec<u8>> {
    wait_until(Duration::from_secs(60), || payloads(pg).len() >= count);
    payloads(pg)
}

#[test]
fn a_corpus_is_stored_in_order_byte_for_byte_with_its_columns() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &config(dir.path(), &pg.url()), PG_PASSWORD);
    let accepted = send_all(&server, &corpus(200, "PG"));
    assert!(accepted.len() > 200, "most of the corpus is accepted");
    let stored = wait_rows(&pg, accepted.len());
    assert_eq!(stored.len(), accepted.len());
    assert!(stored == accepted, "stored out of order or altered");
    let rows = pg.rows(TABLE);
    let instance = std::fs::read_to_string(data.join("connectors/instance")).unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.0, instance.trim());
        assert_eq!((row.1, row.2), (0, i as i64 + 1), "shard and sequence");
    }
    let columns = downstream::runtime().block_on(async {
        let client = pg.connect().await.unwrap();
        client
            .query_one(
                &format!(
                    "SELECT message_type, trigger_event, sending_application, sending_facility, \
                     host(peer), received_at IS NOT NULL AND received_at <= now() \
                     FROM {TABLE} WHERE control_id = 'PG00007'"
                ),
                &[],
            )
            .await
            .unwrap()
    });
    let text = |i| columns.get::<_, String>(i);
    assert_eq!(
        [text(0), text(1), text(2), text(3), text(4)],
        ["ADT", "A01", "SENDAPP", "SENDFAC", "127.0.0.1"]
    );
    assert!(columns.get::<_, bool>(5), "received_at");
    let logs = server.logs().join("\n");
    assert!(!logs.contains(PG_PASSWORD), "the password was logged");
    assert!(!logs.contains("PID|"), "message content logged");
}

#[test]
fn a_server_down_for_seconds_gets_everything_once_in_order_when_it_is_back() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        &config(dir.path(), &pg.url()),
        PG_PASSWORD,
    );
    let first: Vec<Vec<u8>> = (0..10).map(|i| adt(&format!("UP{i:03}"))).collect();
    assert_eq!(send_all(&server, &first).len(), 10);
    assert_eq!(wait_rows(&pg, 10).len(), 10);
    pg.stop();
    let second: Vec<Vec<u8>> = (0..40).map(|i| adt(&format!("DOWN{i:03}"))).collect();
    assert_eq!(send_all(&server, &second).len(), 40, "intake goes on");
    server.wait_log(
        &["delivery failed; will retry", "connector=pg"],
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(3));
    pg.resume();
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    let stored = wait_rows(&pg, all.len());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        payloads(&pg) == all,
        "{} stored, out of order, lost or duplicated",
        stored.len()
    );
    server.wait_log(
        &["delivered after retries", "connector=pg"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_sigkill_during_delivery_loses_nothing_and_adds_no_row_twice() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), &pg.url());
    let server = start(&data, &config, PG_PASSWORD);
    let payloads_sent: Vec<Vec<u8>> = (0..2000).map(|i| adt(&format!("KILL{i:05}"))).collect();
    let accepted = send_all(&server, &payloads_sent);
    assert_eq!(accepted.len(), payloads_sent.len());
    let cursor_file = data.join("connectors/pg/shard-0.cursor");
    wait_until(Duration::from_secs(60), || {
        cursor_file.exists() && pg.rows(TABLE).len() >= 100
    });
    server.signal("KILL");
    drop(server);
    let at_kill = pg.rows(TABLE).len();
    assert_eq!(
        std::fs::read(&cursor_file).unwrap().len(),
        20,
        "the cursor was written"
    );
    assert!(
        (100..payloads_sent.len()).contains(&at_kill),
        "delivery was not caught mid-way ({at_kill} stored)"
    );
    eprintln!("killed with {at_kill} delivered");
    let server = start(&data, &config, PG_PASSWORD);
    let stored = wait_rows(&pg, accepted.len());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored.len(), accepted.len());
    assert!(payloads(&pg) == accepted, "lost, reordered or duplicated");
    let (_, listed) = dlq(&data, "pg", &["list"]);
    assert!(
        listed.contains("0 dead letter(s)"),
        "a re-sent row was refused: {listed}"
    );
    drop(server);
}

#[test]
fn a_row_the_table_refuses_is_a_dead_letter_and_is_stored_after_the_fix_and_a_replay() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &config(dir.path(), &pg.url()), PG_PASSWORD);
    assert_eq!(send_all(&server, &[adt("A")]).len(), 1);
    assert_eq!(wait_rows(&pg, 1).len(), 1);
    // The table's owner adds a rule this message breaks (a permanent data error, SQLSTATE 23514).
    pg.execute(&format!(
        "ALTER TABLE {TABLE} ADD CONSTRAINT no_poison CHECK (control_id <> 'POISON')"
    ));
    let ids = ["POISON", "B"];
    send_all(&server, &ids.iter().map(|id| adt(id)).collect::<Vec<_>>());
    server.wait_log(
        &["message stored as a dead letter", "connector=pg", "seq=2"],
        Duration::from_secs(20),
    );
    let stored = wait_rows(&pg, 2);
    assert_eq!(
        stored,
        [adt("A"), adt("B")],
        "B is not held up by the poison"
    );
    let (code, listed) = dlq(&data, "pg", &["list"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains("1 dead letter(s)"), "{listed}");
    assert!(
        listed.contains("23514"),
        "the reason names the SQLSTATE: {listed}"
    );
    assert!(!listed.contains("PID"), "{listed}");
    pg.execute(&format!("ALTER TABLE {TABLE} DROP CONSTRAINT no_poison"));
    let (code, out) = dlq(&data, "pg", &["replay", "--all"]);
    assert_eq!(code, 0, "{out}");
    server.wait_log(
        &["dead letter replayed", "connector=pg", "seq=2"],
        Duration::from_secs(20),
    );
    let rows = pg.rows(TABLE);
    let ids: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(ids, ["A", "POISON", "B"], "stored under its own sequence");
}

#[test]
fn an_unreachable_host_and_wrong_credentials_are_logged_retried_and_skip_nothing() {
    let Some(pg) = Postgres::start() else { return };
    // Unreachable: nothing listens on the port.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let server = start(
        &dir.path().join("data"),
        &config(dir.path(), &url),
        PG_PASSWORD,
    );
    assert_eq!(send_all(&server, &[adt("U1")]).len(), 1);
    let line = server.wait_log(
        &["delivery failed; will retry", "connector=pg"],
        Duration::from_secs(20),
    );
    assert!(
        line.contains("cannot connect to postgres@127.0.0.1"),
        "{line}"
    );
    assert!(server.child.id() > 0);
    drop(server);

    // Wrong credentials: a clear line, retried; with the right ones everything is stored.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), &pg.url());
    let mut server = start(&data, &config, "not-the-password");
    let ids: Vec<Vec<u8>> = (0..5).map(|i| adt(&format!("CRED{i}"))).collect();
    assert_eq!(send_all(&server, &ids).len(), 5);
    let line = server.wait_log(
        &["delivery failed; will retry", "connector=pg", "28P01"],
        Duration::from_secs(20),
    );
    assert!(line.contains("refused the credentials"), "{line}");
    assert!(!line.contains("not-the-password"), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "mllpd exited on wrong credentials"
    );
    assert!(payloads(&pg).is_empty());
    let (_, listed) = dlq(&data, "pg", &["list"]);
    assert!(listed.contains("0 dead letter(s)"), "{listed}");
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(20));
    let server = start(&data, &config, PG_PASSWORD);
    assert!(wait_rows(&pg, 5) == ids, "not all stored after the fix");
    drop(server);
}

#[test]
fn check_config_refuses_bad_postgres_connectors_naming_connector_and_key() {
    let good =
        "connectors:\n  - {name: pg, type: postgres, url: 'postgres://u@h:5432/db', table: x}\n";
    let (code, stderr) = check_config(good);
    assert_eq!(code, 0, "{stderr}");
    let cases = [
        (
            "- {name: pg, type: postgres, url: 'postgres://u@h/db', table: 'a b'}",
            "connector \"pg\": table:",
        ),
        (
            "- {name: pg, type: postgres, url: 'postgres://u@h/db', tabel: x}",
            "connector \"pg\": tabel: unknown key",
        ),
        (
            "- {name: pg, type: postgres, url: 'mllp://h:1'}",
            "connector \"pg\": url:",
        ),
        (
            "- {name: pg, type: postgres, url: 'postgres://u@h/db', create_table: yes}",
            "connector \"pg\": create_table:",
        ),
    ];
    for (connectors, expected) in cases {
        let (code, stderr) = check_config(&format!("connectors:\n  {connectors}\n"));
        assert_ne!(code, 0, "{connectors}");
        assert!(stderr.contains(expected), "{connectors}: {stderr}");
    }
}
