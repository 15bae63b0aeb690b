//! Criterion bench: ack (see README for figures).
//!
//! Builds the AA for a parsed 316-byte ADT^A01 into a reused buffer: the per-message cost the
//! receive path pays after parsing. Parsing is outside the timed loop. Target: ≤ 300 ns.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mllpd::ack::{build, AckOutcome, AckRequest, Disposition};
use mllpd::hl7::{Message, ParseOptions};

/// A typical ADT^A01 (316 bytes).
const ADT_A01: &[u8] = b"MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|GHH LAB|GOOD HEALTH HOSPITAL|20260101120000||ADT^A01^ADT_A01|MSG00001|P|2.5\r\
EVN|A01|20260101120000\r\
PID|1||PATID1234^5^M11^ADT1^MR^GOOD HEALTH HOSPITAL||EVERYMAN^ADAM^A^III||19610615|M||C|2222 HOME STREET^^GREENSBORO^NC^27401-1020\r\
PV1|1|I|2000^2012^01||||004777^ATTEND^AARON|||SUR|\r";

fn ack(c: &mut Criterion) {
    assert_eq!(
        ADT_A01.len(),
        316,
        "the bench message is the 316-byte ADT^A01"
    );
    let message = Message::parse(ADT_A01, &ParseOptions::default()).expect("bench ADT parses");
    let request = AckRequest {
        disposition: Disposition::Accept,
        text: None,
        error: None,
        timestamp: b"20261126025400+0000",
        control_id: b"ACK000000001",
    };
    let mut out = Vec::with_capacity(512);
    let outcome = build(&message, &request, &mut out);
    assert!(
        matches!(outcome, AckOutcome::Written { .. }),
        "AA written: {outcome:?}"
    );
    let expected = b"\rMSA|AA|MSG00001\r";
    assert!(
        out.windows(expected.len()).any(|w| w == expected),
        "ACK carries MSA|AA|MSG00001"
    );

    c.bench_function("ack_build_aa_adt_a01", |b| {
        b.iter(|| {
            out.clear();
            let outcome = build(black_box(&message), black_box(&request), &mut out);
            black_box(outcome)
        })
    });
    assert!(
        out.windows(expected.len()).any(|w| w == expected),
        "last ACK carries MSA-2"
    );
}

criterion_group!(benches, ack);
criterion_main!(benches);
