//! The command line: clap definitions of `mllpd [serve]`, `mllpd check-config`, `mllpd send`,
//! `mllpd journal` and `mllpd validate`.
//!
//! Every server setting is one flag and one environment variable (clap's `env`). The settings
//! are flattened into the root command and into `serve`/`check-config`, so `mllpd
//! --idle-timeout 5s` and `mllpd serve --idle-timeout 5s` both work. No setting has a clap
//! `default_value`: a default there would hide the YAML file, whose values rank between the
//! environment and the built-in defaults. Values are kept as strings here and parsed by
//! [`crate::config`], so every error names the setting the same way wherever the value came
//! from. Invariant: each field name of [`Settings`] is the `key` of one [`Setting`] (checked by
//! a unit test), because [`overrides`] finds values by that id.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Overrides, Setting, Source};

/// Text shown after the settings in `mllpd --help`.
const AFTER_HELP: &str = "\
Precedence: flag > environment variable > CONFIG_FILE > built-in default.
Durations read like 250ms, 30s, 5m. Exit status: 0 success; 1 server failure or (check-config)
invalid configuration; 2 usage error or invalid configuration at start.";

/// `mllpd`: a thread-per-core HL7 v2 MLLP server.
#[derive(Debug, Parser)]
#[command(name = "mllpd", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Server settings given before any subcommand (used by `serve`, the default).
    #[command(flatten)]
    pub settings: Settings,
    /// What to do; none means `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    #[command(after_help = AFTER_HELP)]
    Serve(SettingsArgs),
    /// Validate every setting, the CONFIG_FILE and DATA_DIR, print a summary, and exit.
    #[command(after_help = AFTER_HELP)]
    CheckConfig(SettingsArgs),
    /// Send HL7 messages to an MLLP server and print each ACK.
    Send(SendArgs),
    /// Read the journals of a data directory (read-only; safe while the server runs).
    #[command(subcommand)]
    Journal(JournalCommand),
    /// A connector's dead letters: list, show, replay (the running server delivers them
    /// again) or purge. Safe while the server runs.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run a CONFIG_FILE's validation rules over HL7 messages offline and print, per message,
    /// the verdict, the failing rule and the ACK the server would send. Exit status 0 when
    /// every message would be accepted, 1 when one would not, 2 on unreadable rules or input.
    Validate(ValidateArgs),
    /// Ask a running server's admin endpoint whether it is alive (/healthz) or, with --ready,
    /// ready (/readyz): exit status 0 on 200, 1 otherwise. For container health checks, where
    /// no HTTP client is at hand (the image holds only mllpd).
    Health(HealthArgs),
}

/// Arguments of `mllpd health`.
#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// The server's admin endpoint (its ADMIN_ADDR; an unspecified IP or `:PORT` means this
    /// host).
    #[arg(long, env = "ADMIN_ADDR", value_name = "ADDR", default_value = crate::limits::ADMIN_ADDR_DEFAULT)]
    pub admin_addr: String,
    /// Ask /readyz instead of /healthz.
    #[arg(long)]
    pub ready: bool,
}

/// `mllpd dlq …` (issue 11).
#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum DlqCommand {
    /// One line per dead letter: id, shard, sequence, attempts, time, reason.
    List(DlqTarget),
    /// A dead letter's header and the message exactly as received.
    Show {
        /// The connector and data directory.
        #[command(flatten)]
        target: DlqTarget,
        /// The dead letter's id, as `list` prints it.
        id: String,
    },
    /// Hands dead letters back to the connector: the running server delivers them again
    /// (within a second, after what its connector is delivering), or at its next start.
    Replay {
        /// The connector and data directory.
        #[command(flatten)]
        target: DlqTarget,
        /// The ids, as `list` prints them.
        ids: Vec<String>,
        /// Every dead letter of the connector.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Deletes dead letters for good.
    Purge {
        /// The connector and data directory.
        #[command(flatten)]
        target: DlqTarget,
        /// The ids, as `list` prints them.
        ids: Vec<String>,
        /// Every dead letter of the connector.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// Which connector's dead letters.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct DlqTarget {
    /// The connector's name.
    #[arg(long, value_name = "NAME")]
    pub connector: String,
    /// The data directory (DATA_DIR of the server).
    #[arg(
        long,
        env = "DATA_DIR",
        value_name = "DIR",
        default_value = "./mllpd-data"
    )]
    pub data_dir: PathBuf,
}

