//! `mllpd dlq list|show|replay|purge --connector NAME [--data-dir D]`: the operator's side of a
//! connector's dead letters. Plain file operations, safe while the server runs: a replay moves
//! the dead letter (an atomic rename) into the connector's `replay/` directory, where the
//! running server's worker for that shard notices it within [`REPLAY_CHECK_INTERVAL`] and
//! delivers it after every message pending then (durable when noticed), with the usual
//! retries, and removes it; a server
//! that is not running does so at its next start. A replay that fails again is a dead letter
//! again.
//!
//! [`REPLAY_CHECK_INTERVAL`]: crate::limits::REPLAY_CHECK_INTERVAL

use std::io::Write;
use std::path::{Path, PathBuf};

use super::dead_letter::{self, DIR_NAME, REPLAY_DIR_NAME};
use super::{connector_dir, durable};

/// The connector's directory, which must exist.
fn existing(data_dir: &Path, connector: &str) -> Result<PathBuf, String> {
    let dir = connector_dir(data_dir, connector);
    if !dir.is_dir() {
        return Err(format!(
            "no connector {connector:?} in {} (its directory {} is missing)",
            data_dir.display(),
            dir.display()
        ));
    }
    Ok(dir)
}

/// The id of a dead-letter file (its name without `.dl`).
fn id_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The dead letters named by `ids` (or all of them).
fn selected(dir: &Path, ids: &[String], all: bool) -> Result<Vec<PathBuf>, String> {
    let letters = dead_letter::list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if all {
        return Ok(letters);
    }
    if ids.is_empty() {
        return Err("name the dead letters (ids as `mllpd dlq list` prints them) or --all".into());
    }
    ids.iter()
        .map(|id| {
            letters
                .iter()
                .find(|p| id_of(p) == *id)
                .cloned()
                .ok_or_else(|| format!("no dead letter {id:?}"))
        })
        .collect()
}

/// Prints one line per dead letter.
pub fn list(data_dir: &Path, connector: &str, out: &mut dyn Write) -> Result<(), String> {
    let dir = existing(data_dir, connector)?;
    let letters = dead_letter::list(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for path in &letters {
        let (fields, payload) = dead_letter::read(path)?;
        let mut line = id_of(path);
        for (key, value) in &fields {
            line.push_str(&format!(" {key}={value:?}"));
        }
        line.push_str(&format!(" bytes={}", payload.len()));
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    writeln!(out, "{} dead letter(s)", letters.len()).map_err(|e| e.to_string())
}

/// Prints a dead letter's header, a blank line, and its message as received.
pub fn show(data_dir: &Path, connector: &str, id: &str, out: &mut dyn Write) -> Result<(), String> {
    let dir = existing(data_dir, connector)?;
    let path = selected(&dir, &[id.to_owned()], false)?;
    let (fields, payload) = dead_letter::read(&path[0])?;
    for (key, value) in &fields {
        writeln!(out, "{key}: {value}").map_err(|e| e.to_string())?;
    }
    writeln!(out).map_err(|e| e.to_string())?;
    out.write_all(&payload).map_err(|e| e.to_string())?;
    writeln!(out).map_err(|e| e.to_string())
}

/// Moves dead letters into the connector's replay directory; returns how many.
pub fn replay(
    data_dir: &Path,
    connector: &str,
    ids: &[String],
    all: bool,
) -> Result<usize, String> {
    let dir = existing(data_dir, connector)?;
    let paths = selected(&dir, ids, all)?;
    let replay = dir.join(REPLAY_DIR_NAME);
    durable::create_dir(&replay).map_err(|e| format!("{}: {e}", replay.display()))?;
    for path in &paths {
        let name = path.file_name().unwrap_or_default();
        std::fs::rename(path, replay.join(name)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for synced in [&replay, &dir.join(DIR_NAME)] {
        durable::sync_dir(synced).map_err(|e| format!("{}: {e}", synced.display()))?;
    }
    Ok(paths.len())
}

/// Deletes dead letters; returns how many.
pub fn purge(data_dir: &Path, connector: &str, ids: &[String], all: bool) -> Result<usize, String> {
    let dir = existing(data_dir, connector)?;
    let paths = selected(&dir, ids, all)?;
    for path in &paths {
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let letters = dir.join(DIR_NAME);
    if letters.is_dir() {
        durable::sync_dir(&letters).map_err(|e| format!("{}: {e}", letters.display()))?;
    }
    Ok(paths.len())
}
