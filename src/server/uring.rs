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
//! Which ops a connection has armed, and when its slot may be freed, is decided by [`Conn`], a
//! pure state type (events in, the driver's [`Action`] out) with unit tests of every transition;
//! the driver only carries its actions out. A transient `io_uring_enter` failure (EINTR, EAGAIN,
//! EBUSY) is retried ([`enter_retrying`]); any other fails the shard.
//!
//! Invariants, on which every `unsafe` block rests:
//! - A Send points into its connection's `out[sent..]`; `out` is not touched while `send_armed`.
//! - A connection's slot, and the fd it owns, are freed only once neither
//!   its Recv nor its Send is armed, so no op ever names a closed or reused fd. A handle
//!   dropped with ops armed shuts the socket down, which ends both.
//! - The provided buffers and their ring are never freed (1 MiB per shard, once): the kernel
//!   tears a ring down asynchronously after its fd is closed, so no point after the close is
//!   provably past its last use of them. The kernel writes a buffer only between our handing
//!   it to the ring and the completion that names it.
//! - The inbox is bounded: above [`INBOX_BYTES_MAX`] the multishot Recv is cancelled (or, if
//!   it ended by itself, not armed again) and the kernel's socket buffer pushes back on the
//!   sender, as with a read that is not issued; the reader arms it again at half.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::timers::Timers;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Submission queue entries; a full queue is submitted early, so this bounds nothing.
const RING_ENTRIES: u32 = 1024;
/// Completion queue entries: multishot receives may post many per turn.
const CQ_ENTRIES: u32 = 16384;
/// Provided buffers (a power of two, at most 32768): shared by all connections of the shard
/// and returned in the turn that filled them, so only a turn with more reads than this runs out
/// (`ENOBUFS` ends a Recv, which is then re-armed). They also bound the kernel's receive work
/// in one `io_uring_enter` (deferred task work copies into at most this many buffers): with
/// 1 024 (4 MiB a turn) a flood of 2 MiB frames held the shard for milliseconds per turn and a
/// neighbour's p99 was 9.4–11.2 ms; with 256 (1 MiB), 6.4–7.7 ms in the same run.
const BUFS: u16 = 256;
/// Bytes per provided buffer: a typical HL7 message fits one.
const BUF_SIZE: usize = 4096;
/// The buffer group of the ring.
const BGID: u16 = 0;
/// Received bytes a connection may hold before its Recv is paused.
const INBOX_BYTES_MAX: usize = crate::limits::SOCKET_INBOX_BYTES_MAX;
/// How long to wait before entering the ring again after EAGAIN.
const ENTER_AGAIN_BACKOFF: std::time::Duration = crate::limits::SOCKET_RING_ENTER_BACKOFF;
/// How long an idle driver sleeps at most before looking at the ring again (see `drive`).
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// Kinds of operations, in the low bits of `user_data`. `TIMER`: the shard's kernel timeout
/// (slot field [`TIMEOUT`]) or an update of it (slot field [`TIMEOUT_UPDATE`]); its generation
/// field counts the timeouts armed, so a completion of an earlier one is told apart.
const TIMER: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const CANCEL: u64 = 3;
/// The slot field of a `TIMER` completion: the timeout itself, or its update.
const TIMEOUT: usize = 0;
const TIMEOUT_UPDATE: usize = 1;

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

/// Where a connection's multishot Recv stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvState {
    /// Armed: its completions keep coming, each with `F_MORE` but the last.
    Armed,
    /// Armed, with a cancel queued because the inbox is full: paused at its last completion.
    Cancelling,
    /// Not armed because the inbox is full: armed again once the reader drained it to half.
    Paused,
    /// Not armed and never again: the peer closed its side, receiving failed, or the handle
    /// was dropped.
    Ended,
}

/// What one Recv completion reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Received {
    /// This many bytes, in the buffer the completion names.
    Bytes(usize),
    /// The peer closed its side.
    Eof,
    /// The shard's provided buffers ran out (`ENOBUFS`); the multishot ended, nothing is wrong.
    NoBuffers,
    /// Our cancel (the inbox is full) ended it (`ECANCELED`).
    Cancelled,
    /// Receiving failed.
    Failed(io::ErrorKind),
}

impl Received {
    /// The meaning of a Recv completion's `result`.
    fn of(result: i32) -> Received {
        match result {
            0 => Received::Eof,
            n if n > 0 => Received::Bytes(n as usize),
            n if n == -libc::ENOBUFS => Received::NoBuffers,
            n if n == -libc::ECANCELED => Received::Cancelled,
            n => Received::Failed(io::Error::from_raw_os_error(n.saturating_neg()).kind()),
        }
    }
}

/// What the driver must do after a connection's state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Nothing.
    Nothing,
    /// Queue the multishot Recv (again).
    ArmRecv,
    /// Queue a cancel of the armed Recv: the inbox is full.
    CancelRecv,
    /// Queue a Send of the rest of the write.
    ArmSend,
    /// Shut the socket down: the handle was dropped with ops armed, and this ends them.
    Shutdown,
    /// Free the slot and close its fd: the handle is gone and no op names the slot any more.
    Release,
}

/// A write was asked for while an earlier, abandoned one is still in flight.
#[derive(Debug, PartialEq, Eq)]
struct SendBusy;

/// A connection's state on the ring, apart from its bytes: which of its ops are armed, and
/// whether its handle is gone. Pure (no ring, no fd): events in, the driver's [`Action`] out,
/// so every transition is unit-tested. Its invariant is the module's: [`Action::Release`] comes
/// once, and only when the handle was dropped and neither the Recv nor a Send is armed.
#[derive(Debug)]
struct Conn {
    /// The multishot Recv.
    recv: RecvState,
    /// A Send is in flight.
    send_armed: bool,
    /// The handle was dropped: free the slot once nothing is armed.
    released: bool,
    /// The peer closed its side (after the inbox).
    eof: bool,
    /// Receiving failed.
    recv_error: Option<io::ErrorKind>,
}

impl Conn {
    /// A connection just adopted: its Recv is armed at once (the driver queues it).
    fn new() -> Conn {
        Conn {
            recv: RecvState::Armed,
            send_armed: false,
            released: false,
            eof: false,
            recv_error: None,
        }
    }

    /// Whether a Recv is armed (a completion will still come for it).
    fn recv_armed(&self) -> bool {
        matches!(self.recv, RecvState::Armed | RecvState::Cancelling)
    }

    /// Whether received bytes still go to the inbox (nobody reads them after the drop).
    fn keeps_bytes(&self) -> bool {
        !self.released
    }

    /// After a drop, release once the last armed op completed.
    fn release_if_idle(&self) -> Action {
        if self.released && !self.recv_armed() && !self.send_armed {
            Action::Release
        } else {
            Action::Nothing
        }
    }

