//! Configuration: CLI flags, environment variables and a YAML file → one validated [`Config`].
//!
//! Environment names are those of the MLLP server mllpd replaces (LISTEN_ADDR, IDLE_TIMEOUT, …)
//! so deployments move over unchanged. Precedence: flag > environment > file > default.
//! Unknown YAML keys are errors.
//!
//! Each setting is one [`Setting`]: its environment name, its flag and its YAML key are one
//! name spelled three ways. Values from every source arrive as text and go through the same
//! parser, so an error names the setting (env name and flag, and the file when it came from
//! there) whatever its source. A [`Config`] that leaves [`Config::resolve`] is within every
//! bound checked here; the server may rely on that.
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::cli::{self, Invocation};
use crate::hl7::Charset;
use crate::rules::{RuleError, RuleSet, RulesOptions, ValidationSpec};

/// Longest duration any setting accepts (one year): the server adds timeouts to `Instant`s,
/// which must not overflow, and no deadline in an MLLP deployment is meant to be longer.
pub const DURATION_MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Most connections a user may configure (MAX_CONNECTIONS): Linux's default ceiling on open
/// files per process (`fs.nr_open`) is 1 048 576, and every connection holds one.
pub const CONNECTIONS_MAX_MAX: usize = 1 << 20;

/// Most shards a user may configure (SHARDS): glibc's `cpu_set_t` holds 1024 CPUs, and every
/// shard is pinned to its own CPU.
pub const SHARDS_MAX: usize = 1024;

/// Shortest TCP keepalive period (KEEP_ALIVE_PERIOD): the kernel takes it in whole seconds.
pub const KEEP_ALIVE_PERIOD_MIN: Duration = Duration::from_secs(1);

/// Largest CONFIG_FILE read: a settings file is a few KiB even with rules and connectors; a
/// bigger one is a wrong path, which should fail fast instead of filling memory.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Log output format (LOG_FORMAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// When an accepting ACK (AA/CA) may be sent (ACK_AFTER).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AckAfter {
    /// Once the message is durable in the shard's journal (the default).
    #[default]
    Journal,
    /// As soon as the message is received and valid, before it is even written (the batch
    /// is written a moment later, never flushed). UNSAFE: a crash of mllpd itself, not only of
    /// the OS, loses messages the sender was told it may forget. For benchmarks and tests only.
    Receipt,
    /// Once the message is durable in the journal *and* every `sync: true` connector confirmed
    /// it (downstream AR → AR with its reason; no confirmation within `sync_timeout` → AE).
    Delivery,
}

/// How a shard's journal makes a batch durable (JOURNAL_SYNC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JournalSync {
    /// A direct write, then fdatasync on an io_uring worker of the shard's own CPU (default):
    /// the flush never waits on another CPU's scheduling.
    #[default]
    Fdatasync,
    /// One `O_DSYNC` direct write. On a device with FUA that is one IO and no flush; without
    /// FUA the kernel flushes from a worker on the CPU that took the disk interrupt, so a busy
    /// CPU there delays every ACK (measured in perf/BENCH.md).
    Dsync,
}

/// How shards do socket IO (SOCKET_IO).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SocketIo {
    /// The shard's own io_uring where the kernel has what it needs (Linux 6.1+), else glommio's
    /// sockets, with a warning (the default).
    #[default]
    Auto,
    /// glommio's sockets: a `recv` / `send` syscall per read and write, and a poll re-armed per
    /// message.
    Glommio,
    /// The shard's own io_uring: one multishot receive kept armed per connection (provided
    /// buffers), the sends of a turn submitted together (`server/uring.rs`).
    Uring,
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
    /// Deadline for one whole write of ACKs, at most `limits::ANSWER_BYTES_MAX` (WRITE_TIMEOUT).
    pub write_timeout: Duration,
    /// Largest frame payload in bytes (MAX_FRAME_SIZE).
    pub frame_bytes_max: usize,
    /// Most connections the server holds at once; `None`: no limit of mllpd's own, only the
    /// open-file limit (MAX_CONNECTIONS `0`).
    pub connections_max: Option<usize>,
    /// TCP keepalive idle period; `None`: keepalive off (KEEP_ALIVE_PERIOD `0`).
    pub keep_alive_period: Option<Duration>,
    /// TLS handshake deadline; `None`: no deadline (CONNECT_TIMEOUT `0`, warned at start).
    pub connect_timeout: Option<Duration>,
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
    /// A message whose (MSH-3, MSH-4, MSH-10) and payload were journaled within this time is a
    /// duplicate; `None`: off (DEDUP_WINDOW).
    pub dedup_window: Option<Duration>,
    /// Closed journal segments older than this may be deleted; `None`: no age bound
    /// (RETENTION_AGE).
    pub retention_age: Option<Duration>,
    /// The oldest closed journal segments are deleted while a shard's journal is larger;
    /// `None`: no size bound (RETENTION_BYTES).
    pub retention_bytes: Option<u64>,
    /// When an accepting ACK may be sent (ACK_AFTER).
    pub ack_after: AckAfter,
    /// How the journal makes a batch durable (JOURNAL_SYNC).
    pub journal_sync: JournalSync,
    /// Delivery to connectors (CONFIG_FILE `connectors`, `retry`, `on_failure`; issue 11).
    pub routing: crate::route::RoutingOptions,
    /// How shards do socket IO (SOCKET_IO).
    pub socket_io: SocketIo,
    /// Where the admin endpoint (/metrics, /healthz, /readyz) listens; `None`: off (ADMIN_ADDR).
    pub admin_addr: Option<SocketAddr>,
    /// The audit trail file; `None`: off (AUDIT_LOG).
    pub audit_log: Option<PathBuf>,
    /// The `validation:` section of CONFIG_FILE (no rules without one); checked to compile.
    pub validation: ValidationSpec,
    /// PEM certificate chain; with TLS_KEY_FILE, the listener is TLS-only (TLS_CERT_FILE).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of TLS_CERT_FILE (TLS_KEY_FILE).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates client certificates must chain to; set, mTLS is required
    /// (TLS_CLIENT_CA).
    pub tls_client_ca: Option<PathBuf>,
    /// Lowest TLS version accepted (TLS_MIN_VERSION).
    pub tls_min_version: crate::tls::MinVersion,
    /// Client certificate CNs or SANs let in; empty: every verified client
    /// (TLS_CLIENT_ALLOWED).
    pub tls_client_allowed: Vec<String>,
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
            connections_max: Some(CONNECTIONS_MAX_DEFAULT),
            keep_alive_period: Some(KEEP_ALIVE_PERIOD_DEFAULT),
            connect_timeout: Some(CONNECT_TIMEOUT_DEFAULT),
            default_charset: Charset::Ascii,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            shards: None,
            data_dir: PathBuf::from("./mllpd-data"),
            config_file: None,
            pre_shutdown_delay: PRE_SHUTDOWN_DELAY_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
            dedup_window: None,
            retention_age: Some(crate::journal::RETENTION_AGE_DEFAULT),
            retention_bytes: None,
            ack_after: AckAfter::Journal,
            journal_sync: JournalSync::Fdatasync,
            socket_io: SocketIo::Auto,
            routing: crate::route::RoutingOptions::default(),
            admin_addr: ADMIN_ADDR_DEFAULT.parse().ok(),
            audit_log: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca: None,
            tls_min_version: crate::tls::MinVersion::Tls12,
            tls_client_allowed: Vec::new(),
            validation: ValidationSpec::default(),
        }
    }
}

/// One configuration setting. Its environment name, flag and YAML key are one name spelled
/// three ways (`IDLE_TIMEOUT`, `--idle-timeout`, `idle_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// LISTEN_ADDR.
    ListenAddr,
    /// IDLE_TIMEOUT.
    IdleTimeout,
    /// FRAME_TIMEOUT.
    FrameTimeout,
    /// WRITE_TIMEOUT.
    WriteTimeout,
    /// MAX_FRAME_SIZE.
    MaxFrameSize,
    /// MAX_CONNECTIONS.
    MaxConnections,
    /// KEEP_ALIVE_PERIOD.
    KeepAlivePeriod,
    /// CONNECT_TIMEOUT.
    ConnectTimeout,
    /// DEFAULT_CHARACTER_SET.
    DefaultCharacterSet,
    /// LOG_LEVEL.
    LogLevel,
    /// SHARDS.
    Shards,
    /// DATA_DIR.
    DataDir,
    /// CONFIG_FILE (flag and environment only; the file does not name itself).
    ConfigFile,
    /// LOG_FORMAT.
    LogFormat,
    /// PRE_SHUTDOWN_DELAY.
    PreShutdownDelay,
    /// DRAIN_TIMEOUT.
    DrainTimeout,
    /// DEDUP_WINDOW.
    DedupWindow,
    /// RETENTION_AGE.
    RetentionAge,
    /// RETENTION_BYTES.
    RetentionBytes,
    /// ACK_AFTER.
    AckAfter,
    /// JOURNAL_SYNC.
    JournalSync,
    /// SOCKET_IO.
    SocketIo,
    /// ADMIN_ADDR.
    AdminAddr,
    /// AUDIT_LOG.
    AuditLog,
    /// TLS_CERT_FILE.
    TlsCertFile,
    /// TLS_KEY_FILE.
    TlsKeyFile,
    /// TLS_CLIENT_CA.
    TlsClientCa,
    /// TLS_MIN_VERSION.
    TlsMinVersion,
    /// TLS_CLIENT_ALLOWED.
    TlsClientAllowed,
}

