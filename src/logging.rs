//! Logging set-up: `tracing` events to stderr, filtered by LOG_LEVEL, as text or JSON by
//! LOG_FORMAT.
//!
//! Invariant: [`init`] installs the global subscriber at most once per process; a second call
//! reports an error instead of replacing it. What is logged is decided where events are emitted;
//! message content is never logged above debug level (DESIGN.md).

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
/// stderr so stdout stays free for command output.
pub fn init(config: &Config) -> Result<(), LoggingError> {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.log_level)
        .map_err(|e| LoggingError::Filter {
            filter: config.log_level.clone(),
            reason: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
