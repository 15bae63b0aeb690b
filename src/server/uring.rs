//! Socket IO on a shard's own io_uring (SOCKET_IO=uring; issue 5 item 4).
//!
//! glommio receives with a `recv` syscall and re-arms a POLL_ADD for every message (measured: one
//! per message at 64 connections), and sends with a `send` syscall per write. Here every
//! connection keeps one multishot Recv armed that draws from a provided-buffer ring, so receiving
//! costs no submission per message, and the Sends of everything that ran since the last turn go
//! in with one `io_uring_enter`. glommio stays the executor (tasks, timers, placement, file IO):
//! the ring's completions signal an eventfd that a glommio task waits on when the ring is idle.
//!
//! The driver ([`Sockets::drive`]) loops: submit what the connections queued and reap what
//! completed in one non-waiting `io_uring_enter`, copy received bytes into each connection's
//! inbox (returning the provided buffer at once), wake the readers and writers, then yield so
//! they run; when a turn finds nothing, wait for the eventfd.
//!
//! Invariants, on which every `unsafe` block rests:
//! - A Send points into its connection's `out[sent..]`; `out` is not touched while `send_armed`.
//! - A connection's slot, and the glommio stream that owns its fd, are freed only once neither
//!   its Recv nor its Send is armed, so no op ever names a closed or reused fd. A handle
//!   dropped with ops armed shuts the socket down, which ends both.
//! - The provided buffers and their ring are never freed (4 MiB per shard, once): the kernel
//!   tears a ring down asynchronously after its fd is closed, so no point after the close is
//!   provably past its last use of them. The kernel writes a buffer only between our handing
//!   it to the ring and the completion that names it.
//! - The inbox is bounded: above [`INBOX_BYTES_MAX`] the multishot Recv is cancelled and the
//!   kernel's socket buffer pushes back on the sender, as with a read that is not issued.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Poll, Waker};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Submission queue entries; a full queue is submitted early, so this bounds nothing.
const RING_ENTRIES: u32 = 1024;
/// Completion queue entries: multishot receives may post many per turn.
const CQ_ENTRIES: u32 = 16384;
/// Provided buffers (a power of two, at most 32768): shared by all connections of the shard
/// and returned in the turn that filled them, so only a turn with more reads than this runs out
/// (`ENOBUFS` ends a Recv, which is then re-armed).
const BUFS: u16 = 1024;
/// Bytes per provided buffer: a typical HL7 message fits one.
const BUF_SIZE: usize = 4096;
/// The buffer group of the ring.
const BGID: u16 = 0;
/// Received bytes a connection may hold before its Recv is paused.
const INBOX_BYTES_MAX: usize = crate::limits::SOCKET_INBOX_BYTES_MAX;
/// How long an idle driver sleeps at most before looking at the ring again (see `drive`).
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// Kinds of operations, in the low bits of `user_data`.
const RECV: u64 = 1;
const SEND: u64 = 2;
const CANCEL: u64 = 3;

/// A provided-buffer ring: `BUFS` buffers of `BUF_SIZE` bytes the kernel picks recv buffers from.
struct BufRing {
    /// The ring entries, shared with the kernel (page-aligned).
    entries: *mut types::BufRingEntry,
    /// The ring's tail as the kernel reads it (inside entry 0).
    tail: *const AtomicU16,
    /// Our tail: entries before it are filled; published by `publish`.
    local_tail: u16,
    /// The buffers, `BUFS * BUF_SIZE` bytes.
    bufs: *mut u8,
}

impl BufRing {
    /// Layouts of the entries and the buffers.
    fn layouts() -> io::Result<(std::alloc::Layout, std::alloc::Layout)> {
        let entries = BUFS as usize * std::mem::size_of::<types::BufRingEntry>();
        let layout =
            |size| std::alloc::Layout::from_size_align(size, 4096).map_err(io::Error::other);
        Ok((layout(entries)?, layout(BUFS as usize * BUF_SIZE)?))
    }

