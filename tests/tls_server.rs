//! TLS and mutual TLS end to end (issue 10), on the socket path the run asks for
//! (`MLLPD_TEST_SOCKET_IO`; `.ci/run` runs the suite on both). Certificates are made here with
//! rcgen: a CA, a server certificate, a good client, a client of another CA, an expired client.
//! Under TLS 1.3 a refused client may see its handshake "succeed" before the server's alert, so
//! every refusal also sends a frame and checks that no ACK came and nothing was journaled.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{connect, exchange, journaled_ids, read_frame, start, Pki};
use common::{adt, frame, Ack, Server};
use mllpd::tls::{self, ClientStream};

/// A refused client: whether or not its handshake appears to complete, a frame it sends gets
/// no ACK; a good client on the same server is served, and only its message is journaled.
fn assert_refused(client: Option<&str>, extra: &[(&str, &str)], log: &str) {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let mut server = start(&pki, data.path(), extra);
    if let Ok(mut refused) = connect(&server, &pki, client) {
        assert_eq!(
            exchange(&mut refused, "REFUSED1"),
            None,
            "{client:?} got an ACK"
        );
    }
    server.wait_log(&[log], Duration::from_secs(10));
    let mut good = connect(&server, &pki, Some("good")).expect("good client");
    assert_eq!(exchange(&mut good, "GOOD1").as_deref(), Some("AA"));
    assert_eq!(journaled_ids(&mut server, data.path()), vec!["GOOD1"]);
}

#[test]
fn a_verified_client_is_acknowledged_and_its_identity_logged_once() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let mut server = start(&pki, data.path(), &[]);
    let mut client = connect(&server, &pki, Some("good")).expect("handshake");
    for id in ["M1", "M2", "M3"] {
        assert_eq!(exchange(&mut client, id).as_deref(), Some("AA"), "{id}");
    }
    let line = server.wait_log(&["TLS client verified"], Duration::from_secs(5));
    assert!(
        line.contains("lab-system") && line.contains("lab.example"),
        "{line}"
    );
    let verified = server
        .logs()
        .iter()
        .filter(|l| l.contains("TLS client verified"))
        .count();
    assert_eq!(
        verified, 1,
        "identity logged once per connection, not per message"
    );
    assert_eq!(
        journaled_ids(&mut server, data.path()),
        vec!["M1", "M2", "M3"]
    );
}

#[test]
fn a_client_of_another_ca_is_refused() {
    assert_refused(Some("stranger"), &[], "TLS handshake failed");
}

#[test]
fn an_expired_client_certificate_is_refused() {
    assert_refused(Some("expired"), &[], "TLS handshake failed");
}

#[test]
fn a_client_without_a_certificate_is_refused_under_mtls() {
    assert_refused(None, &[], "TLS handshake failed");
}

#[test]
fn a_client_not_in_tls_client_allowed_is_refused() {
    // "billing" chains to the CA but is not on the list; "lab.example" (a SAN of "good") is.
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let allowed = [("TLS_CLIENT_ALLOWED", "lab.example, adt-engine")];
    let mut server = start(&pki, data.path(), &allowed);
    if let Ok(mut refused) = connect(&server, &pki, Some("billing")) {
        assert_eq!(exchange(&mut refused, "REFUSED1"), None);
    }
    let line = server.wait_log(&["not in TLS_CLIENT_ALLOWED"], Duration::from_secs(10));
    assert!(line.contains("billing"), "{line}");
    let mut good = connect(&server, &pki, Some("good")).expect("good client");
    assert_eq!(exchange(&mut good, "GOOD1").as_deref(), Some("AA"));
    assert_eq!(journaled_ids(&mut server, data.path()), vec!["GOOD1"]);
}

#[test]
fn tls_1_2_is_refused_when_the_minimum_is_1_3() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[("TLS_MIN_VERSION", "1.3")]);
    let options = pki.client_options(Some("good"));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("versions")
    .with_root_certificates(root_store(&pki))
    .with_no_client_auth();
    let name = tls::server_name(&options, "localhost").expect("name");
    let tcp = TcpStream::connect(server.addr).expect("connect");
    assert!(ClientStream::connect(tcp, Some((Arc::new(config), name)), secs(10)).is_err());
    server.wait_log(&["TLS handshake failed"], secs(10));
}

