//! The audit trail (AUDIT_LOG): one JSON line per message decision, written by a thread of its
//! own with batched fsync, rotated by size with a bounded number of files.
//!
//! A line names the decision, never the message's content: time, shard, journal sequence (when
//! stored), peer, TLS client CN (when present), sending application and facility (MSH-3, MSH-4),
//! message type (MSH-9), control id (MSH-10), ACK code and the failed rule. Those header fields
//! are capped at `limits::AUDIT_FIELD_BYTES_MAX`. Shards format their lines and hand one batch per
//! answered chunk to a bounded queue ([`AuditSender::send`]); when it is full the shard waits
//! (its ACKs are delayed: back-pressure), it never drops a line. The writer drains whatever is
//! queued, writes it, fdatasyncs once, and retries a failed write every second (the queue fills
//! and the shards wait) rather than losing lines.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use tracing::{error, info};

use crate::limits::{AUDIT_FIELD_BYTES_MAX, AUDIT_QUEUE_BATCHES, AUDIT_RETRY_INTERVAL};

/// Options of the audit trail.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// The file written (AUDIT_LOG); rotated files get `.1`, `.2`, … appended.
    pub path: PathBuf,
    /// Rotate once the file would grow past this many bytes.
    pub file_bytes_max: u64,
    /// Files kept, the current one included (at least 1).
    pub files_max: usize,
}

/// Where shards hand their audit lines; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditSender(SyncSender<Vec<u8>>);

/// Why [`AuditSender::send`] could not hand a batch over.
#[derive(Debug, thiserror::Error)]
#[error("the audit log writer has stopped")]
pub struct AuditStopped;

impl AuditSender {
    /// Queues `batch` (whole lines); when the queue is full, waits (polling every millisecond on
    /// the shard's timer, so the shard's other connections keep running) until there is room.
    pub async fn send(&self, batch: Vec<u8>) -> Result<(), AuditStopped> {
        let mut batch = batch;
        loop {
            match self.0.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    crate::timers::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(AuditStopped),
            }
        }
    }
}

/// One decision, as written.
#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    /// When the read that completed the frame returned (RFC 3339, UTC, µs).
    pub time: String,
    /// The shard that decided.
    pub shard: usize,
    /// Journal sequence number within the shard, when stored.
    pub seq: Option<u64>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The TLS client certificate's CN, when the connection is TLS with a client certificate.
    pub tls_client_cn: Option<&'a str>,
    /// MSH-3.
    pub sending_application: Option<String>,
    /// MSH-4.
    pub sending_facility: Option<String>,
    /// MSH-9 message type and trigger event, e.g. `ADT^A01`.
    pub message_type: Option<String>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSA-1 of the ACK sent, or `none` when MSH-15 suppressed it.
    pub ack_code: &'a str,
    /// The validation rule that failed, if any.
    pub rule: Option<&'a str>,
    /// Why the frame was not accepted, as a fixed kind: `unparsed`, `rule`, `evaluation`,
    /// `not_stored`; none when accepted.
    pub cause: Option<&'static str>,
}

/// A header field as audit text: lossy UTF-8, capped at `AUDIT_FIELD_BYTES_MAX` bytes.
pub fn field(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let capped = &bytes[..bytes.len().min(AUDIT_FIELD_BYTES_MAX)];
    Some(String::from_utf8_lossy(capped).into_owned())
}

/// RFC 3339 UTC time of `unix_micros`.
pub fn time(unix_micros: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(unix_micros);
    humantime::format_rfc3339_micros(at).to_string()
}

impl AuditLine<'_> {
    /// Appends this line (JSON and a newline) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }
}

/// Waits, at shutdown, until every line queued before is written and durable.
#[derive(Debug)]
pub struct AuditFlush {
    /// The queue (an empty batch is the flush marker).
    tx: SyncSender<Vec<u8>>,
    /// Told when the writer reached the marker.
    done: Receiver<()>,
}

impl AuditFlush {
    /// Writes out everything queued so far; false when that took longer than `timeout` or the
    /// writer is gone.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.tx.send(Vec::new()).is_ok() && self.done.recv_timeout(timeout).is_ok()
    }
}

