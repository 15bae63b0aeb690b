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
//! received: 2026-12-02T05:29:58.000042Z
//! peer: 10.1.2.3
//! client_cn: lab-system
//! client_sans: lab.example.org, 10.1.2.3
//! client_identity: 01…
//!
//! The lines after `reason` are the message's origin from its journal record ([`Origin`]), each
//! only when recorded: receive time, sender address, and the verified TLS client identity (CN
//! and SANs to read; `client_identity` is the record's section in hex, so a replay hands the
//! connector exactly what the journal held).
//!
//! MSH|^~\&|…
//! ```
//!
//! The reason never quotes the message; it is still patient-adjacent (the directory holds the
//! payloads), so it is logged at debug level only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::durable;
use crate::journal::ClientIdentity;

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
    /// Where and when the message came from.
    pub origin: Origin,
}

/// A message's origin as its journal record holds it, kept with its dead letter so that a
/// replay delivers it as the first attempt did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// When it was received, µs since the Unix epoch.
    pub received_unix_micros: Option<u64>,
    /// The sender's address, if recorded.
    pub peer: Option<IpAddr>,
    /// The verified TLS client identity section (journal encoding); empty: none.
    pub client: Vec<u8>,
}

impl Origin {
    /// The origin stored in a dead letter's `fields` (what is missing or unreadable is `None`
    /// or empty: a dead letter written before these lines existed has none).
    pub fn from_fields(fields: &Fields) -> Origin {
        let value = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let received_unix_micros = value("received")
            .and_then(|v| humantime::parse_rfc3339(v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_micros()).ok());
        let client = value("client_identity")
            .and_then(from_hex)
            .filter(|section| ClientIdentity::parse(section).is_ok())
            .unwrap_or_default();
        Origin {
            received_unix_micros,
            peer: value("peer").and_then(|v| v.parse().ok()),
            client,
        }
    }

    /// Its header lines (`key: value\n`), each only when known.
    fn lines(&self) -> String {
        let mut out = String::new();
        if let Some(us) = self.received_unix_micros {
            let time = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us));
            out.push_str(&format!("received: {time}\n"));
        }
        if let Some(peer) = self.peer {
            out.push_str(&format!("peer: {peer}\n"));
        }
        if let Ok(client) = ClientIdentity::parse(&self.client) {
            if let Some(cn) = client.cn() {
                out.push_str(&format!("client_cn: {}\n", one_line(cn)));
            }
            let sans: Vec<String> = client.sans().map(one_line).collect();
            if !sans.is_empty() {
                out.push_str(&format!("client_sans: {}\n", sans.join(", ")));
            }
            out.push_str(&format!("client_identity: {}\n", to_hex(&self.client)));
        }
        out
    }
}

/// `text` on one line: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Lower-case hex of `bytes` (a few hundred bytes at most: not worth a crate).
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex `text`; `None` if it is not hex.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
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
    let reason = one_line(&letter.reason);
    let mut bytes = format!(
        "{HEADER}\nshard: {}\nsequence: {}\nattempts: {}\ntime: {time}\nreason: {reason}\n{}\n",
        letter.shard,
        letter.seq,
        letter.attempts,
        letter.origin.lines()
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
                origin: Origin::default(),
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

    #[test]
    fn the_origin_is_stored_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // CN "lab\n1", SANs "lab.example.org" and "10.1.2.3" (the journal's section encoding).
        let mut client = vec![1, 5, 0];
        client.extend_from_slice(b"lab\n1");
        client.extend_from_slice(&[2, 0, 15, 0]);
        client.extend_from_slice(b"lab.example.org");
        client.extend_from_slice(&[8, 0]);
        client.extend_from_slice(b"10.1.2.3");
        let origin = Origin {
            received_unix_micros: Some(1_700_000_000_123_456),
            peer: Some("10.1.2.3".parse().unwrap()),
            client,
        };
        let letter = DeadLetter {
            shard: 0,
            seq: 3,
            attempts: 1,
            time_unix_micros: 1_700_000_001_000_000,
            reason: "AR".to_owned(),
            origin: origin.clone(),
        };
        store(dir.path(), &letter, b"MSH|").unwrap();
        let (fields, payload) = read(&list(dir.path()).unwrap()[0]).unwrap();
        assert_eq!(payload, b"MSH|");
        assert_eq!(Origin::from_fields(&fields), origin);
        let field = |key: &str| fields.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(field("received"), "2023-11-14T22:13:20.123456Z");
        assert_eq!(field("client_cn"), "lab 1");
        assert_eq!(field("client_sans"), "lab.example.org, 10.1.2.3");
        // Written before origins were kept: nothing, not garbage.
        assert_eq!(Origin::from_fields(&Vec::new()), Origin::default());
    }
}
