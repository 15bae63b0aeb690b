//! `floor-uring2`: the reference receiver on a raw io_uring loop that uses what kernel 6.x
//! offers to cut the CPU per message (one thread, pinned).
//!
//! Against `floor-uring` (one Recv re-armed per message), this loop:
//! - sets the ring up `SINGLE_ISSUER | DEFER_TASKRUN`: completion work (the socket copy of a
//!   recv, the retry of a send) runs only inside our `io_uring_enter(GETEVENTS)`, batched, with
//!   no IPIs or task-work interrupts of the running loop (`--setup coop` / `plain` to compare);
//! - registers the ring fd, so each enter skips the fd table lookup;
//! - accepts with one multishot Accept and receives with one multishot Recv per connection
//!   drawing from a provided-buffer ring: a connection's recv stays armed across messages, so no
//!   SQE is needed per message for receiving and an idle connection holds no buffer
//!   (`--recv single` re-arms a one-shot buffer-select Recv per message instead, to compare);
//! - sends all ACKs of a loop turn for a connection in one Send;
//! - does one `submit_and_wait(1)` per loop turn and handles every completion of the turn.
//!
//! Measured (perf/BENCH.md, floors.sh): DEFER_TASKRUN (or COOP_TASKRUN) is what makes the
//! difference (without it ×1.4 the CPU per message when saturated); multishot recv, fixed
//! files, the registered ring fd and a batched wait (`--min-wait-us`) are each within noise.
//! `--wake eventfd|glommio` sleep the way a ring nested in another event loop would.
//!
//! A received buffer is parsed in place when the connection has no unfinished frame (the
//! steady state: one message per read), else appended to the connection's `partial`; either
//! way the buffer goes back to the ring in the same turn, so the ring empties only when a turn
//! brings more reads than it has buffers (`-ENOBUFS`: the Recv ends and is re-armed).
//!
//! SAFETY invariants for the `unsafe` blocks: a Send points into `flight[sent..]`, which is not
//! resized, cleared or dropped while `send_armed`; a connection (and its fd) is freed only when
//! neither its Recv nor its Send is armed, so no op refers to a closed or reused fd. The
//! provided buffers and the buffer ring live for the whole process (never freed), and the
//! kernel only writes a buffer between our handing it to the ring and its completion naming it.

use clap::{Parser, ValueEnum};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use mllpd_perf::floor;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// Reference MLLP receiver on a raw io_uring loop with multishot recv and provided buffers.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:2579")]
    listen: SocketAddr,
    /// CPU to pin the one thread to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Ring setup flags (for measuring what each one is worth).
    #[arg(long, value_enum, default_value_t = Setup::Defer)]
    setup: Setup,
    /// How connections receive (for measuring what multishot is worth).
    #[arg(long, value_enum, default_value_t = RecvMode::Multi)]
    recv: RecvMode,
    /// Do not register the ring fd.
    #[arg(long)]
    no_ring_fd: bool,
    /// Register each connection's fd in the ring's file table and use the fixed index in its
    /// Recv and Send (skips the per-op file lookup and reference count).
    #[arg(long)]
    fixed_files: bool,
    /// Batch the wait: return from a wait once `--wait-nr` completions are there, or once this
    /// many µs have passed with at least one (kernel 6.12 min_wait). 0: return at the first.
    /// Trades up to this much latency for fewer wakeups per message.
    #[arg(long, default_value_t = 0)]
    min_wait_us: u32,
    /// Bound every wait by this timeout (ms), as a loop that sleeps until its nearest
    /// connection deadline would: one kernel timer per wait. 0: no timeout.
    #[arg(long, default_value_t = 0)]
    wait_timeout_ms: u64,
    /// Completions to wait for when `--min-wait-us` is set.
    #[arg(long, default_value_t = 32)]
    wait_nr: usize,
    /// How the loop sleeps: in `io_uring_enter` (the floor), or as a ring nested in another
    /// event loop would (mllpd's shards inside glommio): an eventfd registered with the ring,
    /// a blocking read of it when a non-waiting enter found nothing. Measures what the nesting
    /// costs.
    #[arg(long, value_enum, default_value_t = Wake::Enter)]
    wake: Wake,
    /// Provided buffers in the ring: a power of two, 1..=32768 (a small ring exercises the
    /// `-ENOBUFS` re-arm path).
    #[arg(long, default_value_t = BUFS_DEFAULT)]
    bufs: u16,
    /// `--wake glommio`: keep one glommio timer pending (a task sleeping this many seconds
    /// in a loop), as a server with any deadline, heartbeat or periodic task would. glommio
    /// arms a kernel timeout for its nearest timer at every park and cancels it at the next
    /// wake: this measures that cost. 0: no timer.
    #[arg(long, default_value_t = 0)]
    pending_timer_s: u64,
}

