//! The record format: encoding into a batch buffer and decoding a checked body. No IO.
//!
//! Invariant: [`encode`] writes exactly [`encoded_len`] bytes, and [`decode_body`] accepts
//! exactly what `encode` wrote (CRC, lengths and sequence are all checked by the caller or here),
//! so a reader never trusts a length it has not bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{DedupKey, RecordRef};

/// Bytes before the body: body length (u32) and CRC32C (u32).
pub const PREFIX_BYTES: usize = 8;

/// Fixed part of the body, before the dedup key and payload bytes.
pub const BODY_FIXED_BYTES: usize = 54;

/// Bytes a record adds to its dedup key and payload.
pub const RECORD_OVERHEAD_BYTES: usize = PREFIX_BYTES + BODY_FIXED_BYTES;

/// Largest body a valid record can have: a payload of `FRAME_BYTES_MAX_MAX` and three key fields
/// of the most a u16 length can say.
pub const BODY_BYTES_MAX: usize =
    BODY_FIXED_BYTES + 3 * u16::MAX as usize + crate::limits::FRAME_BYTES_MAX_MAX;

const _: () = assert!(BODY_BYTES_MAX <= u32::MAX as usize);

/// Flag bit: the record carries a dedup key.
const FLAG_DEDUP_KEY: u8 = 1;

/// A decoded record borrowing the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Receive time, µs since the Unix epoch.
    pub receive_time_unix_micros: u64,
    /// Connection id on its shard.
    pub connection_id: u64,
    /// Sender address, if recorded.
    pub peer: Option<SocketAddr>,
    /// Dedup key, if recorded.
    pub dedup_key: Option<DedupKey<'a>>,
    /// The message as received.
    pub payload: &'a [u8],
}

/// The key if every field fits a u16 length (otherwise the record is stored without one).
pub fn storable_key<'a>(key: Option<DedupKey<'a>>) -> Option<DedupKey<'a>> {
    key.filter(|k| {
        [k.sending_application, k.sending_facility, k.control_id]
            .iter()
            .all(|f| f.len() <= u16::MAX as usize)
    })
}

/// Bytes `record` takes once encoded (`None`: its payload is too large for a record).
pub fn encoded_len(record: &RecordRef<'_>) -> Option<usize> {
    if record.payload.len() > crate::limits::FRAME_BYTES_MAX_MAX {
        return None;
    }
    let key = storable_key(record.dedup_key).map_or(0, |k| {
        k.sending_application.len() + k.sending_facility.len() + k.control_id.len()
    });
    Some(RECORD_OVERHEAD_BYTES + key + record.payload.len())
}

