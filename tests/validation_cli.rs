//! `mllpd validate --config FILE MESSAGES…` (issue 9 item 6): the server's admission step run
//! offline over files of messages with CR, LF or CRLF line ends; per message the verdict, the
//! failing rule and the ACK's code, MSA and ERR; exit status 0 / 1 / 2.

use std::path::Path;
use std::process::{Command, Output};

const RULES: &str = r#"
validation:
  rules:
    - name: no-a08
      expression: 'msh.trigger != "A08"'
      message: 'A08 updates|not^accepted'
      code: 200
      location: MSH-9.2
    - name: pid3-numeric
      expression: 'int(pid.id) > 0'
      message: PID-3 must be a positive number
    - name: local-only
      expression: 'peer.ip == "" || peer.ip.startsWith("10.")'
      message: only 10/8
"#;

fn write(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .arg("validate")
        .args(args)
        .env_clear()
        .output()
        .expect("run mllpd validate")
}

#[test]
fn each_message_gets_its_verdict_rule_and_ack_and_the_exit_status_says_whether_all_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(dir.path(), "rules.yaml", RULES.as_bytes());
    // CRLF, LF and CR line ends; the last message has no MSH-10.
    let messages = write(
        dir.path(),
        "mixed.hl7",
        b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|C-1|P|2.5\r\nPID|1||12\r\n\
          MSH|^~\\&|A|B|C|D|2026||ADT^A08|C-2|P|2.5\nPID|1||12\n\
          MSH|^~\\&|A|B|C|D|2026||ADT^A01|C-3|P|2.5\rPID|1||DOE\r\
          MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\r",
    );
    let output = validate(&["--config", &config, &messages]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let reason = "int() failed on its argument (bad conversion or value)";
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "message 1 (C-1): pass -> AA\n\
             message 2 (C-2): rule 'no-a08' failed -> AR\n\
             \x20 MSA|AR|C-2|A08 updates\\F\\not\\S\\accepted\n\
             \x20 ERR||MSH^1^9^^2|200^Unsupported message type^HL70357|E|no-a08|||\
             A08 updates\\F\\not\\S\\accepted\n\
             message 3 (C-3): rule 'pid3-numeric' could not be evaluated: {reason} -> AE\n\
             \x20 MSA|AE|C-3|message could not be validated: {reason}\n\
             \x20 ERR|||207^Application internal error^HL70357|E|pid3-numeric|||\
             message could not be validated: {reason}\n\
             message 4 (): not a valid message: required MSH field missing -> AR\n\
             \x20 MSA|AR||required MSH field missing\n\
             \x20 ERR||MSH^1^10|101^Required field missing^HL70357|E||||required MSH field \
             missing\n"
        )
    );
    // `peer.ip` comes from --peer.
    let good = write(
        dir.path(),
        "good.hl7",
        b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|G-1|P|2.5\nPID|1||7\n",
    );
    let output = validate(&["--config", &config, "--peer", "10.1.2.3", &good]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "message 1 (G-1): pass -> AA\n"
    );
    let output = validate(&["--config", &config, "--peer", "192.168.1.1", &good]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("rule 'local-only' failed -> AR"));
}

#[test]
fn rules_that_do_not_compile_exit_2_naming_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "bad.yaml",
        b"validation:\n  rules:\n    - name: broken\n      expression: 'pid.id =='\n      message: x\n",
    );
    let messages = write(
        dir.path(),
        "m.hl7",
        b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|C-1|P|2.5\r",
    );
    let output = validate(&["--config", &config, &messages]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rule 'broken': line 1, column"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn the_files_default_character_set_applies_as_in_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut message = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|U-1|P|2.5\rPID|1||7||".to_vec();
    message.extend_from_slice(&[0xC3, 0x28, b'\r']); // not UTF-8
    let messages = write(dir.path(), "m.hl7", &message);
    let ascii = write(dir.path(), "ascii.yaml", RULES.as_bytes());
    let output = validate(&["--config", &ascii, &messages]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let utf8 = write(
        dir.path(),
        "utf8.yaml",
        format!("default_character_set: UNICODE UTF-8\n{RULES}").as_bytes(),
    );
    let output = validate(&["--config", &utf8, &messages]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("not a valid message: ") && stdout.contains("-> AR"),
        "{stdout}"
    );
}
