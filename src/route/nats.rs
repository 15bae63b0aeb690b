//! The `nats` connector: one JetStream publish per message into a stream (created when absent,
//! with `replicas`), on a subject made from a template over the message's header
//! (`hl7.{msh.sending_fac}.{msh.msg_type}`, each value sanitized into one valid subject token).
//!
//! A message counts as delivered only once JetStream acknowledged it (stored, and replicated to
//! a quorum on a replicated stream). Each publish carries `Nats-Msg-Id: INSTANCE:SHARD:SEQUENCE`:
//! the same on every retry and after a crash, so the stream's duplicate window drops a
//! re-send; `INSTANCE` is this DATA_DIR's id ([`super::instance`]), so several mllpd instances
//! publishing into one stream never take each other's messages for duplicates.
//!
//! Failures: no server reachable, no ack in time, the stream missing and not creatable
//! (JetStream disabled, no permission) → failed (retried; the reason says which). The stream
//! refusing the message itself (a 400 from JetStream, e.g. larger than its `max_msg_size`), or
//! a message larger than the server's `max_payload` → rejected (dead letter).
//!
//! async-nats on a current-thread tokio runtime owned by the connector's own delivery thread:
//! nothing here runs on a shard.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_nats::jetstream;

use super::{Delivery, Destination, Outcome};
use crate::hl7::Message;
use crate::limits::{
    CONNECTOR_CONNECT_TIMEOUT, CONNECTOR_RESPONSE_TIMEOUT, NATS_ACK_TIMEOUT, NATS_DUPLICATE_WINDOW,
    NATS_SUBJECT_TOKEN_BYTES_MAX,
};

/// Keys a `nats` connector takes besides name, type, url and filter.
pub const KEYS: &[&str] = &["stream", "replicas", "subject"];

/// The stream written when the connector names none.
pub const STREAM_DEFAULT: &str = "HL7";

/// The subject template when the connector gives none.
pub const SUBJECT_DEFAULT: &str = "hl7.{msh.sending_fac}.{msh.msg_type}";

/// Most replicas a JetStream stream can have.
const REPLICAS_MAX: usize = 5;

/// The header fields a subject template may use: name and the HL7 path read (the same names
/// and paths as the `msh.*` variables of rules and filters).
const FIELDS: &[(&str, &str)] = &[
    ("msh.msg_type", "MSH-9.1"),
    ("msh.trigger", "MSH-9.2"),
    ("msh.structure", "MSH-9.3"),
    ("msh.sending_app", "MSH-3.1"),
    ("msh.sending_fac", "MSH-4.1"),
    ("msh.receiving_app", "MSH-5.1"),
    ("msh.receiving_fac", "MSH-6.1"),
    ("msh.control_id", "MSH-10"),
    ("msh.processing_id", "MSH-11.1"),
    ("msh.version", "MSH-12.1"),
];

/// One piece of a subject template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Written as is (valid subject characters, may hold the `.` between tokens).
    Text(String),
    /// A header field's value, sanitized: (name, HL7 path).
    Field(&'static str, &'static str),
}

/// A checked subject template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate {
    /// Its pieces in order.
    pieces: Vec<Piece>,
}

impl std::fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => f.write_str(text)?,
                Piece::Field(name, _) => write!(f, "{{{name}}}")?,
            }
        }
        Ok(())
    }
}

