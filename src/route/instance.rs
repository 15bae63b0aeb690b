//! The id of this DATA_DIR as a source of messages: 16 hex digits, made at random the first time
//! delivery starts and kept in `DATA_DIR/connectors/instance` (written durably before first
//! use). Destinations that de-duplicate (`postgres`' key, `nats`' `Nats-Msg-Id`) key on
//! (instance, shard, sequence): shard and sequence alone repeat across mllpd instances that
//! share a destination, and in a DATA_DIR started afresh, and such messages must never be taken
//! for duplicates. The id stays the same across restarts, which is what makes a re-send after a
//! crash a duplicate.

use std::io::Read;
use std::path::Path;

use super::{durable, CONNECTORS_DIR};

/// The file's name under `DATA_DIR/connectors/`.
pub const FILE_NAME: &str = "instance";

/// Reads the id, making it first if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<String, String> {
    let dir = data_dir.join(CONNECTORS_DIR);
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(id.to_owned());
            }
            return Err(format!("{}: not an instance id", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let mut random = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
    durable::create_dir(&dir)
        .and_then(|()| durable::write_atomic(&dir, FILE_NAME, format!("{id}\n").as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let data = tempfile::tempdir().unwrap();
        let first = load_or_create(data.path()).unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(load_or_create(data.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first);
    }
}
