//! The record format: encoding into a batch buffer and decoding a checked body. No IO.
//!
//! Invariant: [`encode`] writes exactly [`encoded_len`] bytes, and [`decode_body`] accepts
//! exactly what `encode` wrote (CRC, lengths and sequence are all checked by the caller or here),
//! so a reader never trusts a length it has not bounded.
//!
//! Layout: prefix (body length, CRC32C), then the body: sequence, receive time, connection id,
//! peer (19 bytes), flags, the three dedup key field lengths, the payload length, the key
//! fields, the payload. Format versions are told apart by the flags byte, so every record
//! written before version 2 reads as it always did:
//! - version 1: flags bit 0 (a dedup key) only; the body ends with the payload.
//! - version 2: flags bit 1 says a client-identity section follows the payload (the verified
//!   TLS client certificate's subject CN and SANs): a byte saying whether a CN is there, the
//!   CN's length (u16) and bytes, the number of SANs (u16), each SAN's length (u16) and bytes.
//!   A record of a plaintext connection (or a TLS one without a client certificate) has no
//!   such section and is byte for byte a version 1 record. An mllpd from before version 2
//!   reads a record with the section as damaged: export the journal before a downgrade.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{DedupKey, RecordRef};
use crate::limits::CLIENT_IDENTITY_BYTES_MAX;

/// Bytes before the body: body length (u32) and CRC32C (u32).
pub const PREFIX_BYTES: usize = 8;

/// Fixed part of the body, before the dedup key and payload bytes.
pub const BODY_FIXED_BYTES: usize = 54;

/// Bytes a record adds to its dedup key and payload.
pub const RECORD_OVERHEAD_BYTES: usize = PREFIX_BYTES + BODY_FIXED_BYTES;

/// Largest body a valid record can have: a payload of `FRAME_BYTES_MAX_MAX`, three key fields
/// of the most a u16 length can say, and a client identity of `CLIENT_IDENTITY_BYTES_MAX`.
pub const BODY_BYTES_MAX: usize = BODY_FIXED_BYTES
    + 3 * u16::MAX as usize
    + crate::limits::FRAME_BYTES_MAX_MAX
    + CLIENT_IDENTITY_BYTES_MAX;

const _: () = assert!(BODY_BYTES_MAX <= u32::MAX as usize);

/// Flag bit: the record carries a dedup key.
const FLAG_DEDUP_KEY: u8 = 1;

/// Flag bit (format version 2): a client-identity section follows the payload.
const FLAG_CLIENT: u8 = 2;

/// Every flag bit a reader of this version understands; a record with another set was written
/// by a later version and is not guessed at.
const FLAGS_KNOWN: u8 = FLAG_DEDUP_KEY | FLAG_CLIENT;

/// Bytes of a client-identity section besides its names: the CN flag, the CN length, the SAN
/// count.
const CLIENT_FIXED_BYTES: usize = 1 + 2 + 2;

const _: () = assert!(CLIENT_IDENTITY_BYTES_MAX <= u16::MAX as usize);

/// The verified TLS client identity of the connection a record came on, to be journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRef<'a> {
    /// The certificate's subject CN.
    pub cn: Option<&'a str>,
    /// Its subject alternative names, as text.
    pub sans: &'a [String],
}

impl<'a> ClientRef<'a> {
    /// What of this identity a record stores: the CN (if it fits the section at all) and the
    /// SANs, in order, while the section stays within `CLIENT_IDENTITY_BYTES_MAX`; and the
    /// section's length. Deterministic, so `encoded_len` and `encode` agree.
    fn fit(&self) -> (Option<&'a str>, &'a [String], usize) {
        let mut len = CLIENT_FIXED_BYTES;
        let cn = self
            .cn
            .filter(|cn| len + cn.len() <= CLIENT_IDENTITY_BYTES_MAX);
        len += cn.map_or(0, str::len);
        let mut count = 0;
        for san in self.sans {
            if len + 2 + san.len() > CLIENT_IDENTITY_BYTES_MAX {
                break;
            }
            len += 2 + san.len();
            count += 1;
        }
        (cn, &self.sans[..count], len)
    }
}

/// A journaled client identity (a checked client-identity section), borrowing the reader's
/// buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIdentity<'a> {
    /// The checked section.
    section: &'a [u8],
}

