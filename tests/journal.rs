//! Journal tests over real files (issue 4 item 9): torn tails at every byte offset, injected
//! ENOSPC and fdatasync failures, group commit flush counts, dedup across a restart, retention,
//! and the read-only stats/export tools (library and binary).
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use mllpd::journal::{
    export, shard_dir, Append, DedupKey, FaultPlan, Journal, JournalError, JournalOptions,
    RecordRef, SyncMode,
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

fn message(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|{control_id}|P|2.5\rPID|1||{control_id}\r")
        .into_bytes()
}

fn record<'a>(payload: &'a [u8], key: Option<DedupKey<'a>>, time: u64) -> RecordRef<'a> {
    RecordRef {
        receive_time_unix_micros: time,
        connection_id: 7,
        peer: Some("127.0.0.1:40000".parse().unwrap()),
        payload,
        dedup_key: key,
        client: None,
    }
}

fn key(control_id: &[u8]) -> DedupKey<'_> {
    DedupKey {
        sending_application: b"LAB",
        sending_facility: b"HOSP",
        control_id,
    }
}

/// Appends `payload` and waits for its flush.
async fn store(journal: &Journal, payload: &[u8]) -> (u64, Result<(), JournalError>) {
    let seq = journal
        .append(&record(payload, None, now_micros()))
        .unwrap()
        .seq();
    (seq, journal.wait_durable(seq).await)
}

/// The payloads exported from `data_dir`, in order.
fn exported(data_dir: &Path, shard: Option<usize>, from: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    export::export(data_dir, shard, from, &mut out).unwrap();
    out.split(|&b| b == 0x0B)
        .skip(1)
        .map(|frame| {
            assert!(frame.ends_with(&[0x1C, 0x0D]));
            frame[..frame.len() - 2].to_vec()
        })
        .collect()
}

/// Waits (up to 5 s) until `done()`.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached in 5 s");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn lone_append_is_flushed_at_once_and_survives_reopen() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let (journal, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        assert_eq!(recovery.next_seq, 1);
        let (seq, durable) = store(&journal, &message("1")).await;
        assert_eq!((seq, durable), (1, Ok(())));
        let stats = journal.stats();
        assert_eq!((stats.flushes, stats.records_flushed), (1, 1));
        assert_eq!(stats.settled_seq, 1);
        journal.close().await.unwrap();
        assert_eq!(
            journal.append(&record(b"x", None, 0)),
            Err(JournalError::Closed)
        );
        let (journal, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        assert_eq!(recovery.last_seq, Some(1));
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(store(&journal, &message("2")).await, (2, Ok(())));
    });
    assert_eq!(exported(data.path(), None, 0), [message("1"), message("2")]);
}

#[test]
fn a_second_journal_on_the_same_directory_is_refused_until_the_first_closes() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let (journal, _) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        let error = Journal::open(JournalOptions::new(&dir)).await.unwrap_err();
        assert!(
            error.to_string().contains("held by another mllpd"),
            "{error}"
        );
        assert_eq!(store(&journal, b"still mine").await, (1, Ok(())));
        journal.close().await.unwrap();
        let (journal, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        assert_eq!(recovery.last_seq, Some(1));
        assert_eq!(store(&journal, b"next").await, (2, Ok(())));
    });
}

#[test]
fn appends_during_a_flush_share_the_next_one() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        faults.flush_delay.set(Duration::from_millis(50));
        let options = JournalOptions {
            faults: Some(Rc::clone(&faults)),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        let first = journal.append(&record(b"first", None, 0)).unwrap().seq();
        while !journal.stats().flush_in_progress {
            futures_lite::future::yield_now().await;
        }
        let mut last = 0;
        for i in 0..100 {
            let payload = format!("message {i}");
            last = journal
                .append(&record(payload.as_bytes(), None, 0))
                .unwrap()
                .seq();
        }
        assert_eq!(journal.stats().pending_records, 100);
        let (a, b) =
            futures_lite::future::zip(journal.wait_durable(first), journal.wait_durable(last))
                .await;
        assert_eq!((a, b), (Ok(()), Ok(())));
        let stats = journal.stats();
        assert_eq!(stats.flushes, 2, "{stats:?}");
        assert_eq!(stats.records_flushed, 101);
    });
    assert_eq!(exported(data.path(), None, 0).len(), 101);
}

