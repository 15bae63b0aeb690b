//! `mllpd send HOST:PORT [FILE...]`: an operator's tool that sends HL7 messages over MLLP and
//! reports each acknowledgment.
//!
//! Messages are read from files or stdin, one or many per file: CR, LF or CRLF line ends are
//! normalised to the CR segment terminator of HL7 v2 (chapter 2, "Message construction rules"),
//! and a new message starts at each segment that begins with `MSH`. Input that is already
//! MLLP-framed is taken frame by frame. Messages go out in order on one connection, one at a
//! time: each waits for the ACK whose MSA-2 equals its MSH-10 (chapter 2, MSA segment) before
//! the next is sent, so the output lines are in input order. ACKs for other control ids are
//! reported on stderr and skipped. The accept acknowledgment type (MSH-15, table 0155) is
//! honoured: under NE no ACK is awaited, and under ER silence until the timeout means no error.
//!
//! Exit status: 0 when every message got AA or CA (or, under NE/ER, no ACK was due); 1 when
//! any got another code or no answer (timeout, connection closed); 2 for usage and IO errors
//! before anything was sent.
//! Blocking `std::net` is enough here: one connection, one message in flight.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::SendArgs;
use crate::mllp::{self, Decoded, Decoder, FrameError, CARRIAGE_RETURN, START_BLOCK};
use crate::tls::{self, ClientStream};

/// Exit status when every message was accepted.
pub const EXIT_ACCEPTED: u8 = 0;
/// Exit status when any message was not accepted or got no answer.
pub const EXIT_NOT_ACCEPTED: u8 = 1;
/// Exit status for usage and IO errors.
pub const EXIT_USAGE: u8 = 2;

/// Largest ACK frame read: ACKs are a few hundred bytes, and the bound keeps a server that
/// answers with garbage from growing the read buffer without limit.
const ACK_FRAME_BYTES_MAX: usize = crate::limits::FRAME_BYTES_MAX_DEFAULT;

/// Bytes read from the socket per call.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why `send` could not start.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// An input file (or stdin) could not be read.
    #[error("cannot read {input}: {error}")]
    Read {
        /// The file name, or `stdin`.
        input: String,
        /// The IO error.
        error: io::Error,
    },
    /// An input holds something that is not a message.
    #[error("{input}: {reason}")]
    Input {
        /// The file name, or `stdin`.
        input: String,
        /// What is wrong.
        reason: SplitError,
    },
    /// No input held a message.
    #[error("no messages in the input")]
    NoMessages,
    /// HOST:PORT is malformed or does not resolve.
    #[error("cannot resolve '{address}': {error}")]
    Resolve {
        /// The address given.
        address: String,
        /// The resolver's error.
        error: io::Error,
    },
    /// No address of HOST:PORT accepted a connection.
    #[error("cannot connect to '{address}': {error}")]
    Connect {
        /// The address given.
        address: String,
        /// The last connection error.
        error: io::Error,
    },
}

/// Why an input could not be split into messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A segment came before the first MSH segment.
    #[error("segment {segment} comes before the first MSH segment")]
    TextBeforeMsh {
        /// 1-based index of the offending segment (line) in the input.
        segment: usize,
    },
    /// MLLP-framed input ends inside a frame.
    #[error("MLLP-framed input ends inside a frame")]
    UnterminatedFrame,
    /// An MLLP frame in the input is larger than any server accepts.
    #[error("MLLP frame too large: {0}")]
    FrameTooLarge(FrameError),
}