fn root_store(pki: &Pki) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(pki.path("ca.pem")).expect("ca");
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    roots
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A server started with `extra`, and a good client whose first message (M1) was acknowledged.
/// The PKI and the data directory live as long as the caller keeps them.
fn served_client(extra: &[(&str, &str)]) -> (Pki, tempfile::TempDir, Server, ClientStream) {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), extra);
    let mut client = connect(&server, &pki, Some("good")).expect("handshake");
    assert_eq!(exchange(&mut client, "M1").as_deref(), Some("AA"));
    (pki, data, server, client)
}

/// The server ends the stream within 10 s, with a close_notify: rustls reports a clean end
/// (Ok(0)) only after one; a bare FIN is an UnexpectedEof error.
fn assert_close_notify(client: &mut ClientStream) {
    client
        .tcp()
        .set_read_timeout(Some(secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match client.read(&mut buf) {
        Ok(0) => {}
        other => panic!("expected a close_notify, got {other:?}"),
    }
}

/// A TLS 1.1 ClientHello (legacy version 3.2, no supported_versions extension): what an old
/// TLS stack sends. rustls' client cannot speak 1.1, so the record is made by hand.
fn tls_1_1_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two 1.1 suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, (body.len() >> 8) as u8, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, (handshake.len() >> 8) as u8];
    record.push(handshake.len() as u8);
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn a_tls_1_1_client_gets_an_alert_and_is_closed() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[]);
    let mut tcp = TcpStream::connect(server.addr).expect("connect");
    tcp.write_all(&tls_1_1_client_hello()).expect("hello");
    tcp.set_read_timeout(Some(secs(10))).expect("timeout");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "an alert record: {answer:02x?}"
    );
    let line = server.wait_log(&["TLS handshake failed"], secs(10));
    assert!(
        line.contains("Incompatible") || line.contains("ncompatible"),
        "{line}"
    );
}

#[test]
fn a_stalled_handshake_is_cut_at_connect_timeout() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[("CONNECT_TIMEOUT", "1s")]);
    let mut tcp = TcpStream::connect(server.addr).expect("connect");
    tcp.write_all(&[0x16, 0x03, 0x01]).expect("three bytes");
    let started = Instant::now();
    tcp.set_read_timeout(Some(secs(15))).expect("timeout");
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let waited = started.elapsed();
    assert!(
        waited < secs(8),
        "cut after {waited:?}, CONNECT_TIMEOUT is 1s"
    );
    let line = server.wait_log(&["TLS handshake failed"], secs(5));
    assert!(line.contains("CONNECT_TIMEOUT"), "{line}");
}

#[test]
fn plaintext_mllp_to_a_tls_listener_is_closed_with_one_line() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let mut server = start(&pki, data.path(), &[]);
    let mut client = server.connect();
    client.send_message(&adt("PLAIN1"));
    assert!(client.closed_within(secs(10)), "closed promptly");
    let line = server.wait_log(&["TLS handshake failed"], secs(5));
    assert!(line.contains("plaintext MLLP"), "{line}");
    assert!(line.contains("tls_handshake_failures_total=1"), "{line}");
    assert_eq!(
        journaled_ids(&mut server, data.path()),
        Vec::<String>::new()
    );
}

#[test]
fn a_client_hello_to_a_plaintext_listener_is_closed_with_one_line() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send(&tls_1_1_client_hello());
    assert!(client.closed_within(secs(10)), "closed promptly");
    let line = server.wait_log(&["connection closed"], secs(5));
    assert!(line.contains("TlsHelloOnPlaintext"), "{line}");
}

#[test]
fn garbage_after_the_handshake_closes_the_connection() {
    let (_pki, _data, server, mut client) = served_client(&[]);
    let ClientStream::Tls(tls) = &mut client else {
        panic!("not TLS")
    };
    // An application-data record whose contents do not decrypt.
    let mut garbage = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    garbage.extend_from_slice(&[0x5a; 32]);
    tls.sock.write_all(&garbage).expect("garbage");
    let line = server.wait_log(&["connection closed", "TlsRecord"], secs(10));
    assert!(line.contains("TlsRecord"), "{line}");
    assert_eq!(read_frame(&mut client, secs(5)), None, "closed, no answer");
}

#[test]
fn an_idle_close_sends_close_notify() {
    let (_pki, _data, _server, mut client) = served_client(&[("IDLE_TIMEOUT", "1s")]);
    assert_close_notify(&mut client);
}

