//! Criterion bench: parse a message and read the header plus three body fields (ns/message).
//!
//! Two messages from the corpus: the 316-byte ADT^A01 (target ≤ 500 ns for parse + reads) and
//! the ~1 KB ORU^R01. Each iteration parses, reads the fields, checks their values (so the
//! bench fails rather than measuring a broken parser) and black-boxes them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mllpd::hl7::{Message, ParseOptions, Path};

const ADT: &[u8] = include_bytes!("../tests/data/adt_a01_316.hl7");
const ORU: &[u8] = include_bytes!("../tests/data/oru_r01_1k.hl7");

/// The header fields the receive path reads for every message (and the ACK echoes).
fn header<'a>(message: &Message<'a>) -> [&'a [u8]; 7] {
    [
        message.message_type(),
        message.trigger_event(),
        message.control_id(),
        message.processing_id(),
        message.version(),
        message.sending_application(),
        message.sending_facility(),
    ]
}

/// Parses `payload` and reads the header plus the fields at `paths`.
fn parse_and_read<'a>(payload: &'a [u8], paths: &[Path; 3]) -> [&'a [u8]; 10] {
    let options = ParseOptions::default();
    let message = Message::parse(payload, &options).expect("bench message parses");
    let head = header(&message);
    let body = paths.map(|path| message.get(&path).unwrap_or(&[]));
    [
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], body[0], body[1], body[2],
    ]
}

/// Checks the values once before timing (a broken parser fails the bench instead of being
/// measured), then times parse + reads with the input and the values black-boxed.
fn bench_message(
    c: &mut Criterion,
    name: &str,
    payload: &[u8],
    texts: [&str; 3],
    expected: [&[u8]; 10],
) {
    let paths = paths(texts);
    assert_eq!(
        parse_and_read(payload, &paths),
        expected,
        "{name}: values read"
    );
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| black_box(parse_and_read(black_box(payload), &paths)))
    });
    group.finish();
}

fn paths(texts: [&str; 3]) -> [Path; 3] {
    texts.map(|t| t.parse().expect("valid path"))
}

fn bench_parse(c: &mut Criterion) {
    bench_message(
        c,
        "adt_a01_316B",
        ADT,
        ["PID-3.1", "PID-5.1", "PV1-3"],
        [
            b"ADT",
            b"A01",
            b"NG20250314-0001",
            b"P",
            b"2.5.1",
            b"ADMIT",
            b"NORTHGATE",
            b"100234",
            b"HARTLEY",
            b"4W^412^B^NG",
        ],
    );
    bench_message(
        c,
        "oru_r01_1kB",
        ORU,
        ["PID-5.1", "OBX(3)-5", "OBX(8)-3.2"],
        [
            b"ORU",
            b"R01",
            b"LAB-778201",
            b"P",
            b"2.5.1",
            b"LABSYS",
            b"NORTHGATE LAB",
            b"HARTLEY",
            b"139",
            b"Calcium",
        ],
    );
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
