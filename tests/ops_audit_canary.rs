//! End-to-end (issue 12): AUDIT_LOG writes one JSON line per message decision, and a PHI
//! canary — a marker in PID-3, PID-5 and an OBX value — sent through the accepted, rule-rejected,
//! malformed and oversized paths at LOG_LEVEL=info appears in no log line, audit line, metric
//! or ACK (ERR) text. (No connector exists yet, so there is no dead-letter path to cover.)

mod common;

use std::time::Duration;

use common::{admin_addr, frame, Server};

const MARKER: &str = "PHICANARY7Q9Z";

const RULES: &str = r#"
validation:
  rules:
    - name: no-a08
      expression: 'msh.trigger != "A08"'
      message: A08 not accepted
"#;

/// An ORU-like ADT with the marker in PID-3, PID-5 and an OBX value.
fn message(id: &str, trigger: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ADT^{trigger}|{id}|P|2.5.1\r\
         EVN|{trigger}|20260101120000\r\
         PID|1||{MARKER}^^^HOSP^MR||{MARKER}^JOHN||19800101|M\r\
         OBX|1|ST|NOTE^Note||{MARKER} value||||||F\r"
    )
    .into_bytes()
}

#[test]
fn audit_lines_name_each_decision_and_the_canary_leaks_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mllpd.yaml");
    std::fs::write(&config, RULES).expect("config");
    let audit = dir.path().join("audit.log");
    let mut server = Server::start(&[
        ("CONFIG_FILE", config.to_str().expect("utf8")),
        ("AUDIT_LOG", audit.to_str().expect("utf8")),
        ("MAX_FRAME_SIZE", "4096"),
        ("LOG_LEVEL", "info"),
    ]);
    let admin = admin_addr(&server);
    let mut acks = Vec::new();
    let mut client = server.connect();
    for (payload, code) in [
        (message("ACC-1", "A01"), "AA"),
        (message("RULE-1", "A08"), "AR"),
        // Malformed: no MSH segment at all.
        (
            format!("PID|1||{MARKER}^^^HOSP^MR||{MARKER}^JOHN\r").into_bytes(),
            "AR",
        ),
    ] {
        client.send(&frame(&payload));
        let ack = client.read_frame().expect("an ACK");
        let text = String::from_utf8_lossy(&ack).into_owned();
        assert_eq!(common::Ack::parse(&ack).code(), code, "{text}");
        acks.push(text);
    }
    // Oversized: the connection is closed, nothing is answered.
    let mut big = message("BIG-1", "A01");
    while big.len() <= 4096 {
        big.extend_from_slice(format!("OBX|2|ST|NOTE^Note||{MARKER}||||||F\r").as_bytes());
    }
    let mut oversized = server.connect();
    oversized.send(&frame(&big));
    assert!(oversized.closed_within(Duration::from_secs(10)));
    let metrics = common::metrics(admin);
    server.signal("TERM");
    // wait_exit returns once the last log line is read.
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    let logs = server.logs();
    let audit_text = std::fs::read_to_string(&audit).expect("audit log");

    // The audit trail: one line per decision, with the header fields and the outcome.
    let lines: Vec<serde_json::Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{audit_text}");
    let expect = [
        ("ACC-1", "AA", None, None),
        ("RULE-1", "AR", Some("no-a08"), Some("rule")),
        ("", "AR", None, Some("unparsed")),
    ];
    for (line, (id, code, rule, cause)) in lines.iter().zip(expect) {
        assert_eq!(line["ack_code"], code, "{line}");
        assert_eq!(line["rule"].as_str(), rule, "{line}");
        assert_eq!(line["cause"].as_str(), cause, "{line}");
        if !id.is_empty() {
            assert_eq!(line["control_id"], id, "{line}");
            assert_eq!(line["sending_application"], "SENDAPP", "{line}");
            assert_eq!(line["sending_facility"], "SENDFAC", "{line}");
        }
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(line["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")));
    }
    assert_eq!(
        lines[0]["seq"], 1,
        "the accepted message's journal sequence"
    );
    assert_eq!(lines[0]["message_type"], "ADT^A01");
    assert!(lines[1]["seq"].is_null() && lines[2]["seq"].is_null());

    // The canary appears nowhere.
    for (what, text) in [
        ("audit", audit_text.clone()),
        ("metrics", metrics),
        ("logs", logs.join("\n")),
        ("acks", acks.join("\n")),
    ] {
        assert!(!text.is_empty(), "{what} is empty");
        assert!(
            !text.contains(MARKER),
            "the canary leaked into the {what}:\n{text}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("frame rejected")),
        "{logs:?}"
    );
}