/// Runs `mllpd send` and returns its exit status.
pub fn run(args: &SendArgs) -> ExitCode {
    let messages = match read_inputs(&args.files) {
        Ok(messages) => messages,
        Err(error) => {
            eprintln!("mllpd send: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let stream = match connect(&args.address, args.connect_timeout) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("mllpd send: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let stream = match secure(args, stream) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("mllpd send: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut stdout = io::stdout().lock();
    match exchange(stream, &messages, args.timeout, &mut stdout) {
        Ok(true) => ExitCode::from(EXIT_ACCEPTED),
        Ok(false) => ExitCode::from(EXIT_NOT_ACCEPTED),
        Err(error) => {
            eprintln!("mllpd send: cannot write the report: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Reads every input (`-` or none: stdin) and splits each into messages, in order.
pub fn read_inputs(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, SendError> {
    let stdin_only = [PathBuf::from("-")];
    let files = if files.is_empty() {
        &stdin_only[..]
    } else {
        files
    };
    let mut messages = Vec::new();
    for file in files {
        let (input, bytes) = read_input(file)?;
        let found = split_messages(&bytes).map_err(|reason| SendError::Input { input, reason })?;
        messages.extend(found);
    }
    if messages.is_empty() {
        return Err(SendError::NoMessages);
    }
    Ok(messages)
}

/// The name and bytes of one input.
fn read_input(file: &Path) -> Result<(String, Vec<u8>), SendError> {
    let mut bytes = Vec::new();
    let (input, result) = if file == Path::new("-") {
        (
            "stdin".to_owned(),
            io::stdin().lock().read_to_end(&mut bytes),
        )
    } else {
        let input = file.display().to_string();
        let result = std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes));
        (input, result)
    };
    match result {
        Ok(_) => Ok((input, bytes)),
        Err(error) => Err(SendError::Read { input, error }),
    }
}

/// Splits the bytes of one input into messages whose segments end with CR. Input whose first
/// non-blank byte is a start block is read as MLLP frames, one message per frame.
pub fn split_messages(bytes: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace() && **b != 0);
    if first == Some(&START_BLOCK) {
        let frames = split_frames(bytes)?;
        return Ok(frames.iter().map(|f| normalise_line_ends(f)).collect());
    }
    let text = normalise_line_ends(bytes);
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for (index, segment) in text.split(|b| *b == CARRIAGE_RETURN).enumerate() {
        if segment.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // blank lines between messages
        }
        if segment.starts_with(b"MSH") {
            messages.push(Vec::new());
        }
        let Some(message) = messages.last_mut() else {
            return Err(SplitError::TextBeforeMsh { segment: index + 1 });
        };
        message.extend_from_slice(segment);
        message.push(CARRIAGE_RETURN);
    }
    Ok(messages)
}

/// The payloads of the MLLP frames in `bytes`.
fn split_frames(bytes: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut decoder = Decoder::new(crate::limits::FRAME_BYTES_MAX_MAX);
    let mut frames = Vec::new();
    let mut rest = bytes;
    loop {
        match decoder.decode(rest) {
            Decoded::Frame { payload, consumed } => {
                frames.push(rest[payload].to_vec());
                rest = &rest[consumed..];
            }
            Decoded::Incomplete { .. } if decoder.in_frame() => {
                return Err(SplitError::UnterminatedFrame);
            }
            Decoded::Incomplete { .. } => return Ok(frames),
            Decoded::Error { error, .. } => return Err(SplitError::FrameTooLarge(error)),
        }
    }
}

/// Replaces CRLF and lone LF with CR, the HL7 segment terminator.
fn normalise_line_ends(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut previous = 0u8;
    for &b in bytes {
        if b == b'\n' {
            if previous != CARRIAGE_RETURN {
                out.push(CARRIAGE_RETURN);
            }
        } else {
            out.push(b);
        }
        previous = b;
    }
    out
}

/// The fields of the first segment of `message` named `id`, split on the field separator that
/// MSH-1 declares (HL7 v2 chapter 2: MSH-1 is the byte after `MSH`). Index 0 is the segment id.
fn segment_fields<'a>(message: &'a [u8], id: &[u8]) -> Option<Vec<&'a [u8]>> {
    let mut segments = message.split(|b| *b == CARRIAGE_RETURN || *b == b'\n');
    let msh = segments
        .clone()
        .map(|s| s.trim_ascii_start())
        .find(|s| s.starts_with(b"MSH"))?;
    let separator = *msh.get(3)?;
    let segment = segments.find(|s| s.starts_with(id) && s.get(id.len()) == Some(&separator))?;
    Some(segment.split(|b| *b == separator).collect())
}

/// MSH-10, the message control id; empty when absent. Because MSH-1 is the separator itself,
/// MSH-n is field n-1 of the split segment.
pub fn control_id(message: &[u8]) -> &[u8] {
    let fields = segment_fields(message, b"MSH").unwrap_or_default();
    fields.get(9).copied().unwrap_or_default()
}

/// MSH-15, the accept acknowledgment type (AL, NE, ER, SU); empty when absent.
pub fn accept_ack_type(message: &[u8]) -> &[u8] {
    let fields = segment_fields(message, b"MSH").unwrap_or_default();
    fields.get(14).copied().unwrap_or_default()
}

/// What an ACK says: MSA-1, MSA-2, MSA-3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckSummary<'a> {
    /// MSA-1, acknowledgment code (AA, AE, AR, CA, CE, CR).
    pub code: &'a [u8],
    /// MSA-2, the control id of the message acknowledged.
    pub control_id: &'a [u8],
    /// MSA-3, text message; empty when absent.
    pub text: &'a [u8],
}

impl AckSummary<'_> {
    /// Whether the code accepts the message: AA (original mode) or CA (enhanced mode).
    pub fn is_accept(&self) -> bool {
        is_accept_code(self.code)
    }
}

/// Whether an acknowledgment code accepts the message: AA or CA.
fn is_accept_code(code: &[u8]) -> bool {
    code == b"AA" || code == b"CA"
}

/// Reads MSA-1..3 from an ACK payload; `None` when it has no MSH or MSA segment.
pub fn read_ack(payload: &[u8]) -> Option<AckSummary<'_>> {
    let fields = segment_fields(payload, b"MSA")?;
    let field = |n: usize| fields.get(n).copied().unwrap_or_default();
    Some(AckSummary {
        code: field(1),
        control_id: field(2),
        text: field(3),
    })
}

