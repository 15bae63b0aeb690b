//! Validation rules and filters (issue 9, module `rules`): every variable and function on the
//! corpus under `tests/data/`, CEL's standard macros and functions, compile errors with their
//! positions, evaluation errors, the README cookbook, and a property test that no message
//! that parses can make evaluation panic.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::LazyLock;

use mllpd::hl7::{ErrorCode, Location, Message, ParseOptions};
use mllpd::rules::{
    Failure, Filter, MessageContext, OnFail, RuleError, RuleSet, RuleSpec, RulesOptions,
    ValidationSpec, Verdict,
};
use proptest::prelude::*;

fn load(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(path).expect("corpus file exists")
}

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes, &ParseOptions::default()).expect("corpus message parses")
}

fn rule(name: &str, expression: &str) -> RuleSpec {
    RuleSpec {
        name: name.to_owned(),
        expression: expression.to_owned(),
        message: format!("{name} failed"),
        on_fail: OnFail::AR,
        code: 207,
        location: None,
    }
}

fn compile(expressions: &[&str]) -> RuleSet {
    let specs: Vec<RuleSpec> = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| rule(&format!("r{i}"), e))
        .collect();
    RuleSet::compile(&specs, &RulesOptions::default())
        .unwrap_or_else(|e| panic!("{expressions:?} compiles: {e}"))
}

fn compile_error(expression: &str) -> RuleError {
    RuleSet::compile(&[rule("bad", expression)], &RulesOptions::default())
        .expect_err("must not compile")
}

/// Evaluates one expression on `file` with `connection`; panics unless it gives a bool.
fn eval_with(file: &str, expression: &str, connection: &MessageContext<'_>) -> bool {
    let bytes = load(file);
    let message = parse(&bytes);
    let set = compile(&[expression]);
    match set.evaluate(&message, connection) {
        Verdict::Pass => true,
        Verdict::Fail(_) => false,
        Verdict::EvalError { reason, .. } => panic!("{file}: {expression}: {reason}"),
    }
}

fn eval(file: &str, expression: &str) -> bool {
    eval_with(file, expression, &MessageContext::default())
}

/// Asserts that every expression holds on `file` (each alone, so a failure names it), and
/// that its negation fails: a test cannot pass because failures go unreported.
fn holds(file: &str, expressions: &[&str]) {
    for e in expressions {
        assert!(eval(file, e), "{file}: {e} should hold");
        assert!(
            !eval(file, &format!("!({e})")),
            "{file}: !({e}) should fail"
        );
    }
}

const ADT: &str = "adt_a01_316.hl7";
const ORU: &str = "oru_r01_1k.hl7";

