//! Power-loss test (issue 8 item 1): an AA means the message survives a power cut, not only a
//! crash of mllpd.
//!
//! A SIGKILL loses nothing that reached the kernel, so the crash test (tests/durability.rs)
//! cannot see a skipped fdatasync. Here DATA_DIR is on mllpd-lazyfs (lazyfs/), a FUSE file
//! system that keeps every write not yet made durable (fsync/fdatasync of the file, fsync of the
//! directory for new names) in its own memory. Several senders load mllpd (ACK_AFTER=journal),
//! then the plug is pulled: the file system discards everything unsynced and fails every later
//! request, and mllpd is SIGKILLed. A fresh mount over the same backing directory is the
//! reboot; mllpd restarts (recovery), and `journal export` must hold every AA'd control id
//! exactly once. Each fsync of the file system takes 2 ms ([`FSYNC_DELAY`]), so the cut nearly
//! always lands on a written batch not yet durable. The control run skips the batch fdatasync (MLLPD_FAULT_SKIP_FLUSH) while still
//! answering AA, and must lose messages: proof that this test sees a missing flush.
//!
//! `MLLPD_POWER_LOSS_ROUNDS` (default 1) sets the rounds; perf/power-loss.sh runs more.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{adt, Client, Server};
use mllpd_lazyfs::{LazyMount, Loss, Options, Stats};

/// Concurrent senders, each on its own connection.
const SENDERS: usize = 6;

/// Shards of the server under test (each has its own journal directory and committer).
const SHARDS: usize = 2;

/// How long each fsync of the file system takes before it makes anything durable: a slow
/// flush, so the cut nearly always finds a written batch not yet durable (whose messages must
/// not have been answered AA). Without it the cut mostly falls between flushes.
const FSYNC_DELAY: Duration = Duration::from_millis(2);

/// What one round saw.
struct Round {
    /// Control ids answered AA.
    acked: HashSet<String>,
    /// Control ids in the journal after the reboot, in export order.
    journaled: Vec<String>,
    /// What the power cut discarded.
    loss: Loss,
    /// What the file system was asked to do before the cut.
    stats: Stats,
}

/// Whether FUSE is usable; in CI its absence is a failure, elsewhere a skip with the reason.
fn fuse_available() -> bool {
    match mllpd_lazyfs::available() {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must run the power-loss test: {reason} (.ci/install-deps installs fuse3)")
        }
        Err(reason) => {
            eprintln!("SKIP: power-loss test: {reason}");
            false
        }
    }
}

/// Starts `SENDERS` threads that send until their connection ends; returns their handles.
fn start_senders(
    server: &Server,
    round: usize,
    acked: &Arc<Mutex<HashSet<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..SENDERS)
        .map(|sender| {
            let addr = server.addr;
            let acked = Arc::clone(acked);
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0.. {
                    let id = format!("PL-{round}-{sender}-{i}");
                    let frame = common::frame(&adt(&id));
                    if std::io::Write::write_all(&mut client.stream, &frame).is_err() {
                        break;
                    }
                    let Some(payload) = client.read_frame() else {
                        break;
                    };
                    let ack = common::Ack::parse(&payload);
                    if ack.code() == "AA" && ack.control_id() == id {
                        acked.lock().expect("acked").insert(id);
                    }
                }
            })
        })
        .collect()
}