/// The stream `send` speaks on: TLS when `--tls` or `--tls-ca` asks for it (the handshake done
/// within `--connect-timeout`), else the plaintext `tcp`.
fn secure(args: &SendArgs, tcp: TcpStream) -> Result<ClientStream, String> {
    if !args.tls && args.tls_ca.is_none() {
        return Ok(ClientStream::Plain(tcp));
    }
    let options = tls::ClientOptions {
        ca_file: args.tls_ca.clone(),
        cert_file: args.tls_cert.clone(),
        key_file: args.tls_key.clone(),
        server_name: args.tls_server_name.clone(),
    };
    let client = tls::ClientTls::new(&options, &args.address).map_err(|e| format!("TLS: {e}"))?;
    client
        .connect(tcp, args.connect_timeout)
        .map_err(|e| format!("TLS handshake with '{}' failed: {e}", args.address))
}

/// Resolves `address` and connects to the first address that answers.
pub fn connect(address: &str, timeout: Duration) -> Result<TcpStream, SendError> {
    let resolve_error = |error| SendError::Resolve {
        address: address.to_owned(),
        error,
    };
    let addresses: Vec<SocketAddr> = address.to_socket_addrs().map_err(resolve_error)?.collect();
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for candidate in addresses {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => {
                // Each message is one write; Nagle would only delay it.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last_error = error,
        }
    }
    Err(SendError::Connect {
        address: address.to_owned(),
        error: last_error,
    })
}

/// The answer to one message.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The matching ACK's code and MSA-3 text.
    Ack {
        /// MSA-1.
        code: Vec<u8>,
        /// MSA-3.
        text: Vec<u8>,
    },
    /// No matching ACK within the timeout; the connection is still usable.
    Timeout,
    /// MSH-15 is NE: the receiver sends no accept ACK, so none was awaited.
    NotRequested,
    /// The connection ended or failed; nothing more can be sent.
    Broken(String),
}

/// Sends `messages` in order on `stream`, one line per message to `out`. Returns whether every
/// message was accepted; an error only when `out` cannot be written.
pub fn exchange(
    stream: ClientStream,
    messages: &[Vec<u8>],
    timeout: Duration,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let mut connection = Connection::new(stream, timeout);
    let mut all_accepted = true;
    let mut broken: Option<String> = None;
    for message in messages {
        let id = String::from_utf8_lossy(control_id(message)).into_owned();
        let accept_ack_type = accept_ack_type(message);
        let answer = match &broken {
            Some(reason) => Answer::Broken(format!("not sent: {reason}")),
            None => connection.send(message, control_id(message), accept_ack_type),
        };
        if let Answer::Broken(reason) = &answer {
            broken.get_or_insert_with(|| reason.clone());
        }
        let (accepted, line) = report(&answer, accept_ack_type, timeout);
        all_accepted &= accepted;
        writeln!(out, "{}", format!("{id} {line}").trim_end())?;
        out.flush()?;
    }
    connection.stream.close();
    Ok(all_accepted)
}

/// Whether `answer` counts as accepted, and the report line after the control id. Under MSH-15
/// ER (HL7 v2 chapter 2, table 0155: accept ACK only on error) silence means accepted.
fn report(answer: &Answer, accept_ack_type: &[u8], timeout: Duration) -> (bool, String) {
    match answer {
        Answer::Ack { code, text } => {
            let accepted = is_accept_code(code);
            let line = format!(
                "{} {}",
                String::from_utf8_lossy(code),
                String::from_utf8_lossy(text)
            );
            (accepted, line)
        }
        Answer::NotRequested => (true, "NONE no ACK requested (MSH-15 NE)".to_owned()),
        Answer::Timeout => {
            let waited = humantime::format_duration(timeout);
            if accept_ack_type == b"ER" {
                (
                    true,
                    format!("NONE no ACK within {waited} (MSH-15 ER: no error reported)"),
                )
            } else {
                (false, format!("NONE no ACK within {waited}"))
            }
        }
        Answer::Broken(reason) => (false, format!("NONE {reason}")),
    }
}

