//! Admission: the one place a message's fate is decided (DESIGN.md, data flow). From a frame's
//! payload and its connection's context, [`Admission::decide`] returns one [`Decision`]: the
//! ACK disposition, the ERR content and MSA-3 text, the validation rule that failed (if any),
//! and whether the message is to be journaled (with its dedup key). It parses the payload once;
//! the decision keeps that parse's header offsets ([`MessageHeader`]) and
//! [`Decision::answer`] builds the ACK from them, so nothing is parsed again. The server only
//! carries decisions out: it journals what [`Decision::dedup_key`] says, waits until that is
//! durable, turns a journal failure into AE ([`Decision::not_stored`]), and writes the answer.
//!
//! This module sits beside `ack` and `rules`, not under `server/`: it does no IO and reads no
//! clock (the ACK's timestamp and control id are passed in), so `mllpd validate` runs the very
//! same step offline, and tests and benches call it without sockets.
//!
//! Outcomes, in the order they are decided:
//! - a payload that is not HL7 or lacks a usable MSH → AR with ERR 100/102, default delimiters;
//! - a header error (missing MSH-9/10/11/12 → 101, bad version → 203, UTF-8 declared but invalid
//!   → 102) → AR with ERR, echoing MSH-10 (MSH and delimiters read by the same scan);
//! - a validation rule that is false (rules run in order, the first failure decides) → its
//!   `on_fail` (AR or AE), MSA-3 its message, ERR its code and location and, in ERR-5, its name;
//!   not journaled;
//! - a rule that cannot be evaluated → AE 207 with the reason (no message content); not
//!   journaled;
//! - otherwise accepted: journaled, then AA; a journal that cannot store it → AE 207;
//! - MSH-15 (enhanced mode) may suppress any of these answers (`ack::build`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ack::{self, AckError, AckOutcome, AckRequest, Disposition, Severity};
use crate::hl7::{ErrorCode, Message, MessageHeader, ParseError, ParseOptions};
use crate::journal::{DedupKey, JournalError};
use crate::rules::{self, MessageContext, OnFail, RuleSet};

/// What admission knows about the connection a frame came on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'c> {
    /// The peer's address (`peer.ip` of the rules).
    pub peer: Option<SocketAddr>,
    /// The TLS client certificate's subject CN (`tls.client_cn`); none until TLS is served.
    pub tls_client_cn: Option<&'c str>,
    /// The TLS client certificate's subject alternative names (`tls.client_sans`).
    pub tls_client_sans: &'c [String],
}

/// One generation of validation rules: a rule set and the number of the load that made it (1
/// at start, one more per accepted reload). Shared by every shard (`Arc`); a message is judged
/// by exactly one generation.
#[derive(Debug)]
pub struct Rules {
    /// The compiled rules (possibly none).
    pub set: RuleSet,
    /// Which load this is.
    pub generation: u64,
}

impl Rules {
    /// Generation `generation` of `set`.
    pub fn new(set: RuleSet, generation: u64) -> Arc<Rules> {
        Arc::new(Rules { set, generation })
    }
}

/// The rules in force for every shard: published by whoever loads them (start, SIGHUP reload,
/// off the shards) and taken by each shard's [`Admission`] between two messages. A shard looks
/// at one atomic per message and takes the lock only when the generation changed.
#[derive(Debug)]
pub struct RulesSlot {
    /// The generation of `current`, readable without the lock.
    generation: AtomicU64,
    /// The rules in force.
    current: Mutex<Arc<Rules>>,
}