/// Arguments of `mllpd validate`.
#[derive(Debug, Args, Clone)]
pub struct ValidateArgs {
    /// The CONFIG_FILE whose `validation:` rules are run.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Files of HL7 messages (one or many each; CR, LF or CRLF line ends, or MLLP-framed);
    /// `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The sender's address the rules see as `peer.ip` (none: empty).
    #[arg(long, value_name = "IP", value_parser = crate::validate::parse_peer)]
    pub peer: Option<std::net::IpAddr>,
}

/// `mllpd journal …`.
#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum JournalCommand {
    /// Print segments, records, bytes and first/last sequence number per shard.
    Stats {
        /// The data directory (DATA_DIR of the server).
        #[arg(
            long,
            env = "DATA_DIR",
            value_name = "DIR",
            default_value = "./mllpd-data"
        )]
        data_dir: PathBuf,
    },
    /// Write every journaled message as an MLLP frame, in journal order, shard by shard.
    Export {
        /// The data directory (DATA_DIR of the server).
        #[arg(
            long,
            env = "DATA_DIR",
            value_name = "DIR",
            default_value = "./mllpd-data"
        )]
        data_dir: PathBuf,
        /// Only this shard.
        #[arg(long, value_name = "N")]
        shard: Option<usize>,
        /// Only records with this sequence number or later (per shard).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        from: u64,
        /// The file to write (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Also write each exported record's metadata, no content, as one JSON line per frame
        /// in the same order: shard, seq, receive time, connection, peer, and the verified TLS
        /// client's CN and SANs (`client_cn`, `client_sans`; null and [] when none).
        #[arg(long, value_name = "FILE")]
        metadata: Option<PathBuf>,
    },
}

