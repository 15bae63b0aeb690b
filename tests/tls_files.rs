//! The TLS files (issue 10 item 1): `mllpd check-config` loads and verifies the certificate
//! chain, the key and the client CA as the server would, failing with the file's name; and the
//! server serves with a PKCS#1 RSA key (`BEGIN RSA PRIVATE KEY`), a SEC1 EC key (`BEGIN EC
//! PRIVATE KEY`) and a PKCS#8 key (`BEGIN PRIVATE KEY`), on the socket path the run asks for
//! (`MLLPD_TEST_SOCKET_IO`). Keys are made by the `openssl` CLI (rcgen writes PKCS#8 only),
//! certificates for them by rcgen with the tests' CA.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::tls::{connect, exchange, start, Pki};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

/// Runs `mllpd check-config` with only PATH, a DATA_DIR and `env` in its environment.
fn check_config(data: &Path, env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .arg("check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run check-config")
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `<name>.key` in `form` (rsa: PKCS#1, ec: SEC1, pkcs8) and `<name>.pem`, a server
/// certificate for localhost signed by the tests' CA for that key.
fn server_with_openssl_key(pki: &Pki, name: &str, form: &str) {
    let pkcs8 = pki.p(&format!("{name}.p8"));
    let key = pki.p(&format!("{name}.key"));
    let genpkey = |options: &[&str]| {
        let mut args = vec!["genpkey"];
        args.extend_from_slice(options);
        args.extend(["-out", pkcs8.as_str()]);
        openssl(&args);
    };
    match form {
        "rsa" => {
            genpkey(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
            openssl(&["rsa", "-in", &pkcs8, "-traditional", "-out", &key]);
        }
        "ec" => {
            genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
            openssl(&["ec", "-in", &pkcs8, "-out", &key]);
        }
        _ => {
            genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]);
            std::fs::copy(&pkcs8, &key).expect("copy");
        }
    }
    let key_pair = KeyPair::from_pem(&std::fs::read_to_string(&pkcs8).expect("pkcs8"))
        .expect("rcgen reads the key");
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("certificate params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key_pair, &pki.ca.cert, &pki.ca.key)
        .expect("sign");
    pki.write(&format!("{name}.pem"), &cert.pem());
}

#[test]
fn rsa_ec_and_pkcs8_keys_pass_check_config_and_serve() {
    if !common::require_program("openssl", "apt-get install openssl") {
        return;
    }
    for (form, header) in [
        ("rsa", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec", "-----BEGIN EC PRIVATE KEY-----"),
        ("pkcs8", "-----BEGIN PRIVATE KEY-----"),
    ] {
        let pki = Pki::new();
        server_with_openssl_key(&pki, "server", form);
        let key = std::fs::read_to_string(pki.path("server.key")).expect("key");
        assert!(key.starts_with(header), "{form}: {key}");
        let data = tempfile::tempdir().expect("data");
        let output = check_config(
            data.path(),
            &[
                ("TLS_CERT_FILE", pki.p("server.pem")),
                ("TLS_KEY_FILE", pki.p("server.key")),
                ("TLS_CLIENT_CA", pki.p("ca.pem")),
            ],
        );
        assert!(
            output.status.success(),
            "{form}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let server = start(&pki, data.path(), &[]);
        let mut client = connect(&server, &pki, Some("good")).expect("handshake");
        assert_eq!(
            exchange(&mut client, "KEY1").as_deref(),
            Some("AA"),
            "{form}"
        );
    }
}

#[test]
fn check_config_fails_naming_a_bad_or_missing_tls_file() {
    let pki = Pki::new();
    pki.write("junk.pem", "not a certificate\n");
    pki.client("other", &pki.ca, "other", &["other.example"], None);
    let data = tempfile::tempdir().expect("data");
    let good = [
        ("TLS_CERT_FILE", pki.p("server.pem")),
        ("TLS_KEY_FILE", pki.p("server.key")),
        ("TLS_CLIENT_CA", pki.p("ca.pem")),
    ];
    let output = check_config(data.path(), &good);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cases = [
        ("TLS_KEY_FILE", pki.p("missing.key"), "missing.key"),
        ("TLS_CERT_FILE", pki.p("missing.pem"), "missing.pem"),
        ("TLS_CERT_FILE", pki.p("junk.pem"), "junk.pem"),
        ("TLS_KEY_FILE", pki.p("junk.pem"), "junk.pem"),
        ("TLS_CLIENT_CA", pki.p("junk.pem"), "junk.pem"),
        // A key that is not the certificate's.
        ("TLS_KEY_FILE", pki.p("other.key"), "other.key"),
    ];
    for (setting, value, named) in cases {
        let env: Vec<(&str, String)> = good
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    if *k == setting {
                        value.clone()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        let output = check_config(data.path(), &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{setting}={value}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains("TLS"),
            "{setting}={value}: {stderr}"
        );
    }
}
