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

/// A thread-per-connection receiver answering with the floor's correct ACKs. It serves the
/// first `serve` connections and closes every later one at once (a server at its connection
/// limit); `arrivals` gets the time each read with at least one complete frame came in, once
/// per frame.
fn recording_server(
    serve: usize,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            if n >= serve {
                drop(stream);
                continue;
            }
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut filled = 0;
                let mut out = Vec::new();
                while let Ok(n) = stream.read(&mut buf[filled..]) {
                    if n == 0 {
                        return;
                    }
                    let now = std::time::Instant::now();
                    filled += n;
                    out.clear();
                    let used = mllpd_perf::floor::answer(&buf[..filled], &mut out);
                    let frames = out.windows(2).filter(|w| w == b"\x1c\r").count();
                    seen.lock()
                        .expect("lock")
                        .extend(std::iter::repeat_n(now, frames));
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, arrivals)
}

#[test]
fn idle_connections_are_held_and_the_closed_ones_counted() {
    let (addr, _) = recording_server(usize::MAX);
    let (ok, out) = bench(&[
        "-a", &addr, "-c", "2", "--idle", "40", "--mode", "open", "--rate", "200", "-d", "300ms",
        "--warmup", "100ms", "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert!(ok, "{out}");
    assert_eq!(report["idle"], 40, "{out}");
    assert_eq!(report["idle_closed"], 0, "{out}");
    assert!(report["messages"].as_u64().expect("messages") > 0, "{out}");

    // Sending connections are opened first: the 2 are served, the 5 idle ones closed at once.
    let (addr, _) = recording_server(2);
    let (ok, out) = bench(&[
        "-a", &addr, "-c", "2", "--idle", "5", "--mode", "open", "--rate", "200", "-d", "300ms",
        "--warmup", "100ms", "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert!(!ok, "closed idle connections must fail the run: {out}");
    assert_eq!(report["idle_closed"], 5, "{out}");
    assert!(report["messages"].as_u64().expect("messages") > 0, "{out}");
}

/// The open loop offsets each connection's schedule: 20 connections at 20 msgs/s in all are one
/// message every 50 ms, not 20 at once every second.
#[test]
fn open_loop_spreads_the_connections_schedules_evenly() {
    let (addr, arrivals) = recording_server(usize::MAX);
    let (ok, out) = bench(&[
        "-a", &addr, "-c", "20", "--mode", "open", "--rate", "20", "-d", "2s", "--warmup", "0s",
        "--json",
    ]);
    assert!(ok, "{out}");
    let mut times = arrivals.lock().expect("lock").clone();
    times.sort();
    assert!(times.len() >= 30, "{} messages: {out}", times.len());
    // Most messages inside any 10 ms: 1 when even, 20 when every connection fires at once. A
    // generator stalled by a busy machine sends the ones due meanwhile together: 8 is a stall
    // of 350 ms.
    let window = std::time::Duration::from_millis(10);
    let mut most = 0;
    let mut first = 0;
    for (last, t) in times.iter().enumerate() {
        while *t - times[first] > window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    assert!(
        most <= 8,
        "{most} messages within 10 ms: schedules not spread"
    );
}