/// The settings of `serve` or `check-config`.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// The server settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Every server setting; each field is `Some` when given as a flag or in the environment.
#[derive(Debug, Args, Default, Clone)]
pub struct Settings {
    /// Address every shard listens on (IP:PORT) [default: 0.0.0.0:2575]
    #[arg(long, env = "LISTEN_ADDR", value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// Close a connection after this long without a byte between frames [default: 30s]
    #[arg(long, env = "IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Deadline for a whole frame from its start block [default: 60s]
    #[arg(long, env = "FRAME_TIMEOUT", value_name = "DURATION")]
    pub frame_timeout: Option<String>,
    /// Close a connection whose write of ACKs (at most 64 KiB) is not done this long after it
    /// started, whatever part went out [default: 5s]
    #[arg(long, env = "WRITE_TIMEOUT", value_name = "DURATION")]
    pub write_timeout: Option<String>,
    /// Largest frame payload in bytes (or with KiB/MiB/GiB) [default: 2097152]
    #[arg(long, env = "MAX_FRAME_SIZE", value_name = "BYTES")]
    pub max_frame_size: Option<String>,
    /// Most connections held at once; more are accepted and closed [default: 10000]
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// TCP keepalive idle period, at least 1s [default: 60s]
    #[arg(long, env = "KEEP_ALIVE_PERIOD", value_name = "DURATION")]
    pub keep_alive_period: Option<String>,
    /// Deadline for a TLS handshake [default: 10s]
    #[arg(long, env = "CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Charset assumed when MSH-18 is absent: ASCII, UNICODE UTF-8, 8859/1, … [default: ASCII]
    #[arg(long, env = "DEFAULT_CHARACTER_SET", value_name = "CHARSET")]
    pub default_character_set: Option<String>,
    /// Log filter, e.g. info, debug, mllpd=debug,warn [default: info]
    #[arg(long, env = "LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Number of shards [default: one per CPU of the affinity mask]
    #[arg(long, env = "SHARDS", value_name = "N")]
    pub shards: Option<String>,
    /// Directory of journals and state [default: ./mllpd-data]
    #[arg(long, env = "DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// YAML file with the same settings as lower_snake keys (e.g. idle_timeout: 45s) [default: none]
    #[arg(long, env = "CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Keep serving this long after SIGTERM before stopping accepts [default: 0s]
    #[arg(long, env = "PRE_SHUTDOWN_DELAY", value_name = "DURATION")]
    pub pre_shutdown_delay: Option<String>,
    /// Longest time to finish in-flight frames after SIGTERM [default: 30s]
    #[arg(long, env = "DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Answer a message whose (MSH-3, MSH-4, MSH-10) and payload were journaled this recently AA
    /// again without storing it twice (a reused control id with another payload is stored),
    /// e.g. 10m [default: off]
    #[arg(long, env = "DEDUP_WINDOW", value_name = "DURATION")]
    pub dedup_window: Option<String>,
    /// Delete closed journal segments older than this, or off [default: 7days]
    #[arg(long, env = "RETENTION_AGE", value_name = "DURATION")]
    pub retention_age: Option<String>,
    /// Delete the oldest closed journal segments while a shard's journal is larger, e.g. 20GiB
    /// [default: off]
    #[arg(long, env = "RETENTION_BYTES", value_name = "BYTES")]
    pub retention_bytes: Option<String>,
    /// When to send AA: journal (once durable) or receipt (UNSAFE, benchmarks and tests only:
    /// AA at once, before the journal write, so a crash or kill of mllpd itself, not only of
    /// the OS or the power, loses AA'd messages) [default: journal]
    #[arg(long, env = "ACK_AFTER", value_name = "WHEN")]
    pub ack_after: Option<String>,
    /// How the journal makes a batch durable: fdatasync (a direct write, then fdatasync) or
    /// dsync (one O_DSYNC direct write; best on devices with FUA) [default: fdatasync]
    #[arg(long, env = "JOURNAL_SYNC", value_name = "HOW")]
    pub journal_sync: Option<String>,
    /// How shards do socket IO: uring (the shard's own io_uring: one multishot receive per
    /// connection, the sends of a turn submitted together), glommio (its sockets, a syscall per
    /// read and write), or auto (uring where the kernel supports it, Linux 6.1+, else glommio)
    /// [default: auto]
    #[arg(long, env = "SOCKET_IO", value_name = "HOW")]
    pub socket_io: Option<String>,
    /// Admin endpoint (/metrics, /healthz, /readyz): IP:PORT, or off; never the MLLP address
    /// [default: 127.0.0.1:9575]
    #[arg(long, env = "ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// Audit trail: one JSON line per message decision (no patient data), or off
    /// [default: off]
    #[arg(long, env = "AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<String>,
    /// PEM certificate chain (leaf first); with --tls-key-file the listener is TLS-only
    /// [default: none]
    #[arg(long, env = "TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<String>,
    /// PEM private key of the certificate: PKCS#8, RSA or EC [default: none]
    #[arg(long, env = "TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<String>,
    /// PEM CA certificates; set, every client must present a certificate that chains to one
    /// (mutual TLS) [default: none]
    #[arg(long, env = "TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// Lowest TLS version accepted: 1.2 or 1.3 [default: 1.2]
    #[arg(long, env = "TLS_MIN_VERSION", value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// Comma-separated client certificate CNs or SANs let in; others are refused after
    /// verification [default: any verified client]
    #[arg(long, env = "TLS_CLIENT_ALLOWED", value_name = "NAMES")]
    pub tls_client_allowed: Option<String>,
}

/// Arguments of `mllpd send`.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// Server to send to.
    #[arg(value_name = "HOST:PORT")]
    pub address: String,
    /// Files of HL7 messages (one or many each; CR, LF or CRLF line ends, or MLLP-framed);
    /// `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// How long to wait for each ACK.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// How long to wait for the TCP connection (and the TLS handshake).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,
    /// Speak TLS (implied by --tls-ca).
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificates the server's certificate must chain to (required with --tls).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the server's certificate must carry [default: the host of HOST:PORT].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

/// What the command line asks for, with the server settings found on it and in the environment.
#[derive(Debug)]
pub enum Invocation {
    /// Run the server.
    Serve(Overrides),
    /// Validate the configuration.
    CheckConfig(Overrides),
    /// Send messages.
    Send(SendArgs),
    /// Read journals.
    Journal(JournalCommand),
    /// Dead letters.
    Dlq(DlqCommand),
    /// Run validation rules offline.
    Validate(ValidateArgs),
    /// Probe a running server's admin endpoint.
    Health(HealthArgs),
}

