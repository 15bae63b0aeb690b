//! The FUSE file system: a directory tree passed through to a backing directory, except what
//! is not durable yet.
//!
//! - **File data and sizes** written since a file's last fsync/fdatasync live only in this
//!   process ([`Dirty`], per inode, whichever descriptor wrote them); the backing file holds what
//!   was durable at that fsync.
//! - **Directory entries** created (create, mkdir) since the last fsync of their directory are
//!   made in the backing directory at once but remembered as pending; a power loss removes them
//!   (with all they hold). Unlink, rmdir and rename are durable at once (not modelled: they can
//!   only lose what the application asked to remove).
//! - **Power off** ([`State::power_off`]): every pending page, size and entry is discarded, and
//!   every later request fails with EIO, so nothing that happens after the cut becomes durable.
//!
//! Every open is answered with `FOPEN_DIRECT_IO`: the kernel keeps no page cache of its own for
//! these files, so each read and write (including `O_DIRECT` ones) reaches this process, and
//! reads after a remount see only the backing files. Attribute and entry replies have a zero
//! time-to-live for the same reason.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::cache::Dirty;

/// Time-to-live of attributes and entries given to the kernel: none, so it asks every time
/// (sizes change in this process's cache, and a power loss changes everything).
const TTL: Duration = Duration::ZERO;

/// Largest write the kernel sends in one request: journal batches reach megabytes, and fewer
/// round trips keep the test's load close to a real disk's.
const MAX_WRITE_BYTES: u32 = 1 << 20;

/// Counters of what the file system was asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Write requests.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// fsync and fdatasync requests on files.
    pub file_syncs: u64,
    /// fsync requests on directories.
    pub dir_syncs: u64,
}

/// What a power loss discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// Files whose unsynced writes or size changes were dropped.
    pub files: u64,
    /// Bytes of unsynced pages dropped.
    pub bytes: u64,
    /// Directory entries removed because their directory was not synced since they were made.
    pub entries: u64,
}

/// One inode.
#[derive(Debug)]
struct Node {
    /// Path relative to the backing root ("" for the root).
    path: PathBuf,
    /// Unsynced data and size (regular files written since their last fsync).
    dirty: Option<Dirty>,
    /// The backing file, opened on first use (regular files).
    file: Option<File>,
}

/// Everything the file system knows; behind one mutex (requests are served one at a time).
#[derive(Debug)]
pub struct State {
    /// The backing directory.
    root: PathBuf,
    /// Inodes by number.
    nodes: HashMap<u64, Node>,
    /// Inode numbers by relative path.
    inos: HashMap<PathBuf, u64>,
    /// The next inode number to hand out.
    next_ino: u64,
    /// Names made in a directory (by its inode) since its last fsync.
    pending: HashMap<u64, BTreeSet<OsString>>,
    /// The power is off: every request fails.
    powered_off: bool,
    /// Counters.
    stats: Stats,
}

