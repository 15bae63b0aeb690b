//! Configuration: CLI flags, environment variables and a YAML file → one validated [`Config`].
//!
//! Environment names are those of the MLLP server mllpd replaces (LISTEN_ADDR, IDLE_TIMEOUT, …)
//! so deployments move over unchanged. Precedence: flag > environment > file > default.
//! Unknown YAML keys are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::hl7::Charset;

/// Log output format (LOG_FORMAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of a server.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address every shard binds with SO_REUSEPORT (LISTEN_ADDR).
    pub listen_addr: SocketAddr,
    /// No byte between frames for this long closes the connection (IDLE_TIMEOUT).
    pub idle_timeout: Duration,
    /// Deadline for a whole frame from its start block (FRAME_TIMEOUT).
    pub frame_timeout: Duration,
    /// Deadline for writing the ACKs of one read (WRITE_TIMEOUT).
    pub write_timeout: Duration,
    /// Largest frame payload in bytes (MAX_FRAME_SIZE).
    pub frame_bytes_max: usize,
    /// Most connections the server holds at once (MAX_CONNECTIONS).
    pub connections_max: usize,
    /// TCP keepalive idle period (KEEP_ALIVE_PERIOD).
    pub keep_alive_period: Duration,
    /// TLS handshake deadline (CONNECT_TIMEOUT).
    pub connect_timeout: Duration,
    /// Charset assumed when MSH-18 is absent (DEFAULT_CHARACTER_SET).
    pub default_charset: Charset,
    /// tracing filter directive (LOG_LEVEL), e.g. `info` or `mllpd=debug`.
    pub log_level: String,
    /// Log output format (LOG_FORMAT).
    pub log_format: LogFormat,
    /// Number of shards; `None` means one per CPU of the affinity mask (SHARDS).
    pub shards: Option<usize>,
    /// Directory of journals and state (DATA_DIR).
    pub data_dir: PathBuf,
    /// The YAML file read, if any (CONFIG_FILE).
    pub config_file: Option<PathBuf>,
    /// Time to keep serving after SIGTERM before stopping accepts (PRE_SHUTDOWN_DELAY).
    pub pre_shutdown_delay: Duration,
    /// Longest time to drain after SIGTERM (DRAIN_TIMEOUT).
    pub drain_timeout: Duration,
}

impl Default for Config {
    /// The embedded defaults (`cargo run --release` with nothing set).
    fn default() -> Self {
        use crate::limits::*;
        Config {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 2575)),
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            frame_timeout: FRAME_TIMEOUT_DEFAULT,
            write_timeout: WRITE_TIMEOUT_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            keep_alive_period: KEEP_ALIVE_PERIOD_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            default_charset: Charset::Ascii,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            shards: None,
            data_dir: PathBuf::from("./mllpd-data"),
            config_file: None,
            pre_shutdown_delay: PRE_SHUTDOWN_DELAY_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
        }
    }
}
