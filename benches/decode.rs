//! Criterion bench: decoding a ~1 MiB stream of realistic frames (GB/s).
//!
//! The stream is made of HL7-shaped payloads of 300 to 1000 bytes (CR segment separators, `|`
//! and `^` delimiters) in frames, with the CRLF some senders put between frames. The decoder is
//! driven as the server drives it: decode, advance by `consumed`, repeat. The bench asserts it
//! found every frame built, with the exact payload bytes, so a fast wrong decoder cannot pass.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mllpd::limits::FRAME_BYTES_MAX_DEFAULT;
use mllpd::mllp::{encode, Decoded, Decoder};

/// Size the stream is built up to.
const STREAM_BYTES: usize = 1 << 20;

/// A deterministic pseudo-random sequence (xorshift), so every run decodes the same stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One HL7-shaped payload of 300 to 1000 bytes.
fn payload(rng: &mut Rng, id: usize) -> Vec<u8> {
    let target = 300 + rng.below(701);
    let mut out = format!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20250101120000||ORU^R01^ORU_R01|MSG{id:08}|P|2.5.1\r\
         PID|1||{id}^^^HOSP^MR||DOE^JANE^Q||19800101|F\r"
    )
    .into_bytes();
    let mut obx = 1;
    while out.len() < target {
        let value = rng.below(100_000);
        let segment = format!("OBX|{obx}|NM|2345-7^GLUCOSE^LN||{value}|mg/dL|70-99|N|||F\r");
        out.extend_from_slice(segment.as_bytes());
        obx += 1;
    }
    out.truncate(target);
    out
}

/// The stream and the payloads it carries, in order.
fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut stream, mut payloads) = (Vec::with_capacity(STREAM_BYTES + 1100), Vec::new());
    while stream.len() < STREAM_BYTES {
        let payload = payload(&mut rng, payloads.len());
        encode(&payload, &mut stream);
        if rng.below(4) == 0 {
            stream.extend_from_slice(b"\r\n");
        }
        payloads.push(payload);
    }
    (stream, payloads)
}

/// Decodes every frame of `stream`; returns the frame count and the sum of payload lengths.
fn decode_all(stream: &[u8]) -> (usize, usize) {
    let mut decoder = Decoder::new(FRAME_BYTES_MAX_DEFAULT);
    let (mut at, mut frames, mut payload_bytes) = (0, 0, 0);
    loop {
        match decoder.decode(&stream[at..]) {
            Decoded::Frame { payload, consumed } => {
                frames += 1;
                payload_bytes += payload.len();
                at += consumed;
            }
            Decoded::Incomplete { consumed } => {
                assert_eq!(at + consumed, stream.len(), "stream ends between frames");
                return (frames, payload_bytes);
            }
            Decoded::Error { error, .. } => panic!("valid stream reported {error}"),
        }
    }
}

fn bench_decode(c: &mut Criterion) {
    let (stream, payloads) = stream();
    let expected = (payloads.len(), payloads.iter().map(Vec::len).sum::<usize>());
    // Exact payload bytes once, outside the timed loop; counts on every iteration.
    let mut decoder = Decoder::new(FRAME_BYTES_MAX_DEFAULT);
    let mut at = 0;
    for payload in &payloads {
        let Decoded::Frame {
            payload: range,
            consumed,
        } = decoder.decode(&stream[at..])
        else {
            panic!("frame expected at offset {at}");
        };
        assert_eq!(&stream[at..][range], payload.as_slice());
        at += consumed;
    }

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("stream_1MiB_300-1000B_frames", |b| {
        b.iter(|| {
            let found = decode_all(black_box(&stream));
            assert_eq!(found, expected);
            found
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
