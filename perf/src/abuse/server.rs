//! The server under attack: start `mllpd` on 127.0.0.1:0 with a fresh DATA_DIR, learn its port
//! from the start line, count what its log says about closes and accept failures (never the
//! content of a line beyond those fields), read its footprint from /proc, stop it, and export
//! its journal.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Harness, Scenario, SB};

/// What the server's log said, counted.
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    /// `reason=…` of every "connection closed" line.
    pub reasons: BTreeMap<String, u64>,
    /// Lines saying an accept failed.
    pub accept_failures: u64,
}

/// A running `mllpd`; killed on drop if still running.
pub struct Mllpd {
    /// The process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Log counters, filled by the reader threads.
    stats: Arc<Mutex<LogStats>>,
}

/// A fresh, empty directory under `parent`.
pub fn scratch_dir(parent: &Path) -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!("mllpd-abuse-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

impl Mllpd {
    /// Starts the server for `scenario` (under `prlimit` when it sets a descriptor limit).
    pub fn start(harness: &Harness, scenario: &Scenario, data_dir: &Path) -> Result<Mllpd, String> {
        let mut command = match scenario.server_nofile {
            Some(n) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(&harness.mllpd);
                command
            }
            None => Command::new(&harness.mllpd),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("LOG_LEVEL", "info")
            .env("LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env("DATA_DIR", data_dir)
            .env("SOCKET_IO", &harness.socket_io)
            .env("MAX_FRAME_SIZE", scenario.frame_bytes_max.to_string())
            .envs(scenario.server_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", harness.mllpd.display()))?;
        let stats = Arc::new(Mutex::new(LogStats::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let stats = stats.clone();
            let addr_tx = addr_tx.clone();
            let echo = harness.echo;
            std::thread::spawn(move || read_log(stream, &stats, &addr_tx, echo));
        }
        match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(Mllpd { child, addr, stats }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("mllpd did not print its start line within 30 s".to_owned())
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after it); the exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// The log counters so far.
    pub fn log_stats(&self) -> LogStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Mllpd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_log(
    stream: Box<dyn Read + Send>,
    stats: &Mutex<LogStats>,
    addr_tx: &std::sync::mpsc::Sender<SocketAddr>,
    echo: bool,
) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if echo {
            eprintln!("[mllpd] {line}");
        }
        if let Some(addr) = field(&line, "listen=").and_then(|a| a.parse().ok()) {
            let _ = addr_tx.send(addr);
        }
        let Ok(mut stats) = stats.lock() else { break };
        if line.contains("connection closed") {
            if let Some(reason) = field(&line, "reason=") {
                *stats.reasons.entry(reason.to_owned()).or_default() += 1;
            }
        }
        if line.contains("accept failed") {
            stats.accept_failures += 1;
        }
    }
}

/// The value after `key` up to the next space, without quotes.
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let rest = line.split(key).nth(1)?;
    Some(rest.split_whitespace().next()?.trim_matches('"'))
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open descriptors of `pid`: (all, those on files under `data_dir`). The journal opens and
/// readies segment files as it grows, so those are not a leak; every other descriptor is.
pub fn fds(pid: u32, data_dir: &Path) -> Option<(usize, usize)> {
    let mut all = 0;
    let mut journal = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        all += 1;
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(data_dir)) {
            journal += 1;
        }
    }
    Some((all, journal))
}

/// What each descriptor of `pid` besides its journal files points at (`socket:[…]`,
/// `anon_inode:[io_uring]`, …), with its number.
pub fn fd_targets(pid: u32, data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            (!target.starts_with(data_dir)).then(|| {
                format!(
                    "{}={}",
                    entry.file_name().to_string_lossy(),
                    target.display()
                )
            })
        })
        .collect()
}

/// User + system CPU time of `pid` (clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let after_comm = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Waits until `pid` holds `baseline` descriptors or fewer besides its journal files; `Some`
/// when it got there in time.
pub fn wait_fds(pid: u32, data_dir: &Path, baseline: usize, timeout: Duration) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if fds(pid, data_dir).is_some_and(|(all, journal)| all - journal <= baseline) {
            return Some(());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Raises this process's RLIMIT_NOFILE to at least `needed` (children inherit it).
pub fn raise_nofile(needed: u64) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= needed {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard.max(needed)).map_err(|e| {
        format!("RLIMIT_NOFILE {soft}:{hard} and cannot raise it to {needed}: {e} (ulimit -n)")
    })
}

/// Control ids (MSH-10) of every message `mllpd journal export` writes for `data_dir`.
pub fn exported_ids(mllpd: &Path, data_dir: &Path) -> Result<Vec<String>, String> {
    let output = Command::new(mllpd)
        .args(["journal", "export", "--output", "-", "--data-dir"])
        .arg(data_dir)
        .output()
        .map_err(|e| format!("journal export: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "journal export failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output
        .stdout
        .split(|&b| b == SB)
        .filter(|frame| frame.starts_with(b"MSH"))
        .filter_map(|frame| {
            let separator = *frame.get(3)?;
            let msh = frame.split(|&b| b == super::CR).next()?;
            let id = msh.split(|&b| b == separator).nth(9)?;
            Some(String::from_utf8_lossy(id).into_owned())
        })
        .collect())
}
