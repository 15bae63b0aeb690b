//! Parses every message of the corpus under `tests/data/` (written for this project) and
//! asserts specific field values: header fields, body fields by path, repetitions, escapes,
//! custom delimiters, line ends and character sets.

use std::path::PathBuf;

use mllpd::hl7::{Charset, Message, ParseOptions};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).expect("corpus file exists")
}

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes, &ParseOptions::default()).expect("corpus message parses")
}

/// The raw value at `path` as text; panics when absent.
fn at<'a>(message: &Message<'a>, path: &str) -> &'a str {
    let value = message
        .get_str(path)
        .unwrap_or_else(|| panic!("{path} absent"));
    std::str::from_utf8(value).expect("UTF-8 value")
}

/// The unescaped value at `path` as text.
fn unescaped(message: &Message<'_>, path: &str) -> String {
    let raw = message
        .get_str(path)
        .unwrap_or_else(|| panic!("{path} absent"));
    String::from_utf8(message.delimiters().unescape(raw).into_owned()).expect("UTF-8 value")
}

/// Header triple every test checks: message type, trigger, control id.
fn header(message: &Message<'_>) -> (String, String, String) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        text(message.message_type()),
        text(message.trigger_event()),
        text(message.control_id()),
    )
}

fn expect_header(message: &Message<'_>, kind: &str, trigger: &str, control_id: &str) {
    assert_eq!(
        header(message),
        (kind.into(), trigger.into(), control_id.into())
    );
}

#[test]
fn every_file_parses_with_both_default_charsets_and_there_are_at_least_30() {
    let mut files = 0;
    for entry in std::fs::read_dir(data_dir()).expect("tests/data exists") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("readable");
        let message = Message::parse(&bytes, &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(message.segments().count() >= 2, "{}", path.display());
        if path.file_name().is_some_and(|n| n != "iso8859_v25.hl7") {
            let utf8 = ParseOptions {
                default_charset: Charset::Utf8,
            };
            assert!(Message::parse(&bytes, &utf8).is_ok(), "{}", path.display());
        }
        files += 1;
    }
    assert!(files >= 30, "only {files} corpus messages");
}

#[test]
fn adt_a01_316_bench_message() {
    let bytes = load("adt_a01_316.hl7");
    assert_eq!(bytes.len(), 316);
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A01", "NG20250314-0001");
    assert_eq!(m.message_structure(), b"ADT_A01");
    assert_eq!(
        (m.sending_application(), m.sending_facility()),
        (&b"ADMIT"[..], &b"NORTHGATE"[..])
    );
    assert_eq!(m.version_number(), (2, 5));
    assert_eq!(at(&m, "PID-3.1"), "100234");
    assert_eq!(at(&m, "PID-3(2).1"), "555-12-3456");
    assert_eq!(at(&m, "PID-5.1"), "HARTLEY");
    assert_eq!(at(&m, "PV1-3"), "4W^412^B^NG");
    assert_eq!(at(&m, "PV1-19"), "V778812");
}

#[test]
fn oru_r01_1k_bench_message() {
    let bytes = load("oru_r01_1k.hl7");
    assert!((900..=1200).contains(&bytes.len()));
    let m = parse(&bytes);
    expect_header(&m, "ORU", "R01", "LAB-778201");
    assert_eq!(
        (m.accept_ack_type(), m.application_ack_type()),
        (&b"AL"[..], &b"NE"[..])
    );
    assert_eq!(at(&m, "OBX(3)-5"), "139");
    assert_eq!(at(&m, "OBX(4)-8"), "H");
    assert_eq!(at(&m, "OBX(9)-3.2"), "Albumin");
    assert_eq!(m.get_str("OBX(10)-5"), None);
    assert_eq!(at(&m, "OBR-4.2"), "Comprehensive metabolic panel");
}

