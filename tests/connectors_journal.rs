//! The journal side of delivery (issue 11 item 3): the durable watermark and the tailing reader
//! over real journal files. A record must never be visible to delivery before its batch is
//! durable; the reader follows a growing segment and rotation, skips batches cut after a failed
//! write, never reads a torn or not-yet-durable tail, and resumes from a cursor.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mllpd::journal::{
    shard_dir, FaultPlan, Journal, JournalError, JournalOptions, RecordRef, TailReader, Watermark,
};

/// Runs `make()` to completion on a fresh glommio executor thread.
fn run<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { make().await })
        .unwrap()
        .join()
        .unwrap();
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn message(n: u64) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|{n}|P|2.5\rPID|1||{n}\r")
        .into_bytes()
}

fn record(payload: &[u8]) -> RecordRef<'_> {
    RecordRef {
        receive_time_unix_micros: now_micros(),
        connection_id: 1,
        peer: None,
        payload,
        dedup_key: None,
        client: None,
    }
}

async fn store(journal: &Journal, payload: &[u8]) -> (u64, Result<(), JournalError>) {
    let seq = journal.append(&record(payload)).unwrap().seq();
    (seq, journal.wait_durable(seq).await)
}

/// Every record the reader returns without waiting, as (seq, payload).
fn drain(reader: &mut TailReader) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(view) = reader.next(Duration::ZERO).unwrap() {
        out.push((view.seq, view.payload.to_vec()));
    }
    out
}

fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(s, _)| *s).collect()
}

fn options(dir: &Path, watermark: &Arc<Watermark>, faults: &Rc<FaultPlan>) -> JournalOptions {
    JournalOptions {
        faults: Some(Rc::clone(faults)),
        watermark: Arc::clone(watermark),
        ..JournalOptions::new(dir)
    }
}

#[test]
fn a_record_is_invisible_to_delivery_until_its_batch_is_durable() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let watermark = Arc::new(Watermark::new());
        let faults = Rc::new(FaultPlan::new());
        let (journal, _) = Journal::open(options(&dir, &watermark, &faults))
            .await
            .unwrap();
        let mut reader = TailReader::new(&dir, Arc::clone(&watermark), 0);
        assert_eq!(store(&journal, &message(1)).await, (1, Ok(())));
        assert_eq!(watermark.durable(), 1);
        assert_eq!(seqs(&drain(&mut reader)), [1]);
        // A slow flush: the record is appended (and, half way through, written) but not yet
        // durable; delivery must not see it.
        faults.flush_delay.set(Duration::from_millis(300));
        let seq = journal.append(&record(&message(2))).unwrap().seq();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(200) {
            assert_eq!(watermark.durable(), 1);
            assert!(drain(&mut reader).is_empty());
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        journal.wait_durable(seq).await.unwrap();
        assert_eq!(watermark.durable(), 2);
        assert_eq!(drain(&mut reader), [(2, message(2))]);
        // A failed fdatasync: the batch is in the file but never durable; never delivered.
        faults.flush_delay.set(Duration::ZERO);
        faults.failed_syncs.set(1);
        assert_eq!(
            store(&journal, &message(3)).await,
            (3, Err(JournalError::Poisoned))
        );
        assert_eq!(watermark.durable(), 2);
        assert!(drain(&mut reader).is_empty());
        let _ = journal.close().await;
        assert!(watermark.is_closed());
    });
}

#[test]
fn a_batch_cut_after_no_space_is_a_gap_the_reader_skips() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let watermark = Arc::new(Watermark::new());
        let faults = Rc::new(FaultPlan::new());
        let (journal, _) = Journal::open(options(&dir, &watermark, &faults))
            .await
            .unwrap();
        let mut reader = TailReader::new(&dir, Arc::clone(&watermark), 0);
        assert_eq!(store(&journal, &message(1)).await.1, Ok(()));
        assert_eq!(seqs(&drain(&mut reader)), [1]);
        faults.enospc_writes.set(1);
        assert_eq!(
            store(&journal, &message(2)).await,
            (2, Err(JournalError::NoSpace))
        );
        assert_eq!(watermark.durable(), 2, "settled: a gap");
        assert!(drain(&mut reader).is_empty());
        assert_eq!(store(&journal, &message(3)).await.1, Ok(()));
        assert_eq!(drain(&mut reader), [(3, message(3))]);
        assert_eq!(store(&journal, &message(4)).await.1, Ok(()));
        journal.close().await.unwrap();
        // Past a gap the reader checks each record against the watermark, not only the
        // position: with the watermark at 2 (the gap), record 3 (written) is not yet delivered.
        let copy = copy_of(&dir);
        let watermark = Arc::new(Watermark::new());
        watermark.publish(2);
        let mut reader = TailReader::new(&copy, Arc::clone(&watermark), 0);
        assert_eq!(seqs(&drain(&mut reader)), [1]);
        watermark.publish(3);
        assert_eq!(seqs(&drain(&mut reader)), [3]);
        watermark.publish(4);
        assert_eq!(seqs(&drain(&mut reader)), [4]);
    });
}