#[test]
fn batches_go_on_beside_the_readying_of_space_and_never_wait_for_it() {
    // A new segment starts with 256 KiB ready (zeros written and flushed); the journal readies
    // the next piece beside the batches, not in front of them. The readying is slowed by a
    // fault (3 s: a margin for a busy machine) so a batch can be seen to go on while it runs;
    // then a batch that crosses the first 256 KiB finds its space ready.
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        let options = JournalOptions {
            faults: Some(Rc::clone(&faults)),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        faults.ready_delay.set(Duration::from_secs(3));
        assert_eq!(store(&journal, &message("1")).await.1, Ok(()));
        // The next piece is being readied now; this batch does not wait for it.
        assert_eq!(store(&journal, &message("2")).await.1, Ok(()));
        let stats = journal.stats();
        assert_eq!(
            (stats.pieces_readied, stats.space_waits),
            (0, 0),
            "{stats:?}"
        );
        // Wait for the piece itself (yielding, so its timer and IO run), then one batch takes
        // it in.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while faults.pieces_readied.get() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no piece readied in 30 s"
            );
            futures_lite::future::yield_now().await;
        }
        assert_eq!(store(&journal, &message("3")).await.1, Ok(()));
        assert_eq!(journal.stats().pieces_readied, 1);
        // 300 KiB: past the first 256 KiB, inside the piece readied beside the batches.
        let big = vec![b'x'; 300 * 1024];
        assert_eq!(store(&journal, &big).await.1, Ok(()));
        let stats = journal.stats();
        assert_eq!(stats.space_waits, 0, "a batch waited for space: {stats:?}");
        assert!(stats.segment_bytes > 256 * 1024, "{stats:?}");
        journal.close().await.unwrap();
    });
    let payloads = exported(data.path(), None, 0);
    assert_eq!(payloads.last().map(Vec::len), Some(300 * 1024));
    assert_eq!(payloads[..2], [message("1"), message("2")]);
}

#[test]
fn a_full_batch_refuses_until_there_is_room() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        faults.flush_delay.set(Duration::from_millis(20));
        let options = JournalOptions {
            batch_records_max: 10,
            faults: Some(faults),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        journal.append(&record(b"0", None, 0)).unwrap();
        while !journal.stats().flush_in_progress {
            futures_lite::future::yield_now().await;
        }
        for _ in 0..10 {
            journal.append(&record(b"n", None, 0)).unwrap();
        }
        assert_eq!(
            journal.append(&record(b"n+1", None, 0)),
            Err(JournalError::BatchFull)
        );
        journal.wait_room().await;
        let seq = journal.append(&record(b"n+1", None, 0)).unwrap().seq();
        assert_eq!(seq, 12);
        assert_eq!(journal.wait_durable(seq).await, Ok(()));
        assert_eq!(journal.stats().batch_full, 1);
    });
}

#[test]
fn a_batch_is_bounded_in_bytes_but_a_big_record_goes_alone() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        faults.flush_delay.set(Duration::from_millis(20));
        let options = JournalOptions {
            batch_bytes_max: 1000,
            faults: Some(faults),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        let big = vec![b'x'; 5000];
        let seq = journal.append(&record(&big, None, 0)).unwrap().seq();
        while !journal.stats().flush_in_progress {
            futures_lite::future::yield_now().await;
        }
        let half = vec![b'y'; 500];
        journal.append(&record(&half, None, 0)).unwrap();
        assert_eq!(
            journal.append(&record(&half, None, 0)),
            Err(JournalError::BatchFull)
        );
        assert_eq!(journal.wait_durable(seq).await, Ok(()));
    });
}

/// The bytes of a segment up to the end of its records: the writer readies zeros after them
/// (a record never ends with a zero byte here: every test payload ends with a letter or digit).
fn records_of(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    bytes
}

/// Writes records 1..=3 through a journal; returns the segment bytes and where record 3 starts.
fn three_record_segment() -> (Vec<u8>, usize) {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let (journal, _) = Journal::open(JournalOptions::new(&inner)).await.unwrap();
        for id in ["1", "2", "3"] {
            assert_eq!(store(&journal, &message(id)).await.1, Ok(()));
        }
    });
    let bytes = records_of(&segments(&dir)[0]);
    // Record 3's length: its encoded size is the same as the other two (same-length payloads).
    let record_len = (bytes.len() - mllpd::journal::SEGMENT_HEADER_BYTES) / 3;
    (bytes.clone(), bytes.len() - record_len)
}

