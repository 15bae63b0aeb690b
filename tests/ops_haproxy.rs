//! Behind a TCP load balancer (issue 12, item 8): three mllpd instances on loopback behind
//! Debian's HAProxy running the shipped deploy/haproxy/haproxy.cfg (only its ports rewritten),
//! with four senders from four loopback addresses (the configuration keeps a source address on
//! one instance). Under load one instance gets SIGTERM: /readyz turns 503, HAProxy takes it out
//! of rotation while it still serves (PRE_SHUTDOWN_DELAY), then it drains and exits 0. Another
//! gets SIGKILL. Senders reconnect through HAProxy and resend what was not acknowledged.
//! Afterwards every AA'd control id is in an instance's journal (`mllpd journal export`), and
//! in exactly one, except a message the SIGKILLed instance stored without its ACK reaching the
//! sender: resent, it is stored again by another instance, so its second copy is in the killed
//! instance's journal (at-least-once, as MLLP promises; only state shared between instances
//! could avoid it).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const HAPROXY_CFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/haproxy.cfg");
const SENDERS: u8 = 4;
const PRE_SHUTDOWN_DELAY: Duration = Duration::from_secs(3);

/// One mllpd instance: its process, data directory and admin address.
struct Instance {
    server: Server,
    data_dir: tempfile::TempDir,
    admin: SocketAddr,
}

fn start_instance(port: u16, admin_port: u16) -> Instance {
    let data_dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let server = Server::start(&[
        ("LISTEN_ADDR", listen.as_str()),
        ("ADMIN_ADDR", admin.as_str()),
        ("DATA_DIR", data_dir.path().to_str().unwrap()),
        ("SHARDS", "1"),
        ("PRE_SHUTDOWN_DELAY", "3s"),
        ("DRAIN_TIMEOUT", "10s"),
    ]);
    Instance {
        server,
        data_dir,
        admin: admin.parse().unwrap(),
    }
}

/// HAProxy in the foreground, its log lines kept with the time each arrived.
struct Haproxy {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// When a line containing `needle` arrived, waiting up to `timeout` for it.
    fn wait_line(&self, needle: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines.lock().unwrap();
            if let Some((at, _)) = lines.iter().find(|(_, l)| l.contains(needle)) {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never logged {needle:?}: {:?}",
                lines.iter().map(|(_, l)| l).collect::<Vec<_>>()
            );
            drop(lines);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The shipped configuration with the front port and each instance's ports replaced; every
/// replaced line must be there exactly once, so a change to the shipped file fails here.
fn render_config(front: u16, instances: &[(u16, u16)]) -> String {
    let mut text = std::fs::read_to_string(HAPROXY_CFG).unwrap();
    let mut replace = |old: String, new: String| {
        assert_eq!(text.matches(&old).count(), 1, "{old:?} in haproxy.cfg");
        text = text.replace(&old, &new);
    };
    replace("bind :2575".into(), format!("bind 127.0.0.1:{front}"));
    for (n, (port, admin)) in instances.iter().enumerate() {
        let n = n as u16 + 1;
        replace(
            format!(
                "server mllpd{n} 127.0.0.1:{} check port {}",
                2575 + n,
                9575 + n
            ),
            format!("server mllpd{n} 127.0.0.1:{port} check port {admin}"),
        );
    }
    text
}

fn start_haproxy(config: &str) -> Haproxy {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    for stream in [stdout, stderr] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((Instant::now(), line));
            }
        });
    }
    Haproxy { child, lines }
}

/// What one sender saw.
#[derive(Default)]
struct Sent {
    /// Control ids answered AA.
    acked: Vec<String>,
    /// Control ids written but not acknowledged before the connection broke, then resent.
    resent: HashSet<String>,
    /// Connections opened (the first one included).
    connects: usize,
}

/// A connection to HAProxy from `local` (a loopback address of this sender's own).
fn connect_from(local: SocketAddr, front: SocketAddr) -> Option<Client> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket.bind(&local.into()).ok()?;
    socket
        .connect_timeout(&front.into(), Duration::from_secs(2))
        .ok()?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).ok()?;
    Some(Client::from_stream(stream))
}

/// Sends ADTs one at a time until `stop`, reconnecting and resending what got no ACK; counts
/// every AA in `acked_total` (shared by the senders).
fn send_until(sender: u8, front: SocketAddr, stop: &AtomicBool, acked_total: &AtomicUsize) -> Sent {
    let local = SocketAddr::from(([127, 0, 0, 10 + sender], 0));
    let mut sent = Sent::default();
    let mut connection: Option<Client> = None;
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = format!("HA{sender}-{n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "{id}: no instance took it for 30 s"
            );
            let Some(client) = connection.as_mut() else {
                connection = connect_from(local, front);
                sent.connects += 1;
                if connection.is_none() {
                    // Pacing: a refused connect is retried 10 times a second (bounded above).
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            };
            if client.stream.write_all(&frame(&adt(&id))).is_err() {
                connection = None;
                continue;
            }
            match client.read_frame().map(|f| Ack::parse(&f)) {
                Some(ack) => {
                    assert_eq!(
                        (ack.code(), ack.control_id()),
                        ("AA".to_owned(), id.clone())
                    );
                    sent.acked.push(id);
                    acked_total.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                None => {
                    // Written, unanswered: the instance may have stored it. Resend.
                    sent.resent.insert(id.clone());
                    connection = None;
                }
            }
        }
        // Pacing: a steady load of a few hundred messages a second per sender, not a flood.
        std::thread::sleep(Duration::from_millis(3));
    }
    sent
}