/// Sleep variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Wake {
    /// `submit_and_wait(1)`.
    Enter,
    /// Enter without waiting; sleep in `read(eventfd)` when nothing completed.
    Eventfd,
    /// Run as a task of a glommio executor; sleep in glommio, awaiting a read of the eventfd.
    Glommio,
}

/// Ring setup variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Setup {
    /// SINGLE_ISSUER | DEFER_TASKRUN.
    Defer,
    /// COOP_TASKRUN | TASKRUN_FLAG (| SINGLE_ISSUER).
    Coop,
    /// No flags.
    Plain,
}

/// Receive variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecvMode {
    /// One multishot Recv per connection, kept armed.
    Multi,
    /// One one-shot buffer-select Recv per message.
    Single,
}

/// Connections beyond this are closed at accept: room for the hub scenario (10 000 idle + 200
/// sending, compare.sh) with the accept and fixed-file table to spare.
const CONNECTIONS_MAX: usize = 16_384;
/// Submission queue entries: the SQEs of one turn; a turn that queues more (many accepts at
/// once) submits early when the queue is full (`push`).
const RING_ENTRIES: u32 = 4096;
/// Completion queue entries: multishot ops may post many per turn.
const CQ_ENTRIES: u32 = 16384;
/// Provided buffers by default (`--bufs`).
const BUFS_DEFAULT: u16 = 2048;
/// Bytes per provided buffer: a typical HL7 message fits one.
const BUF_SIZE: usize = 4096;
/// The buffer group id of our one buffer ring.
const BGID: u16 = 0;
/// Operation kind in the low bits of `user_data`.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

/// A provided-buffer ring: `count` entries the kernel picks recv buffers from.
struct BufRing {
    /// Entries and buffers: a power of two, so `u16` tail wrap-around stays consistent.
    count: u16,
    /// The entries, shared with the kernel (page-aligned, never freed).
    entries: *mut types::BufRingEntry,
    /// The ring's tail as the kernel reads it (inside entry 0).
    tail: *const AtomicU16,
    /// Our tail: entries up to here are filled; published by `publish`.
    local_tail: u16,
    /// The buffers' memory, `count * BUF_SIZE` bytes (never freed).
    bufs: *mut u8,
}