#[test]
fn a_torn_tail_is_cut_at_every_byte_offset_and_the_sequence_continues() {
    let (bytes, third) = three_record_segment();
    let data = tempfile::tempdir().unwrap();
    let root = data.path().to_owned();
    run(move || async move {
        // Plain: the file ends inside the record. Padded: the torn record is followed by the
        // zeros the writer readied ahead, as after a crash in the middle of a batch's write.
        for (cut, padded) in (third..bytes.len()).flat_map(|c| [(c, false), (c, true)]) {
            let dir = root.join(format!("cut-{cut}-{padded}"));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("00000000000000000001.seg");
            let mut file = bytes[..cut].to_vec();
            if padded {
                file.resize(64 * 1024, 0);
            }
            std::fs::write(&path, &file).unwrap();
            let (journal, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
            assert_eq!(recovery.last_seq, Some(2), "cut at {cut}, {padded}");
            if !padded {
                assert_eq!(
                    recovery.truncated_bytes,
                    (cut - third) as u64,
                    "cut at {cut}"
                );
                assert_eq!(std::fs::metadata(&path).unwrap().len(), third as u64);
            }
            assert_eq!(
                store(&journal, &message("4")).await,
                (3, Ok(())),
                "cut at {cut}"
            );
            journal.close().await.unwrap();
            let payloads = read_dir_payloads(&dir);
            assert_eq!(
                payloads,
                [message("1"), message("2"), message("4")],
                "cut at {cut}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

#[test]
fn a_flipped_byte_in_the_last_record_is_a_torn_tail() {
    let (mut bytes, third) = three_record_segment();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(dir.join("00000000000000000001.seg"), &bytes).unwrap();
    run(move || async move {
        let (_, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        assert_eq!(recovery.last_seq, Some(2));
        assert_eq!(recovery.next_seq, 3);
        assert_eq!(recovery.truncated_bytes, (bytes.len() - third) as u64);
    });
}

#[test]
fn damage_in_a_closed_segment_refuses_to_open() {
    let (mut bytes, third) = three_record_segment();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    bytes[third - 3] ^= 0x01; // inside record 2
    std::fs::write(dir.join("00000000000000000001.seg"), &bytes).unwrap();
    // A valid, empty successor: segment 1 is closed, so its damage is not a torn tail.
    let mut header = b"MLLPDJNL".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&4u64.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32c_of(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("00000000000000000004.seg"), &header).unwrap();
    run(move || async move {
        // Closed segments are read at open when they may hold keys of the dedup window.
        let options = JournalOptions {
            dedup_window: Some(Duration::from_secs(600)),
            ..JournalOptions::new(&dir)
        };
        let error = Journal::open(options).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("00000000000000000001.seg"), "{text}");
        assert!(text.contains("damaged"), "{text}");
        // A damaged header is found in any segment.
        let mut broken = bytes.clone();
        broken[3] ^= 1;
        std::fs::write(dir.join("00000000000000000001.seg"), &broken).unwrap();
        let error = Journal::open(JournalOptions::new(&dir)).await.unwrap_err();
        assert!(error.to_string().contains("bad magic"), "{error}");
    });
}

#[test]
fn an_empty_successor_continues_the_sequence_from_its_name() {
    let (bytes, _) = three_record_segment();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    std::fs::write(dir.join("00000000000000000001.seg"), &bytes).unwrap();
    let mut header = b"MLLPDJNL".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&9u64.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32c_of(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("00000000000000000009.seg"), &header).unwrap();
    // A crash right after creating a segment leaves a file without a header: removed.
    std::fs::write(dir.join("00000000000000000010.seg"), b"MLLP").unwrap();
    run(move || async move {
        let (journal, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        assert_eq!(recovery.removed_segments, 1);
        assert_eq!(recovery.segments, 2);
        assert_eq!(recovery.next_seq, 9);
        assert_eq!(store(&journal, b"next").await, (9, Ok(())));
    });
}

/// CRC32C (Castagnoli), bitwise: an oracle independent of the crate's.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Payloads of the records in a shard directory, via the segment reader.
fn read_dir_payloads(dir: &Path) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    for path in segments(dir) {
        let mut reader = mllpd::journal::SegmentReader::open(&path).unwrap().unwrap();
        while let mllpd::journal::Next::Record(r) = reader.next_record().unwrap() {
            payloads.push(r.payload.to_vec());
        }
    }
    payloads
}

#[test]
fn no_space_fails_that_batch_only_and_keeps_a_clean_tail() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        let options = JournalOptions {
            dedup_window: Some(Duration::from_secs(600)),
            faults: Some(Rc::clone(&faults)),
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options.clone()).await.unwrap();
        assert_eq!(store(&journal, &message("1")).await, (1, Ok(())));
        faults.enospc_writes.set(1);
        let lost = message("2");
        let seq = journal
            .append(&record(&lost, Some(key(b"2")), now_micros()))
            .unwrap();
        assert_eq!(seq, Append::Stored(2));
        assert_eq!(journal.wait_durable(2).await, Err(JournalError::NoSpace));
        assert!(!journal.is_poisoned());
        assert_eq!(journal.stats().batches_cut, 1);
        // The injected ENOSPC wrote the batch (one block: all of it) before failing. Restart
        // now, with the failed batch last: had it not been cut, recovery would find it whole.
        assert_eq!(journal.close().await, Err(JournalError::NoSpace));
        let (journal, recovery) = Journal::open(options.clone()).await.unwrap();
        assert_eq!(recovery.last_seq, Some(1), "{recovery:?}");
        assert_eq!(recovery.truncated_bytes, 0, "the failed batch was cut back");
        // The sender retries after its AE: the failed record is not a duplicate.
        let retried = journal
            .append(&record(&lost, Some(key(b"2")), now_micros()))
            .unwrap();
        assert_eq!(retried, Append::Stored(2));
        assert_eq!(journal.wait_durable(2).await, Ok(()));
        // A batch of many blocks, half written: its first records are whole on disk.
        faults.enospc_writes.set(1);
        let big: Vec<Vec<u8>> = (0..40)
            .map(|i| message(&format!("big-{i:03}-{}", "x".repeat(400))))
            .collect();
        let seqs: Vec<u64> = big
            .iter()
            .map(|m| {
                journal
                    .append(&record(m, None, now_micros()))
                    .unwrap()
                    .seq()
            })
            .collect();
        for seq in seqs {
            assert_eq!(journal.wait_durable(seq).await, Err(JournalError::NoSpace));
        }
        assert_eq!(store(&journal, &message("3")).await.1, Ok(()));
        let stats = journal.stats();
        assert_eq!(
            (stats.flushes, stats.batches_failed, stats.batches_cut),
            (2, 1, 1)
        );
        journal.close().await.unwrap();
        let (_, recovery) = Journal::open(options).await.unwrap();
        assert_eq!(
            recovery.truncated_bytes, 0,
            "the half-written batch was cut back"
        );
    });
    assert_eq!(
        read_dir_payloads(&dir),
        [message("1"), message("2"), message("3")]
    );
}

#[test]
fn a_failed_fdatasync_poisons_for_good() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        let options = JournalOptions {
            faults: Some(Rc::clone(&faults)),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        assert_eq!(store(&journal, b"ok").await, (1, Ok(())));
        faults.failed_syncs.set(1);
        assert_eq!(
            store(&journal, b"lost").await,
            (2, Err(JournalError::Poisoned))
        );
        assert!(journal.is_poisoned());
        assert!(journal.stats().poisoned);
        assert_eq!(
            journal.append(&record(b"later", None, 0)),
            Err(JournalError::Poisoned)
        );
        // Already durable before the failure: still Ok.
        assert_eq!(journal.wait_durable(1).await, Ok(()));
        assert_eq!(journal.wait_durable(2).await, Err(JournalError::Poisoned));
        // A restart runs recovery and serves again (close releases the directory lock).
        assert_eq!(journal.close().await, Err(JournalError::Poisoned));
        let (journal, recovery) = Journal::open(JournalOptions::new(&dir)).await.unwrap();
        assert!(recovery.next_seq >= 2);
        assert!(!journal.is_poisoned());
        let (_, durable) = store(&journal, b"after restart").await;
        assert_eq!(durable, Ok(()));
    });
}

#[test]
fn duplicates_within_the_window_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let options = JournalOptions {
            dedup_window: Some(Duration::from_secs(600)),
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options.clone()).await.unwrap();
        let now = now_micros();
        let m = message("A1");
        assert_eq!(
            journal.append(&record(&m, Some(key(b"A1")), now)),
            Ok(Append::Stored(1))
        );
        assert_eq!(
            journal.append(&record(&m, Some(key(b"A1")), now + 1)),
            Ok(Append::Duplicate(1))
        );
        assert_eq!(journal.wait_durable(1).await, Ok(()));
        let other = DedupKey {
            sending_facility: b"OTHER",
            ..key(b"A1")
        };
        assert_eq!(
            journal.append(&record(&m, Some(other), now)),
            Ok(Append::Stored(2))
        );
        let late = now + 601_000_000;
        assert_eq!(
            journal.append(&record(&m, Some(key(b"A1")), late)),
            Ok(Append::Stored(3))
        );
        assert_eq!(journal.stats().duplicates, 1);
        journal.close().await.unwrap();

        let (journal, recovery) = Journal::open(options.clone()).await.unwrap();
        assert_eq!(recovery.dedup_keys, 2, "{recovery:?}");
        let again = journal.append(&record(&m, Some(other), now_micros()));
        assert_eq!(again, Ok(Append::Duplicate(2)));
        journal.close().await.unwrap();

        // Without a window nothing is a duplicate.
        let (journal, _) = Journal::open(JournalOptions::new(&inner)).await.unwrap();
        assert_eq!(
            journal.append(&record(&m, Some(other), now_micros())),
            Ok(Append::Stored(4))
        );
    });
}

