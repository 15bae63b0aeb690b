//! End-to-end: validation rules from CONFIG_FILE decide AA, AR or AE at the front door (issue
//! 9), on the socket path the run asks for (MLLPD_TEST_SOCKET_IO): exact ACK bytes for a rule
//! answered AR, one answered AE, and a rule that cannot be evaluated; only accepted messages
//! reach the journal; a broken rule stops the start and `check-config` says the same.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::Server;

/// An ADT with control id `id`, trigger `trigger`, PID-3.1 `pid3` and PID-8 `sex`.
fn adt(id: &str, trigger: &str, pid3: &str, sex: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ADT^{trigger}^ADT_A01|{id}|P|\
         2.5.1\rEVN|{trigger}|20260101120000\rPID|1||{pid3}^^^HOSP^MR||DOE^JOHN||19800101|{sex}\r"
    )
    .into_bytes()
}

/// Three rules: an AR with a configured location and a message holding delimiters, an AE, and
/// one that errs on a PID-3 that is not a number.
const RULES: &str = r#"
validation:
  rules:
    - name: no-a08
      expression: 'msh.trigger != "A08"'
      message: 'A08 updates|not^accepted'
      code: 200
      location: MSH-9.2
    - name: sex-known
      expression: 'pid.sex in ["M", "F", "U"]'
      message: PID-8 must be M, F or U
      on_fail: AE
      code: 102
    - name: pid3-numeric
      expression: 'int(pid.id) > 0'
      message: PID-3 must be a positive number
"#;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("mllpd.yaml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

/// The header of every ACK to [`adt`] with trigger `trigger`.
fn ack_msh(trigger: &str) -> String {
    format!("MSH|^~\\&|RECVAPP|RECVFAC|SENDAPP|SENDFAC|*||ACK^{trigger}^ACK|*|P|2.5.1\r")
}

#[test]
fn failed_rules_answer_ar_and_ae_exactly_and_only_accepted_messages_are_journaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), RULES);
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let server = Server::start(&[
        ("SHARDS", "1"),
        ("CONFIG_FILE", &config),
        ("DATA_DIR", data),
    ]);
    server.wait_log(
        &["validation rules loaded", "generation=1", "rules=3"],
        Duration::from_secs(5),
    );
    let mut client = server.connect();
    let ok = adt("OK-1", "A01", "12345", "M");
    client.send_message(&ok);
    assert_eq!(
        client.read_ack().masked(),
        format!("{}MSA|AA|OK-1\r", ack_msh("A01"))
    );
    // AR: the rule's code and location, its name in ERR-5, its message escaped in MSA-3 and
    // ERR-8 (a `|` or `^` in it opens no field or component).
    client.send_message(&adt("AR-1", "A08", "12345", "M"));
    assert_eq!(
        client.read_ack().masked(),
        format!(
            "{}MSA|AR|AR-1|A08 updates\\F\\not\\S\\accepted\r\
             ERR||MSH^1^9^^2|200^Unsupported message type^HL70357|E|no-a08|||\
             A08 updates\\F\\not\\S\\accepted\r",
            ack_msh("A08")
        )
    );
    // AE by on_fail; the location is the first field the rule reads (PID-8).
    client.send_message(&adt("AE-1", "A01", "12345", "X"));
    assert_eq!(
        client.read_ack().masked(),
        format!(
            "{}MSA|AE|AE-1|PID-8 must be M, F or U\r\
             ERR||PID^1^8|102^Data type error^HL70357|E|sex-known|||PID-8 must be M, F or U\r",
            ack_msh("A01")
        )
    );
    // A rule that cannot be evaluated (int() of a non-number): AE 207 with the reason, which
    // names the function and not the value; logged with the rule and the control id.
    client.send_message(&adt("EVAL-1", "A01", "DOE", "M"));
    let text = "message could not be validated: int() failed on its argument (bad conversion \
                or value)";
    assert_eq!(
        client.read_ack().masked(),
        format!(
            "{}MSA|AE|EVAL-1|{text}\r\
             ERR|||207^Application internal error^HL70357|E|pid3-numeric|||{text}\r",
            ack_msh("A01")
        )
    );
    let line = server.wait_log(
        &[
            "validation rule could not be evaluated",
            "control_id=EVAL-1",
        ],
        Duration::from_secs(5),
    );
    assert!(line.contains("rule=\"pid3-numeric\"") || line.contains("rule=pid3-numeric"));
    assert!(
        !line.contains("DOE"),
        "no message content in the log: {line}"
    );
    let last = adt("OK-2", "A01", "7", "F");
    client.send_message(&last);
    assert_eq!(
        client.read_ack().masked(),
        format!("{}MSA|AA|OK-2\r", ack_msh("A01"))
    );
    // The journal holds the two accepted messages and nothing else.
    let export = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .args(["journal", "export", "--data-dir", data, "--output", "-"])
        .output()
        .expect("export");
    assert!(export.status.success(), "{export:?}");
    let expected: Vec<u8> = [ok, last].iter().flat_map(|p| common::frame(p)).collect();
    assert_eq!(
        String::from_utf8_lossy(&export.stdout),
        String::from_utf8_lossy(&expected)
    );
}