impl<'a> ClientIdentity<'a> {
    /// The section checked: every length within it, every name UTF-8, nothing after the last.
    pub fn parse(section: &'a [u8]) -> Result<ClientIdentity<'a>, &'static str> {
        let bad = "bad client identity section";
        let mut names = Names { rest: section };
        let has_cn = *names.rest.first().ok_or(bad)?;
        names.rest = &names.rest[1..];
        if has_cn > 1 {
            return Err(bad);
        }
        names.name().ok_or(bad)?;
        let count = names.u16().ok_or(bad)?;
        for _ in 0..count {
            names.name().ok_or(bad)?;
        }
        if !names.rest.is_empty() {
            return Err(bad);
        }
        Ok(ClientIdentity { section })
    }

    /// The raw section (to copy it out of a reader's buffer; [`ClientIdentity::parse`] takes it
    /// back).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.section
    }

    /// The subject CN.
    pub fn cn(&self) -> Option<&'a str> {
        let mut names = Names {
            rest: self.section.get(1..).unwrap_or_default(),
        };
        let cn = names.name()?;
        (self.section.first() == Some(&1)).then_some(cn)
    }

    /// The subject alternative names, in certificate order.
    pub fn sans(&self) -> impl Iterator<Item = &'a str> {
        let mut names = Names {
            rest: self.section.get(1..).unwrap_or_default(),
        };
        let _cn = names.name();
        let count = names.u16().unwrap_or(0);
        (0..count).map_while(move |_| names.name())
    }
}