#[test]
fn adt_a01_v23() {
    let bytes = load("adt_a01_v23.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A01", "RS0001");
    assert_eq!(m.version(), b"2.3");
    assert_eq!(m.message_structure(), b"");
    assert_eq!(at(&m, "PID-11.3"), "BRISTOL");
    assert_eq!(at(&m, "PV1-7.2"), "PATEL");
}

#[test]
fn adt_a04_v231() {
    let bytes = load("adt_a04_v231.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A04", "RS0002");
    assert_eq!(m.version_number(), (2, 3));
    assert_eq!(at(&m, "AL1(2)-3.2"), "Peanut");
    assert_eq!(at(&m, "PID-7"), "19880229");
}

#[test]
fn adt_a08_v24() {
    let bytes = load("adt_a08_v24.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A08", "EF-A08-31");
    assert_eq!(at(&m, "PID-5.5"), "DR");
    assert_eq!(at(&m, "PID-11.2"), "FLAT 3");
    assert_eq!(at(&m, "EVN-5"), "USR14");
}

#[test]
fn adt_a03_v25() {
    let bytes = load("adt_a03_v25.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A03", "EF-A03-77");
    assert_eq!(at(&m, "PV1-19"), "V9902");
    assert_eq!(at(&m, "PV1-36"), "01");
    assert_eq!(at(&m, "PV1-45"), "20110930171000");
    assert_eq!(at(&m, "DG1-3.1"), "I50.9");
    assert_eq!(at(&m, "DG1-3.2"), "Heart failure, unspecified");
}

#[test]
fn adt_a02_v26() {
    let bytes = load("adt_a02_v26.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A02", "EF-A02-5");
    assert_eq!(m.version_number(), (2, 6));
    assert_eq!(at(&m, "PV1-3.1"), "ICU");
    assert_eq!(at(&m, "PV1-50"), "");
    assert_eq!(at(&m, "PV2-3.2"), "Post-operative monitoring");
}

#[test]
fn adt_a11_v27_truncation_character() {
    let bytes = load("adt_a11_v27_truncation.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A11", "WM-A11-1");
    assert_eq!(m.message_structure(), b"ADT_A09");
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.msh(2), b"^~\\&#");
    assert_eq!(m.sending_application(), b"PAS");
    assert_eq!(
        unescaped(&m, "NTE-3"),
        "Cancelled: duplicate registration #1 of 2"
    );
}

#[test]
fn adt_a28_v28() {
    let bytes = load("adt_a28_v28.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A28", "WM-A28-900");
    assert_eq!(m.version_number(), (2, 8));
    assert_eq!(at(&m, "PID-3(2).1"), "9434765919");
    assert_eq!(at(&m, "PID-3(2).5"), "NH");
    assert_eq!(at(&m, "PD1-3.3"), "G81002");
}

#[test]
fn adt_a40_merge_v251() {
    let bytes = load("adt_a40_merge_v251.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A40", "RS-MRG-12");
    assert_eq!(at(&m, "MRG-1.1"), "55099");
}

#[test]
fn oru_r01_v231_escapes_decode_on_request() {
    let bytes = load("oru_r01_v231_escapes.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORU", "R01", "RS-PATH-3");
    assert_eq!(
        at(&m, "OBX-5"),
        "Margins clear \\F\\ no invasion\\.br\\Grade 1\\S\\2"
    );
    assert_eq!(
        unescaped(&m, "OBX-5"),
        "Margins clear | no invasion\\.br\\Grade 1^2"
    );
    assert_eq!(unescaped(&m, "OBX(2)-5"), "A&B ~ C\\D");
    assert_eq!(unescaped(&m, "OBX(3)-5"), "line1\r\nline2");
    let mut out = Vec::new();
    m.delimiters().escape_into(b"line1\r\nline2", &mut out);
    assert_eq!(out, b"line1\\X0D\\\\X0A\\line2");
    assert_eq!(m.delimiters().unescape(&out).as_ref(), b"line1\r\nline2");
}