/// A copy of the segments of `dir` in a new directory beside it.
fn copy_of(dir: &Path) -> PathBuf {
    let copy = dir.with_extension("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    copy
}

#[test]
fn a_live_reader_follows_growth_and_rotation_in_order() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let watermark = Arc::new(Watermark::new());
    const COUNT: u64 = 600;
    let reader = {
        let (dir, watermark) = (dir.clone(), Arc::clone(&watermark));
        std::thread::spawn(move || {
            // The directory does not exist yet: the reader waits for it.
            let mut reader = TailReader::new(&dir, watermark, 0);
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while (got.len() as u64) < COUNT && Instant::now() < deadline {
                match reader.next(Duration::from_millis(100)) {
                    Ok(Some(view)) => got.push((view.seq, view.payload.to_vec())),
                    Ok(None) => {}
                    // The directory is created by the journal once it opens.
                    Err(mllpd::journal::TailError::Io { .. }) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            got
        })
    };
    let inner = dir.clone();
    let writer_mark = Arc::clone(&watermark);
    run(move || async move {
        let options = JournalOptions {
            segment_bytes_max: 8 * 1024,
            watermark: writer_mark,
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        for n in 1..=COUNT {
            let seq = journal.append(&record(&message(n))).unwrap().seq();
            if n % 7 == 0 {
                journal.wait_durable(seq).await.unwrap();
            }
        }
        journal.close().await.unwrap();
    });
    let got = reader.join().unwrap();
    assert!(segments(&dir) > 5, "rotated {} times", segments(&dir));
    let expected: Vec<(u64, Vec<u8>)> = (1..=COUNT).map(|n| (n, message(n))).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "records out of order or altered");
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

/// A journal of `count` records in `segment_bytes_max` segments under `data`, closed.
fn journal_of(data: &Path, count: u64, segment_bytes_max: u64) -> PathBuf {
    let dir = shard_dir(data, 0);
    let inner = dir.clone();
    run(move || async move {
        let options = JournalOptions {
            segment_bytes_max,
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        for n in 1..=count {
            let seq = journal.append(&record(&message(n))).unwrap().seq();
            if n % 10 == 0 {
                journal.wait_durable(seq).await.unwrap(); // batches of 10: segments rotate
            }
        }
        journal.close().await.unwrap();
    });
    dir
}

#[test]
fn a_reader_resumes_after_its_cursor_in_any_segment() {
    let data = tempfile::tempdir().unwrap();
    let dir = journal_of(data.path(), 200, 4 * 1024);
    assert!(segments(&dir) > 3);
    let watermark = Arc::new(Watermark::new());
    watermark.publish(200);
    for cursor in [0, 1, 57, 199, 200] {
        let mut reader = TailReader::new(&dir, Arc::clone(&watermark), cursor);
        let got = drain(&mut reader);
        assert_eq!(seqs(&got), (cursor + 1..=200).collect::<Vec<_>>());
        assert_eq!(reader.position(), 200);
    }
}

#[test]
fn a_tail_past_the_watermark_or_torn_is_not_read_until_durable() {
    let data = tempfile::tempdir().unwrap();
    let source = journal_of(data.path(), 4, 1 << 20);
    // A copy of the segment as a reader could find it mid-write: four whole records, then half
    // of a fifth (the copy of record 4 cut in the middle).
    let copy = data.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let name = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let bytes = std::fs::read(&name).unwrap();
    let record_len = message(4).len() + 62;
    let whole = bytes.len();
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[whole - record_len..whole - record_len / 2]);
    std::fs::write(copy.join(name.file_name().unwrap()), &torn).unwrap();
    let watermark = Arc::new(Watermark::new());
    watermark.publish(3);
    let mut reader = TailReader::new(&copy, Arc::clone(&watermark), 0);
    // Record 4 is whole but past the watermark: not yet.
    assert_eq!(seqs(&drain(&mut reader)), [1, 2, 3]);
    watermark.publish(4);
    assert_eq!(seqs(&drain(&mut reader)), [4]);
    // The torn fifth is past the watermark: waited for, not an error, not skipped.
    watermark.publish(5);
    assert!(drain(&mut reader).is_empty());
    assert_eq!(reader.position(), 4);
}

#[test]
fn retention_keeps_what_a_connector_has_not_delivered_and_says_so() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let watermark = Arc::new(Watermark::new());
        // A connector has confirmed up to 49: records from 50 on are still needed.
        watermark.set_floor(Some(50));
        let options = JournalOptions {
            segment_bytes_max: 4 * 1024,
            retention_bytes: Some(0),
            watermark: Arc::clone(&watermark),
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        for n in 1..=200 {
            let seq = journal.append(&record(&message(n))).unwrap().seq();
            if n % 10 == 0 {
                journal.wait_durable(seq).await.unwrap();
            }
        }
        let stats = journal.stats();
        assert!(stats.segments_deleted > 0, "retention ran: {stats:?}");
        assert!(stats.segments_held > 0, "the hold is counted: {stats:?}");
        // Everything from the floor on is still there, in order.
        let mut reader = TailReader::new(&inner, Arc::clone(&watermark), 49);
        assert_eq!(seqs(&drain(&mut reader)), (50..=200).collect::<Vec<_>>());
        // Released: the next pass deletes what was held.
        watermark.set_floor(None);
        for n in 201..=230 {
            let seq = journal.append(&record(&message(n))).unwrap().seq();
            journal.wait_durable(seq).await.unwrap();
        }
        assert_eq!(journal.stats().segments_held, 0);
        let mut reader = TailReader::new(&inner, Arc::clone(&watermark), 49);
        let first = reader.next(Duration::ZERO).unwrap().unwrap().seq;
        assert!(
            first > 50,
            "the held segments were deleted once released ({first})"
        );
        journal.close().await.unwrap();
    });
}

#[test]
fn a_journal_whose_shard_no_longer_runs_is_still_delivered_to_its_end() {
    use mllpd::route::{ConnectorOptions, Engine, EngineOptions, RoutingOptions, Target};
    let data = tempfile::tempdir().unwrap();
    // Shard 1 ran before SHARDS was lowered to 1; shard 0 runs now (empty journal).
    journal_of_shard(data.path(), 1, 25);
    journal_of_shard(data.path(), 0, 0);
    let out = data.path().join("out");
    let options = EngineOptions {
        data_dir: data.path().to_owned(),
        shards: 1,
        routing: RoutingOptions {
            connectors: vec![ConnectorOptions {
                name: "archive".to_owned(),
                target: Target::File { dir: out.clone() },
                filter: None,
                sync: None,
            }],
            ..RoutingOptions::default()
        },
        cpus: Vec::new(),
        parse_options: mllpd::hl7::ParseOptions::default(),
    };
    let mut engine = Engine::prepare(options).unwrap();
    // `journal stats` names it, and says it is held until delivered (nothing delivered yet).
    let before = journal_stats(data.path());
    assert!(
        before.contains(
            "orphan journal: shard-1 (its shard no longer runs: SHARDS=1 at the last start): \
             still being delivered, kept until then; held by archive (25 behind)"
        ),
        "{before}"
    );
    assert!(!before.contains("orphan journal: shard-0"), "{before}");
    engine.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".hl7") && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    while files().len() < 25 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Idle on a journal that will not grow: the worker must wait, not spin. Only the delivery
    // threads are counted: the other tests of this binary run in threads of this process.
    let cpu = || {
        let mut ticks = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("mllpd-deliver") {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let fields: Vec<u64> = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .skip(11)
                .take(2)
                .map(|f| f.parse().unwrap())
                .collect();
            ticks += fields[0] + fields[1];
        }
        ticks
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu() - before;
    engine.stop();
    let names = files();
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], format!("001-{:020}.hl7", 1));
    assert_eq!(
        std::fs::read(out.join(&names[24])).unwrap(),
        message(25),
        "delivered to its end"
    );
    assert!(
        ticks < 20,
        "an idle worker spun: {ticks} ticks of CPU in 1 s"
    );
    let cursor = std::fs::read(data.path().join("connectors/archive/shard-1.cursor")).unwrap();
    assert_eq!(u64::from_le_bytes(cursor[8..16].try_into().unwrap()), 25);
    let after = journal_stats(data.path());
    assert!(
        after.contains(
            "orphan journal: shard-1 (its shard no longer runs: SHARDS=1 at the last start): \
             delivered to its end by every connector: it can be removed"
        ),
        "{after}"
    );
}

/// The output of `mllpd journal stats --data-dir DATA`.
fn journal_stats(data: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .env_clear()
        .args(["journal", "stats", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A closed journal of `count` records for shard `shard` under `data`.
fn journal_of_shard(data: &Path, shard: usize, count: u64) {
    let dir = shard_dir(data, shard);
    run(move || async move {
        let (journal, _) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        for n in 1..=count {
            journal.append(&record(&message(n))).unwrap();
        }
        journal.close().await.unwrap();
    });
}
