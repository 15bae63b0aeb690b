//! Runs every fuzz function over its committed seed corpus (`fuzz/corpus/<target>/`), so CI
//! exercises the fuzz invariants without a fuzzer.

use std::path::Path;

fn run_corpus(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("seed corpus directory exists") {
        let path = entry.expect("readable corpus entry").path();
        if path.is_file() {
            let data = std::fs::read(&path).expect("readable seed");
            body(&data);
            seeds += 1;
        }
    }
    assert!(
        seeds >= 10,
        "{target}: only {seeds} seeds in {}",
        dir.display()
    );
}

#[test]
fn decoder_seeds() {
    run_corpus("decoder", mllpd::fuzzing::decoder);
}

#[test]
fn parser_seeds() {
    run_corpus("parser", mllpd::fuzzing::parser);
}

#[test]
fn ack_seeds() {
    run_corpus("ack", mllpd::fuzzing::ack);
}