#[test]
fn oru_r01_v24_lf_line_ends() {
    let bytes = load("oru_r01_v24_lf.hl7");
    assert!(!bytes.contains(&b'\r'));
    let m = parse(&bytes);
    expect_header(&m, "ORU", "R01", "EF-POC-41");
    assert_eq!(m.segments().count(), 4);
    assert_eq!(at(&m, "OBX-5"), "7.2");
    assert_eq!(at(&m, "OBX-6"), "mmol/L");
}

#[test]
fn oru_r01_v26_crlf_line_ends() {
    let bytes = load("oru_r01_v26_crlf.hl7");
    assert!(bytes.windows(2).any(|w| w == b"\r\n"));
    let m = parse(&bytes);
    expect_header(&m, "ORU", "R01", "WM-ECG-7");
    assert_eq!(m.processing_id(), b"T");
    assert_eq!(m.segments().count(), 5);
    assert_eq!(at(&m, "OBX(2)-5"), "160");
    assert_eq!(at(&m, "OBX(2)-7"), "120-200");
}

#[test]
fn orm_o01_v23() {
    let bytes = load("orm_o01_v23.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORM", "O01", "RS-ORD-1");
    assert_eq!(at(&m, "ORC-1"), "NW");
    assert_eq!(at(&m, "OBR-4.2"), "Chest X-ray 2 views");
}

#[test]
fn orm_o01_v24_repetitions() {
    let bytes = load("orm_o01_v24_repetitions.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORM", "O01", "EF-ORD-88");
    assert_eq!(at(&m, "PID-3(1).1"), "EF90020");
    assert_eq!(at(&m, "PID-3(3).1"), "2233445566");
    assert_eq!(m.get_str("PID-3(4)"), None);
    assert_eq!(at(&m, "PID-11(2).1"), "PO BOX 7");
    assert_eq!(at(&m, "OBR-4(2).2"), "Lipid panel");
    let field = m.get_str("PID-3").expect("PID-3");
    assert_eq!(
        m.delimiters().repetition_of(field, 2),
        Some(&b"A998877^^^EF^PI"[..])
    );
}

#[test]
fn siu_s12_v24() {
    let bytes = load("siu_s12_v24.hl7");
    let m = parse(&bytes);
    expect_header(&m, "SIU", "S12", "RS-SCH-12");
    assert_eq!(at(&m, "SCH-1"), "APT100");
    assert_eq!(at(&m, "SCH-11.4"), "20060612093000");
    assert_eq!(at(&m, "AIP-3.3"), "ANJALI");
}

#[test]
fn siu_s12_v251() {
    let bytes = load("siu_s12_v251.hl7");
    let m = parse(&bytes);
    expect_header(&m, "SIU", "S12", "WM-SCH-3");
    assert_eq!(m.message_structure(), b"SIU_S12");
    assert_eq!(at(&m, "SCH-7.2"), "Follow-up");
    assert_eq!(at(&m, "AIL-3.1"), "ROOM5");
}

#[test]
fn mdm_t02_v25() {
    let bytes = load("mdm_t02_v25.hl7");
    let m = parse(&bytes);
    expect_header(&m, "MDM", "T02", "EF-DOC-501");
    assert_eq!(at(&m, "TXA-2"), "DS");
    assert_eq!(at(&m, "TXA-12"), "DOC501");
    assert_eq!(at(&m, "TXA-17"), "AU");
    assert_eq!(at(&m, "OBX-5(2)"), "Follow-up in 2 weeks.");
}

#[test]
fn mdm_t02_v26_encapsulated_data() {
    let bytes = load("mdm_t02_v26.hl7");
    let m = parse(&bytes);
    expect_header(&m, "MDM", "T02", "WM-DOC-77");
    assert_eq!(at(&m, "OBX-2"), "ED");
    assert_eq!(at(&m, "OBX-5.4"), "Base64");
    assert_eq!(at(&m, "OBX-5.5"), "JVBERi0xLjQK");
}