#[test]
fn openssl_s_client_interoperates() {
    if !common::require_program("openssl", "apt-get install openssl") {
        return;
    }
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[]);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-verify_return_error"])
        .args([
            "-connect",
            &server.addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(["-CAfile", &pki.p("ca.pem")])
        .args(["-cert", &pki.p("good.pem"), "-key", &pki.p("good.key")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&frame(&adt("OSSL1"))).expect("write");
    stdin.flush().expect("flush");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(2).any(|w| w == [common::EB, common::CR]) {
                break;
            }
        }
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(secs(20)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let start = got
        .iter()
        .position(|&b| b == common::SB)
        .expect("an ACK frame");
    let end = got
        .iter()
        .position(|&b| b == common::EB)
        .expect("end block");
    assert_eq!(Ack::parse(&got[start + 1..end]).code(), "AA");
}

#[test]
fn mllpd_send_speaks_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[]);
    pki.write("msg.hl7", &String::from_utf8(adt("SEND1")).expect("utf8"));
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .args(["send", &server.addr.to_string(), &pki.p("msg.hl7")])
        .args(["--tls", "--tls-ca", &pki.p("ca.pem")])
        .args([
            "--tls-cert",
            &pki.p("good.pem"),
            "--tls-key",
            &pki.p("good.key"),
        ])
        .args(["--tls-server-name", "localhost"])
        .output()
        .expect("mllpd send");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SEND1 AA"), "{stdout}");
    // Without a client certificate the server refuses it.
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .args(["send", &server.addr.to_string(), &pki.p("msg.hl7")])
        .args([
            "--tls-ca",
            &pki.p("ca.pem"),
            "--tls-server-name",
            "localhost",
        ])
        .output()
        .expect("mllpd send");
    assert!(!output.status.success());
}

/// The subject CN of the certificate the server presented.
fn server_cn(stream: &ClientStream) -> Option<String> {
    let ClientStream::Tls(tls) = stream else {
        return None;
    };
    let der = tls.conn.peer_certificates()?.first()?;
    tls::identity(der.as_ref())?.cn
}

#[test]
fn sighup_puts_a_new_certificate_in_force_for_new_connections_only() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[]);
    let mut old = connect(&server, &pki, Some("good")).expect("handshake");
    assert_eq!(server_cn(&old).as_deref(), Some("mllpd-server"));
    assert_eq!(exchange(&mut old, "OLD1").as_deref(), Some("AA"));

    // A new certificate, expiring in 5 days: in force for new connections, and warned about.
    let now = time::OffsetDateTime::now_utc();
    pki.server(
        "server",
        "mllpd-server-2",
        Some((now - time::Duration::days(1), now + time::Duration::days(5))),
    );
    server.signal("HUP");
    server.wait_log(&["TLS certificate loaded", "generation=2"], secs(10));
    server.wait_log(&["expires within 14 days"], secs(5));
    let mut new = connect(&server, &pki, Some("good")).expect("handshake");
    assert_eq!(server_cn(&new).as_deref(), Some("mllpd-server-2"));
    assert_eq!(exchange(&mut new, "NEW1").as_deref(), Some("AA"));
    assert_eq!(
        exchange(&mut old, "OLD2").as_deref(),
        Some("AA"),
        "old connection kept"
    );

    // An invalid key: the reload is refused, the certificate in force stays.
    pki.write("server.key", "not a key");
    server.signal("HUP");
    server.wait_log(&["TLS reload refused"], secs(10));
    let mut after = connect(&server, &pki, Some("good")).expect("handshake");
    assert_eq!(server_cn(&after).as_deref(), Some("mllpd-server-2"));
    assert_eq!(exchange(&mut after, "AFTER1").as_deref(), Some("AA"));
}

