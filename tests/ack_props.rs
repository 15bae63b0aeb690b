//! Property tests of the ACK builder: for generated valid messages (random delimiter sets with
//! and without a truncation character, control ids, versions 2.3 to 2.8, MSH-3..6, MSH-15/16,
//! line ends) the ACK re-parses with the sender's delimiters, MSA-2 equals MSH-10, MSH-3/4 and
//! MSH-5/6 are swapped, MSA-1 follows §2.9, and any text stays inside MSA-3 / ERR-8.

use mllpd::ack::{build, AckError, AckOutcome, AckRequest, Disposition, Severity};
use mllpd::hl7::{Delimiters, ErrorCode, Location, Message, ParseOptions};
use mllpd::limits::ACK_TEXT_BYTES_MAX;
use proptest::prelude::*;

/// Bytes a sender may pick as delimiters (not CR, LF, letters or digits; not `.` or `_`, which
/// would split the version `2.5` and the structure `ADT_A01` of the generated MSH).
const DELIMITER_POOL: &[u8] = b"|^~\\&#!$%*@+/:;=?,'\"<>[]{}-` ";

/// Bytes values are made of, before the chosen delimiters are removed.
const VALUE_POOL: &[u8] = b"ABCXYZabcxyz0123456789 .-_+/:;=?,";

const VERSIONS: &[&str] = &[
    "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8",
];

const ACK_TYPES: &[&str] = &["", "AL", "NE", "ER", "SU"];

/// A distinct delimiter set: field, component, repetition, escape, subcomponent, truncation.
fn delimiters() -> impl Strategy<Value = Delimiters> {
    (Just(DELIMITER_POOL.to_vec()).prop_shuffle(), any::<bool>()).prop_map(|(pool, truncated)| {
        Delimiters {
            field: pool[0],
            component: pool[1],
            repetition: pool[2],
            escape: pool[3],
            subcomponent: pool[4],
            truncation: truncated.then_some(pool[5]),
        }
    })
}

/// A value of `min..=max` bytes without any of `d`'s delimiters.
fn value(d: Delimiters, min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    let allowed: Vec<u8> = VALUE_POOL
        .iter()
        .copied()
        .filter(|&b| !d.is_delimiter(b))
        .collect();
    prop::collection::vec(prop::sample::select(allowed), min..=max)
}

/// A hierarchic designator (MSH-3..6): up to three components.
fn hd(d: Delimiters) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(value(d, 0, 8), 1..=3).prop_map(move |parts| parts.join(&d.component))
}

/// A generated message and what the ACK request is.
#[derive(Debug)]
struct Case {
    payload: Vec<u8>,
    disposition: Disposition,
    text: Option<Vec<u8>>,
    with_error: bool,
}

fn encoding(d: &Delimiters) -> Vec<u8> {
    let mut out = vec![d.component, d.repetition, d.escape, d.subcomponent];
    out.extend(d.truncation);
    out
}

fn case() -> impl Strategy<Value = Case> {
    delimiters().prop_flat_map(|d| {
        (
            prop::collection::vec(hd(d), 4),
            value(d, 1, 20),
            prop::sample::select(VERSIONS),
            (
                prop::sample::select(ACK_TYPES),
                prop::sample::select(ACK_TYPES),
            ),
            prop::sample::select(&["\r", "\n", "\r\n"][..]),
            prop::sample::select(
                &[Disposition::Accept, Disposition::Error, Disposition::Reject][..],
            ),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            any::<bool>(),
        )
            .prop_map(
                move |(
                    hds,
                    control_id,
                    version,
                    (msh15, msh16),
                    eol,
                    disposition,
                    text,
                    with_error,
                )| {
                    let f = [d.field];
                    let mut msh = b"MSH".to_vec();
                    msh.extend(f);
                    msh.extend(encoding(&d));
                    for hd in &hds {
                        msh.extend(f);
                        msh.extend(hd);
                    }
                    let c = d.component;
                    let fields: [&[u8]; 6] = [
                        b"20260101120000",
                        b"",
                        &[b"ADT".as_slice(), &[c], b"A01", &[c], b"ADT_A01"].concat(),
                        &control_id,
                        b"P",
                        version.as_bytes(),
                    ];
                    for field in fields {
                        msh.extend(f);
                        msh.extend(field);
                    }
                    if !msh15.is_empty() || !msh16.is_empty() {
                        msh.extend([d.field, d.field, d.field]);
                        msh.extend(msh15.as_bytes());
                        msh.extend(f);
                        msh.extend(msh16.as_bytes());
                    }
                    let mut payload = msh;
                    payload.extend(eol.as_bytes());
                    payload.extend(
                        [b"PID".as_slice(), &f, b"1", &f, &f, b"123", eol.as_bytes()].concat(),
                    );
                    Case {
                        payload,
                        disposition,
                        text,
                        with_error,
                    }
                },
            )
    })
}

