//! Runs the five typical validation rules of `benches/rules.rs` N times on the 316-byte
//! ADT^A01 parsed once, for instruction counts under callgrind (stable where wall time on a
//! shared machine is not): `valgrind --tool=callgrind target/release/examples/rules_eval N`
//! for two N; the difference of the totals over the difference of N is the cost of one
//! evaluation. `rules_eval N none` runs the empty rule set instead.

use std::hint::black_box;

use mllpd::hl7::{Message, ParseOptions};
use mllpd::rules::{MessageContext, OnFail, RuleSet, RuleSpec, RulesOptions, Verdict};

// The server's allocator, as in the bench.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADT: &[u8] = include_bytes!("../tests/data/adt_a01_316.hl7");

/// The rules of perf/rules.sh.
const RULES: [&str; 5] = [
    r#"pid.id != """#,
    r#"msh.msg_type in ["ADT", "ORU", "ORM", "SIU"]"#,
    r#"msh.sending_fac != """#,
    r#"msh.sending_fac in ["NORTHGATE", "RIVERSIDE", "EASTFIELD", "BENCHFAC"]"#,
    r#"pv1.patient_class != "I" || field("PV1-3.3") != """#,
];

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let none = args.next().as_deref() == Some("none");
    let specs: Vec<RuleSpec> = RULES
        .iter()
        .enumerate()
        .filter(|_| !none)
        .map(|(i, expression)| RuleSpec {
            name: format!("rule{i}"),
            expression: (*expression).to_owned(),
            message: "failed".to_owned(),
            on_fail: OnFail::AR,
            code: 207,
            location: None,
        })
        .collect();
    let rules = RuleSet::compile(&specs, &RulesOptions::default()).expect("rules compile");
    let message = Message::parse(ADT, &ParseOptions::default()).expect("message parses");
    let context = MessageContext::default();
    let mut passed = 0usize;
    for _ in 0..n {
        if matches!(rules.evaluate(black_box(&message), &context), Verdict::Pass) {
            passed += 1;
        }
    }
    assert_eq!(passed, n, "the ADT passes every rule");
    println!("{n} evaluations passed");
}
