//! Configuration end to end: precedence flag > environment > file > default, error messages
//! that name the setting, `check-config` exit codes and `--help`.
//!
//! Tests that involve the environment run the binary with a cleared environment, so nothing
//! leaks between tests or from the developer's shell; the others call `Config::from_args`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mllpd::config::{Config, ConfigError, LogFormat, Setting};

/// Runs `mllpd args…` in `dir` with only PATH and `env` in its environment.
fn mllpd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mllpd"));
    command.args(args).current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `check-config` summary line of `env_name`, squeezed to single spaces.
fn summary_line(output: &Output, env_name: &str) -> String {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{env_name} ")))
        .unwrap_or_else(|| panic!("no {env_name} in {text}"));
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn check_config_with_nothing_set_succeeds_with_a_summary_of_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let output = mllpd(dir.path(), &["check-config"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for setting in Setting::ALL {
        assert!(summary_line(&output, setting.env_name()).ends_with("(default)"));
    }
    assert_eq!(
        summary_line(&output, "IDLE_TIMEOUT"),
        "IDLE_TIMEOUT 30s (default)"
    );
    assert_eq!(
        summary_line(&output, "LISTEN_ADDR"),
        "LISTEN_ADDR 0.0.0.0:2575 (default)"
    );
    assert!(
        !dir.path().join("mllpd-data").exists(),
        "check-config must not create DATA_DIR"
    );
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mllpd.yaml");
    std::fs::write(
        &file,
        "idle_timeout: 45s\nframe_timeout: 50s\nwrite_timeout: 7s\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let env = [
        ("CONFIG_FILE", file),
        ("IDLE_TIMEOUT", "20s"),
        ("FRAME_TIMEOUT", "21s"),
    ];
    let output = mllpd(dir.path(), &["check-config", "--idle-timeout", "5s"], &env);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        summary_line(&output, "IDLE_TIMEOUT"),
        "IDLE_TIMEOUT 5s (flag)"
    );
    assert_eq!(
        summary_line(&output, "FRAME_TIMEOUT"),
        "FRAME_TIMEOUT 21s (environment)"
    );
    assert_eq!(
        summary_line(&output, "WRITE_TIMEOUT"),
        "WRITE_TIMEOUT 7s (config file)"
    );
    assert_eq!(
        summary_line(&output, "DRAIN_TIMEOUT"),
        "DRAIN_TIMEOUT 30s (default)"
    );
    assert_eq!(
        summary_line(&output, "CONFIG_FILE"),
        format!("CONFIG_FILE {file} (environment)")
    );
}

#[test]
fn flags_before_the_subcommand_apply_and_beat_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("IDLE_TIMEOUT", "20s"), ("SHARDS", "3")];
    let output = mllpd(dir.path(), &["--idle-timeout", "5s", "check-config"], &env);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        summary_line(&output, "IDLE_TIMEOUT"),
        "IDLE_TIMEOUT 5s (flag)"
    );
    assert_eq!(summary_line(&output, "SHARDS"), "SHARDS 3 (environment)");
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let output = mllpd(
        dir.path(),
        &["check-config"],
        &[("SHARDS", ""), ("IDLE_TIMEOUT", "")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        summary_line(&output, "IDLE_TIMEOUT"),
        "IDLE_TIMEOUT 30s (default)"
    );
}

