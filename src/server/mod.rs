//! The server: glommio shards, the listener, the per-connection driver, timeouts, shutdown.
//!
//! `server/` is the only module that awaits a socket.

use crate::config::Config;

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The kernel (or a seccomp filter) does not allow io_uring.
    #[error("io_uring is unavailable: {0}")]
    IoUringUnavailable(String),
    /// RLIMIT_MEMLOCK is below what glommio needs.
    #[error("locked memory limit too small: {0}")]
    MemlockTooSmall(String),
    /// Any other start-up or runtime failure.
    #[error("{0}")]
    Other(String),
}

/// Runs the server until shutdown completes.
pub fn run(config: Config) -> Result<(), ServerError> {
    let _ = config;
    Err(ServerError::Other("serving is not built yet".to_owned()))
}
