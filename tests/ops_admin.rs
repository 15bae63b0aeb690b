//! End-to-end: the admin endpoint (issue 12). `/metrics` counts exactly the traffic sent,
//! `/readyz` turns 503 the moment SIGTERM arrives while PRE_SHUTDOWN_DELAY still serves,
//! `/healthz` fails while a shard is stuck, ADMIN_ADDR may not be the MLLP address, and log lines
//! the bounded log queue cannot take are counted.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{admin_addr, adt, count, frame, get, metrics_until, Server};

const RULES: &str = r#"
validation:
  rules:
    - name: no-a08
      expression: 'msh.trigger != "A08"'
      message: A08 not accepted
"#;

#[test]
fn metrics_count_exactly_the_traffic_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mllpd.yaml");
    std::fs::write(&config, RULES).expect("config");
    let config = config.to_string_lossy().into_owned();
    let server = Server::start(&[("CONFIG_FILE", &config)]);
    let admin = admin_addr(&server);
    let (accepted, rejected, failed_rule) = (5u64, 3u64, 2u64);
    let mut client = server.connect();
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut exchange = |client: &mut common::Client, payload: &[u8], code: &str| {
        let framed = frame(payload);
        sent += framed.len() as u64;
        client.send(&framed);
        let ack = client.read_frame().expect("an ACK");
        received += ack.len() as u64 + 3;
        assert_eq!(common::Ack::parse(&ack).code(), code);
    };
    for i in 0..accepted {
        exchange(&mut client, &adt(&format!("M-{i}")), "AA");
    }
    for i in 0..rejected {
        exchange(&mut client, format!("junk {i}").as_bytes(), "AR");
    }
    for i in 0..failed_rule {
        let a08 = String::from_utf8(adt(&format!("U-{i}")))
            .expect("utf8")
            .replace("ADT^A01^ADT_A01", "ADT^A08^ADT_A08");
        exchange(&mut client, a08.as_bytes(), "AR");
    }
    let text = metrics_until(admin, "journal and rule figures published", |t| {
        count(t, "mllpd_journal_records_total", &[]) == accepted
            && count(
                t,
                "mllpd_rule_failures_total",
                &["rule=\"no-a08\"", "failed"],
            ) == failed_rule
    });
    let frames = accepted + rejected + failed_rule;
    for (name, labels, want) in [
        ("mllpd_acks_total", &["code=\"AA\""][..], accepted),
        (
            "mllpd_acks_total",
            &["code=\"AR\""][..],
            rejected + failed_rule,
        ),
        ("mllpd_acks_total", &["code=\"AE\""][..], 0),
        ("mllpd_frames_total", &[][..], frames),
        ("mllpd_messages_total", &[][..], accepted + failed_rule),
        (
            "mllpd_frame_errors_total",
            &["kind=\"unparsed\""][..],
            rejected,
        ),
        ("mllpd_frame_errors_total", &["kind=\"too_large\""][..], 0),
        ("mllpd_connections_accepted_total", &[][..], 1),
        ("mllpd_connections_open", &[][..], 1),
        ("mllpd_received_bytes_total", &[][..], sent),
        ("mllpd_sent_bytes_total", &[][..], received),
        (
            "mllpd_rule_failures_total",
            &["rule=\"no-a08\"", "errored"][..],
            0,
        ),
        ("mllpd_journal_batch_records_sum", &[][..], accepted),
    ] {
        assert_eq!(
            count(&text, name, labels),
            want,
            "{name}{labels:?}:\n{text}"
        );
    }
    let flushes = count(&text, "mllpd_journal_flushes_total", &[]);
    assert!(flushes >= 1 && flushes <= accepted, "{text}");
    assert_eq!(
        count(&text, "mllpd_journal_flush_seconds_count", &[]),
        flushes
    );
    assert_eq!(
        count(
            &text,
            "mllpd_journal_flush_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        flushes
    );
    assert_eq!(count(&text, "mllpd_journal_durable_seq", &[]), accepted);
    assert!(count(&text, "mllpd_journal_bytes", &[]) > 0, "{text}");
    assert!(text.contains("mllpd_build_info{version=\""), "{text}");
    assert!(
        text.contains("mllpd_connections_open{shard=\"0\"}"),
        "{text}"
    );
    drop(client);
    metrics_until(admin, "the connection counted closed", |t| {
        count(t, "mllpd_connections_open", &[]) == 0
    });
}