/// Runs `mllpd args…` with only PATH and `env` in its environment.
fn mllpd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mllpd"));
    command.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .envs(env.iter().copied())
        .output()
        .expect("run mllpd")
}

/// A rule set whose second rule names a key `pid` does not have.
const BROKEN: &str = r#"
validation:
  rules:
    - name: fine
      expression: 'msh.msg_type != ""'
      message: fine
    - name: pid3-required
      expression: 'pid.idd != ""'
      message: PID-3 is required
"#;

#[test]
fn a_rule_that_does_not_compile_stops_the_start_and_check_config_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), BROKEN);
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let env = [
        ("CONFIG_FILE", config.as_str()),
        ("DATA_DIR", data),
        ("LISTEN_ADDR", "127.0.0.1:0"),
    ];
    let expected = "validation: rule 'pid3-required': line 1, column 4: unknown variable 'pid.idd'";
    let check = mllpd(&["check-config"], &env);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stderr.contains(&config), "names the file: {stderr}");
    let serve = mllpd(&["serve"], &env);
    assert_eq!(serve.status.code(), Some(2), "{serve:?}");
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(stderr.contains(expected), "{stderr}");
    // The good file passes check-config and lists the rules in order.
    let good = write_config(dir.path(), RULES);
    let check = mllpd(
        &["check-config"],
        &[("CONFIG_FILE", &good), ("DATA_DIR", data)],
    );
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("3 rules, in order: no-a08, sex-known, pid3-numeric"),
        "{stdout}"
    );
}

/// Generation 1 rejects ORU, generation 2 rejects ADT: every ACK says which generation judged
/// its message (the rule's name is in ERR-5).
const OLD_RULES: &str = r#"
validation:
  rules:
    - name: g1-no-oru
      expression: 'msh.msg_type != "ORU"'
      message: no ORU here
"#;

const NEW_RULES: &str = r#"
validation:
  rules:
    - name: g2-no-adt
      expression: 'msh.msg_type != "ADT"'
      message: no ADT here
"#;

fn oru(id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ORU^R01^ORU_R01|{id}|P|2.5.1\r\
         PID|1||12345^^^HOSP^MR\rOBX|1|NM|2345-7^Glucose^LN||5.5|mmol/L|||||F\r"
    )
    .into_bytes()
}

/// The generation that judged a message of kind ADT (`adt`) or ORU, from its ACK; panics on
/// an ACK that fits neither (a mix, or something else).
fn generation_of(adt: bool, ack: &common::Ack) -> u8 {
    let (code, rule) = (ack.code(), ack.field("ERR", 5));
    match (adt, code.as_str(), rule.as_str()) {
        (true, "AA", "") | (false, "AR", "g1-no-oru") => 1,
        (true, "AR", "g2-no-adt") | (false, "AA", "") => 2,
        _ => panic!("an ACK from no single generation: {ack:?}"),
    }
}

