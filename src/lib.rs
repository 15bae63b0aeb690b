//! mllpd: an HL7 v2 MLLP receiver built thread-per-core.
//!
//! See `../shared/DESIGN.md` (and README) for the data flow: shard → `mllp::Decoder` →
//! `admission` (one parse, validation rules → one `Decision`) → journal → `ack::build` → one
//! write per read.
#![deny(unsafe_code)]

pub mod ack;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod cli;
pub mod config;
pub mod fuzzing;
pub mod hl7;
pub mod journal;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mllp;
pub mod route;
pub mod rules;
pub mod send;
pub mod server;
pub mod timers;
pub mod tls;
pub mod validate;
