//! TLS configuration, shared by the server and by `mllpd send` (and the `mllp` connector's
//! `mllps://`): loading PEM certificates and keys, building rustls' server and client
//! configurations, the client identity (subject CN and SANs) of a verified certificate, and the
//! slot a SIGHUP reload publishes a new server configuration to. Nothing here touches a socket:
//! the server drives rustls over its own transport (`server::tls_session`), the client over a
//! blocking `TcpStream`.
//!
//! Crypto provider: rustls' `ring` provider, selected explicitly. rustls 0.23's default
//! provider is aws-lc-rs, which needs cmake and a long C build on every machine and in CI;
//! `ring` is rustls' other built-in provider, with the same safe defaults (TLS 1.2 and 1.3,
//! ECDHE only, AEAD suites only).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned,
    SupportedProtocolVersion,
};

use crate::limits::TLS_CERT_EXPIRY_WARNING;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, …).
    #[error("{0}")]
    Rustls(String),
}

/// The lowest TLS version accepted (TLS_MIN_VERSION).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// rustls' protocol versions from this one up.
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => rustls::ALL_VERSIONS,
            MinVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// What the server's TLS listener is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// PEM certificate chain, leaf first (TLS_CERT_FILE).
    pub cert_file: PathBuf,
    /// PEM private key: PKCS#8, or PKCS#1 RSA, or SEC1 EC (TLS_KEY_FILE).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; set, a client certificate is
    /// required (TLS_CLIENT_CA).
    pub client_ca: Option<PathBuf>,
    /// Lowest TLS version (TLS_MIN_VERSION).
    pub min_version: MinVersion,
    /// Client CNs or SANs let in; empty: any verified client (TLS_CLIENT_ALLOWED).
    pub client_allowed: Vec<String>,
}

/// A loaded server configuration: what connections accepted from now on use.
#[derive(Debug)]
pub struct ServerTls {
    /// rustls' configuration.
    pub config: Arc<ServerConfig>,
    /// Client CNs or SANs let in; empty: any verified client.
    pub client_allowed: Vec<String>,
    /// The leaf certificate's notAfter, in seconds since the Unix epoch (for the expiry
    /// warning).
    pub not_after_unix_seconds: i64,
    /// The leaf certificate's subject CN (logged at load).
    pub subject_cn: Option<String>,
}

impl ServerTls {
    /// Reads the files of `options` and builds the configuration.
    pub fn load(options: &ServerOptions) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = load_certs(&options.cert_file)?;
        let key = load_key(&options.key_file)?;
        let leaf = identity(&chain[0]).ok_or_else(|| TlsError::Pem {
            path: options.cert_file.clone(),
            what: "the first certificate is not valid X.509".to_owned(),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(options.min_version.versions())
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &options.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = load_roots(path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            TlsError::Rustls(format!(
                "{} with {}: {e}",
                options.cert_file.display(),
                options.key_file.display()
            ))
        })?;
        // MLLP has no use for ALPN or resumption across processes; the defaults (an in-memory
        // session cache, stateless tickets off) stay. Early data stays off: an MLLP frame must
        // not be replayable.
        config.max_early_data_size = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            client_allowed: options.client_allowed.clone(),
            not_after_unix_seconds: leaf.not_after_unix_seconds,
            subject_cn: leaf.cn,
        })
    }

    /// Days left before the certificate expires, when that is within the warning period
    /// (`limits::TLS_CERT_EXPIRY_WARNING`); negative when it has expired.
    pub fn expires_soon(&self, now_unix_seconds: i64) -> Option<i64> {
        let left = self.not_after_unix_seconds - now_unix_seconds;
        (left < TLS_CERT_EXPIRY_WARNING.as_secs() as i64).then(|| left.div_euclid(86_400))
    }
}

/// The server configuration in force; a SIGHUP reload replaces it for the connections accepted
/// after (established ones keep the session they have).
#[derive(Debug)]
pub struct TlsSlot {
    /// The configuration and its load number (1 at start).
    current: RwLock<(Arc<ServerTls>, u64)>,
}

impl TlsSlot {
    /// A slot holding `tls` as load 1.
    pub fn new(tls: ServerTls) -> Self {
        TlsSlot {
            current: RwLock::new((Arc::new(tls), 1)),
        }
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerTls> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// Puts `tls` in force for new connections; returns its load number.
    pub fn publish(&self, tls: ServerTls) -> u64 {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.1 += 1;
        guard.0 = Arc::new(tls);
        guard.1
    }
}

/// What a `mllpd send` (or `mllps://` connector) connection presents and trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for mTLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host it connects to).
    pub server_name: Option<String>,
}

/// rustls' client configuration for `options`: the CAs of `ca_file` (required: no system
/// store is assumed on an interface engine's host), and a client certificate when given.
pub fn client_config(options: &ClientOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(ca_file) = &options.ca_file else {
        return Err(TlsError::Rustls(
            "--tls-ca is required: the CA certificates the server's certificate chains to"
                .to_owned(),
        ));
    };
    let roots = load_roots(ca_file)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(MinVersion::Tls12.versions())
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls(e.to_string()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Rustls(
                "--tls-cert and --tls-key go together".to_owned(),
            ))
        }
    };
    Ok(Arc::new(config))
}

