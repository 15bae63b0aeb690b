//! The routing section of CONFIG_FILE: `connectors`, `retry` and `on_failure`, read from YAML
//! into typed specs and checked into [`RoutingOptions`]. Every refusal names the connector (by
//! its name, or its position when it has none) and the key.
//!
//! ```yaml
//! connectors:
//!   - name: lab                      # [A-Za-z0-9_-], unique; names the state directory
//!     type: mllp                     # mllp | http | file | postgres | nats
//!     url: mllp://lab.example:2575   # mllps://host:port: MLLP over TLS, with
//!     # tls_ca (required), tls_cert + tls_key (mTLS), tls_server_name (default: the host)
//!     filter: 'msh.msg_type == "ORU"' # CEL, as validation rules; absent: every message
//!     sync: true                     # ACK_AFTER=delivery waits for this one (default false)
//!     sync_timeout: 10s              # ... at most this long, then AE (default 10s)
//! retry: {initial_backoff: 1s, max_backoff: 60s, max_attempts: 10}
//! on_failure: dead_letter            # or block
//! ```
//!
//! `postgres` takes `table` (default `hl7_messages`), `create_table` (default false) and
//! `password_env`; `nats` takes a URL or a list of them, `stream` (default `HL7`), `replicas`
//! (1 to 5, default 1) and `subject` (default `hl7.{msh.sending_fac}.{msh.msg_type}`), checked
//! by [`super::postgres::check`] and [`super::nats::check`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use crate::limits;
use crate::rules::{Filter, RulesOptions};

/// The connector types, for refusals.
const TYPES: &str = "mllp, http, file, postgres or nats";

/// Keys every connector takes.
const COMMON_KEYS: &[&str] = &["name", "type", "url", "filter", "sync", "sync_timeout"];

/// Keys of an `mllp` connector besides the common ones: its TLS files and server name, only
/// with `mllps://`.
const MLLP_TLS_KEYS: &[&str] = &["tls_ca", "tls_cert", "tls_key", "tls_server_name"];

/// Longest connector name: it names a directory.
const NAME_BYTES_MAX: usize = 64;

/// One entry of `connectors:` as written: known keys only (checked per type in [`validate`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectorSpec {
    /// Every scalar key and its value, sorted by key.
    pub keys: BTreeMap<String, String>,
    /// `headers:` (http): header name → the environment variable holding its value.
    pub headers: Option<BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for ConnectorSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = serde_yaml_ng::Mapping::deserialize(deserializer)?;
        let mut keys = BTreeMap::new();
        let mut headers = None;
        for (key, value) in map {
            let key = key
                .as_str()
                .ok_or_else(|| D::Error::custom("a connector key is not a string"))?
                .to_owned();
            if key == "headers" {
                headers = Some(BTreeMap::<String, String>::deserialize(value).map_err(|e| {
                    D::Error::custom(format!(
                        "connector key `headers`: header name: ENV_VARIABLE ({e})"
                    ))
                })?);
                continue;
            }
            let text = match value {
                // `url:` of a `nats` connector may list a cluster's servers.
                serde_yaml_ng::Value::Sequence(items) if key == "url" => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| D::Error::custom("connector key `url`: a list of strings"))?
                    .join(","),
                serde_yaml_ng::Value::String(s) => s,
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                serde_yaml_ng::Value::Null => continue,
                _ => {
                    return Err(D::Error::custom(format!(
                        "connector key `{key}`: not a scalar"
                    )))
                }
            };
            keys.insert(key, text);
        }
        Ok(ConnectorSpec { keys, headers })
    }
}

/// `retry:` as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// First wait, e.g. `1s`.
    pub initial_backoff: Option<String>,
    /// Longest wait, e.g. `60s`.
    pub max_backoff: Option<String>,
    /// Attempts before `on_failure` applies.
    pub max_attempts: Option<u32>,
}