#[test]
fn vxu_v04_v251() {
    let bytes = load("vxu_v04_v251.hl7");
    let m = parse(&bytes);
    expect_header(&m, "VXU", "V04", "RS-IMM-9");
    assert_eq!(
        (m.accept_ack_type(), m.application_ack_type()),
        (&b"ER"[..], &b"AL"[..])
    );
    assert_eq!(at(&m, "RXA-5.2"), "COVID-19 mRNA");
    assert_eq!(at(&m, "RXR-2.2"), "Left deltoid");
}

#[test]
fn vxu_v04_v24() {
    let bytes = load("vxu_v04_v24.hl7");
    let m = parse(&bytes);
    expect_header(&m, "VXU", "V04", "EF-IMM-2");
    assert_eq!(at(&m, "RXA-5.1"), "03");
    assert_eq!(at(&m, "RXA-6"), "0.5");
}

#[test]
fn ack_v23() {
    let bytes = load("ack_v23.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ACK", "A01", "ACK0001");
    assert_eq!(at(&m, "MSA-1"), "AA");
    assert_eq!(at(&m, "MSA-2"), "RS0001");
}

#[test]
fn ack_v251_with_err() {
    let bytes = load("ack_v251_err.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ACK", "R01", "ACK-LAB-2");
    assert_eq!(m.receiving_facility(), b"NORTHGATE LAB");
    assert_eq!(at(&m, "MSA-2"), "LAB-778201");
    assert_eq!(at(&m, "ERR-2.3"), "3");
    assert_eq!(at(&m, "ERR-3.1"), "101");
    assert_eq!(at(&m, "ERR-4"), "E");
}

#[test]
fn ack_v27_enhanced_mode() {
    let bytes = load("ack_v27_enhanced.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ACK", "A11", "ACK-WM-1");
    assert_eq!(
        (m.accept_ack_type(), m.application_ack_type()),
        (&b"NE"[..], &b"NE"[..])
    );
    assert_eq!(at(&m, "MSA-1"), "CA");
}

#[test]
fn ack_v22_without_trigger() {
    let bytes = load("ack_v22_no_trigger.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ACK", "", "ACK-OLD-1");
    assert_eq!(m.version_number(), (2, 2));
}

#[test]
fn custom_delimiters_hash_set() {
    let bytes = load("custom_delims_hash.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORU", "R01", "SP-55");
    assert_eq!(m.msh(1), b"#");
    assert_eq!(m.msh(2), b"$*@%");
    assert_eq!(at(&m, "PID-3(2).1"), "SP7001B");
    assert_eq!(at(&m, "PID-5.3"), "ELENA");
    assert_eq!(at(&m, "OBX-5.1.2"), "sub");
    assert_eq!(unescaped(&m, "OBX-5"), "Ratio 3#1 and A$B%sub");
}

#[test]
fn custom_delimiters_bang_set() {
    let bytes = load("custom_delims_bang.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORM", "O01", "SP-56");
    let d = m.delimiters();
    assert_eq!(
        (d.field, d.component, d.repetition, d.escape, d.subcomponent),
        (b'!', b':', b';', b'?', b'/')
    );
    assert_eq!(at(&m, "PID-5.2"), "YUKI");
    assert_eq!(at(&m, "OBR-4(2).2"), "Chest X-ray 2 views");
    assert_eq!(at(&m, "OBR-4.3.2"), "detail");
}

#[test]
fn utf8_names() {
    let bytes = load("utf8_names_v251.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A01", "UTF-1");
    assert_eq!(m.charset(), Charset::Utf8);
    assert_eq!(m.sending_facility(), "GENÈVE".as_bytes());
    assert_eq!(at(&m, "PID-5.1"), "MÜLLER");
    assert_eq!(at(&m, "PID-5.2"), "JOSÉ");
    assert_eq!(at(&m, "PID-11.3"), "Genève");
    assert_eq!(at(&m, "NK1-2.1"), "渡辺");
    let mut broken = bytes.clone();
    let at_name = broken
        .iter()
        .position(|&b| b == 0xc3)
        .expect("a non-ASCII byte");
    broken[at_name + 1] = b'X';
    let error = Message::parse(&broken, &ParseOptions::default()).expect_err("invalid UTF-8");
    assert_eq!(
        (error.offset as usize, error.code().as_u16()),
        (at_name, 102)
    );
}

