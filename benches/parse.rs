//! Criterion bench: parse (see README for figures).
fn main() {}
