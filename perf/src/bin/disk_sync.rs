//! `disk-sync`: the latency of the disk's own flush, as mllpd's journal pays it per batch, so a
//! journal-mode latency tail can be read against the disk's (perf/compare.sh runs it on the
//! file system of mllpd's DATA_DIR right before the journal runs).
//!
//! What it does is what the journal does for one small batch (src/journal/writer.rs): the space
//! ahead is allocated, written with zeros and made durable first (the journal readies it in
//! steps of up to 8 MiB), then each round is one `O_DIRECT` write of one block into that space
//! followed by one fdatasync. Overwriting allocated, initialised blocks changes no size or
//! extent, so the fdatasync is the device's cache flush with no file-system journal commit:
//! the least a durable ACK can wait for on this disk. Rounds run back to back, on one thread
//! (pin it with `--cpu`), for `--duration`; the block offset advances and wraps inside the
//! readied space. The probe file is removed at the end.
//!
//! Written by hand: no crate measures this (fio could, but is not installed everywhere and
//! would add a dependency to the comparison for one number).

use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Alignment of `O_DIRECT` buffers and offsets: the largest logical block size in use.
const ALIGN: usize = 4096;

/// Latency of one O_DIRECT block write + fdatasync into readied space, as mllpd's journal
/// pays per batch.
#[derive(Debug, Parser)]
#[command(name = "disk-sync", version)]
struct Args {
    /// Directory on the file system to measure (e.g. mllpd's DATA_DIR).
    #[arg(long)]
    dir: PathBuf,
    /// How long to run the rounds (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = mllpd_perf::parse_duration)]
    duration: Duration,
    /// Bytes written per round (a multiple of 4096): one block, as a light-load batch.
    #[arg(long, default_value_t = 4096)]
    block_bytes: usize,
    /// Space readied (zeros, durable) before the rounds; rounds wrap inside it.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    space_bytes: usize,
    /// CPU to pin the probe to (the server's CPU, as the journal runs there).
    #[arg(long)]
    cpu: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Percentiles of one step, microseconds.
#[derive(Debug, Serialize)]
struct Latency {
    /// Median.
    p50_us: f64,
    /// 90th percentile.
    p90_us: f64,
    /// 99th percentile.
    p99_us: f64,
    /// 99.9th percentile.
    p999_us: f64,
    /// Largest.
    max_us: f64,
    /// Mean.
    mean_us: f64,
}

/// The probe's result.
#[derive(Debug, Serialize)]
struct Report {
    /// Directory measured.
    dir: String,
    /// Whether the writes were `O_DIRECT` (false: the file system refused it, e.g. tmpfs, and
    /// buffered writes were used: the flush then also writes the page back).
    direct: bool,
    /// Bytes per write.
    block_bytes: usize,
    /// Rounds measured.
    rounds: u64,
    /// Wall time of the rounds, seconds.
    duration_s: f64,
    /// fdatasync alone.
    fdatasync: Latency,
    /// The write alone.
    write: Latency,
    /// Write + fdatasync: one journal batch's durability wait at light load.
    write_and_fdatasync: Latency,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => fail(&e.to_string()),
                }
            } else {
                print!("{}", text(&report));
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ! {
    eprintln!("disk-sync: {e}");
    std::process::exit(2);
}

/// A zeroed buffer of `len` bytes whose start is `ALIGN`-aligned, inside a larger `Vec`
/// (found with `align_offset`, so no unsafe allocation is needed).
struct Aligned {
    /// Backing storage, `ALIGN` bytes longer than needed.
    storage: Vec<u8>,
    /// Offset of the aligned start.
    start: usize,
    /// Usable length.
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Aligned {
            storage,
            start,
            len,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Opens the probe file with `O_DIRECT`, or buffered where the file system refuses it.
fn open(path: &std::path::Path) -> Result<(File, bool), String> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    let direct = options.clone().custom_flags(libc::O_DIRECT).open(path);
    match direct {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => options
            .open(path)
            .map(|file| (file, false))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn run(args: &Args) -> Result<Report, String> {
    if args.block_bytes == 0 || args.block_bytes % ALIGN != 0 {
        return Err(format!(
            "--block-bytes must be a positive multiple of {ALIGN}"
        ));
    }
    let blocks = (args.space_bytes / args.block_bytes).max(1);
    if let Some(cpu) = args.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let path = args
        .dir
        .join(format!("disk-sync-{}.probe", std::process::id()));
    let (file, direct) = open(&path)?;
    let result = measure(&file, args, blocks);
    drop(file);
    let _ = std::fs::remove_file(&path);
    let (rounds, elapsed, hists) = result.map_err(|e| format!("{}: {e}", path.display()))?;
    let latency = |h: &Histogram<u64>| {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
            mean_us: h.mean() / 1000.0,
        }
    };
    Ok(Report {
        dir: args.dir.display().to_string(),
        direct,
        block_bytes: args.block_bytes,
        rounds,
        duration_s: elapsed.as_secs_f64(),
        fdatasync: latency(&hists[0]),
        write: latency(&hists[1]),
        write_and_fdatasync: latency(&hists[2]),
    })
}

/// Readies the space, then runs the rounds: (rounds, wall time, [fdatasync, write, both]).
fn measure(
    file: &File,
    args: &Args,
    blocks: usize,
) -> std::io::Result<(u64, Duration, [Histogram<u64>; 3])> {
    // Ready the space as the journal does: zeros written, then one flush.
    let chunk = 1024 * 1024;
    let mut zeros = Aligned::new(chunk);
    let space = (blocks * args.block_bytes) as u64;
    let mut offset = 0u64;
    while offset < space {
        let len = chunk.min((space - offset) as usize);
        file.write_all_at(&zeros.bytes()[..len], offset)?;
        offset += len as u64;
    }
    file.sync_all()?;
    let new_hist = || {
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let mut hists = [new_hist()?, new_hist()?, new_hist()?];
    let mut block = Aligned::new(args.block_bytes);
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < args.duration {
        // A changing first byte: every round writes new data, as a batch does.
        block.bytes()[0] = rounds as u8 | 1;
        let at = (rounds as usize % blocks * args.block_bytes) as u64;
        let t0 = Instant::now();
        file.write_all_at(block.bytes(), at)?;
        let t1 = Instant::now();
        file.sync_data()?;
        let t2 = Instant::now();
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        hists[0].saturating_record(ns(t2 - t1));
        hists[1].saturating_record(ns(t1 - t0));
        hists[2].saturating_record(ns(t2 - t0));
        rounds += 1;
    }
    Ok((rounds, started.elapsed(), hists))
}

fn text(r: &Report) -> String {
    let line = |name: &str, l: &Latency| {
        format!(
            "{name:<20} p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1} us\n",
            l.p50_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        )
    };
    let mut out = format!(
        "{}: {} rounds of one {}-byte {} write + fdatasync in {:.2} s\n",
        r.dir,
        r.rounds,
        r.block_bytes,
        if r.direct {
            "O_DIRECT"
        } else {
            "buffered (no O_DIRECT here)"
        },
        r.duration_s
    );
    out += &line("fdatasync", &r.fdatasync);
    out += &line("write", &r.write);
    out += &line("write + fdatasync", &r.write_and_fdatasync);
    out
}