    /// A Recv completion; `more`: it carries `F_MORE` (the multishot stays armed); `unread`:
    /// the inbox's unread bytes, this completion's included.
    fn on_recv(&mut self, received: Received, more: bool, unread: usize) -> Action {
        match received {
            Received::Eof => self.eof = true,
            Received::Failed(kind) => self.recv_error = Some(kind),
            Received::Bytes(_) | Received::NoBuffers | Received::Cancelled => {}
        }
        if !self.recv_armed() {
            // Not expected: only an armed Recv completes.
            return Action::Nothing;
        }
        let full = unread > INBOX_BYTES_MAX;
        if more {
            if full && self.recv == RecvState::Armed && !self.released {
                // Stop receiving until the reader catches up.
                self.recv = RecvState::Cancelling;
                return Action::CancelRecv;
            }
            return Action::Nothing;
        }
        // The multishot ended: its last completion.
        if self.released || self.eof || self.recv_error.is_some() {
            self.recv = RecvState::Ended;
            return self.release_if_idle();
        }
        if full {
            // Whether our cancel or the kernel ended it, the reader resumes it at half.
            self.recv = RecvState::Paused;
            return Action::Nothing;
        }
        // ENOBUFS, a cancel the reader overtook, or the kernel stopped it: arm it again.
        self.recv = RecvState::Armed;
        Action::ArmRecv
    }

    /// The reader took bytes; `unread`: what is left in the inbox.
    fn on_read(&mut self, unread: usize) -> Action {
        if self.recv == RecvState::Paused && !self.released && unread <= INBOX_BYTES_MAX / 2 {
            self.recv = RecvState::Armed;
            return Action::ArmRecv;
        }
        Action::Nothing
    }

    /// A write of `bytes` bytes was asked for.
    fn on_write(&mut self, bytes: usize) -> Result<Action, SendBusy> {
        if self.send_armed {
            return Err(SendBusy);
        }
        if bytes == 0 {
            return Ok(Action::Nothing);
        }
        self.send_armed = true;
        Ok(Action::ArmSend)
    }

    /// A Send completion; `failed`: it reported an error; `left`: bytes of the write still
    /// unsent. Anything but [`Action::ArmSend`] ends the write.
    fn on_send(&mut self, failed: bool, left: usize) -> Action {
        if !self.send_armed {
            // Not expected: only an armed Send completes.
            return Action::Nothing;
        }
        self.send_armed = false;
        if !failed && left > 0 && !self.released {
            self.send_armed = true;
            return Action::ArmSend;
        }
        self.release_if_idle()
    }

    /// The handle was dropped.
    fn on_drop(&mut self) -> Action {
        self.released = true;
        if self.recv_armed() || self.send_armed {
            // Ends the armed Recv (EOF) and any Send (error); their completions release it.
            return Action::Shutdown;
        }
        self.recv = RecvState::Ended;
        Action::Release
    }
}

/// Values in reusable slots. Each use of a slot has its own generation, part of every
/// `user_data`, so a completion of an op meant for an earlier use never finds the current one.
struct Table<T> {
    /// By slot index: the generation of its current use, and the value.
    slots: Vec<Option<(u32, T)>>,
    /// Free slot indexes.
    free: Vec<usize>,
    /// The generation the next use gets.
    next_generation: u32,
}

impl<T> Table<T> {
    /// An empty table.
    fn new() -> Table<T> {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            next_generation: 0,
        }
    }

    /// Puts `value` in a free slot; returns its index.
    fn insert(&mut self, value: T) -> usize {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some((generation, value));
                index
            }
            None => {
                self.slots.push(Some((generation, value)));
                self.slots.len() - 1
            }
        }
    }

    /// The value in slot `index`, whatever its use.
    fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.slots
            .get_mut(index)
            .and_then(Option::as_mut)
            .map(|(_, value)| value)
    }

    /// The generation of slot `index`'s current use.
    fn generation(&self, index: usize) -> Option<u32> {
        self.slots
            .get(index)
            .and_then(Option::as_ref)
            .map(|(generation, _)| *generation)
    }

    /// Frees slot `index`, returning its value.
    fn remove(&mut self, index: usize) -> Option<T> {
        let value = self.slots.get_mut(index)?.take()?;
        self.free.push(index);
        Some(value.1)
    }
}

/// What a completion is, once its slot's current generation is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// The Recv of the connection in slot `.0`.
    Recv(usize),
    /// A Send of the connection in slot `.0`.
    Send(usize),
    /// A cancel's own completion, or an op of a slot's earlier use (not expected: a slot is
    /// freed only when none of its ops is armed): changes no connection, but a buffer it
    /// holds must go back.
    Ignore,
}

/// Routes the completion `user_data`; `current`: the generation of its slot's current use.
fn route(user_data: u64, current: Option<u32>) -> Route {
    let (index, generation) = untag(user_data);
    if current != Some(generation) {
        return Route::Ignore;
    }
    match user_data & 3 {
        RECV => Route::Recv(index),
        SEND => Route::Send(index),
        _ => Route::Ignore,
    }
}

/// How to go on after `io_uring_enter` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// A signal interrupted it (EINTR): enter again at once.
    Now,
    /// The completion queue is overflowing (EBUSY): reap completions, then enter again.
    AfterReaping,
    /// The kernel lacks resources for new requests for now (EAGAIN): wait
    /// [`ENTER_AGAIN_BACKOFF`], then enter again.
    AfterBackOff,
    /// Anything else: the ring is broken, and so is the shard.
    Never,
}

impl Retry {
    /// How to go on after `error` (io_uring_enter(2), ERRORS).
    fn of(error: &io::Error) -> Retry {
        match error.raw_os_error() {
            Some(libc::EINTR) => Retry::Now,
            Some(libc::EBUSY) => Retry::AfterReaping,
            Some(libc::EAGAIN) => Retry::AfterBackOff,
            _ => Retry::Never,
        }
    }
}

/// The ring as [`enter_retrying`] sees it: a seam, so a test can script failures.
trait Enter {
    /// One non-waiting `io_uring_enter`: submits what is pushed, runs deferred completion work.
    fn enter(&self) -> io::Result<()>;
    /// Handles the completions waiting in the completion queue; returns how many.
    fn reap(&self) -> usize;
    /// Notes that `error` was transient and is retried.
    fn retrying(&self, error: &io::Error);
}

/// Enters the ring, retrying while the failure is transient ([`Retry`]): a transient error is
/// not the end of the shard. Returns how many completions were reaped on the way; an error is
/// one that is not transient.
async fn enter_retrying<F: std::future::Future<Output = ()>>(
    ring: &impl Enter,
    mut back_off: impl FnMut() -> F,
) -> io::Result<usize> {
    let mut reaped = 0;
    loop {
        let Err(error) = ring.enter() else {
            return Ok(reaped);
        };
        let retry = Retry::of(&error);
        if retry == Retry::Never {
            return Err(error);
        }
        ring.retrying(&error);
        match retry {
            Retry::AfterReaping => {
                let n = ring.reap();
                reaped += n;
                if n == 0 {
                    // Nothing to make room with: wait rather than spin.
                    back_off().await;
                }
            }
            Retry::AfterBackOff => back_off().await,
            Retry::Now | Retry::Never => {}
        }
    }
}

/// What the driver does with its kernel timeout before a turn (see [`crate::timers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerPlan {
    /// The armed timeout fires no later than the earliest entry: leave it.
    Keep,
    /// None is armed: arm one for this instant.
    Arm(Instant),
    /// An entry is earlier than the armed timeout: move it there (one update, no new timeout).
    Move(Instant),
}