/// Waits (30 s at most) until the senders' AAs have grown by `more` from now.
fn wait_acked(acked_total: &AtomicUsize, more: usize, what: &str) {
    let target = acked_total.load(Ordering::Relaxed) + more;
    wait_for(
        &format!("{more} more AAs {what}"),
        Duration::from_secs(30),
        || acked_total.load(Ordering::Relaxed) >= target,
    );
}

/// Connections open on an instance now, from its /metrics.
fn connections_open(admin: SocketAddr) -> u64 {
    let (_, text) = http_get(admin, "/metrics").unwrap_or_default();
    count(&text, "mllpd_connections_open", &[])
}

#[test]
fn three_instances_behind_haproxy_lose_no_acknowledged_message_through_sigterm_and_sigkill() {
    if !require_program("haproxy", "apt-get install haproxy") {
        return;
    }
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let front_port = free_port();
    let mut instances: Vec<Instance> = ports.iter().map(|(p, a)| start_instance(*p, *a)).collect();
    let haproxy = start_haproxy(&render_config(front_port, &ports));
    let front = SocketAddr::from(([127, 0, 0, 1], front_port));
    let started = Instant::now();
    while TcpStream::connect(front).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "HAProxy does not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (stop, acked_total) = (stop.clone(), acked_total.clone());
            std::thread::spawn(move || send_until(sender, front, &stop, &acked_total))
        })
        .collect();
    // Under load: the senders' AAs pass 200 (tens of them each) before the first signal.
    let load_runs = |what: &str| wait_acked(&acked_total, 200, what);
    load_runs("before SIGTERM");

    // SIGTERM to the first instance: not ready at once, out of rotation while it still serves.
    let terminated = Instant::now();
    instances[0].server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    while http_get(instances[0].admin, "/readyz").map(|(s, _)| s) != Some(503) {
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still serving (PRE_SHUTDOWN_DELAY), directly.
    let mut direct = instances[0].server.connect();
    direct.send_message(&adt("DIRECT-1"));
    let still_serving = Instant::now();
    direct.expect_adt_ack("AA", "DIRECT-1");
    drop(direct);
    let down = haproxy.wait_line("mllpd1 is DOWN", Duration::from_secs(10));
    assert!(
        down.duration_since(terminated) < PRE_SHUTDOWN_DELAY
            && still_serving.duration_since(terminated) < PRE_SHUTDOWN_DELAY,
        "HAProxy took the instance out {:?} after SIGTERM; it serves for {PRE_SHUTDOWN_DELAY:?}",
        down.duration_since(terminated)
    );
    assert_eq!(
        instances[0].server.wait_exit(Duration::from_secs(20)),
        Some(0)
    );

    // SIGKILL to an instance that holds senders, mid-load: the load runs again on the other
    // two (the first one's senders reconnected), and one of them holds connections.
    load_runs("after the SIGTERM'd instance left");
    let mut victim = 0;
    wait_for(
        "an instance holding a sender",
        Duration::from_secs(10),
        || {
            let holding = [1, 2]
                .into_iter()
                .find(|&i| connections_open(instances[i].admin) > 0);
            victim = holding.unwrap_or(0);
            holding.is_some()
        },
    );
    let _ = instances[victim].server.child.kill();
    let _ = instances[victim].server.child.wait();
    // Its senders reconnect to the last instance and the load goes on.
    load_runs("after SIGKILL");
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Sent> = senders.into_iter().map(|s| s.join().unwrap()).collect();

    // Per instance: how many copies of each control id its journal holds.
    let journals: Vec<HashMap<String, usize>> = instances
        .iter()
        .map(|instance| {
            let mut copies = HashMap::new();
            for id in journal_control_ids(instance.data_dir.path()) {
                *copies.entry(id).or_default() += 1;
            }
            copies
        })
        .collect();
    let copies_in = |i: usize, id: &str| journals[i].get(id).copied().unwrap_or(0);
    let acked: Vec<&String> = sent.iter().flat_map(|s| &s.acked).collect();
    let resent: HashSet<&String> = sent.iter().flat_map(|s| &s.resent).collect();
    let connects: usize = sent.iter().map(|s| s.connects).sum();
    let mut twice = 0;
    eprintln!(
        "{} AA'd, {} resent, {connects} connections for {SENDERS} senders",
        acked.len(),
        resent.len()
    );
    assert!(acked.len() >= 100, "too little load: {}", acked.len());
    assert!(
        connects > usize::from(SENDERS),
        "no sender had to reconnect: the failover was not exercised"
    );
    for id in &acked {
        let per_instance: Vec<usize> = (0..instances.len()).map(|i| copies_in(i, id)).collect();
        let copies: usize = per_instance.iter().sum();
        assert!(
            copies >= 1,
            "{id} was acknowledged (AA) but is in no journal"
        );
        // Exactly one copy, with one exception MLLP cannot avoid without state shared between
        // instances: the SIGKILLed instance stored the message, died before its ACK went out,
        // and the sender resent it to another instance (at-least-once). Then the second copy
        // is in the killed instance's journal, and nowhere else.
        if copies > 1 {
            twice += 1;
            assert!(
                resent.contains(id) && copies == 2 && per_instance[victim] == 1,
                "{id} is in {copies} journals (per instance {per_instance:?}, killed instance \
                 {victim}); only a message resent after the SIGKILL may have a second copy, \
                 in the killed instance's journal"
            );
        }
    }
    eprintln!("{twice} AA'd ids with a second copy in the killed instance's journal");
    assert_eq!(
        (0..instances.len())
            .map(|i| copies_in(i, "DIRECT-1"))
            .sum::<usize>(),
        1
    );
    drop(haproxy);
}
