//! Every default bound and timeout of mllpd, with the reason for its value.
//!
//! A bound lives here once; `config` turns the user-facing ones into knobs, and the code that
//! enforces a bound names its constant so the reason is one click away. Each bound has its own
//! error and tests at N and N+1 where it is enforced.

use std::time::Duration;

/// Default largest MLLP frame payload accepted (MAX_FRAME_SIZE). 2 MiB covers ORU messages with
/// embedded base64 reports seen in practice while keeping a flood of open frames bounded
/// (10 000 connections × 2 MiB worst case is only reached by peers that actually send that much).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 2 * 1024 * 1024;

/// Smallest frame size a user may configure: an MSH segment alone needs a few dozen bytes, and
/// a limit below this would reject every real message.
pub const FRAME_BYTES_MAX_MIN: usize = 256;

/// Largest frame size a user may configure (1 GiB): the decoder reports offsets as `usize` but
/// the journal stores lengths as `u32`, and buffering more than this per connection is a
/// configuration mistake, not a use case.
pub const FRAME_BYTES_MAX_MAX: usize = 1 << 30;

/// Initial capacity of a connection's read buffer. Most HL7 messages are under 4 KiB; 8 KiB lets
/// a typical burst of pipelined frames land in one read without growing.
pub const READ_BUFFER_BYTES_INITIAL: usize = 8 * 1024;

/// Extra room above the largest frame (start block, end block, and the start of the next frame
/// that arrived in the same read): the read buffer never grows beyond
/// `frame_bytes_max + READ_BUFFER_SLACK_BYTES`.
pub const READ_BUFFER_SLACK_BYTES: usize = 64 * 1024;

/// Idle time between frames before a connection is closed (IDLE_TIMEOUT).
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Deadline for a whole frame from its start block (FRAME_TIMEOUT); not reset by each byte, so a
/// sender trickling one byte at a time cannot hold a connection open forever.
pub const FRAME_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Deadline for writing the ACKs of one read (WRITE_TIMEOUT): a peer that stops reading must
/// not pin a buffer and a connection slot.
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Most connections the whole server holds at once (MAX_CONNECTIONS); divided among shards.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;

/// TCP keepalive idle period (KEEP_ALIVE_PERIOD): finds peers that vanished without a FIN
/// (a power-cut interface engine) on otherwise idle long-lived connections.
pub const KEEP_ALIVE_PERIOD_DEFAULT: Duration = Duration::from_secs(60);

/// Deadline for a TLS handshake (CONNECT_TIMEOUT).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Time to keep serving after SIGTERM so a load balancer can remove the endpoint first.
pub const PRE_SHUTDOWN_DELAY_DEFAULT: Duration = Duration::ZERO;

/// Longest time to finish in-flight frames after SIGTERM before exiting anyway.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Back-off after an accept error such as EMFILE, so a full fd table does not spin a shard.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Longest MSA-3 / ERR text mllpd writes into an ACK; reasons are short, and bounding them
/// bounds the ACK buffer.
pub const ACK_TEXT_BYTES_MAX: usize = 200;

/// Longest control id (MSH-10) echoed into MSA-2. HL7 v2.5+ allows 199 characters; a longer
/// value is still echoed when the frame fits, this only sizes the initial ACK buffer.
pub const CONTROL_ID_BYTES_TYPICAL: usize = 64;

/// Received bytes a connection may hold on the uring socket path (SOCKET_IO=uring) before its
/// multishot receive is paused: the connection reads them in buffer-sized steps, and past this
/// the kernel's socket buffer pushes back on the sender, as it does when glommio issues no
/// read. Resumed at half. Bounds memory per connection under a flood to this plus its buffer.
pub const SOCKET_INBOX_BYTES_MAX: usize = 256 * 1024;

/// Wait before entering a shard's socket ring again after `io_uring_enter` failed with EAGAIN
/// (the kernel lacked memory for new requests for now). The failure is transient, so it is
/// retried rather than failing the shard; 1 ms lets completions and reclaim free memory without
/// spinning the shard's CPU, and is small against every socket timeout (WRITE_TIMEOUT: 5 s).
pub const SOCKET_RING_ENTER_BACKOFF: Duration = Duration::from_millis(1);

const _: () = assert!(FRAME_BYTES_MAX_MIN <= FRAME_BYTES_MAX_DEFAULT);
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT <= FRAME_BYTES_MAX_MAX);
const _: () = assert!(READ_BUFFER_BYTES_INITIAL <= FRAME_BYTES_MAX_MIN + READ_BUFFER_SLACK_BYTES);
const _: () = assert!(FRAME_BYTES_MAX_MAX <= u32::MAX as usize);

/// Most validation rules one configuration may hold. Every rule runs on every message until
/// one fails, so the count bounds the CPU a message costs; 256 is far above the few dozen
/// rules a real interface needs, and a longer list is a generated file gone wrong.
pub const RULES_MAX: usize = 256;

/// Longest CEL expression (bytes) of one rule or connector filter. Compilation, the
/// parser's recursion and the size of the evaluated tree all grow with it; 4 KiB holds the
/// longest allow-list written by hand, and anything longer belongs in several rules.
pub const RULE_EXPRESSION_BYTES_MAX: usize = 4 * 1024;

/// Longest rule name or message (bytes): both are written into ACKs (MSA-3, ERR) and logs,
/// whose text is bounded by `ACK_TEXT_BYTES_MAX` anyway.
pub const RULE_TEXT_BYTES_MAX: usize = 1024;