impl Setting {
    /// Every setting, in the order `--help` and `check-config` list them.
    pub const ALL: [Setting; 29] = [
        Setting::ListenAddr,
        Setting::IdleTimeout,
        Setting::FrameTimeout,
        Setting::WriteTimeout,
        Setting::MaxFrameSize,
        Setting::MaxConnections,
        Setting::KeepAlivePeriod,
        Setting::ConnectTimeout,
        Setting::DefaultCharacterSet,
        Setting::LogLevel,
        Setting::Shards,
        Setting::DataDir,
        Setting::ConfigFile,
        Setting::LogFormat,
        Setting::PreShutdownDelay,
        Setting::DrainTimeout,
        Setting::DedupWindow,
        Setting::RetentionAge,
        Setting::RetentionBytes,
        Setting::AckAfter,
        Setting::JournalSync,
        Setting::SocketIo,
        Setting::AdminAddr,
        Setting::AuditLog,
        Setting::TlsCertFile,
        Setting::TlsKeyFile,
        Setting::TlsClientCa,
        Setting::TlsMinVersion,
        Setting::TlsClientAllowed,
    ];

    /// (environment name, YAML key and clap id, flag).
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Setting::ListenAddr => ("LISTEN_ADDR", "listen_addr", "--listen-addr"),
            Setting::IdleTimeout => ("IDLE_TIMEOUT", "idle_timeout", "--idle-timeout"),
            Setting::FrameTimeout => ("FRAME_TIMEOUT", "frame_timeout", "--frame-timeout"),
            Setting::WriteTimeout => ("WRITE_TIMEOUT", "write_timeout", "--write-timeout"),
            Setting::MaxFrameSize => ("MAX_FRAME_SIZE", "max_frame_size", "--max-frame-size"),
            Setting::MaxConnections => ("MAX_CONNECTIONS", "max_connections", "--max-connections"),
            Setting::KeepAlivePeriod => (
                "KEEP_ALIVE_PERIOD",
                "keep_alive_period",
                "--keep-alive-period",
            ),
            Setting::ConnectTimeout => ("CONNECT_TIMEOUT", "connect_timeout", "--connect-timeout"),
            Setting::DefaultCharacterSet => (
                "DEFAULT_CHARACTER_SET",
                "default_character_set",
                "--default-character-set",
            ),
            Setting::LogLevel => ("LOG_LEVEL", "log_level", "--log-level"),
            Setting::Shards => ("SHARDS", "shards", "--shards"),
            Setting::DataDir => ("DATA_DIR", "data_dir", "--data-dir"),
            Setting::ConfigFile => ("CONFIG_FILE", "config_file", "--config-file"),
            Setting::LogFormat => ("LOG_FORMAT", "log_format", "--log-format"),
            Setting::PreShutdownDelay => (
                "PRE_SHUTDOWN_DELAY",
                "pre_shutdown_delay",
                "--pre-shutdown-delay",
            ),
            Setting::DrainTimeout => ("DRAIN_TIMEOUT", "drain_timeout", "--drain-timeout"),
            Setting::DedupWindow => ("DEDUP_WINDOW", "dedup_window", "--dedup-window"),
            Setting::RetentionAge => ("RETENTION_AGE", "retention_age", "--retention-age"),
            Setting::RetentionBytes => ("RETENTION_BYTES", "retention_bytes", "--retention-bytes"),
            Setting::AckAfter => ("ACK_AFTER", "ack_after", "--ack-after"),
            Setting::JournalSync => ("JOURNAL_SYNC", "journal_sync", "--journal-sync"),
            Setting::SocketIo => ("SOCKET_IO", "socket_io", "--socket-io"),
            Setting::AdminAddr => ("ADMIN_ADDR", "admin_addr", "--admin-addr"),
            Setting::AuditLog => ("AUDIT_LOG", "audit_log", "--audit-log"),
            Setting::TlsCertFile => ("TLS_CERT_FILE", "tls_cert_file", "--tls-cert-file"),
            Setting::TlsKeyFile => ("TLS_KEY_FILE", "tls_key_file", "--tls-key-file"),
            Setting::TlsClientCa => ("TLS_CLIENT_CA", "tls_client_ca", "--tls-client-ca"),
            Setting::TlsMinVersion => ("TLS_MIN_VERSION", "tls_min_version", "--tls-min-version"),
            Setting::TlsClientAllowed => (
                "TLS_CLIENT_ALLOWED",
                "tls_client_allowed",
                "--tls-client-allowed",
            ),
        }
    }

    /// The environment variable, e.g. `IDLE_TIMEOUT`.
    pub fn env_name(self) -> &'static str {
        self.names().0
    }

    /// The YAML key and clap argument id, e.g. `idle_timeout`.
    pub fn key(self) -> &'static str {
        self.names().1
    }

    /// The command-line flag, e.g. `--idle-timeout`.
    pub fn flag(self) -> &'static str {
        self.names().2
    }
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The CONFIG_FILE.
    File,
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        })
    }
}

/// Values given as flags or environment variables, still as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// (setting, value, where it came from); at most one entry per setting.
    values: Vec<(Setting, String, Source)>,
}

impl Overrides {
    /// Sets `setting` to `value` from `source`, replacing an earlier value.
    pub fn set(&mut self, setting: Setting, value: String, source: Source) {
        self.values.retain(|(s, _, _)| *s != setting);
        self.values.push((setting, value, source));
    }

    /// The value of `setting` and its source, if given.
    pub fn get(&self, setting: Setting) -> Option<(&str, Source)> {
        self.values
            .iter()
            .find(|(s, _, _)| *s == setting)
            .map(|(_, v, src)| (v.as_str(), *src))
    }
}

/// The YAML CONFIG_FILE: the settings under their lower_snake keys. Values may be written as
/// strings or numbers (`max_frame_size: 2097152`, `idle_timeout: 45s`); they are parsed like
/// flags. Later issues add `rules` and `connectors`; any other key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// LISTEN_ADDR.
    #[serde(default, deserialize_with = "scalar")]
    pub listen_addr: Option<String>,
    /// IDLE_TIMEOUT.
    #[serde(default, deserialize_with = "scalar")]
    pub idle_timeout: Option<String>,
    /// FRAME_TIMEOUT.
    #[serde(default, deserialize_with = "scalar")]
    pub frame_timeout: Option<String>,
    /// WRITE_TIMEOUT.
    #[serde(default, deserialize_with = "scalar")]
    pub write_timeout: Option<String>,
    /// MAX_FRAME_SIZE.
    #[serde(default, deserialize_with = "scalar")]
    pub max_frame_size: Option<String>,
    /// MAX_CONNECTIONS.
    #[serde(default, deserialize_with = "scalar")]
    pub max_connections: Option<String>,
    /// KEEP_ALIVE_PERIOD.
    #[serde(default, deserialize_with = "scalar")]
    pub keep_alive_period: Option<String>,
    /// CONNECT_TIMEOUT.
    #[serde(default, deserialize_with = "scalar")]
    pub connect_timeout: Option<String>,
    /// DEFAULT_CHARACTER_SET.
    #[serde(default, deserialize_with = "scalar")]
    pub default_character_set: Option<String>,
    /// LOG_LEVEL.
    #[serde(default, deserialize_with = "scalar")]
    pub log_level: Option<String>,
    /// SHARDS.
    #[serde(default, deserialize_with = "scalar")]
    pub shards: Option<String>,
    /// DATA_DIR.
    #[serde(default, deserialize_with = "scalar")]
    pub data_dir: Option<String>,
    /// LOG_FORMAT.
    #[serde(default, deserialize_with = "scalar")]
    pub log_format: Option<String>,
    /// PRE_SHUTDOWN_DELAY.
    #[serde(default, deserialize_with = "scalar")]
    pub pre_shutdown_delay: Option<String>,
    /// DRAIN_TIMEOUT.
    #[serde(default, deserialize_with = "scalar")]
    pub drain_timeout: Option<String>,
    /// DEDUP_WINDOW.
    #[serde(default, deserialize_with = "scalar")]
    pub dedup_window: Option<String>,
    /// RETENTION_AGE.
    #[serde(default, deserialize_with = "scalar")]
    pub retention_age: Option<String>,
    /// RETENTION_BYTES.
    #[serde(default, deserialize_with = "scalar")]
    pub retention_bytes: Option<String>,
    /// ACK_AFTER.
    #[serde(default, deserialize_with = "scalar")]
    pub ack_after: Option<String>,
    /// JOURNAL_SYNC.
    #[serde(default, deserialize_with = "scalar")]
    pub journal_sync: Option<String>,
    /// SOCKET_IO.
    #[serde(default, deserialize_with = "scalar")]
    pub socket_io: Option<String>,
    /// Routing (issue 11): the connectors, checked by [`crate::route::config::validate`].
    #[serde(default)]
    pub connectors: Option<Vec<crate::route::config::ConnectorSpec>>,
    /// Routing: the retry policy of every connector.
    #[serde(default)]
    pub retry: Option<crate::route::config::RetrySpec>,
    /// Routing: what a message that failed for good becomes.
    #[serde(default)]
    pub on_failure: Option<crate::route::OnFailure>,
    /// ADMIN_ADDR.
    #[serde(default, deserialize_with = "scalar")]
    pub admin_addr: Option<String>,
    /// AUDIT_LOG.
    #[serde(default, deserialize_with = "scalar")]
    pub audit_log: Option<String>,
    /// TLS_CERT_FILE.
    #[serde(default, deserialize_with = "scalar")]
    pub tls_cert_file: Option<String>,
    /// TLS_KEY_FILE.
    #[serde(default, deserialize_with = "scalar")]
    pub tls_key_file: Option<String>,
    /// TLS_CLIENT_CA.
    #[serde(default, deserialize_with = "scalar")]
    pub tls_client_ca: Option<String>,
    /// TLS_MIN_VERSION.
    #[serde(default, deserialize_with = "scalar")]
    pub tls_min_version: Option<String>,
    /// TLS_CLIENT_ALLOWED (comma-separated).
    #[serde(default, deserialize_with = "scalar")]
    pub tls_client_allowed: Option<String>,
    /// Validation rules (issue 9), checked by [`RuleSet::compile`].
    #[serde(default)]
    pub validation: Option<ValidationSpec>,
}