/// What happens to a message whose delivery failed for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stored as a dead letter; the connector goes on with the next message.
    #[default]
    DeadLetter,
    /// The connector (on that shard) stalls and keeps retrying at `max_backoff`, so nothing is
    /// ever delivered out of order or skipped.
    Block,
}

/// Exponential backoff with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryOptions {
    /// First wait.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Attempts before `on_failure` applies (at least 1).
    pub max_attempts: u32,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            initial_backoff: limits::RETRY_INITIAL_BACKOFF_DEFAULT,
            max_backoff: limits::RETRY_MAX_BACKOFF_DEFAULT,
            max_attempts: limits::RETRY_MAX_ATTEMPTS_DEFAULT,
        }
    }
}

/// Where a connector delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `mllp://host:port`: an MLLP peer that answers each message with an ACK;
    /// `mllps://host:port`: the same over TLS.
    Mllp {
        /// `host:port`, resolved at each connect.
        address: String,
        /// TLS (`mllps://`): the CA, client certificate and server name, as `mllpd send --tls`.
        tls: Option<crate::tls::ClientOptions>,
    },
    /// `file:///dir`: one file per message in `dir`.
    File {
        /// The directory (absolute).
        dir: PathBuf,
    },
    /// `http://…` or `https://…`: one POST per message.
    Http {
        /// The URL.
        url: String,
        /// Header name → environment variable holding its value (read when delivery starts;
        /// never logged).
        headers: Vec<(String, String)>,
    },
    /// `postgres://…`: one row per message.
    Postgres(super::postgres::PostgresOptions),
    /// `nats://…` (or a list): one JetStream publish per message.
    Nats(super::nats::NatsOptions),
}

/// One validated connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorOptions {
    /// Its unique name.
    pub name: String,
    /// Where it delivers.
    pub target: Target,
    /// The CEL filter (compiled again by the engine; it compiled here); `None`: every message.
    pub filter: Option<String>,
    /// `sync: true`: with ACK_AFTER=delivery the sender's ACK waits for this connector's
    /// confirmation, at most this long (`sync_timeout`); `None`: not waited for.
    pub sync: Option<Duration>,
}

/// The routing configuration the delivery engine takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingOptions {
    /// The connectors; empty: no delivery.
    pub connectors: Vec<ConnectorOptions>,
    /// Retry policy (all connectors).
    pub retry: RetryOptions,
    /// What a failed-for-good message becomes.
    pub on_failure: OnFailure,
}

/// Checks the routing section. The error names the connector and the key.
pub fn validate(
    connectors: &[ConnectorSpec],
    retry: Option<&RetrySpec>,
    on_failure: Option<OnFailure>,
    rules: &RulesOptions,
) -> Result<RoutingOptions, String> {
    if connectors.len() > limits::CONNECTORS_MAX {
        return Err(format!(
            "connectors: {} declared, at most {} allowed",
            connectors.len(),
            limits::CONNECTORS_MAX
        ));
    }
    let mut out = RoutingOptions {
        retry: retry_options(retry)?,
        on_failure: on_failure.unwrap_or_default(),
        connectors: Vec::with_capacity(connectors.len()),
    };
    for (index, spec) in connectors.iter().enumerate() {
        let connector = connector(index, spec, rules)?;
        if out.connectors.iter().any(|c| c.name == connector.name) {
            return Err(format!(
                "connector {:?}: name: declared twice (names must be unique)",
                connector.name
            ));
        }
        out.connectors.push(connector);
    }
    Ok(out)
}