impl State {
    /// A file system over `root`, nothing pending.
    pub fn new(root: PathBuf) -> State {
        let mut state = State {
            root,
            nodes: HashMap::new(),
            inos: HashMap::new(),
            next_ino: INodeNo::ROOT.0 + 1,
            pending: HashMap::new(),
            powered_off: false,
            stats: Stats::default(),
        };
        state.inos.insert(PathBuf::new(), INodeNo::ROOT.0);
        state.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                path: PathBuf::new(),
                dirty: None,
                file: None,
            },
        );
        state
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Pulls the plug: drops every unsynced page, size and directory entry; every later request
    /// fails with EIO.
    pub fn power_off(&mut self) -> Loss {
        self.powered_off = true;
        let mut loss = Loss::default();
        for node in self.nodes.values_mut() {
            if let Some(dirty) = node.dirty.take() {
                loss.files += 1;
                loss.bytes += dirty.dirty_bytes();
            }
            node.file = None;
        }
        for (parent, names) in std::mem::take(&mut self.pending) {
            let Some(dir) = self.nodes.get(&parent).map(|n| self.root.join(&n.path)) else {
                continue;
            };
            for name in names {
                let path = dir.join(&name);
                let removed = match std::fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                    Ok(_) => std::fs::remove_file(&path),
                    Err(e) => Err(e),
                };
                if removed.is_ok() {
                    loss.entries += 1;
                }
            }
        }
        loss
    }

    /// A clean shutdown: makes everything durable (what an unmount's sync does).
    pub fn sync_all(&mut self) -> io::Result<()> {
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            self.flush(ino)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// The absolute backing path of inode `ino`.
    fn path_of(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| self.root.join(&n.path))
            .ok_or(Errno::ENOENT)
    }

    /// The relative path of `name` in directory `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        let dir = self.nodes.get(&parent).ok_or(Errno::ENOENT)?;
        Ok(dir.path.join(name))
    }

    /// The inode number of a relative path, handing out a new one the first time.
    fn ino_of(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.inos.get(rel) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(rel.to_owned(), ino);
        self.nodes.insert(
            ino,
            Node {
                path: rel.to_owned(),
                dirty: None,
                file: None,
            },
        );
        ino
    }

    /// Forgets the inode at `rel` (it was removed or replaced).
    fn drop_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inos.remove(rel) {
            self.nodes.remove(&ino);
            self.pending.remove(&ino);
        }
    }

    /// The attributes of inode `ino` as the application sees them.
    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let meta = std::fs::symlink_metadata(self.root.join(&node.path)).map_err(errno)?;
        let size = node.dirty.as_ref().map(Dirty::size);
        Ok(file_attr(ino, &meta, size))
    }

    /// The backing file of inode `ino`, opened on first use.
    fn file(&mut self, ino: u64) -> Result<&File, Errno> {
        let path = self.path_of(ino)?;
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if node.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(errno)?;
            node.file = Some(file);
        }
        node.file.as_ref().ok_or(Errno::EIO)
    }

    /// The unsynced state of inode `ino` (created over the backing file's current length).
    fn dirty(&mut self, ino: u64) -> Result<(&File, &mut Dirty), Errno> {
        let len = self.file(ino)?.metadata().map_err(errno)?.len();
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let dirty = node.dirty.get_or_insert_with(|| Dirty::new(len));
        let file = node.file.as_ref().ok_or(Errno::EIO)?;
        Ok((file, dirty))
    }

    /// Makes inode `ino`'s data and size durable.
    fn flush(&mut self, ino: u64) -> io::Result<()> {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        let (Some(dirty), Some(file)) = (node.dirty.take(), node.file.as_ref()) else {
            return Ok(());
        };
        dirty.flush(file)
    }

    /// Sets inode `ino`'s size (unsynced).
    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let (_, dirty) = self.dirty(ino)?;
        dirty.truncate(size);
        Ok(())
    }

    /// Records a new entry `name` in `parent` as not durable yet.
    fn made(&mut self, parent: u64, name: &OsStr) {
        self.pending
            .entry(parent)
            .or_default()
            .insert(name.to_owned());
    }

    /// Moves every inode under `from` to `to` (after a rename in the backing directory).
    fn moved(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .inos
            .iter()
            .filter(|(path, _)| path.starts_with(from))
            .map(|(path, &ino)| (path.clone(), ino))
            .collect();
        for (old, ino) in moved {
            self.inos.remove(&old);
            let new = match old.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_owned(),
                Ok(rest) => to.join(rest),
                Err(_) => continue,
            };
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = new.clone();
            }
            self.inos.insert(new, ino);
        }
    }
}

/// The FUSE side: every request locks the state, checks the power, and answers.
#[derive(Debug, Clone)]
pub struct LazyFs {
    /// The state, shared with the mount handle (which pulls the plug).
    pub state: Arc<Mutex<State>>,
    /// Each file fsync waits this long before it makes anything durable (a slow flush: widens
    /// the window in which a power cut finds written, unsynced data).
    pub fsync_delay: Duration,
}

impl LazyFs {
    /// The state, if the power is on.
    fn on(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.powered_off {
            return Err(Errno::EIO);
        }
        Ok(state)
    }

    /// Looks up or makes an entry and answers with it.
    fn entry(&self, parent: INodeNo, name: &OsStr, make: Make) -> Result<FileAttr, Errno> {
        let mut st = self.on()?;
        let rel = st.child(parent.0, name)?;
        let path = st.root.join(&rel);
        match make {
            Make::Nothing => {}
            Make::Directory(mode) => {
                std::fs::DirBuilder::new()
                    .mode(mode)
                    .create(&path)
                    .map_err(errno)?;
                st.drop_path(&rel);
                st.made(parent.0, name);
            }
        }
        let ino = st.ino_of(&rel);
        let attr = st.attr(ino);
        if attr == Err(Errno::ENOENT) {
            st.drop_path(&rel);
        }
        attr
    }
}

/// What an entry request makes before answering.
enum Make {
    /// Nothing (lookup).
    Nothing,
    /// A directory with this mode.
    Directory(u32),
}