/// Parses a command line (the first item is the program name). Environment variables are read
/// from the process environment.
pub fn parse_from<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let sub_matches = matches.subcommand().map(|(_, m)| m);
    Ok(match cli.command {
        None => Invocation::Serve(overrides(&matches, None)),
        Some(Command::Serve(_)) => Invocation::Serve(overrides(&matches, sub_matches)),
        Some(Command::CheckConfig(_)) => Invocation::CheckConfig(overrides(&matches, sub_matches)),
        Some(Command::Send(args)) => Invocation::Send(args),
        Some(Command::Journal(command)) => Invocation::Journal(command),
        Some(Command::Dlq(command)) => Invocation::Dlq(command),
        Some(Command::Validate(args)) => Invocation::Validate(args),
        Some(Command::Health(args)) => Invocation::Health(args),
    })
}

/// Collects each setting's value: a flag after the subcommand, else a flag before it, else the
/// environment. Both levels see the same environment, so only the root's env value is used;
/// that keeps a root flag above an environment variable. An empty environment variable counts
/// as unset (container runtimes often pass `NAME=` for "not configured").
fn overrides(root: &ArgMatches, sub: Option<&ArgMatches>) -> Overrides {
    let mut found = Overrides::default();
    for setting in Setting::ALL {
        let from_sub = sub.and_then(|m| value_from(m, setting, ValueSource::CommandLine));
        let value = from_sub
            .or_else(|| value_from(root, setting, ValueSource::CommandLine))
            .map(|v| (v, Source::Flag))
            .or_else(|| {
                value_from(root, setting, ValueSource::EnvVariable).map(|v| (v, Source::Env))
            });
        match value {
            Some((v, Source::Env)) if v.is_empty() => {}
            Some((v, source)) => found.set(setting, v, source),
            None => {}
        }
    }
    found
}

/// The value of `setting` in `matches` if it came from `source`.
fn value_from(matches: &ArgMatches, setting: Setting, source: ValueSource) -> Option<String> {
    let id = setting.key();
    if matches.value_source(id) != Some(source) {
        return None;
    }
    matches.try_get_one::<String>(id).ok().flatten().cloned()
}

/// clap value parser for `send`'s durations: humantime, and more than zero.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration '{text}' (e.g. 250ms, 10s): {e}"))?;
    if duration.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_an_argument_with_its_env_name() {
        let command = Cli::command();
        for setting in Setting::ALL {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == setting.key())
                .unwrap_or_else(|| panic!("no argument {}", setting.key()));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(setting.env_name())
            );
            assert_eq!(format!("--{}", arg.get_long().unwrap()), setting.flag());
        }
        assert_eq!(
            command
                .get_arguments()
                .filter(|a| a.get_env().is_some())
                .count(),
            Setting::ALL.len()
        );
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flag_after_subcommand_wins_over_flag_before() {
        let Ok(Invocation::Serve(o)) = parse_from([
            "mllpd",
            "--idle-timeout",
            "5s",
            "serve",
            "--idle-timeout",
            "7s",
        ]) else {
            panic!("not serve");
        };
        assert_eq!(o.get(Setting::IdleTimeout), Some(("7s", Source::Flag)));
    }

    #[test]
    fn journal_subcommands_parse() {
        let Ok(Invocation::Journal(JournalCommand::Export {
            data_dir,
            shard,
            from,
            output,
            ..
        })) = parse_from([
            "mllpd",
            "journal",
            "export",
            "--data-dir",
            "d",
            "--shard",
            "1",
            "--from",
            "5",
            "--output",
            "-",
        ])
        else {
            panic!("not export");
        };
        assert_eq!(
            (data_dir, shard, from, output),
            ("d".into(), Some(1), 5, "-".into())
        );
        assert!(matches!(
            parse_from(["mllpd", "journal", "stats", "--data-dir", "d"]),
            Ok(Invocation::Journal(JournalCommand::Stats { .. }))
        ));
        assert!(parse_from(["mllpd", "journal", "export", "--data-dir", "d"]).is_err());
    }

    #[test]
    fn send_parses_durations() {
        let Ok(Invocation::Send(args)) =
            parse_from(["mllpd", "send", "h:1", "a", "-", "--timeout", "250ms"])
        else {
            panic!("not send");
        };
        assert_eq!(args.timeout, Duration::from_millis(250));
        assert_eq!(args.connect_timeout, Duration::from_secs(10));
        assert_eq!(args.files, [PathBuf::from("a"), PathBuf::from("-")]);
        assert!(parse_from(["mllpd", "send", "h:1", "--timeout", "0s"]).is_err());
    }
}
