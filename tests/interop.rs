//! Interop with third-party MLLP senders installed from the package registries (issue 3 item
//! 9): python-hl7's `mllp_send` (PyPI `hl7`) and Medplum's `medplum hl7 send` (npm
//! `@medplum/cli`, installed into `perf/node/` by `.ci/install-deps`). Each sends every message
//! of the corpus in `tests/data/` to a real `mllpd` and must get an accept ACK whose MSA-2 is
//! the message's MSH-10.
//!
//! The expected code comes from the message itself (HL7 v2 §2.9.2/§2.9.3): original mode (MSH-15
//! and MSH-16 empty) → AA; enhanced mode → CA, and no accept ACK at all when MSH-15 is NE, or ER
//! for a message that is accepted. Neither sender can send a message that gets no answer (both
//! wait for one), so such messages are left out of their runs; the server tests cover them.
//!
//! When a sender is not installed the test prints why and passes, except under CI (`CI=true`),
//! where a missing sender is a failure: `.ci/install-deps` must have installed it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{frame, Ack, Server, CR, EB, SB};

/// Longest time one sender process may take before the test gives up on it.
const SENDER_TIMEOUT: Duration = Duration::from_secs(60);

/// The issue 2 corpus holds at least 30 messages; fewer means the glob found the wrong files.
const CORPUS_MESSAGES_MIN: usize = 30;

/// Corpus files named with these prefixes are invalid on purpose and expect no AA.
const INVALID_PREFIXES: [&str; 3] = ["invalid_", "bad_", "broken_"];

/// One message of the corpus and the answer it must get.
#[derive(Debug, Clone)]
struct CorpusMessage {
    /// File name, for failure messages.
    file: String,
    /// The message bytes exactly as in the file (CR, LF or CRLF segment ends).
    bytes: Vec<u8>,
    /// MSH-10, which MSA-2 must echo.
    control_id: String,
    /// MSH-15 or MSH-16 is valued.
    enhanced: bool,
    /// MSA-1 expected, or `None` when MSH-15 says no accept ACK is sent.
    expected_code: Option<&'static str>,
}

/// Reads every valid corpus file and splits it into messages (a file may hold several: each
/// segment that starts with `MSH` begins a new message).
fn corpus() -> Vec<CorpusMessage> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "hl7"))
        .filter(|path| {
            let name = path.file_name().expect("file name").to_string_lossy();
            !INVALID_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect();
    files.sort();
    let mut messages = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).expect("read corpus file");
        let file = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        for message in split_messages(&bytes) {
            messages.push(describe(&file, message));
        }
    }
    assert!(
        messages.len() >= CORPUS_MESSAGES_MIN,
        "only {} corpus messages in {}",
        messages.len(),
        dir.display()
    );
    messages
}

/// Splits a file at each segment that starts with `MSH`; bytes before the first (blank lines)
/// stay with the first message, as a sender would send them.
fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let starts: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i..].starts_with(b"MSH"))
        .filter(|&i| i == 0 || matches!(bytes[i - 1], b'\r' | b'\n'))
        .collect();
    assert!(!starts.is_empty(), "a corpus file without MSH");
    let mut bounds = starts.clone();
    bounds[0] = 0;
    bounds.push(bytes.len());
    bounds.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Reads MSH-10, MSH-15 and MSH-16 with the message's own delimiters (an oracle independent of
/// the crate's parser) and derives the expected answer.
fn describe(file: &str, message: &[u8]) -> CorpusMessage {
    let start = message
        .windows(3)
        .position(|w| w == b"MSH")
        .expect("MSH in message");
    let msh = &message[start..];
    let msh = &msh[..msh
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(msh.len())];
    let field_separator = msh[3];
    // MSH-1 is the separator itself, so after splitting, index n-1 holds MSH-n.
    let fields: Vec<&[u8]> = msh.split(|&b| b == field_separator).collect();
    let field = |n: usize| fields.get(n - 1).copied().unwrap_or(b"");
    let component_separator = field(2).first().copied().unwrap_or(b'^');
    let accept_type = field(15)
        .split(|&b| b == component_separator)
        .next()
        .unwrap_or(b"");
    let enhanced = !field(15).is_empty() || !field(16).is_empty();
    let expected_code = match (enhanced, accept_type) {
        (false, _) => Some("AA"),
        (true, b"NE" | b"ER") => None,
        (true, _) => Some("CA"),
    };
    CorpusMessage {
        file: file.to_owned(),
        bytes: message.to_vec(),
        control_id: String::from_utf8_lossy(field(10)).into_owned(),
        enhanced,
        expected_code,
    }
}

