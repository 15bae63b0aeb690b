//! The `file` connector: one file per message in a directory, `SHARD-SEQUENCE.hl7`
//! (zero-padded: names sort in journal order within a shard), holding the payload exactly as
//! received, written atomically and durably (write, fsync, rename, fsync the directory) before
//! the message counts as delivered. Re-delivery after a crash writes the same name again, so the
//! directory never holds a message twice.

use std::path::PathBuf;

use super::{durable, Delivery, Destination, Outcome};

/// Delivers into a directory.
#[derive(Debug)]
pub struct FileDestination {
    /// The directory.
    dir: PathBuf,
    /// The directory was created (and its name made durable).
    ready: bool,
}

impl FileDestination {
    /// A destination writing into `dir` (created at the first delivery).
    pub fn new(dir: PathBuf) -> FileDestination {
        FileDestination { dir, ready: false }
    }

    /// The file name of the message (`shard`, `seq`).
    pub fn file_name(shard: usize, seq: u64) -> String {
        format!("{shard:03}-{seq:020}.hl7")
    }
}

impl Destination for FileDestination {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
        if !self.ready {
            if let Err(e) = durable::create_dir(&self.dir) {
                return Outcome::Failed(format!("cannot create {}: {e}", self.dir.display()));
            }
            self.ready = true;
        }
        let name = FileDestination::file_name(delivery.shard, delivery.seq);
        match durable::write_atomic(&self.dir, &name, delivery.payload) {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::Failed(format!("cannot write into {}: {e}", self.dir.display())),
        }
    }
}