impl RulesSlot {
    /// A slot holding `set` as generation 1.
    pub fn new(set: RuleSet) -> Arc<RulesSlot> {
        Arc::new(RulesSlot {
            generation: AtomicU64::new(1),
            current: Mutex::new(Rules::new(set, 1)),
        })
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<Rules> {
        Arc::clone(&self.lock())
    }

    /// Puts `set` in force as the next generation, which it returns. Every shard switches to
    /// it before the next message it decides; a message being decided keeps the rules it
    /// started with.
    pub fn publish(&self, set: RuleSet) -> u64 {
        let mut current = self.lock();
        let generation = current.generation + 1;
        *current = Rules::new(set, generation);
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// The lock; a panic elsewhere while it was held cannot leave it half written (one store).
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Rules>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How often one rule of the current generation decided a message, on one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCount {
    /// Messages the rule was false for.
    pub failed: u64,
    /// Messages it could not be evaluated on.
    pub errored: u64,
}

/// One shard's admission state: how payloads are parsed, the rules in force, and per-rule
/// counters. Sans IO: the caller owns it and passes every input.
#[derive(Debug)]
pub struct Admission {
    /// How payloads are parsed (default charset).
    parse_options: ParseOptions,
    /// Where the rules in force are published.
    slot: Arc<RulesSlot>,
    /// The rules in force here (`slot`'s, taken between two messages).
    rules: Arc<Rules>,
    /// Per rule of `rules`, in order: how often it decided (reset when the rules change).
    counts: Vec<RuleCount>,
}

impl Admission {
    /// Admission with the rules `slot` publishes.
    pub fn new(parse_options: ParseOptions, slot: Arc<RulesSlot>) -> Admission {
        let rules = slot.current();
        let counts = vec![RuleCount::default(); rules.set.len()];
        Admission {
            parse_options,
            slot,
            rules,
            counts,
        }
    }

    /// How payloads are parsed.
    pub fn parse_options(&self) -> &ParseOptions {
        &self.parse_options
    }

    /// The rules in force.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Takes the slot's rules when they changed; the counters start again. Called before each
    /// message, so a message is judged by exactly one generation.
    fn refresh(&mut self) {
        if self.slot.generation() != self.rules.generation {
            let rules = self.slot.current();
            self.counts = vec![RuleCount::default(); rules.set.len()];
            self.rules = rules;
        }
    }

    /// Per rule of the current generation, in order: its name and how often it decided.
    pub fn rule_counts(&self) -> impl Iterator<Item = (&str, RuleCount)> + '_ {
        (0..self.counts.len()).filter_map(|i| Some((self.rules.set.name(i)?, self.counts[i])))
    }

    /// Decides the fate of `payload`: one parse, then the rules (none: nothing is extracted).
    pub fn decide(&mut self, payload: &[u8], context: &Context<'_>) -> Decision {
        self.refresh();
        let message = match Message::parse_keeping_header(payload, &self.parse_options) {
            Ok(message) => message,
            Err(unparsed) => {
                let parsed = match &unparsed.header {
                    Some(header) => Parsed::Header(header.header()),
                    None => Parsed::Nothing,
                };
                return Decision {
                    parsed,
                    cause: Cause::Unparsed(unparsed.error),
                };
            }
        };
        let parsed = Parsed::Message(message.header());
        if self.rules.set.is_empty() {
            return Decision {
                parsed,
                cause: Cause::Accepted,
            };
        }
        let cause = self.judge(&message, context);
        Decision { parsed, cause }
    }

    /// Runs the rules on `message` and counts the one that decided.
    fn judge(&mut self, message: &Message<'_>, context: &Context<'_>) -> Cause {
        let connection = MessageContext {
            peer_ip: context.peer.map(|peer| peer.ip()),
            tls_client_cn: context.tls_client_cn,
            tls_client_sans: context.tls_client_sans,
        };
        let rule = |index| RuleRef {
            rules: Arc::clone(&self.rules),
            index,
        };
        match self.rules.set.evaluate(message, &connection) {
            rules::Verdict::Pass => Cause::Accepted,
            rules::Verdict::Fail(failure) => {
                if let Some(count) = self.counts.get_mut(failure.index) {
                    count.failed += 1;
                }
                Cause::Rule(rule(failure.index))
            }
            rules::Verdict::EvalError { index, reason, .. } => {
                if let Some(count) = self.counts.get_mut(index) {
                    count.errored += 1;
                }
                let text = format!("message could not be validated: {reason}");
                Cause::Evaluation {
                    rule: rule(index),
                    reason: reason.into_boxed_str(),
                    text: text.into_boxed_str(),
                }
            }
        }
    }
}

/// What the one parse of a payload left for the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A message: the ACK echoes its header.
    Message(MessageHeader),
    /// Not a message, but MSH and its delimiters are readable: the rejection echoes them.
    Header(MessageHeader),
    /// No usable MSH: a rejection with default delimiters.
    Nothing,
}

/// A rule of one generation, kept by index (the generation is kept alive with it).
#[derive(Clone, Debug)]
pub struct RuleRef {
    /// The generation the rule belongs to.
    rules: Arc<Rules>,
    /// Its index in the configured order.
    index: usize,
}

impl RuleRef {
    /// What the rule answers when it fails.
    fn failure(&self) -> Option<rules::Failure<'_>> {
        self.rules.set.failure(self.index)
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        self.rules.set.name(self.index).unwrap_or("")
    }

    /// The generation that judged the message.
    pub fn generation(&self) -> u64 {
        self.rules.generation
    }
}