impl FileSettings {
    /// Parses the YAML text of a settings file. An empty file (or only comments) sets nothing.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let has_content = text.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "---"
        });
        if !has_content {
            return Ok(FileSettings::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    /// The value the file gives `setting`, if any.
    pub fn get(&self, setting: Setting) -> Option<&str> {
        let value = match setting {
            Setting::ListenAddr => &self.listen_addr,
            Setting::IdleTimeout => &self.idle_timeout,
            Setting::FrameTimeout => &self.frame_timeout,
            Setting::WriteTimeout => &self.write_timeout,
            Setting::MaxFrameSize => &self.max_frame_size,
            Setting::MaxConnections => &self.max_connections,
            Setting::KeepAlivePeriod => &self.keep_alive_period,
            Setting::ConnectTimeout => &self.connect_timeout,
            Setting::DefaultCharacterSet => &self.default_character_set,
            Setting::LogLevel => &self.log_level,
            Setting::Shards => &self.shards,
            Setting::DataDir => &self.data_dir,
            Setting::ConfigFile => return None,
            Setting::LogFormat => &self.log_format,
            Setting::PreShutdownDelay => &self.pre_shutdown_delay,
            Setting::DrainTimeout => &self.drain_timeout,
            Setting::DedupWindow => &self.dedup_window,
            Setting::RetentionAge => &self.retention_age,
            Setting::RetentionBytes => &self.retention_bytes,
            Setting::AckAfter => &self.ack_after,
            Setting::JournalSync => &self.journal_sync,
            Setting::SocketIo => &self.socket_io,
            Setting::AdminAddr => &self.admin_addr,
            Setting::AuditLog => &self.audit_log,
            Setting::TlsCertFile => &self.tls_cert_file,
            Setting::TlsKeyFile => &self.tls_key_file,
            Setting::TlsClientCa => &self.tls_client_ca,
            Setting::TlsMinVersion => &self.tls_min_version,
            Setting::TlsClientAllowed => &self.tls_client_allowed,
        };
        value.as_deref()
    }
}

/// Reads a YAML scalar (string, number or boolean) as text; `null` means unset.
fn scalar<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    /// Visitor turning any scalar into its text.
    struct ScalarText;
    impl<'de> serde::de::Visitor<'de> for ScalarText {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            scalar(d)
        }
    }
    deserializer.deserialize_any(ScalarText)
}

/// Why a configuration was rejected. Each message names the setting by its environment name
/// and flag, so the operator finds it whichever way they set it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting's value is invalid.
    #[error("{}: {message}", describe(*setting, *origin, file.as_deref()))]
    Invalid {
        /// The setting.
        setting: Setting,
        /// Where the bad value came from.
        origin: Source,
        /// The CONFIG_FILE, when the value came from it.
        file: Option<PathBuf>,
        /// What is wrong, quoting the value.
        message: String,
    },
    /// The CONFIG_FILE could not be read or is not valid YAML for mllpd (unknown key, …).
    #[error("CONFIG_FILE (--config-file): {}: {detail}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong, e.g. `unknown field `idle_timout``.
        detail: String,
    },
    /// The CONFIG_FILE's validation rules do not compile (the error names the rule and where).
    #[error("CONFIG_FILE (--config-file): {}: validation: {error}", path.display())]
    Rules {
        /// The file.
        path: PathBuf,
        /// The first bad rule and what is wrong with it.
        error: RuleError,
    },
    /// The command line itself was not understood.
    #[error("{0}")]
    Usage(String),
}

/// `IDLE_TIMEOUT (--idle-timeout)`, plus the YAML key and file when the value came from there.
fn describe(setting: Setting, origin: Source, file: Option<&Path>) -> String {
    match (origin, file) {
        (Source::File, Some(path)) => format!(
            "{} ({}, {} in {})",
            setting.env_name(),
            setting.flag(),
            setting.key(),
            path.display()
        ),
        _ => format!("{} ({})", setting.env_name(), setting.flag()),
    }
}

/// A validated configuration and where each setting came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The configuration.
    pub config: Config,
    /// The source of every setting, in [`Setting::ALL`] order.
    pub sources: Vec<(Setting, Source)>,
}

impl Config {
    /// Parses a command line (the first item is the program name) and the process environment
    /// into a validated configuration: flag > environment > CONFIG_FILE > default.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::resolve_args(args).map(|resolved| resolved.config)
    }

    /// Like [`Config::from_args`], also telling where each setting came from.
    pub fn resolve_args<I, T>(args: I) -> Result<Resolved, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        match cli::parse_from(args).map_err(|e| ConfigError::Usage(e.to_string()))? {
            Invocation::Serve(o) | Invocation::CheckConfig(o) => Config::resolve(&o),
            Invocation::Send(_) => Err(ConfigError::Usage(
                "`mllpd send` takes no server configuration".to_owned(),
            )),
            Invocation::Journal(_) => Err(ConfigError::Usage(
                "`mllpd journal` takes no server configuration".to_owned(),
            )),
            Invocation::Dlq(_) => Err(ConfigError::Usage(
                "`mllpd dlq` takes no server configuration".to_owned(),
            )),
            Invocation::Validate(_) => Err(ConfigError::Usage(
                "`mllpd validate` takes no server configuration".to_owned(),
            )),
            Invocation::Health(_) => Err(ConfigError::Usage(
                "`mllpd health` takes no server configuration".to_owned(),
            )),
        }
    }

    /// Merges flags and environment (`overrides`), the CONFIG_FILE they name, and the defaults,
    /// and validates every value.
    pub fn resolve(overrides: &Overrides) -> Result<Resolved, ConfigError> {
        let mut config = Config::default();
        let mut sources = Vec::with_capacity(Setting::ALL.len());
        let file = match overrides.get(Setting::ConfigFile) {
            Some((path, origin)) => {
                let path = PathBuf::from(path);
                if path.as_os_str().is_empty() {
                    let message = "empty path".to_owned();
                    let setting = Setting::ConfigFile;
                    return Err(ConfigError::Invalid {
                        setting,
                        origin,
                        file: None,
                        message,
                    });
                }
                let settings = read_file(&path)?;
                config.config_file = Some(path);
                Some(settings)
            }
            None => None,
        };
        for setting in Setting::ALL {
            let given = overrides.get(setting).or_else(|| {
                file.as_ref()
                    .and_then(|f| f.get(setting))
                    .map(|v| (v, Source::File))
            });
            let Some((value, origin)) = given else {
                sources.push((setting, Source::Default));
                continue;
            };
            apply(&mut config, setting, value).map_err(|message| ConfigError::Invalid {
                setting,
                origin,
                file: config
                    .config_file
                    .clone()
                    .filter(|_| origin == Source::File),
                message,
            })?;
            sources.push((setting, origin));
        }
        if let (Some(settings), Some(path)) = (&file, &config.config_file) {
            config.routing = routing(settings).map_err(|detail| ConfigError::File {
                path: path.clone(),
                detail,
            })?;
        }
        if config.ack_after == AckAfter::Delivery
            && !config.routing.connectors.iter().any(|c| c.sync.is_some())
        {
            let origin = sources
                .iter()
                .find(|(s, _)| *s == Setting::AckAfter)
                .map_or(Source::Default, |(_, o)| *o);
            return Err(ConfigError::Invalid {
                setting: Setting::AckAfter,
                origin,
                file: config
                    .config_file
                    .clone()
                    .filter(|_| origin == Source::File),
                message: "delivery needs a connector with `sync: true` in CONFIG_FILE (the ACK \
                          waits for those connectors; with none it would wait for nothing)"
                    .to_owned(),
            });
        }
        if let Some(message) = admin_addr_clash(&config) {
            let origin = sources
                .iter()
                .find(|(s, _)| *s == Setting::AdminAddr)
                .map_or(Source::Default, |(_, o)| *o);
            return Err(ConfigError::Invalid {
                setting: Setting::AdminAddr,
                origin,
                file: config
                    .config_file
                    .clone()
                    .filter(|_| origin == Source::File),
                message,
            });
        }
        tls_settings_agree(&config, &sources)?;
        if let (Some(path), Some(validation)) =
            (&config.config_file, file.and_then(|f| f.validation))
        {
            compile_rules(&validation, path)?;
            config.validation = validation;
        }
        Ok(Resolved { config, sources })
    }
}