impl TimerPlan {
    /// `armed`: when the armed timeout fires, if one is; `next`: the earliest entry. Nothing
    /// pending still gets a timeout, [`IDLE_RECHECK`] away: the safety net of `drive`.
    fn of(armed: Option<Instant>, next: Option<Instant>, now: Instant) -> TimerPlan {
        match (armed, next) {
            (None, next) => {
                let lapse = now + IDLE_RECHECK;
                TimerPlan::Arm(next.map_or(lapse, |n| n.min(lapse)))
            }
            (Some(armed), Some(next)) if next < armed => TimerPlan::Move(next),
            (Some(_), _) => TimerPlan::Keep,
        }
    }
}

/// The shard's one kernel timeout (an IORING_OP_TIMEOUT on the socket ring) that wakes the
/// driver for the earliest of the shard's [`Timers`].
struct KernelTimer {
    /// The shard's timers.
    timers: Rc<Timers>,
    /// When the armed timeout fires; `None`: none is armed.
    armed: Option<Instant>,
    /// The generation of the armed timeout (counts the timeouts armed).
    generation: u32,
    /// The relative time of the latest timeout op: the kernel copies it when the op is
    /// submitted, so it lives here, at a stable address, until then (a turn queues at most one
    /// timeout op, and if a full submission queue held one back to the next turn it reads that
    /// turn's value, which is the one wanted by then).
    spec: Box<types::Timespec>,
}

/// One connection's side of the ring.
struct Slot {
    /// Which ops are armed, and whether the handle is gone.
    conn: Conn,
    /// The socket, closed when the slot is freed.
    stream: OwnedFd,
    /// Received bytes not yet read.
    inbox: Inbox,
    /// The task waiting to read.
    reader: Option<Waker>,
    /// Bytes being sent.
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// The outcome of the last write, once all of `out` went or sending failed.
    send_done: Option<Result<(), io::ErrorKind>>,
    /// The task waiting for its write.
    writer: Option<Waker>,
}

impl Slot {
    /// Received bytes not yet read.
    fn unread(&self) -> usize {
        self.inbox.unread()
    }
}

/// A connection's received bytes not yet read: appended at the back by the driver, taken from
/// the front by the reader. Its memory follows what is unread, not what went through it: a
/// reader that takes a bounded share a turn (`READ_BYTES_PER_TURN_MAX`) while a flood keeps
/// arriving never drains it to empty, so the bytes already read are dropped once they are as
/// many as those unread (each unread byte moves at most once per time its count doubles:
/// amortised O(1) per byte). Without that, a random-byte flood grew one to gigabytes.
#[derive(Debug, Default)]
struct Inbox {
    /// Bytes; `bytes[read..]` are unread.
    bytes: Vec<u8>,
    /// Where the unread bytes start.
    read: usize,
}

impl Inbox {
    /// Received bytes not yet read.
    fn unread(&self) -> usize {
        self.bytes.len() - self.read
    }