/// The name to check the server's certificate against: `options.server_name`, else `host`.
pub fn server_name(options: &ClientOptions, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = options.server_name.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_owned())
        .map_err(|e| TlsError::Rustls(format!("server name '{name}': {e}")))
}

/// The host part of `host:port` (brackets of an IPv6 address removed): the name a server's
/// certificate is checked against when no server name is given.
pub fn host_of(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// A client's TLS, ready for its connections: the configuration (files read once) and the name
/// the server's certificate must carry. `mllpd send --tls` and the `mllp` connector's
/// `mllps://` both connect with it, through [`ClientStream::connect`].
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// rustls' client configuration.
    config: Arc<ClientConfig>,
    /// The server name to verify.
    name: ServerName<'static>,
}

impl ClientTls {
    /// Reads the files of `options` for connections to `address` (`host:port`; its host is the
    /// server name unless `options.server_name` is set).
    pub fn new(options: &ClientOptions, address: &str) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            config: client_config(options)?,
            name: server_name(options, host_of(address))?,
        })
    }

    /// A TLS stream over `tcp`, its handshake done within `timeout`.
    pub fn connect(&self, tcp: TcpStream, timeout: Duration) -> io::Result<ClientStream> {
        ClientStream::connect(
            tcp,
            Some((Arc::clone(&self.config), self.name.clone())),
            timeout,
        )
    }
}

/// A client's MLLP byte stream: plaintext TCP, or TLS over it. `mllpd send` uses it, and so
/// can the `mllp` connector's `mllps://`: connect with [`ClientStream::connect`], then read and
/// write as on a `TcpStream` (timeouts included).
pub enum ClientStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, its handshake completed.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            ClientStream::Plain(_) => "plaintext",
            ClientStream::Tls(_) => "TLS",
        };
        f.debug_struct("ClientStream")
            .field("kind", &kind)
            .field("peer", &self.tcp().peer_addr().ok())
            .finish()
    }
}

impl ClientStream {
    /// Runs a TLS handshake on `tcp` for `name` with `config`, within `timeout`; `None` for
    /// `config` keeps the stream plaintext.
    pub fn connect(
        tcp: TcpStream,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        timeout: Duration,
    ) -> io::Result<ClientStream> {
        let Some((config, name)) = tls else {
            return Ok(ClientStream::Plain(tcp));
        };
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tcp = tcp;
        let deadline = Instant::now() + timeout;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            tcp.set_read_timeout(Some(left))?;
            tcp.set_write_timeout(Some(left))?;
            let (_, read) = conn.complete_io(&mut tcp)?;
            if read == 0 && conn.is_handshaking() && !conn.wants_write() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed during the TLS handshake",
                ));
            }
        }
        Ok(ClientStream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Tls(tls) => &tls.sock,
        }
    }

    /// Ends the stream: with TLS, a close_notify alert first.
    pub fn close(&mut self) {
        if let ClientStream::Tls(tls) = self {
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.read(buf),
            ClientStream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.write(buf),
            ClientStream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(tcp) => tcp.flush(),
            ClientStream::Tls(tls) => tls.flush(),
        }
    }
}

/// A verified certificate's identity: its subject CN and subject alternative names (DNS
/// names, e-mail addresses, URIs and IP addresses, as text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The subject's common name.
    pub cn: Option<String>,
    /// The subject alternative names.
    pub sans: Vec<String>,
    /// notAfter, seconds since the Unix epoch.
    pub not_after_unix_seconds: i64,
}

impl Identity {
    /// Whether a TLS_CLIENT_ALLOWED list lets this identity in: an empty list lets every
    /// verified client in; otherwise the CN or one of the SANs must be on it (exact match).
    pub fn is_allowed(&self, allowed: &[String]) -> bool {
        allowed.is_empty()
            || allowed.iter().any(|name| {
                self.cn.as_deref() == Some(name.as_str()) || self.sans.iter().any(|s| s == name)
            })
    }
}

/// The identity of a DER certificate; `None` when it does not parse.
pub fn identity(der: &[u8]) -> Option<Identity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push((*s).to_owned())
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        sans.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        sans.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(Identity {
        cn,
        sans,
        not_after_unix_seconds: cert.validity().not_after.timestamp(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file, in order; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE in the file".to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable private key: {e}"),
    })
}

/// A root store of every certificate of a PEM file.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(cn: Option<&str>, sans: &[&str]) -> Identity {
        Identity {
            cn: cn.map(str::to_owned),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            not_after_unix_seconds: 0,
        }
    }

    #[test]
    fn an_empty_allowed_list_lets_every_verified_client_in() {
        assert!(identity_of(Some("lab"), &[]).is_allowed(&[]));
    }

    #[test]
    fn the_cn_or_any_san_must_be_on_the_allowed_list() {
        let allowed = vec!["lab.example".to_owned(), "adt".to_owned()];
        assert!(identity_of(Some("adt"), &[]).is_allowed(&allowed));
        assert!(identity_of(Some("x"), &["y", "lab.example"]).is_allowed(&allowed));
        assert!(!identity_of(Some("lab"), &["lab.example.org"]).is_allowed(&allowed));
        assert!(!identity_of(None, &[]).is_allowed(&allowed));
    }
}