/// Whether the test may go on: a missing sender fails under CI and skips elsewhere.
fn sender_present(name: &str, present: bool, install_hint: &str) -> bool {
    common::require(name, present, install_hint)
}

/// Runs `command` to completion, killing it after `SENDER_TIMEOUT`.
fn run(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let deadline = Instant::now() + SENDER_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "{command:?} did not finish within {SENDER_TIMEOUT:?}; stdout: {:?}; stderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// Asserts that `ack` answers `message` with the expected code and echoes its control id.
fn assert_ack(sender: &str, message: &CorpusMessage, ack: &Ack) {
    let expected = message
        .expected_code
        .expect("only answered messages are sent");
    assert_eq!(
        (ack.code().as_str(), ack.control_id().as_str()),
        (expected, message.control_id.as_str()),
        "{sender}: {} (enhanced mode: {}) got {:?}",
        message.file,
        message.enhanced,
        String::from_utf8_lossy(&ack.raw)
    );
}

/// Splits `bytes` into the payloads of the MLLP frames in it.
fn frames_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some(start) = rest.iter().position(|&b| b == SB) {
        let Some(end) = rest[start..].windows(2).position(|w| w == [EB, CR]) else {
            break;
        };
        frames.push(rest[start + 1..start + end].to_vec());
        rest = &rest[start + end + 2..];
    }
    frames
}

/// The `mllp_send` command: the script on PATH, or the same entry point through
/// `python3 -m hl7.client` when pip put the package where PATH does not reach its scripts.
fn mllp_send_command() -> Option<Command> {
    let works = |mut command: Command| {
        command
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
            .then_some(())
    };
    let module = || {
        let mut command = Command::new("python3");
        command.args(["-m", "hl7.client"]);
        command
    };
    if works(Command::new("mllp_send")).is_some() {
        Some(Command::new("mllp_send"))
    } else {
        works(module()).map(|()| module())
    }
}