#[test]
fn msh_variables_read_the_header() {
    holds(
        ADT,
        &[
            r#"msh.msg_type == "ADT""#,
            r#"msh.trigger == "A01""#,
            r#"msh.structure == "ADT_A01""#,
            r#"msh.sending_app == "ADMIT""#,
            r#"msh.sending_fac == "NORTHGATE""#,
            r#"msh.receiving_app == "MLLPD""#,
            r#"msh.receiving_fac == "HUB""#,
            r#"msh.control_id == "NG20250314-0001""#,
            r#"msh.processing_id == "P""#,
            r#"msh.version == "2.5.1""#,
            r#"msh.charset == """#,
            r#"msh.datetime == "20250314083000""#,
            r#"size(msh) == 12"#,
        ],
    );
    // Absent parts read as "": no MSH-9.3 in v2.3.1, MSH-18 declared in ISO 8859.
    holds(
        "oru_r01_v231_escapes.hl7",
        &[r#"msh.structure == """#, r#"msh.version == "2.3.1""#],
    );
    holds("iso8859_v25.hl7", &[r#"msh.charset == "8859/1""#]);
    holds(
        "custom_delims_hash.hl7",
        &[r#"msh.msg_type == "ORU" && msh.trigger == "R01" && msh.control_id == "SP-55""#],
    );
}

#[test]
fn pid_variables_read_the_patient() {
    holds(
        ADT,
        &[
            r#"pid.id == "100234""#,
            r#"pid.name == "HARTLEY^MARGARET^ANNE""#,
            r#"pid.family == "HARTLEY""#,
            r#"pid.given == "MARGARET""#,
            r#"pid.dob == "19620708""#,
            r#"pid.sex == "F""#,
            r#"pid.ssn == """#,
            r#"pid.country == "GBR""#,
        ],
    );
    // Latin-1 text in an ISO 8859 message; a message without PID reads "" everywhere.
    holds(
        "iso8859_v25.hl7",
        &[r#"pid.family == "DUPRÉ" && pid.given == "AMÉLIE""#],
    );
    holds(
        "utf8_names_v251.hl7",
        &[r#"pid.family != "" && pid.id != """#],
    );
    holds(
        "ack_v23.hl7",
        &[r#"pid.id == "" && pid.name == "" && size(pid) == 8"#],
    );
}

#[test]
fn pv1_variables_read_the_visit() {
    holds(
        ADT,
        &[
            r#"pv1.patient_class == "I""#,
            r#"pv1.assigned_location == "4W^412^B^NG""#,
            r#"pv1.attending_doctor == "2231^OKAFOR^CHIDI""#,
            r#"pv1.admit_datetime == """#,
        ],
    );
    holds(
        "adt_a03_v25.hl7",
        &[r#"pv1.admit_datetime == "20110925080000" && pv1.patient_class == "I""#],
    );
    holds(
        ORU,
        &[r#"pv1.patient_class == "O" && pv1.assigned_location == "LAB^^^NG""#],
    );
}

#[test]
fn obx_and_obx_list_read_observations() {
    holds(
        ORU,
        &[
            r#"obx.set_id == "1""#,
            r#"obx.value_type == "NM""#,
            r#"obx.identifier == "2345-7""#,
            r#"obx.value == "5.4""#,
            r#"obx.unit == "mmol/L""#,
            r#"obx.status == "F""#,
            r#"size(obx_list) == 9"#,
            r#"obx_list[3].identifier == "2823-3" && obx_list[3].value == "5.9""#,
            r#"obx_list.map(o, o.set_id) == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]"#,
            r#"obx_list.all(o, o.status == "F" && o.value_type == "NM")"#,
        ],
    );
    // No OBX: `obx` is all "" and `obx_list` empty.
    holds(
        ADT,
        &[r#"obx.value == "" && obx.set_id == "" && obx_list == [] && size(obx) == 6"#],
    );
    // Escapes are decoded: \F\ → |, \S\ → ^, \T\ → &, \R\ → ~, \E\ → \; formatting kept.
    holds(
        "oru_r01_v231_escapes.hl7",
        &[
            r#"obx.value == "Margins clear | no invasion\\.br\\Grade 1^2""#,
            r#"obx_list[1].value == "A&B ~ C\\D""#,
            r#"obx_list[2].value == "line1\r\nline2""#,
        ],
    );
    holds(
        "custom_delims_hash.hl7",
        &[r#"obx.value == "Ratio 3#1 and A$B%sub" && obx.identifier == "NOTE""#],
    );
}

#[test]
fn segments_lists_the_ids_in_order() {
    holds(ADT, &[r#"segments == ["MSH", "EVN", "PID", "PV1"]"#]);
    holds(
        ORU,
        &[r#"segments.filter(s, s == "OBX").size() == 9 && segments[size(segments) - 1] == "NTE""#],
    );
}

#[test]
fn field_and_fields_read_paths() {
    holds(
        ADT,
        &[
            r#"field("PID-3.1") == "100234""#,
            r#"field("PID-3(2).1") == "555-12-3456""#,
            r#"field("PID-3(2).5") == "SS""#,
            r#"field("PID-3") == "100234^^^NG^MR~555-12-3456^^^SSA^SS""#,
            r#"field("PID-11.3") == "LEEDS""#,
            r#"field("MSH-9.2") == "A01""#,
            r#"field("MSH-1") == "|" && field("MSH-2") == "^~\\&""#,
            r#"field("PV1-19") == "V778812""#,
            r#"field("ZZZ-1") == "" && field("PID-99") == "" && field("PID(2)-3") == """#,
            r#"fields("PID-3.1") == ["100234", "555-12-3456"]"#,
            r#"fields("PID-3(2).4") == ["SSA"]"#,
            r#"fields("OBX-5") == []"#,
        ],
    );
    holds(
        ORU,
        &[
            r#"size(fields("OBX-5")) == 9 && fields("OBX-5")[8] == "41""#,
            r#"fields("OBX(2)-5") == ["88"]"#,
            r#"fields("OBX-3.2").exists(n, n == "Potassium")"#,
            r#"fields("OBX-8") == ["", "", "", "H", "", "", "", "", ""]"#,
        ],
    );
    holds(
        "orm_o01_v24_repetitions.hl7",
        &[
            r#"fields("PID-3.4") == ["EF", "EF", "NHS"] && fields("PID-3(3).1") == ["2233445566"]"#,
            r#"fields("PID-11.1") == ["1 QUAY ST", "PO BOX 7"] && pid.country == """#,
            r#"fields("OBR-4.2") == ["CMP", "Lipid panel"] && field("OBR-4(2).1") == "80061""#,
        ],
    );
}

#[test]
fn has_and_count_test_segments() {
    holds(
        ADT,
        &[
            r#"has("PV1") && has("MSH") && !has("OBX")"#,
            r#"count("OBX") == 0 && count("PID") == 1 && count("MSH") == 1"#,
            // CEL's own has() still tests presence of a key.
            r#"has(msh.control_id) && has(pid.id)"#,
        ],
    );
    holds(
        ORU,
        &[r#"count("OBX") == 9 && has("NTE") && count("NTE") == 1"#],
    );
    holds(
        "zsegments_v24.hl7",
        &[r#"segments.exists(s, s.startsWith("Z"))"#],
    );
}

#[test]
fn peer_and_tls_read_the_connection() {
    let v4: IpAddr = "10.1.2.3".parse().expect("address");
    let mapped: IpAddr = "::ffff:192.168.0.7".parse().expect("address");
    let v6: IpAddr = "2001:db8::1".parse().expect("address");
    let sans = vec!["lab.example.org".to_owned(), "10.0.0.9".to_owned()];
    let with = |peer_ip, cn, sans: &'static [String]| MessageContext {
        peer_ip,
        tls_client_cn: cn,
        tls_client_sans: sans,
    };
    assert!(eval_with(
        ADT,
        r#"peer.ip == "10.1.2.3""#,
        &with(Some(v4), None, &[])
    ));
    assert!(eval_with(
        ADT,
        r#"peer.ip == "192.168.0.7""#,
        &with(Some(mapped), None, &[])
    ));
    assert!(eval_with(
        ADT,
        r#"peer.ip == "2001:db8::1""#,
        &with(Some(v6), None, &[])
    ));
    assert!(eval_with(
        ADT,
        r#"peer.ip.startsWith("10.")"#,
        &with(Some(v4), None, &[])
    ));
    assert!(eval(
        ADT,
        r#"peer.ip == "" && tls.client_cn == "" && tls.client_sans == []"#
    ));
    let sans: &'static [String] = Box::leak(sans.into_boxed_slice());
    assert!(eval_with(
        ADT,
        r#"tls.client_cn == "lab" && "lab.example.org" in tls.client_sans && size(tls.client_sans) == 2"#,
        &with(None, Some("lab"), sans),
    ));
}

#[test]
fn standard_macros_and_functions_work() {
    holds(
        ORU,
        &[
            r#"obx_list.all(o, o.unit != "")"#,
            r#"obx_list.exists(o, o.identifier == "2823-3")"#,
            r#"obx_list.exists_one(o, o.identifier == "2823-3")"#,
            r#"!obx_list.exists_one(o, o.status == "F")"#,
            r#"obx_list.map(o, o.unit).filter(u, u == "mmol/L").size() == 7"#,
            r#"obx_list.map(o, o.value_type == "NM", double(o.value)).exists(v, v > 100.0)"#,
            r#"size(obx_list) == 9 && size("abc") == 3"#,
            r#"msh.msg_type in ["ADT", "ORU"] && !("ZZZ" in segments)"#,
            r#"msh.control_id.matches("^LAB-[0-9]+$")"#,
            r#"msh.sending_fac.startsWith("NORTH") && msh.sending_fac.endsWith("LAB")"#,
            r#"msh.sending_fac.contains("GATE")"#,
            r#"int(obx_list[1].value) == 88 && double(obx.value) == 5.4"#,
            r#"string(count("OBX")) == "9""#,
            r#"timestamp("2025-03-14T10:15:00Z").getFullYear() == int(msh.datetime.substring(0, 4))"#,
            r#"msh.datetime.substring(8, 10) == "10" && msh.sending_fac.lowerAscii() == "northgate lab""#,
            r#"type(msh.version) == string && duration("1h") > duration("30m")"#,
            r#"pid.name.split("^")[1] == "MARGARET" && "a-b".replace("-", "+") == "a+b""#,
            r#"[1, 2].map(x, x * 2) == [2, 4] && {"a": 1}["a"] == 1"#,
        ],
    );
}

#[test]
fn syntax_errors_name_the_rule_and_position() {
    let e = compile_error("msh.msg_type ==");
    let RuleError::Compile {
        rule, line, column, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((rule.as_str(), *line), ("bad", 1));
    assert!(*column >= 15, "{e}");
    let e = compile_error("msh.msg_type == \"ADT\" &&\n  pid.id == ) ");
    let RuleError::Compile { line, column, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (2, 13), "{e}");
    assert!(
        e.to_string().starts_with("rule 'bad': line 2, column 13:"),
        "{e}"
    );
    // Columns count characters, not bytes, in parse errors too.
    let e = compile_error("\"ÉÉ\" == ) ");
    let RuleError::Compile { line, column, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (1, 9), "{e}");
}

#[test]
fn unknown_variables_keys_and_functions_are_refused_with_position() {
    let cases = [
        (
            "msh.msg_type == \"ADT\" && foo == 1",
            1,
            26,
            "unknown variable 'foo'",
        ),
        ("msh.nope == \"\"", 1, 4, "unknown variable 'msh.nope'"),
        ("pid.idd != \"\"", 1, 4, "unknown variable 'pid.idd'"),
        // Columns count characters, not bytes.
        ("\"ÉÉ\" == \"\" && foo", 1, 15, "unknown variable 'foo'"),
        (
            "pid.id != \"\" &&\n   pv1.class == \"I\"",
            2,
            7,
            "unknown variable 'pv1.class'",
        ),
        (
            "frobnicate(msh.msg_type)",
            1,
            11,
            "unknown function 'frobnicate'",
        ),
        (
            "msh.msg_type.frobnicate()",
            1,
            24,
            "unknown function 'frobnicate'",
        ),
        ("segments.foo == 1", 1, 9, "'segments' is a list"),
        ("obx_list.all(o, x == o)", 1, 17, "unknown variable 'x'"),
        // A comprehension variable is not in scope outside its macro.
        (
            "obx_list.all(o, true) && o == 1",
            1,
            26,
            "unknown variable 'o'",
        ),
        (
            "field(msh.control_id) == \"\"",
            1,
            6,
            "field() takes one string literal",
        ),
        ("field(\"PID3\") == \"\"", 1, 6, "malformed HL7 path"),
        ("has(\"pv1\")", 1, 4, "not a segment id"),
        ("count(1) == 0", 1, 6, "count() takes one string literal"),
        ("has(1)", 1, 5, "invalid argument to has()"),
    ];
    for (expression, line, column, message) in cases {
        let e = compile_error(expression);
        match &e {
            RuleError::Compile {
                rule,
                line: l,
                column: c,
                message: m,
            } => {
                assert_eq!(rule, "bad");
                assert!(m.contains(message), "{expression}: {e}");
                assert_eq!((*l, *c), (line, column), "{expression}: {e}");
            }
            other => panic!("{expression}: {other:?}"),
        }
    }
}

#[test]
fn size_bounds_are_enforced_at_n_and_n_plus_one() {
    let options = RulesOptions {
        rules_max: 3,
        expression_bytes_max: 20,
        text_bytes_max: 10,
    };
    let at_bound = format!("true{}", " ".repeat(16));
    assert_eq!(at_bound.len(), 20);
    assert!(RuleSet::compile(&[rule("a", &at_bound)], &options).is_ok());
    let over = format!("{at_bound} ");
    assert_eq!(
        RuleSet::compile(&[rule("a", &over)], &options).expect_err("too long"),
        RuleError::TooLong {
            rule: "a".to_owned(),
            bytes: 21,
            max: 20
        }
    );
    let three: Vec<RuleSpec> = (0..3).map(|i| rule(&format!("r{i}"), "true")).collect();
    assert_eq!(
        RuleSet::compile(&three, &options).expect("3 rules").len(),
        3
    );
    let four: Vec<RuleSpec> = (0..4).map(|i| rule(&format!("r{i}"), "true")).collect();
    assert_eq!(
        RuleSet::compile(&four, &options).expect_err("4 rules"),
        RuleError::TooManyRules { count: 4, max: 3 }
    );
    let mut long_message = rule("a", "true");
    long_message.message = "x".repeat(11);
    assert!(RuleSet::compile(&[long_message], &options).is_err());
    // The defaults come from limits.
    let defaults = RulesOptions::default();
    assert_eq!(defaults.rules_max, mllpd::limits::RULES_MAX);
    assert_eq!(
        defaults.expression_bytes_max,
        mllpd::limits::RULE_EXPRESSION_BYTES_MAX
    );
    let long = format!(
        "{}true",
        " ".repeat(mllpd::limits::RULE_EXPRESSION_BYTES_MAX - 3)
    );
    assert!(matches!(compile_error(&long), RuleError::TooLong { .. }));
}

#[test]
fn bad_rule_settings_are_refused_by_name() {
    let mut bad_code = rule("coded", "true");
    bad_code.code = 0;
    let e = RuleSet::compile(&[bad_code], &RulesOptions::default()).expect_err("code 0");
    assert!(
        e.to_string().contains("rule 'coded'") && e.to_string().contains("0357"),
        "{e}"
    );
    let mut bad_location = rule("located", "true");
    bad_location.location = Some("PID3".to_owned());
    let e = RuleSet::compile(&[bad_location], &RulesOptions::default()).expect_err("location");
    assert!(e.to_string().contains("rule 'located'"), "{e}");
    let twice = [rule("same", "true"), rule("same", "true")];
    assert!(RuleSet::compile(&twice, &RulesOptions::default()).is_err());
    let nameless = rule(" ", "true");
    assert!(RuleSet::compile(&[nameless], &RulesOptions::default()).is_err());
}

#[test]
fn rule_specs_deserialize_with_defaults_and_refuse_unknown_keys() {
    let yaml = r#"
rules:
  - name: pid3
    expression: 'pid.id != ""'
    message: PID-3 is required
  - name: types
    expression: 'msh.msg_type in ["ADT"]'
    message: unsupported type
    on_fail: AE
    code: 200
    location: MSH-9
"#;
    let spec: ValidationSpec = serde_yaml_ng::from_str(yaml).expect("valid");
    assert_eq!(spec.rules[0].on_fail, OnFail::AR);
    assert_eq!(spec.rules[0].code, 207);
    assert_eq!(spec.rules[0].location, None);
    assert_eq!(spec.rules[1].on_fail, OnFail::AE);
    assert_eq!(spec.rules[1].code, 200);
    assert_eq!(spec.rules[1].location.as_deref(), Some("MSH-9"));
    let unknown =
        "rules:\n  - name: a\n    expression: 'true'\n    message: m\n    severity: high\n";
    let e = serde_yaml_ng::from_str::<ValidationSpec>(unknown).expect_err("unknown key");
    assert!(e.to_string().contains("severity"), "{e}");
    let bad_on_fail =
        "rules:\n  - name: a\n    expression: 'true'\n    message: m\n    on_fail: AA\n";
    assert!(serde_yaml_ng::from_str::<ValidationSpec>(bad_on_fail).is_err());
}

#[test]
fn the_first_failing_rule_decides_with_its_answer() {
    let bytes = load(ADT);
    let message = parse(&bytes);
    let mut specs = vec![
        rule("passes", r#"msh.msg_type == "ADT""#),
        rule("pid-fails", r#"field("PID-3(2).4") == "NHS""#),
        rule("also-fails", "false"),
    ];
    specs[1].on_fail = OnFail::AE;
    specs[1].code = 102;
    specs[1].message = "second id must be NHS".to_owned();
    let set = RuleSet::compile(&specs, &RulesOptions::default()).expect("compiles");
    let expected = Failure {
        index: 1,
        rule: "pid-fails",
        on_fail: OnFail::AE,
        code: ErrorCode::DataTypeError,
        message: "second id must be NHS",
        location: Some(Location {
            segment: *b"PID",
            segment_sequence: 1,
            field: 3,
            repetition: 2,
            component: 4,
            subcomponent: 0,
        }),
    };
    assert_eq!(
        set.evaluate(&message, &MessageContext::default()),
        Verdict::Fail(expected)
    );
    // The location: the configured one, else the first field read (key or path), else none.
    let mut located = rule("located", "false");
    located.location = Some("PV1-3".to_owned());
    let cases = [
        located,
        rule("by-key", r#"pid.ssn != "" || msh.msg_type == "X""#),
        rule("none", "1 == 2"),
    ];
    let locations: Vec<Option<Location>> = cases
        .into_iter()
        .map(|spec| {
            let set = RuleSet::compile(&[spec], &RulesOptions::default()).expect("compiles");
            match set.evaluate(&message, &MessageContext::default()) {
                Verdict::Fail(f) => f.location,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let at = |segment: &[u8; 3], field, component| Location {
        segment: *segment,
        segment_sequence: 1,
        field,
        repetition: 0,
        component,
        subcomponent: 0,
    };
    assert_eq!(
        locations,
        [Some(at(b"PV1", 3, 0)), Some(at(b"PID", 19, 0)), None]
    );
}

#[test]
fn evaluation_errors_are_reported_without_content() {
    let bytes = load(ADT);
    let message = parse(&bytes);
    for (expression, needle) in [
        ("int(pid.family) > 0", "int()"),
        ("double(pid.given) > 1.0", "double()"),
        ("msh.control_id", "not a bool"),
        ("pid.family > 3", "no matching overload"),
        (
            "timestamp(pid.dob) > timestamp(\"2000-01-01T00:00:00Z\")",
            "timestamp()",
        ),
        ("segments[10] == \"X\"", "index out of bounds"),
        ("1 / (count(\"OBX\")) == 1", "division by zero"),
    ] {
        let set = compile(&["true", expression, "false"]);
        match set.evaluate(&message, &MessageContext::default()) {
            Verdict::EvalError {
                index,
                rule,
                reason,
            } => {
                assert_eq!((index, rule), (1, "r1"), "{expression}");
                assert!(reason.contains(needle), "{expression}: {reason}");
                for secret in ["HARTLEY", "MARGARET", "19620708", "NG2025"] {
                    assert!(!reason.contains(secret), "{expression}: {reason}");
                }
            }
            other => panic!("{expression}: {other:?}"),
        }
    }
}

#[test]
fn only_what_rules_read_is_extracted() {
    let none = RuleSet::compile(&[], &RulesOptions::default()).expect("empty");
    assert!(none.is_empty() && none.reads().is_empty());
    let bytes = load(ADT);
    assert_eq!(
        none.evaluate(&parse(&bytes), &MessageContext::default()),
        Verdict::Pass
    );
    assert!(RuleSet::empty().reads().is_empty());
    let set = compile(&[
        r#"msh.msg_type == "ADT" && pid.id != """#,
        r#"field("PID-3.1") != "" && has("PV1") && field("PID-3.1") == pid.id"#,
        r#"obx_list.all(o, o.value != "") && [1].all(pid, pid == 1)"#,
    ]);
    let mut reads = set.reads();
    reads.sort();
    let mut expected = vec![
        "msh.msg_type",
        "pid.id",
        "field(PID-3.1)",
        "has(PV1)",
        "obx_list",
    ];
    expected.sort();
    assert_eq!(reads, expected);
    // A variable used whole is extracted whole.
    let whole = compile(&["size(msh) > 0"]);
    assert_eq!(whole.reads().len(), 12);
    let filter =
        Filter::compile("nats", r#"msh.msg_type == "ORU""#, &RulesOptions::default()).expect("ok");
    assert_eq!(filter.reads(), ["msh.msg_type"]);
}

#[test]
fn filters_use_the_same_variables() {
    let oru = load(ORU);
    let adt = load(ADT);
    let options = RulesOptions::default();
    let filter = Filter::compile(
        "lab-results",
        r#"msh.msg_type == "ORU" && obx_list.exists(o, o.identifier == "2823-3")"#,
        &options,
    )
    .expect("compiles");
    let connection = MessageContext::default();
    assert_eq!(filter.matches(&parse(&oru), &connection), Ok(true));
    assert_eq!(filter.matches(&parse(&adt), &connection), Ok(false));
    let broken = Filter::compile("x", "int(pid.family) == 1", &options).expect("compiles");
    assert!(broken.matches(&parse(&adt), &connection).is_err());
    let e = Filter::compile("conn", "nope == 1", &options).expect_err("unknown variable");
    assert!(
        e.to_string().starts_with("rule 'conn': line 1, column 1"),
        "{e}"
    );
}

/// The cookbook of README.md, section "Validation rules (CEL)": the YAML block is read from
/// the README itself, so the documented rules are the tested ones.
fn cookbook() -> Vec<RuleSpec> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README");
    let start = readme
        .find("<!-- rules-cookbook -->")
        .expect("cookbook marker");
    let block = &readme[start..];
    let yaml_start = block.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let yaml_end = yaml_start + block[yaml_start..].find("```").expect("block end");
    #[derive(serde::Deserialize)]
    struct File {
        validation: ValidationSpec,
    }
    let file: File = serde_yaml_ng::from_str(&block[yaml_start..yaml_end]).expect("cookbook YAML");
    file.validation.rules
}

#[test]
fn readme_cookbook_rules_pass_and_fail_as_documented() {
    let specs = cookbook();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pid3-required",
            "known-message-types",
            "msh4-required",
            "glucose-in-range",
            "known-facilities"
        ]
    );
    let set = RuleSet::compile(&specs, &RulesOptions::default()).expect("cookbook compiles");
    let connection = MessageContext::default();
    let verdict = |bytes: &[u8]| -> Result<(), (String, OnFail, u16)> {
        let message = parse(bytes);
        match set.evaluate(&message, &connection) {
            Verdict::Pass => Ok(()),
            Verdict::Fail(f) => Err((f.rule.to_owned(), f.on_fail, f.code.as_u16())),
            Verdict::EvalError { rule, .. } => Err((rule.to_owned(), OnFail::AE, 207)),
        }
    };
    // Good messages of the corpus pass every rule.
    for file in [ADT, ORU, "adt_a03_v25.hl7", "oru_r01_v231_escapes.hl7"] {
        assert_eq!(verdict(&load(file)), Ok(()), "{file}");
    }
    let adt = String::from_utf8(load(ADT)).expect("ASCII");
    let oru = String::from_utf8(load(ORU)).expect("ASCII");
    let failing = [
        (
            adt.replace("PID|1||100234^^^NG^MR~", "PID|1||~"),
            "pid3-required",
            OnFail::AR,
            101,
        ),
        (
            adt.replace("ADT^A01^ADT_A01", "QRY^A19"),
            "known-message-types",
            OnFail::AR,
            200,
        ),
        (
            adt.replace("|ADMIT|NORTHGATE|", "|ADMIT||"),
            "msh4-required",
            OnFail::AR,
            101,
        ),
        (
            oru.replace("|5.4|mmol/L", "|88.0|mmol/L"),
            "glucose-in-range",
            OnFail::AR,
            102,
        ),
        // A value that is not a number is an evaluation error: AE.
        (
            oru.replace("|5.4|mmol/L", "|high|mmol/L"),
            "glucose-in-range",
            OnFail::AE,
            207,
        ),
        (
            adt.replace("|ADMIT|NORTHGATE|", "|ADMIT|ELSEWHERE|"),
            "known-facilities",
            OnFail::AR,
            207,
        ),
    ];
    for (message, rule, on_fail, code) in failing {
        assert_eq!(
            verdict(message.as_bytes()),
            Err((rule.to_owned(), on_fail, code)),
            "{rule}"
        );
    }
}

/// Every function name the compiler accepts exists in the interpreter.
#[test]
fn every_accepted_function_runs() {
    holds(
        ADT,
        &[
            r#"uint("3") == 3u && bytes("a") == b"a" && bool("true") && dyn(1) == 1"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getMonth() == 2"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getDayOfYear() == 72"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getDayOfMonth() == 13"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getDate() == 14"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getDayOfWeek() == 5"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getHours() == 10"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getMinutes() == 15"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getSeconds() == 30"#,
            r#"timestamp("2025-03-14T10:15:30.5Z").getMilliseconds() == 500"#,
            r#""abc".charAt(1) == "b" && "abc".indexOf("c") == 2 && "abca".lastIndexOf("a") == 3"#,
            r#""aBc".upperAscii() == "ABC" && " x ".trim() == "x" && ["a", "b"].join("-") == "a-b""#,
            r#""abc".reverse() == "cba" && "%s-%d".format(["a", 1]) == "a-1""#,
        ],
    );
}

/// A message that parses, built from random body segments over an alphabet rich in
/// delimiters, escapes, digits and non-UTF-8 bytes.
fn random_message() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = prop::sample::select(b"|^~\\&#FSTRE X01.9-\xe9\xff\r\nPIDOBXPV1MSH".to_vec());
    let segment = (
        prop::sample::select(vec!["PID", "PV1", "OBX", "MSH", "ZZ1", "EVN"]),
        prop::collection::vec(alphabet, 0..60),
    );
    (prop::collection::vec(segment, 0..8), prop::bool::ANY).prop_map(|(segments, iso)| {
        let charset = if iso { "8859/1" } else { "" };
        let mut out =
            format!("MSH|^~\\&|A|B|C|D|20250101||ORU^R01^ORU_R01|ID1|P|2.5.1||||||{charset}")
                .into_bytes();
        for (id, body) in segments {
            out.push(b'\r');
            out.extend_from_slice(id.as_bytes());
            out.push(b'|');
            out.extend_from_slice(&body);
        }
        out
    })
}

/// Rules reading every variable and function and running string functions on message text,
/// some bound to error on odd input; compiled once, each rule a set of its own so that every
/// one runs on every case (in one set the first failure would stop the rest).
static EVERY_VARIABLE_RULES: LazyLock<Vec<RuleSet>> = LazyLock::new(|| {
    [
        r#"size(msh) == 12 && size(pid) == 8 && size(pv1) == 4 && size(obx) == 6"#,
        r#"obx_list.all(o, size(o) == 6) && segments.size() >= 1 && peer.ip == """#,
        r#"size(tls.client_sans) == 0 && tls.client_cn == """#,
        r#"fields("OBX-5").all(v, size(v) >= 0) && size(fields("PID-3.1.2")) >= 0"#,
        r#"has("PID") || !has("PID") || count("OBX") >= 0"#,
        r#"field("OBX(2)-3(2).1.1") == field("OBX(2)-3(2).1.1") && fields("MSH-2").size() >= 1"#,
        r#"obx_list.map(o, o.value).exists(v, v.matches("^[0-9]+$")) || true"#,
        r#"obx_list.all(o, o.value == "" || double(o.value) >= 0.0)"#,
        r#"int(pid.id) >= 0"#,
        r#"pid.family.substring(0, 1) != "" && pid.family.charAt(0) != "@""#,
        r#"pid.name.split("^").size() >= 0 && pid.id.indexOf("9") >= -1"#,
        r#"obx.value.matches(obx.unit)"#,
        r#"timestamp(msh.datetime) != timestamp("2000-01-01T00:00:00Z")"#,
        r#"pid.family.lowerAscii().upperAscii().trim() != "@" && "%s".format([pid.id]) != "@""#,
        r#"segments.exists_one(s, s == "PID") && segments.map(s, s.size()).all(n, n == 3)"#,
    ]
    .iter()
    .map(|e| compile(&[e]))
    .collect()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_message_that_parses_makes_rules_panic(payload in random_message()) {
        let Ok(message) = Message::parse(&payload, &ParseOptions::default()) else {
            return Ok(());
        };
        for set in EVERY_VARIABLE_RULES.iter() {
            // Whatever the verdict, it names the rule, and an error has a reason.
            match set.evaluate(&message, &MessageContext::default()) {
                Verdict::Pass => {}
                Verdict::Fail(f) => prop_assert_eq!(f.index, 0),
                Verdict::EvalError { index, reason, .. } => {
                    prop_assert_eq!(index, 0);
                    prop_assert!(!reason.is_empty());
                }
            }
        }
    }
}