#[test]
fn readyz_turns_503_at_sigterm_while_pre_shutdown_delay_still_serves() {
    let server = Server::start(&[("PRE_SHUTDOWN_DELAY", "4s"), ("DRAIN_TIMEOUT", "5s")]);
    let admin = admin_addr(&server);
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(get(admin, "/healthz").0, 200);
    server.signal("TERM");
    server.wait_log(&["shutdown requested"], Duration::from_secs(5));
    let (status, body) = get(admin, "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    // Still serving during the delay: the load balancer has time to stop sending.
    let mut client = server.connect();
    client.send_message(&adt("LATE-1"));
    client.expect_adt_ack("AA", "LATE-1");
    assert_eq!(get(admin, "/healthz").0, 200, "alive while shutting down");
}

#[test]
fn healthz_fails_while_a_shard_is_stuck_and_recovers_after() {
    let server = Server::start(&[("SHARDS", "1"), ("MLLPD_FAULT_STALL_SHARD", "9s")]);
    let admin = admin_addr(&server);
    let deadline = Instant::now() + Duration::from_secs(12);
    let body = loop {
        let (status, body) = get(admin, "/healthz");
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "healthz never failed");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("shard(s) [0]"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(admin, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "healthz never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn admin_addr_equal_to_listen_addr_is_refused_at_start() {
    let data = tempfile::tempdir().expect("tempdir");
    for (command, status) in [("serve", 2), ("check-config", 1)] {
        let out = Command::new(env!("CARGO_BIN_EXE_mllpd"))
            .arg(command)
            .env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:25751")
            .env("ADMIN_ADDR", "127.0.0.1:25751")
            .env("DATA_DIR", data.path())
            .output()
            .expect("run mllpd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{command}: {stderr}");
        assert!(
            stderr.contains("ADMIN_ADDR") && stderr.contains("is the MLLP listen address"),
            "{command}: {stderr}"
        );
    }
    // `off` disables the endpoint: the server starts and names no admin address.
    let server = Server::start(&[("ADMIN_ADDR", "off")]);
    assert!(
        !server.logs().iter().any(|l| l.contains("admin endpoint")),
        "{:?}",
        server.logs()
    );
}

#[test]
fn log_lines_the_full_queue_cannot_take_are_counted_and_reported() {
    let mut server = Server::start(&[
        ("SHARDS", "1"),
        ("MLLPD_FAULT_LOG_QUEUE_LINES", "16"),
        ("MLLPD_FAULT_LOG_WRITE_DELAY", "250ms"),
    ]);
    let admin = admin_addr(&server);
    // 40 connections log 80 lines at once; a queue of 16 drained at 4 lines/s cannot take
    // them, and the shard does not wait.
    let started = Instant::now();
    for i in 0..40 {
        let mut client = server.connect();
        client.send_message(&adt(&format!("L-{i}")));
        client.expect_adt_ack("AA", &format!("L-{i}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the shard waited for the log: {:?}",
        started.elapsed()
    );
    let text = metrics_until(admin, "dropped lines counted", |t| {
        count(t, "mllpd_log_lines_dropped_total", &[]) > 0
    });
    let dropped = count(&text, "mllpd_log_lines_dropped_total", &[]);
    assert!(dropped >= 10, "{dropped} dropped");
    server.signal("TERM");
    // wait_exit returns once the last log line is read.
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("log lines were dropped (log queue full)")),
        "{:?}",
        server.logs()
    );
}
