//! Shared helpers for end-to-end tests: start the real `mllpd` binary on `127.0.0.1:0`, learn
//! its port from the start line, collect its log lines, and talk MLLP to it over real sockets.
#![allow(dead_code)]

pub mod admin;
pub mod peer;
pub mod tls;

// Each test file uses some of these (one copy, in admin.rs).
#[allow(unused_imports)]
pub use admin::{admin_addr, count, get, http_get, metrics, metrics_until, sample};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Start block, end block, carriage return.
pub const SB: u8 = 0x0B;
pub const EB: u8 = 0x1C;
pub const CR: u8 = 0x0D;

/// A running server process; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Output streams (stderr, stdout) whose reader has not yet seen their end.
    streams_open: Arc<AtomicUsize>,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Server {
    /// Starts `mllpd` with the given environment (on top of a clean one).
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_mllpd")), env)
    }

    /// Starts a prepared command (e.g. wrapped in `prlimit`) with the given environment.
    pub fn start_with(mut command: Command, env: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().expect("tempdir").keep();
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            // Parallel test servers must not fight over the default admin port.
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("LOG_LEVEL", "info")
            .env("LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env("DATA_DIR", &data_dir)
            // The whole end-to-end suite runs on either socket path (`.ci/run` runs both).
            .env("SOCKET_IO", requested_socket_io())
            .envs(env.iter().copied())
            // Tests arm MLLPD_FAULT_* on purpose; a release build (`cargo test --release`, as
            // perf/crash-loop.sh runs) refuses them without this explicit allowance.
            .envs(
                env.iter()
                    .any(|(name, _)| name.starts_with("MLLPD_FAULT_"))
                    .then_some(("MLLPD_ALLOW_FAULT_INJECTION", "1")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn mllpd");
        let requested = env
            .iter()
            .rev()
            .find(|(key, _)| *key == "SOCKET_IO")
            .map_or_else(requested_socket_io, |(_, value)| (*value).to_owned());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let streams_open = Arc::new(AtomicUsize::new(2));
        let (start_tx, start_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout")),
        ] {
            let (logs, streams_open) = (logs.clone(), streams_open.clone());
            let start_tx = start_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    if std::env::var_os("MLLPD_TEST_ECHO").is_some() {
                        eprintln!("[mllpd] {line}");
                    }
                    if line.contains("mllpd started") {
                        let _ = start_tx.send(line.clone());
                    }
                    logs.lock().expect("logs").push(line);
                }
                streams_open.fetch_sub(1, Ordering::Release);
            });
        }
        let start_line = match start_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "mllpd did not print its start line; logs: {:?}",
                    logs.lock().expect("logs")
                );
            }
        };
        let addr = log_value(&start_line, "listen")
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no listen address in the start line: {start_line}"));
        let server = Server {
            child,
            addr,
            logs,
            streams_open,
        };
        // Every server of the suite runs on the socket path the run asked for: a silent fallback
        // would test the other path twice and this one never.
        assert_eq!(
            log_value(&start_line, "socket_io").as_deref(),
            Some(expected_socket_io(&requested)),
            "SOCKET_IO={requested}: {start_line}"
        );
        server
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits until a log line contains every needle; panics after `timeout`, or 10 s if that
    /// is longer: on a busy 2-core machine a line can take seconds, and waiting longer costs
    /// a passing test nothing.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout.max(Duration::from_secs(10));
        loop {
            if let Some(line) = self
                .logs()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needles:?}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, then for its last log lines to be read (so `logs()`
    /// holds everything it wrote); returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                panic!("mllpd did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes end when the process is gone (nothing it started outlives it); the readers
        // may still be behind on a busy machine.
        let drained_by = Instant::now() + Duration::from_secs(10);
        while self.streams_open.load(Ordering::Acquire) > 0 {
            assert!(
                Instant::now() < drained_by,
                "mllpd exited but its output did not end within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        status.code()
    }

    /// User + system CPU time of the server process so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after_comm = stat.rsplit(')').next().expect("stat format");
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wraps a payload in an MLLP frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(SB);
    out.extend_from_slice(payload);
    out.extend_from_slice(&[EB, CR]);
    out
}

/// A small valid ADT^A01 with control id `id`, CR segment separators.
pub fn adt(id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ADT^A01^ADT_A01|{id}|P|2.5.1\r\
         EVN|A01|20260101120000\r\
         PID|1||12345^^^HOSP^MR||DOE^JOHN||19800101|M\r\
         PV1|1|I|WARD^101^1\r"
    )
    .into_bytes()
}