/// Checks one connector (`index` names it while its name is unknown).
fn connector(
    index: usize,
    spec: &ConnectorSpec,
    rules: &RulesOptions,
) -> Result<ConnectorOptions, String> {
    let name = spec.keys.get("name").cloned().unwrap_or_default();
    let who = if name.is_empty() {
        format!("connector #{}", index + 1)
    } else {
        format!("connector {name:?}")
    };
    let valid_name = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(format!(
            "{who}: name: required, 1 to {NAME_BYTES_MAX} of A-Z a-z 0-9 - _"
        ));
    }
    let kind = spec
        .keys
        .get("type")
        .map(String::as_str)
        .unwrap_or_default();
    let extra: &[&str] = match kind {
        "mllp" => MLLP_TLS_KEYS,
        "file" | "http" => &[],
        "postgres" => super::postgres::KEYS,
        "nats" => super::nats::KEYS,
        "" => return Err(format!("{who}: type: required ({TYPES})")),
        other => return Err(format!("{who}: type: unknown type `{other}` ({TYPES})")),
    };
    if spec.headers.is_some() && kind != "http" {
        return Err(format!(
            "{who}: headers: unknown key for a `{kind}` connector"
        ));
    }
    if let Some(key) = spec
        .keys
        .keys()
        .find(|k| !COMMON_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        return Err(format!(
            "{who}: {key}: unknown key for a `{kind}` connector"
        ));
    }
    let url = spec.keys.get("url").map(String::as_str).unwrap_or_default();
    let mut target = match kind {
        "postgres" => super::postgres::check(&spec.keys).map(Target::Postgres),
        "nats" => super::nats::check(&spec.keys).map(Target::Nats),
        _ => target(kind, url).map_err(|e| format!("url: {e}")),
    }
    .map_err(|e| format!("{who}: {e}"))?;
    if let (Target::Http { headers, .. }, Some(given)) = (&mut target, &spec.headers) {
        *headers = http_headers(given).map_err(|e| format!("{who}: headers: {e}"))?;
    }
    if let Target::Mllp { address, tls } = &mut target {
        *tls = mllp_tls(spec, address, tls.is_some()).map_err(|e| format!("{who}: {e}"))?;
    }
    let filter = spec.keys.get("filter").cloned();
    if let Some(expression) = &filter {
        Filter::compile(&name, expression, rules)
            .map_err(|e| format!("{who}: filter: does not compile: {e}"))?;
    }
    let sync = sync(spec).map_err(|e| format!("{who}: {e}"))?;
    Ok(ConnectorOptions {
        name,
        target,
        filter,
        sync,
    })
}

/// `sync` and `sync_timeout`: the ACK_AFTER=delivery wait of a connector, if it is waited for.
fn sync(spec: &ConnectorSpec) -> Result<Option<Duration>, String> {
    let on = match spec.keys.get("sync").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("sync: {other:?} is not true or false")),
    };
    let timeout = match spec.keys.get("sync_timeout") {
        None => limits::SYNC_TIMEOUT_DEFAULT,
        Some(_) if !on => return Err("sync_timeout: only for a `sync: true` connector".into()),
        Some(text) => humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| !d.is_zero() && *d <= limits::SYNC_TIMEOUT_MAX)
            .ok_or_else(|| {
                format!(
                    "sync_timeout: {text:?} is not a duration between 1ms and {:?}",
                    limits::SYNC_TIMEOUT_MAX
                )
            })?,
    };
    Ok(on.then_some(timeout))
}

/// The target of a `kind` connector at `url`.
fn target(kind: &str, url: &str) -> Result<Target, String> {
    if url.is_empty() {
        return Err("required".to_owned());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL (scheme://…)"));
    };
    match (kind, scheme) {
        ("mllp", "mllp" | "mllps") => {
            let address = rest.trim_end_matches('/');
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| format!("{url:?}: needs a port (mllp://host:port)"))?;
            let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
            let host_ok = !host.is_empty() && !host.contains(['/', '@', '?', '#', ' ']);
            if !port_ok || !host_ok {
                return Err(format!("{url:?}: expected mllp://host:port"));
            }
            Ok(Target::Mllp {
                address: address.to_owned(),
                tls: (scheme == "mllps").then(crate::tls::ClientOptions::default),
            })
        }
        ("http", "http" | "https") => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if host.is_empty() || rest.contains(' ') {
                return Err(format!("{url:?}: expected http(s)://host[:port]/path"));
            }
            Ok(Target::Http {
                url: url.to_owned(),
                headers: Vec::new(),
            })
        }
        ("file", "file") => {
            if !rest.starts_with('/') || rest.contains(['?', '#']) {
                return Err(format!("{url:?}: expected file:///absolute/directory"));
            }
            Ok(Target::File {
                dir: PathBuf::from(rest),
            })
        }
        _ => Err(format!(
            "{url:?}: a `{kind}` connector needs a {kind}:// URL"
        )),
    }
}