/// The routing section of a CONFIG_FILE, checked (the error names the connector and key).
fn routing(settings: &FileSettings) -> Result<crate::route::RoutingOptions, String> {
    crate::route::config::validate(
        settings.connectors.as_deref().unwrap_or_default(),
        settings.retry.as_ref(),
        settings.on_failure,
        &crate::rules::RulesOptions::default(),
    )
}

/// TLS_CERT_FILE and TLS_KEY_FILE go together; the client settings need them.
fn tls_settings_agree(config: &Config, sources: &[(Setting, Source)]) -> Result<(), ConfigError> {
    let origin = |setting| {
        sources
            .iter()
            .find(|(s, _)| *s == setting)
            .map_or(Source::Default, |(_, o)| *o)
    };
    let invalid = |setting, message: &str| ConfigError::Invalid {
        setting,
        origin: origin(setting),
        file: None,
        message: message.to_owned(),
    };
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(_), None) => Err(invalid(Setting::TlsKeyFile, "required with TLS_CERT_FILE")),
        (None, Some(_)) => Err(invalid(Setting::TlsCertFile, "required with TLS_KEY_FILE")),
        (None, None) if config.tls_client_ca.is_some() => Err(invalid(
            Setting::TlsClientCa,
            "needs TLS_CERT_FILE and TLS_KEY_FILE",
        )),
        (None, None) if !config.tls_client_allowed.is_empty() => Err(invalid(
            Setting::TlsClientAllowed,
            "needs TLS_CLIENT_CA (only verified client certificates carry a name)",
        )),
        (Some(_), Some(_))
            if config.tls_client_ca.is_none() && !config.tls_client_allowed.is_empty() =>
        {
            Err(invalid(
                Setting::TlsClientAllowed,
                "needs TLS_CLIENT_CA (only verified client certificates carry a name)",
            ))
        }
        _ => Ok(()),
    }
}

/// The TLS listener's options, when TLS_CERT_FILE and TLS_KEY_FILE are set.
pub fn tls_server_options(config: &Config) -> Option<crate::tls::ServerOptions> {
    Some(crate::tls::ServerOptions {
        cert_file: config.tls_cert_file.clone()?,
        key_file: config.tls_key_file.clone()?,
        client_ca: config.tls_client_ca.clone(),
        min_version: config.tls_min_version,
        client_allowed: config.tls_client_allowed.clone(),
    })
}

/// Reads the validation rules of the CONFIG_FILE `path` again and compiles them (SIGHUP,
/// `mllpd validate`); a file without a `validation:` section has no rules.
pub fn load_rules(path: &Path) -> Result<RuleSet, ConfigError> {
    let validation = read_file(path)?.validation.unwrap_or_default();
    compile_rules(&validation, path)
}

/// Compiles `validation` from the file `path` with the default bounds (`limits::RULES_MAX` …).
fn compile_rules(validation: &ValidationSpec, path: &Path) -> Result<RuleSet, ConfigError> {
    RuleSet::compile(&validation.rules, &RulesOptions::default()).map_err(|error| {
        ConfigError::Rules {
            path: path.to_owned(),
            error,
        }
    })
}

/// Reads and parses the CONFIG_FILE.
fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let fail = |detail: String| ConfigError::File {
        path: path.to_owned(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(fail(format!("larger than {CONFIG_FILE_BYTES_MAX} bytes")));
    }
    FileSettings::from_yaml(&text).map_err(fail)
}

/// Parses `text` as the value of `setting` into `config`; the error quotes the value.
fn apply(config: &mut Config, setting: Setting, text: &str) -> Result<(), String> {
    let text = text.trim();
    match setting {
        Setting::ListenAddr => config.listen_addr = parse_listen_addr(text)?,
        Setting::IdleTimeout => {
            config.idle_timeout = parse_duration(text, Duration::from_nanos(1))?
        }
        Setting::FrameTimeout => {
            config.frame_timeout = parse_duration(text, Duration::from_nanos(1))?
        }
        Setting::WriteTimeout => {
            config.write_timeout = parse_duration(text, Duration::from_nanos(1))?
        }
        Setting::MaxFrameSize => config.frame_bytes_max = parse_frame_bytes_max(text)?,
        Setting::MaxConnections => config.connections_max = parse_connections_max(text)?,
        Setting::KeepAlivePeriod => config.keep_alive_period = parse_keep_alive_period(text)?,
        Setting::ConnectTimeout => {
            // `0` is the replaced product's "no handshake deadline" (warned at start).
            config.connect_timeout =
                Some(parse_duration(text, Duration::ZERO)?).filter(|d| !d.is_zero())
        }
        Setting::DefaultCharacterSet => config.default_charset = parse_charset(text)?,
        Setting::LogLevel => config.log_level = parse_log_level(text)?,
        Setting::Shards => config.shards = parse_shards(text)?,
        Setting::DataDir => config.data_dir = parse_path(text)?,
        Setting::ConfigFile => config.config_file = Some(parse_path(text)?),
        Setting::LogFormat => config.log_format = parse_log_format(text)?,
        Setting::PreShutdownDelay => {
            config.pre_shutdown_delay = parse_duration(text, Duration::ZERO)?
        }
        Setting::DrainTimeout => {
            config.drain_timeout = parse_duration(text, Duration::from_nanos(1))?
        }
        Setting::DedupWindow => config.dedup_window = parse_optional_duration(text)?,
        Setting::RetentionAge => config.retention_age = parse_optional_duration(text)?,
        Setting::RetentionBytes => config.retention_bytes = parse_retention_bytes(text)?,
        Setting::AckAfter => config.ack_after = parse_ack_after(text)?,
        Setting::JournalSync => config.journal_sync = parse_journal_sync(text)?,
        Setting::SocketIo => config.socket_io = parse_socket_io(text)?,
        Setting::AdminAddr => config.admin_addr = parse_admin_addr(text)?,
        Setting::AuditLog => {
            config.audit_log = match text {
                "off" => None,
                path => Some(parse_path(path)?),
            }
        }
        Setting::TlsCertFile => config.tls_cert_file = parse_optional_path(text)?,
        Setting::TlsKeyFile => config.tls_key_file = parse_optional_path(text)?,
        Setting::TlsClientCa => config.tls_client_ca = parse_optional_path(text)?,
        Setting::TlsMinVersion => config.tls_min_version = parse_tls_min_version(text)?,
        Setting::TlsClientAllowed => config.tls_client_allowed = parse_name_list(text),
    }
    Ok(())
}

/// A file path; empty means unset.
fn parse_optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    let text = text.trim();
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

/// `1.2` or `1.3`.
fn parse_tls_min_version(text: &str) -> Result<crate::tls::MinVersion, String> {
    match text.trim() {
        "1.2" => Ok(crate::tls::MinVersion::Tls12),
        "1.3" => Ok(crate::tls::MinVersion::Tls13),
        other => Err(format!("'{other}': expected 1.2 or 1.3")),
    }
}

