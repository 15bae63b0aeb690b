//! The `postgres` connector: one row per message in a table (created when `create_table: true`)
//! holding the payload byte for byte (`bytea`) next to what operators query by: receive time,
//! shard, sequence, message type, trigger, control id, sending application and facility, peer.
//!
//! Idempotent: the primary key is (instance, shard, sequence) and the insert says `ON CONFLICT
//! DO NOTHING`, so a message sent again after a crash (its cursor not yet written) or after a
//! lost answer never adds a second row. `instance` is this DATA_DIR's id ([`super::instance`]):
//! two mllpd instances behind one load balancer, or a DATA_DIR started afresh, number their
//! messages from 1 too, and must not be taken for duplicates of each other.
//!
//! Errors are sorted by SQLSTATE class: a data error or a constraint the row breaks (classes
//! 22, 23, 54) is the message's fault → rejected (dead letter); wrong credentials (class 28), a
//! missing table or database, no privilege, the server gone or slow → failed (retried with
//! backoff; the reason says which). Reasons quote the server's message, never its DETAIL (which
//! can quote row values, i.e. patient data).
//!
//! tokio-postgres on a current-thread tokio runtime owned by the connector's own delivery
//! thread: nothing here runs on a shard.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, Statement};

use super::{Delivery, Destination, Outcome};
use crate::hl7::Message;
use crate::limits::{CONNECTOR_CONNECT_TIMEOUT, CONNECTOR_RESPONSE_TIMEOUT};

/// Keys a `postgres` connector takes besides name, type, url and filter.
pub const KEYS: &[&str] = &["table", "create_table", "password_env"];

/// The table written when the connector names none.
pub const TABLE_DEFAULT: &str = "hl7_messages";

/// Longest PostgreSQL identifier (NAMEDATALEN - 1).
const IDENTIFIER_BYTES_MAX: usize = 63;

/// A validated `postgres` connector.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The connection URL as written (it may hold a password: never logged, see `Debug`).
    pub url: String,
    /// The environment variable holding the password, if the URL has none.
    pub password_env: Option<String>,
    /// The table, `name` or `schema.name`, lowercased (as PostgreSQL folds unquoted names).
    pub table: String,
    /// Create the table (if absent) when connecting.
    pub create_table: bool,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("server", &redacted(&self.url))
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .finish()
    }
}

/// `user@host:port/dbname` of a URL: everything but the password.
pub fn redacted(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "(unparsable url)".to_owned();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "{}@{}/{}",
        config.get_user().unwrap_or("?"),
        hosts.join(","),
        config.get_dbname().unwrap_or("?")
    )
}

/// Checks a `postgres` connector's keys; the error starts with the key at fault.
pub fn check(keys: &BTreeMap<String, String>) -> Result<PostgresOptions, String> {
    let url = keys.get("url").map(String::as_str).unwrap_or_default();
    if url.is_empty() {
        return Err("url: required (postgres://user@host:port/database)".to_owned());
    }
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(format!(
            "url: {:?}: a `postgres` connector needs a postgres:// URL",
            redacted_text(url)
        ));
    }
    let config = url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| format!("url: {e}"))?;
    if config.get_hosts().is_empty() {
        return Err("url: names no host".to_owned());
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err("url: sslmode=require: TLS to PostgreSQL is not supported yet".to_owned());
    }
    let table = keys
        .get("table")
        .map_or(TABLE_DEFAULT, String::as_str)
        .to_ascii_lowercase();
    let parts: Vec<&str> = table.split('.').collect();
    let identifier = |part: &&str| {
        !part.is_empty()
            && part.len() <= IDENTIFIER_BYTES_MAX
            && !part.starts_with(|c: char| c.is_ascii_digit())
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if parts.len() > 2 || !parts.iter().all(identifier) {
        return Err(format!(
            "table: {table:?}: expected name or schema.name (letters, digits, _)"
        ));
    }
    let create_table = match keys.get("create_table").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("create_table: {other:?}: true or false")),
    };
    let password_env = keys.get("password_env").cloned();
    if let Some(variable) = &password_env {
        if std::env::var_os(variable).is_none() {
            return Err(format!(
                "password_env: environment variable {variable} is not set"
            ));
        }
    }
    Ok(PostgresOptions {
        url: url.to_owned(),
        password_env,
        table,
        create_table,
    })
}