impl BufRing {
    /// Allocates the ring and its buffers and registers them as group `BGID`, all buffers given.
    fn new(ring: &IoUring, count: u16) -> std::io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(std::io::Error::other("--bufs: a power of two up to 32768"));
        }
        let layout = |size| std::alloc::Layout::from_size_align(size, 4096);
        let entries_layout = layout(count as usize * std::mem::size_of::<types::BufRingEntry>())
            .map_err(std::io::Error::other)?;
        let bufs_layout = layout(count as usize * BUF_SIZE).map_err(std::io::Error::other)?;
        // SAFETY: both layouts have a non-zero size; the memory is zeroed (a valid BufRingEntry
        // and a valid tail of 0) and is deliberately never freed, so the kernel's view of it
        // stays valid for the life of the ring.
        let (entries, bufs) = unsafe {
            (
                std::alloc::alloc_zeroed(entries_layout).cast::<types::BufRingEntry>(),
                std::alloc::alloc_zeroed(bufs_layout),
            )
        };
        if entries.is_null() || bufs.is_null() {
            return Err(std::io::ErrorKind::OutOfMemory.into());
        }
        // SAFETY: `entries` is the first entry of a zeroed, page-aligned ring of `count` entries.
        let tail = unsafe { types::BufRingEntry::tail(entries) }.cast::<AtomicU16>();
        // SAFETY: the ring memory is valid, page-aligned and lives forever (see above).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BGID, 0)?;
        }
        let mut ring = BufRing {
            count,
            entries,
            tail,
            local_tail: 0,
            bufs,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Gives buffer `bid` back to the ring (seen by the kernel after `publish`).
    fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let index = (self.local_tail % self.count) as usize;
        // SAFETY: `index < count`, inside the ring; the kernel reads only entries before the
        // published tail, and this one is at or after it. `bid < count` so the address is inside
        // `bufs`, and the buffer is ours: its completion has been handled.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(self.bufs.add(bid as usize * BUF_SIZE) as u64);
            entry.set_len(BUF_SIZE as u32);
            entry.set_bid(bid);
        }
        self.local_tail = self.local_tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: `tail` points into the live ring; the kernel reads it atomically, and the
        // Release store orders the entry writes before it.
        unsafe { (*self.tail).store(self.local_tail, Ordering::Release) };
    }

    /// The first `len` bytes of buffer `bid`, which a completion has just handed us.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(BUF_SIZE);
        // SAFETY: `bid % count` names a buffer inside `bufs`; the kernel wrote it before posting
        // the completion and does not touch it again until we `recycle` it.
        unsafe {
            std::slice::from_raw_parts(self.bufs.add((bid % self.count) as usize * BUF_SIZE), len)
        }
    }
}

/// One accepted connection.
struct Conn {
    /// The socket; dropping it closes the fd.
    stream: TcpStream,
    /// An unfinished frame carried to the next read (empty in the steady state).
    partial: Vec<u8>,
    /// ACKs built this turn, or waiting for the in-flight Send to finish.
    pending: Vec<u8>,
    /// ACKs being sent.
    flight: Vec<u8>,
    /// Bytes of `flight` already sent.
    sent: usize,
    /// The connection's Recv is armed (multishot: until a completion without `F_MORE`).
    recv_armed: bool,
    /// A Send is in flight.
    send_armed: bool,
    /// Queued in `dirty` to have its ACKs sent at the end of the turn.
    dirty: bool,
    /// Peer closed or an error happened: no new ops; freed once nothing is armed.
    closing: bool,
}

