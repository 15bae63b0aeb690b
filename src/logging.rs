//! Logging set-up: `tracing` events to stderr, filtered by LOG_LEVEL, as text or JSON by
//! LOG_FORMAT.
//!
//! Logs never block a shard: events are formatted on the emitting thread and handed to
//! `tracing-appender`'s non-blocking writer, a bounded queue (`limits::LOG_QUEUE_LINES`) that one
//! thread drains to stderr. When stderr is slower than the log (a stalled pipe, a flood), new
//! lines are dropped, never waited for: they are counted ([`lines_dropped`], exported as
//! `mllpd_log_lines_dropped_total`), reported by a log line every
//! `limits::LOG_DROPS_REPORT_INTERVAL` while the count grows, and on stderr at exit.
//!
//! Invariant: [`init`] installs the global subscriber at most once per process; a second call
//! reports an error instead of replacing it. What is logged is decided where events are emitted;
//! message content is never logged above debug level (DESIGN.md).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// LOG_LEVEL is not a valid filter (config validation normally catches this first).
    #[error("LOG_LEVEL (--log-level): invalid log filter '{filter}': {reason}")]
    Filter {
        /// The filter text.
        filter: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("logging is already initialised: {0}")]
    AlreadyInitialised(String),
}

/// The drop counter of the installed non-blocking writer.
static DROPS: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the log queue was full (0 before [`init`]).
pub fn lines_dropped() -> u64 {
    DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keeps the log writer's thread; dropping it writes out what is queued and then reports on
/// stderr how many lines were dropped, if any. Hold it until the process ends.
#[derive(Debug)]
pub struct LogGuard(Option<WorkerGuard>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.0.take());
        let dropped = lines_dropped();
        if dropped > 0 {
            eprintln!("mllpd: {dropped} log lines were dropped (log queue full)");
        }
    }
}

/// `MLLPD_FAULT_LOG_QUEUE_LINES`: a test hook that shrinks the log queue, so a test can fill
/// it (debug builds, or with MLLPD_ALLOW_FAULT_INJECTION=1, like every MLLPD_FAULT_* hook).
fn queue_lines() -> usize {
    if !matches!(
        crate::journal::FaultPlan::gate_env(),
        crate::journal::FaultGate::Armed
    ) {
        return crate::limits::LOG_QUEUE_LINES;
    }
    std::env::var("MLLPD_FAULT_LOG_QUEUE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(crate::limits::LOG_QUEUE_LINES)
}

/// `MLLPD_FAULT_LOG_WRITE_DELAY=<duration>`: a test hook that makes every write to stderr
/// take that long, as a stalled pipe or a slow log collector would (fault-gated like
/// [`queue_lines`]).
fn write_delay() -> Option<std::time::Duration> {
    if !matches!(
        crate::journal::FaultPlan::gate_env(),
        crate::journal::FaultGate::Armed
    ) {
        return None;
    }
    let delay = std::env::var("MLLPD_FAULT_LOG_WRITE_DELAY").ok()?;
    humantime::parse_duration(&delay).ok()
}

/// stderr, slowed down by the [`write_delay`] test hook when it is armed.
struct Stderr(Option<std::time::Duration>);

impl std::io::Write for Stderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(delay) = self.0 {
            std::thread::sleep(delay);
        }
        std::io::stderr().write(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber described by `config` (LOG_LEVEL, LOG_FORMAT), writing to
/// stderr through the non-blocking writer, so stdout stays free for command output. Colours
/// only when stderr is a terminal: escape codes are noise in journald and container logs.
pub fn init(config: &Config) -> Result<LogGuard, LoggingError> {
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue_lines())
        .thread_name("mllpd-log")
        .finish(Stderr(write_delay()));
    let counter = writer.error_counter();
    let subscriber = subscriber(config, writer, ansi)?;
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))?;
    let _ = DROPS.set(counter);
    let _ = std::thread::Builder::new()
        .name("mllpd-log-drops".to_owned())
        .spawn(report_drops);
    Ok(LogGuard(Some(guard)))
}

/// Logs the count of dropped lines every `LOG_DROPS_REPORT_INTERVAL` while it grows (the line
/// may itself be dropped; the next report then carries the count).
fn report_drops() {
    let mut reported = 0;
    loop {
        std::thread::sleep(crate::limits::LOG_DROPS_REPORT_INTERVAL);
        let dropped = lines_dropped();
        if dropped > reported {
            tracing::warn!(
                dropped_total = dropped,
                dropped_since_last = dropped - reported,
                "log lines dropped: the log queue was full (stderr too slow)"
            );
            reported = dropped;
        }
    }
}

/// The subscriber for `config`, writing to `writer`.
pub fn subscriber<W>(
    config: &Config,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.log_level)
        .map_err(|e| LoggingError::Filter {
            filter: config.log_level.clone(),
            reason: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(match config.log_format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `config`'s subscriber writes for one info and one debug event.
    fn logged(config: &Config) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(config, move || writer.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = "127.0.0.1:5000", shard = 0, "connection opened");
            tracing::debug!("debug detail");
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn text_format_at_info_drops_debug() {
        let out = logged(&Config::default());
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains(" INFO "), "{out}");
        assert!(
            out.contains("connection opened peer=\"127.0.0.1:5000\" shard=0"),
            "{out}"
        );
        assert!(!out.contains('\u{1b}'), "no colour codes: {out}");
    }

    #[test]
    fn json_format_writes_one_object_per_event() {
        let config = Config {
            log_format: LogFormat::Json,
            log_level: "debug".to_owned(),
            ..Config::default()
        };
        let out = logged(&config);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')),
            "{out}"
        );
        assert!(lines[0].contains(r#""level":"INFO""#), "{out}");
        assert!(
            lines[0].contains(r#""message":"connection opened""#),
            "{out}"
        );
        assert!(lines[0].contains(r#""peer":"127.0.0.1:5000""#), "{out}");
        assert!(lines[1].contains(r#""level":"DEBUG""#), "{out}");
    }

    #[test]
    fn bad_filter_is_an_error_naming_log_level() {
        let config = Config {
            log_level: "info,=[".to_owned(),
            ..Config::default()
        };
        let error = init(&config).unwrap_err();
        assert!(
            error.to_string().starts_with("LOG_LEVEL (--log-level)"),
            "{error}"
        );
    }
}