/// MSA-1 expected from MSH-15/16 (§2.9.2, §2.9.3).
fn expected_code(message: &Message<'_>, disposition: Disposition) -> Option<&'static [u8]> {
    let index = disposition as usize;
    let msh15 = message.accept_ack_type();
    if msh15.is_empty() && message.application_ack_type().is_empty() {
        return Some([b"AA", b"AE", b"AR"][index]);
    }
    let sent = match msh15 {
        b"NE" => false,
        b"ER" => disposition != Disposition::Accept,
        b"SU" => disposition == Disposition::Accept,
        _ => true,
    };
    sent.then_some([b"CA".as_slice(), b"CE", b"CR"][index])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ack_reparses_and_echoes_the_control_id(case in case()) {
        let parsed = Message::parse(&case.payload, &ParseOptions::default());
        let message = match parsed {
            Ok(message) => message,
            Err(error) => panic!("{error}: {:?}", String::from_utf8_lossy(&case.payload)),
        };
        let request = AckRequest {
            disposition: case.disposition,
            text: case.text.as_deref(),
            error: case.with_error.then_some(AckError {
                code: ErrorCode::RequiredFieldMissing,
                location: Some(Location::msh(10)),
                severity: Severity::Warning,
            }),
            timestamp: b"20261126025400+0000",
            control_id: b"ACK-1",
        };
        let mut out = Vec::new();
        let outcome = build(&message, &request, &mut out);
        let Some(code) = expected_code(&message, case.disposition) else {
            prop_assert_eq!(outcome, AckOutcome::Suppressed);
            prop_assert!(out.is_empty());
            return Ok(());
        };
        let written = matches!(outcome, AckOutcome::Written { bytes, .. } if bytes == out.len());
        prop_assert!(written, "outcome {:?} for {} bytes", outcome, out.len());
        let ack = Message::parse(&out, &ParseOptions::default()).expect("ACK re-parses");
        let d = message.delimiters();
        prop_assert_eq!(ack.delimiters(), d);
        let msa = ack.segment(b"MSA", 1).expect("ACK has MSA");
        prop_assert_eq!(msa.field(1), code);
        prop_assert_eq!(msa.field(2), message.control_id());
        prop_assert_eq!(ack.msh(3), message.msh(5));
        prop_assert_eq!(ack.msh(4), message.msh(6));
        prop_assert_eq!(ack.msh(5), message.msh(3));
        prop_assert_eq!(ack.msh(6), message.msh(4));
        prop_assert_eq!(ack.version_field(), message.version_field());
        prop_assert_eq!(ack.trigger_event(), b"A01".as_slice());
        let err_due = case.with_error || case.disposition != Disposition::Accept;
        prop_assert_eq!(ack.segments().count(), if err_due { 3 } else { 2 });
        if let Some(text) = &case.text {
            let msa3 = msa.field(3);
            prop_assert!(msa3.len() <= ACK_TEXT_BYTES_MAX);
            prop_assert!(text.starts_with(&d.unescape(msa3)), "MSA-3 decodes to a prefix");
            prop_assert!(msa.field(4).is_empty(), "text opened MSA-4");
        }
        if err_due {
            let err = ack.segment(b"ERR", 1).expect("ERR");
            if message.version_number() >= (2, 5) {
                prop_assert!(err.field(1).is_empty());
                prop_assert!(err.field(3).starts_with(b"101") || err.field(3).starts_with(b"207"));
            } else {
                prop_assert!(err.field(2).is_empty());
                prop_assert!(err.field(1).contains(&d.subcomponent));
            }
        }
    }
}