/// Why a message got its answer.
#[derive(Clone, Debug)]
pub enum Cause {
    /// Parsed and every rule held: to be journaled, then accepted.
    Accepted,
    /// Did not parse.
    Unparsed(ParseError),
    /// A validation rule was false.
    Rule(RuleRef),
    /// A validation rule could not be evaluated.
    Evaluation {
        /// The rule.
        rule: RuleRef,
        /// Why, naming types and functions only (never message content).
        reason: Box<str>,
        /// MSA-3 / ERR-8.
        text: Box<str>,
    },
    /// Accepted, but the journal could not store it.
    NotStored(JournalError),
    /// ACK_AFTER=delivery: journaled, but a `sync: true` connector gave up on it (`Some`: the
    /// downstream's reason, AR) or did not confirm it in time (`None`, AE; delivery goes on).
    NotDelivered(Option<Box<str>>),
}

/// The fate of one frame, decided by [`Admission::decide`].
#[derive(Clone, Debug)]
pub struct Decision {
    /// What the parse left for the answer.
    parsed: Parsed,
    /// Why.
    cause: Cause,
}

impl Decision {
    /// Why the message gets its answer.
    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// What the parse left for the answer.
    pub fn parsed(&self) -> Parsed {
        self.parsed
    }

    /// The message again over its `payload` (the one decided on), when it parsed; nothing is
    /// scanned.
    pub fn message<'a>(&self, payload: &'a [u8]) -> Option<Message<'a>> {
        match self.parsed {
            Parsed::Message(header) => Some(header.attach(payload)),
            Parsed::Header(_) | Parsed::Nothing => None,
        }
    }

    /// The dedup key to journal `payload` (the one decided on) with, when it is to be
    /// journaled: only accepted messages are; rejected and AE'd ones never.
    pub fn dedup_key<'a>(&self, payload: &'a [u8]) -> Option<DedupKey<'a>> {
        match self.cause {
            Cause::Accepted => self.message(payload).map(|m| DedupKey::of(&m)),
            _ => None,
        }
    }

    /// The journal could not store the message: the answer becomes AE 207.
    pub fn not_stored(&mut self, error: JournalError) {
        self.cause = Cause::NotStored(error);
    }

    /// ACK_AFTER=delivery: a sync connector gave up on the message (`Some(reason)`: AR with
    /// the reason) or did not confirm it in time (`None`: AE).
    pub fn not_delivered(&mut self, rejection: Option<String>) {
        self.cause = Cause::NotDelivered(rejection.map(String::into_boxed_str));
    }

    /// The validation rule that decided, if one did.
    pub fn rule(&self) -> Option<&RuleRef> {
        match &self.cause {
            Cause::Rule(rule) | Cause::Evaluation { rule, .. } => Some(rule),
            _ => None,
        }
    }

    /// AA, AE or AR (CA, CE or CR in enhanced mode).
    pub fn disposition(&self) -> Disposition {
        match &self.cause {
            Cause::Accepted => Disposition::Accept,
            Cause::Unparsed(_) => Disposition::Reject,
            Cause::Rule(rule) => match rule.failure().map(|f| f.on_fail) {
                Some(OnFail::AE) => Disposition::Error,
                Some(OnFail::AR) | None => Disposition::Reject,
            },
            Cause::Evaluation { .. } | Cause::NotStored(_) => Disposition::Error,
            Cause::NotDelivered(Some(_)) => Disposition::Reject,
            Cause::NotDelivered(None) => Disposition::Error,
        }
    }

    /// The ERR segment's content; none for an accepted message.
    pub fn error(&self) -> Option<AckError> {
        let (code, location) = match &self.cause {
            Cause::Accepted => return None,
            Cause::Unparsed(error) => (error.code(), error.location()),
            Cause::Rule(rule) => match rule.failure() {
                Some(failure) => (failure.code, failure.location),
                None => (ErrorCode::ApplicationInternalError, None),
            },
            Cause::Evaluation { .. } | Cause::NotStored(_) | Cause::NotDelivered(_) => {
                (ErrorCode::ApplicationInternalError, None)
            }
        };
        Some(AckError {
            code,
            location,
            severity: Severity::Error,
        })
    }

    /// MSA-3 (and ERR-8): fixed texts, or the rule's message; never message content.
    pub fn text(&self) -> Option<&str> {
        match &self.cause {
            Cause::Accepted => None,
            Cause::Unparsed(error) => Some(error.text()),
            Cause::Rule(rule) => rule.failure().map(|f| f.message),
            Cause::Evaluation { text, .. } => Some(text),
            Cause::NotStored(error) => Some(journal_text(*error)),
            Cause::NotDelivered(Some(reason)) => Some(reason),
            Cause::NotDelivered(None) => {
                Some("message stored, not yet confirmed by its destination; retry later")
            }
        }
    }

    /// Appends the ACK payload answering `payload` (the one decided on) to `out`, unframed,
    /// with MSH-7 `timestamp` and MSH-10 `control_id`; nothing when MSH-15 suppresses it. The
    /// header comes from the decision's parse.
    pub fn answer(
        &self,
        payload: &[u8],
        timestamp: &[u8],
        control_id: &[u8],
        out: &mut Vec<u8>,
    ) -> AckOutcome {
        let request = AckRequest {
            disposition: self.disposition(),
            text: self.text().map(str::as_bytes),
            error: self.error(),
            timestamp,
            control_id,
        };
        match self.parsed {
            Parsed::Message(header) => {
                let rule = self.rule().map(|r| r.name().as_bytes());
                ack::build_naming(&header.attach(payload), &request, rule, out)
            }
            Parsed::Header(header) => {
                ack::build_rejection_of(Some(&header.attach(payload)), &request, out)
            }
            Parsed::Nothing => ack::build_rejection_of(None, &request, out),
        }
    }
}