    /// Allocates the ring and its buffers, registers them as group `BGID` and hands them all over.
    fn new(ring: &IoUring) -> io::Result<BufRing> {
        let (entries_layout, bufs_layout) = BufRing::layouts()?;
        // SAFETY: both layouts have a non-zero size. Zeroed memory is a valid ring (tail 0). The
        // memory is deliberately never freed (module invariants).
        let (entries, bufs) = unsafe {
            (
                std::alloc::alloc_zeroed(entries_layout).cast::<types::BufRingEntry>(),
                std::alloc::alloc_zeroed(bufs_layout),
            )
        };
        let mut this = BufRing {
            entries,
            tail: std::ptr::null(),
            local_tail: 0,
            bufs,
        };
        if entries.is_null() || bufs.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // SAFETY: `entries` is the first entry of a zeroed, page-aligned ring of BUFS entries.
        this.tail = unsafe { types::BufRingEntry::tail(entries) }.cast::<AtomicU16>();
        // SAFETY: the ring memory is valid, page-aligned and never freed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFS, BGID, 0)?;
        }
        for bid in 0..BUFS {
            this.recycle(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Gives buffer `bid` back (seen by the kernel after `publish`).
    fn recycle(&mut self, bid: u16) {
        let bid = bid % BUFS;
        let index = usize::from(self.local_tail % BUFS);
        // SAFETY: `index < BUFS` is inside the ring, at or after the published tail, so the
        // kernel is not reading it; `bid < BUFS` names a buffer inside `bufs` whose completion
        // has been handled, so it is ours to give.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(self.bufs.add(usize::from(bid) * BUF_SIZE) as u64);
            entry.set_len(BUF_SIZE as u32);
            entry.set_bid(bid);
        }
        self.local_tail = self.local_tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: `tail` points into the live ring; the Release store orders the entry writes
        // before the kernel sees the new tail.
        unsafe { (*self.tail).store(self.local_tail, Ordering::Release) };
    }

    /// The first `len` bytes of buffer `bid`, which a completion has just handed us.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(BUF_SIZE);
        // SAFETY: `bid % BUFS` names a buffer inside `bufs`; the kernel wrote it before posting
        // the completion and does not touch it again until we recycle it.
        unsafe {
            std::slice::from_raw_parts(self.bufs.add(usize::from(bid % BUFS) * BUF_SIZE), len)
        }
    }
}

/// One connection's side of the ring.
struct Slot {
    /// Which use of this slot index it is: part of every `user_data`, so an operation (a
    /// cancel) meant for an earlier connection in the slot can never match this one.
    generation: u32,
    /// The socket; it owns the fd, closed when the slot is freed.
    stream: glommio::net::TcpStream,
    /// Received bytes not yet read.
    inbox: Vec<u8>,
    /// Where `inbox`'s unread bytes start.
    inbox_read: usize,
    /// The peer closed its side (after `inbox`).
    eof: bool,
    /// Receiving failed.
    recv_error: Option<io::ErrorKind>,
    /// The multishot Recv is armed (until a completion without `F_MORE`).
    recv_armed: bool,
    /// The Recv was cancelled because the inbox is full; re-armed once it is read.
    recv_paused: bool,
    /// The task waiting to read.
    reader: Option<Waker>,
    /// Bytes being sent.
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// A Send is in flight.
    send_armed: bool,
    /// The outcome of the last write, once all of `out` went or sending failed.
    send_done: Option<Result<(), io::ErrorKind>>,
    /// The task waiting for its write.
    writer: Option<Waker>,
    /// The handle was dropped: free once nothing is armed.
    released: bool,
}

/// The ring's state.
struct Inner {
    /// The ring. Declared before `slots`: closed before the sockets its ops name.
    ring: IoUring,
    /// Provided buffers.
    bufs: BufRing,
    /// Connections by slot.
    slots: Vec<Option<Slot>>,
    /// Free slots.
    free: Vec<usize>,
    /// The generation the next adopted connection gets.
    generation: u32,
    /// Entries queued since the last turn.
    queue: Vec<squeue::Entry>,
    /// Completions of the current turn, reused.
    completions: Vec<(u64, i32, u32)>,
    /// Tasks to wake after the turn (woken outside the borrow).
    wake: Vec<Waker>,
}

/// A shard's socket ring. Single-threaded: it lives on its shard's executor.
pub struct Sockets {
    /// Everything that changes.
    inner: RefCell<Inner>,
    /// The eventfd the ring signals on completions, as a glommio file to wait on.
    eventfd: glommio::io::BufferedFile,
    /// The driver stopped (`stop`): wake it once more so it sees that.
    stopping: std::cell::Cell<bool>,
    /// Entries were queued since the driver went idle.
    kicked: std::cell::Cell<bool>,
    /// The idle driver, to wake when entries are queued.
    idle_driver: RefCell<Option<Waker>>,
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets").finish_non_exhaustive()
    }
}

