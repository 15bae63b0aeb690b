//! Logging set-up: `tracing` events to stderr, filtered by LOG_LEVEL, as text or JSON by
//! LOG_FORMAT.
//!
//! Invariant: [`init`] installs the global subscriber at most once per process; a second call
//! reports an error instead of replacing it. What is logged is decided where events are emitted;
//! message content is never logged above debug level (DESIGN.md).

use std::io::IsTerminal;

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

/// Installs the global subscriber described by `config` (LOG_LEVEL, LOG_FORMAT), writing to
/// stderr so stdout stays free for command output. Colours only when stderr is a terminal:
/// escape codes are noise in journald and container logs.
pub fn init(config: &Config) -> Result<(), LoggingError> {
    let ansi = std::io::stderr().is_terminal();
    let subscriber = subscriber(config, std::io::stderr, ansi)?;
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))
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