#[test]
fn every_env_name_is_read() {
    // Every setting from its environment variable, each to a value that is not its default,
    // and the value itself checked in the summary (not only that it came from there).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "{}\n").unwrap();
    // check-config loads the TLS files as a start would: real ones, a self-signed certificate
    // serving as its own client CA.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let cases = [
        ("LISTEN_ADDR", "127.0.0.1:3000", "127.0.0.1:3000"),
        ("IDLE_TIMEOUT", "1s", "1s"),
        ("FRAME_TIMEOUT", "2s", "2s"),
        ("WRITE_TIMEOUT", "3s", "3s"),
        ("MAX_FRAME_SIZE", "4096", "4096 bytes"),
        ("MAX_CONNECTIONS", "5", "5"),
        ("KEEP_ALIVE_PERIOD", "6s", "6s"),
        ("CONNECT_TIMEOUT", "7s", "7s"),
        ("DEFAULT_CHARACTER_SET", "UNICODE UTF-8", "UNICODE UTF-8"),
        ("LOG_LEVEL", "debug", "debug"),
        ("SHARDS", "2", "2"),
        ("DATA_DIR", "data", "data"),
        ("CONFIG_FILE", "empty.yaml", "empty.yaml"),
        ("LOG_FORMAT", "json", "json"),
        ("PRE_SHUTDOWN_DELAY", "8s", "8s"),
        ("DRAIN_TIMEOUT", "9s", "9s"),
        ("DEDUP_WINDOW", "10m", "10m"),
        ("RETENTION_AGE", "2days", "2days"),
        ("RETENTION_BYTES", "1GiB", "1073741824 bytes"),
        // The summary adds a warning after the value; its wording is README's business.
        ("ACK_AFTER", "receipt", "receipt"),
        ("JOURNAL_SYNC", "dsync", "dsync"),
        ("SOCKET_IO", "glommio", "glommio"),
        ("ADMIN_ADDR", "127.0.0.1:9576", "127.0.0.1:9576"),
        ("AUDIT_LOG", "audit.log", "audit.log"),
        ("TLS_CERT_FILE", "cert.pem", "cert.pem"),
        ("TLS_KEY_FILE", "key.pem", "key.pem"),
        ("TLS_CLIENT_CA", "ca.pem", "ca.pem"),
        ("TLS_MIN_VERSION", "1.3", "1.3"),
        ("TLS_CLIENT_ALLOWED", "lab, adt", "lab, adt"),
    ];
    for setting in Setting::ALL {
        assert!(
            cases.iter().any(|(name, ..)| *name == setting.env_name()),
            "{} is not covered here",
            setting.env_name()
        );
    }
    let env: Vec<(&str, &str)> = cases
        .iter()
        .map(|&(name, value, _)| (name, value))
        .collect();
    let output = mllpd(dir.path(), &["check-config"], &env);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for (name, _, shown) in cases {
        let line = summary_line(&output, name);
        assert!(line.ends_with("(environment)"), "{line}");
        if name == "ACK_AFTER" {
            assert!(line.starts_with(&format!("{name} {shown} ")), "{line}");
        } else {
            assert_eq!(line, format!("{name} {shown} (environment)"));
        }
    }
}

#[test]
fn check_config_names_the_bad_setting_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let output = mllpd(dir.path(), &["check-config"], &[("IDLE_TIMEOUT", "abc")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("IDLE_TIMEOUT (--idle-timeout): invalid duration 'abc'"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());

    let output = mllpd(dir.path(), &["check-config", "--max-frame-size", "10"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("MAX_FRAME_SIZE (--max-frame-size): size 10 is outside"));
}

#[test]
fn check_config_rejects_an_unknown_yaml_key_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mllpd.yaml");
    std::fs::write(&file, "idle_timeout: 45s\nidle_timout: 45s\n").unwrap();
    let output = mllpd(
        dir.path(),
        &["check-config", "--config-file", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("CONFIG_FILE (--config-file)"), "{message}");
    assert!(message.contains("unknown field `idle_timout`"), "{message}");
}

#[test]
fn check_config_reports_a_bad_value_in_the_file_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mllpd.yaml");
    std::fs::write(&file, "drain_timeout: soon\n").unwrap();
    let output = mllpd(
        dir.path(),
        &["check-config"],
        &[("CONFIG_FILE", file.to_str().unwrap())],
    );
    assert_eq!(output.status.code(), Some(1));
    let expected = format!(
        "DRAIN_TIMEOUT (--drain-timeout, drain_timeout in {}): invalid duration 'soon'",
        file.display()
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
}

#[test]
fn check_config_rejects_a_data_dir_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let output = mllpd(dir.path(), &["check-config"], &[("DATA_DIR", "file/data")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("DATA_DIR (--data-dir): cannot create 'file/data'"));
}

#[test]
fn serve_with_an_invalid_setting_exits_2_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["serve"][..], &[][..]] {
        let output = mllpd(dir.path(), args, &[("LISTEN_ADDR", "nowhere")]);
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains("LISTEN_ADDR (--listen-addr): invalid address 'nowhere'"));
    }
}

