//! Scale-out on an existing engine (issue 11 item 6): a three-node JetStream cluster
//! (nats-server, loopback ports, cluster routes) with a `replicas: 3` stream; two mllpd
//! instances publish into it while a few senders load them (alternating between them, as a TCP
//! load balancer would); one NATS node is killed mid-load. Afterwards every control id mllpd
//! answered AA is in the stream exactly once: the stream survives the node (quorum 2 of 3), each
//! instance's connector fails over to another node and re-sends what was not acknowledged, and
//! the stream drops re-sends by `Nats-Msg-Id` (INSTANCE:SHARD:SEQUENCE, so the two instances'
//! sequence numbers never collide).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/downstream.rs"]
mod downstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{adt, Client, Server};
use downstream::{control_id, require_nats, stream_count, stream_messages, wait_until, Nats};

const STREAM: &str = "HL7CLUSTER";
/// Senders, and messages each sends (in pipelined batches).
const SENDERS: usize = 4;
const PER_SENDER: usize = 600;
const BATCH: usize = 20;

/// One sender: batches of pipelined messages, alternating between the instances; records the
/// control ids answered AA.
fn sender(
    index: usize,
    instances: [SocketAddr; 2],
    accepted: Arc<Mutex<Vec<String>>>,
    progress: Arc<AtomicUsize>,
) {
    let mut clients: Vec<Client> = instances
        .iter()
        .map(|addr| {
            let client = Client::connect(*addr);
            client
                .stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            client
        })
        .collect();
    for batch in 0..PER_SENDER / BATCH {
        let client = &mut clients[(index + batch) % 2];
        let ids: Vec<String> = (0..BATCH)
            .map(|i| format!("S{index}B{batch:03}M{i:02}"))
            .collect();
        let mut frames = Vec::new();
        for id in &ids {
            frames.extend_from_slice(&common::frame(&adt(id)));
        }
        // Paced (a batch every 500 ms per sender: 15 s of load) so that the node dies mid-load.
        std::thread::sleep(Duration::from_millis(500));
        client.send(&frames);
        for id in ids {
            let ack = client.read_ack();
            assert_eq!(ack.control_id(), id);
            if ack.code() == "AA" {
                accepted.lock().unwrap().push(id);
            }
            progress.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn two_instances_publish_into_a_replicated_stream_and_survive_a_node_killed_mid_load() {
    if !require_nats() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Nats::cluster(dir.path());
    let urls: Vec<String> = nodes.iter().map(Nats::url).collect();
    let config = dir.path().join("mllpd.yaml");
    std::fs::write(
        &config,
        format!(
            "connectors:\n  - name: js\n    type: nats\n    url: [{}]\n    stream: {STREAM}\n\
             \x20   replicas: 3\n\
             retry: {{initial_backoff: 100ms, max_backoff: 1s, max_attempts: 1000}}\n",
            urls.join(", ")
        ),
    )
    .unwrap();
    let instances: Vec<Server> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("data{i}"));
            Server::start(&[
                ("DATA_DIR", data.to_str().unwrap()),
                ("CONFIG_FILE", config.to_str().unwrap()),
                ("SHARDS", "1"),
            ])
        })
        .collect();
    let addrs = [instances[0].addr, instances[1].addr];
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let progress = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|index| {
            let (accepted, progress) = (accepted.clone(), progress.clone());
            std::thread::spawn(move || sender(index, addrs, accepted, progress))
        })
        .collect();
    // Mid-load, once the stream exists and holds part of the load: kill a node.
    let total = SENDERS * PER_SENDER;
    assert!(wait_until(Duration::from_secs(40), || {
        stream_count(&urls[1..], STREAM) >= 100
    }));
    nodes[0].kill();
    let killed_at = progress.load(Ordering::SeqCst);
    for sender in senders {
        sender.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        killed_at < total,
        "the node was killed after the load ended"
    );
    assert_eq!(accepted.len(), total, "intake does not depend on NATS");
    let survivors = &urls[1..];
    let complete = wait_until(Duration::from_secs(40), || {
        stream_count(survivors, STREAM) >= accepted.len() as u64
    });
    std::thread::sleep(Duration::from_secs(1));
    let stored = stream_messages(survivors, STREAM);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for message in &stored {
        *counts.entry(control_id(&message.payload)).or_default() += 1;
    }
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        complete && missing.is_empty() && twice.is_empty() && counts.len() == accepted.len(),
        "{} accepted, {} stored ({} distinct); missing {:?}…; twice {:?}…",
        accepted.len(),
        stored.len(),
        counts.len(),
        &missing[..missing.len().min(5)],
        &twice[..twice.len().min(5)]
    );
    let resent: usize = instances
        .iter()
        .map(|s| {
            s.logs()
                .iter()
                .filter(|l| l.contains("delivery failed; will retry"))
                .count()
        })
        .sum();
    eprintln!(
        "{} messages through 2 instances into an R3 stream; node killed after {killed_at}; \
         {resent} failed attempts retried; {:?} in all",
        accepted.len(),
        started.elapsed()
    );
}