/// MSA-3 of a message the journal could not store: what the sender should do.
fn journal_text(error: JournalError) -> &'static str {
    match error {
        JournalError::NoSpace => "message not stored: receiver out of disk space; retry later",
        JournalError::Poisoned => "message not stored: receiver storage failed; retry later",
        JournalError::RecordTooLarge => "message not stored: too large for the journal",
        JournalError::BatchFull | JournalError::Closed => {
            "message not stored: receiver is shutting down; retry later"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::scans;
    use crate::rules::{RuleSpec, RulesOptions};

    const ADT: &[u8] = b"MSH|^~\\&|SA|SF|RA|RF|20260101||ADT^A01|C-1|P|2.5\rPID|1||\r";

    fn admission(rules: &[(&str, &str, &str, OnFail)]) -> Admission {
        let specs: Vec<RuleSpec> = rules
            .iter()
            .map(|(name, expression, message, on_fail)| RuleSpec {
                name: (*name).to_owned(),
                expression: (*expression).to_owned(),
                message: (*message).to_owned(),
                on_fail: *on_fail,
                code: 101,
                location: None,
            })
            .collect();
        let set = RuleSet::compile(&specs, &RulesOptions::default()).expect("rules compile");
        Admission::new(ParseOptions::default(), RulesSlot::new(set))
    }

    /// The ACK text for `payload`, and how many MSH scans of it deciding and answering took.
    fn decide_and_answer(admission: &mut Admission, payload: &[u8]) -> (String, usize) {
        scans::reset();
        let decision = admission.decide(payload, &Context::default());
        let mut out = Vec::new();
        decision.answer(payload, b"20260101000000+0000", b"A-1", &mut out);
        let text = String::from_utf8(out).expect("ASCII ACK");
        (text, scans::of(payload))
    }

    #[test]
    fn every_kind_of_answer_scans_the_message_once() {
        let none: &[(&str, &str, &str, OnFail)] = &[];
        let failing = &[("pid3", "pid.id != \"\"", "PID-3|needed", OnFail::AR)];
        let erroring = &[("num", "int(pid.id) > 0", "x", OnFail::AR)];
        for (rules, payload, msa) in [
            (none, ADT, "MSA|AA|C-1\r"),
            (
                none,
                &b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C-2|P|3.0\r"[..],
                "MSA|AR|C-2|",
            ),
            (none, &b"junk"[..], "MSA|AR||"),
            (failing, ADT, "MSA|AR|C-1|PID-3\\F\\needed\r"),
            (erroring, ADT, "MSA|AE|C-1|message could not be validated"),
        ] {
            let mut admission = admission(rules);
            let (ack, scans) = decide_and_answer(&mut admission, payload);
            assert!(ack.contains(msa), "{ack}");
            assert_eq!(scans, 1, "MSH scans for {ack}");
        }
    }

    #[test]
    fn a_failed_rule_answers_its_code_message_location_and_name_and_is_not_journaled() {
        let mut admission = admission(&[
            ("always", "true", "never shown", OnFail::AR),
            ("pid3", "pid.id != \"\"", "PID-3|needed", OnFail::AE),
        ]);
        let decision = admission.decide(ADT, &Context::default());
        assert!(
            decision.dedup_key(ADT).is_none(),
            "a failed message is not journaled"
        );
        assert_eq!(decision.disposition(), Disposition::Error);
        let mut out = Vec::new();
        decision.answer(ADT, b"T", b"A-1", &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "MSH|^~\\&|RA|RF|SA|SF|T||ACK^A01^ACK|A-1|P|2.5\r\
             MSA|AE|C-1|PID-3\\F\\needed\r\
             ERR||PID^1^3^^1|101^Required field missing^HL70357|E|pid3|||PID-3\\F\\needed\r"
        );
        let counts: Vec<_> = admission.rule_counts().collect();
        assert_eq!(
            counts,
            [
                ("always", RuleCount::default()),
                (
                    "pid3",
                    RuleCount {
                        failed: 1,
                        errored: 0
                    }
                )
            ]
        );
    }

    #[test]
    fn a_failed_rule_honours_enhanced_mode_and_the_err_form_of_old_versions() {
        let mut admission = admission(&[("pid3", "pid.id != \"\"", "needed", OnFail::AR)]);
        let answer = |admission: &mut Admission, payload: &[u8]| {
            let decision = admission.decide(payload, &Context::default());
            let mut out = Vec::new();
            let outcome = decision.answer(payload, b"T", b"A-1", &mut out);
            (outcome, String::from_utf8(out).expect("ASCII"))
        };
        let er = b"MSH|^~\\&|SA|SF|RA|RF|1||ADT^A01|C-1|P|2.5|||ER|NE\rPID|1\r";
        let (_, ack) = answer(&mut admission, er);
        assert!(ack.contains("\rMSA|CR|C-1|needed\r"), "{ack}");
        let su = b"MSH|^~\\&|SA|SF|RA|RF|1||ADT^A01|C-1|P|2.5|||SU|NE\rPID|1\r";
        let (outcome, ack) = answer(&mut admission, su);
        assert_eq!((outcome, ack.as_str()), (AckOutcome::Suppressed, ""));
        // Before v2.5, ERR-1 (ELD) has no place for the rule's name.
        let old = b"MSH|^~\\&|SA|SF|RA|RF|1||ADT^A01|C-1|P|2.3\rPID|1\r";
        let (_, ack) = answer(&mut admission, old);
        assert!(
            ack.ends_with("\rMSA|AR|C-1|needed\rERR|PID^1^3^101&Required field missing&HL70357\r"),
            "{ack}"
        );
    }

    #[test]
    fn an_evaluation_error_is_ae_207_with_the_reason_and_counted() {
        let mut admission = admission(&[("num", "int(msh.control_id) > 0", "x", OnFail::AR)]);
        let decision = admission.decide(ADT, &Context::default());
        assert!(decision.dedup_key(ADT).is_none());
        let mut out = Vec::new();
        decision.answer(ADT, b"T", b"A-1", &mut out);
        let ack = String::from_utf8(out).expect("ASCII");
        assert!(
            ack.contains("\rMSA|AE|C-1|message could not be validated: int() failed"),
            "{ack}"
        );
        assert!(
            ack.contains("\rERR|||207^Application internal error^HL70357|E|num|||"),
            "{ack}"
        );
        assert!(!ack.contains("C-1|||"), "no content beyond MSA-2: {ack}");
        assert_eq!(admission.rule_counts().next().map(|c| c.1.errored), Some(1));
    }

    #[test]
    fn an_accepted_message_is_journaled_with_its_dedup_key() {
        let mut admission = admission(&[]);
        let mut decision = admission.decide(ADT, &Context::default());
        let key = decision.dedup_key(ADT).expect("journaled");
        assert_eq!(key.control_id, b"C-1");
        decision.not_stored(JournalError::NoSpace);
        assert_eq!(decision.disposition(), Disposition::Error);
        assert!(decision.dedup_key(ADT).is_none());
    }

    #[test]
    fn published_rules_take_effect_at_the_next_message() {
        let slot = RulesSlot::new(RuleSet::empty());
        let mut admission = Admission::new(ParseOptions::default(), Arc::clone(&slot));
        assert!(matches!(
            admission.decide(ADT, &Context::default()).cause(),
            Cause::Accepted
        ));
        let spec = RuleSpec {
            name: "no-adt".to_owned(),
            expression: "msh.msg_type != \"ADT\"".to_owned(),
            message: "no ADT".to_owned(),
            on_fail: OnFail::AR,
            code: 200,
            location: None,
        };
        let set = RuleSet::compile(&[spec], &RulesOptions::default()).expect("compiles");
        assert_eq!(slot.publish(set), 2);
        let decision = admission.decide(ADT, &Context::default());
        assert_eq!(
            decision.rule().map(|r| (r.name(), r.generation())),
            Some(("no-adt", 2))
        );
        assert_eq!(admission.rules().generation, 2);
    }
}
