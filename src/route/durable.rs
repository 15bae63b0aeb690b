//! Durable small files for delivery state: write to a temporary name, fsync it, rename it over
//! the final name, fsync the directory. A crash leaves either the old file or the new one, never
//! a mix, and once this returns the new one survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Prefix of temporary files (ignored by every reader; left over only by a crash).
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes `bytes` as `dir/name` atomically and durably.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = write_temp(dir, name, bytes)?;
    let result = std::fs::rename(&temp, dir.join(name)).and_then(|()| sync_dir(dir));
    if result.is_err() {
        // Give the space back (disk full); the old file, if any, is untouched.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The first half of [`write_atomic`]: writes `bytes` under the temporary name of `name` in
/// `dir` and fdatasyncs it; returns that path. The caller renames it over `dir/name` and, before
/// relying on the new name, fsyncs `dir` (one directory fsync can serve many files).
pub fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let (temp, file) = write_temp_unsynced(dir, name, bytes)?;
    match file.sync_data() {
        Ok(()) => Ok(temp),
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error)
        }
    }
}

/// [`write_temp`] without its fdatasync: the caller syncs the returned file (several at once)
/// before renaming it.
pub fn write_temp_unsynced(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<(PathBuf, File)> {
    let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        Ok(file)
    })();
    match result {
        Ok(file) => Ok((temp, file)),
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error)
        }
    }
}

/// fdatasyncs every file of `files` at once, through `ring` when there is one (else one after
/// the other); returns each file's result. Issued together, the syncs of a batch share the
/// filesystem's journal commits and the device's cache flushes (the kernel coalesces concurrent
/// ones), where one after the other each costs its own flush on the disk the shards' journals
/// fdatasync on. No crate issues a set of fsyncs concurrently from a blocking thread; the ring
/// is io-uring's.
pub fn sync_data_all(
    ring: &mut Option<io_uring::IoUring>,
    files: &[File],
) -> Vec<std::io::Result<()>> {
    if let Some(uring) = ring {
        match sync_data_ring(uring, files) {
            Ok(results) => return results,
            Err(error) => {
                // The ring itself failed (not a file's sync): drop it, sync one by one from now.
                tracing::warn!(%error, "io_uring fsync failed; file connector syncs one by one");
                *ring = None;
            }
        }
    }
    files.iter().map(File::sync_data).collect()
}

/// [`sync_data_all`] through `ring`: IORING_OP_FSYNC with DATASYNC for every file, in chunks of
/// the ring's size, each chunk submitted at once and all its completions reaped before the next.
#[allow(unsafe_code)]
fn sync_data_ring(
    ring: &mut io_uring::IoUring,
    files: &[File],
) -> std::io::Result<Vec<std::io::Result<()>>> {
    use io_uring::{opcode, types};
    use std::os::fd::AsRawFd;
    let mut results: Vec<std::io::Result<()>> = Vec::with_capacity(files.len());
    let chunk_len = ring.params().sq_entries() as usize;
    for (chunk_index, chunk) in files.chunks(chunk_len).enumerate() {
        let base = chunk_index * chunk_len;
        for (i, file) in chunk.iter().enumerate() {
            let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data((base + i) as u64);
            // SAFETY: the entry holds no pointer, only `file`'s descriptor, which stays open
            // (borrowed from `files`) until this chunk's completions are all reaped below.
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
        }
        let mut chunk_results: Vec<Option<std::io::Result<()>>> =
            (0..chunk.len()).map(|_| None).collect();
        let mut reaped = 0;
        while reaped < chunk.len() {
            match ring.submit_and_wait(chunk.len() - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for completion in ring.completion() {
                let index = (completion.user_data() as usize).wrapping_sub(base);
                let result = match completion.result() {
                    n if n < 0 => Err(std::io::Error::from_raw_os_error(-n)),
                    _ => Ok(()),
                };
                if let Some(slot) = chunk_results.get_mut(index) {
                    *slot = Some(result);
                    reaped += 1;
                }
            }
        }
        results.extend(chunk_results.into_iter().map(|r| r.unwrap_or(Ok(()))));
    }
    Ok(results)
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
