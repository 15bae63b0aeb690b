//! The reference receiver's work: for every complete frame in a read buffer, one ACK built
//! from a fixed template with the message's MSH-10 copied into MSA-2, all appended to one
//! output buffer so the caller writes once per read.
//!
//! This is the floor, not a server: it does not validate, journal, or echo MSH-3..6/11/12.
//! It is still a correct acknowledger for the bench's messages (MSA-1 AA, MSA-2 = MSH-10,
//! HL7 v2.5.1 §2.9.2), so the bench can verify it like any peer. A payload without a readable
//! MSH-10 gets AR with an empty MSA-2 — the answer mllpd gives too.
//!
//! Framing (HL7 v2 Appendix C): bytes before `SB` are noise and skipped; a frame ends at the
//! first `EB CR` after its `SB`; a lone `EB` inside the payload is data.

use crate::message::msh10_span;
use crate::{CR, EB, SB};

/// The ACK before MSA-2. Fixed: the floor spends nothing on building headers.
const ACK_HEAD: &[u8] = b"\x0bMSH|^~\\&|FLOOR|PERF|||20260101000000||ACK|1|P|2.5.1\rMSA|AA|";
/// Same, rejecting: for a payload with no MSH-10.
const NAK_HEAD: &[u8] = b"\x0bMSH|^~\\&|FLOOR|PERF|||20260101000000||ACK|1|P|2.5.1\rMSA|AR|";
/// After MSA-2: end of segment and of frame.
const ACK_TAIL: &[u8] = &[CR, EB, CR];

/// Answers every complete frame in `input`, appending the ACKs to `out`. Returns how many
/// bytes of `input` were consumed (complete frames and noise); the rest is an unfinished
/// frame the caller keeps for the next read.
pub fn answer(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut consumed = 0;
    loop {
        let rest = &input[consumed..];
        let Some(start) = memchr::memchr(SB, rest) else {
            return input.len();
        };
        let Some(end) = frame_end(&rest[start + 1..]) else {
            return consumed + start;
        };
        let payload = &rest[start + 1..start + 1 + end];
        match msh10_span(payload) {
            Some((s, e)) => {
                out.extend_from_slice(ACK_HEAD);
                out.extend_from_slice(&payload[s..e]);
            }
            None => out.extend_from_slice(NAK_HEAD),
        }
        out.extend_from_slice(ACK_TAIL);
        consumed += start + 1 + end + 2;
    }
}

/// The first complete frame in `input`: its payload range and the bytes consumed through its
/// `EB CR` (noise before `SB` included). `None` until a whole frame is there.
pub fn next_frame(input: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    let start = memchr::memchr(SB, input)? + 1;
    let end = start + frame_end(&input[start..])?;
    Some((start..end, end + 2))
}

/// Offset of the `EB` of the first `EB CR` in `bytes`, if the frame is complete.
pub fn frame_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr::memchr(EB, &bytes[from..])?;
        match bytes.get(at + 1) {
            Some(&CR) => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Template, BUILTIN_ADT_A01};
    use crate::verify::check_ack;

    fn frames(ids: &[&str]) -> Vec<u8> {
        let template = Template::parse(BUILTIN_ADT_A01.as_bytes()).expect("template");
        let mut out = Vec::new();
        for id in ids {
            template.write_frame(id.as_bytes(), &mut out);
        }
        out
    }

    fn acks(mut out: &[u8]) -> Vec<&[u8]> {
        let mut got = Vec::new();
        while let Some(start) = memchr::memchr(SB, out) {
            let end = frame_end(&out[start + 1..]).expect("complete ACK frame");
            got.push(&out[start + 1..start + 1 + end]);
            out = &out[start + 1 + end + 2..];
        }
        got
    }

    #[test]
    fn answers_every_frame_of_a_read_in_order() {
        let input = frames(&["a1", "b22", "c333"]);
        let mut out = Vec::new();
        assert_eq!(answer(&input, &mut out), input.len());
        let codes = vec![b"AA".to_vec()];
        let got = acks(&out);
        assert_eq!(got.len(), 3);
        for (ack, id) in got.iter().zip(["a1", "b22", "c333"]) {
            assert_eq!(check_ack(ack, id.as_bytes(), &codes, true), Ok(()));
        }
    }

    #[test]
    fn any_split_yields_the_same_acks() {
        let input = frames(&["x", "yy"]);
        let mut whole = Vec::new();
        answer(&input, &mut whole);
        for cut in 0..input.len() {
            let mut out = Vec::new();
            let mut pending = input[..cut].to_vec();
            let used = answer(&pending, &mut out);
            pending.drain(..used);
            pending.extend_from_slice(&input[cut..]);
            let used = answer(&pending, &mut out);
            assert_eq!(used, pending.len(), "cut {cut}");
            assert_eq!(out, whole, "cut {cut}");
        }
    }

    #[test]
    fn noise_and_lone_eb_and_missing_msh10() {
        let mut input = b"\r\n junk".to_vec();
        input.extend_from_slice(b"\x0bMSH|^~\\&|A|B|C|D|T||ADT|q\x1cz|P\r\x1c\r");
        input.extend_from_slice(b"\x0bnot hl7\x1c\r");
        let mut out = Vec::new();
        assert_eq!(answer(&input, &mut out), input.len());
        let got = acks(&out);
        let codes = vec![b"AA".to_vec()];
        assert_eq!(check_ack(got[0], b"q\x1cz", &codes, true), Ok(()));
        assert!(got[1].ends_with(b"MSA|AR|\r"));
    }
}
