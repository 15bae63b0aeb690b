//! The `http` connector: POSTs each message (`Content-Type: x-application/hl7-v2+er7`) with an
//! `Idempotency-Key: INSTANCE:SHARD:SEQUENCE` header (the same on every retry and after a crash,
//! so a receiver that honours it stores a message once; the instance id of this DATA_DIR keeps
//! two mllpd instances, whose sequence numbers repeat, from colliding), plus configured headers whose values come
//! from environment variables (secrets stay out of CONFIG_FILE and out of logs). 2xx →
//! delivered; 4xx → rejected (dead letter); 5xx, 3xx (redirects are not followed: a POST of a
//! message must not be replayed elsewhere silently), a timeout or a connection error → retry.
//!
//! A message that came over mutual TLS also carries its client's verified identity, from the
//! journal record: `X-MLLP-Client-CN` (the certificate's subject CN) and `X-MLLP-Client-SANs`
//! (its subject alternative names, comma-separated), each only when there is one. Bytes a
//! header value cannot hold (controls, non-ASCII) and `%` (and `,` inside a SAN) are
//! percent-encoded.
//!
//! A blocking client (`ureq`, rustls for https) on the connector's own thread, keeping its
//! connections alive between messages.

use super::{Delivery, Destination, Outcome};
use crate::limits::{CONNECTOR_CONNECT_TIMEOUT, CONNECTOR_RESPONSE_TIMEOUT};

/// The header carrying the verified TLS client certificate's subject CN.
pub const CLIENT_CN_HEADER: &str = "X-MLLP-Client-CN";

/// The header carrying its subject alternative names, comma-separated.
pub const CLIENT_SANS_HEADER: &str = "X-MLLP-Client-SANs";

/// The media type of an HL7 v2 message in ER7 (pipe) encoding.
pub const CONTENT_TYPE: &str = "x-application/hl7-v2+er7";

/// Delivers by HTTP POST.
pub struct HttpDestination {
    /// The URL posted to.
    url: String,
    /// Extra headers (name, value), values already taken from the environment.
    headers: Vec<(String, String)>,
    /// The client (connection pool).
    agent: ureq::Agent,
    /// This DATA_DIR's instance id, the first part of the Idempotency-Key.
    instance: String,
}

impl std::fmt::Debug for HttpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are secrets: names only.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpDestination")
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
    }
}

impl HttpDestination {
    /// A destination posting to `url` with `headers` (name, value).
    pub fn new(url: String, headers: Vec<(String, String)>, instance: String) -> HttpDestination {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECTOR_CONNECT_TIMEOUT)
            .timeout(CONNECTOR_RESPONSE_TIMEOUT)
            .redirects(0)
            .build();
        HttpDestination {
            url,
            headers,
            agent,
            instance,
        }
    }
}

impl Destination for HttpDestination {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", CONTENT_TYPE)
            .set(
                "Idempotency-Key",
                &format!("{}:{}:{}", self.instance, delivery.shard, delivery.seq),
            );
        for (name, value) in &self.headers {
            request = request.set(name, value);
        }
        if let Some(client) = delivery.client {
            if let Some(cn) = client.cn() {
                request = request.set(CLIENT_CN_HEADER, &header_text(cn, false));
            }
            let sans: Vec<String> = client.sans().map(|s| header_text(s, true)).collect();
            if !sans.is_empty() {
                request = request.set(CLIENT_SANS_HEADER, &sans.join(","));
            }
        }
        match request.send_bytes(delivery.payload) {
            Ok(response) if (200..300).contains(&response.status()) => Outcome::Delivered,
            Ok(response) => Outcome::Failed(format!(
                "downstream answered HTTP {} (redirects are not followed)",
                response.status()
            )),
            Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                Outcome::Rejected(format!("downstream answered HTTP {code}"))
            }
            Err(ureq::Error::Status(code, _)) => {
                Outcome::Failed(format!("downstream answered HTTP {code}"))
            }
            Err(ureq::Error::Transport(transport)) => {
                Outcome::Failed(format!("cannot POST to {}: {transport}", self.url))
            }
        }
    }
}

/// `text` as a header value: printable ASCII kept, every other byte, `%` (and `,` when `list`)
/// percent-encoded, so a certificate's names can never break the request.
fn header_text(text: &str, list: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' && !(list && b == b',') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::header_text;

    #[test]
    fn names_become_safe_header_values() {
        assert_eq!(header_text("lab-system", false), "lab-system");
        assert_eq!(header_text("a,b%\r\né", false), "a,b%25%0D%0A%C3%A9");
        assert_eq!(header_text("a,b", true), "a%2Cb");
    }
}