#[test]
fn validation_rules_see_the_client_cn_and_sans() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    pki.write(
        "rules.yaml",
        "validation:\n  rules:\n    - name: lab-only\n      expression: \
         'tls.client_cn == \"lab-system\" && \"lab.example\" in tls.client_sans'\n      \
         message: not the lab\n",
    );
    let rules = pki.p("rules.yaml");
    let (cert, key, ca) = (pki.p("server.pem"), pki.p("server.key"), pki.p("ca.pem"));
    let data_dir = data.path().display().to_string();
    let server = Server::start(&[
        ("TLS_CERT_FILE", cert.as_str()),
        ("TLS_KEY_FILE", key.as_str()),
        ("TLS_CLIENT_CA", ca.as_str()),
        ("DATA_DIR", data_dir.as_str()),
        ("CONFIG_FILE", rules.as_str()),
    ]);
    let mut lab = connect(&server, &pki, Some("good")).expect("handshake");
    assert_eq!(exchange(&mut lab, "LAB1").as_deref(), Some("AA"));
    let mut billing = connect(&server, &pki, Some("billing")).expect("handshake");
    assert_eq!(exchange(&mut billing, "BILL1").as_deref(), Some("AR"));
}

/// A TLS client that sends and never reads its ACKs (issue 10 item 4): once the socket buffers
/// are full the server's write of ACKs stalls, and WRITE_TIMEOUT (one deadline for the whole
/// write, on both socket paths) closes the connection, with one log line and a counter.
#[test]
fn a_tls_client_that_never_reads_is_cut_at_write_timeout() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(
        &pki,
        data.path(),
        &[
            ("WRITE_TIMEOUT", "1s"),
            ("ACK_AFTER", "receipt"),
            ("SHARDS", "1"),
        ],
    );
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&server.addr.into()).expect("connect");
    let tcp: TcpStream = socket.into();
    let options = pki.client_options(Some("good"));
    let config = tls::client_config(&options).expect("client config");
    let name = tls::server_name(&options, "localhost").expect("name");
    let mut client = ClientStream::connect(tcp, Some((config, name)), secs(10)).expect("handshake");
    client
        .tcp()
        .set_write_timeout(Some(secs(2)))
        .expect("timeout");
    let batch: Vec<u8> = (0..100)
        .flat_map(|i| frame(&adt(&format!("NR{i:03}"))))
        .collect();
    let started = Instant::now();
    // Writes until the server stops reading (its ACK write is stuck) and the socket blocks.
    while client
        .write_all(&batch)
        .and_then(|()| client.flush())
        .is_ok()
    {
        assert!(
            started.elapsed() < secs(60),
            "the server kept reading for 60 s"
        );
    }
    let line = server.wait_log(&["connection closed", "reason=WriteTimeout"], secs(20));
    assert!(line.contains("WARN"), "{line}");
    let cut = server
        .logs()
        .iter()
        .filter(|l| l.contains("WriteTimeout"))
        .count();
    assert_eq!(cut, 1, "one log line");
    let admin = common::admin_addr(&server);
    common::metrics_until(admin, "the write timeout counted", |text| {
        common::count(text, "mllpd_write_timeouts_total", &[]) == 1
    });
    drop(client);
}

/// An orderly close by the drain (SIGTERM) ends the TLS stream with a close_notify, like the
/// idle close above.
#[test]
fn a_drain_sends_close_notify() {
    let (_pki, _data, server, mut client) = served_client(&[("PRE_SHUTDOWN_DELAY", "0s")]);
    server.signal("TERM");
    assert_close_notify(&mut client);
    let line = server.wait_log(&["connection closed", "reason=Drained"], secs(10));
    assert!(line.contains("frames=1"), "{line}");
}

/// Completed handshakes and failed ones are counted apart on /metrics (issue 12 item 2: TLS
/// handshakes and failures by reason).
#[test]
fn handshakes_and_handshake_failures_are_counted_apart() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data");
    let server = start(&pki, data.path(), &[("SHARDS", "1")]);
    for id in ["H1", "H2"] {
        let mut good = connect(&server, &pki, Some("good")).expect("good client");
        assert_eq!(exchange(&mut good, id).as_deref(), Some("AA"));
    }
    if let Ok(mut refused) = connect(&server, &pki, Some("stranger")) {
        assert_eq!(
            exchange(&mut refused, "REFUSED1"),
            None,
            "stranger got an ACK"
        );
    }
    server.wait_log(&["TLS handshake failed"], secs(10));
    let admin = common::admin_addr(&server);
    let text = common::metrics_until(admin, "two handshakes and one failure", |text| {
        common::count(text, "mllpd_tls_failures_total", &["reason=\"handshake\""]) == 1
            && common::count(text, "mllpd_tls_handshakes_total", &[]) >= 2
    });
    assert_eq!(
        common::count(&text, "mllpd_tls_handshakes_total", &[]),
        2,
        "{text}"
    );
}
