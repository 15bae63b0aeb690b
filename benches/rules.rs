//! Criterion bench: what validation rules add to a message (issue 9: five typical rules on the
//! 316-byte ADT^A01 add ≤ 2 µs; zero rules add nothing measurable).
//!
//! Three cases on the same message, each parsing it first as the receive path does: parse
//! alone, parse + an empty rule set, parse + five typical rules. The verdicts are checked
//! before timing (the bench fails rather than measure rules that do not run), and the five
//! rules are also checked to fail on a message built to break each one.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mllpd::hl7::{Message, ParseOptions};
use mllpd::rules::{MessageContext, OnFail, RuleSet, RuleSpec, RulesOptions, Verdict};

// The server's allocator (src/main.rs): per-message values are allocated and freed on the
// shard's thread, as they will be in admission.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADT: &[u8] = include_bytes!("../tests/data/adt_a01_316.hl7");

/// Five rules of the kind the cookbook shows: required fields, allow-lists, a segment check.
const RULES: [(&str, &str); 5] = [
    ("pid3-required", r#"pid.id != """#),
    (
        "known-message-types",
        r#"msh.msg_type in ["ADT", "ORU", "ORM", "SIU"]"#,
    ),
    ("msh4-required", r#"msh.sending_fac != """#),
    (
        "known-facilities",
        r#"msh.sending_fac in ["NORTHGATE", "RIVERSIDE", "EASTFIELD"]"#,
    ),
    (
        "inpatients-have-a-bed",
        r#"pv1.patient_class != "I" || field("PV1-3.3") != """#,
    ),
];

fn rule_set(rules: &[(&str, &str)]) -> RuleSet {
    let specs: Vec<RuleSpec> = rules
        .iter()
        .map(|(name, expression)| RuleSpec {
            name: (*name).to_owned(),
            expression: (*expression).to_owned(),
            message: format!("{name} failed"),
            on_fail: OnFail::AR,
            code: 207,
            location: None,
        })
        .collect();
    RuleSet::compile(&specs, &RulesOptions::default()).expect("bench rules compile")
}

/// Parses `payload` and runs `rules` on it, as admission will.
fn admit<'r>(payload: &[u8], rules: &'r RuleSet) -> Verdict<'r> {
    let message = Message::parse(payload, &ParseOptions::default()).expect("bench message parses");
    rules.evaluate(&message, &MessageContext::default())
}

/// The verdict's failing rule name, for the checks.
fn failed(verdict: Verdict<'_>) -> Option<String> {
    match verdict {
        Verdict::Pass => None,
        Verdict::Fail(f) => Some(f.rule.to_owned()),
        Verdict::EvalError { rule, reason, .. } => panic!("{rule}: {reason}"),
    }
}

fn bench_rules(c: &mut Criterion) {
    let none = rule_set(&[]);
    let five = rule_set(&RULES);
    assert_eq!(five.len(), 5);
    assert!(none.reads().is_empty(), "no rules read nothing");
    assert_eq!(failed(admit(ADT, &none)), None);
    assert_eq!(failed(admit(ADT, &five)), None, "the ADT passes all five");
    let text = std::str::from_utf8(ADT).expect("ASCII");
    for (broken, rule) in [
        (text.replace("|100234^", "|^"), "pid3-required"),
        (
            text.replace("ADT^A01^ADT_A01", "QRY^A19"),
            "known-message-types",
        ),
        (text.replace("|NORTHGATE|", "||"), "msh4-required"),
        (
            text.replace("|NORTHGATE|", "|SOUTHPORT|"),
            "known-facilities",
        ),
        (
            text.replace("|4W^412^B^NG|", "|4W^412|"),
            "inpatients-have-a-bed",
        ),
    ] {
        assert_eq!(
            failed(admit(broken.as_bytes(), &five)).as_deref(),
            Some(rule)
        );
    }

    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_only_adt316", |b| {
        b.iter(|| {
            black_box(
                Message::parse(black_box(ADT), &ParseOptions::default())
                    .map(|m| m.control_id().len()),
            )
        })
    });
    group.bench_function("parse_0_rules_adt316", |b| {
        b.iter(|| black_box(matches!(admit(black_box(ADT), &none), Verdict::Pass)))
    });
    group.bench_function("parse_5_rules_adt316", |b| {
        b.iter(|| black_box(matches!(admit(black_box(ADT), &five), Verdict::Pass)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared; the differences measured are in microseconds.
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_rules
}
criterion_main!(benches);