/// Answers an empty reply.
fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Best effort: a kernel that refuses keeps its default (more, smaller requests).
        let _ = config.set_max_write(MAX_WRITE_BYTES);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.entry(parent, name, Make::Nothing) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.on().and_then(|st| st.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.on().and_then(|mut st| {
            let path = st.path_of(ino.0)?;
            if let Some(mode) = mode {
                let permissions = std::fs::Permissions::from_mode(mode & 0o7777);
                std::fs::set_permissions(&path, permissions).map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&path, uid, gid).map_err(errno)?;
            }
            if let Some(size) = size {
                st.truncate(ino.0, size)?;
            }
            st.attr(ino.0)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.entry(parent, name, Make::Directory(mode & !umask)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.remove(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.remove(parent, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            reply.error(Errno::EINVAL);
            return;
        }
        let result = self.on().and_then(|mut st| {
            let from = st.child(parent.0, name)?;
            let to = st.child(newparent.0, newname)?;
            std::fs::rename(st.root.join(&from), st.root.join(&to)).map_err(errno)?;
            st.drop_path(&to);
            st.moved(&from, &to);
            // A name that was never durable moves with the file; otherwise the rename is
            // durable at once (see the module doc).
            let was_pending = st
                .pending
                .get_mut(&parent.0)
                .is_some_and(|names| names.remove(name));
            if was_pending {
                st.made(newparent.0, newname);
            }
            Ok(())
        });
        empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.on().and_then(|mut st| {
            st.file(ino.0)?;
            if flags.0 & libc::O_TRUNC != 0 {
                st.truncate(ino.0, 0)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.on().and_then(|mut st| {
            let rel = st.child(parent.0, name)?;
            let path = st.root.join(&rel);
            let existed = std::fs::symlink_metadata(&path).is_ok();
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .create_new(flags & libc::O_EXCL != 0)
                .mode(mode & !umask)
                .open(&path)
                .map_err(errno)?;
            if !existed {
                st.drop_path(&rel);
                st.made(parent.0, name);
            }
            let ino = st.ino_of(&rel);
            if existed && flags & libc::O_TRUNC != 0 {
                st.truncate(ino, 0)?;
            }
            st.attr(ino)
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.on().and_then(|mut st| {
            let (file, dirty) = st.dirty(ino.0)?;
            dirty.read(file, offset, size as usize).map_err(errno)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.on().and_then(|mut st| {
            let (file, dirty) = st.dirty(ino.0)?;
            dirty.write(file, offset, data).map_err(errno)?;
            st.stats.writes += 1;
            st.stats.bytes_written += data.len() as u64;
            Ok(())
        });
        match result {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): not a sync.
        empty(reply, self.on().map(drop));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.fsync_delay.is_zero() {
            // Not under the lock: a power cut during the wait fails this fsync.
            std::thread::sleep(self.fsync_delay);
        }
        let result = self.on().and_then(|mut st| {
            st.flush(ino.0).map_err(errno)?;
            st.stats.file_syncs += 1;
            Ok(())
        });
        empty(reply, result);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.on().and_then(|mut st| {
            let dir = st.nodes.get(&ino.0).ok_or(Errno::ENOENT)?.path.clone();
            let parent = dir.parent().map_or(INodeNo::ROOT.0, |p| st.ino_of(p));
            let mut entries = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (parent, FileType::Directory, OsString::from("..")),
            ];
            let mut names: Vec<(OsString, FileType)> = std::fs::read_dir(st.root.join(&dir))
                .map_err(errno)?
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let kind = e.file_type().ok().and_then(FileType::from_std)?;
                    Some((e.file_name(), kind))
                })
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, kind) in names {
                let child = st.ino_of(&dir.join(&name));
                entries.push((child, kind, name));
            }
            Ok(entries)
        });
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.on().map(|mut st| {
            st.pending.remove(&ino.0);
            st.stats.dir_syncs += 1;
        });
        empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let result = self.on().and_then(|st| {
            nix::sys::statvfs::statvfs(&st.root).map_err(|e| Errno::from_i32(e as i32))
        });
        match result {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                u32::try_from(s.block_size()).unwrap_or(4096),
                u32::try_from(s.name_max()).unwrap_or(255),
                u32::try_from(s.fragment_size()).unwrap_or(4096),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.on().map(drop));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Not modelled: callers fall back to writing zeros.
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }
}

impl LazyFs {
    /// unlink or rmdir: durable at once.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut st = self.on()?;
        let rel = st.child(parent.0, name)?;
        let path = st.root.join(&rel);
        if dir {
            std::fs::remove_dir(&path).map_err(errno)?;
        } else {
            std::fs::remove_file(&path).map_err(errno)?;
        }
        st.drop_path(&rel);
        if let Some(names) = st.pending.get_mut(&parent.0) {
            names.remove(name);
        }
        Ok(())
    }
}

/// The errno of an IO error (EIO when it carries none).
fn errno(error: io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(libc::EIO))
}

/// FUSE attributes from the backing file's, with the size the application sees.
fn file_attr(ino: u64, meta: &Metadata, size: Option<u64>) -> FileAttr {
    let size = size.unwrap_or(meta.len());
    let time = |secs: i64, nanos: i64| {
        let secs = u64::try_from(secs).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos).unwrap_or(0))
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}