/// A comma-separated list of names; blanks around each are dropped, empty items ignored.
fn parse_name_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// LISTEN_ADDR in the forms of the product mllpd replaces (Go's `net.Listen`): `IP:PORT`,
/// `:PORT` for all interfaces, or `HOST:PORT` with a host name. The name is resolved once,
/// here (at start, and by check-config, which prints the address): every shard binds the same
/// address, so it must not change under a running server. Like Go, an IPv4 address of the name
/// is preferred.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let invalid = |why: String| {
        format!("invalid address '{text}' ({why}; expected IP:PORT, :PORT or HOST:PORT, e.g. 0.0.0.0:2575, :2575 or [::]:2575)")
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid("no port".to_owned()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("bad port '{port}'")))?;
    if host.is_empty() {
        return Ok(all_interfaces(port));
    }
    if host.contains(['[', ']', ':', ' ', '/']) {
        return Err(invalid(format!("bad host '{host}'")));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| invalid(format!("cannot resolve '{host}': {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| invalid(format!("'{host}' resolves to no address")))
}

/// `:PORT`: every interface, IPv6 and IPv4 on one dual-stack socket where the kernel has IPv6
/// (as Go listens), else every IPv4 interface.
fn all_interfaces(port: u16) -> SocketAddr {
    if Path::new("/proc/net/if_inet6").exists() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from(([0, 0, 0, 0], port))
    }
}

/// MAX_CONNECTIONS: a count within 1..=CONNECTIONS_MAX_MAX, or `0` for no limit of mllpd's own
/// (the replaced product's meaning; the open-file limit still bounds connections).
fn parse_connections_max(text: &str) -> Result<Option<usize>, String> {
    if text == "0" {
        return Ok(None);
    }
    parse_count(text, CONNECTIONS_MAX_MAX)
        .map(Some)
        .map_err(|e| format!("{e} (or 0 for no limit of mllpd's own)"))
}

/// KEEP_ALIVE_PERIOD: at least [`KEEP_ALIVE_PERIOD_MIN`], or zero (`0`, `0s`) for keepalive
/// off (the replaced product's meaning).
fn parse_keep_alive_period(text: &str) -> Result<Option<Duration>, String> {
    let period = parse_duration(text, Duration::ZERO)?;
    if period.is_zero() {
        return Ok(None);
    }
    if period < KEEP_ALIVE_PERIOD_MIN {
        return Err(format!(
            "duration '{text}' must be at least {} (or 0 for keepalive off)",
            humantime::format_duration(KEEP_ALIVE_PERIOD_MIN)
        ));
    }
    Ok(Some(period))
}

/// Why ADMIN_ADDR cannot be used beside LISTEN_ADDR: the same port on the same (or an
/// unspecified) IP. Port 0 (a port the kernel picks) never clashes.
fn admin_addr_clash(config: &Config) -> Option<String> {
    let (admin, listen) = (config.admin_addr?, config.listen_addr);
    let same_ip =
        admin.ip() == listen.ip() || admin.ip().is_unspecified() || listen.ip().is_unspecified();
    (admin.port() != 0 && admin.port() == listen.port() && same_ip).then(|| {
        format!(
            "'{admin}' is the MLLP listen address (LISTEN_ADDR {listen}); use another port, or off"
        )
    })
}

/// ADMIN_ADDR: an address in LISTEN_ADDR's forms (IP:PORT, :PORT, HOST:PORT), or `off`.
fn parse_admin_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_listen_addr(text)
        .map(Some)
        .map_err(|e| format!("{e}, or off"))
}

/// A duration between `min` and [`DURATION_MAX`], in Go's syntax (`1h30m`, `1.5h`, `300ms`,
/// `0`: the replaced product's, see [`parse_go_duration`]) or humantime's (`7days`, `1h 30m`).
fn parse_duration(text: &str, min: Duration) -> Result<Duration, String> {
    let duration = match parse_go_duration(text) {
        Some(duration) => duration,
        None => humantime::parse_duration(text).map_err(|e| {
            format!("invalid duration '{text}' (expected e.g. 250ms, 30s, 5m): {e}")
        })?,
    };
    if duration < min {
        return Err(if min == Duration::from_nanos(1) {
            format!("duration '{text}' must be more than 0")
        } else {
            format!(
                "duration '{text}' must be at least {}",
                humantime::format_duration(min)
            )
        });
    }
    if duration > DURATION_MAX {
        return Err(format!(
            "duration '{text}' is longer than the maximum of 365 days"
        ));
    }
    Ok(duration)
}

/// A duration in Go's `time.ParseDuration` syntax: an optional `+`, then one or more decimal
/// numbers, each with an optional fraction and a unit `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`,
/// `h` (`1h30m`, `1.5h`, `2h45m30.5s`, `300ms`); `0` alone is zero. `None` when `text` is not
/// in that syntax (humantime is tried next) or is negative (no setting takes a negative time).
/// Exact in integer nanoseconds: `1.1s` is 1 100 000 000 ns, as in Go.
///
/// Written here rather than taken from a crate: humantime reads neither fractions (`1.5h`) nor
/// `0`, and the port of Go's parser on crates.io (go-parse-duration 0.1.1) indexes a `&str` by
/// chars and by bytes alike, so a non-ASCII value (`1µs`, a typo) panics it; a configuration
/// value must never panic the server.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let whole_len = digits(rest);
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(digits(f)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        // A whole part too long for u128 is not a duration (`None`); of the fraction, 18 digits
        // are more than nanoseconds of an hour can show, the rest is cut as Go does.
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let fraction = fraction.get(..18).unwrap_or(fraction);
        let fraction_ns = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().ok()? * unit_ns / 10u128.pow(fraction.len() as u32)
        };
        total_ns = total_ns.checked_add(whole.checked_mul(unit_ns)?.checked_add(fraction_ns)?)?;
        rest = after;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

/// A duration more than 0, or `off` (also `none`, `0`, `0s`) for `None`.
fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if is_off(text) {
        return Ok(None);
    }
    parse_duration(text, Duration::from_nanos(1))
        .map(Some)
        .map_err(|e| format!("{e} (or off)"))
}

/// Whether `text` switches a bound off.
fn is_off(text: &str) -> bool {
    ["off", "none", "0", "0s"]
        .iter()
        .any(|off| text.eq_ignore_ascii_case(off))
}

/// RETENTION_BYTES: a byte count with an optional binary suffix (`500MiB`, `20GiB`, `1TiB`),
/// at least one segment, or `off` for `None`.
fn parse_retention_bytes(text: &str) -> Result<Option<u64>, String> {
    if is_off(text) {
        return Ok(None);
    }
    let invalid = || format!("invalid size '{text}' (expected bytes, e.g. 20GiB, or off)");
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(invalid()),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(invalid)?;
    let min = crate::journal::SEGMENT_BYTES_MAX_DEFAULT;
    if bytes < min {
        return Err(format!(
            "size {bytes} is less than one journal segment ({min} bytes)"
        ));
    }
    Ok(Some(bytes))
}

/// ACK_AFTER: `journal` or `receipt`, case-insensitive.
fn parse_ack_after(text: &str) -> Result<AckAfter, String> {
    match text.to_ascii_lowercase().as_str() {
        "journal" => Ok(AckAfter::Journal),
        "receipt" => Ok(AckAfter::Receipt),
        "delivery" => Ok(AckAfter::Delivery),
        _ => Err(format!(
            "invalid value '{text}' (expected journal, receipt or delivery)"
        )),
    }
}

/// SOCKET_IO: `auto`, `glommio` or `uring`, case-insensitive.
fn parse_socket_io(text: &str) -> Result<SocketIo, String> {
    match text.to_ascii_lowercase().as_str() {
        "auto" => Ok(SocketIo::Auto),
        "glommio" => Ok(SocketIo::Glommio),
        "uring" => Ok(SocketIo::Uring),
        _ => Err(format!(
            "invalid value '{text}' (expected auto, glommio or uring)"
        )),
    }
}

/// JOURNAL_SYNC: `fdatasync` or `dsync`, case-insensitive.
fn parse_journal_sync(text: &str) -> Result<JournalSync, String> {
    match text.to_ascii_lowercase().as_str() {
        "fdatasync" => Ok(JournalSync::Fdatasync),
        "dsync" => Ok(JournalSync::Dsync),
        _ => Err(format!(
            "invalid value '{text}' (expected fdatasync or dsync)"
        )),
    }
}

/// A byte count, plain or with a binary suffix (`2097152`, `512KiB`, `2MiB`, `1GiB`), within
/// FRAME_BYTES_MAX_MIN..=FRAME_BYTES_MAX_MAX.
fn parse_frame_bytes_max(text: &str) -> Result<usize, String> {
    use crate::limits::{FRAME_BYTES_MAX_MAX, FRAME_BYTES_MAX_MIN};
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size '{text}' (expected bytes, e.g. 2097152 or 2MiB)"
            ))
        }
    };
    let bytes = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size '{text}' (expected bytes, e.g. 2097152 or 2MiB)"))?;
    if !(FRAME_BYTES_MAX_MIN..=FRAME_BYTES_MAX_MAX).contains(&bytes) {
        return Err(format!(
            "size {bytes} is outside {FRAME_BYTES_MAX_MIN}..={FRAME_BYTES_MAX_MAX} bytes"
        ));
    }
    Ok(bytes)
}