/// Runs `mllp_send` on `file` against `server`; returns the ACK payloads it printed.
fn mllp_send(server: &Server, file: &Path, loose: bool) -> Vec<Vec<u8>> {
    let mut command = mllp_send_command().expect("mllp_send was found before");
    command
        .args(["--port", &server.addr.port().to_string(), "--file"])
        .arg(file);
    if loose {
        command.arg("--loose");
    }
    command.arg(server.addr.ip().to_string());
    let output = run(command);
    assert!(
        output.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    frames_in(&output.stdout)
}

/// python-hl7's `mllp_send` sends the whole corpus on one connection and prints each ACK.
///
/// Two runs: the messages framed as they are in the files (python-hl7 sends a framed file as
/// it is, less leading and trailing CRs, so LF and CRLF segment ends reach the server), and
/// `--loose` over the files with LF or CRLF line ends, where `mllp_send` turns them into CR.
/// (Its stdin mode is broken on Python 3 — it mixes str and bytes — so both runs use `--file`.)
#[test]
fn mllp_send_gets_an_accept_ack_for_every_corpus_message() {
    if !sender_present(
        "mllp_send",
        mllp_send_command().is_some(),
        "pip install hl7, or apt-get install python3-hl7",
    ) {
        return;
    }
    let messages: Vec<CorpusMessage> = corpus()
        .into_iter()
        .filter(|m| m.expected_code.is_some())
        .collect();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");

    let framed = dir.path().join("corpus.mllp");
    let bytes: Vec<u8> = messages.iter().flat_map(|m| frame(&m.bytes)).collect();
    std::fs::write(&framed, bytes).expect("write framed corpus");
    let acks = mllp_send(&server, &framed, false);
    assert_eq!(acks.len(), messages.len(), "one ACK per message");
    for (message, ack) in messages.iter().zip(&acks) {
        assert_ack("mllp_send", message, &Ack::parse(ack));
    }

    // --loose finds messages by the literal `MSH|^~\&|`, so only standard delimiters qualify.
    let loose: Vec<&CorpusMessage> = messages
        .iter()
        .filter(|m| m.bytes.contains(&b'\n') && m.bytes.starts_with(b"MSH|^~\\&|"))
        .collect();
    assert!(!loose.is_empty(), "the corpus has LF and CRLF messages");
    let text = dir.path().join("corpus_lf.hl7");
    let bytes: Vec<u8> = loose
        .iter()
        .flat_map(|m| [m.bytes.as_slice(), b"\n"].concat())
        .collect();
    std::fs::write(&text, bytes).expect("write LF corpus");
    let acks = mllp_send(&server, &text, true);
    assert_eq!(acks.len(), loose.len(), "one ACK per --loose message");
    for (message, ack) in loose.iter().zip(&acks) {
        assert_ack("mllp_send --loose", message, &Ack::parse(ack));
    }
    let enhanced = messages.iter().filter(|m| m.enhanced).count();
    eprintln!(
        "mllp_send: {} messages acknowledged ({enhanced} with CA), {} more with --loose",
        messages.len(),
        loose.len()
    );
}

/// The Medplum CLI installed by `npm ci` in `perf/node/`.
fn medplum_cli() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/node/node_modules/.bin/medplum")
}

fn medplum_present() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    node && medplum_cli().exists()
}

/// The ACK `medplum hl7 send` printed: it writes segments one per line (CR turned into LF).
fn medplum_ack(stdout: &[u8]) -> Ack {
    let text = String::from_utf8_lossy(stdout);
    let start = text.find("MSH").unwrap_or(text.len());
    let segments: Vec<&str> = text[start..]
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .collect();
    Ack::parse(segments.join("\r").as_bytes())
}

/// Medplum's `medplum hl7 send HOST PORT --file F` sends one message per run, offline (no
/// Medplum server or login needed for `hl7 send`), and prints the ACK.
///
/// Its `sendAndWait` waits for an application-level ACK and ignores CA (`returnAck` defaults to
/// `application` in `@medplum/hl7`), so an enhanced-mode message would wait forever on any
/// receiver that sends commit ACKs only; those messages go through `mllp_send` above. It also
/// re-parses the file (`Hl7Message.parse`) and rejects one that starts with blank lines, so the
/// copy it reads starts at MSH.
#[test]
fn medplum_hl7_send_gets_aa_for_every_original_mode_corpus_message() {
    if !sender_present(
        "medplum (npm @medplum/cli)",
        medplum_present(),
        "node and `npm ci` in perf/node, see .ci/install-deps",
    ) {
        return;
    }
    let messages: Vec<CorpusMessage> = corpus().into_iter().filter(|m| !m.enhanced).collect();
    assert!(messages.len() >= CORPUS_MESSAGES_MIN / 2);
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    for (index, message) in messages.iter().enumerate() {
        let start = message
            .bytes
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(0);
        let file = dir.path().join(format!("{index}.hl7"));
        std::fs::write(&file, &message.bytes[start..]).expect("write message");
        let mut command = Command::new(medplum_cli());
        command
            .args(["hl7", "send"])
            .arg(server.addr.ip().to_string())
            .arg(server.addr.port().to_string())
            .arg("--file")
            .arg(&file);
        let output = run(command);
        assert!(
            output.status.success(),
            "medplum hl7 send {}: {}",
            message.file,
            String::from_utf8_lossy(&output.stderr)
        );
        assert_ack("medplum hl7 send", message, &medplum_ack(&output.stdout));
    }
    eprintln!("medplum hl7 send: {} messages got AA", messages.len());
}