#[test]
fn iso8859_is_taken_as_bytes() {
    let bytes = load("iso8859_v25.hl7");
    assert!(std::str::from_utf8(&bytes).is_err());
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A08", "LY-8859");
    assert_eq!(m.charset(), Charset::Iso8859);
    assert_eq!(m.get_str("PID-5.1"), Some(&b"DUPR\xc9"[..]));
    assert_eq!(m.get_str("PID-5.2"), Some(&b"AM\xc9LIE"[..]));
}

#[test]
fn z_segments() {
    let bytes = load("zsegments_v24.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A01", "EF-Z-1");
    assert_eq!(at(&m, "ZPI-2.2"), "Very important");
    assert_eq!(at(&m, "ZV1-2(2).1"), "DIET");
    let ids: Vec<&[u8]> = m.body_segments().map(|s| s.id()).collect();
    assert_eq!(ids, [&b"EVN"[..], b"PID", b"PV1", b"ZPI", b"ZV1"]);
}

#[test]
fn empty_and_trailing_fields() {
    let bytes = load("empty_trailing_fields_v25.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A08", "EF-E-1");
    assert_eq!(m.get_str("MSH-17"), Some(&b""[..]));
    assert_eq!(m.get_str("MSH-18"), None);
    assert_eq!(m.charset(), Charset::Ascii);
    assert_eq!(at(&m, "PID-5"), "^^^^^");
    assert_eq!(at(&m, "PID-5.6"), "");
    assert_eq!(m.get_str("PID-5.7"), None);
    assert_eq!(at(&m, "PID-19"), "");
    assert_eq!(m.get_str("PID-20"), None);
    let nte = m.segment(b"NTE", 1).expect("NTE");
    assert_eq!(
        (nte.id(), nte.field(1), nte.field_opt(1)),
        (&b"NTE"[..], &b""[..], None)
    );
}

#[test]
fn leading_line_ends_before_msh() {
    let bytes = load("leading_crlf_v231.hl7");
    assert!(bytes.starts_with(b"\r\n\r\n"));
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A04", "RS-LEAD-1");
    assert_eq!(m.segments().next().map(|s| s.id()), Some(&b"MSH"[..]));
    assert_eq!(at(&m, "PID-5.1"), "EVANS");
}

#[test]
fn oru_r01_v28_composite_header_fields() {
    let bytes = load("oru_r01_v28_processing.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORU", "R01", "WM-LAB-8");
    assert_eq!(m.processing_id(), b"T^I");
    assert_eq!(m.version_field(), b"2.8^GBR");
    assert_eq!(m.version(), b"2.8");
    assert_eq!(m.sequence_number(), b"77");
    assert_eq!(m.character_set_field(), b"ASCII");
    assert_eq!(at(&m, "MSH-17"), "GBR");
    assert_eq!(at(&m, "OBX(2)-8"), "L");
    assert_eq!(at(&m, "OBX(3)-6"), "10*9/L");
}

#[test]
fn adt_a05_v27_without_truncation_character() {
    let bytes = load("adt_a05_v27.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ADT", "A05", "WM-A05-3");
    assert_eq!(m.delimiters().truncation, None);
    assert_eq!(m.version_number(), (2, 7));
    assert_eq!(at(&m, "PID-5.1"), "O'NEILL");
}

#[test]
fn orm_o01_v25_escaped_note() {
    let bytes = load("orm_o01_v25_nte_escape.hl7");
    let m = parse(&bytes);
    expect_header(&m, "ORM", "O01", "NG-ORD-14");
    assert_eq!(unescaped(&m, "NTE-3"), "Fasting \\ non-fasting| see note");
}
