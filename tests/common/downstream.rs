//! Real downstream servers for the connector tests, each started by the test in a temporary
//! directory on a free loopback port and stopped at the end: PostgreSQL (Debian's
//! `postgresql`: initdb + postgres, run as the `postgres` user when the tests run as root,
//! since PostgreSQL refuses root) and nats-server (JetStream on, or off; alone or as a
//! three-node cluster). Plus what those tests share: the corpus, sending it, `mllpd dlq`.
//! Included with `#[path = "common/downstream.rs"] mod downstream;` next to `mod common;`.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Client, Server};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A current-thread tokio runtime for the test's own clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Polls `done` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The corpus in tests/data (but the two whose MSH-15 asks for no accept ACK), then
/// `generated` ADTs with control ids `PREFIX00000`….
pub fn corpus(generated: usize, prefix: &str) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir("tests/data")
        .expect("tests/data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .filter(|p| !p.ends_with("ack_v27_enhanced.hl7") && !p.ends_with("vxu_v04_v251.hl7"))
        .collect();
    names.sort();
    let mut out: Vec<Vec<u8>> = names
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    out.extend((0..generated).map(|i| common::adt(&format!("{prefix}{i:05}"))));
    out
}

/// Sends every payload on one connection (pipelined); returns those answered AA/CA, in order.
pub fn send_all(server: &Server, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut client = Client::connect(server.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut frames = Vec::new();
    for payload in payloads {
        frames.extend_from_slice(&common::frame(payload));
    }
    client.send(&frames);
    let mut accepted = Vec::new();
    for payload in payloads {
        if matches!(client.read_ack().code().as_str(), "AA" | "CA") {
            accepted.push(payload.clone());
        }
    }
    accepted
}

/// MSH-10 of a payload.
pub fn control_id(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let separator = text.chars().nth(3).unwrap_or('|');
    text.split(separator).nth(9).unwrap_or_default().to_owned()
}

/// `mllpd dlq ARGS --connector NAME --data-dir DATA`: (exit code, stdout + stderr).
pub fn dlq(data: &Path, connector: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .arg("dlq")
        .args(args)
        .args(["--connector", connector, "--data-dir"])
        .arg(data)
        .output()
        .expect("mllpd dlq");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// `mllpd check-config` with `yaml` as CONFIG_FILE: (exit code, stderr).
pub fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mllpd.yaml");
    std::fs::write(&path, yaml).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .arg("check-config")
        .env("CONFIG_FILE", &path)
        .env("DATA_DIR", dir.path().join("data"))
        .output()
        .expect("check-config");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends `signal` to `child` and waits up to 20 s for it to exit (then kills it).
fn stop_child(child: &mut Child, signal: i32) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // The `kill` program rather than libc: the tests need no unsafe.
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
fn wait_listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The password of the test cluster's `postgres` user.
pub const PG_PASSWORD: &str = "mllpd-test-secret";

/// A PostgreSQL program: on PATH, or in Debian's versioned directory.
fn pg_program(name: &str) -> Option<PathBuf> {
    if common::on_path(name) {
        return Some(PathBuf::from(name));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| {
        p.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// (uid, gid) of a user in /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != name {
            return None;
        }
        Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
    })
}

/// A command running `program` as the cluster's owner (itself unless we are root).
fn as_owner(program: &Path, owner: Option<&str>) -> Command {
    match owner {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .args([
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--init-groups",
                    "--",
                ])
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// [`as_owner`] in `dir` (the owner may not be allowed into the test's working directory).
fn as_owner_in(program: &Path, owner: Option<&str>, dir: &Path) -> Command {
    let mut command = as_owner(program, owner);
    command.current_dir(dir);
    command
}

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1.
pub struct Postgres {
    /// The directory (data in `data/`, the socket beside it).
    pub dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    /// The running `postgres`, if started.
    child: Option<Child>,
    /// The user it runs as (when we are root).
    owner: Option<String>,
    /// The `postgres` program.
    program: PathBuf,
}

impl Postgres {
    /// Makes and starts a cluster whose `postgres` user has [`PG_PASSWORD`] (scram); `None`
    /// when PostgreSQL is missing and this is not CI (see `common::require`).
    pub fn start() -> Option<Postgres> {
        let (initdb, postgres) = (pg_program("initdb"), pg_program("postgres"));
        let present = initdb.is_some() && postgres.is_some();
        if !common::require(
            "PostgreSQL (initdb, postgres)",
            present,
            "apt-get install postgresql, or run .ci/install-deps",
        ) {
            return None;
        }
        let (initdb, program) = (initdb?, postgres?);
        let owner = common::is_root().then(|| {
            if user_ids("postgres").is_some() {
                "postgres".to_owned()
            } else {
                "nobody".to_owned()
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("pw");
        std::fs::write(&password_file, PG_PASSWORD).expect("pw");
        if let Some((uid, gid)) = owner.as_deref().and_then(user_ids) {
            for path in [dir.path(), &password_file] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
            }
        }
        let output = as_owner_in(&initdb, owner.as_deref(), dir.path())
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .expect("initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut cluster = Postgres {
            dir,
            port: free_port(),
            child: None,
            owner,
            program,
        };
        cluster.resume();
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (the password comes separately).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server again on the same directory and port; waits until it takes queries.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = as_owner_in(&self.program, self.owner.as_deref(), self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(30), || {
            runtime().block_on(self.connect()).is_ok()
        });
        assert!(ready, "postgres did not start on port {}", self.port);
    }

    /// Stops the server (fast shutdown: SIGINT).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, 2);
        }
    }

    /// A client as the `postgres` user.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = self.url().parse()?;
        config.password(PG_PASSWORD);
        config.connect_timeout(Duration::from_secs(2));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs `sql` (statements without results).
    pub fn execute(&self, sql: &str) {
        runtime().block_on(async {
            let client = self.connect().await.expect("connect");
            client.batch_execute(sql).await.expect("execute");
        });
    }

    /// The rows of `table` in (instance, shard, sequence) order: (instance, shard, sequence,
    /// control id, payload); empty if the table does not exist yet.
    pub fn rows(&self, table: &str) -> Vec<(String, i32, i64, String, Vec<u8>)> {
        runtime().block_on(async {
            let Ok(client) = self.connect().await else {
                return Vec::new();
            };
            let sql = format!(
                "SELECT instance, shard, sequence, control_id, payload FROM {table} \
                 ORDER BY instance, shard, sequence"
            );
            match client.query(&sql, &[]).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// NATS

/// A nats-server in a temporary directory: JetStream on (store in the directory) or off; alone,
/// or one node of a cluster.
pub struct Nats {
    /// The store directory.
    pub dir: PathBuf,
    /// Client port.
    pub port: u16,
    /// Its arguments (to start it again the same way).
    args: Vec<String>,
    /// The running server, if started.
    child: Option<Child>,
}

/// Whether nats-server is there (a failure under CI).
pub fn require_nats() -> bool {
    common::require_program(
        "nats-server",
        "apt-get install nats-server, or run .ci/install-deps",
    )
}

impl Nats {
    /// Starts a single server in `dir` (JetStream on when `jetstream`).
    pub fn start(dir: &Path, jetstream: bool) -> Nats {
        Nats::start_on(dir, free_port(), jetstream)
    }

    /// Starts a single server in `dir` on `port`.
    pub fn start_on(dir: &Path, port: u16, jetstream: bool) -> Nats {
        let mut args = vec![
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        if jetstream {
            args.extend([
                "-js".to_owned(),
                "-sd".to_owned(),
                dir.display().to_string(),
            ]);
        }
        let mut server = Nats {
            dir: dir.to_owned(),
            port,
            args,
            child: None,
        };
        server.resume();
        server
    }

    /// Starts a three-node JetStream cluster, each node with its own store under `dir`.
    pub fn cluster(dir: &Path) -> Vec<Nats> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&store).expect("store");
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c))| format!("nats-route://127.0.0.1:{c}"))
                .collect();
            let config = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: mllpd-test\n listen: 127.0.0.1:{cluster_port}\n routes: [{}] }}\n",
                store.display(),
                routes.join(", ")
            );
            let file = dir.join(format!("n{i}.conf"));
            std::fs::write(&file, config).expect("config");
            nodes.push(Nats {
                dir: store,
                port: *port,
                args: vec!["-c".to_owned(), file.display().to_string()],
                child: None,
            });
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &nodes {
            assert!(
                wait_listening(node.port, Duration::from_secs(20)),
                "nats node down"
            );
        }
        nodes
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        self.child = Some(child);
    }

    /// Starts it again, same port and store; waits until it listens.
    pub fn resume(&mut self) {
        self.spawn();
        assert!(
            wait_listening(self.port, Duration::from_secs(20)),
            "nats-server did not start on port {}",
            self.port
        );
    }

    /// Stops it (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, 15);
        }
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message read back from a stream.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its subject.
    pub subject: String,
    /// Its `Nats-Msg-Id` header.
    pub msg_id: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// How many messages `stream` holds (0 if it does not exist or no server answers).
pub fn stream_count(urls: &[String], stream: &str) -> u64 {
    runtime().block_on(async {
        let Ok(client) = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(urls)
            .await
        else {
            return 0;
        };
        let jetstream = async_nats::jetstream::new(client);
        let Ok(mut handle) = jetstream.get_stream(stream).await else {
            return 0;
        };
        handle.info().await.map_or(0, |info| info.state.messages)
    })
}

/// Every message of `stream` in stream order, read with async-nats from any of `urls`; empty
/// if the stream does not exist (yet).
pub fn stream_messages(urls: &[String], stream: &str) -> Vec<Stored> {
    runtime().block_on(async {
        let Ok(client) = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(urls)
            .await
        else {
            return Vec::new();
        };
        let jetstream = async_nats::jetstream::new(client);
        let Ok(mut handle) = jetstream.get_stream(stream).await else {
            return Vec::new();
        };
        let Ok(info) = handle.info().await else {
            return Vec::new();
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        for seq in first.max(1)..=last {
            let Ok(message) = handle.get_raw_message(seq).await else {
                continue;
            };
            let msg_id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push(Stored {
                subject: message.subject.to_string(),
                msg_id,
                payload: message.payload.to_vec(),
            });
        }
        out
    })
}
