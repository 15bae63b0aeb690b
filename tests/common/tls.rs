//! TLS test helpers (issue 10): certificates made with rcgen (a CA, a server certificate, a
//! good client, a client of another CA, an expired client, a client not on an allowed list), a
//! TLS server with mTLS, a TLS client, and reading back what was journaled.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{adt, frame, Ack, Server};
use mllpd::tls::{self, ClientOptions, ClientStream};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA: its certificate and key.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    Ca { cert, key }
}

/// A leaf certificate signed by `ca`: PEM certificate and PEM (PKCS#8) key.
pub fn leaf(
    ca: &Ca,
    cn: &str,
    sans: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![purpose];
    if let Some((not_before, not_after)) = validity {
        params.not_before = not_before;
        params.not_after = not_after;
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// Every file a test needs, in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: ca("mllpd test CA"),
        };
        pki.write("ca.pem", &pki.ca.cert.pem());
        pki.server("server", "mllpd-server", None);
        pki.client("good", &pki.ca, "lab-system", &["lab.example"], None);
        let other = ca("another CA");
        pki.write("other-ca.pem", &other.cert.pem());
        pki.client("stranger", &other, "lab-system", &["lab.example"], None);
        let past = Some((
            rcgen::date_time_ymd(2019, 1, 1),
            rcgen::date_time_ymd(2020, 1, 1),
        ));
        pki.client("expired", &pki.ca, "lab-system", &["lab.example"], past);
        pki.client("billing", &pki.ca, "billing", &["billing.example"], None);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write");
    }

    /// `<name>.pem` and `<name>.key`: a server certificate for localhost and 127.0.0.1.
    pub fn server(
        &self,
        name: &str,
        cn: &str,
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) {
        let (cert, key) = leaf(
            &self.ca,
            cn,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        );
        self.write(&format!("{name}.pem"), &cert);
        self.write(&format!("{name}.key"), &key);
    }

    pub fn client(
        &self,
        name: &str,
        ca: &Ca,
        cn: &str,
        sans: &[&str],
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) {
        let (cert, key) = leaf(ca, cn, sans, ExtendedKeyUsagePurpose::ClientAuth, validity);
        self.write(&format!("{name}.pem"), &cert);
        self.write(&format!("{name}.key"), &key);
    }

    /// Client options trusting the test CA, with `<client>.pem`/`.key` when given.
    pub fn client_options(&self, client: Option<&str>) -> ClientOptions {
        ClientOptions {
            ca_file: Some(self.path("ca.pem")),
            cert_file: client.map(|c| self.path(&format!("{c}.pem"))),
            key_file: client.map(|c| self.path(&format!("{c}.key"))),
            server_name: Some("localhost".to_owned()),
        }
    }
}

/// A TLS server with mTLS (and `extra` settings); its DATA_DIR is `data`.
pub fn start(pki: &Pki, data: &Path, extra: &[(&str, &str)]) -> Server {
    let (cert, key, ca) = (pki.p("server.pem"), pki.p("server.key"), pki.p("ca.pem"));
    let data = data.display().to_string();
    let mut env = vec![
        ("TLS_CERT_FILE", cert.as_str()),
        ("TLS_KEY_FILE", key.as_str()),
        ("TLS_CLIENT_CA", ca.as_str()),
        ("DATA_DIR", data.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Connects and runs the TLS handshake as `client` (`None`: no client certificate).
pub fn connect(server: &Server, pki: &Pki, client: Option<&str>) -> std::io::Result<ClientStream> {
    let options = pki.client_options(client);
    let config = tls::client_config(&options).expect("client config");
    let name = tls::server_name(&options, "localhost").expect("name");
    let tcp = TcpStream::connect(server.addr)?;
    tcp.set_nodelay(true)?;
    ClientStream::connect(tcp, Some((config, name)), Duration::from_secs(10))
}

/// Reads the next MLLP frame's payload within `timeout`; `None` at EOF, error or timeout.
pub fn read_frame(stream: &mut ClientStream, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut pending = Vec::new();
    loop {
        if let Some(start) = pending.iter().position(|&b| b == super::SB) {
            if let Some(end) = pending[start..]
                .windows(2)
                .position(|w| w == [super::EB, super::CR])
            {
                return Some(pending[start + 1..start + end].to_vec());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.tcp().set_read_timeout(Some(left)).ok()?;
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `adt(id)` and returns the ACK's MSA-1, or `None` when no ACK came.
pub fn exchange(stream: &mut ClientStream, id: &str) -> Option<String> {
    stream.write_all(&frame(&adt(id))).ok()?;
    stream.flush().ok()?;
    read_frame(stream, Duration::from_secs(10)).map(|ack| Ack::parse(&ack).code())
}

/// Control ids (MSH-10) `mllpd journal export` finds in `data` (the server stopped first).
pub fn journaled_ids(server: &mut Server, data: &Path) -> Vec<String> {
    let _ = server.child.kill();
    let _ = server.child.wait();
    super::journal_control_ids(data)
}

/// The metadata lines (`journal export --metadata`) of every record in `data`, in journal order
/// (the server stopped first).
pub fn journaled_metadata(server: &mut Server, data: &Path) -> Vec<serde_json::Value> {
    let _ = server.child.kill();
    let _ = server.child.wait();
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = dir.path().join("metadata.jsonl");
    super::journal_export(data, &["--metadata".as_ref(), metadata.as_os_str()]);
    std::fs::read_to_string(&metadata)
        .expect("metadata file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
