//! End-to-end: the exact bytes of every kind of answer admission gives, on the socket path the
//! run asks for (MLLPD_TEST_SOCKET_IO). Written before admission became one `Decision` step
//! (issue 9) so they prove that refactor left every ACK byte as it was: AA, AR for a parse
//! error (with and without a readable MSH), AE when the journal fails, the enhanced-mode codes
//! CA/CE/CR, and MSH-15 suppressing an answer. MSH-7 and the ACK's own MSH-10 differ from ACK
//! to ACK and are masked (`Ack::masked`); every other byte is compared.

mod common;

use std::time::Duration;

use common::{adt, frame, Server};

/// An ADT^A01 like [`adt`] with MSH-15 (accept ACK type) and MSH-16 (application ACK type).
fn enhanced(id: &str, accept: &str, application: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ADT^A01^ADT_A01|{id}|P|2.5.1|||\
         {accept}|{application}\r\
         PID|1||12345^^^HOSP^MR||DOE^JOHN||19800101|M\r"
    )
    .into_bytes()
}

/// The ACK header every answer to [`adt`] / [`enhanced`] starts with.
const ADT_ACK_MSH: &str = "MSH|^~\\&|RECVAPP|RECVFAC|SENDAPP|SENDFAC|*||ACK^A01^ACK|*|P|2.5.1\r";

#[test]
fn accepted_and_rejected_answers_are_exact_in_both_modes() {
    let server = Server::start(&[("SHARDS", "1")]);
    let mut client = server.connect();
    // Original mode, accepted.
    client.send_message(&adt("ORIG-1"));
    assert_eq!(
        client.read_ack().masked(),
        format!("{ADT_ACK_MSH}MSA|AA|ORIG-1\r")
    );
    // Enhanced mode, accepted: CA.
    client.send_message(&enhanced("ENH-1", "AL", "NE"));
    assert_eq!(
        client.read_ack().masked(),
        format!("{ADT_ACK_MSH}MSA|CA|ENH-1\r")
    );
    // MSH-15 NE: no answer; ER: none for an accepted message; SU: CA. Only the SU one is
    // answered, so the next frame read is its CA.
    client.send_message(&enhanced("NE-1", "NE", "AL"));
    client.send_message(&enhanced("ER-1", "ER", "AL"));
    client.send_message(&enhanced("SU-1", "SU", "AL"));
    assert_eq!(
        client.read_ack().masked(),
        format!("{ADT_ACK_MSH}MSA|CA|SU-1\r")
    );
    // Missing MSH-10, enhanced mode: CR with ERR 101 at MSH-10, the sender's header echoed.
    client.send_message(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01||P|2.5|||AL\rPID|1\r");
    assert_eq!(
        client.read_ack().masked(),
        "MSH|^~\\&|C|D|A|B|*||ACK^A01^ACK|*|P|2.5\r\
         MSA|CR||required MSH field missing\r\
         ERR||MSH^1^10|101^Required field missing^HL70357|E||||required MSH field missing\r"
    );
    // A rejection with MSH-15 SU is suppressed; ER answers it (CR, unsupported version 203,
    // MSH-12 written 2.5 so the ACK itself is well formed).
    client.send_message(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|V-1|P|3.0|||SU\r");
    client.send_message(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|V-2|P|3.0|||ER\r");
    assert_eq!(
        client.read_ack().masked(),
        "MSH|^~\\&|C|D|A|B|*||ACK^A01^ACK|*|P|2.5\r\
         MSA|CR|V-2|MSH-12 version is not supported\r\
         ERR||MSH^1^12|203^Unsupported version id^HL70357|E||||MSH-12 version is not supported\r"
    );
    // Original mode, no MSH at all: AR 100 with default delimiters.
    client.send_message(b"not HL7");
    assert_eq!(
        client.read_ack().masked(),
        "MSH|^~\\&|||||*||ACK|*|P|2.5\r\
         MSA|AR||message does not start with an MSH segment\r\
         ERR|||100^Segment sequence error^HL70357|E||||message does not start with an MSH \
         segment\r"
    );
    // v2.3 (ERR-1 ELD form, MSH-9 without structure), other delimiters, MSH-18 echoed; then a
    // v2.3 message that is rejected (MSH-9 missing).
    client.send_message(b"MSH#*~\\&#A#B#C#D#2026##ORU*R01#O-1#T#2.3######8859/1\rOBX#1\r");
    assert_eq!(
        client.read_ack().masked(),
        "MSH#*~\\&#C#D#A#B#*##ACK*R01#*#T#2.3######8859/1\rMSA#AA#O-1\r"
    );
    client.send_message(b"MSH|^~\\&|A|B|C|D|2026|||O-2|P|2.3\r");
    assert_eq!(
        client.read_ack().masked(),
        "MSH|^~\\&|C|D|A|B|*||ACK|*|P|2.3\r\
         MSA|AR|O-2|required MSH field missing\r\
         ERR|MSH^1^9^101&Required field missing&HL70357\r"
    );
}

#[test]
fn a_journal_that_cannot_store_answers_ae_and_ce_exactly() {
    // The first flush fails: both messages, written together and journaled in one batch, are
    // answered AE / CE 207; the shard then reports the poisoned journal and the server exits.
    let mut server = Server::start(&[("SHARDS", "1"), ("MLLPD_FAULT_FAILED_SYNC_AFTER", "0")]);
    let mut client = server.connect();
    let mut both = frame(&adt("AE-1"));
    both.extend_from_slice(&frame(&enhanced("CE-1", "AL", "AL")));
    client.send(&both);
    let text = "message not stored: receiver storage failed; retry later";
    let err = format!("ERR|||207^Application internal error^HL70357|E||||{text}\r");
    assert_eq!(
        client.read_ack().masked(),
        format!("{ADT_ACK_MSH}MSA|AE|AE-1|{text}\r{err}")
    );
    assert_eq!(
        client.read_ack().masked(),
        format!("{ADT_ACK_MSH}MSA|CE|CE-1|{text}\r{err}")
    );
    let code = server.wait_exit(Duration::from_secs(20));
    assert_ne!(code, Some(0));
}
