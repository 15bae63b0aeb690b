//! `mllpd validate --config FILE [MESSAGES…]`: runs a CONFIG_FILE's validation rules over
//! messages offline, a tool for rule authors. Each message goes through the server's own
//! admission step ([`Admission::decide`]) and ACK builder ([`Decision::answer`]), so what it
//! prints is what the server would answer: per message the verdict, the rule that failed (or
//! could not be evaluated) and the ACK's code, with its MSA and ERR segments when it is not an
//! accept. Inputs are split like `mllpd send` splits them (one or many messages per file; CR,
//! LF or CRLF line ends, or MLLP frames). The file's other settings are checked as by
//! `check-config`, and its DEFAULT_CHARACTER_SET applies as in the server.
//!
//! Exit status: 0 when every message would be accepted, 1 when one would not, 2 when the rules
//! or the inputs cannot be read.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use crate::ack::AckOutcome;
use crate::admission::{Admission, Cause, Context, Decision, RulesSlot};
use crate::cli::ValidateArgs;
use crate::config::{Config, ConfigError, Overrides, Setting, Source};
use crate::hl7::ParseOptions;
use crate::rules::RuleSet;

/// Every message would be accepted.
const EXIT_ALL_ACCEPTED: u8 = 0;
/// At least one message would be answered AR or AE (or CR / CE).
const EXIT_NOT_ALL_ACCEPTED: u8 = 1;
/// The rules or the inputs could not be read.
const EXIT_USAGE: u8 = 2;

/// MSH-7 of the ACKs shown: a fixed time, so the output of a run is reproducible.
const TIMESTAMP: &[u8] = b"20260101000000+0000";

/// Runs `mllpd validate`.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let (rules, parse_options) = match load(&args.config) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("mllpd: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let messages = match crate::send::read_inputs(&args.files) {
        Ok(messages) => messages,
        Err(error) => {
            eprintln!("mllpd: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut admission = Admission::new(parse_options, RulesSlot::new(rules));
    let context = Context {
        peer: args.peer.map(|ip| SocketAddr::new(ip, 0)),
        ..Context::default()
    };
    let mut stdout = std::io::stdout().lock();
    let mut all_accepted = true;
    for (index, payload) in messages.iter().enumerate() {
        let decision = admission.decide(payload, &context);
        let report = report(index + 1, payload, &decision);
        all_accepted &= report.accepted;
        if stdout.write_all(report.text.as_bytes()).is_err() {
            return ExitCode::from(EXIT_USAGE);
        }
    }
    ExitCode::from(if all_accepted {
        EXIT_ALL_ACCEPTED
    } else {
        EXIT_NOT_ALL_ACCEPTED
    })
}

/// The rules of the CONFIG_FILE `path` and how the server it configures parses messages
/// (its DEFAULT_CHARACTER_SET): the whole file is validated as `check-config` would.
fn load(path: &std::path::Path) -> Result<(RuleSet, ParseOptions), ConfigError> {
    let mut overrides = Overrides::default();
    let path = path.to_string_lossy().into_owned();
    overrides.set(Setting::ConfigFile, path.clone(), Source::Flag);
    let config = Config::resolve(&overrides)?.config;
    let rules = crate::config::load_rules(std::path::Path::new(&path))?;
    let parse_options = ParseOptions {
        default_charset: config.default_charset,
    };
    Ok((rules, parse_options))
}

/// What is printed for one message.
struct Report {
    /// The lines.
    text: String,
    /// Whether the message would be accepted.
    accepted: bool,
}

/// The lines for message `number`: `message N (control id): verdict → code`, then the ACK's
/// MSA and ERR segments unless it is an accept.
fn report(number: usize, payload: &[u8], decision: &Decision) -> Report {
    let mut ack = Vec::new();
    let control_id = format!("VALIDATE-{number}");
    let outcome = decision.answer(payload, TIMESTAMP, control_id.as_bytes(), &mut ack);
    let id = decision
        .message(payload)
        .map(|m| String::from_utf8_lossy(m.control_id()).into_owned())
        .unwrap_or_default();
    let verdict = match decision.cause() {
        Cause::Accepted => "pass".to_owned(),
        Cause::Unparsed(error) => format!("not a valid message: {}", error.text()),
        Cause::Rule(rule) => format!("rule '{}' failed", rule.name()),
        Cause::Evaluation { rule, reason, .. } => {
            format!("rule '{}' could not be evaluated: {reason}", rule.name())
        }
        Cause::NotStored(_) => "not stored".to_owned(),
        Cause::NotDelivered(_) => "not delivered".to_owned(),
    };
    let accepted = matches!(decision.cause(), Cause::Accepted);
    let answer = match outcome {
        AckOutcome::Written { code, .. } => String::from_utf8_lossy(code.as_bytes()).into_owned(),
        AckOutcome::Suppressed => "no ACK (MSH-15 asks for none)".to_owned(),
    };
    let mut text = format!("message {number} ({id}): {verdict} -> {answer}\n");
    if !accepted {
        let ack = String::from_utf8_lossy(&ack);
        for segment in ack
            .split('\r')
            .filter(|s| s.starts_with("MSA") || s.starts_with("ERR"))
        {
            text.push_str(&format!("  {segment}\n"));
        }
    }
    Report { text, accepted }
}

/// Parses `--peer`: an IP address, as `peer.ip` would show it.
pub fn parse_peer(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an IP address"))
}
