//! MLLP frame encoder: wraps a payload, or brackets one written in place.

use super::{CARRIAGE_RETURN, END_BLOCK, START_BLOCK};

/// Appends `payload` to `out` as one frame.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    frame_begin(out);
    out.extend_from_slice(payload);
    frame_end(out);
}

/// Appends the start block; write the payload next, then call [`frame_end`].
pub fn frame_begin(out: &mut Vec<u8>) {
    out.push(START_BLOCK);
}

/// Appends the end block and carriage return.
pub fn frame_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mllp::{Decoded, Decoder};
    use proptest::prelude::*;

    #[test]
    fn encode_brackets_the_payload_with_the_blocks() {
        let mut out = Vec::new();
        encode(b"MSH|^~\\&|A\r", &mut out);
        assert_eq!(out, b"\x0bMSH|^~\\&|A\r\x1c\x0d");
    }

    #[test]
    fn encode_appends_and_begin_end_equal_encode() {
        let mut out = b"prior".to_vec();
        encode(b"", &mut out);
        assert_eq!(out, b"prior\x0b\x1c\x0d");

        let (mut whole, mut parts) = (Vec::new(), Vec::new());
        encode(b"PID|1\r", &mut whole);
        frame_begin(&mut parts);
        parts.extend_from_slice(b"PID|1\r");
        frame_end(&mut parts);
        assert_eq!(whole, parts);
    }

    /// Payloads MLLP can carry: no start block, and no end block followed by CR.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|mut p| {
            p.retain(|&b| b != START_BLOCK);
            for i in 1..p.len() {
                if p[i - 1] == END_BLOCK && p[i] == CARRIAGE_RETURN {
                    p[i] = b'X';
                }
            }
            p
        })
    }

    proptest! {
        #[test]
        fn encoded_frames_decode_to_their_payloads_in_order(
            payloads in proptest::collection::vec(payload(), 1..8),
        ) {
            let mut out = Vec::new();
            for payload in &payloads {
                encode(payload, &mut out);
            }
            let mut decoder = Decoder::new(200);
            let mut at = 0;
            for payload in &payloads {
                match decoder.decode(&out[at..]) {
                    Decoded::Frame { payload: range, consumed } => {
                        prop_assert_eq!(&out[at..][range], payload.as_slice());
                        prop_assert_eq!(consumed, payload.len() + 3);
                        at += consumed;
                    }
                    other => prop_assert!(false, "expected a frame, got {:?}", other),
                }
            }
            prop_assert_eq!(at, out.len());
            prop_assert_eq!(decoder.stats().frames, payloads.len() as u64);
            prop_assert_eq!(decoder.decode(&out[at..]), Decoded::Incomplete { consumed: 0 });
        }
    }
}
