//! Drop-in values (issue 12, item 9): the values the product mllpd replaces documents for its
//! environment variables (README, "Configuration": the same names) are accepted with the same
//! meaning, so its manifests work unchanged. `mllpd check-config` shows what each value means,
//! and a real start shows it in effect: `:PORT` listens on every interface (IPv4 reaches it),
//! a host name is resolved, MAX_CONNECTIONS `0` is no limit of mllpd's own (said at start, with
//! the open-file limit), KEEP_ALIVE_PERIOD `0` leaves keepalive off (`ss` shows no keepalive
//! timer on the connection; a period shows one), CONNECT_TIMEOUT `0` is no handshake deadline
//! (warned at start), and durations read in Go's syntax (`1h30m`, `1.5h`, `300ms`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The product's table of values, every setting at once: (name, value, what check-config must
/// show for it). LISTEN_ADDR is added per case.
const TABLE: &[(&str, &str, &str)] = &[
    ("IDLE_TIMEOUT", "1h30m", "1h 30m"),
    ("FRAME_TIMEOUT", "1.5m", "1m 30s"),
    ("WRITE_TIMEOUT", "2500ms", "2s 500ms"),
    ("MAX_FRAME_SIZE", "1048576", "1048576 bytes"),
    (
        "MAX_CONNECTIONS",
        "0",
        "0 (no limit of mllpd's own; the open-file limit applies)",
    ),
    ("KEEP_ALIVE_PERIOD", "0", "off"),
    ("CONNECT_TIMEOUT", "0", "off (no TLS handshake deadline)"),
    ("DEFAULT_CHARACTER_SET", "UNICODE UTF-8", "UNICODE UTF-8"),
    ("LOG_LEVEL", "info", "info"),
    ("LOG_FORMAT", "text", "text"),
    ("SHARDS", "1", "1"),
    ("PRE_SHUTDOWN_DELAY", "300ms", "300ms"),
    ("DRAIN_TIMEOUT", "0h0m30.5s", "30s 500ms"),
];

/// `mllpd check-config` with `env`: the summary line of each setting, by name.
fn check_config(env: &[(&str, &str)]) -> Vec<String> {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .arg("check-config")
        .env_clear()
        .env("DATA_DIR", data_dir.path())
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{env:?} refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(|l| l.trim().to_owned()).collect()
}

fn shown<'a>(summary: &'a [String], name: &str) -> &'a str {
    let line = summary
        .iter()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in check-config's summary"));
    line[name.len()..].trim_start()
}

#[test]
fn check_config_reads_every_value_of_the_table_with_its_meaning() {
    let mut env: Vec<(&str, &str)> = TABLE.iter().map(|(n, v, _)| (*n, *v)).collect();
    env.push(("LISTEN_ADDR", ":2575"));
    let summary = check_config(&env);
    for (name, value, meaning) in TABLE {
        assert_eq!(
            shown(&summary, name),
            format!("{meaning} (environment)"),
            "{name}={value}"
        );
    }
    let all = shown(&summary, "LISTEN_ADDR");
    assert!(
        all == "[::]:2575 (environment)" || all == "0.0.0.0:2575 (environment)",
        "LISTEN_ADDR=:2575 is every interface: {all}"
    );
    let summary = check_config(&[("LISTEN_ADDR", "localhost:2600")]);
    assert_eq!(
        shown(&summary, "LISTEN_ADDR"),
        "127.0.0.1:2600 (environment)"
    );
    // Go's other spellings of the same durations, and the values the product also documents.
    for (name, value, meaning) in [
        ("IDLE_TIMEOUT", "1.5h", "1h 30m"),
        ("IDLE_TIMEOUT", "90m", "1h 30m"),
        ("KEEP_ALIVE_PERIOD", "2m", "2m"),
        ("CONNECT_TIMEOUT", "10s", "10s"),
        ("MAX_CONNECTIONS", "10000", "10000"),
        ("DRAIN_TIMEOUT", "2h45m30.5s", "2h 45m 30s 500ms"),
    ] {
        let summary = check_config(&[(name, value)]);
        assert_eq!(shown(&summary, name), format!("{meaning} (environment)"));
    }
}

/// Whether the server's end of the connection from `client_port` runs a keepalive timer.
fn keepalive_timer(server_port: u16, client_port: u16) -> bool {
    let filter = format!("( sport = :{server_port} and dport = :{client_port} )");
    let output = Command::new("ss")
        .args(["-tnoH", "state", "established", &filter])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.trim().is_empty(),
        "ss shows no such connection: {filter}"
    );
    text.contains("timer:(keepalive")
}

#[test]
fn a_real_start_over_the_table_means_what_the_product_meant() {
    if !require_program("ss", "apt-get install iproute2") {
        return;
    }
    let port = free_port();
    let listen = format!(":{port}");
    let mut env: Vec<(&str, &str)> = TABLE.iter().map(|(n, v, _)| (*n, *v)).collect();
    env.push(("LISTEN_ADDR", listen.as_str()));
    let server = Server::start(&env);
    assert!(server.addr.ip().is_unspecified(), "{}", server.addr);
    server.wait_log(
        &["MAX_CONNECTIONS=0", "open_files_max="],
        Duration::from_secs(5),
    );
    server.wait_log(&["WARN", "CONNECT_TIMEOUT=0"], Duration::from_secs(5));
    // Every interface: IPv4 loopback reaches it.
    let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    client.send_message(&adt("DROPIN-1"));
    client.expect_adt_ack("AA", "DROPIN-1");
    let client_port = client.stream.local_addr().unwrap().port();
    assert!(
        !keepalive_timer(port, client_port),
        "KEEP_ALIVE_PERIOD=0 must leave keepalive off"
    );
    drop(client);
    drop(server);

    // A host name, resolved at start; a keepalive period, on.
    let port = free_port();
    let listen = format!("localhost:{port}");
    let server = Server::start(&[
        ("LISTEN_ADDR", listen.as_str()),
        ("KEEP_ALIVE_PERIOD", "1m30s"),
    ]);
    assert_eq!(server.addr, SocketAddr::from(([127, 0, 0, 1], port)));
    let mut client = server.connect();
    client.send_message(&adt("DROPIN-2"));
    client.expect_adt_ack("AA", "DROPIN-2");
    let client_port = client.stream.local_addr().unwrap().port();
    assert!(
        keepalive_timer(port, client_port),
        "KEEP_ALIVE_PERIOD=1m30s must turn keepalive on"
    );
}

#[test]
fn values_outside_the_table_are_still_refused_naming_the_setting() {
    let data_dir = tempfile::tempdir().unwrap();
    for (name, value, needle) in [
        ("IDLE_TIMEOUT", "0", "must be more than 0"),
        ("IDLE_TIMEOUT", "-1s", "invalid duration"),
        ("KEEP_ALIVE_PERIOD", "500ms", "or 0 for keepalive off"),
        ("LISTEN_ADDR", "no-such-host.invalid:2575", "cannot resolve"),
        ("LISTEN_ADDR", ":http", "bad port"),
        ("MAX_CONNECTIONS", "-1", "invalid number"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
            .arg("check-config")
            .env_clear()
            .env("DATA_DIR", data_dir.path())
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}={value}");
        assert!(
            stderr.contains(name) && stderr.contains(needle),
            "{name}={value}: {stderr}"
        );
    }
}