/// A cursor over a client-identity section's length-prefixed names.
struct Names<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Names<'a> {
    fn u16(&mut self) -> Option<usize> {
        let (len, rest) = self.rest.split_first_chunk::<2>()?;
        self.rest = rest;
        Some(u16::from_le_bytes(*len) as usize)
    }

    /// The next name; `None` when the section ends early or it is not UTF-8.
    fn name(&mut self) -> Option<&'a str> {
        let len = self.u16()?;
        let name = self.rest.get(..len)?;
        self.rest = &self.rest[len..];
        std::str::from_utf8(name).ok()
    }
}

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
    /// The verified TLS client identity of its connection (format version 2), if recorded.
    pub client: Option<ClientIdentity<'a>>,
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
    let client = record.client.map_or(0, |c| c.fit().2);
    Some(RECORD_OVERHEAD_BYTES + key + record.payload.len() + client)
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
    let mut flags = if key.is_some() { FLAG_DEDUP_KEY } else { 0 };
    if record.client.is_some() {
        flags |= FLAG_CLIENT;
    }
    out.push(flags);
    for field in fields {
        out.extend_from_slice(&(field.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    for field in fields {
        out.extend_from_slice(field);
    }
    out.extend_from_slice(record.payload);
    if let Some(client) = record.client {
        encode_client(client, out);
    }
    let body_len = (out.len() - start - PREFIX_BYTES) as u32;
    let crc = crc32c::crc32c(&out[start + PREFIX_BYTES..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(Some(out.len() - start), total);
}

/// The client-identity section (what of it fits; see [`ClientRef::fit`]).
fn encode_client(client: ClientRef<'_>, out: &mut Vec<u8>) {
    let (cn, sans, _) = client.fit();
    out.push(u8::from(cn.is_some()));
    let cn = cn.unwrap_or_default();
    out.extend_from_slice(&(cn.len() as u16).to_le_bytes());
    out.extend_from_slice(cn.as_bytes());
    out.extend_from_slice(&(sans.len() as u16).to_le_bytes());
    for san in sans {
        out.extend_from_slice(&(san.len() as u16).to_le_bytes());
        out.extend_from_slice(san.as_bytes());
    }
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
    if flags & !FLAGS_KNOWN != 0 {
        return Err("unknown record flags (a later format version)");
    }
    let lens = [u16_at(44), u16_at(46), u16_at(48)];
    let payload_len = u32::from_le_bytes([body[50], body[51], body[52], body[53]]) as usize;
    let key_len: usize = lens.iter().sum();
    let end = BODY_FIXED_BYTES + key_len + payload_len;
    let client = match (flags & FLAG_CLIENT != 0, body.get(end..)) {
        (false, Some([])) => None,
        (true, Some(section)) if !section.is_empty() => Some(ClientIdentity::parse(section)?),
        _ => return Err("record lengths disagree"),
    };
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
        client,
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
            client: None,
        }
    }

    /// A record as the format 1 encoder (before client identities) wrote it, byte by byte:
    /// sequence 9, time 1 700 000 000 000 000 µs, connection 42, peer 10.1.2.3:2575, key
    /// LAB/HOSP/MSG0001, payload `MSH|x`.
    fn format_1_record() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&9u64.to_le_bytes());
        body.extend_from_slice(&1_700_000_000_000_000u64.to_le_bytes());
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&[4, 0x0f, 0x0a, 10, 1, 2, 3]); // family, port 2575 LE, address
        body.extend_from_slice(&[0; 12]);
        body.push(1); // flags: a dedup key
        body.extend_from_slice(&[3, 0, 4, 0, 7, 0]); // key field lengths
        body.extend_from_slice(&[5, 0, 0, 0]); // payload length
        body.extend_from_slice(b"LABHOSPMSG0001MSH|x");
        let mut out = Vec::new();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_format_1_record_still_decodes() {
        let bytes = format_1_record();
        let (view, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(view.seq, 9);
        assert_eq!(view.receive_time_unix_micros, 1_700_000_000_000_000);
        assert_eq!(view.connection_id, 42);
        assert_eq!(view.peer, Some("10.1.2.3:2575".parse().unwrap()));
        let key = view.dedup_key.unwrap();
        assert_eq!(key.sending_application, b"LAB");
        assert_eq!(key.control_id, b"MSG0001");
        assert_eq!(view.payload, b"MSH|x");
        assert_eq!(view.client, None);
    }

    #[test]
    fn a_record_without_a_client_is_written_in_format_1() {
        let key = DedupKey {
            sending_application: b"LAB",
            sending_facility: b"HOSP",
            control_id: b"MSG0001",
        };
        let mut out = Vec::new();
        encode(&record(b"MSH|x", Some(key)), 9, &mut out);
        assert_eq!(out, format_1_record());
    }

    #[test]
    fn the_client_identity_round_trips() {
        let sans = vec!["lab.example".to_owned(), "10.0.0.7".to_owned()];
        let mut r = record(b"MSH|x", None);
        r.client = Some(ClientRef {
            cn: Some("lab-system"),
            sans: &sans,
        });
        let mut out = Vec::new();
        encode(&r, 3, &mut out);
        assert_eq!(Some(out.len()), encoded_len(&r));
        let (view, _) = decode(&out).unwrap();
        assert_eq!(view.payload, b"MSH|x");
        let client = view.client.unwrap();
        assert_eq!(client.cn(), Some("lab-system"));
        assert_eq!(
            client.sans().collect::<Vec<_>>(),
            ["lab.example", "10.0.0.7"]
        );
        assert_eq!(ClientIdentity::parse(client.as_bytes()), Ok(client));

        r.client = Some(ClientRef {
            cn: None,
            sans: &[],
        });
        out.clear();
        encode(&r, 4, &mut out);
        let client = decode(&out).unwrap().0.client.unwrap();
        assert_eq!((client.cn(), client.sans().count()), (None, 0));
    }

    #[test]
    fn sans_past_the_bound_are_left_out_of_the_record() {
        let sans: Vec<String> = (0..100)
            .map(|i| format!("{i:03}{}", "x".repeat(97)))
            .collect();
        let mut r = record(b"p", None);
        r.client = Some(ClientRef {
            cn: Some("many"),
            sans: &sans,
        });
        let mut out = Vec::new();
        encode(&r, 1, &mut out);
        assert_eq!(Some(out.len()), encoded_len(&r));
        let client = decode(&out).unwrap().0.client.unwrap();
        assert!(client.as_bytes().len() <= CLIENT_IDENTITY_BYTES_MAX);
        let kept: Vec<&str> = client.sans().collect();
        assert_eq!(kept.len(), (CLIENT_IDENTITY_BYTES_MAX - 5 - 4) / 102);
        assert_eq!(kept[..], sans[..kept.len()]);
    }

    #[test]
    fn a_bad_client_section_or_unknown_flag_is_refused() {
        assert!(ClientIdentity::parse(&[1, 5, 0, b'a']).is_err());
        assert!(ClientIdentity::parse(&[2, 0, 0, 0, 0]).is_err());
        assert!(ClientIdentity::parse(&[0, 0, 0, 0, 0, 9]).is_err());
        assert!(ClientIdentity::parse(&[0, 0, 0, 0, 0]).is_ok());
        let mut bytes = format_1_record();
        bytes[PREFIX_BYTES + 43] |= 0x80;
        let crc = crc32c::crc32c(&bytes[PREFIX_BYTES..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&bytes).is_err());
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