/// One MLLP connection of `send`: writes frames, reads ACK frames.
struct Connection {
    /// The socket (plaintext or TLS).
    stream: ClientStream,
    /// How long to wait for each ACK (and for each write).
    timeout: Duration,
    /// Bytes read and not yet consumed by the decoder.
    buffer: Vec<u8>,
    /// Finds ACK frames in `buffer`.
    decoder: Decoder,
    /// The frame being written.
    frame: Vec<u8>,
}

impl Connection {
    /// Wraps a connected socket.
    fn new(stream: ClientStream, timeout: Duration) -> Self {
        let decoder = Decoder::new(ACK_FRAME_BYTES_MAX);
        Connection {
            stream,
            timeout,
            buffer: Vec::new(),
            decoder,
            frame: Vec::new(),
        }
    }

    /// Sends one message and waits for the ACK whose MSA-2 equals `id`, unless its
    /// accept acknowledgment type (MSH-15) is NE.
    fn send(&mut self, message: &[u8], id: &[u8], accept_ack_type: &[u8]) -> Answer {
        self.frame.clear();
        mllp::encode(message, &mut self.frame);
        let written = self
            .stream
            .tcp()
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| self.stream.write_all(&self.frame))
            .and_then(|()| self.stream.flush());
        if let Err(error) = written {
            return Answer::Broken(format!("send failed: {error}"));
        }
        if accept_ack_type == b"NE" {
            return Answer::NotRequested;
        }
        self.wait_for(id, Instant::now() + self.timeout)
    }

    /// Reads ACK frames until one acknowledges `id` or `deadline` passes.
    fn wait_for(&mut self, id: &[u8], deadline: Instant) -> Answer {
        loop {
            match self.next_frame() {
                Ok(Some(payload)) => {
                    if let Some(answer) = match_ack(&payload, id) {
                        return answer;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => return Answer::Broken(format!("bad ACK frame: {error}")),
            }
            let now = Instant::now();
            if now >= deadline {
                return Answer::Timeout;
            }
            if let Err(answer) = self.fill(deadline - now) {
                return answer;
            }
        }
    }

    /// Reads once from the socket into the buffer, waiting at most `wait`.
    fn fill(&mut self, wait: Duration) -> Result<(), Answer> {
        if let Err(error) = self.stream.tcp().set_read_timeout(Some(wait)) {
            return Err(Answer::Broken(format!("socket error: {error}")));
        }
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Answer::Broken("connection closed by the server".to_owned())),
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(Answer::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Answer::Broken(format!("receive failed: {e}"))),
        }
    }

    /// The next complete frame's payload in the buffer, if any.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let decoded = self.decoder.decode(&self.buffer);
        let consumed = decoded.consumed();
        let result = match decoded {
            Decoded::Frame { payload, .. } => Ok(Some(self.buffer[payload].to_vec())),
            Decoded::Incomplete { .. } => Ok(None),
            Decoded::Error { error, .. } => Err(error),
        };
        self.buffer.drain(..consumed);
        result
    }
}