/// A whole number within 1..=max.
fn parse_count(text: &str, max: usize) -> Result<usize, String> {
    let n = text
        .parse::<usize>()
        .map_err(|_| format!("invalid number '{text}' (expected a whole number)"))?;
    if !(1..=max).contains(&n) {
        return Err(format!("{n} is outside 1..={max}"));
    }
    Ok(n)
}

/// SHARDS: a count within 1..=SHARDS_MAX, or `auto` for one per CPU of the affinity mask.
fn parse_shards(text: &str) -> Result<Option<usize>, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    parse_count(text, SHARDS_MAX).map(Some)
}

/// A character set name of HL7 table 0211 (chapter 2, MSH-18), case-insensitive, plus the
/// common spellings `UTF-8` and `ISO-8859-n`.
fn parse_charset(text: &str) -> Result<Charset, String> {
    let name = text.to_ascii_uppercase();
    let iso_part = name
        .strip_prefix("8859/")
        .or_else(|| name.strip_prefix("ISO-8859-"));
    if let Some(part) = iso_part {
        return match part.parse::<u8>() {
            Ok(1..=9 | 15) => Ok(Charset::Iso8859),
            _ => Err(format!(
                "unknown ISO 8859 part in '{text}' (HL7 table 0211: 8859/1..9, 8859/15)"
            )),
        };
    }
    match name.as_str() {
        "ASCII" => Ok(Charset::Ascii),
        "UNICODE UTF-8" | "UTF-8" | "UTF8" => Ok(Charset::Utf8),
        "UNICODE" | "UNICODE UTF-16" | "UNICODE UTF-32" | "ISO IR14" | "ISO IR87" | "ISO IR159"
        | "GB 18030-2000" | "KS X 1001" | "CNS 11643-1992" | "BIG-5" => Ok(Charset::Other),
        _ => Err(format!(
            "unknown character set '{text}' (expected an HL7 table 0211 name such as ASCII, \
             UNICODE UTF-8 or 8859/1)"
        )),
    }
}

/// A tracing filter directive, checked by building it. A bare word must be a level: tracing
/// would read `warning` as "everything from a target named warning", silencing all logs.
fn parse_log_level(text: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in text.split(',').map(str::trim) {
        let bare = !directive.contains(['=', '[', ':']);
        if directive.is_empty()
            || (bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()))
        {
            return Err(format!(
                "invalid log filter '{text}': '{directive}' is not a level (trace, debug, info, \
                 warn, error, off) or TARGET=LEVEL"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("invalid log filter '{text}' (e.g. info, debug, mllpd=debug): {e}"))?;
    Ok(text.to_owned())
}

/// A non-empty path.
fn parse_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("empty path".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// `text` or `json`, case-insensitive.
fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "invalid log format '{text}' (expected text or json)"
        )),
    }
}

impl Resolved {
    /// The source of `setting`.
    pub fn source(&self, setting: Setting) -> Source {
        self.sources
            .iter()
            .find(|(s, _)| *s == setting)
            .map_or(Source::Default, |(_, src)| *src)
    }

    /// Checks that DATA_DIR is a writable directory or can be created: it exists as a directory,
    /// or its nearest existing ancestor is a writable directory. Writability is probed by
    /// creating and removing an empty directory, the one test that also holds for root, ACLs and
    /// read-only mounts. Nothing else is left behind.
    pub fn check_data_dir(&self) -> Result<(), ConfigError> {
        use std::io::ErrorKind;
        let dir = &self.config.data_dir;
        let origin = self.source(Setting::DataDir);
        let file = self
            .config
            .config_file
            .clone()
            .filter(|_| origin == Source::File);
        let fail = |message: String| ConfigError::Invalid {
            setting: Setting::DataDir,
            origin,
            file: file.clone(),
            message,
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => probe_writable(dir).map_err(|e| {
                fail(format!(
                    "directory '{}' is not writable: {e}",
                    dir.display()
                ))
            }),
            Ok(_) => Err(fail(format!(
                "'{}' exists and is not a directory",
                dir.display()
            ))),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                let parent = nearest_existing_ancestor(dir);
                if !parent.is_dir() {
                    let why = format!("'{}' is not a directory", parent.display());
                    return Err(fail(format!("cannot create '{}': {why}", dir.display())));
                }
                probe_writable(&parent).map_err(|e| {
                    let why = format!("'{}' is not writable: {e}", parent.display());
                    fail(format!("cannot create '{}': {why}", dir.display()))
                })
            }
            Err(e) => Err(fail(format!("cannot access '{}': {e}", dir.display()))),
        }
    }

    /// One line per setting: environment name, value, source.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for setting in Setting::ALL {
            let value = render(&self.config, setting);
            let source = self.source(setting);
            out.push_str(&format!(
                "  {:<22} {value} ({source})\n",
                setting.env_name()
            ));
        }
        for connector in &self.config.routing.connectors {
            out.push_str(&format!(
                "  connector {:<12} {:?}\n",
                connector.name, connector.target
            ));
        }
        let rules = &self.config.validation.rules;
        if !rules.is_empty() {
            let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            out.push_str(&format!(
                "  {:<22} {} rules, in order: {} (file)\n",
                "validation",
                rules.len(),
                names.join(", ")
            ));
        }
        out
    }
}

/// The nearest ancestor of `dir` that exists (`.` for a relative path with none).
fn nearest_existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."))
        .to_owned()
}

/// Creates and removes an empty directory inside `dir`.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".mllpd-check-config-{}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

/// A path as `check-config` shows it.
fn path_or_none(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or("none".to_owned(), |p| p.display().to_string())
}

