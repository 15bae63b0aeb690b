//! Read-only tools over a data directory: `mllpd journal stats` and `mllpd journal export`.
//!
//! Plain `std::fs`, safe to run while the server writes: a reader stops at the first incomplete
//! or damaged record of a segment (the tail being written) and never truncates or deletes. A
//! segment that vanishes while listed (retention) is skipped. Invariant: export writes records in
//! journal order, shard by shard (shards in numeric order), each payload as one MLLP frame.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::segment::{self, Next, SegmentReader};
use super::{OpenError, RecordView};

/// What `journal stats` reports for one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSummary {
    /// The shard number (from `shard-N`).
    pub shard: usize,
    /// Segment files.
    pub segments: usize,
    /// Complete records.
    pub records: u64,
    /// Bytes in the segment files.
    pub bytes: u64,
    /// First sequence number on disk.
    pub first_seq: Option<u64>,
    /// Last sequence number on disk.
    pub last_seq: Option<u64>,
    /// Bytes after the last complete record of a segment (a tail being written, or torn).
    pub incomplete_bytes: u64,
}

/// What `journal export` wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Frames written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The shard directories (`shard-N`) under `data_dir`, in shard order.
pub fn shard_dirs(data_dir: &Path) -> Result<Vec<(usize, PathBuf)>, OpenError> {
    let io_error = |source| OpenError::Io {
        path: data_dir.to_owned(),
        source,
    };
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let (Some(number), true) = (number, entry.path().is_dir()) {
            shards.push((number, entry.path()));
        }
    }
    shards.sort_unstable_by_key(|(n, _)| *n);
    Ok(shards)
}

/// Summarises every shard under `data_dir`.
pub fn stats(data_dir: &Path) -> Result<Vec<ShardSummary>, OpenError> {
    let mut summaries = Vec::new();
    for (shard, dir) in shard_dirs(data_dir)? {
        let mut summary = ShardSummary {
            shard,
            ..ShardSummary::default()
        };
        for_each_record(
            &dir,
            0,
            |record| {
                let seq = record.seq;
                summary.records += 1;
                summary.first_seq.get_or_insert(seq);
                summary.last_seq = Some(seq);
                Ok(())
            },
            |len, incomplete| {
                summary.segments += 1;
                summary.bytes += len;
                summary.incomplete_bytes += incomplete;
            },
        )?;
        summaries.push(summary);
    }
    Ok(summaries)
}

/// The `journal stats` table.
pub fn render_stats(summaries: &[ShardSummary]) -> String {
    let seq = |s: Option<u64>| s.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let mut out = format!(
        "{:<6} {:>9} {:>12} {:>14} {:>20} {:>20}\n",
        "shard", "segments", "records", "bytes", "first_seq", "last_seq"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<6} {:>9} {:>12} {:>14} {:>20} {:>20}\n",
            s.shard,
            s.segments,
            s.records,
            s.bytes,
            seq(s.first_seq),
            seq(s.last_seq)
        ));
    }
    out
}

/// Writes every record with sequence number `from` or later as an MLLP frame to `out`, shard by
/// shard (only `shard` when given).
pub fn export(
    data_dir: &Path,
    shard: Option<usize>,
    from: u64,
    out: &mut dyn Write,
) -> Result<ExportSummary, OpenError> {
    export_with_metadata(data_dir, shard, from, out, None)
}