#[test]
fn segments_rotate_and_retention_deletes_only_old_closed_ones() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let base = JournalOptions {
            segment_bytes_max: 400,
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(base.clone()).await.unwrap();
        journal.set_retention_floor(Some(1));
        for i in 0..6 {
            let payload = vec![b'0' + i; 300];
            assert_eq!(store(&journal, &payload).await.1, Ok(()));
        }
        assert_eq!(segments(&inner).len(), 6);
        assert_eq!(journal.stats().segments, 6);
        journal.close().await.unwrap();

        // A floor holding record 1 keeps everything, whatever the bounds.
        // Deliberate: time passes, so every closed segment is past the 1 ms age bound.
        std::thread::sleep(Duration::from_millis(20));
        let held = JournalOptions {
            retention_age: Some(Duration::from_millis(1)),
            ..base.clone()
        };
        let (journal, _) = Journal::open(held.clone()).await.unwrap();
        // Retention at open runs before a floor is set: age deletes the 5 closed ones.
        eventually(|| journal.stats().segments_deleted == 5).await;
        assert_eq!(
            segments(&inner).len(),
            1,
            "the active segment is never deleted"
        );
        let kept = segments(&inner);
        assert!(kept[0].ends_with("00000000000000000006.seg"), "{kept:?}");
        journal.set_retention_floor(Some(7));
        for i in 0..3 {
            let payload = vec![b'a' + i; 300];
            assert_eq!(store(&journal, &payload).await.1, Ok(()));
        }
        // Segments 6..=8 are closed now but hold records >= 7 (6 is below the floor).
        // Deliberate: time passes, so they are past the 1 ms age bound.
        std::thread::sleep(Duration::from_millis(5));
        journal.set_retention_floor(Some(7));
        assert_eq!(store(&journal, b"tick").await.1, Ok(()));
        eventually(|| journal.stats().segments_deleted == 6).await;
        let names: Vec<String> = segments(&inner)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("00000000000000000006")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("00000000000000000007")),
            "{names:?}"
        );
    });
}

