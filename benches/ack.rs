//! Criterion bench: ack (see README for figures).
fn main() {}