/// A setting's value as `check-config` shows it.
fn render(config: &Config, setting: Setting) -> String {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    match setting {
        Setting::ListenAddr => config.listen_addr.to_string(),
        Setting::IdleTimeout => duration(config.idle_timeout),
        Setting::FrameTimeout => duration(config.frame_timeout),
        Setting::WriteTimeout => duration(config.write_timeout),
        Setting::MaxFrameSize => format!("{} bytes", config.frame_bytes_max),
        Setting::MaxConnections => config.connections_max.map_or_else(
            || "0 (no limit of mllpd's own; the open-file limit applies)".to_owned(),
            |n| n.to_string(),
        ),
        Setting::KeepAlivePeriod => config.keep_alive_period.map_or("off".to_owned(), duration),
        Setting::ConnectTimeout => config
            .connect_timeout
            .map_or("off (no TLS handshake deadline)".to_owned(), duration),
        Setting::DefaultCharacterSet => match config.default_charset {
            Charset::Ascii => "ASCII".to_owned(),
            Charset::Utf8 => "UNICODE UTF-8".to_owned(),
            Charset::Iso8859 => "ISO 8859 (taken as bytes)".to_owned(),
            Charset::Other => "other (taken as bytes)".to_owned(),
        },
        Setting::LogLevel => config.log_level.clone(),
        Setting::Shards => match config.shards {
            Some(n) => n.to_string(),
            None => "auto (one per CPU of the affinity mask)".to_owned(),
        },
        Setting::DataDir => config.data_dir.display().to_string(),
        Setting::ConfigFile => match &config.config_file {
            Some(path) => path.display().to_string(),
            None => "none".to_owned(),
        },
        Setting::LogFormat => format!("{:?}", config.log_format).to_ascii_lowercase(),
        Setting::PreShutdownDelay => duration(config.pre_shutdown_delay),
        Setting::DrainTimeout => duration(config.drain_timeout),
        Setting::DedupWindow => config.dedup_window.map_or("off".to_owned(), duration),
        Setting::RetentionAge => config.retention_age.map_or("off".to_owned(), duration),
        Setting::RetentionBytes => config
            .retention_bytes
            .map_or("off".to_owned(), |b| format!("{b} bytes")),
        Setting::AckAfter => match config.ack_after {
            AckAfter::Journal => "journal".to_owned(),
            AckAfter::Receipt => "receipt (UNSAFE: ACK before durable)".to_owned(),
            AckAfter::Delivery => "delivery (after the sync connectors confirmed)".to_owned(),
        },
        Setting::JournalSync => match config.journal_sync {
            JournalSync::Fdatasync => "fdatasync".to_owned(),
            JournalSync::Dsync => "dsync".to_owned(),
        },
        Setting::SocketIo => match config.socket_io {
            SocketIo::Auto => "auto".to_owned(),
            SocketIo::Glommio => "glommio".to_owned(),
            SocketIo::Uring => "uring".to_owned(),
        },
        Setting::AdminAddr => config
            .admin_addr
            .map_or("off".to_owned(), |a| a.to_string()),
        Setting::AuditLog => config
            .audit_log
            .as_ref()
            .map_or("off".to_owned(), |p| p.display().to_string()),
        Setting::TlsCertFile => path_or_none(&config.tls_cert_file),
        Setting::TlsKeyFile => path_or_none(&config.tls_key_file),
        Setting::TlsClientCa => path_or_none(&config.tls_client_ca),
        Setting::TlsMinVersion => match config.tls_min_version {
            crate::tls::MinVersion::Tls12 => "1.2".to_owned(),
            crate::tls::MinVersion::Tls13 => "1.3".to_owned(),
        },
        Setting::TlsClientAllowed if config.tls_client_allowed.is_empty() => {
            "any verified client".to_owned()
        }
        Setting::TlsClientAllowed => config.tls_client_allowed.join(", "),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn given(pairs: &[(Setting, &str, Source)]) -> Overrides {
        let mut overrides = Overrides::default();
        for (setting, value, source) in pairs {
            overrides.set(*setting, (*value).to_owned(), *source);
        }
        overrides
    }

    fn error_of(setting: Setting, value: &str) -> String {
        Config::resolve(&given(&[(setting, value, Source::Flag)]))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn nothing_given_is_the_default() {
        let resolved = Config::resolve(&Overrides::default()).unwrap();
        assert_eq!(resolved.config, Config::default());
        assert!(resolved.sources.iter().all(|(_, s)| *s == Source::Default));
        assert_eq!(resolved.sources.len(), Setting::ALL.len());
    }

    #[test]
    fn durations_read_like_humantime() {
        assert_eq!(
            parse_duration("250ms", Duration::ZERO),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("30s", Duration::ZERO),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("5m", Duration::ZERO),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("1h 30m", Duration::ZERO),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("0s", Duration::ZERO), Ok(Duration::ZERO));
        assert!(parse_duration("0s", Duration::from_nanos(1)).is_err());
        assert!(parse_duration("30", Duration::ZERO).is_err());
        assert!(parse_duration("366days", Duration::ZERO).is_err());
        assert_eq!(parse_duration("365days", Duration::ZERO), Ok(DURATION_MAX));
    }

    #[test]
    fn durations_read_like_go() {
        let go = |text| parse_duration(text, Duration::ZERO);
        let ms = Duration::from_millis;
        assert_eq!(go("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(go("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(go("300ms"), Ok(ms(300)));
        assert_eq!(go("2h45m30.5s"), Ok(ms(9_930_500)));
        assert_eq!(go("1.1s"), Ok(Duration::from_nanos(1_100_000_000)));
        assert_eq!(go(".5s"), Ok(ms(500)));
        assert_eq!(go("5.s"), Ok(Duration::from_secs(5)));
        assert_eq!(go("+10s"), Ok(Duration::from_secs(10)));
        assert_eq!(go("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(go("1\u{3bc}s"), Ok(Duration::from_micros(1)));
        assert_eq!(go("1us1ns"), Ok(Duration::from_nanos(1001)));
        assert_eq!(go("0"), Ok(Duration::ZERO));
        assert_eq!(go("0.000000001s"), Ok(Duration::from_nanos(1)));
        // 18 fraction digits count, the rest is cut (as Go stops accumulating precision).
        assert_eq!(
            go("1.0000000009999999999s"),
            Ok(Duration::from_nanos(1_000_000_000))
        );
        for bad in ["-1s", "1", ".s", "1.5", "1x", "1é", "s", "+", "1h-1m"] {
            assert!(go(bad).is_err(), "{bad}");
        }
        assert!(go("9999999999999999999999999999999999999999h").is_err());
        assert!(go("8761h").is_err(), "over DURATION_MAX");
    }

    #[test]
    fn every_duration_setting_parses_and_lands_in_its_field() {
        let overrides = given(&[
            (Setting::IdleTimeout, "1s", Source::Flag),
            (Setting::FrameTimeout, "2s", Source::Env),
            (Setting::WriteTimeout, "3s", Source::Flag),
            (Setting::KeepAlivePeriod, "4s", Source::Flag),
            (Setting::ConnectTimeout, "5s", Source::Flag),
            (Setting::PreShutdownDelay, "6s", Source::Flag),
            (Setting::DrainTimeout, "7s", Source::Flag),
        ]);
        let config = Config::resolve(&overrides).unwrap().config;
        let secs = |n| Duration::from_secs(n);
        assert_eq!(config.idle_timeout, secs(1));
        assert_eq!(config.frame_timeout, secs(2));
        assert_eq!(config.write_timeout, secs(3));
        assert_eq!(config.keep_alive_period, Some(secs(4)));
        assert_eq!(config.connect_timeout, Some(secs(5)));
        assert_eq!(config.pre_shutdown_delay, secs(6));
        assert_eq!(config.drain_timeout, secs(7));
    }

    #[test]
    fn zero_is_refused_for_timeouts_but_not_for_pre_shutdown_delay() {
        for setting in [
            Setting::IdleTimeout,
            Setting::FrameTimeout,
            Setting::WriteTimeout,
            Setting::DrainTimeout,
        ] {
            let message = error_of(setting, "0s");
            assert!(message.starts_with(&format!("{} ({})", setting.env_name(), setting.flag())));
            assert!(message.contains("must be more than 0"), "{message}");
        }
        assert!(error_of(Setting::KeepAlivePeriod, "500ms").contains("at least 1s"));
        // The replaced product's zeros: no handshake deadline, keepalive off, no own limit.
        let config = Config::resolve(&given(&[
            (Setting::ConnectTimeout, "0", Source::Env),
            (Setting::KeepAlivePeriod, "0s", Source::Env),
            (Setting::MaxConnections, "0", Source::Env),
        ]))
        .unwrap()
        .config;
        assert_eq!(config.connect_timeout, None);
        assert_eq!(config.keep_alive_period, None);
        assert_eq!(config.connections_max, None);
        let config =
            Config::resolve(&given(&[(Setting::PreShutdownDelay, "0s", Source::Env)])).unwrap();
        assert_eq!(config.config.pre_shutdown_delay, Duration::ZERO);
    }

    #[test]
    fn invalid_duration_names_env_and_flag() {
        assert_eq!(
            error_of(Setting::IdleTimeout, "abc"),
            "IDLE_TIMEOUT (--idle-timeout): invalid duration 'abc' (expected e.g. 250ms, 30s, \
             5m): expected number at 0"
        );
    }

    #[test]
    fn frame_size_is_bounded_at_both_ends() {
        use crate::limits::{FRAME_BYTES_MAX_MAX, FRAME_BYTES_MAX_MIN};
        assert_eq!(parse_frame_bytes_max("2097152"), Ok(2_097_152));
        assert_eq!(parse_frame_bytes_max("2MiB"), Ok(2_097_152));
        assert_eq!(parse_frame_bytes_max("512 KiB"), Ok(524_288));
        assert_eq!(parse_frame_bytes_max("1GiB"), Ok(FRAME_BYTES_MAX_MAX));
        assert_eq!(
            parse_frame_bytes_max(&FRAME_BYTES_MAX_MIN.to_string()),
            Ok(FRAME_BYTES_MAX_MIN)
        );
        assert!(parse_frame_bytes_max(&(FRAME_BYTES_MAX_MIN - 1).to_string()).is_err());
        assert!(parse_frame_bytes_max(&(FRAME_BYTES_MAX_MAX + 1).to_string()).is_err());
        assert!(parse_frame_bytes_max("2MB").is_err());
        assert!(parse_frame_bytes_max("-1").is_err());
        assert!(parse_frame_bytes_max("99999999999999999999GiB").is_err());
        assert!(error_of(Setting::MaxFrameSize, "100")
            .starts_with("MAX_FRAME_SIZE (--max-frame-size): size 100 is outside"));
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(parse_count("1", 5), Ok(1));
        assert_eq!(parse_count("5", 5), Ok(5));
        assert!(parse_count("0", 5).is_err());
        assert!(parse_count("6", 5).is_err());
        assert!(parse_count("x", 5).is_err());
        assert_eq!(parse_shards("auto"), Ok(None));
        assert_eq!(parse_shards("4"), Ok(Some(4)));
        assert!(
            error_of(Setting::Shards, "0").starts_with("SHARDS (--shards): 0 is outside 1..=1024")
        );
        assert_eq!(parse_connections_max("0"), Ok(None));
        let over = (CONNECTIONS_MAX_MAX + 1).to_string();
        assert!(error_of(Setting::MaxConnections, &over)
            .starts_with("MAX_CONNECTIONS (--max-connections)"));
        let max = CONNECTIONS_MAX_MAX.to_string();
        let config = Config::resolve(&given(&[(Setting::MaxConnections, &max, Source::Flag)]));
        assert_eq!(
            config.unwrap().config.connections_max,
            Some(CONNECTIONS_MAX_MAX)
        );
    }

    #[test]
    fn charsets_follow_hl7_table_0211() {
        assert_eq!(parse_charset("ASCII"), Ok(Charset::Ascii));
        assert_eq!(parse_charset("UNICODE UTF-8"), Ok(Charset::Utf8));
        assert_eq!(parse_charset("utf-8"), Ok(Charset::Utf8));
        assert_eq!(parse_charset("8859/1"), Ok(Charset::Iso8859));
        assert_eq!(parse_charset("8859/15"), Ok(Charset::Iso8859));
        assert_eq!(parse_charset("ISO-8859-2"), Ok(Charset::Iso8859));
        assert_eq!(parse_charset("UNICODE UTF-16"), Ok(Charset::Other));
        assert!(parse_charset("8859/10").is_err());
        assert!(parse_charset("EBCDIC").is_err());
        assert!(error_of(Setting::DefaultCharacterSet, "latin9")
            .starts_with("DEFAULT_CHARACTER_SET (--default-character-set): unknown character set"));
    }

    #[test]
    fn log_level_and_format_are_checked() {
        assert_eq!(parse_log_level("info"), Ok("info".to_owned()));
        assert!(parse_log_level("mllpd=debug,warn").is_ok());
        assert!(parse_log_level("mllpd::server=trace").is_ok());
        assert!(parse_log_level("warning").is_err());
        assert!(parse_log_level("").is_err());
        assert!(parse_log_level("mllpd=loud").is_err());
        assert_eq!(parse_log_format("JSON"), Ok(LogFormat::Json));
        assert_eq!(parse_log_format("text"), Ok(LogFormat::Text));
        assert!(error_of(Setting::LogFormat, "xml").starts_with("LOG_FORMAT (--log-format)"));
        assert!(error_of(Setting::LogLevel, "warning").starts_with("LOG_LEVEL (--log-level)"));
    }

    #[test]
    fn listen_addr_takes_ipv4_and_ipv6() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:2575"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 2575)))
        );
        assert!(parse_listen_addr("[::]:2575").is_ok());
        // The replaced product's forms: `:PORT` is every interface, a host name is resolved.
        let all = parse_listen_addr(":2575").unwrap();
        assert!(all.ip().is_unspecified() && all.port() == 2575, "{all}");
        assert_eq!(
            parse_listen_addr("localhost:2575"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 2575)))
        );
        assert!(parse_listen_addr("no-such-host.invalid:2575").is_err());
        assert!(parse_listen_addr(":http").is_err());
        assert!(parse_listen_addr(":").is_err());
        assert!(parse_listen_addr("0.0.0.0").is_err());
        assert!(error_of(Setting::ListenAddr, "x").starts_with("LISTEN_ADDR (--listen-addr)"));
    }

    #[test]
    fn file_values_rank_below_flags_and_env_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mllpd.yaml");
        std::fs::write(
            &path,
            "idle_timeout: 45s\nframe_timeout: 50s\nmax_frame_size: 4096\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let overrides = given(&[
            (Setting::ConfigFile, file, Source::Env),
            (Setting::FrameTimeout, "9s", Source::Env),
        ]);
        let resolved = Config::resolve(&overrides).unwrap();
        assert_eq!(resolved.config.idle_timeout, Duration::from_secs(45));
        assert_eq!(resolved.config.frame_timeout, Duration::from_secs(9));
        assert_eq!(resolved.config.frame_bytes_max, 4096);
        assert_eq!(resolved.config.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(resolved.source(Setting::IdleTimeout), Source::File);
        assert_eq!(resolved.source(Setting::FrameTimeout), Source::Env);
        assert_eq!(resolved.source(Setting::WriteTimeout), Source::Default);

        std::fs::write(&path, "idle_timeout: 45\n").unwrap();
        let message = Config::resolve(&overrides).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "IDLE_TIMEOUT (--idle-timeout, idle_timeout in {file}): invalid duration '45'"
            )),
            "{message}"
        );
    }

    #[test]
    fn unknown_yaml_key_is_an_error_naming_it() {
        let error = FileSettings::from_yaml("idle_timout: 45s\n").unwrap_err();
        assert!(error.contains("unknown field `idle_timout`"), "{error}");
        assert!(FileSettings::from_yaml("config_file: x.yaml\n").is_err());
        assert!(FileSettings::from_yaml("- a\n- b\n").is_err());
    }

    #[test]
    fn yaml_scalars_of_any_type_become_text() {
        let file =
            FileSettings::from_yaml("max_connections: 20\nshards: ~\nlog_format: json\n").unwrap();
        assert_eq!(file.get(Setting::MaxConnections), Some("20"));
        assert_eq!(file.get(Setting::Shards), None);
        assert_eq!(file.get(Setting::LogFormat), Some("json"));
        let empty = FileSettings::from_yaml("# nothing set\n---\n").unwrap();
        assert!(Setting::ALL.iter().all(|s| empty.get(*s).is_none()));
        assert!(FileSettings::from_yaml("idle_timeout: [1, 2]\n").is_err());
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let overrides = given(&[(Setting::ConfigFile, "/nonexistent/mllpd.yaml", Source::Flag)]);
        let message = Config::resolve(&overrides).unwrap_err().to_string();
        assert!(
            message
                .starts_with("CONFIG_FILE (--config-file): /nonexistent/mllpd.yaml: cannot read"),
            "{message}"
        );
    }

    #[test]
    fn data_dir_must_be_a_directory_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        let check = |data_dir: &Path| {
            let value = data_dir.to_str().unwrap();
            Config::resolve(&given(&[(Setting::DataDir, value, Source::Flag)]))
                .unwrap()
                .check_data_dir()
        };
        assert!(check(dir.path()).is_ok());
        assert!(check(&dir.path().join("new/deeper")).is_ok());
        assert!(
            !dir.path().join("new").exists(),
            "check-config must not create DATA_DIR"
        );
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let message = check(&file).unwrap_err().to_string();
        assert!(message.starts_with("DATA_DIR (--data-dir): "), "{message}");
        assert!(message.contains("not a directory"), "{message}");
        assert!(check(&file.join("below"))
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "probe left behind"
        );
    }

    #[test]
    fn journal_settings_parse_and_can_be_off() {
        let overrides = given(&[
            (Setting::DedupWindow, "10m", Source::Env),
            (Setting::RetentionAge, "off", Source::Flag),
            (Setting::RetentionBytes, "20GiB", Source::Flag),
            (Setting::AckAfter, "Receipt", Source::Env),
            (Setting::JournalSync, "DSYNC", Source::Flag),
            (Setting::SocketIo, "uring", Source::Env),
        ]);
        let config = Config::resolve(&overrides).unwrap().config;
        assert_eq!(config.dedup_window, Some(Duration::from_secs(600)));
        assert_eq!(config.retention_age, None);
        assert_eq!(config.retention_bytes, Some(20 << 30));
        assert_eq!(config.ack_after, AckAfter::Receipt);
        assert_eq!(config.journal_sync, JournalSync::Dsync);
        assert_eq!(config.socket_io, SocketIo::Uring);
        assert_eq!(Config::default().socket_io, SocketIo::Auto);
        assert_eq!(parse_socket_io("AUTO"), Ok(SocketIo::Auto));
        assert_eq!(parse_socket_io("glommio"), Ok(SocketIo::Glommio));
        assert!(error_of(Setting::SocketIo, "epoll").starts_with("SOCKET_IO (--socket-io)"));
        let defaults = Config::default();
        assert_eq!(defaults.journal_sync, JournalSync::Fdatasync);
        assert!(
            error_of(Setting::JournalSync, "fsync").starts_with("JOURNAL_SYNC (--journal-sync)")
        );
        assert_eq!(defaults.dedup_window, None);
        assert_eq!(defaults.ack_after, AckAfter::Journal);
        assert_eq!(parse_optional_duration("0s"), Ok(None));
        assert_eq!(parse_retention_bytes("off"), Ok(None));
        let min = crate::journal::SEGMENT_BYTES_MAX_DEFAULT;
        assert_eq!(parse_retention_bytes(&min.to_string()), Ok(Some(min)));
        assert!(parse_retention_bytes(&(min - 1).to_string()).is_err());
        assert!(parse_retention_bytes("20GB").is_err());
        assert!(error_of(Setting::AckAfter, "whenever").starts_with("ACK_AFTER (--ack-after)"));
        let refused = error_of(Setting::AckAfter, "delivery");
        assert!(
            refused.starts_with("ACK_AFTER (--ack-after)") && refused.contains("sync: true"),
            "{refused}"
        );
        assert!(error_of(Setting::DedupWindow, "soon").starts_with("DEDUP_WINDOW (--dedup-window)"));
    }

    #[test]
    fn summary_lists_every_setting_with_its_source() {
        let overrides = given(&[(Setting::IdleTimeout, "45s", Source::Env)]);
        let summary = Config::resolve(&overrides).unwrap().summary();
        assert_eq!(summary.lines().count(), Setting::ALL.len());
        assert!(
            summary.contains("IDLE_TIMEOUT           45s (environment)"),
            "{summary}"
        );
        assert!(
            summary.contains("LISTEN_ADDR            0.0.0.0:2575 (default)"),
            "{summary}"
        );
    }
}