#[test]
fn retention_runs_on_a_timer_while_idle_and_the_journal_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let options = JournalOptions {
            segment_bytes_max: 400,
            retention_age: Some(Duration::from_millis(1)),
            retention_interval: Duration::from_millis(10),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        journal.set_retention_floor(Some(1));
        for i in 0..4 {
            assert_eq!(store(&journal, &[b'0' + i; 300]).await.1, Ok(()));
        }
        // Deliberate observation window: five retention ticks, and the floor holds.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(journal.stats().segments, 4, "the floor holds every segment");
        journal.set_retention_floor(None);
        eventually(|| journal.stats().segments == 1).await;
        assert_eq!(segments(&dir).len(), 1);
        assert_eq!(store(&journal, b"after").await, (5, Ok(())));
    });
}

#[test]
fn retention_bytes_keeps_the_newest_segments_within_the_bound() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let options = JournalOptions {
            segment_bytes_max: 400,
            retention_bytes: Some(1000),
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        for i in 0..8 {
            let payload = vec![b'0' + i; 300];
            assert_eq!(store(&journal, &payload).await.1, Ok(()));
        }
        eventually(|| journal.stats().segments == 2).await;
        let stats = journal.stats();
        assert!(stats.segment_bytes <= 1000, "{stats:?}");
        assert!(segments(&inner)[0].ends_with("00000000000000000007.seg"));
    });
    let payloads = exported(data.path(), None, 0);
    assert_eq!(payloads, [vec![b'6'; 300], vec![b'7'; 300]]);
}

