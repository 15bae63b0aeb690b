//! Zero-copy HL7 v2 message model (HL7 v2.x chapter 2, "Control").
//!
//! A [`Message`] borrows the payload of a frame; every accessor returns `&[u8]` slices of it.
//! Parsing reads MSH only (delimiters, header fields, charset check); body segments are found
//! on demand. Escapes are decoded only when asked. Nothing here allocates on the parse path.

mod delimiters;
mod error;
mod escape;
mod message;
mod path;
mod scan;

pub use delimiters::Delimiters;
pub use error::{ErrorCode, Location, ParseError, ParseErrorKind};
#[cfg(test)]
pub(crate) use message::scans;
pub use message::{Charset, Message, MessageHeader, ParseOptions, Segment, Segments, Unparsed};
pub use path::{Path, PathError};