/// One round: mount, load, pull the plug, reboot, recover, export. `faults` go to the first
/// run only (the restart runs clean).
fn power_loss_round(round: usize, faults: &[(&str, &str)], load: Duration) -> Round {
    let backing = tempfile::tempdir().expect("backing dir");
    let mountpoint = tempfile::tempdir().expect("mountpoint");
    let options = Options {
        fsync_delay: FSYNC_DELAY,
    };
    let mount = LazyMount::mount_with(backing.path(), mountpoint.path(), options)
        .expect("mount mllpd-lazyfs");
    let data = mountpoint.path().join("data");
    // Nothing is made here: mllpd creates DATA_DIR and its shard directories on the mount
    // itself, so a directory it forgets to make durable vanishes with the power.
    let data_str = data.to_str().expect("utf-8 path").to_owned();
    let shards = SHARDS.to_string();
    let base = [
        ("DATA_DIR", data_str.as_str()),
        ("SHARDS", shards.as_str()),
        ("ACK_AFTER", "journal"),
        ("JOURNAL_SYNC", "fdatasync"),
    ];
    let mut env = base.to_vec();
    env.extend_from_slice(faults);
    let mut server = Server::start(&env);
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let senders = start_senders(&server, round, &acked);
    // Enough acknowledged to judge, then a deliberate window of load whose length varies.
    common::wait_for("20 AAs", Duration::from_secs(60), || {
        acked.lock().expect("acked").len() >= 20
    });
    std::thread::sleep(load);
    // Pull the plug. The storage goes first: from this instant nothing becomes durable and
    // every request fails, so an AA already sent was for a flush that completed before the
    // cut. Then the process dies with it.
    let stats = mount.stats();
    let loss = mount.power_off();
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(20));
    for sender in senders {
        sender.join().expect("sender");
    }
    drop(server);
    mount.unmount().expect("unmount after the cut");
    // Reboot: a new mount sees only what was durable; mllpd recovers, then stops cleanly.
    let mount = LazyMount::mount(backing.path(), mountpoint.path()).expect("remount");
    let mut restarted = Server::start(&base);
    restarted.signal("TERM");
    assert_eq!(restarted.wait_exit(Duration::from_secs(30)), Some(0));
    drop(restarted);
    let journaled = common::journal_control_ids(&data);
    mount.unmount().expect("unmount");
    let acked = acked.lock().expect("acked").clone();
    Round {
        acked,
        journaled,
        loss,
        stats,
    }
}

fn rounds() -> usize {
    std::env::var("MLLPD_POWER_LOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Load time before the cut: varies from round to round (no rand dependency needed).
fn load_time(started: Instant) -> Duration {
    let jitter = u64::from(started.elapsed().subsec_nanos() % 1000);
    Duration::from_millis(1500 + jitter)
}

#[test]
fn power_loss_loses_no_acknowledged_message() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    for round in 0..rounds() {
        let r = power_loss_round(round, &[], load_time(started));
        assert!(
            r.acked.len() >= 20,
            "round {round}: too few messages to judge: {}",
            r.acked.len()
        );
        assert!(
            r.stats.file_syncs > 0 && r.stats.writes > 0,
            "round {round}: the journal did not write through mllpd-lazyfs: {:?}",
            r.stats
        );
        let (missing, twice) = common::journal_losses(&r.acked, &r.journaled);
        assert!(
            missing.is_empty(),
            "round {round}: {} AA'd but lost after the power cut (of {}): {:?}",
            missing.len(),
            r.acked.len(),
            &missing[..missing.len().min(20)]
        );
        assert!(twice.is_empty(), "round {round}: stored twice: {twice:?}");
        eprintln!(
            "power-loss round {round}: {} AA'd, {} journaled, 0 lost; the cut discarded {} \
             bytes in {} files, {} entries ({} writes, {} file syncs before it)",
            r.acked.len(),
            r.journaled.len(),
            r.loss.bytes,
            r.loss.files,
            r.loss.entries,
            r.stats.writes,
            r.stats.file_syncs
        );
    }
}

#[test]
fn power_loss_test_detects_loss_when_the_flush_is_skipped() {
    // Control: the batch fdatasync is skipped but its waiters are released, so AAs go out for
    // records that live only in the file system's cache. If this lost nothing, the test above
    // would be blind to a missing flush.
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    for round in 0..rounds() {
        let faults = [("MLLPD_FAULT_SKIP_FLUSH", "1")];
        let r = power_loss_round(round, &faults, load_time(started));
        let (missing, _) = common::journal_losses(&r.acked, &r.journaled);
        assert!(
            !missing.is_empty(),
            "control round {round}: {} AA'd, none lost with the flush skipped: the power-loss \
             test cannot see a missing fdatasync",
            r.acked.len()
        );
        assert!(r.loss.bytes > 0, "control round {round}: {:?}", r.loss);
        eprintln!(
            "power-loss control round {round}: {} AA'd, {} lost ({} bytes discarded)",
            r.acked.len(),
            missing.len(),
            r.loss.bytes
        );
    }
}
