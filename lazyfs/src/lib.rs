//! mllpd-lazyfs: a FUSE file system for power-loss tests, after Jepsen's LazyFS.
//!
//! Mounted over a directory and backed by another, it passes everything through except what
//! the application has not made durable: file data and sizes written since the file's last
//! fsync/fdatasync live only in this process's memory (its own page cache), and entries created
//! since their directory's last fsync are remembered as pending. [`LazyMount::power_off`] pulls
//! the plug: all of that is discarded at once and every later request fails with EIO, so the
//! backing directory is left exactly as a machine that lost power at that instant would find
//! its disk. A new mount over the same backing directory is the reboot.
//!
//! What it models: a volatile cache between the application and stable storage that only
//! fsync (files) and fsync of the directory (new names) flush. What it does not: a device that
//! acknowledges a flush it did not do, torn or reordered sectors within a flushed write,
//! metadata of unlink/rename (durable at once here), or timing (requests are served one at a
//! time, in memory).

mod cache;
mod fs;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use cache::PAGE_BYTES;
pub use fs::{Loss, Stats};

/// A mounted lazy file system. Dropping it unmounts (after a clean sync, unless the power was
/// cut).
#[derive(Debug)]
pub struct LazyMount {
    /// The FUSE session serving the mount (`None` once unmounted).
    session: Option<fuser::BackgroundSession>,
    /// The file system's state, shared with the session.
    state: Arc<Mutex<fs::State>>,
    /// Where it is mounted.
    mountpoint: PathBuf,
}

/// Whether FUSE can be used here: the `/dev/fuse` device and the `fusermount3` helper (fuser
/// mounts with the helper when it cannot call mount(2) itself). `Err` says what is missing.
pub fn available() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing (no FUSE in this kernel or container)".to_owned());
    }
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").is_file())
    });
    if !on_path {
        return Err("fusermount3 is not installed (Debian package fuse3)".to_owned());
    }
    Ok(())
}

/// How a mount behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Each file fsync/fdatasync waits this long before making anything durable: a slow
    /// flush, so that a power cut usually lands while written data is still unsynced.
    pub fsync_delay: Duration,
}

impl LazyMount {
    /// Mounts a lazy file system over `mountpoint`, backed by the directory `backing`.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyMount> {
        LazyMount::mount_with(backing, mountpoint, Options::default())
    }

    /// [`LazyMount::mount`] with `options`.
    pub fn mount_with(
        backing: &Path,
        mountpoint: &Path,
        options: Options,
    ) -> io::Result<LazyMount> {
        let backing = std::fs::canonicalize(backing)?;
        let state = Arc::new(Mutex::new(fs::State::new(backing)));
        let filesystem = fs::LazyFs {
            state: Arc::clone(&state),
            fsync_delay: options.fsync_delay,
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("mllpd-lazyfs".to_owned()),
            fuser::MountOption::Subtype("mllpd-lazyfs".to_owned()),
        ];
        let session = fuser::spawn_mount(filesystem, mountpoint, &config)?;
        Ok(LazyMount {
            session: Some(session),
            state,
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What the file system was asked to do so far.
    pub fn stats(&self) -> Stats {
        self.state().stats()
    }

    /// Pulls the plug: discards every write, size change and new entry not yet made durable,
    /// and fails every later request with EIO. The mount stays (unmount it once the processes
    /// using it are gone); the backing directory now holds only what was durable.
    pub fn power_off(&self) -> Loss {
        self.state().power_off()
    }

    /// Unmounts: a clean shutdown first makes everything durable (as `umount` would), unless
    /// the power was cut.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    /// The state, even if a request panicked while holding it.
    fn state(&self) -> std::sync::MutexGuard<'_, fs::State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Syncs (unless powered off), unmounts and waits for the session to end.
    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let synced = self.state().sync_all();
        session.umount_and_join()?;
        synced
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}