/// A client connection with a read buffer of frames.
pub struct Client {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    /// A client on a socket set up by the caller (buffer sizes, say); reads time out after 10 s.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_message(&mut self, payload: &[u8]) {
        self.send(&frame(payload));
    }

    /// Reads the next frame's payload; `None` at EOF or on a read error/timeout.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(start) = self.pending.iter().position(|&b| b == SB) {
                if let Some(end) = self.pending[start..]
                    .windows(2)
                    .position(|w| w == [EB, CR])
                    .map(|p| p + start)
                {
                    let payload = self.pending[start + 1..end].to_vec();
                    self.pending.drain(..end + 2);
                    return Some(payload);
                }
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads the next frame and returns it parsed as an ACK.
    pub fn read_ack(&mut self) -> Ack {
        let payload = self.read_frame().expect("an ACK frame");
        Ack::parse(&payload)
    }

    /// Reads the next frame and asserts it is, byte for byte, the ACK with MSA-1 `code` that
    /// [`adt`]`(id)` gets (MSH-7 and MSH-10 masked: see [`expected_adt_ack`]).
    #[track_caller]
    pub fn expect_adt_ack(&mut self, code: &str, id: &str) {
        let ack = self.read_ack();
        assert_eq!(ack.masked(), expected_adt_ack(code, id), "ACK for {id}");
    }

    /// True when the server closed the connection (EOF or reset) within `timeout`, with no
    /// further frame.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + timeout;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {
                    if Instant::now() > deadline {
                        return false;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// An ACK split into segments and fields (with `|` and `^`, as mllpd echoes the sender's).
#[derive(Debug, Clone)]
pub struct Ack {
    pub raw: Vec<u8>,
    pub segments: Vec<Vec<String>>,
}

impl Ack {
    pub fn parse(payload: &[u8]) -> Ack {
        let text = String::from_utf8_lossy(payload).to_string();
        let field_sep = text.chars().nth(3).unwrap_or('|');
        let segments = text
            .split('\r')
            .filter(|s| !s.is_empty())
            .map(|s| s.split(field_sep).map(str::to_owned).collect())
            .collect();
        Ack {
            raw: payload.to_vec(),
            segments,
        }
    }

    pub fn segment(&self, id: &str) -> Option<&Vec<String>> {
        self.segments.iter().find(|s| s[0] == id)
    }

    /// Field `n` of segment `id` (MSH numbering for MSH: MSH-3 is index 2 of the split).
    pub fn field(&self, id: &str, n: usize) -> String {
        let Some(segment) = self.segment(id) else {
            return String::new();
        };
        let index = if id == "MSH" { n - 1 } else { n };
        segment.get(index).cloned().unwrap_or_default()
    }

    pub fn code(&self) -> String {
        self.field("MSA", 1)
    }

    pub fn control_id(&self) -> String {
        self.field("MSA", 2)
    }
}

/// The value of `key=value` in a log line (quotes of a string value removed).
pub fn log_value(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(prefix.as_str()))
        .map(|value| value.trim_matches('"').to_owned())
}

/// The socket path this run asks for: `MLLPD_TEST_SOCKET_IO` (`.ci/run` sets `uring`, then
/// `glommio`), or `auto` when unset.
pub fn requested_socket_io() -> String {
    std::env::var("MLLPD_TEST_SOCKET_IO").unwrap_or_else(|_| "auto".to_owned())
}

/// The socket path a server started with `SOCKET_IO=requested` must name on its start line:
/// `auto` takes the shard's ring on Linux 6.1 or later (multishot receive, provided-buffer
/// rings and DEFER_TASKRUN are all there by then) and glommio's sockets before.
pub fn expected_socket_io(requested: &str) -> &'static str {
    match requested.to_ascii_lowercase().as_str() {
        "uring" => "uring",
        "glommio" => "glommio",
        "auto" if kernel_at_least(6, 1) => "uring",
        "auto" => "glommio",
        other => panic!("SOCKET_IO={other}: the tests know uring, glommio and auto"),
    }
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    found >= (major, minor)
}