#[test]
fn stats_and_export_cover_every_shard_and_stop_at_a_tail_being_written() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().to_owned();
    run(move || async move {
        for (shard, count) in [(0usize, 3u8), (1, 2)] {
            let options = JournalOptions {
                sync: SyncMode::Disabled,
                ..JournalOptions::new(shard_dir(&root, shard))
            };
            let (journal, _) = Journal::open(options).await.unwrap();
            for i in 0..count {
                let payload = format!("MSH|s{shard}|{i}");
                assert_eq!(store(&journal, payload.as_bytes()).await.1, Ok(()));
            }
        }
    });
    // A half-written record at the end of shard 1, as a live reader may see it.
    let tail = segments(&shard_dir(data.path(), 1))[0].clone();
    // The writer readies zeros after its records; a live reader may find a half-written
    // record there instead.
    let mut bytes = records_of(&tail);
    let before = bytes.len();
    bytes.extend_from_slice(&[60, 0, 0, 0, 1, 2]);
    std::fs::write(&tail, &bytes).unwrap();

    let stats = export::stats(data.path()).unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(
        (stats[0].records, stats[0].first_seq, stats[0].last_seq),
        (3, Some(1), Some(3))
    );
    assert_eq!((stats[1].records, stats[1].last_seq), (2, Some(2)));
    assert_eq!(stats[1].incomplete_bytes, 6);
    assert_eq!(
        std::fs::metadata(&tail).unwrap().len(),
        before as u64 + 6,
        "readers never truncate"
    );

    let mut out = Vec::new();
    let summary = export::export(data.path(), None, 0, &mut out).unwrap();
    let frames = |payloads: &[&str]| -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|p| [&[0x0B][..], p.as_bytes(), &[0x1C, 0x0D]].concat())
            .collect()
    };
    let expected = frames(&["MSH|s0|0", "MSH|s0|1", "MSH|s0|2", "MSH|s1|0", "MSH|s1|1"]);
    assert_eq!(out, expected);
    assert_eq!(summary.records, 5);
    assert_eq!(
        exported(data.path(), Some(0), 2),
        [b"MSH|s0|1".to_vec(), b"MSH|s0|2".to_vec()]
    );

    // The binary, end to end.
    let bin = env!("CARGO_BIN_EXE_mllpd");
    let output = std::process::Command::new(bin)
        .args(["journal", "stats", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>()[..3],
        ["0", "1", "3"]
    );
    let file = data.path().join("export.mllp");
    let status = std::process::Command::new(bin)
        .args(["journal", "export", "--data-dir"])
        .arg(data.path())
        .args(["--shard", "1", "--output"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&file).unwrap(),
        frames(&["MSH|s1|0", "MSH|s1|1"])
    );
}

/// xorshift64*: a deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Model check: concurrent appenders, random injected ENOSPC, small segments. After reopening,
/// the journal holds exactly the records whose wait said `Ok`, in sequence order, each once,
/// and none whose wait said `NoSpace`.
#[test]
fn what_was_acknowledged_is_exactly_what_recovery_finds() {
    for seed in [1u64, 7, 42, 1234, 99_991] {
        let data = tempfile::tempdir().unwrap();
        let dir = shard_dir(data.path(), 0);
        let inner = dir.clone();
        run(move || async move {
            let mut rng = Rng(seed);
            let faults = Rc::new(FaultPlan::new());
            let options = JournalOptions {
                segment_bytes_max: 2000,
                batch_records_max: 8,
                faults: Some(Rc::clone(&faults)),
                ..JournalOptions::new(&inner)
            };
            let (journal, _) = Journal::open(options.clone()).await.unwrap();
            let outcomes = Rc::new(std::cell::RefCell::new(Vec::new()));
            for round in 0..30 {
                if rng.below(4) == 0 {
                    faults.enospc_writes.set(1);
                }
                let delay = Duration::from_micros(rng.below(3) * 500);
                faults.flush_delay.set(delay);
                let appenders = 1 + rng.below(20);
                let tasks: Vec<_> = (0..appenders)
                    .map(|i| {
                        let journal = Rc::clone(&journal);
                        let outcomes = Rc::clone(&outcomes);
                        let payload =
                            format!("seed {seed} round {round} appender {i}").into_bytes();
                        glommio::spawn_local(async move {
                            let seq = loop {
                                match journal.append(&record(&payload, None, 0)) {
                                    Ok(append) => break append.seq(),
                                    Err(JournalError::BatchFull) => journal.wait_room().await,
                                    Err(e) => panic!("{e}"),
                                }
                            };
                            let outcome = journal.wait_durable(seq).await;
                            outcomes.borrow_mut().push((seq, payload, outcome));
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await;
                }
            }
            // The last batch fails after reaching the file: only the cut keeps it from being
            // read back at recovery.
            faults.enospc_writes.set(1);
            let payload = format!("seed {seed} last").into_bytes();
            let (seq, outcome) = store(&journal, &payload).await;
            assert_eq!(outcome, Err(JournalError::NoSpace), "seed {seed}");
            outcomes.borrow_mut().push((seq, payload, outcome));
            let stats = journal.stats();
            assert!(
                stats.records_flushed > stats.flushes,
                "seed {seed}: no group commit"
            );
            journal.close().await.unwrap_or(());
            assert!(segments(&inner).len() > 1, "seed {seed}: no rotation");
            let (_, recovery) = Journal::open(options).await.unwrap();
            assert_eq!(recovery.truncated_bytes, 0, "seed {seed}");
            let mut outcomes = outcomes.take();
            outcomes.sort_by_key(|(seq, _, _)| *seq);
            assert!(
                outcomes.iter().any(|(_, _, o)| o.is_err()),
                "seed {seed}: no fault hit"
            );
            let expected: Vec<(u64, Vec<u8>)> = outcomes
                .into_iter()
                .filter_map(|(seq, payload, outcome)| match outcome {
                    Ok(()) => Some((seq, payload)),
                    Err(JournalError::NoSpace) => None,
                    Err(e) => panic!("seed {seed}: {e}"),
                })
                .collect();
            let mut found = Vec::new();
            for path in segments(&inner) {
                let mut reader = mllpd::journal::SegmentReader::open(&path).unwrap().unwrap();
                while let mllpd::journal::Next::Record(r) = reader.next_record().unwrap() {
                    found.push((r.seq, r.payload.to_vec()));
                }
            }
            assert_eq!(found, expected, "seed {seed}");
        });
    }
}

#[test]
fn space_is_readied_ahead_and_a_closed_segment_is_cut_to_its_records() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let options = JournalOptions {
            segment_bytes_max: 2048,
            ..JournalOptions::new(&inner)
        };
        let (journal, _) = Journal::open(options.clone()).await.unwrap();
        for i in 0..30 {
            assert_eq!(store(&journal, &message(&i.to_string())).await.1, Ok(()));
        }
        journal.close().await.unwrap();
        // The zeros after the last record are not a torn tail, and the next start appends
        // right after the records, into them.
        let (journal, recovery) = Journal::open(options).await.unwrap();
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(recovery.next_seq, 31);
        for i in 30..32 {
            assert_eq!(store(&journal, &message(&i.to_string())).await.1, Ok(()));
        }
        journal.close().await.unwrap();
    });
    let files = segments(&dir);
    assert!(files.len() >= 3, "rotated: {files:?}");
    for closed in &files[..files.len() - 1] {
        let size = std::fs::metadata(closed).unwrap().len();
        assert_eq!(size, records_of(closed).len() as u64, "{closed:?} cut");
        assert!(size <= 2048);
    }
    let active = files.last().unwrap();
    assert!(
        std::fs::metadata(active).unwrap().len() >= 256 * 1024,
        "the active segment has zeros readied ahead"
    );
    let expected: Vec<Vec<u8>> = (0..32).map(|i| message(&i.to_string())).collect();
    assert_eq!(read_dir_payloads(&dir), expected);
    // The read-only tools agree: every record, nothing incomplete.
    let stats = mllpd::journal::export::stats(data.path()).unwrap();
    assert_eq!((stats[0].records, stats[0].incomplete_bytes), (32, 0));
}