/// The loop's state.
struct Server {
    /// The listening socket.
    listener: TcpListener,
    /// Receive variant.
    recv_mode: RecvMode,
    /// Connections use fixed files: slot N is file-table index N.
    fixed_files: bool,
    /// File-table updates (index, fd; -1 clears) to apply before the next submit, in order.
    file_updates: Vec<(u32, i32)>,
    /// The provided buffers.
    bufs: BufRing,
    /// Connections by slot.
    slots: Vec<Option<Conn>>,
    /// Free slots.
    free: Vec<usize>,
    /// Connections that got ACKs this turn.
    dirty: Vec<usize>,
    /// SQEs queued during this turn, pushed before the next submit.
    queue: Vec<squeue::Entry>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.wake == Wake::Glommio {
        return host_in_glommio(args);
    }
    if let Some(cpu) = args.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let mut event_loop = EventLoop::new(&args)?;
    let eventfd = event_loop.eventfd.take();
    loop {
        event_loop.push()?;
        match &eventfd {
            Some(eventfd) => {
                if event_loop.enter_nowait()? == 0 {
                    // Nothing completed (task work included): sleep until the kernel signals
                    // the eventfd for new completion work, as a host event loop polling it
                    // would.
                    read_eventfd(eventfd)?;
                }
                continue;
            }
            None if args.min_wait_us == 0 && args.wait_timeout_ms == 0 => {
                event_loop.ring.submit_and_wait(1)?;
            }
            None => {
                let timeout = match args.wait_timeout_ms {
                    0 => types::Timespec::new().sec(1),
                    ms => types::Timespec::from(std::time::Duration::from_millis(ms)),
                };
                let wait_args = types::SubmitArgs::new()
                    .timespec(&timeout)
                    .min_wait_usec(args.min_wait_us);
                let want = if args.min_wait_us == 0 {
                    1
                } else {
                    args.wait_nr
                };
                let submitter = event_loop.ring.submitter();
                match submitter.submit_with_args(want, &wait_args) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        event_loop.handle();
    }
}

/// `--wake glommio`: the loop as one task of a pinned glommio executor (set up like
/// floor-glommio and an mllpd shard). It enters the ring without waiting; when nothing has
/// completed it awaits a read of the ring's eventfd through glommio's own ring, so glommio's
/// reactor is what sleeps. This is the shape mllpd's shards would take.
fn host_in_glommio(args: Args) -> std::io::Result<()> {
    let placement = args
        .cpu
        .map_or(glommio::Placement::Unbound, glommio::Placement::Fixed);
    let executor = glommio::LocalExecutorBuilder::new(placement)
        .name("floor-uring2")
        .io_memory(1 << 20)
        .make()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    executor.run(async move {
        if args.pending_timer_s > 0 {
            let period = std::time::Duration::from_secs(args.pending_timer_s);
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(period).await;
                }
            })
            .detach();
        }
        // Built on the executor's thread: SINGLE_ISSUER binds the ring to it.
        let mut event_loop = EventLoop::new(&args)?;
        let Some(eventfd) = event_loop.eventfd.take() else {
            return Err(std::io::Error::other("no eventfd"));
        };
        // SAFETY: the fd is ours (taken out of `event_loop`) and now owned by the file.
        let eventfd = unsafe { glommio::io::BufferedFile::from_raw_fd(eventfd.into_raw_fd()) };
        loop {
            event_loop.push()?;
            if event_loop.enter_nowait()? == 0 {
                eventfd
                    .read_at(0, 8)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            } else {
                // Let glommio's other tasks and timers run between busy turns.
                glommio::yield_if_needed().await;
            }
        }
    })
}