/// A URL with its `user:password@` part masked, for refusals of unparsable URLs.
fn redacted_text(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The table's definition (`CREATE TABLE IF NOT EXISTS`).
fn create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n\
         \x20 instance text NOT NULL,\n\
         \x20 shard integer NOT NULL,\n\
         \x20 sequence bigint NOT NULL,\n\
         \x20 received_at timestamptz,\n\
         \x20 message_type text NOT NULL,\n\
         \x20 trigger_event text NOT NULL,\n\
         \x20 control_id text NOT NULL,\n\
         \x20 sending_application text NOT NULL,\n\
         \x20 sending_facility text NOT NULL,\n\
         \x20 peer inet,\n\
         \x20 payload bytea NOT NULL,\n\
         \x20 delivered_at timestamptz NOT NULL DEFAULT now(),\n\
         \x20 PRIMARY KEY (instance, shard, sequence))"
    )
}

/// The idempotent insert.
fn insert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (instance, shard, sequence, received_at, message_type, \
         trigger_event, control_id, sending_application, sending_facility, peer, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (instance, shard, sequence) DO NOTHING"
    )
}

/// An open connection and its prepared insert.
struct Session {
    /// The client (its connection task runs on the destination's runtime).
    client: Client,
    /// The insert, prepared once per connection.
    insert: Statement,
}

/// Delivers into a PostgreSQL table.
pub struct PostgresDestination {
    /// What it was configured with.
    options: PostgresOptions,
    /// The password from `password_env`, read when delivery starts.
    password: Option<String>,
    /// This DATA_DIR's id (first column of the key).
    instance: String,
    /// Drives the client, only while an attempt runs (on the delivery thread).
    runtime: tokio::runtime::Runtime,
    /// The open connection, if any.
    session: Option<Session>,
}

impl std::fmt::Debug for PostgresDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDestination")
            .field("options", &self.options)
            .field("connected", &self.session.is_some())
            .finish()
    }
}

/// The columns of one row, taken from the delivery and its header.
struct Row {
    /// Receive time (unknown for a replayed dead letter).
    received_at: Option<SystemTime>,
    /// MSH-9.1, MSH-9.2, MSH-10, MSH-3.1, MSH-4.1 as text.
    header: [String; 5],
}

impl Row {
    /// Reads the row's columns (empty when the header cannot be read: the payload is stored all
    /// the same).
    fn of(delivery: &Delivery<'_>) -> Row {
        let message = Message::parse_header(delivery.payload).ok();
        let field = |path: &str| {
            let bytes = message
                .as_ref()
                .and_then(|m| m.get_str(path))
                .unwrap_or_default();
            // text cannot hold NUL, and need not be UTF-8 in an ISO-8859 message: the exact
            // bytes are in `payload`.
            String::from_utf8_lossy(bytes).replace('\0', "")
        };
        Row {
            received_at: delivery
                .received_unix_micros
                .map(|us| SystemTime::UNIX_EPOCH + Duration::from_micros(us)),
            header: [
                field("MSH-9.1"),
                field("MSH-9.2"),
                field("MSH-10"),
                field("MSH-3.1"),
                field("MSH-4.1"),
            ],
        }
    }
}