#[test]
fn help_documents_every_setting_with_env_name_and_default() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"][..],
        &["check-config", "--help"][..],
    ] {
        let output = mllpd(dir.path(), args, &[]);
        assert_eq!(output.status.code(), Some(0));
        let help = stdout(&output);
        for setting in Setting::ALL {
            assert!(
                help.contains(setting.env_name()),
                "{} missing from {args:?}",
                setting.env_name()
            );
            assert!(
                help.contains(setting.flag()),
                "{} missing from {args:?}",
                setting.flag()
            );
        }
        // The defaults are part of the help text.
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for default in [
            "[default: 0.0.0.0:2575]",
            "[default: 30s]",
            "[default: 2097152]",
            "[default: 10000]",
        ] {
            assert!(flat.contains(default), "{default} missing from {args:?}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = mllpd(dir.path(), &["--no-such-flag"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let output = mllpd(dir.path(), &["send"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn from_args_parses_every_duration_flag() {
    let config = Config::from_args([
        "mllpd",
        "--idle-timeout",
        "250ms",
        "--frame-timeout",
        "5m",
        "--write-timeout",
        "2s",
        "--keep-alive-period",
        "1m 30s",
        "--connect-timeout",
        "1h",
        "--pre-shutdown-delay",
        "0s",
        "--drain-timeout",
        "45s",
        "--log-format",
        "json",
    ])
    .unwrap();
    assert_eq!(config.idle_timeout, Duration::from_millis(250));
    assert_eq!(config.frame_timeout, Duration::from_secs(300));
    assert_eq!(config.write_timeout, Duration::from_secs(2));
    assert_eq!(config.keep_alive_period, Some(Duration::from_secs(90)));
    assert_eq!(config.connect_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(config.pre_shutdown_delay, Duration::ZERO);
    assert_eq!(config.drain_timeout, Duration::from_secs(45));
    assert_eq!(config.log_format, LogFormat::Json);
}

#[test]
fn from_args_reads_the_file_named_by_the_flag_and_lets_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mllpd.yaml");
    std::fs::write(
        &file,
        "listen_addr: 127.0.0.1:2600\nmax_connections: 7\nshards: 2\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let config =
        Config::from_args(["mllpd", "serve", "--config-file", file, "--shards", "4"]).unwrap();
    assert_eq!(config.listen_addr.to_string(), "127.0.0.1:2600");
    assert_eq!(config.connections_max, Some(7));
    assert_eq!(config.shards, Some(4));
}

#[test]
fn from_args_errors_name_the_setting() {
    let error = Config::from_args(["mllpd", "--write-timeout", "0s"]).unwrap_err();
    assert!(matches!(
        error,
        ConfigError::Invalid {
            setting: Setting::WriteTimeout,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "WRITE_TIMEOUT (--write-timeout): duration '0s' must be more than 0"
    );
    let error = Config::from_args(["mllpd", "--bogus"]).unwrap_err();
    assert!(matches!(error, ConfigError::Usage(_)));
}

#[test]
fn help_says_ack_after_receipt_loses_messages_on_a_crash_of_mllpd_itself() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let output = mllpd(dir.path(), args, &[]);
        assert_eq!(output.status.code(), Some(0));
        let flat = stdout(&output)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let start = flat.find("--ack-after").unwrap();
        let end = flat[start..].find("[default: journal]").unwrap() + start;
        let text = &flat[start..end];
        for needle in [
            "UNSAFE",
            "before the journal write",
            "a crash or kill of mllpd itself",
        ] {
            assert!(
                text.contains(needle),
                "{needle:?} missing from {args:?}: {text}"
            );
        }
    }
}
