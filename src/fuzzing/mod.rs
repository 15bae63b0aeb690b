//! Fuzz functions, inside the crate so that `fuzz/` targets and the seed-corpus unit tests
//! (`tests/fuzz_seeds.rs`) run the same code. Each asserts invariants, not only "no crash".

mod ack;
mod decoder;
mod parser;

pub use ack::ack;
pub use decoder::decoder;
pub use parser::parser;