/// Blocks until the eventfd is signalled and resets it.
fn read_eventfd(eventfd: &OwnedFd) -> std::io::Result<()> {
    let mut count = 0u64;
    // SAFETY: reads 8 bytes into `count`, which is 8 bytes and lives on the stack.
    let read = unsafe { libc::read(eventfd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    if read < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The ring, the server state, and the eventfd when the loop sleeps elsewhere.
struct EventLoop {
    /// The ring.
    ring: IoUring,
    /// Connections, buffers and queued SQEs.
    server: Server,
    /// Completions copied out of the CQ, handled after the CQ is released.
    completions: Vec<(u64, i32, u32)>,
    /// Registered with the ring (`--wake eventfd|glommio`).
    eventfd: Option<OwnedFd>,
}

impl EventLoop {
    /// Binds, prints the address, sets the ring up as `args` say, and arms the accept.
    fn new(args: &Args) -> std::io::Result<Self> {
        let listener = TcpListener::bind(args.listen)?;
        println!("listening on {}", listener.local_addr()?);
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES);
        match args.setup {
            Setup::Defer => builder.setup_single_issuer().setup_defer_taskrun(),
            Setup::Coop => builder
                .setup_single_issuer()
                .setup_coop_taskrun()
                .setup_taskrun_flag(),
            Setup::Plain => &mut builder,
        };
        let ring = builder.build(RING_ENTRIES)?;
        if !args.no_ring_fd {
            ring.submitter().register_ring_fd()?;
        }
        if args.fixed_files {
            ring.submitter()
                .register_files_sparse(CONNECTIONS_MAX as u32)?;
        }
        let eventfd = match args.wake {
            Wake::Enter => None,
            Wake::Eventfd | Wake::Glommio => {
                // SAFETY: eventfd(2) has no memory arguments; a non-negative result is a new
                // fd that nothing else owns.
                let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: as above.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                ring.submitter().register_eventfd(fd.as_raw_fd())?;
                Some(fd)
            }
        };
        let mut server = Server {
            listener,
            recv_mode: args.recv,
            fixed_files: args.fixed_files,
            file_updates: Vec::new(),
            bufs: BufRing::new(&ring, args.bufs)?,
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            queue: Vec::new(),
        };
        server.arm_accept();
        Ok(EventLoop {
            ring,
            server,
            completions: Vec::with_capacity(CQ_ENTRIES as usize),
            eventfd,
        })
    }

    /// Publishes recycled buffers, applies file-table updates, and pushes the queued SQEs.
    fn push(&mut self) -> std::io::Result<()> {
        self.server.bufs.publish();
        for (index, fd) in self.server.file_updates.drain(..) {
            self.ring.submitter().register_files_update(index, &[fd])?;
        }
        for entry in self.server.queue.drain(..) {
            // SAFETY: see the module invariants; every entry's buffer outlives its op.
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.ring.submit()?;
            }
        }
        Ok(())
    }

    /// Submits, runs pending task work (GETEVENTS) without waiting, handles what completed;
    /// returns how many completions there were.
    fn enter_nowait(&mut self) -> std::io::Result<usize> {
        let pending = self.ring.submission().len() as u32;
        let getevents = io_uring::EnterFlags::GETEVENTS.bits();
        // SAFETY: no argument struct is passed; `pending` SQEs were pushed.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(pending, 0, getevents, None)?
        };
        Ok(self.handle())
    }

    /// Handles every completion in the CQ, then starts the turn's Sends; returns the count.
    fn handle(&mut self) -> usize {
        self.completions.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let count = self.completions.len();
        for (user_data, result, flags) in self.completions.drain(..) {
            self.server.complete(user_data, result, flags);
        }
        self.server.flush_sends();
        count
    }
}