impl SubjectTemplate {
    /// Parses `template`: tokens separated by `.`, none empty, no wildcard or whitespace, fields
    /// as `{msh.NAME}`.
    pub fn parse(template: &str) -> Result<SubjectTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let (text, after) = match rest.find('{') {
                Some(open) => (&rest[..open], Some(&rest[open + 1..])),
                None => (rest, None),
            };
            if text.contains(['}', '*', '>']) || text.contains(char::is_whitespace) {
                return Err(format!(
                    "{template:?}: `{text}`: no wildcards, braces or spaces outside a field"
                ));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_owned()));
            }
            let Some(after) = after else { break };
            let close = after
                .find('}')
                .ok_or_else(|| format!("{template:?}: a `{{` without its `}}`"))?;
            let wanted = &after[..close];
            let &(name, path) = FIELDS.iter().find(|(n, _)| *n == wanted).ok_or_else(|| {
                let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                format!(
                    "{template:?}: unknown field `{wanted}` ({})",
                    known.join(", ")
                )
            })?;
            pieces.push(Piece::Field(name, path));
            rest = &after[close + 1..];
        }
        let parsed = SubjectTemplate { pieces };
        if parsed
            .tokens()
            .iter()
            .any(|(text, field)| text.is_empty() && !field)
        {
            return Err(format!(
                "{template:?}: an empty token (`..`, or a leading or trailing `.`)"
            ));
        }
        Ok(parsed)
    }

    /// The template's tokens: the literal text of each and whether it holds a field.
    fn tokens(&self) -> Vec<(String, bool)> {
        let mut tokens = vec![(String::new(), false)];
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => {
                    for (i, part) in text.split('.').enumerate() {
                        if i > 0 {
                            tokens.push((String::new(), false));
                        }
                        if let Some(last) = tokens.last_mut() {
                            last.0.push_str(part);
                        }
                    }
                }
                Piece::Field(..) => {
                    if let Some(last) = tokens.last_mut() {
                        last.1 = true;
                    }
                }
            }
        }
        tokens
    }

    /// The subjects the stream must take: each token holding a field becomes `*`.
    pub fn filter(&self) -> String {
        self.tokens()
            .into_iter()
            .map(|(text, field)| if field { "*".to_owned() } else { text })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Writes the subject of `message` (`None`: its header cannot be read; every field is then
    /// empty) into `out`.
    pub fn render(&self, message: Option<&Message<'_>>, out: &mut String) {
        out.clear();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(_, path) => {
                    let value = message.and_then(|m| m.get_str(path)).unwrap_or_default();
                    sanitize(value, out);
                }
            }
        }
    }
}

/// Appends `value` as (part of) one subject token: ASCII letters, digits, `-` and `_` are kept,
/// every other byte (`.` and `*` and `>` which would change the subject's shape, spaces, control
/// characters, non-ASCII) becomes `_`; an empty value becomes `_` (a token cannot be empty); at
/// most [`NATS_SUBJECT_TOKEN_BYTES_MAX`] bytes are kept.
pub fn sanitize(value: &[u8], out: &mut String) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    for &byte in value.iter().take(NATS_SUBJECT_TOKEN_BYTES_MAX) {
        out.push(
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                char::from(byte)
            } else {
                '_'
            },
        );
    }
}

/// A validated `nats` connector.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The servers (`nats://host:port`, possibly with credentials: never logged).
    pub urls: Vec<String>,
    /// The stream's name.
    pub stream: String,
    /// Its replicas when it is created.
    pub replicas: usize,
    /// The subject of each message.
    pub subject: SubjectTemplate,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<String> = self.urls.iter().map(|u| redacted(u)).collect();
        f.debug_struct("Nats")
            .field("servers", &servers)
            .field("stream", &self.stream)
            .field("replicas", &self.replicas)
            .field("subject", &self.subject.to_string())
            .finish()
    }
}

/// A URL with its `user:password@` part masked.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Checks a `nats` connector's keys; the error starts with the key at fault.
pub fn check(keys: &BTreeMap<String, String>) -> Result<NatsOptions, String> {
    let url = keys.get("url").map(String::as_str).unwrap_or_default();
    if url.is_empty() {
        return Err("url: required (nats://host:port, or a list of them)".to_owned());
    }
    let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
    for url in &urls {
        let host = url
            .strip_prefix("nats://")
            .map(|rest| rest.rsplit('@').next().unwrap_or_default())
            .unwrap_or_default();
        let valid = !host.is_empty() && url.parse::<async_nats::ServerAddr>().is_ok();
        if !valid {
            return Err(format!(
                "url: {:?}: expected nats://host:port",
                redacted(url)
            ));
        }
    }
    let stream = keys
        .get("stream")
        .map_or(STREAM_DEFAULT, String::as_str)
        .to_owned();
    let stream_ok = !stream.is_empty()
        && stream.len() <= 255
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !stream_ok {
        return Err(format!("stream: {stream:?}: letters, digits, - and _ only"));
    }
    let replicas = match keys.get("replicas") {
        None => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|r| (1..=REPLICAS_MAX).contains(r))
            .ok_or_else(|| format!("replicas: {text:?}: 1 to {REPLICAS_MAX}"))?,
    };
    let subject =
        SubjectTemplate::parse(keys.get("subject").map_or(SUBJECT_DEFAULT, String::as_str))
            .map_err(|e| format!("subject: {e}"))?;
    Ok(NatsOptions {
        urls,
        stream,
        replicas,
        subject,
    })
}

