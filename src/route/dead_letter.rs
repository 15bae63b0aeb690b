//! Dead letters: messages a connector gave up on, stored durably per connector with why, how
//! many attempts were made and when, so that an operator can look at them and replay them.
//!
//! One file per message in `DATA_DIR/connectors/NAME/dead-letters/`, named
//! `SHARD-SEQUENCE.dl` (zero-padded, so names sort in journal order per shard), written
//! atomically ([`super::durable::write_atomic`]) *before* the cursor moves past the message: a
//! crash between the two stores it again under the same name, never loses it. The file is a
//! short text header, a blank line, then the payload exactly as received:
//!
//! ```text
//! mllpd-dead-letter 1
//! shard: 0
//! sequence: 42
//! attempts: 3
//! time: 2026-12-02T05:30:00.123456Z
//! reason: downstream answered AR
//!
//! MSH|^~\&|…
//! ```
//!
//! The reason never quotes the message; it is still patient-adjacent (the directory holds the
//! payloads), so it is logged at debug level only.

use std::path::{Path, PathBuf};

use super::durable;

/// The sub-directory of a connector's directory holding its dead letters.
pub const DIR_NAME: &str = "dead-letters";

/// The sub-directory where `mllpd dlq replay` puts dead letters for the server to deliver again.
pub const REPLAY_DIR_NAME: &str = "replay";

/// First line of a dead-letter file.
const HEADER: &str = "mllpd-dead-letter 1";

/// What is stored with a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The shard whose journal holds the message.
    pub shard: usize,
    /// Its sequence number there.
    pub seq: u64,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was given up, µs since the Unix epoch.
    pub time_unix_micros: u64,
    /// Why (one line, no message content).
    pub reason: String,
}

/// The file name of the dead letter of (`shard`, `seq`).
pub fn file_name(shard: usize, seq: u64) -> String {
    format!("{shard:03}-{seq:020}.dl")
}

/// Stores `letter` with `payload` under `connector_dir`, durably.
pub fn store(connector_dir: &Path, letter: &DeadLetter, payload: &[u8]) -> std::io::Result<()> {
    let dir = connector_dir.join(DIR_NAME);
    durable::create_dir(&dir)?;
    let time = humantime::format_rfc3339_micros(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(letter.time_unix_micros),
    );
    let reason: String = letter
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut bytes = format!(
        "{HEADER}\nshard: {}\nsequence: {}\nattempts: {}\ntime: {time}\nreason: {reason}\n\n",
        letter.shard, letter.seq, letter.attempts
    )
    .into_bytes();
    bytes.extend_from_slice(payload);
    durable::write_atomic(&dir, &file_name(letter.shard, letter.seq), &bytes)
}

/// The dead-letter files of a connector, in name order.
pub fn list(connector_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files(&connector_dir.join(DIR_NAME))
}

/// The dead letters waiting for replay in a connector's directory, in name order.
pub fn replays(connector_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files(&connector_dir.join(REPLAY_DIR_NAME))
}

/// The `.dl` files of `dir` (none if it does not exist), in name order.
fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "dl") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// A dead letter's header fields (`key`, `value`), in file order.
pub type Fields = Vec<(String, String)>;

/// Reads a dead-letter file back: its header fields and the payload.
pub fn read(path: &Path) -> Result<(Fields, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let split = memchr::memmem::find(&bytes, b"\n\n")
        .ok_or_else(|| format!("{}: not a dead letter", path.display()))?;
    let header = std::str::from_utf8(&bytes[..split])
        .map_err(|_| format!("{}: not a dead letter", path.display()))?;
    let mut lines = header.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("{}: not a dead letter", path.display()));
    }
    let fields = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((fields, bytes[split + 2..].to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_letters_read_back_in_journal_order() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [10, 9] {
            let letter = DeadLetter {
                shard: 1,
                seq,
                attempts: 3,
                time_unix_micros: 1_700_000_000_000_000,
                reason: "downstream answered AR\r\nx".to_owned(),
            };
            store(dir.path(), &letter, b"MSH|^~\\&|\r\n\nPID|").unwrap();
        }
        let files = list(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with(file_name(1, 9)));
        let (fields, payload) = read(&files[1]).unwrap();
        assert_eq!(payload, b"MSH|^~\\&|\r\n\nPID|");
        assert!(fields.contains(&("sequence".to_owned(), "10".to_owned())));
        assert!(fields.contains(&("attempts".to_owned(), "3".to_owned())));
        assert!(fields.contains(&("reason".to_owned(), "downstream answered AR  x".to_owned())));
    }
}
