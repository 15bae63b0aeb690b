//! The `file` connector: one file per message in a directory, `SHARD-SEQUENCE.hl7`
//! (zero-padded: names sort in journal order within a shard), holding the payload exactly as
//! received, written atomically and durably (write, fsync, rename, fsync the directory) before
//! the message counts as delivered. Re-delivery after a crash writes the same name again, so the
//! directory never holds a message twice.
//!
//! A batch (what the journal had ready, up to [`crate::limits::DELIVERY_BATCH_RECORDS_MAX`])
//! costs one directory fsync instead of one per message: every file is written under its
//! temporary name, then all are fdatasynced at once (io_uring: concurrent syncs share the
//! filesystem journal's commits and the device's cache flushes), then all are renamed in order,
//! then the directory is fsynced once, and only then is the batch confirmed. A failure anywhere confirms only the files renamed
//! before it, and only once the directory fsync succeeded; the rest go one by one (retried,
//! counted) and rewrite the same names.

use std::path::PathBuf;

use super::{durable, Delivery, Destination, Outcome};
use crate::limits::FILE_SYNC_RING_ENTRIES;

/// Delivers into a directory.
pub struct FileDestination {
    /// The directory.
    dir: PathBuf,
    /// The directory was created (and its name made durable).
    ready: bool,
    /// The ring a batch's fdatasyncs go through together (`None`: unavailable, one by one).
    ring: Option<io_uring::IoUring>,
}

impl std::fmt::Debug for FileDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDestination")
            .field("dir", &self.dir)
            .field("ready", &self.ready)
            .field("ring", &self.ring.is_some())
            .finish()
    }
}

impl FileDestination {
    /// A destination writing into `dir` (created at the first delivery).
    pub fn new(dir: PathBuf) -> FileDestination {
        FileDestination {
            dir,
            ready: false,
            ring: io_uring::IoUring::new(FILE_SYNC_RING_ENTRIES).ok(),
        }
    }

    /// The file name of the message (`shard`, `seq`).
    pub fn file_name(shard: usize, seq: u64) -> String {
        format!("{shard:03}-{seq:020}.hl7")
    }
}

impl FileDestination {
    /// Creates the directory at the first delivery.
    fn ready(&mut self) -> Result<(), String> {
        if !self.ready {
            durable::create_dir(&self.dir)
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
            self.ready = true;
        }
        Ok(())
    }
}

impl Destination for FileDestination {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
        if let Err(reason) = self.ready() {
            return Outcome::Failed(reason);
        }
        let name = FileDestination::file_name(delivery.shard, delivery.seq);
        match durable::write_atomic(&self.dir, &name, delivery.payload) {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::Failed(format!("cannot write into {}: {e}", self.dir.display())),
        }
    }

    fn batches(&self) -> bool {
        true
    }

    fn gather(&self) -> std::time::Duration {
        crate::limits::FILE_BATCH_GATHER
    }

    fn deliver_batch(&mut self, batch: &[Delivery<'_>]) -> usize {
        if self.ready().is_err() {
            return 0;
        }
        let mut temps = Vec::with_capacity(batch.len());
        let mut files = Vec::with_capacity(batch.len());
        for delivery in batch {
            let name = FileDestination::file_name(delivery.shard, delivery.seq);
            match durable::write_temp_unsynced(&self.dir, &name, delivery.payload) {
                Ok((temp, file)) => {
                    temps.push((temp, name));
                    files.push(file);
                }
                Err(_) => break, // Sent again alone, which reports why.
            }
        }
        // Only the files synced before the first that failed may be renamed.
        let synced = durable::sync_data_all(&mut self.ring, &files)
            .iter()
            .take_while(|r| r.is_ok())
            .count();
        drop(files);
        let mut renamed = 0;
        for (temp, name) in &temps[..synced] {
            if std::fs::rename(temp, self.dir.join(name)).is_err() {
                break;
            }
            renamed += 1;
        }
        for (temp, _) in &temps[renamed..] {
            let _ = std::fs::remove_file(temp); // Give the space back (disk full).
        }
        if renamed == 0 || durable::sync_dir(&self.dir).is_err() {
            return 0; // The new names may not survive a crash: confirm nothing.
        }
        renamed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn delivery(seq: u64, payload: &[u8]) -> Delivery<'_> {
        Delivery {
            shard: 1,
            seq,
            payload,
            control_id: b"",
            client: None,
            received_unix_micros: None,
            peer: None,
        }
    }

    #[test]
    fn a_batch_is_written_whole_and_confirmed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut destination = FileDestination::new(out.clone());
        let batch = [delivery(7, b"MSH|a"), delivery(8, b"MSH|b")];
        assert_eq!(destination.deliver_batch(&batch), 2);
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                FileDestination::file_name(1, 7),
                FileDestination::file_name(1, 8)
            ]
        );
        let read = std::fs::read(out.join(FileDestination::file_name(1, 8))).unwrap();
        assert_eq!(read, b"MSH|b");
    }

    #[test]
    fn a_failed_batch_confirms_only_what_was_renamed_before_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut destination = FileDestination::new(out.clone());
        assert_eq!(destination.deliver_batch(&[delivery(1, b"x")]), 1);
        // A directory where the second file goes: its rename fails, the third is not confirmed.
        std::fs::create_dir(out.join(FileDestination::file_name(1, 3))).unwrap();
        std::fs::write(out.join(FileDestination::file_name(1, 3)).join("keep"), b"").unwrap();
        let batch = [delivery(2, b"a"), delivery(3, b"b"), delivery(4, b"c")];
        assert_eq!(destination.deliver_batch(&batch), 1);
        let temps = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(durable::TEMP_PREFIX)
            })
            .count();
        assert_eq!(
            temps, 0,
            "temporary files of the unconfirmed tail are removed"
        );
    }
}