/// An open connection.
struct Session {
    /// The client (reconnects by itself, to any server of the list).
    client: async_nats::Client,
    /// JetStream on it.
    jetstream: jetstream::Context,
    /// The stream was found or created on this connection.
    stream_ready: bool,
}

/// Publishes into a JetStream stream.
pub struct NatsDestination {
    /// What it was configured with.
    options: NatsOptions,
    /// This DATA_DIR's id (first part of each `Nats-Msg-Id`).
    instance: String,
    /// Drives the client, only while an attempt runs (on the delivery thread).
    runtime: tokio::runtime::Runtime,
    /// The open connection, if any.
    session: Option<Session>,
    /// The current message's subject (reused).
    subject: String,
}

impl std::fmt::Debug for NatsDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDestination")
            .field("options", &self.options)
            .field("connected", &self.session.is_some())
            .finish()
    }
}

impl NatsDestination {
    /// A destination for `options`, identified by `instance`; connects at the first delivery.
    pub fn new(options: NatsOptions, instance: String) -> Result<NatsDestination, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
        Ok(NatsDestination {
            options,
            instance,
            runtime,
            session: None,
            subject: String::new(),
        })
    }
}

/// Connects to any server of the list.
async fn connect(options: &NatsOptions) -> Result<Session, Outcome> {
    let servers: Vec<String> = options.urls.iter().map(|u| redacted(u)).collect();
    let client = async_nats::ConnectOptions::new()
        .name("mllpd")
        .connection_timeout(CONNECTOR_CONNECT_TIMEOUT)
        .request_timeout(Some(NATS_ACK_TIMEOUT))
        .connect(options.urls.as_slice())
        .await
        .map_err(|e| {
            Outcome::Failed(format!(
                "cannot connect to NATS at {}: {e}",
                servers.join(",")
            ))
        })?;
    let mut context = jetstream::new(client.clone());
    context.set_timeout(NATS_ACK_TIMEOUT);
    tracing::info!(servers = %servers.join(","), "connected to NATS");
    Ok(Session {
        client,
        jetstream: context,
        stream_ready: false,
    })
}

/// Finds the stream, or creates it.
async fn ensure_stream(
    options: &NatsOptions,
    jetstream: &jetstream::Context,
) -> Result<(), Outcome> {
    let name = &options.stream;
    let missing = match jetstream.get_stream(name).await {
        Ok(_) => return Ok(()),
        Err(error) => match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                format!("stream {name} does not exist")
            }
            _ => {
                return Err(Outcome::Failed(format!(
                    "cannot look up stream {name} (JetStream not enabled on the server, or no \
                     permission?): {error}"
                )))
            }
        },
    };
    let config = jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![options.subject.filter()],
        num_replicas: options.replicas,
        duplicate_window: NATS_DUPLICATE_WINDOW,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    match jetstream.create_stream(config).await {
        Ok(_) => {
            tracing::info!(stream = %name, replicas = options.replicas,
                subjects = %options.subject.filter(), "JetStream stream created");
            Ok(())
        }
        Err(error) => Err(Outcome::Failed(format!(
            "{missing} and cannot be created (JetStream not enabled, no permission, or too few \
             servers for {} replicas?): {error}",
            options.replicas
        ))),
    }
}

/// What a failed publish means for the message.
fn classify(error: &jetstream::context::PublishError, subject: &str) -> Outcome {
    use jetstream::context::PublishErrorKind;
    let source =
        std::error::Error::source(error).and_then(|s| s.downcast_ref::<jetstream::Error>());
    match (error.kind(), source) {
        (PublishErrorKind::StreamNotFound, _) => {
            Outcome::Failed(format!("no stream takes subject {subject}"))
        }
        (_, Some(refusal)) if refusal.code() == 400 => {
            Outcome::Rejected(format!("the stream refused the message: {refusal}"))
        }
        _ => Outcome::Failed(format!("publish not acknowledged: {error}")),
    }
}