#[test]
fn records_past_zeros_are_cut_at_recovery_not_revived() {
    let (bytes, third) = three_record_segment();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    // Records 1 and 2, a zero prefix where record 3 began (its first sector never written),
    // then the rest of record 3 intact, then zeros: what a crash mid-write can leave.
    let mut file = bytes.clone();
    file[third..third + 8].fill(0);
    file.resize(64 * 1024, 0);
    let path = dir.join("00000000000000000001.seg");
    std::fs::write(&path, &file).unwrap();
    let inner = dir.clone();
    run(move || async move {
        let (journal, recovery) = Journal::open(JournalOptions::new(&inner)).await.unwrap();
        assert_eq!(recovery.last_seq, Some(2));
        // Record 3's body is gone from the file, so a new record 3 of the same size cannot
        // line up with stale bytes of the old one.
        let on_disk = std::fs::read(inner.join("00000000000000000001.seg")).unwrap();
        assert_eq!(on_disk.len(), third, "cut where the records end");
        assert_eq!(store(&journal, &message("9")).await, (3, Ok(())));
        assert_eq!(store(&journal, &message("8")).await, (4, Ok(())));
        journal.close().await.unwrap();
    });
    assert_eq!(
        read_dir_payloads(&dir),
        [message("1"), message("2"), message("9"), message("8")]
    );
}

#[test]
fn a_restart_on_a_large_segment_ending_mid_block_keeps_appending() {
    // Recovery cuts the active segment where its records end, which is rarely on a block
    // boundary; past the first step of readied space the next step must still be written in
    // whole blocks (direct IO refuses anything else with EINVAL).
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    let inner = dir.clone();
    run(move || async move {
        let options = JournalOptions::new(&inner);
        let (journal, _) = Journal::open(options.clone()).await.unwrap();
        let payload = vec![b'p'; 997];
        let mut last = 0;
        for _ in 0..400 {
            let seq = journal
                .append(&record(&payload, None, now_micros()))
                .unwrap()
                .seq();
            last = seq;
        }
        assert_eq!(journal.wait_durable(last).await, Ok(()));
        journal.close().await.unwrap();
        for round in 0..3 {
            let (journal, recovery) = Journal::open(options.clone()).await.unwrap();
            assert_eq!(recovery.truncated_bytes, 0);
            let (seq, outcome) = store(&journal, &message(&format!("after-{round}"))).await;
            assert_eq!(outcome, Ok(()), "round {round}");
            assert_eq!(seq, 401 + round);
            assert!(!journal.is_poisoned());
            journal.close().await.unwrap();
        }
    });
    assert_eq!(read_dir_payloads(&dir).len(), 403);
}