impl Server {
    fn arm_accept(&mut self) {
        let fd = types::Fd(self.listener.as_raw_fd());
        let entry = opcode::AcceptMulti::new(fd)
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT);
        self.queue.push(entry);
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let slot = (user_data >> 2) as usize;
        match user_data & 3 {
            ACCEPT => self.accepted(result, flags),
            RECV => self.received(slot, result, flags),
            _ => self.sent(slot, result),
        }
    }

    fn accepted(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if result < 0 {
            return;
        }
        // SAFETY: a non-negative Accept result is a new fd that nothing else owns.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(result) });
        if self.free.is_empty() && self.slots.len() >= CONNECTIONS_MAX {
            return;
        }
        if stream.set_nodelay(true).is_err() {
            return;
        }
        let conn = Conn {
            stream,
            partial: Vec::new(),
            pending: Vec::new(),
            flight: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            dirty: false,
            closing: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(conn);
                slot
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        };
        if self.fixed_files {
            self.file_updates.push((slot as u32, result));
        }
        self.arm_recv(slot);
    }

    fn arm_recv(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        let entry = match (self.recv_mode, self.fixed_files) {
            (RecvMode::Multi, false) => {
                opcode::RecvMulti::new(types::Fd(conn.stream.as_raw_fd()), BGID).build()
            }
            (RecvMode::Multi, true) => {
                opcode::RecvMulti::new(types::Fixed(slot as u32), BGID).build()
            }
            (RecvMode::Single, fixed) => {
                let len = BUF_SIZE as u32;
                let recv = if fixed {
                    opcode::Recv::new(types::Fixed(slot as u32), std::ptr::null_mut(), len)
                } else {
                    opcode::Recv::new(
                        types::Fd(conn.stream.as_raw_fd()),
                        std::ptr::null_mut(),
                        len,
                    )
                };
                recv.buf_group(BGID)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            }
        };
        conn.recv_armed = true;
        self.queue
            .push(entry.user_data(((slot as u64) << 2) | RECV));
    }

    fn received(&mut self, slot: usize, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        let Some(conn) = self.slots[slot].as_mut() else {
            // Unreachable by the free rule; still give the buffer back.
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        if !more {
            conn.recv_armed = false;
        }
        if let Some(bid) = bid {
            if result > 0 && !conn.closing {
                let data = self.bufs.bytes(bid, result as usize);
                answer(conn, data);
                if !conn.dirty && !conn.pending.is_empty() {
                    conn.dirty = true;
                    self.dirty.push(slot);
                }
            }
            self.bufs.recycle(bid);
        }
        if result == 0 || (result < 0 && result != -libc::ENOBUFS) {
            conn.closing = true;
        }
        if conn.closing {
            if conn.recv_armed {
                // A multishot Recv still armed on a connection we gave up on: end it.
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            return self.maybe_free(slot);
        }
        if !conn.recv_armed {
            // Multishot ended (ENOBUFS, or the kernel stopped it), or one-shot mode: re-arm.
            self.arm_recv(slot);
        }
    }

    /// Starts a Send on every connection that got ACKs this turn and has none in flight.
    fn flush_sends(&mut self) {
        for index in 0..self.dirty.len() {
            let slot = self.dirty[index];
            let Some(conn) = self.slots[slot].as_mut() else {
                continue;
            };
            conn.dirty = false;
            if !conn.send_armed && !conn.pending.is_empty() && !conn.closing {
                std::mem::swap(&mut conn.pending, &mut conn.flight);
                conn.sent = 0;
                self.arm_send(slot);
            }
        }
        self.dirty.clear();
    }

    fn arm_send(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        let rest = &conn.flight[conn.sent..];
        let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
        let send = if self.fixed_files {
            opcode::Send::new(types::Fixed(slot as u32), ptr, len)
        } else {
            opcode::Send::new(types::Fd(conn.stream.as_raw_fd()), ptr, len)
        };
        let entry = send
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(((slot as u64) << 2) | SEND);
        conn.send_armed = true;
        self.queue.push(entry);
    }

    fn sent(&mut self, slot: usize, result: i32) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        conn.send_armed = false;
        if result < 0 || conn.closing {
            conn.closing = true;
            if conn.recv_armed {
                // End the multishot Recv so the connection can be freed.
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            return self.maybe_free(slot);
        }
        conn.sent += result as usize;
        if conn.sent < conn.flight.len() {
            return self.arm_send(slot);
        }
        conn.flight.clear();
        if !conn.pending.is_empty() {
            std::mem::swap(&mut conn.pending, &mut conn.flight);
            conn.sent = 0;
            self.arm_send(slot);
        }
    }

    /// Frees a closing connection once no op refers to it.
    fn maybe_free(&mut self, slot: usize) {
        let idle = self.slots[slot]
            .as_ref()
            .is_some_and(|c| c.closing && !c.recv_armed && !c.send_armed);
        if idle {
            self.slots[slot] = None;
            self.free.push(slot);
            if self.fixed_files {
                // The table holds its own reference to the socket: drop it too, or the
                // connection stays open until the slot is reused.
                self.file_updates.push((slot as u32, -1));
            }
        }
    }
}

/// Answers the complete frames of `data` (parsed in place when nothing is carried over),
/// keeping an unfinished frame in `partial`.
fn answer(conn: &mut Conn, data: &[u8]) {
    if conn.partial.is_empty() {
        let used = floor::answer(data, &mut conn.pending);
        conn.partial.extend_from_slice(&data[used..]);
    } else {
        conn.partial.extend_from_slice(data);
        let used = floor::answer(&conn.partial, &mut conn.pending);
        conn.partial.drain(..used);
    }
}