impl Destination for NatsDestination {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
        let message = Message::parse_header(delivery.payload).ok();
        self.options
            .subject
            .render(message.as_ref(), &mut self.subject);
        let mut id = String::with_capacity(40);
        let _ = write!(id, "{}:{}:{}", self.instance, delivery.shard, delivery.seq);
        let options = &self.options;
        let session = &mut self.session;
        let subject = self.subject.as_str();
        let attempt = async {
            if session.is_none() {
                *session = Some(connect(options).await?);
            }
            let Some(open) = session.as_mut() else {
                return Err(Outcome::Failed("not connected".to_owned()));
            };
            if !open.stream_ready {
                ensure_stream(options, &open.jetstream).await?;
                open.stream_ready = true;
            }
            let max_payload = open.client.server_info().max_payload;
            if max_payload > 0 && delivery.payload.len() > max_payload {
                return Err(Outcome::Rejected(format!(
                    "{} bytes: larger than the server's max_payload ({max_payload})",
                    delivery.payload.len()
                )));
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(delivery.payload.to_vec().into())
                .message_id(&id);
            let acked = match open
                .jetstream
                .send_publish(subject.to_owned(), publish)
                .await
            {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            acked.map_err(|e| {
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    // Deleted meanwhile? Look it up (and create it) again next time.
                    open.stream_ready = false;
                }
                classify(&e, subject)
            })
        };
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(CONNECTOR_RESPONSE_TIMEOUT, attempt).await });
        match result {
            Ok(Ok(ack)) => {
                tracing::trace!(stream = %ack.stream, sequence = ack.sequence,
                    duplicate = ack.duplicate, "JetStream ack");
                Outcome::Delivered
            }
            Ok(Err(outcome)) => outcome,
            Err(_elapsed) => Outcome::Failed(format!(
                "no JetStream ack within {CONNECTOR_RESPONSE_TIMEOUT:?}"
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(value: &[u8]) -> String {
        let mut out = String::new();
        sanitize(value, &mut out);
        out
    }

    #[test]
    fn values_become_one_valid_subject_token() {
        assert_eq!(token(b"NORTHGATE"), "NORTHGATE");
        assert_eq!(token(b"a.b"), "a_b");
        assert_eq!(token(b"*"), "_");
        assert_eq!(token(b">"), "_");
        assert_eq!(token(b"St Mary's Hosp"), "St_Mary_s_Hosp");
        assert_eq!(token(b""), "_");
        assert_eq!(token(b"\t\r\n"), "___");
        assert_eq!(token("Zürich".as_bytes()), "Z__rich");
        assert_eq!(token(b"lab-1_x"), "lab-1_x");
        assert_eq!(token(&[b'x'; 500]).len(), NATS_SUBJECT_TOKEN_BYTES_MAX);
    }

    #[test]
    fn a_template_renders_sanitized_fields_and_has_a_stream_filter() {
        let template = SubjectTemplate::parse("hl7.{msh.sending_fac}.{msh.msg_type}").unwrap();
        assert_eq!(template.filter(), "hl7.*.*");
        let payload = b"MSH|^~\\&|APP|St. Mary>*^X^ISO|R|F|20240101||ORU^R01|C1|P|2.5\rPID|1\r";
        let message = Message::parse_header(payload).unwrap();
        let mut out = String::new();
        template.render(Some(&message), &mut out);
        assert_eq!(out, "hl7.St__Mary__.ORU");
        template.render(None, &mut out);
        assert_eq!(out, "hl7._._");
        let template = SubjectTemplate::parse("in.x{msh.trigger}y.all").unwrap();
        assert_eq!(template.filter(), "in.*.all");
        template.render(Some(&message), &mut out);
        assert_eq!(out, "in.xR01y.all");
        assert_eq!(template.to_string(), "in.x{msh.trigger}y.all");
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a.*",
            "a.>",
            "a b",
            "a.{msh.nope}",
            "a.{msh.msg_type",
            "a}",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }
}
