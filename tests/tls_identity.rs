//! The verified TLS client identity in the journal (issue 10 item 3), on the socket path the run
//! asks for (`MLLPD_TEST_SOCKET_IO`): a message from an mTLS client is journaled with the client
//! certificate's subject CN and SANs (what `journal export --metadata` shows and connectors
//! get); a plaintext message is journaled without any.

mod common;

use common::tls::{connect, exchange, journaled_metadata, start, Pki};
use common::{adt, Server};

#[test]
fn an_mtls_clients_cn_and_sans_are_journaled_with_each_of_its_messages() {
    let pki = Pki::new();
    pki.client(
        "multi",
        &pki.ca,
        "adt-engine",
        &["adt.example", "adt-2.example", "10.1.2.3"],
        None,
    );
    let data = tempfile::tempdir().expect("data");
    let mut server = start(&pki, data.path(), &[("SHARDS", "1")]);
    let mut lab = connect(&server, &pki, Some("good")).expect("handshake");
    assert_eq!(exchange(&mut lab, "LAB1").as_deref(), Some("AA"));
    let mut adt_engine = connect(&server, &pki, Some("multi")).expect("handshake");
    assert_eq!(exchange(&mut adt_engine, "ADT1").as_deref(), Some("AA"));
    assert_eq!(exchange(&mut lab, "LAB2").as_deref(), Some("AA"));
    let records = journaled_metadata(&mut server, data.path());
    let identities: Vec<(String, String)> = records
        .iter()
        .map(|r| (r["client_cn"].to_string(), r["client_sans"].to_string()))
        .collect();
    let lab_identity = (
        r#""lab-system""#.to_owned(),
        r#"["lab.example"]"#.to_owned(),
    );
    assert_eq!(
        identities,
        [
            lab_identity.clone(),
            (
                r#""adt-engine""#.to_owned(),
                r#"["adt.example","adt-2.example","10.1.2.3"]"#.to_owned()
            ),
            lab_identity,
        ]
    );
    assert!(records
        .iter()
        .all(|r| r["shard"] == 0 && r["peer"].is_string()));
}

#[test]
fn a_plaintext_message_is_journaled_without_a_client_identity() {
    let data = tempfile::tempdir().expect("data");
    let data_dir = data.path().display().to_string();
    let mut server = Server::start(&[("DATA_DIR", data_dir.as_str()), ("SHARDS", "1")]);
    let mut client = server.connect();
    client.send_message(&adt("PLAIN1"));
    client.expect_adt_ack("AA", "PLAIN1");
    let records = journaled_metadata(&mut server, data.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0]["client_cn"].is_null(), "{records:?}");
    assert_eq!(records[0]["client_sans"], serde_json::json!([]));
    assert_eq!(records[0]["seq"], 1);
}
