//! End to end over real sockets: each reference receiver passes `mllp-bench --check` and a
//! short timed run with zero mismatches; a receiver that answers with the wrong MSA-2 or code
//! is reported as wrong (check fails, mismatches counted, exit status 1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a floor binary on an ephemeral port; returns it and the address it printed.
fn start_floor(exe: &str) -> (Server, String) {
    let mut child = Command::new(exe)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn floor");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (Server(child), addr)
}

fn bench(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mllp-bench"))
        .args(args)
        .output()
        .expect("run mllp-bench");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn timed_run_is_clean(addr: &str, extra: &[&str]) {
    let mut args = vec!["-a", addr, "-d", "300ms", "--warmup", "100ms", "--json"];
    args.extend_from_slice(extra);
    let (ok, out) = bench(&args);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert!(ok, "{out}");
    assert!(report["messages"].as_u64().expect("messages") > 0, "{out}");
    assert_eq!(report["mismatches"], 0, "{out}");
    assert_eq!(report["errors"], 0, "{out}");
}

#[test]
fn every_floor_answers_correctly_in_every_mode() {
    for exe in [
        env!("CARGO_BIN_EXE_floor-glommio"),
        env!("CARGO_BIN_EXE_floor-uring"),
        env!("CARGO_BIN_EXE_floor-tokio"),
    ] {
        let (_server, addr) = start_floor(exe);
        let (ok, out) = bench(&["-a", &addr, "--check"]);
        assert!(ok, "{exe}: {out}");
        assert_eq!(out.matches(": ok").count(), 4, "{exe}: {out}");
        timed_run_is_clean(&addr, &["-c", "8"]);
        timed_run_is_clean(&addr, &["-c", "2", "--mode", "pipelined", "--depth", "32"]);
        timed_run_is_clean(&addr, &["-c", "2", "--mode", "open", "--rate", "500"]);
    }
}

/// A receiver that answers every frame with a fixed ACK: MSA-1 `code`, MSA-2 `X`.
fn wrong_server(code: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let ack =
                    format!("\x0bMSH|^~\\&|W|W|||20260101||ACK|1|P|2.5\rMSA|{code}|X\r\x1c\r");
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let frames = buf[..n].windows(2).filter(|w| w == b"\x1c\r").count();
                    for _ in 0..frames {
                        if stream.write_all(ack.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn wrong_answers_are_reported_not_timed() {
    let addr = wrong_server("AA");
    let (ok, out) = bench(&["-a", &addr, "--check"]);
    assert!(!ok, "{out}");
    assert!(out.contains("WRONG") && out.contains("control_id"), "{out}");
    let (ok, out) = bench(&[
        "-a", &addr, "-c", "2", "-d", "200ms", "--warmup", "0s", "--json",
    ]);
    assert!(!ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["messages"], 0, "{out}");
    assert!(
        report["mismatch_kinds"]["control_id"]
            .as_u64()
            .expect("count")
            > 0,
        "{out}"
    );

    let addr = wrong_server("AE");
    let (ok, out) = bench(&["-a", &addr, "--check"]);
    assert!(!ok && out.contains("code"), "{out}");
    // AE accepted on request: the code passes, the control id still does not.
    let (ok, out) = bench(&["-a", &addr, "--check", "--expect", "AE"]);
    assert!(
        !ok && out.contains("control_id") && !out.contains(": code"),
        "{out}"
    );
}
