//! The `http` connector: POSTs each message (`Content-Type: x-application/hl7-v2+er7`) with an
//! `Idempotency-Key: SHARD:SEQUENCE` header (the same on every retry and after a crash, so a
//! receiver that honours it stores a message once), plus configured headers whose values come
//! from environment variables (secrets stay out of CONFIG_FILE and out of logs). 2xx →
//! delivered; 4xx → rejected (dead letter); 5xx, 3xx (redirects are not followed: a POST of a
//! message must not be replayed elsewhere silently), a timeout or a connection error → retry.
//!
//! A blocking client (`ureq`, rustls for https) on the connector's own thread, keeping its
//! connections alive between messages.

use super::{Delivery, Destination, Outcome};
use crate::limits::{CONNECTOR_CONNECT_TIMEOUT, CONNECTOR_RESPONSE_TIMEOUT};

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
    pub fn new(url: String, headers: Vec<(String, String)>) -> HttpDestination {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECTOR_CONNECT_TIMEOUT)
            .timeout(CONNECTOR_RESPONSE_TIMEOUT)
            .redirects(0)
            .build();
        HttpDestination {
            url,
            headers,
            agent,
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
                &format!("{}:{}", delivery.shard, delivery.seq),
            );
        for (name, value) in &self.headers {
            request = request.set(name, value);
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
