//! Interop of the TLS listener with a third-party TLS MLLP client (issue 10 item 6), on the
//! socket path the run asks for (`MLLPD_TEST_SOCKET_IO`): node-hl7-client (npm, pinned by
//! tests/tls_peer/package-lock.json, installed by `.ci/install-deps`) sends a message with a
//! client certificate and gets the AA, and the message is journaled with the client's CN.
//! (`openssl s_client` interop is in tests/tls_server.rs.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::adt;
use common::tls::{journaled_metadata, start, Pki};

/// Whether node and the installed peer are there (fails under CI=true when not).
fn peer_present() -> bool {
    let installed = Path::new("tests/tls_peer/node_modules/node-hl7-client").exists();
    common::require_program("node", "apt-get install nodejs (or run .ci/install-deps)")
        && common::require(
            "node-hl7-client",
            installed,
            "run .ci/install-deps (npm ci in tests/tls_peer)",
        )
}

#[test]
fn node_hl7_client_sends_over_mutual_tls() {
    if !peer_present() {
        return;
    }
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let mut server = start(&pki, data.path(), &[("SHARDS", "1")]);
    pki.write(
        "message.hl7",
        &String::from_utf8(adt("NODE1")).expect("utf8"),
    );
    let output = Command::new("node")
        .arg("tests/tls_peer/send.cjs")
        .args(["127.0.0.1", &server.addr.port().to_string(), "localhost"])
        .args([pki.p("ca.pem"), pki.p("good.pem"), pki.p("good.key")])
        .arg(pki.p("message.hl7"))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "ACK AA NODE1");
    server.wait_log(
        &["TLS client verified", "lab-system"],
        Duration::from_secs(5),
    );
    let records = journaled_metadata(&mut server, data.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["client_cn"], "lab-system");
}