/// Appends `record` with sequence number `seq` to `out`.
///
/// # Panics
/// If the payload is larger than `FRAME_BYTES_MAX_MAX` (check [`encoded_len`] first).
pub fn encode(record: &RecordRef<'_>, seq: u64, out: &mut Vec<u8>) {
    let total = encoded_len(record);
    assert!(total.is_some(), "payload exceeds FRAME_BYTES_MAX_MAX");
    let start = out.len();
    let key = storable_key(record.dedup_key);
    out.extend_from_slice(&[0; PREFIX_BYTES]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&record.receive_time_unix_micros.to_le_bytes());
    out.extend_from_slice(&record.connection_id.to_le_bytes());
    encode_peer(record.peer, out);
    let fields = key.map_or([&[][..]; 3], |k| {
        [k.sending_application, k.sending_facility, k.control_id]
    });
    out.push(if key.is_some() { FLAG_DEDUP_KEY } else { 0 });
    for field in fields {
        out.extend_from_slice(&(field.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    for field in fields {
        out.extend_from_slice(field);
    }
    out.extend_from_slice(record.payload);
    let body_len = (out.len() - start - PREFIX_BYTES) as u32;
    let crc = crc32c::crc32c(&out[start + PREFIX_BYTES..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(Some(out.len() - start), total);
}

/// Family byte, port, 16 address bytes.
fn encode_peer(peer: Option<SocketAddr>, out: &mut Vec<u8>) {
    let mut address = [0u8; 16];
    let (family, port) = match peer {
        None => (0u8, 0u16),
        Some(SocketAddr::V4(a)) => {
            address[..4].copy_from_slice(&a.ip().octets());
            (4, a.port())
        }
        Some(SocketAddr::V6(a)) => {
            address.copy_from_slice(&a.ip().octets());
            (6, a.port())
        }
    };
    out.push(family);
    out.extend_from_slice(&port.to_le_bytes());
    out.extend_from_slice(&address);
}

/// The (body length, CRC) of a prefix.
pub fn read_prefix(prefix: &[u8; PREFIX_BYTES]) -> (usize, u32) {
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    (len as usize, crc)
}

/// Decodes a body whose CRC was already checked. `Err` names what is inconsistent.
pub fn decode_body(body: &[u8]) -> Result<RecordView<'_>, &'static str> {
    if body.len() < BODY_FIXED_BYTES {
        return Err("record body shorter than its fixed part");
    }
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let u16_at = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]) as usize;
    let peer = decode_peer(&body[24..43])?;
    let flags = body[43];
    let lens = [u16_at(44), u16_at(46), u16_at(48)];
    let payload_len = u32::from_le_bytes([body[50], body[51], body[52], body[53]]) as usize;
    let key_len: usize = lens.iter().sum();
    if BODY_FIXED_BYTES + key_len + payload_len != body.len() {
        return Err("record lengths disagree");
    }
    let mut at = BODY_FIXED_BYTES;
    let mut field = |len: usize| {
        let slice = &body[at..at + len];
        at += len;
        slice
    };
    let key = DedupKey {
        sending_application: field(lens[0]),
        sending_facility: field(lens[1]),
        control_id: field(lens[2]),
    };
    let payload = field(payload_len);
    Ok(RecordView {
        seq: u64_at(0),
        receive_time_unix_micros: u64_at(8),
        connection_id: u64_at(16),
        peer,
        dedup_key: (flags & FLAG_DEDUP_KEY != 0).then_some(key),
        payload,
    })
}

/// Decodes the 19 peer bytes.
fn decode_peer(bytes: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    let port = u16::from_le_bytes([bytes[1], bytes[2]]);
    let mut address = [0u8; 16];
    address.copy_from_slice(&bytes[3..19]);
    let ip = match bytes[0] {
        0 => return Ok(None),
        4 => IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        )),
        6 => IpAddr::V6(Ipv6Addr::from(address)),
        _ => return Err("unknown peer address family"),
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Checks and decodes one whole record (prefix and body) at the start of `bytes`; returns it and
/// its length. For tests.
#[cfg(test)]
pub fn decode(bytes: &[u8]) -> Result<(RecordView<'_>, usize), &'static str> {
    let Some(prefix) = bytes.first_chunk::<PREFIX_BYTES>() else {
        return Err("short record prefix");
    };
    let (len, crc) = read_prefix(prefix);
    let Some(body) = bytes.get(PREFIX_BYTES..PREFIX_BYTES + len) else {
        return Err("short record body");
    };
    if crc32c::crc32c(body) != crc {
        return Err("record CRC mismatch");
    }
    Ok((decode_body(body)?, PREFIX_BYTES + len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record<'a>(payload: &'a [u8], key: Option<DedupKey<'a>>) -> RecordRef<'a> {
        RecordRef {
            receive_time_unix_micros: 1_700_000_000_000_000,
            connection_id: 42,
            peer: Some("10.1.2.3:2575".parse().unwrap()),
            payload,
            dedup_key: key,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let key = DedupKey {
            sending_application: b"LAB",
            sending_facility: b"HOSP",
            control_id: b"MSG0001",
        };
        let mut out = vec![0xAA];
        encode(&record(b"MSH|^~\\&|x\r", Some(key)), 7, &mut out);
        assert_eq!(
            out.len() - 1,
            encoded_len(&record(b"MSH|^~\\&|x\r", Some(key))).unwrap()
        );
        let (view, used) = decode(&out[1..]).unwrap();
        assert_eq!(used, out.len() - 1);
        assert_eq!(view.seq, 7);
        assert_eq!(view.receive_time_unix_micros, 1_700_000_000_000_000);
        assert_eq!(view.connection_id, 42);
        assert_eq!(view.peer, Some("10.1.2.3:2575".parse().unwrap()));
        assert_eq!(view.dedup_key, Some(key));
        assert_eq!(view.payload, b"MSH|^~\\&|x\r");
    }

    #[test]
    fn ipv6_and_no_peer_round_trip() {
        let mut out = Vec::new();
        let mut r = record(b"p", None);
        r.peer = Some("[2001:db8::1]:7".parse().unwrap());
        encode(&r, 1, &mut out);
        r.peer = None;
        encode(&r, 2, &mut out);
        let (first, used) = decode(&out).unwrap();
        assert_eq!(first.peer, Some("[2001:db8::1]:7".parse().unwrap()));
        assert_eq!(first.dedup_key, None);
        let (second, _) = decode(&out[used..]).unwrap();
        assert_eq!(second.peer, None);
        assert_eq!(second.seq, 2);
    }

    #[test]
    fn a_key_field_too_long_is_not_stored() {
        let long = vec![b'x'; u16::MAX as usize + 1];
        let key = DedupKey {
            sending_application: &long,
            sending_facility: b"",
            control_id: b"1",
        };
        let mut out = Vec::new();
        encode(&record(b"p", Some(key)), 1, &mut out);
        assert_eq!(out.len(), RECORD_OVERHEAD_BYTES + 1);
        assert_eq!(decode(&out).unwrap().0.dedup_key, None);
    }

    proptest! {
        #[test]
        fn any_flipped_byte_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..64),
                                         at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut out = Vec::new();
            encode(&record(&payload, None), 3, &mut out);
            let i = at.index(out.len());
            out[i] ^= 1 << bit;
            // CRC32C detects every single-bit error; a flipped length frames other bytes.
            prop_assert!(decode(&out).is_err());
        }
    }
}
