//! Criterion bench: decode (see README for figures).
fn main() {}