impl PostgresDestination {
    /// A destination for `options`, keyed by `instance`; connects at the first delivery.
    /// `Err` when `password_env` is not set or the runtime cannot start.
    pub fn new(options: PostgresOptions, instance: String) -> Result<PostgresDestination, String> {
        let password = match &options.password_env {
            Some(variable) => Some(std::env::var(variable).map_err(|_| {
                format!("password_env: environment variable {variable} is not set")
            })?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the postgres client's runtime: {e}"))?;
        Ok(PostgresDestination {
            options,
            password,
            instance,
            runtime,
            session: None,
        })
    }
}

/// Connects, creates the table if asked, prepares the insert.
async fn connect(options: &PostgresOptions, password: Option<&str>) -> Result<Session, Outcome> {
    let server = redacted(&options.url);
    let mut config: tokio_postgres::Config = options
        .url
        .parse()
        .map_err(|e| Outcome::Failed(format!("url: {e}")))?;
    if let Some(password) = password {
        config.password(password);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECTOR_CONNECT_TIMEOUT);
    }
    config.application_name("mllpd");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| classify(&e, &format!("cannot connect to {server}")))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection ended");
        }
    });
    if options.create_table {
        client
            .batch_execute(&create_sql(&options.table))
            .await
            .map_err(|e| classify(&e, &format!("cannot create table {}", options.table)))
            .map_err(retry_only)?;
    }
    let insert = client
        .prepare(&insert_sql(&options.table))
        .await
        .map_err(|e| {
            classify(
                &e,
                &format!("cannot prepare the insert into {}", options.table),
            )
        })
        .map_err(retry_only)?;
    tracing::info!(server = %server, table = %options.table, "connected to PostgreSQL");
    Ok(Session { client, insert })
}

/// A failure to set up is never the message's fault: retried, whatever its class.
fn retry_only(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Rejected(reason) => Outcome::Failed(reason),
        other => other,
    }
}

/// What an error means for the message: see the module documentation.
fn classify(error: &tokio_postgres::Error, what: &str) -> Outcome {
    let Some(db) = error.as_db_error() else {
        // IO, a closed connection, a timeout, a protocol error: the server, not the message.
        return Outcome::Failed(format!("{what}: {error}"));
    };
    let code = db.code().code();
    let reason = format!("{what}: {} (SQLSTATE {code})", db.message());
    match &code[..2] {
        "22" | "23" | "54" => Outcome::Rejected(reason),
        "28" => Outcome::Failed(format!(
            "{reason}: PostgreSQL refused the credentials (check the url's user and password or \
             password_env)"
        )),
        _ => Outcome::Failed(reason),
    }
}

impl Destination for PostgresDestination {
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Outcome {
        let row = Row::of(delivery);
        let (Ok(shard), Ok(sequence)) =
            (i32::try_from(delivery.shard), i64::try_from(delivery.seq))
        else {
            return Outcome::Rejected("shard or sequence out of PostgreSQL's range".to_owned());
        };
        let options = &self.options;
        let password = self.password.as_deref();
        let session = &mut self.session;
        let instance = self.instance.as_str();
        let peer: Option<IpAddr> = delivery.peer;
        let attempt = async {
            if session.is_none() {
                *session = Some(connect(options, password).await?);
            }
            let Some(open) = session.as_ref() else {
                return Err(Outcome::Failed("not connected".to_owned()));
            };
            open.client
                .execute(
                    &open.insert,
                    &[
                        &instance,
                        &shard,
                        &sequence,
                        &row.received_at,
                        &row.header[0],
                        &row.header[1],
                        &row.header[2],
                        &row.header[3],
                        &row.header[4],
                        &peer,
                        &delivery.payload,
                    ],
                )
                .await
                .map_err(|e| classify(&e, &format!("cannot insert into {}", options.table)))
        };
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(CONNECTOR_RESPONSE_TIMEOUT, attempt).await });
        match result {
            Ok(Ok(_rows)) => Outcome::Delivered,
            Ok(Err(outcome)) => {
                if matches!(outcome, Outcome::Failed(_)) {
                    // The connection may be broken or out of step: start afresh.
                    self.session = None;
                }
                outcome
            }
            Err(_elapsed) => {
                self.session = None;
                Outcome::Failed(format!(
                    "PostgreSQL did not answer within {CONNECTOR_RESPONSE_TIMEOUT:?}"
                ))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_shown_without_its_password() {
        let url = "postgres://mllpd:s3cret@db.example:5433/hl7";
        assert_eq!(redacted(url), "mllpd@db.example:5433/hl7");
        assert_eq!(redacted_text(url), "postgres://***@db.example:5433/hl7");
    }

    #[test]
    fn the_insert_is_idempotent_on_the_key_of_the_table() {
        let create = create_sql("hl7");
        assert!(create.contains("PRIMARY KEY (instance, shard, sequence)"));
        assert!(insert_sql("hl7").ends_with("ON CONFLICT (instance, shard, sequence) DO NOTHING"));
    }
}
