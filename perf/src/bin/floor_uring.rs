//! `floor-uring`: the reference receiver on a raw io_uring loop (one thread, pinned).
//!
//! Each loop turn: one `submit_and_wait(1)` that submits every SQE queued since the last turn
//! (every connection's Recv and Send, and the Accept) and waits for at least one completion;
//! then every completion is handled and the new SQEs queued. So a busy loop does one syscall
//! per turn for all its sockets, where a readiness runtime (glommio, tokio) does one
//! `recv` and one `send` syscall per connection per read.
//!
//! Per connection at most one Recv and one Send are in flight. ACKs built while a Send is in
//! flight go to `pending` and are sent when it completes (`flight` and `pending` swap), so the
//! bytes of an in-flight Send never move.
//!
//! SAFETY invariants for the `unsafe` pushes: a Recv points into `buf[filled..]`, a Send into
//! `flight[sent..]`; neither Vec is resized, cleared or dropped while its op is armed
//! (`recv_armed` / `send_armed`), and a connection is freed only when neither is armed. The
//! Vecs live on the heap, so moving a `Conn` inside the slab does not move the bytes.

use clap::Parser;
use io_uring::{opcode, squeue, types, IoUring};
use mllpd_perf::floor;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Reference MLLP receiver on a raw io_uring loop.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:2578")]
    listen: SocketAddr,
    /// CPU to pin the one thread to.
    #[arg(long)]
    cpu: Option<usize>,
}

/// Connections beyond this are closed at accept: the ring is sized for two ops each.
const CONNECTIONS_MAX: usize = 1024;
/// Submission queue entries: two per connection plus the accept, with room to spare.
const RING_ENTRIES: u32 = 4096;
/// Operation kind in the low bits of `user_data`.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

/// One accepted connection.
struct Conn {
    /// The socket; dropping it closes the fd.
    stream: TcpStream,
    /// Received bytes; `buf[..filled]` is an unfinished frame.
    buf: Vec<u8>,
    /// Bytes of `buf` in use.
    filled: usize,
    /// ACKs waiting for the in-flight Send to finish.
    pending: Vec<u8>,
    /// ACKs being sent.
    flight: Vec<u8>,
    /// Bytes of `flight` already sent.
    sent: usize,
    /// A Recv is in flight.
    recv_armed: bool,
    /// A Send is in flight.
    send_armed: bool,
    /// Peer closed or an error happened: no new ops; freed once nothing is armed.
    closing: bool,
}

/// The loop's state: the ring's pending SQEs and the connection slab.
struct Server {
    /// The listening socket.
    listener: TcpListener,
    /// Connections by slot.
    slots: Vec<Option<Conn>>,
    /// Free slots.
    free: Vec<usize>,
    /// SQEs queued during this turn, pushed before the next submit.
    queue: Vec<squeue::Entry>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if let Some(cpu) = args.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let listener = TcpListener::bind(args.listen)?;
    println!("listening on {}", listener.local_addr()?);
    let mut ring = IoUring::new(RING_ENTRIES)?;
    let mut server = Server {
        listener,
        slots: Vec::new(),
        free: Vec::new(),
        queue: Vec::new(),
    };
    server.arm_accept();
    let mut completions = Vec::with_capacity(RING_ENTRIES as usize);
    loop {
        for entry in server.queue.drain(..) {
            // SAFETY: see the module invariants; every entry's buffer outlives its op.
            while unsafe { ring.submission().push(&entry) }.is_err() {
                ring.submit()?;
            }
        }
        ring.submit_and_wait(1)?;
        completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (user_data, result) in completions.drain(..) {
            server.complete(user_data, result);
        }
    }
}

impl Server {
    fn arm_accept(&mut self) {
        let fd = types::Fd(self.listener.as_raw_fd());
        let entry = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT);
        self.queue.push(entry);
    }

    fn complete(&mut self, user_data: u64, result: i32) {
        let slot = (user_data >> 2) as usize;
        match user_data & 3 {
            ACCEPT => self.accepted(result),
            RECV => self.received(slot, result),
            _ => self.sent(slot, result),
        }
    }

    fn accepted(&mut self, result: i32) {
        self.arm_accept();
        if result < 0 {
            return;
        }
        // SAFETY: a non-negative Accept result is a new fd that nothing else owns.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(result) });
        let live = self.slots.len() - self.free.len();
        if live >= CONNECTIONS_MAX || stream.set_nodelay(true).is_err() {
            return;
        }
        let conn = Conn {
            stream,
            buf: vec![0u8; 64 * 1024],
            filled: 0,
            pending: Vec::with_capacity(64 * 1024),
            flight: Vec::with_capacity(64 * 1024),
            sent: 0,
            recv_armed: false,
            send_armed: false,
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
        self.arm_recv(slot);
    }

    fn arm_recv(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        if conn.filled == conn.buf.len() {
            let len = conn.buf.len();
            conn.buf.resize(len * 2, 0);
        }
        let space = &mut conn.buf[conn.filled..];
        let entry = opcode::Recv::new(
            types::Fd(conn.stream.as_raw_fd()),
            space.as_mut_ptr(),
            space.len() as u32,
        )
        .build()
        .user_data(((slot as u64) << 2) | RECV);
        conn.recv_armed = true;
        self.queue.push(entry);
    }

    fn arm_send(&mut self, slot: usize) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        let rest = &conn.flight[conn.sent..];
        let entry = opcode::Send::new(
            types::Fd(conn.stream.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(((slot as u64) << 2) | SEND);
        conn.send_armed = true;
        self.queue.push(entry);
    }

    fn received(&mut self, slot: usize, result: i32) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        conn.recv_armed = false;
        if result <= 0 || conn.closing {
            conn.closing = true;
            return self.maybe_free(slot);
        }
        conn.filled += result as usize;
        let used = floor::answer(&conn.buf[..conn.filled], &mut conn.pending);
        conn.buf.copy_within(used..conn.filled, 0);
        conn.filled -= used;
        let start_send = !conn.send_armed && !conn.pending.is_empty();
        if start_send {
            std::mem::swap(&mut conn.pending, &mut conn.flight);
            conn.sent = 0;
            self.arm_send(slot);
        }
        self.arm_recv(slot);
    }

    fn sent(&mut self, slot: usize, result: i32) {
        let Some(conn) = self.slots[slot].as_mut() else {
            return;
        };
        conn.send_armed = false;
        if result < 0 || conn.closing {
            conn.closing = true;
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

    /// Frees a closing connection once no op refers to its buffers.
    fn maybe_free(&mut self, slot: usize) {
        let idle = self.slots[slot]
            .as_ref()
            .is_some_and(|c| c.closing && !c.recv_armed && !c.send_armed);
        if idle {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }
}