/// Opens (creating) the audit file and starts its writer thread.
pub fn start(options: AuditOptions) -> io::Result<(AuditSender, AuditFlush)> {
    assert!(options.files_max >= 1, "at least the current file");
    let file = open(&options.path)?;
    let bytes = file.metadata()?.len();
    let (tx, rx) = mpsc::sync_channel(AUDIT_QUEUE_BATCHES);
    let (done_tx, done) = mpsc::channel();
    let mut writer = Writer {
        options,
        file,
        bytes,
    };
    std::thread::Builder::new()
        .name("mllpd-audit".to_owned())
        .spawn(move || writer.run(&rx, &done_tx))?;
    let flush = AuditFlush {
        tx: tx.clone(),
        done,
    };
    Ok((AuditSender(tx), flush))
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread's state.
struct Writer {
    /// Options.
    options: AuditOptions,
    /// The current file.
    file: File,
    /// Its size.
    bytes: u64,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Vec<u8>>, done: &mpsc::Sender<()>) {
        info!(path = %self.options.path.display(), "audit log writer started");
        // Ends when every sender is gone (the process is exiting).
        while let Ok(first) = rx.recv() {
            // Everything queued, up to a flush marker (an empty batch), in one write.
            let mut flush = first.is_empty();
            let mut batch = first;
            while !flush {
                match rx.try_recv() {
                    Ok(more) if more.is_empty() => flush = true,
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write_retrying(&batch);
            }
            if flush {
                let _ = done.send(());
            }
        }
    }

    /// Writes `batch`, retrying every `AUDIT_RETRY_INTERVAL` until it succeeds: meanwhile the
    /// queue fills and the shards wait.
    fn write_retrying(&mut self, batch: &[u8]) {
        while let Err(e) = self.write(batch) {
            error!(error = %e, path = %self.options.path.display(),
                "audit log write failed; retrying (shards wait: nothing is dropped)");
            std::thread::sleep(AUDIT_RETRY_INTERVAL);
        }
    }

    /// Writes `batch` (whole lines), rotating first when it would pass the size bound, and
    /// makes it durable with one fdatasync. A retry after a failure rewrites the whole batch:
    /// a line may then appear twice, never lost.
    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        if self.bytes > 0 && self.bytes + batch.len() as u64 > self.options.file_bytes_max {
            self.rotate()?;
        }
        self.file.write_all(batch)?;
        self.file.sync_data()?;
        self.bytes += batch.len() as u64;
        Ok(())
    }

    /// `path.(n-1)` → `path.n` … `path` → `path.1`, the oldest beyond `files_max` deleted.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.options.files_max;
        let name = |n: usize| {
            let mut os = self.options.path.clone().into_os_string();
            os.push(format!(".{n}"));
            PathBuf::from(os)
        };
        if keep == 1 {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.options.path)?;
        } else {
            let _ = std::fs::remove_file(name(keep - 1));
            for n in (1..keep - 1).rev() {
                if name(n).exists() {
                    std::fs::rename(name(n), name(n + 1))?;
                }
            }
            std::fs::rename(&self.options.path, name(1))?;
            self.file = open(&self.options.path)?;
        }
        if let Some(dir) = self
            .options
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            File::open(dir)?.sync_all()?;
        }
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_at_most_files_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let options = AuditOptions {
            path: path.clone(),
            file_bytes_max: 100,
            files_max: 3,
        };
        let mut writer = Writer {
            file: open(&path).unwrap(),
            bytes: 0,
            options,
        };
        for i in 0..20 {
            writer
                .write(format!("{{\"line\":{i:040}}}\n").as_bytes())
                .unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 100, "{name}: {len}");
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with(&format!("{:040}}}\n", 19)), "{newest}");
    }

    #[test]
    fn a_full_queue_makes_the_shard_wait_and_drops_nothing() {
        let (tx, rx) = mpsc::sync_channel(1);
        let sender = AuditSender(tx);
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                sender.send(b"a\n".to_vec()).await.unwrap();
                let waiting = {
                    let sender = sender.clone();
                    glommio::spawn_local(async move { sender.send(b"b\n".to_vec()).await })
                };
                // The queue is full: the second batch waits rather than being dropped.
                glommio::timer::sleep(Duration::from_millis(30)).await;
                assert_eq!(rx.try_recv().unwrap(), b"a\n");
                waiting.await.unwrap();
                assert_eq!(rx.try_recv().unwrap(), b"b\n");
                drop(rx);
                assert!(sender.send(b"c\n".to_vec()).await.is_err(), "writer gone");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_line_is_one_json_object_with_capped_fields() {
        let long = vec![b'A'; AUDIT_FIELD_BYTES_MAX + 10];
        let line = AuditLine {
            time: time(1_700_000_000_000_001),
            shard: 1,
            seq: Some(7),
            peer: None,
            tls_client_cn: None,
            sending_application: field(b"APP\"x"),
            sending_facility: field(&long),
            message_type: field(b"ADT^A01"),
            control_id: field(b"C-1"),
            ack_code: "AA",
            rule: None,
            cause: None,
        };
        let mut out = Vec::new();
        line.write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["time"], "2023-11-14T22:13:20.000001Z");
        assert_eq!(value["sending_application"], "APP\"x");
        assert_eq!(
            value["sending_facility"].as_str().unwrap().len(),
            AUDIT_FIELD_BYTES_MAX
        );
        assert_eq!(value["seq"], 7);
    }
}