/// [`export`], and, when `metadata` is given, each record's [`metadata_line`] there, in the
/// same order.
pub fn export_with_metadata(
    data_dir: &Path,
    shard: Option<usize>,
    from: u64,
    out: &mut dyn Write,
    mut metadata: Option<&mut dyn Write>,
) -> Result<ExportSummary, OpenError> {
    let mut summary = ExportSummary::default();
    let mut frame = Vec::new();
    for (number, dir) in shard_dirs(data_dir)? {
        if shard.is_some_and(|s| s != number) {
            continue;
        }
        for_each_record(
            &dir,
            from,
            |record| {
                frame.clear();
                crate::mllp::encode(record.payload, &mut frame);
                summary.records += 1;
                summary.bytes += frame.len() as u64;
                if let Some(metadata) = metadata.as_mut() {
                    writeln!(metadata, "{}", metadata_line(number, record))?;
                }
                out.write_all(&frame)
            },
            |_, _| {},
        )?;
    }
    out.flush().map_err(|source| OpenError::Io {
        path: PathBuf::from("<output>"),
        source,
    })?;
    if let Some(metadata) = metadata {
        metadata.flush().map_err(|source| OpenError::Io {
            path: PathBuf::from("<metadata>"),
            source,
        })?;
    }
    Ok(summary)
}

/// One record's metadata as a JSON object (never its content): `shard`, `seq`,
/// `receive_time_unix_micros`, `connection_id`, `peer` (or null), `client_cn` (or null) and
/// `client_sans` (the verified TLS client's, format version 2 records; [] when none).
pub fn metadata_line(shard: usize, record: &RecordView<'_>) -> serde_json::Value {
    let client = record.client;
    serde_json::json!({
        "shard": shard,
        "seq": record.seq,
        "receive_time_unix_micros": record.receive_time_unix_micros,
        "connection_id": record.connection_id,
        "peer": record.peer.map(|p| p.to_string()),
        "client_cn": client.and_then(|c| c.cn()),
        "client_sans": client.map_or_else(Vec::new, |c| c.sans().collect::<Vec<_>>()),
    })
}

/// Calls `record(view)` for every complete record of `dir` with `seq >= from`, and
/// `segment(len, incomplete_bytes)` after each segment.
fn for_each_record(
    dir: &Path,
    from: u64,
    mut record: impl FnMut(&RecordView<'_>) -> std::io::Result<()>,
    mut segment: impl FnMut(u64, u64),
) -> Result<(), OpenError> {
    let segments = segment::list(dir)?;
    for (i, (_, path)) in segments.iter().enumerate() {
        // Records of this segment are below the next one's first sequence number.
        if segments.get(i + 1).is_some_and(|(next, _)| *next <= from) {
            continue;
        }
        let io_error = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let mut reader = match SegmentReader::open(path) {
            Ok(Some(reader)) => reader,
            Ok(None) => continue,
            Err(OpenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        loop {
            match reader.next_record().map_err(io_error)? {
                Next::Record(r) if r.seq >= from => record(&r).map_err(io_error)?,
                Next::Record(_) => {}
                Next::End | Next::Torn { .. } => break,
            }
        }
        segment(reader.len(), reader.len() - reader.offset());
    }
    Ok(())
}

/// Runs `mllpd journal stats|export`: the table to stdout, or the frames to the output file (or
/// stdout for `-`) with a one-line summary on stderr.
pub fn run(command: &crate::cli::JournalCommand) -> Result<(), OpenError> {
    use crate::cli::JournalCommand;
    match command {
        JournalCommand::Stats { data_dir } => {
            print!("{}", render_stats(&stats(data_dir)?));
            Ok(())
        }
        JournalCommand::Export {
            data_dir,
            shard,
            from,
            output,
            metadata,
        } => {
            let create = |path: &PathBuf| {
                std::fs::File::create(path)
                    .map(std::io::BufWriter::new)
                    .map_err(|source| OpenError::Io {
                        path: path.clone(),
                        source,
                    })
            };
            let mut metadata = metadata.as_ref().map(create).transpose()?;
            let metadata = metadata.as_mut().map(|m| m as &mut dyn Write);
            let summary = if output.as_os_str() == "-" {
                export_with_metadata(
                    data_dir,
                    *shard,
                    *from,
                    &mut std::io::stdout().lock(),
                    metadata,
                )?
            } else {
                export_with_metadata(data_dir, *shard, *from, &mut create(output)?, metadata)?
            };
            eprintln!(
                "exported {} messages ({} bytes)",
                summary.records, summary.bytes
            );
            Ok(())
        }
    }
}