    /// Appends received bytes.
    fn push(&mut self, bytes: &[u8]) {
        if self.read > 0 && self.read >= self.unread() {
            self.bytes.drain(..self.read);
            self.read = 0;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Moves up to `buf.len()` unread bytes into `buf`; returns how many.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = self.unread().min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[self.read..self.read + n]);
        self.read += n;
        if self.read == self.bytes.len() {
            self.read = 0;
            if self.bytes.capacity() > BUF_SIZE {
                // A burst grew it: give the memory back (idle connections hold none beyond
                // one buffer's worth).
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
        }
        n
    }

    /// Bytes of memory held.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

/// The ring's state.
struct Inner {
    /// The ring. Declared before `slots`: closed before the sockets its ops name.
    ring: IoUring,
    /// Provided buffers.
    bufs: BufRing,
    /// Connections by slot.
    slots: Table<Slot>,
    /// Entries queued since the last turn, in order.
    queue: Vec<squeue::Entry>,
    /// Completions of the current turn, reused.
    completions: Vec<(u64, i32, u32)>,
    /// Tasks to wake after the turn (woken outside the borrow).
    wake: Vec<Waker>,
    /// The timeout that wakes the driver for the shard's timers.
    timer: KernelTimer,
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
    /// Transient `io_uring_enter` failures retried so far (the first one is logged).
    enter_retries: std::cell::Cell<u64>,
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
                slots: Table::new(),
                queue: Vec::new(),
                completions: Vec::with_capacity(CQ_ENTRIES as usize),
                wake: Vec::new(),
                timer: KernelTimer {
                    timers: Timers::install(),
                    armed: None,
                    generation: 0,
                    spec: Box::new(types::Timespec::new()),
                },
            }),
            eventfd,
            stopping: std::cell::Cell::new(false),
            kicked: std::cell::Cell::new(false),
            idle_driver: RefCell::new(None),
            enter_retries: std::cell::Cell::new(0),
        }))
    }

    /// Takes over an accepted socket ([`detach`]ed from glommio): its receive is armed at once.
    ///
    /// glommio arms a POLL_ADD in its own ring for every `TcpStream` it makes and keeps it
    /// armed while the stream lives; the ring path never reads through glommio, so those polls
    /// only cost — and dearly: glommio cancels a timeout each time it parks, and the kernel's
    /// cancel searches the ring's polls first (perf, 200 sending + 10 000 idle connections: 53 %
    /// of the shard's CPU in `io_poll_find`). So the slot owns a duplicate of the fd, and
    /// glommio's stream, with its poll, goes now.
    pub fn adopt(self: &Rc<Self>, socket: std::net::TcpStream) -> Handle {
        let stream = OwnedFd::from(socket);
        let mut inner = self.inner.borrow_mut();
        let index = inner.slots.insert(Slot {
            conn: Conn::new(),
            stream,
            inbox: Inbox::default(),
            reader: None,
            out: Vec::new(),
            sent: 0,
            send_done: None,
            writer: None,
        });
        inner.push_recv(index);
        drop(inner);
        self.kick();
        Handle {
            sockets: Rc::clone(self),
            slot: index,
        }
    }

    /// Runs the ring, and the shard's [`Timers`], until [`Sockets::stop`]; spawn it once per
    /// shard. An error means the ring failed: no connection of the shard can make progress any
    /// more. Either way the timers fall back to glommio's when it returns.
    pub async fn drive(self: Rc<Self>) -> io::Result<()> {
        let result = self.drive_ring().await;
        let timers = Rc::clone(&self.inner.borrow().timer.timers);
        timers.stop();
        result
    }

    async fn drive_ring(&self) -> io::Result<()> {
        let timers = Rc::clone(&self.inner.borrow().timer.timers);
        // The eventfd read stays armed across idle periods; a new one only after it fired.
        let mut fired = Box::pin(self.eventfd.read_at(0, 8));
        let mut due = Vec::new();
        while !self.stopping.get() {
            // The shard's timers: wake what is due, keep the kernel timeout on the earliest.
            let now = Instant::now();
            timers.fire_due(now, &mut due);
            due.drain(..).for_each(Waker::wake);
            self.inner.borrow_mut().plan_timer(now);
            match self.turn().await {
                Ok(0) if self.idle() => {
                    let completions = async {
                        let result = (&mut fired).await;
                        Some(result)
                    };
                    let queued = async {
                        self.queued().await;
                        None
                    };
                    // An entry earlier than the kernel timeout: arm it before sleeping on.
                    let earlier = async {
                        poll_fn(|cx| timers.poll_earlier(cx)).await;
                        None
                    };
                    // Nothing else wakes a parked driver: the kernel timeout is the timers'
                    // wake-up and, at IDLE_RECHECK, the safety net (if a wake-up were ever
                    // missed, the ring is looked at again after that long rather than never).
                    let woken = futures_lite::future::or(completions, queued);
                    match futures_lite::future::or(woken, earlier).await {
                        Some(Ok(_)) => fired = Box::pin(self.eventfd.read_at(0, 8)),
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

    /// Whether nothing is left to do until the kernel signals: no entries queued or pushed
    /// and not submitted, no completion work pending in the kernel (a single enter runs only a
    /// bounded batch of it, and more work queued behind a non-empty list does not signal the
    /// eventfd again: TASKRUN_FLAG shows it), no completions waiting.
    fn idle(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        if !inner.queue.is_empty() {
            return false;
        }
        let sq = inner.ring.submission();
        let pending = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
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

    /// One turn: submit the queued entries (as many as the submission queue holds; the rest
    /// next turn), reap and handle every completion, wake the tasks. Returns how many
    /// completions were handled.
    async fn turn(&self) -> io::Result<usize> {
        self.inner.borrow_mut().push_queued();
        // A glommio timer: the driver cannot wait on the ring it is failing to enter.
        let reaped = enter_retrying(self, || glommio::timer::sleep(ENTER_AGAIN_BACKOFF)).await?;
        let handled = reaped + self.inner.borrow_mut().reap();
        let mut wake = std::mem::take(&mut self.inner.borrow_mut().wake);
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

impl Enter for Sockets {
    fn enter(&self) -> io::Result<()> {
        self.inner.borrow_mut().enter()
    }

    fn reap(&self) -> usize {
        self.inner.borrow_mut().reap()
    }

    fn retrying(&self, error: &io::Error) {
        let retries = self.enter_retries.get();
        self.enter_retries.set(retries.saturating_add(1));
        if retries == 0 {
            tracing::warn!(%error, "io_uring_enter failed for now; retrying (logged once)");
        } else {
            tracing::debug!(%error, retries, "io_uring_enter failed for now; retrying");
        }
    }
}

impl Inner {
    /// Pushes queued entries, in order, while the submission queue has room; the rest stay
    /// queued for the next turn.
    fn push_queued(&mut self) {
        let mut sq = self.ring.submission();
        let mut pushed = 0;
        for entry in &self.queue {
            // SAFETY: every entry's buffer outlives its op (module invariants).
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            pushed += 1;
        }
        drop(sq);
        self.queue.drain(..pushed);
    }

    /// Enters the ring once: gives back the recycled buffers, submits the pushed entries and
    /// runs the deferred completion work (DEFER_TASKRUN), without waiting.
    fn enter(&mut self) -> io::Result<()> {
        self.bufs.publish();
        let pending = self.ring.submission().len() as u32;
        let getevents = io_uring::EnterFlags::GETEVENTS.bits();
        // SAFETY: no argument struct is passed; `pending` entries were pushed.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(pending, 0, getevents, None)
        }
        .map(drop)
    }

    /// Handles every completion waiting in the completion queue; returns how many.
    fn reap(&mut self) -> usize {
        let mut completions = std::mem::take(&mut self.completions);
        completions.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, result, flags) in &completions {
            self.complete(user_data, result, flags);
        }
        let handled = completions.len();
        completions.clear();
        self.completions = completions;
        handled
    }

    /// Handles one completion.
    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        if user_data & 3 == TIMER {
            self.timer_completed(user_data, result);
            return;
        }
        let current = self.slots.generation(untag(user_data).0);
        match route(user_data, current) {
            Route::Recv(index) => self.received(index, result, flags),
            Route::Send(index) => self.sent(index, result),
            Route::Ignore => {
                // A buffer must never be lost.
                if let Some(bid) = cqueue::buffer_select(flags) {
                    self.bufs.recycle(bid);
                }
            }
        }
    }

    /// Before a turn: keeps the kernel timeout on the earliest of the shard's timers (queues an
    /// arm or a move when it is not).
    fn plan_timer(&mut self, now: Instant) {
        let timer = &mut self.timer;
        let plan = TimerPlan::of(timer.armed, timer.timers.next_deadline(), now);
        let (at, entry) = match plan {
            TimerPlan::Keep => {
                // An entry that came earlier and went again needs no wake-up.
                timer.timers.set_armed(timer.armed);
                return;
            }
            TimerPlan::Arm(at) => {
                timer.generation = timer.generation.wrapping_add(1);
                *timer.spec = timespec(at.saturating_duration_since(now));
                let entry = opcode::Timeout::new(&*timer.spec).build();
                (at, entry.user_data(tag(TIMEOUT, timer.generation, TIMER)))
            }
            TimerPlan::Move(at) => {
                *timer.spec = timespec(at.saturating_duration_since(now));
                let armed = tag(TIMEOUT, timer.generation, TIMER);
                let entry = opcode::TimeoutUpdate::new(armed, &*timer.spec).build();
                (
                    at,
                    entry.user_data(tag(TIMEOUT_UPDATE, timer.generation, TIMER)),
                )
            }
        };
        timer.armed = Some(at);
        timer.timers.set_armed(Some(at));
        self.queue.push(entry);
    }

    /// A completion of the kernel timeout (it fired, `-ETIME`) or of its update (failed with
    /// `-ENOENT` when it had fired already): either way the current one is no longer armed, and
    /// the next turn arms one. Completions of earlier timeouts change nothing.
    fn timer_completed(&mut self, user_data: u64, result: i32) {
        let (which, generation) = untag(user_data);
        let timer = &mut self.timer;
        if generation != timer.generation || timer.armed.is_none() {
            return;
        }
        if which == TIMEOUT || result < 0 {
            timer.armed = None;
            timer.timers.set_armed(None);
        }
    }

    /// Carries out `action` for slot `index`.
    fn act(&mut self, index: usize, action: Action) {
        match action {
            Action::Nothing => {}
            Action::ArmRecv => self.push_recv(index),
            Action::CancelRecv => self.push_cancel(index),
            Action::ArmSend => self.push_send(index),
            Action::Shutdown => {
                if let Some(slot) = self.slots.get_mut(index) {
                    // The peer sees the close as it would with a plain close.
                    // SAFETY: shutdown(2) on the fd the slot's stream owns, still open.
                    unsafe { libc::shutdown(slot.stream.as_raw_fd(), libc::SHUT_RDWR) };
                }
            }
            Action::Release => {
                // Closes the fd: no op names it any more (`Conn`).
                self.slots.remove(index);
            }
        }
    }

    /// A Recv completion: bytes into the inbox, EOF, an error, or the end of the multishot.
    fn received(&mut self, index: usize, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.get_mut(index) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        let received = Received::of(result);
        if let Some(bid) = bid {
            if let Received::Bytes(len) = received {
                if slot.conn.keeps_bytes() {
                    slot.inbox.push(self.bufs.bytes(bid, len));
                }
            }
            self.bufs.recycle(bid);
        }
        if let Some(waker) = slot.reader.take() {
            self.wake.push(waker);
        }
        let action = slot
            .conn
            .on_recv(received, cqueue::more(flags), slot.unread());
        self.act(index, action);
    }

    /// A Send completion: more to send, done, or failed.
    fn sent(&mut self, index: usize, result: i32) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let failed = result < 0;
        if !failed {
            slot.sent += result as usize;
        }
        let left = slot.out.len().saturating_sub(slot.sent);
        let action = slot.conn.on_send(failed, left);
        if action != Action::ArmSend {
            slot.send_done = Some(if failed {
                Err(io::Error::from_raw_os_error(result.saturating_neg()).kind())
            } else {
                Ok(())
            });
            if let Some(waker) = slot.writer.take() {
                self.wake.push(waker);
            }
        }
        self.act(index, action);
    }

    /// Queues the slot's multishot Recv.
    fn push_recv(&mut self, index: usize) {
        let Some(generation) = self.slots.generation(index) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let entry = opcode::RecvMulti::new(types::Fd(slot.stream.as_raw_fd()), BGID).build();
        self.queue
            .push(entry.user_data(tag(index, generation, RECV)));
    }

    /// Queues a cancel of the slot's Recv.
    fn push_cancel(&mut self, index: usize) {
        let Some(generation) = self.slots.generation(index) else {
            return;
        };
        let entry = opcode::AsyncCancel::new(tag(index, generation, RECV)).build();
        self.queue
            .push(entry.user_data(tag(index, generation, CANCEL)));
    }

    /// Queues a Send of the slot's `out[sent..]`.
    fn push_send(&mut self, index: usize) {
        let Some(generation) = self.slots.generation(index) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let rest = &slot.out[slot.sent.min(slot.out.len())..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(slot.stream.as_raw_fd()), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.queue
            .push(entry.user_data(tag(index, generation, SEND)));
    }
}

/// `duration` as the kernel's timespec.
fn timespec(duration: std::time::Duration) -> types::Timespec {
    types::Timespec::new()
        .sec(duration.as_secs())
        .nsec(duration.subsec_nanos())
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

/// An accepted socket as the ring path keeps it: a duplicate of its fd, glommio's stream (and
/// the read-readiness poll glommio keeps armed for it, see [`Sockets::adopt`]) dropped. Fails
/// when no descriptor is left for the duplicate (EMFILE): the accept loop treats that as a
/// failed accept (counted, logged at most once a second, backed off).
pub fn detach(stream: glommio::net::TcpStream) -> io::Result<std::net::TcpStream> {
    // SAFETY: the fd is open: `stream` owns it until the end of this function.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let owned = fd.try_clone_to_owned()?;
    drop(stream);
    Ok(std::net::TcpStream::from(owned))
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
            let Some(slot) = inner.slots.get_mut(self.slot) else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let available = slot.unread();
            if available > 0 && !buf.is_empty() {
                let n = slot.inbox.take(buf);
                let action = slot.conn.on_read(slot.unread());
                if action != Action::Nothing {
                    inner.act(self.slot, action);
                    self.sockets.kick();
                }
                return Poll::Ready(Ok(n));
            }
            if let Some(kind) = slot.conn.recv_error {
                return Poll::Ready(Err(kind.into()));
            }
            if slot.conn.eof || buf.is_empty() {
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
            let Some(slot) = inner.slots.get_mut(self.slot) else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            // Busy: an earlier write was abandoned mid-way, the stream is no longer in order.
            let action = slot
                .conn
                .on_write(data.len())
                .map_err(|SendBusy| io::Error::from(io::ErrorKind::WouldBlock))?;
            slot.out.clear();
            slot.out.extend_from_slice(data);
            slot.sent = 0;
            slot.send_done = None;
            if action == Action::Nothing {
                return Ok(());
            }
            inner.act(self.slot, action);
        }
        self.sockets.kick();
        poll_fn(|cx| {
            let mut inner = self.sockets.inner.borrow_mut();
            let Some(slot) = inner.slots.get_mut(self.slot) else {
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
        let Some(slot) = inner.slots.get_mut(self.slot) else {
            return;
        };
        slot.reader = None;
        slot.writer = None;
        let action = slot.conn.on_drop();
        inner.act(self.slot, action);
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

    /// Inbox levels: below the pause bound, just over it, and the resume level.
    const SOME: usize = 100;
    const OVER: usize = INBOX_BYTES_MAX + 1;
    const HALF: usize = INBOX_BYTES_MAX / 2;

    /// A Recv completion carrying `F_MORE` (the multishot stays armed).
    const MORE: bool = true;
    /// The last completion of a multishot Recv.
    const LAST: bool = false;

    fn bytes() -> Received {
        Received::Bytes(10)
    }

    #[test]
    fn an_inbox_never_drained_to_empty_holds_memory_for_its_unread_bytes_only() {
        // A flood: 20 buffers arrive a turn, the reader takes 16 of them' worth, so the inbox
        // never empties while 400 MiB pass through it.
        let mut inbox = Inbox::default();
        let chunk = [7u8; BUF_SIZE];
        let mut buf = vec![0u8; 16 * BUF_SIZE];
        let mut unread_max = 0;
        let mut capacity_max = 0;
        for turn in 0..5_000 {
            for _ in 0..20 {
                inbox.push(&chunk);
            }
            assert_eq!(inbox.take(&mut buf), buf.len(), "turn {turn}");
            assert!(buf.iter().all(|&b| b == 7));
            // The pause bound keeps the unread bytes bounded in the server; here, likewise.
            if inbox.unread() > INBOX_BYTES_MAX {
                while inbox.unread() > INBOX_BYTES_MAX / 2 {
                    inbox.take(&mut buf);
                }
            }
            unread_max = unread_max.max(inbox.unread());
            capacity_max = capacity_max.max(inbox.capacity());
        }
        assert!(
            capacity_max <= 4 * (unread_max + 20 * BUF_SIZE),
            "capacity {capacity_max} for at most {unread_max} unread bytes"
        );
    }

    #[test]
    fn an_inbox_gives_bytes_back_in_order_across_compactions() {
        let mut inbox = Inbox::default();
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        let mut buf = [0u8; 700];
        for _ in 0..10_000 {
            let bytes: Vec<u8> = (0..1000)
                .map(|_| {
                    next_in = next_in.wrapping_add(1);
                    next_in
                })
                .collect();
            inbox.push(&bytes);
            let n = inbox.take(&mut buf);
            for &b in &buf[..n] {
                next_out = next_out.wrapping_add(1);
                assert_eq!(b, next_out);
            }
        }
        while inbox.unread() > 0 {
            let n = inbox.take(&mut buf);
            for &b in &buf[..n] {
                next_out = next_out.wrapping_add(1);
                assert_eq!(b, next_out);
            }
        }
        assert_eq!(next_in, next_out);
        assert_eq!(inbox.capacity(), 0, "drained: memory given back");
    }

    #[test]
    fn a_recv_completion_result_means_bytes_eof_no_buffers_cancel_or_error() {
        assert_eq!(Received::of(1), Received::Bytes(1));
        assert_eq!(Received::of(4096), Received::Bytes(4096));
        assert_eq!(Received::of(0), Received::Eof);
        assert_eq!(Received::of(-libc::ENOBUFS), Received::NoBuffers);
        assert_eq!(Received::of(-libc::ECANCELED), Received::Cancelled);
        assert_eq!(
            Received::of(-libc::ECONNRESET),
            Received::Failed(io::ErrorKind::ConnectionReset)
        );
        assert!(matches!(Received::of(i32::MIN), Received::Failed(_)));
    }

    #[test]
    fn an_adopted_connection_has_its_recv_armed_and_keeps_it_armed_below_the_bound() {
        let mut conn = Conn::new();
        assert_eq!(conn.recv, RecvState::Armed);
        assert!(conn.keeps_bytes());
        assert_eq!(conn.on_recv(bytes(), MORE, SOME), Action::Nothing);
        assert_eq!(
            conn.on_recv(bytes(), MORE, INBOX_BYTES_MAX),
            Action::Nothing
        );
        assert_eq!(conn.recv, RecvState::Armed);
        // Reading does not arm a Recv that is armed.
        assert_eq!(conn.on_read(0), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Armed);
    }

    #[test]
    fn a_full_inbox_cancels_the_recv_once_and_pauses_it_at_its_last_completion() {
        let mut conn = Conn::new();
        assert_eq!(conn.on_recv(bytes(), MORE, OVER), Action::CancelRecv);
        assert_eq!(conn.recv, RecvState::Cancelling);
        assert!(conn.recv_armed());
        // Bytes still in flight before the cancel lands: no second cancel.
        assert_eq!(conn.on_recv(bytes(), MORE, OVER + 10), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Cancelling);
        // Reading while the cancel is in flight does not arm a second Recv.
        assert_eq!(conn.on_read(0), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Cancelling);
        // The cancel's completion ends the multishot: paused while the inbox is full.
        assert_eq!(
            conn.on_recv(Received::Cancelled, LAST, OVER),
            Action::Nothing
        );
        assert_eq!(conn.recv, RecvState::Paused);
        assert!(!conn.recv_armed());
        assert_eq!(conn.recv_error, None, "a cancel is not an error");
    }

    #[test]
    fn a_paused_recv_is_armed_again_once_the_reader_drained_the_inbox_to_half() {
        let mut conn = Conn::new();
        conn.on_recv(bytes(), MORE, OVER);
        conn.on_recv(Received::Cancelled, LAST, OVER);
        assert_eq!(conn.recv, RecvState::Paused);
        assert_eq!(conn.on_read(INBOX_BYTES_MAX), Action::Nothing);
        assert_eq!(conn.on_read(HALF + 1), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Paused);
        assert_eq!(conn.on_read(HALF), Action::ArmRecv);
        assert_eq!(conn.recv, RecvState::Armed);
        // Armed once, not once per read.
        assert_eq!(conn.on_read(0), Action::Nothing);
    }

    #[test]
    fn a_cancel_the_reader_overtook_arms_the_recv_again_at_its_completion() {
        let mut conn = Conn::new();
        conn.on_recv(bytes(), MORE, OVER);
        // The reader drained the inbox before the cancel completed.
        assert_eq!(conn.on_read(0), Action::Nothing);
        assert_eq!(conn.on_recv(Received::Cancelled, LAST, 0), Action::ArmRecv);
        assert_eq!(conn.recv, RecvState::Armed);
    }

    #[test]
    fn enobufs_arms_the_recv_again_unless_the_inbox_is_full() {
        let mut conn = Conn::new();
        assert_eq!(
            conn.on_recv(Received::NoBuffers, LAST, SOME),
            Action::ArmRecv
        );
        assert_eq!(conn.recv, RecvState::Armed);
        assert_eq!(conn.recv_error, None, "ENOBUFS is not an error");
        // Out of buffers while a cancel is in flight and the inbox is full: paused.
        conn.on_recv(bytes(), MORE, OVER);
        assert_eq!(
            conn.on_recv(Received::NoBuffers, LAST, OVER),
            Action::Nothing
        );
        assert_eq!(conn.recv, RecvState::Paused);
        assert_eq!(conn.on_read(HALF), Action::ArmRecv);
    }

    #[test]
    fn a_multishot_ending_without_more_while_armed_is_armed_again_or_paused() {
        // The kernel may end a multishot on a completion with bytes and no F_MORE.
        let mut conn = Conn::new();
        assert_eq!(conn.on_recv(bytes(), LAST, SOME), Action::ArmRecv);
        assert_eq!(conn.recv, RecvState::Armed);
        // Ended with the inbox over the bound and no cancel queued: paused, so that the
        // reader resumes it (not left unarmed with nobody to arm it).
        assert_eq!(conn.on_recv(bytes(), LAST, OVER), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Paused);
        assert_eq!(conn.on_read(HALF), Action::ArmRecv);
        assert_eq!(conn.recv, RecvState::Armed);
    }

    #[test]
    fn eof_or_an_error_ends_the_recv_for_good() {
        let mut conn = Conn::new();
        assert_eq!(conn.on_recv(Received::Eof, LAST, SOME), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Ended);
        assert!(conn.eof);
        assert_eq!(conn.on_read(0), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Ended);

        let mut conn = Conn::new();
        let reset = Received::Failed(io::ErrorKind::ConnectionReset);
        assert_eq!(conn.on_recv(reset, LAST, 0), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Ended);
        assert_eq!(conn.recv_error, Some(io::ErrorKind::ConnectionReset));
        assert_eq!(conn.on_read(0), Action::Nothing);
    }

    #[test]
    fn a_completion_with_no_recv_armed_changes_nothing() {
        let mut conn = Conn::new();
        conn.on_recv(Received::Eof, LAST, 0);
        assert_eq!(conn.on_recv(bytes(), LAST, 0), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Ended);
        assert_eq!(conn.on_send(false, 0), Action::Nothing);
        assert!(!conn.send_armed);
    }

    #[test]
    fn a_send_is_armed_until_all_bytes_went_and_a_second_write_waits_for_it() {
        let mut conn = Conn::new();
        assert_eq!(conn.on_write(0), Ok(Action::Nothing));
        assert!(!conn.send_armed, "an empty write arms nothing");
        assert_eq!(conn.on_write(100), Ok(Action::ArmSend));
        assert!(conn.send_armed);
        assert_eq!(conn.on_write(100), Err(SendBusy));
        // A partial send: the rest is sent at once.
        assert_eq!(conn.on_send(false, 60), Action::ArmSend);
        assert!(conn.send_armed);
        assert_eq!(conn.on_write(1), Err(SendBusy));
        assert_eq!(conn.on_send(false, 0), Action::Nothing);
        assert!(!conn.send_armed);
        assert_eq!(conn.on_write(100), Ok(Action::ArmSend));
        // A failed send ends the write, whatever is left.
        assert_eq!(conn.on_send(true, 100), Action::Nothing);
        assert!(!conn.send_armed);
        assert_eq!(conn.recv, RecvState::Armed, "sending leaves the Recv alone");
    }

    #[test]
    fn a_drop_with_nothing_armed_releases_at_once() {
        let mut conn = Conn::new();
        conn.on_recv(Received::Eof, LAST, 0);
        assert_eq!(conn.on_drop(), Action::Release);

        // Paused (the Recv is not armed) and no Send: nothing will complete.
        let mut conn = Conn::new();
        conn.on_recv(bytes(), LAST, OVER);
        assert_eq!(conn.recv, RecvState::Paused);
        assert_eq!(conn.on_drop(), Action::Release);
    }

    #[test]
    fn a_drop_with_the_recv_armed_shuts_down_and_releases_at_its_last_completion() {
        let mut conn = Conn::new();
        assert_eq!(conn.on_drop(), Action::Shutdown);
        assert!(!conn.keeps_bytes(), "nobody reads after the drop");
        // Bytes that were in flight: not kept, and a full inbox cancels nothing any more.
        assert_eq!(conn.on_recv(bytes(), MORE, OVER), Action::Nothing);
        assert_eq!(conn.recv, RecvState::Armed);
        // The shutdown's EOF ends the multishot.
        assert_eq!(conn.on_recv(Received::Eof, LAST, 0), Action::Release);

        // ENOBUFS after the drop: released, not armed again.
        let mut conn = Conn::new();
        conn.on_drop();
        assert_eq!(conn.on_recv(Received::NoBuffers, LAST, 0), Action::Release);

        // Dropped while a cancel is in flight: its completion releases.
        let mut conn = Conn::new();
        conn.on_recv(bytes(), MORE, OVER);
        assert_eq!(conn.on_drop(), Action::Shutdown);
        assert_eq!(
            conn.on_recv(Received::Cancelled, LAST, OVER),
            Action::Release
        );
    }

    #[test]
    fn a_drop_with_a_send_armed_releases_only_after_the_recv_and_the_send_completed() {
        // The Recv's last completion first, then the Send's.
        let mut conn = Conn::new();
        conn.on_write(100).ok();
        assert_eq!(conn.on_drop(), Action::Shutdown);
        assert_eq!(conn.on_recv(Received::Eof, LAST, 0), Action::Nothing);
        assert!(conn.send_armed);
        assert_eq!(conn.on_send(true, 100), Action::Release);

        // The Send's completion first (partial: not sent on after the drop), then the Recv's.
        let mut conn = Conn::new();
        conn.on_write(100).ok();
        assert_eq!(conn.on_drop(), Action::Shutdown);
        assert_eq!(conn.on_send(false, 40), Action::Nothing);
        assert!(!conn.send_armed, "nothing is sent after the drop");
        assert_eq!(conn.on_recv(bytes(), MORE, 0), Action::Nothing);
        assert_eq!(conn.on_recv(Received::Eof, LAST, 0), Action::Release);

        // The Recv was paused (not armed): the Send's completion alone releases.
        let mut conn = Conn::new();
        conn.on_recv(bytes(), LAST, OVER);
        conn.on_write(100).ok();
        assert_eq!(conn.on_drop(), Action::Shutdown);
        assert_eq!(conn.on_send(false, 0), Action::Release);
    }

    /// Feeds `events` to a fresh connection and returns how often it was released.
    fn releases(events: &[&dyn Fn(&mut Conn) -> Action]) -> usize {
        let mut conn = Conn::new();
        events
            .iter()
            .filter(|event| event(&mut conn) == Action::Release)
            .count()
    }

    #[test]
    fn a_connection_is_released_exactly_once_whatever_the_order_of_its_completions() {
        let write: &dyn Fn(&mut Conn) -> Action = &|c| c.on_write(10).unwrap_or(Action::Nothing);
        let drop: &dyn Fn(&mut Conn) -> Action = &|c| c.on_drop();
        let eof: &dyn Fn(&mut Conn) -> Action = &|c| c.on_recv(Received::Eof, LAST, 0);
        let sent: &dyn Fn(&mut Conn) -> Action = &|c| c.on_send(false, 0);
        let failed: &dyn Fn(&mut Conn) -> Action = &|c| c.on_send(true, 10);
        for order in [
            [write, drop, eof, sent],
            [write, drop, sent, eof],
            [write, eof, drop, sent],
            [write, sent, drop, eof],
            [write, sent, eof, drop],
            [write, eof, sent, drop],
            [write, drop, failed, eof],
            [write, drop, eof, failed],
        ] {
            assert_eq!(releases(&order), 1);
        }
    }

    #[test]
    fn a_slot_in_its_next_use_is_never_found_by_an_op_of_the_previous_one() {
        let mut table = Table::new();
        let first = table.insert("first");
        let old = table.generation(first).unwrap_or(u32::MAX);
        assert_eq!(table.remove(first), Some("first"));
        assert_eq!(table.generation(first), None);
        assert_eq!(table.remove(first), None);
        let second = table.insert("second");
        assert_eq!(second, first, "the slot is reused");
        let new = table.generation(second).unwrap_or(u32::MAX);
        assert_ne!(new, old);
        assert_eq!(table.get_mut(second), Some(&mut "second"));
        // Completions of the first use's ops are not routed to the second's connection.
        for kind in [RECV, SEND, CANCEL] {
            assert_eq!(route(tag(first, old, kind), Some(new)), Route::Ignore);
        }
        assert_eq!(route(tag(first, new, RECV), Some(new)), Route::Recv(first));
        assert_eq!(route(tag(first, new, SEND), Some(new)), Route::Send(first));
        // A cancel's own completion changes no connection.
        assert_eq!(route(tag(first, new, CANCEL), Some(new)), Route::Ignore);
        // Nor does any completion for a free slot.
        table.remove(second);
        assert_eq!(
            route(tag(first, new, RECV), table.generation(first)),
            Route::Ignore
        );
    }

    #[test]
    fn the_kernel_timeout_is_armed_once_and_moved_only_for_an_earlier_entry() {
        let now = Instant::now();
        let ms = |n| now + std::time::Duration::from_millis(n);
        // Nothing armed: the earliest entry, or the safety net if that is later or absent.
        assert_eq!(TimerPlan::of(None, Some(ms(5)), now), TimerPlan::Arm(ms(5)));
        assert_eq!(
            TimerPlan::of(None, Some(ms(10_000)), now),
            TimerPlan::Arm(ms(50))
        );
        assert_eq!(TimerPlan::of(None, None, now), TimerPlan::Arm(ms(50)));
        // Armed: kept for a later entry (every read's deadline at hub load), moved for an earlier.
        assert_eq!(
            TimerPlan::of(Some(ms(50)), Some(ms(60_000)), now),
            TimerPlan::Keep
        );
        assert_eq!(
            TimerPlan::of(Some(ms(50)), Some(ms(50)), now),
            TimerPlan::Keep
        );
        assert_eq!(TimerPlan::of(Some(ms(50)), None, now), TimerPlan::Keep);
        assert_eq!(
            TimerPlan::of(Some(ms(50)), Some(ms(2)), now),
            TimerPlan::Move(ms(2))
        );
    }

    /// The shard's timers, driven by a running ring: sleeps resolve on the ring's kernel timeout
    /// (not on glommio timers), one that comes while the driver is parked on a later timeout
    /// moves it, and after the driver stops they fall back to glommio's.
    #[test]
    fn sleeps_resolve_on_the_rings_timeout_and_an_earlier_one_wakes_a_parked_driver() {
        use std::time::Duration;
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let sockets = Sockets::new().expect("a socket ring (Linux 6.1 or later)");
                let timers = Rc::clone(&sockets.inner.borrow().timer.timers);
                let driver = glommio::spawn_local(Rc::clone(&sockets).drive());
                // A far entry, as the heartbeat or an idle connection's read deadline.
                let far = glommio::spawn_local(crate::timers::sleep(Duration::from_secs(3600)));
                glommio::executor().yield_now().await;
                assert!(timers.next_deadline().is_some(), "on the shard timers");
                // Five short sleeps, each made while the driver is parked on a later kernel
                // timeout (the safety net, up to 50 ms away): each must wake the driver to move
                // it, so the kernel timeout never fires after the earliest entry.
                for _ in 0..5 {
                    // A glommio timer: the driver parks meanwhile.
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    let t = Instant::now();
                    let mut short = std::pin::pin!(crate::timers::sleep(Duration::from_millis(1)));
                    assert!(futures_lite::future::poll_once(&mut short).await.is_none());
                    for _ in 0..3 {
                        glommio::executor().yield_now().await;
                    }
                    let armed = sockets.inner.borrow().timer.armed;
                    let next = timers.next_deadline();
                    assert!(
                        armed.is_some() && armed <= next,
                        "the kernel timeout ({armed:?}) is later than the earliest entry \
                         ({next:?}): the parked driver was not woken to move it"
                    );
                    short.await;
                    assert!(t.elapsed() >= Duration::from_millis(1));
                }
                sockets.stop();
                driver.await.expect("the ring ran");
                // Stopped: the far sleep was handed to a glommio timer, and new ones are too.
                assert_eq!(timers.next_deadline(), None);
                drop(far);
                let t = Instant::now();
                crate::timers::sleep(Duration::from_millis(3)).await;
                assert!(t.elapsed() >= Duration::from_millis(3));
            })
            .expect("an executor")
            .join()
            .expect("the test ran");
    }

    #[test]
    fn eintr_ebusy_and_eagain_are_retried_and_other_enter_errors_are_fatal() {
        let error = io::Error::from_raw_os_error;
        assert_eq!(Retry::of(&error(libc::EINTR)), Retry::Now);
        assert_eq!(Retry::of(&error(libc::EBUSY)), Retry::AfterReaping);
        assert_eq!(Retry::of(&error(libc::EAGAIN)), Retry::AfterBackOff);
        for fatal in [
            libc::EBADF,
            libc::EFAULT,
            libc::EINVAL,
            libc::ENXIO,
            libc::EOPNOTSUPP,
            libc::EBADR,
            libc::ENOMEM,
        ] {
            assert_eq!(Retry::of(&error(fatal)), Retry::Never, "errno {fatal}");
        }
        assert_eq!(Retry::of(&io::Error::other("not an errno")), Retry::Never);
    }

    /// A ring whose enters fail as scripted, then succeed.
    struct Scripted {
        /// The errnos the next enters fail with, in order.
        failures: RefCell<std::collections::VecDeque<i32>>,
        /// Enters made.
        enters: std::cell::Cell<usize>,
        /// Completions each reap finds, in order (then none).
        reapable: RefCell<std::collections::VecDeque<usize>>,
        /// Reaps made, and how many enters had been made at each.
        reaps: RefCell<Vec<usize>>,
        /// Errnos reported as retried.
        retried: RefCell<Vec<i32>>,
    }

    impl Scripted {
        fn new(failures: &[i32], reapable: &[usize]) -> Scripted {
            Scripted {
                failures: RefCell::new(failures.iter().copied().collect()),
                enters: std::cell::Cell::new(0),
                reapable: RefCell::new(reapable.iter().copied().collect()),
                reaps: RefCell::new(Vec::new()),
                retried: RefCell::new(Vec::new()),
            }
        }

        /// Runs the retry loop; returns its result and how many back-offs it waited.
        fn run(&self) -> (io::Result<usize>, usize) {
            let back_offs = std::cell::Cell::new(0);
            let result = futures_lite::future::block_on(enter_retrying(self, || {
                back_offs.set(back_offs.get() + 1);
                std::future::ready(())
            }));
            (result, back_offs.get())
        }
    }

    impl Enter for Scripted {
        fn enter(&self) -> io::Result<()> {
            self.enters.set(self.enters.get() + 1);
            match self.failures.borrow_mut().pop_front() {
                Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                None => Ok(()),
            }
        }

        fn reap(&self) -> usize {
            self.reaps.borrow_mut().push(self.enters.get());
            self.reapable.borrow_mut().pop_front().unwrap_or(0)
        }

        fn retrying(&self, error: &io::Error) {
            let errno = error.raw_os_error().unwrap_or(0);
            self.retried.borrow_mut().push(errno);
        }
    }

    #[test]
    fn eagain_is_retried_after_a_back_off() {
        let ring = Scripted::new(&[libc::EAGAIN, libc::EAGAIN], &[]);
        let (result, back_offs) = ring.run();
        assert_eq!(result.ok(), Some(0));
        assert_eq!(ring.enters.get(), 3, "entered again after each EAGAIN");
        assert_eq!(back_offs, 2, "one back-off per EAGAIN");
        assert_eq!(*ring.retried.borrow(), [libc::EAGAIN, libc::EAGAIN]);
        assert!(ring.reaps.borrow().is_empty());
    }

    #[test]
    fn ebusy_reaps_completions_before_entering_again() {
        let ring = Scripted::new(&[libc::EBUSY, libc::EBUSY], &[7, 0]);
        let (result, back_offs) = ring.run();
        assert_eq!(result.ok(), Some(7), "the reaped completions are counted");
        assert_eq!(ring.enters.get(), 3);
        // Reaped after the first and after the second failed enter, before the next.
        assert_eq!(*ring.reaps.borrow(), [1, 2]);
        // The second reap found nothing: waited rather than spun.
        assert_eq!(back_offs, 1);
    }

    #[test]
    fn eintr_is_retried_at_once() {
        let ring = Scripted::new(&[libc::EINTR], &[]);
        let (result, back_offs) = ring.run();
        assert_eq!(result.ok(), Some(0));
        assert_eq!(ring.enters.get(), 2);
        assert_eq!(back_offs, 0);
    }

    #[test]
    fn a_non_transient_enter_error_fails_at_once_even_after_transient_ones() {
        let ring = Scripted::new(&[libc::EAGAIN, libc::EBADF, libc::EAGAIN], &[]);
        let (result, _) = ring.run();
        let error = result.err().map(|e| e.raw_os_error());
        assert_eq!(error, Some(Some(libc::EBADF)));
        assert_eq!(ring.enters.get(), 2, "not entered again after EBADF");
        assert_eq!(*ring.retried.borrow(), [libc::EAGAIN]);

        let ring = Scripted::new(&[libc::EINVAL], &[]);
        assert!(ring.run().0.is_err());
        assert_eq!(ring.enters.get(), 1);
    }
}
