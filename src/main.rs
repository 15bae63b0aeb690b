//! The mllpd binary: CLI → Config → run.

fn main() {}