#[test]
fn while_an_appender_waits_its_turn_nobody_appends_past_it() {
    // A record that does not fit what is left of the batch waits, in turn, for an empty batch;
    // meanwhile a small record that would fit is refused too, rather than overtaking it (in a
    // busy server such overtaking starved the waiting connections for seconds).
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let faults = Rc::new(FaultPlan::new());
        faults.flush_delay.set(Duration::from_millis(100));
        let options = JournalOptions {
            batch_bytes_max: 1000,
            faults: Some(Rc::clone(&faults)),
            ..JournalOptions::new(&dir)
        };
        let (journal, _) = Journal::open(options).await.unwrap();
        let first = journal
            .append(&record(&message("1"), None, now_micros()))
            .unwrap()
            .seq();
        // Batch 1 in flight (taken by the committer, held by the flush delay).
        eventually(|| journal.stats().pending_records == 0).await;
        journal
            .append(&record(&message("2"), None, now_micros()))
            .unwrap();
        let waiter = {
            let journal = Rc::clone(&journal);
            glommio::spawn_local(async move {
                let mut big = message("big");
                big.extend_from_slice(&[b'x'; 800]);
                journal
                    .append_in_turn(&record(&big, None, now_micros()))
                    .await
                    .map(|a| a.seq())
            })
        };
        // The big record found the batch full and waits its turn.
        eventually(|| journal.stats().batch_full >= 1).await;
        let small = message("small");
        assert_eq!(
            journal
                .append(&record(&small, None, now_micros()))
                .map(|a| a.seq()),
            Err(JournalError::BatchFull),
            "a record that fits may not overtake the one waiting its turn"
        );
        let big = waiter.await.unwrap();
        let small = journal
            .append_in_turn(&record(&small, None, now_micros()))
            .await
            .map(|a| a.seq())
            .unwrap();
        assert!(first < big && big < small, "{first} < {big} < {small}");
        assert_eq!(journal.wait_durable(small).await, Ok(()));
    });
}

/// Issue 13: in receipt mode nothing waits for a batch, so records appended within the group
/// delay share one write; the write starts at once when the batch reaches `group_bytes` or
/// someone waits for it. (Without grouping each append below, made after the committer had a
/// chance to run, would be its own write.)
#[test]
fn receipt_mode_groups_writes_by_time_and_size_and_a_waiter_makes_them_due() {
    let data = tempfile::tempdir().unwrap();
    let dir = shard_dir(data.path(), 0);
    run(move || async move {
        let options = JournalOptions {
            sync: SyncMode::Disabled,
            group_delay: Some(Duration::from_secs(2)),
            group_bytes: 4096,
            ..JournalOptions::new(&dir)
        };
        let watermark = std::sync::Arc::clone(&options.watermark);
        let (journal, _) = Journal::open(options).await.unwrap();
        // Time: ten records, the committer given a turn after each; one write once the delay
        // has passed, not before.
        let started = std::time::Instant::now();
        let mut last = 0;
        for i in 0..10 {
            last = journal
                .append(&record(format!("m{i}").as_bytes(), None, 0))
                .unwrap()
                .seq();
            glommio::executor().yield_now().await; // The committer gets its turn.
        }
        assert_eq!(journal.stats().flushes, 0, "written before the group delay");
        eventually(|| watermark.durable() >= last).await;
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert_eq!(journal.stats().flushes, 1, "{:?}", journal.stats());
        // Size: past group_bytes the write starts at once, well before the delay.
        let big = vec![b'x'; 5000];
        let seq = journal.append(&record(&big, None, 0)).unwrap().seq();
        let appended = std::time::Instant::now();
        eventually(|| watermark.durable() >= seq).await;
        assert!(
            appended.elapsed() < Duration::from_secs(1),
            "a full group waited"
        );
        assert_eq!(journal.stats().flushes, 2);
        // A waiter: a small record is written at once for whoever waits on it.
        let seq = journal.append(&record(b"small", None, 0)).unwrap().seq();
        // Let the committer start waiting out the group delay before anyone waits.
        glommio::executor().yield_now().await;
        assert_eq!(journal.stats().flushes, 2);
        let waited = std::time::Instant::now();
        assert_eq!(journal.wait_durable(seq).await, Ok(()));
        assert!(
            waited.elapsed() < Duration::from_secs(1),
            "the waiter waited for the delay"
        );
        journal.close().await.unwrap();
    });
    assert_eq!(exported(data.path(), None, 0).len(), 12);
}