/// Whether a test that needs something this machine may lack (a program, root) may go on.
///
/// Under CI (`CI=true`) a missing requirement FAILS the test: `.ci/install-deps` installs every
/// program the tests use and CI runs as root, so a skip there would hide a test that never ran.
/// Elsewhere the test prints why and returns early (it passes without having tested anything).
pub fn require(what: &str, present: bool, how_to_get_it: &str) -> bool {
    if present {
        return true;
    }
    let reason = format!("{what} is missing ({how_to_get_it})");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {reason}: .ci/install-deps must provide it"
    );
    eprintln!("SKIP: {reason}");
    false
}

/// [`require`] for a program on `PATH`.
pub fn require_program(name: &str, how_to_get_it: &str) -> bool {
    require(
        &format!("the program `{name}`"),
        on_path(name),
        how_to_get_it,
    )
}

/// [`require`] for root (mounting a file system, for one).
pub fn require_root(why: &str) -> bool {
    require(&format!("root ({why})"), is_root(), "run the tests as root")
}

/// Whether an executable file `name` is in a directory of `PATH`.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// The ACK payload mllpd must send for [`adt`]`(id)`, MSA-1 `code`, with MSH-7 (the ACK's time)
/// and MSH-10 (its own control id) as `*`, to compare with [`Ack::masked`].
pub fn expected_adt_ack(code: &str, id: &str) -> String {
    format!("MSH|^~\\&|RECVAPP|RECVFAC|SENDAPP|SENDFAC|*||ACK^A01^ACK|*|P|2.5.1\rMSA|{code}|{id}\r")
}

impl Ack {
    /// The payload with MSH-7 and MSH-10, the two fields that differ from ACK to ACK, as `*`
    /// (each only when valued, so an empty one still fails a comparison).
    pub fn masked(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw).into_owned();
        let Some(separator) = text.chars().nth(3) else {
            return text;
        };
        let (msh, rest) = text.split_once('\r').unwrap_or((&text, ""));
        let fields: Vec<&str> = msh
            .split(separator)
            .enumerate()
            .map(|(index, field)| match index {
                6 | 9 if !field.is_empty() => "*",
                _ => field,
            })
            .collect();
        let sep = separator.to_string();
        if text.contains('\r') {
            format!("{}\r{rest}", fields.join(&sep))
        } else {
            fields.join(&sep)
        }
    }
}

/// Polls `done` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on loopback that was free a moment ago (bound to port 0, then released): for
/// programs that must be told their port in advance (HAProxy's configuration, a container).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// What `mllpd journal export --output - --data-dir DATA_DIR` (plus `extra` arguments) writes
/// to stdout (asserts it succeeds). Safe while the server runs: only complete records are read.
pub fn journal_export(data_dir: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Vec<u8> {
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .args(["journal", "export", "--output", "-", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run journal export");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Control ids (MSH-10) of every message `mllpd journal export` writes for `data_dir`, in
/// journal order.
pub fn journal_control_ids(data_dir: &std::path::Path) -> Vec<String> {
    journal_export(data_dir, &[])
        .split(|&b| b == SB)
        .filter(|frame| frame.starts_with(b"MSH"))
        .map(|frame| {
            let msh = frame.split(|&b| b == CR).next().unwrap_or_default();
            let fields: Vec<&[u8]> = msh.split(|&b| b == b'|').collect();
            String::from_utf8_lossy(fields.get(9).copied().unwrap_or_default()).into_owned()
        })
        .collect()
}

/// The acknowledged ids missing from `journaled` (sorted), and the ids journaled more than once.
pub fn journal_losses(
    acked: &std::collections::HashSet<String>,
    journaled: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for id in journaled {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let mut missing: Vec<String> = acked
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .cloned()
        .collect();
    missing.sort();
    let twice = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, _)| (*id).to_owned())
        .collect();
    (missing, twice)
}