/// One sender: a message at a time, ADT and ORU in turn, until `stop`; returns per message the
/// generation that judged it and whether it was sent after `reloaded` was set.
fn sender(
    server: std::net::SocketAddr,
    n: usize,
    sent: &std::sync::atomic::AtomicUsize,
    reloaded: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(u8, bool)> {
    use std::sync::atomic::Ordering;
    let mut client = common::Client::connect(server);
    let mut verdicts = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let after = reloaded.load(Ordering::Acquire);
        let id = format!("S{n}-{i}");
        let adt_kind = i % 2 == 0;
        let payload = if adt_kind {
            adt(&id, "A01", "1", "M")
        } else {
            oru(&id)
        };
        client.send_message(&payload);
        let frame = client
            .read_frame()
            .unwrap_or_else(|| panic!("sender {n}: connection dropped at {id}"));
        let ack = common::Ack::parse(&frame);
        assert_eq!(ack.control_id(), id);
        verdicts.push((generation_of(adt_kind, &ack), after));
        sent.fetch_add(1, Ordering::AcqRel);
    }
    verdicts
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

#[test]
fn sighup_reloads_the_rules_under_load_and_a_broken_file_leaves_them_in_force() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), OLD_RULES);
    let server = Server::start(&[("CONFIG_FILE", &config), ("ACK_AFTER", "receipt")]);
    let (sent, reloaded, stop) = (
        AtomicUsize::new(0),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    let wait_for = |more: usize| {
        let target = sent.load(Ordering::Acquire) + more;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::Acquire) < target {
            assert!(std::time::Instant::now() < deadline, "senders stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let results: Vec<Vec<(u8, bool)>> = std::thread::scope(|scope| {
        let (addr, shared) = (server.addr, (&sent, &reloaded, &stop));
        let senders: Vec<_> = (0..4)
            .map(|n| scope.spawn(move || sender(addr, n, shared.0, shared.1, shared.2)))
            .collect();
        // Stops the senders however this closure ends (a failed assertion too): the scope
        // joins them before the panic goes on.
        let _stop = StopOnDrop(&stop);
        wait_for(200);
        write_config(dir.path(), NEW_RULES);
        server.signal("HUP");
        server.wait_log(
            &["validation rules reloaded", "generation=2", "rules=1"],
            Duration::from_secs(10),
        );
        reloaded.store(true, Ordering::Release);
        wait_for(200);
        // A broken file: refused, generation 2 stays in force (checked by every later verdict).
        write_config(dir.path(), BROKEN);
        server.signal("HUP");
        let refused = server.wait_log(
            &["validation rules reload refused", "generation=2"],
            Duration::from_secs(10),
        );
        assert!(refused.contains("pid3-required"), "{refused}");
        wait_for(200);
        stop.store(true, Ordering::Release);
        senders
            .into_iter()
            .map(|s| s.join().expect("a sender failed"))
            .collect()
    });
    let (mut old, mut new) = (0, 0);
    for (n, verdicts) in results.iter().enumerate() {
        // One connection is served by one shard, which switches once: never back to 1.
        let switched = verdicts
            .iter()
            .position(|v| v.0 == 2)
            .unwrap_or(verdicts.len());
        assert!(
            verdicts[switched..].iter().all(|v| v.0 == 2),
            "sender {n} saw generation 1 after 2"
        );
        assert!(
            verdicts.iter().filter(|v| v.1).all(|v| v.0 == 2),
            "sender {n}: a message sent after the reload line was judged by the old rules"
        );
        old += switched;
        new += verdicts.len() - switched;
    }
    assert!(old > 0 && new > 0, "both generations judged: {old} / {new}");
    assert!(
        server
            .logs()
            .iter()
            .all(|l| !l.contains("connection closed") || l.contains("PeerClosed")),
        "no connection dropped by the server"
    );
}

#[test]
fn evaluation_errors_are_logged_at_most_once_a_second_and_none_goes_uncounted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), RULES);
    let server = Server::start(&[("SHARDS", "1"), ("CONFIG_FILE", &config)]);
    let mut client = server.connect();
    // Twenty messages that make `pid3-numeric` err, in one write: decided within one read.
    let burst: Vec<u8> = (0..20)
        .flat_map(|i| common::frame(&adt(&format!("E-{i}"), "A01", "DOE", "M")))
        .collect();
    client.send(&burst);
    for i in 0..20 {
        let ack = client.read_ack();
        assert_eq!(
            (ack.code(), ack.control_id()),
            ("AE".to_owned(), format!("E-{i}"))
        );
    }
    // Deliberate: the rate limit's second passes, so the next error is logged again.
    std::thread::sleep(Duration::from_millis(1100));
    client.send_message(&adt("E-LAST", "A01", "DOE", "M"));
    assert_eq!(client.read_ack().code(), "AE");
    server.wait_log(
        &["could not be evaluated", "control_id=E-LAST"],
        Duration::from_secs(5),
    );
    let lines: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|l| l.contains("validation rule could not be evaluated"))
        .collect();
    assert!(lines.len() <= 3, "at most one line a second: {lines:#?}");
    // Every error is logged or counted in the line after it.
    let counted: u64 = lines
        .iter()
        .map(|l| {
            common::log_value(l, "unlogged_since_last")
                .and_then(|v| v.parse::<u64>().ok())
                .expect("unlogged_since_last")
        })
        .sum();
    assert_eq!(lines.len() as u64 + counted, 21, "{lines:#?}");
}
