//! Durable small files for delivery state: write to a temporary name, fsync it, rename it over
//! the final name, fsync the directory. A crash leaves either the old file or the new one, never
//! a mix, and once this returns the new one survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Prefix of temporary files (ignored by every reader; left over only by a crash).
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes `bytes` as `dir/name` atomically and durably.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        std::fs::rename(&temp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Give the space back (disk full); the old file, if any, is untouched.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// fsyncs a directory, so that names created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and its parents) and makes its name durable in its parent.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