/// The TLS options of an `mllp` connector to `address`: with `mllps://`, `tls_ca` is required,
/// `tls_cert` and `tls_key` go together, and the files are loaded here so a bad one is refused
/// at start (and by `check-config`), naming it; with `mllp://`, no `tls_*` key is allowed.
fn mllp_tls(
    spec: &ConnectorSpec,
    address: &str,
    mllps: bool,
) -> Result<Option<crate::tls::ClientOptions>, String> {
    let key = |name: &str| spec.keys.get(name).cloned();
    if !mllps {
        return match MLLP_TLS_KEYS.iter().find(|k| spec.keys.contains_key(**k)) {
            Some(k) => Err(format!("{k}: only with an mllps:// URL")),
            None => Ok(None),
        };
    }
    let options = crate::tls::ClientOptions {
        ca_file: key("tls_ca").map(PathBuf::from),
        cert_file: key("tls_cert").map(PathBuf::from),
        key_file: key("tls_key").map(PathBuf::from),
        server_name: key("tls_server_name"),
    };
    if options.ca_file.is_none() {
        return Err(
            "tls_ca: required with mllps:// (the CA the server's certificate chains to)".to_owned(),
        );
    }
    if options.cert_file.is_some() != options.key_file.is_some() {
        return Err("tls_cert and tls_key go together".to_owned());
    }
    crate::tls::ClientTls::new(&options, address).map_err(|e| format!("TLS: {e}"))?;
    Ok(Some(options))
}

/// Checks `headers:` (name → environment variable): names are HTTP tokens, the variables are
/// set (their values are read when delivery starts and never printed).
fn http_headers(given: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(given.len());
    for (name, variable) in given {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("{name:?} is not a header name"));
        }
        let reserved = ["content-type", "idempotency-key", "content-length", "host"];
        if reserved.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("{name}: set by mllpd, cannot be configured"));
        }
        if std::env::var_os(variable).is_none() {
            return Err(format!(
                "{name}: environment variable {variable} is not set"
            ));
        }
        out.push((name.clone(), variable.clone()));
    }
    Ok(out)
}