impl Sockets {
    /// Sets up the ring, its buffers and its eventfd. Must run on a glommio executor.
    pub fn new() -> io::Result<Rc<Sockets>> {
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag();
        let ring = builder.build(RING_ENTRIES)?;
        let bufs = BufRing::new(&ring)?;
        // SAFETY: eventfd(2) takes no pointers; a non-negative result is a new fd nobody owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(owned.as_raw_fd())?;
        // SAFETY: ownership of the fd passes to the glommio file, which closes it on drop. A
        // read of an eventfd returns its 8-byte counter once it is non-zero; glommio's io_uring
        // read waits for that without a worker thread (eventfds are pollable).
        let eventfd = unsafe {
            glommio::io::BufferedFile::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(owned))
        };
        Ok(Rc::new(Sockets {
            inner: RefCell::new(Inner {
                ring,
                bufs,
                slots: Vec::new(),
                free: Vec::new(),
                generation: 0,
                queue: Vec::new(),
                completions: Vec::with_capacity(CQ_ENTRIES as usize),
                wake: Vec::new(),
            }),
            eventfd,
            stopping: std::cell::Cell::new(false),
            kicked: std::cell::Cell::new(false),
            idle_driver: RefCell::new(None),
        }))
    }

    /// Takes over an accepted socket: its receive is armed at once.
    pub fn adopt(self: &Rc<Self>, stream: glommio::net::TcpStream) -> Handle {
        let mut inner = self.inner.borrow_mut();
        let generation = inner.generation;
        inner.generation = inner.generation.wrapping_add(1);
        let slot = Slot {
            generation,
            stream,
            inbox: Vec::new(),
            inbox_read: 0,
            eof: false,
            recv_error: None,
            recv_armed: false,
            recv_paused: false,
            reader: None,
            out: Vec::new(),
            sent: 0,
            send_armed: false,
            send_done: None,
            writer: None,
            released: false,
        };
        let index = match inner.free.pop() {
            Some(index) => {
                inner.slots[index] = Some(slot);
                index
            }
            None => {
                inner.slots.push(Some(slot));
                inner.slots.len() - 1
            }
        };
        inner.arm_recv(index);
        drop(inner);
        self.kick();
        Handle {
            sockets: Rc::clone(self),
            slot: index,
        }
    }

    /// Runs the ring until [`Sockets::stop`]; spawn it once per shard. An error means the
    /// ring failed: no connection of the shard can make progress any more.
    pub async fn drive(self: Rc<Self>) -> io::Result<()> {
        let wait = |sockets: Rc<Sockets>| async move { sockets.eventfd.read_at(0, 8).await };
        // The eventfd read stays armed across idle periods; a new one only after it fired.
        let mut fired = Box::pin(wait(Rc::clone(&self)));
        while !self.stopping.get() {
            match self.turn() {
                Ok(0) if self.idle() => {
                    let completions = async {
                        let result = (&mut fired).await;
                        Some(result)
                    };
                    let queued = async {
                        self.queued().await;
                        None
                    };
                    // A safety net, not the mechanism: if a wake-up were ever missed, the ring
                    // is looked at again after this long rather than never.
                    let lapse = async {
                        glommio::timer::sleep(IDLE_RECHECK).await;
                        None
                    };
                    let woken = futures_lite::future::or(completions, queued);
                    match futures_lite::future::or(woken, lapse).await {
                        Some(Ok(_)) => fired = Box::pin(wait(Rc::clone(&self))),
                        Some(Err(e)) => return Err(e.into()),
                        None => {}
                    }
                }
                Ok(_) => glommio::executor().yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether nothing is left to do until the kernel signals: no entries queued, no completion
    /// work pending in the kernel (a single enter runs only a bounded batch of it, and more work
    /// queued behind a non-empty list does not signal the eventfd again: TASKRUN_FLAG shows it),
    /// no completions waiting.
    fn idle(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        if !inner.queue.is_empty() {
            return false;
        }
        let sq = inner.ring.submission();
        let pending = sq.taskrun() || sq.cq_overflow();
        drop(sq);
        !pending && inner.ring.completion().is_empty()
    }

    /// Resolves once a connection queued an entry while the driver was idle.
    async fn queued(&self) {
        poll_fn(|cx| {
            if self.kicked.replace(false) {
                return Poll::Ready(());
            }
            *self.idle_driver.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Tells an idle driver that entries wait to be submitted.
    fn kick(&self) {
        self.kicked.set(true);
        if let Some(waker) = self.idle_driver.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Stops the driver (after the shard's connections are closed).
    pub fn stop(&self) {
        self.stopping.set(true);
        self.kick();
    }

    /// One turn: submit the queued entries, reap and handle every completion, wake the tasks.
    /// Returns how many completions were handled.
    fn turn(&self) -> io::Result<usize> {
        let (handled, mut wake) = {
            let mut guard = self.inner.borrow_mut();
            let inner = &mut *guard;
            inner.bufs.publish();
            inner.submit()?;
            let mut completions = std::mem::take(&mut inner.completions);
            completions.extend(
                inner
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &completions {
                inner.complete(user_data, result, flags);
            }
            let handled = completions.len();
            completions.clear();
            inner.completions = completions;
            (handled, std::mem::take(&mut inner.wake))
        };
        // Woken outside the borrow: a woken task may run (and borrow) before we return.
        for waker in wake.drain(..) {
            waker.wake();
        }
        let mut inner = self.inner.borrow_mut();
        if inner.wake.capacity() < wake.capacity() {
            inner.wake = wake;
        }
        Ok(handled)
    }
}

impl Inner {
    /// Pushes the queued entries and enters the ring once: submits them and runs the deferred
    /// completion work (DEFER_TASKRUN), without waiting.
    fn submit(&mut self) -> io::Result<()> {
        for entry in self.queue.drain(..) {
            // SAFETY: every entry's buffer outlives its op (module invariants).
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.ring.submit()?;
            }
        }
        let pending = self.ring.submission().len() as u32;
        let getevents = io_uring::EnterFlags::GETEVENTS.bits();
        // SAFETY: no argument struct is passed; `pending` entries were pushed above.
        match unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(pending, 0, getevents, None)
        } {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Queues the slot's multishot Recv.
    fn arm_recv(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let fd = types::Fd(slot.stream.as_raw_fd());
        slot.recv_armed = true;
        slot.recv_paused = false;
        let entry = opcode::RecvMulti::new(fd, BGID).build();
        self.queue
            .push(entry.user_data(tag(index, slot.generation, RECV)));
    }

    /// Handles one completion.
    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let (index, generation) = untag(user_data);
        let current = self
            .slots
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.generation == generation);
        match user_data & 3 {
            RECV if current => self.received(index, result, flags),
            SEND if current => self.sent(index, result),
            // Not expected (a slot is freed only when none of its ops is armed), but a buffer
            // must never be lost.
            RECV => {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    self.bufs.recycle(bid);
                }
            }
            _ => {}
        }
    }

    /// A Recv completion: bytes into the inbox, EOF, an error, or the end of the multishot.
    fn received(&mut self, index: usize, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            slot.recv_armed = false;
        }
        if let Some(bid) = bid {
            if result > 0 && !slot.released {
                let data = self.bufs.bytes(bid, result as usize);
                slot.inbox.extend_from_slice(data);
            }
            self.bufs.recycle(bid);
        }
        match result {
            0 => slot.eof = true,
            r if r < 0 && r != -libc::ENOBUFS && r != -libc::ECANCELED => {
                slot.recv_error = Some(io::Error::from_raw_os_error(-r).kind());
            }
            _ => {}
        }
        if let Some(waker) = slot.reader.take() {
            self.wake.push(waker);
        }
        let ended = slot.eof || slot.recv_error.is_some();
        let full = slot.inbox.len() - slot.inbox_read > INBOX_BYTES_MAX;
        if slot.released {
            return self.maybe_free(index);
        }
        if full && slot.recv_armed && !slot.recv_paused {
            // Stop receiving until the reader catches up.
            slot.recv_paused = true;
            let generation = slot.generation;
            let entry = opcode::AsyncCancel::new(tag(index, generation, RECV)).build();
            self.queue
                .push(entry.user_data(tag(index, generation, CANCEL)));
        } else if !slot.recv_armed && !ended && !full {
            // The multishot ended (ENOBUFS, or the kernel stopped it): arm it again.
            self.arm_recv(index);
        }
    }

    /// A Send completion: more to send, done, or failed.
    fn sent(&mut self, index: usize, result: i32) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        slot.send_armed = false;
        if result < 0 {
            slot.send_done = Some(Err(io::Error::from_raw_os_error(-result).kind()));
        } else {
            slot.sent += result as usize;
            if slot.sent < slot.out.len() && !slot.released {
                return self.arm_send(index);
            }
            slot.send_done = Some(Ok(()));
        }
        if let Some(waker) = slot.writer.take() {
            self.wake.push(waker);
        }
        if slot.released {
            self.maybe_free(index);
        }
    }

    /// Queues a Send of the slot's `out[sent..]`.
    fn arm_send(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let rest = &slot.out[slot.sent..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(slot.stream.as_raw_fd()), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        slot.send_armed = true;
        self.queue
            .push(entry.user_data(tag(index, slot.generation, SEND)));
    }

    /// Frees a released slot once no op refers to it (closing its fd).
    fn maybe_free(&mut self, index: usize) {
        let idle = self
            .slots
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.released && !s.recv_armed && !s.send_armed);
        if idle {
            self.slots[index] = None;
            self.free.push(index);
        }
    }
}

/// `user_data` of an operation of kind `kind` on slot `index` in its use `generation`.
fn tag(index: usize, generation: u32, kind: u64) -> u64 {
    (u64::from(generation) << 32) | (((index as u64) & 0x3fff_ffff) << 2) | kind
}

/// The slot index and generation in a `user_data`.
fn untag(user_data: u64) -> (usize, u32) {
    (
        ((user_data >> 2) & 0x3fff_ffff) as usize,
        (user_data >> 32) as u32,
    )
}

/// A connection's socket on the shard's ring.
pub struct Handle {
    /// The ring.
    sockets: Rc<Sockets>,
    /// Its slot.
    slot: usize,
}

impl Handle {
    /// Reads what was received into `buf` (0: the peer closed its side).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut guard = self.sockets.inner.borrow_mut();
            let inner = &mut *guard;
            let Some(slot) = inner.slots.get_mut(self.slot).and_then(Option::as_mut) else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let available = slot.inbox.len() - slot.inbox_read;
            if available > 0 && !buf.is_empty() {
                let n = available.min(buf.len());
                buf[..n].copy_from_slice(&slot.inbox[slot.inbox_read..slot.inbox_read + n]);
                slot.inbox_read += n;
                if slot.inbox_read == slot.inbox.len() {
                    slot.inbox_read = 0;
                    if slot.inbox.capacity() > BUF_SIZE {
                        // A burst grew it: give the memory back (idle connections hold none
                        // beyond one buffer's worth).
                        slot.inbox = Vec::new();
                    } else {
                        slot.inbox.clear();
                    }
                }
                let resume = slot.recv_paused
                    && !slot.recv_armed
                    && slot.inbox.len() - slot.inbox_read <= INBOX_BYTES_MAX / 2;
                if resume {
                    inner.arm_recv(self.slot);
                    self.sockets.kick();
                }
                return Poll::Ready(Ok(n));
            }
            if let Some(kind) = slot.recv_error {
                return Poll::Ready(Err(kind.into()));
            }
            if slot.eof || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            slot.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends all of `data`. Cancel-safe: dropped early (a write timeout), the bytes stay owned
    /// by the slot until the kernel is done with them.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        {
            let mut guard = self.sockets.inner.borrow_mut();
            let inner = &mut *guard;
            let Some(slot) = inner.slots.get_mut(self.slot).and_then(Option::as_mut) else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            if slot.send_armed {
                // An earlier write was abandoned mid-way: the stream is no longer in order.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            slot.out.clear();
            slot.out.extend_from_slice(data);
            slot.sent = 0;
            slot.send_done = None;
            if data.is_empty() {
                return Ok(());
            }
            inner.arm_send(self.slot);
        }
        self.sockets.kick();
        poll_fn(|cx| {
            let mut inner = self.sockets.inner.borrow_mut();
            let Some(slot) = inner.slots.get_mut(self.slot).and_then(Option::as_mut) else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            match slot.send_done.take() {
                Some(done) => Poll::Ready(done.map_err(io::Error::from)),
                None => {
                    slot.writer = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut inner = self.sockets.inner.borrow_mut();
        let Some(slot) = inner.slots.get_mut(self.slot).and_then(Option::as_mut) else {
            return;
        };
        slot.released = true;
        slot.reader = None;
        slot.writer = None;
        if slot.recv_armed || slot.send_armed {
            // Ends the armed Recv (EOF) and any Send (error); the slot is freed by their
            // completions. The peer sees the close as it would with a plain close.
            // SAFETY: shutdown(2) on the fd the slot's stream owns, still open.
            unsafe { libc::shutdown(slot.stream.as_raw_fd(), libc::SHUT_RDWR) };
        }
        inner.maybe_free(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_its_slot_generation_and_kind() {
        for (index, generation) in [(0, 0), (1, 7), (1023, u32::MAX), (0x3fff_ffff, 1)] {
            for kind in [RECV, SEND, CANCEL] {
                let t = tag(index, generation, kind);
                assert_eq!(untag(t), (index, generation));
                assert_eq!(t & 3, kind);
            }
        }
        // The same slot in its next use never matches an operation of the previous one.
        assert_ne!(tag(5, 1, RECV), tag(5, 2, RECV));
        assert_ne!(tag(5, 1, RECV), tag(6, 1, RECV));
    }
}