/// The answer `payload` gives to the message `id`, or `None` (reported on stderr) when it
/// acknowledges something else.
fn match_ack(payload: &[u8], id: &[u8]) -> Option<Answer> {
    let Some(ack) = read_ack(payload) else {
        eprintln!("mllpd send: ignoring a frame without MSH and MSA segments");
        return None;
    };
    if ack.control_id != id {
        eprintln!(
            "mllpd send: ignoring an ACK for control id '{}' while waiting for '{}'",
            String::from_utf8_lossy(ack.control_id),
            String::from_utf8_lossy(id)
        );
        return None;
    }
    Some(Answer::Ack {
        code: ack.code.to_vec(),
        text: ack.text.to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|MSG1|P|2.5\rPID|1||123\r";

    #[test]
    fn lf_crlf_and_cr_files_split_into_the_same_messages() {
        let cr = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ONE|P|2.5\rPID|1\rMSH|^~\\&|A|B|C|D|1||ADT^A01|TWO|P|2.5\rPID|2\r";
        let lf: Vec<u8> = cr
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect();
        let crlf: Vec<u8> = cr
            .iter()
            .flat_map(|&b| {
                if b == b'\r' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect();
        let expected = vec![
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|ONE|P|2.5\rPID|1\r".to_vec(),
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|TWO|P|2.5\rPID|2\r".to_vec(),
        ];
        assert_eq!(split_messages(cr).unwrap(), expected);
        assert_eq!(split_messages(&lf).unwrap(), expected);
        assert_eq!(split_messages(&crlf).unwrap(), expected);
    }

    #[test]
    fn blank_lines_and_a_bom_are_skipped_text_before_msh_is_an_error() {
        let input = b"\xEF\xBB\xBF\n\nMSH|^~\\&|A\nPID|1\n\n\n";
        assert_eq!(
            split_messages(input).unwrap(),
            vec![b"MSH|^~\\&|A\rPID|1\r".to_vec()]
        );
        assert_eq!(
            split_messages(b"\nPID|1\nMSH|^~\\&|A\n"),
            Err(SplitError::TextBeforeMsh { segment: 2 })
        );
        assert_eq!(split_messages(b"\n \r\n").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn control_id_is_msh_10_with_any_field_separator() {
        assert_eq!(control_id(ADT), b"MSG1");
        assert_eq!(
            control_id(b"MSH#^~\\&#A#B#C#D#1##ADT^A01#X9#P#2.5\r"),
            b"X9"
        );
        assert_eq!(control_id(b"MSH|^~\\&|A\r"), b"");
        assert_eq!(control_id(b"garbage"), b"");
    }

    #[test]
    fn accept_ack_type_is_msh_15() {
        assert_eq!(
            accept_ack_type(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5|||NE|AL\r"),
            b"NE"
        );
        assert_eq!(accept_ack_type(ADT), b"");
    }

    #[test]
    fn report_lines_and_verdicts() {
        let second = Duration::from_secs(1);
        let ack = |code: &[u8], text: &[u8]| Answer::Ack {
            code: code.to_vec(),
            text: text.to_vec(),
        };
        assert_eq!(
            report(&ack(b"AA", b""), b"", second),
            (true, "AA ".to_owned())
        );
        assert_eq!(
            report(&ack(b"CE", b"full"), b"", second),
            (false, "CE full".to_owned())
        );
        assert_eq!(
            report(&Answer::Timeout, b"AL", second),
            (false, "NONE no ACK within 1s".to_owned())
        );
        assert!(report(&Answer::Timeout, b"ER", second).0);
        assert!(report(&Answer::NotRequested, b"NE", second).0);
        assert!(!report(&Answer::Broken("x".to_owned()), b"ER", second).0);
    }

    #[test]
    fn read_ack_finds_msa_fields() {
        let ack = b"MSH|^~\\&|C|D|A|B|1||ACK^A01^ACK|9|P|2.5\rMSA|AE|MSG1|bad PID\rERR|||101\r";
        let summary = read_ack(ack).unwrap();
        assert_eq!(summary.code, b"AE");
        assert_eq!(summary.control_id, b"MSG1");
        assert_eq!(summary.text, b"bad PID");
        assert!(!summary.is_accept());
        let short = read_ack(b"MSH|^~\\&|C\nMSA|CA|7\n").unwrap();
        assert_eq!(
            (short.code, short.control_id, short.text),
            (&b"CA"[..], &b"7"[..], &b""[..])
        );
        assert!(short.is_accept());
        assert_eq!(read_ack(b"MSH|^~\\&|C\rPID|1\r"), None);
        assert_eq!(read_ack(b"MSA|AA|1\r"), None);
    }

    #[test]
    fn framed_input_yields_one_message_per_frame() {
        let input = b"\r\n\x0bMSH|^~\\&|A\nPID|1\x1c\r\n\x0bMSH|^~\\&|B\r\x1c\r";
        assert_eq!(
            split_messages(input).unwrap(),
            vec![b"MSH|^~\\&|A\rPID|1".to_vec(), b"MSH|^~\\&|B\r".to_vec()]
        );
        assert_eq!(
            split_messages(b"\x0bMSH|^~\\&|A\r"),
            Err(SplitError::UnterminatedFrame)
        );
    }

    #[test]
    fn normalise_line_ends_keeps_lone_cr() {
        assert_eq!(
            normalise_line_ends(b"a\r\nb\nc\rd\n\ne"),
            b"a\rb\rc\rd\r\re"
        );
    }
}