/// The retry policy from `retry:`.
fn retry_options(spec: Option<&RetrySpec>) -> Result<RetryOptions, String> {
    let mut out = RetryOptions::default();
    let Some(spec) = spec else {
        return Ok(out);
    };
    let duration = |key: &str, text: &str| {
        humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("retry: {key}: {text:?} is not a positive duration (e.g. 2s)"))
    };
    if let Some(text) = &spec.initial_backoff {
        out.initial_backoff = duration("initial_backoff", text)?;
    }
    if let Some(text) = &spec.max_backoff {
        out.max_backoff = duration("max_backoff", text)?;
    }
    if let Some(attempts) = spec.max_attempts {
        if attempts == 0 {
            return Err("retry: max_attempts: must be at least 1".to_owned());
        }
        out.max_attempts = attempts;
    }
    if out.max_backoff < out.initial_backoff {
        return Err("retry: max_backoff: shorter than initial_backoff".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RoutingOptions, String> {
        let specs: Vec<ConnectorSpec> = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        validate(&specs, None, None, &RulesOptions::default())
    }

    #[test]
    fn a_valid_section_is_typed() {
        let options = parse(
            "- {name: lab, type: mllp, url: 'mllp://127.0.0.1:2575', filter: 'msh.msg_type == \"ADT\"'}\n\
             - {name: archive, type: file, url: 'file:///var/tmp/x'}\n",
        )
        .unwrap();
        assert_eq!(options.connectors.len(), 2);
        assert_eq!(
            options.connectors[0].target,
            Target::Mllp {
                address: "127.0.0.1:2575".to_owned(),
                tls: None,
            }
        );
        assert_eq!(options.retry, RetryOptions::default());
        assert_eq!(options.on_failure, OnFailure::DeadLetter);
        assert_eq!(options.connectors[0].sync, None);
        let options =
            parse("- {name: a, type: file, url: 'file:///x', sync: true, sync_timeout: 2s}")
                .unwrap();
        assert_eq!(options.connectors[0].sync, Some(Duration::from_secs(2)));
        let options = parse("- {name: a, type: file, url: 'file:///x', sync: true}").unwrap();
        assert_eq!(
            options.connectors[0].sync,
            Some(limits::SYNC_TIMEOUT_DEFAULT)
        );
    }

    #[test]
    fn refusals_name_the_connector_and_the_key() {
        let cases = [
            ("- {name: a, type: mllp, url: 'mllp://h:1', urll: x}", "connector \"a\": urll: unknown key"),
            ("- {name: a, type: mllp, url: 'mllp://h'}", "connector \"a\": url:"),
            ("- {name: a, type: mllp, url: 'http://h:1'}", "connector \"a\": url:"),
            ("- {name: a, type: file, url: 'file://relative'}", "connector \"a\": url:"),
            ("- {name: a, type: mllp, url: 'mllp://h:99999'}", "connector \"a\": url:"),
            ("- {name: a, type: mllp, url: 'mllps://h:1'}", "connector \"a\": tls_ca: required"),
            ("- {name: a, type: mllp, url: 'mllp://h:1', tls_ca: /x}", "connector \"a\": tls_ca: only with an mllps:// URL"),
            ("- {name: a, type: mllp, url: 'mllps://h:1', tls_ca: /nonexistent/ca.pem}", "connector \"a\": TLS: /nonexistent/ca.pem"),
            ("- {name: a, type: mllp, url: 'mllps://h:1', tls_ca: /x, tls_key: /y}", "connector \"a\": tls_cert and tls_key go together"),
            ("- {name: a, type: http, url: 'http://h/x', tls_ca: /x}", "connector \"a\": tls_ca: unknown key"),
            ("- {name: a, type: smtp, url: 'x://y'}", "connector \"a\": type: unknown"),
            ("- {name: a, type: nats, url: 'nats://y:4222', stream: 'a.b'}", "connector \"a\": stream:"),
            ("- {name: a, type: nats, url: 'nats://y:4222', subject: 'hl7.{msh.nope}'}", "connector \"a\": subject: \"hl7.{msh.nope}\": unknown field `msh.nope`"),
            ("- {name: a, type: nats, url: 'nats://y:4222', subject: 'hl7..x'}", "connector \"a\": subject:"),
            ("- {name: a, type: nats, url: 'nats://y:4222', subject: 'hl7.*'}", "connector \"a\": subject:"),
            ("- {name: a, type: nats, url: 'nats://y:4222', subject: 'hl7.{msh.msg_type'}", "connector \"a\": subject:"),
            ("- {name: a, type: nats, url: 'nats://y:4222', replicas: 7}", "connector \"a\": replicas:"),
            ("- {name: a, type: nats, url: 'http://y:4222'}", "connector \"a\": url:"),
            ("- {name: a, type: nats, url: ['nats://y:4222', 'nats://']}", "connector \"a\": url:"),
            ("- {name: a, type: nats, url: 'nats://y:4222', table: t}", "connector \"a\": table: unknown key"),
            ("- {name: a, type: postgres, url: 'mysql://h/db'}", "connector \"a\": url:"),
            ("- {name: a, type: postgres, url: 'postgres://h/db?sslmode=require'}", "connector \"a\": url:"),
            ("- {name: a, type: postgres, url: 'postgres://h/db?bogus=1'}", "connector \"a\": url:"),
            ("- {name: a, type: postgres, url: 'postgres://h/db', table: 'x; drop'}", "connector \"a\": table:"),
            ("- {name: a, type: postgres, url: 'postgres://h/db', create_table: maybe}", "connector \"a\": create_table:"),
            ("- {name: a, type: postgres, url: 'postgres://h/db', password_env: MLLPD_TEST_SURELY_UNSET}", "connector \"a\": password_env: environment variable MLLPD_TEST_SURELY_UNSET is not set"),
            ("- {name: a, type: postgres, url: 'postgres://h/db', stream: s}", "connector \"a\": stream: unknown key"),
            ("- {name: a, type: http, url: 'http://'}", "connector \"a\": url:"),
            ("- {name: a, type: file, url: 'file:///x', headers: {A: B}}", "connector \"a\": headers: unknown key"),
            ("- {name: a, type: http, url: 'http://h/x', headers: {X-Token: MLLPD_TEST_SURELY_UNSET}}", "connector \"a\": headers: X-Token: environment variable MLLPD_TEST_SURELY_UNSET is not set"),
            ("- {name: a, type: http, url: 'http://h/x', headers: {Content-Type: PATH}}", "connector \"a\": headers: Content-Type"),
            ("- {type: file, url: 'file:///x'}", "connector #1: name: required"),
            ("- {name: a, type: file, url: 'file:///x', sync: yes}", "connector \"a\": sync:"),
            ("- {name: a, type: file, url: 'file:///x', sync_timeout: 2s}", "connector \"a\": sync_timeout: only"),
            ("- {name: a, type: file, url: 'file:///x', sync: true, sync_timeout: 0s}", "connector \"a\": sync_timeout:"),
            ("- {name: 'a b', type: file, url: 'file:///x'}", "connector \"a b\": name:"),
            ("- {name: a, type: file, url: 'file:///x', filter: 'msh.('}", "connector \"a\": filter: does not compile"),
            ("- {name: a, type: file, url: 'file:///x'}\n- {name: a, type: file, url: 'file:///y'}", "connector \"a\": name: declared twice"),
        ];
        for (yaml, expected) in cases {
            let error = parse(yaml).unwrap_err();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn postgres_and_nats_sections_are_typed() {
        let options = parse(
            "- {name: pg, type: postgres, url: 'postgres://mllpd:pw@127.0.0.1:5432/hl7', table: Inbox, create_table: true}\n\
             - {name: js, type: nats, url: ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223'], stream: HL7, replicas: 3}\n",
        )
        .unwrap();
        let Target::Postgres(pg) = &options.connectors[0].target else {
            panic!("{:?}", options.connectors[0].target)
        };
        assert_eq!(pg.table, "inbox");
        assert!(pg.create_table);
        let shown = format!("{:?}", options.connectors[0].target);
        assert!(!shown.contains("pw"), "the password is shown: {shown}");
        let Target::Nats(js) = &options.connectors[1].target else {
            panic!("{:?}", options.connectors[1].target)
        };
        assert_eq!(js.urls.len(), 2);
        assert_eq!((js.stream.as_str(), js.replicas), ("HL7", 3));
        assert_eq!(
            js.subject.to_string(),
            "hl7.{msh.sending_fac}.{msh.msg_type}"
        );
    }

    #[test]
    fn retry_is_checked() {
        let spec = |i: &str, m: &str, a| RetrySpec {
            initial_backoff: Some(i.to_owned()),
            max_backoff: Some(m.to_owned()),
            max_attempts: Some(a),
        };
        let ok = retry_options(Some(&spec("100ms", "2s", 3))).unwrap();
        assert_eq!(ok.max_attempts, 3);
        assert!(retry_options(Some(&spec("0s", "2s", 3)))
            .unwrap_err()
            .contains("initial_backoff"));
        assert!(retry_options(Some(&spec("3s", "2s", 3)))
            .unwrap_err()
            .contains("max_backoff"));
        assert!(retry_options(Some(&spec("1s", "2s", 0)))
            .unwrap_err()
            .contains("max_attempts"));
    }
}
