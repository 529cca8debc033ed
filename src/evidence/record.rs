//! The evidence record (spec §4): a typed model of the ETSI EN 319 522-1 events, serialised
//! canonically with RFC 8785 (JCS) so that the same record always has the same bytes.
//!
//! Parse, don't validate: [`EvidenceRecord::from_canonical`] accepts exactly the bytes that
//! [`EvidenceRecord::to_canonical`] produces for some valid record, and nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::accounts::{AuthLevel, IdentityMethod};
use crate::address::EmailAddress;

/// The record format version this code writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest record format version this code still reads (bundles handed out years ago).
pub const OLDEST_VERSION: u32 = 1;
/// The log entry (commitment) format version: unchanged by record version 2.
pub const COMMITMENT_VERSION: u32 = 1;
/// The evidence policy under which version 2 records are issued (docs/proof-bundle.md,
/// "Evidence policy").
pub const EVIDENCE_POLICY: &str = "urn:bote:evidence-policy:1";
/// The time source of the event times bote writes.
pub const TIME_SOURCE: &str = "gateway-clock";

/// Why a byte string is not a valid evidence record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of the record's shape (names the field where possible).
    #[error("not a valid evidence record: {0}")]
    Shape(String),
    /// A version this code does not know.
    #[error(
        "unsupported evidence format version {0} (this bote reads versions {OLDEST_VERSION} to \
         {FORMAT_VERSION})"
    )]
    Version(u32),
    /// A field the record's version requires is absent, or one it does not know is present.
    #[error("evidence record version {version}: {problem}")]
    Fields {
        /// The record's version.
        version: u32,
        /// What is wrong.
        problem: String,
    },
    /// A positive event with a failure reason, or a negative one with RA01.
    #[error("reason {reason} does not fit event {event}")]
    Reason {
        /// The event.
        event: Event,
        /// The reason.
        reason: ReasonCode,
    },
    /// Valid content, but not in canonical (RFC 8785) form.
    #[error("evidence record is not in canonical JSON form (RFC 8785)")]
    NotCanonical,
    /// Serialisation failed (cannot happen for well-formed values).
    #[error("cannot serialise evidence record: {0}")]
    Serialize(String),
}

named_enum!(
    /// The events of ETSI EN 319 522-1 that bote records — these and no others.
    Event, "event", {
        /// The gateway accepted a sender's submission.
        SubmissionAcceptance => "SubmissionAcceptance",
        /// The gateway refused an authenticated sender's complete submission.
        SubmissionRejection => "SubmissionRejection",
        /// A peer gateway accepted a relayed message.
        RelayAcceptance => "RelayAcceptance",
        /// A peer gateway refused a relayed message.
        RelayRejection => "RelayRejection",
        /// Relaying to a peer gateway failed.
        RelayFailure => "RelayFailure",
        /// A non-ERDS mail server (an office's own) accepted the message.
        RelayToNonERDS => "RelayToNonERDS",
        /// Relaying to a non-ERDS mail server failed for good.
        RelayToNonERDSFailure => "RelayToNonERDSFailure",
        /// A message arrived from a registered non-ERDS origin.
        ReceivedFromNonERDS => "ReceivedFromNonERDS",
        /// The message was placed in the recipient's mailbox.
        ContentConsignment => "ContentConsignment",
        /// The message could not be placed in the recipient's mailbox.
        ContentConsignmentFailure => "ContentConsignmentFailure",
        /// The recipient took the message (first opening, spec §2).
        ContentHandover => "ContentHandover",
        /// Handover failed.
        ContentHandoverFailure => "ContentHandoverFailure",
    }
);

impl Event {
    /// True for events that report success (their reason is RA01).
    pub fn is_positive(self) -> bool {
        matches!(
            self,
            Self::SubmissionAcceptance
                | Self::RelayAcceptance
                | Self::RelayToNonERDS
                | Self::ReceivedFromNonERDS
                | Self::ContentConsignment
                | Self::ContentHandover
        )
    }
}

named_enum!(
    /// Reason codes in the spirit of ETSI EN 319 522-2 (documented in docs/proof-bundle.md).
    ReasonCode, "reason code", {
        /// Accepted / succeeded.
        Accepted => "RA01",
        /// The message is malformed.
        InvalidFormat => "RA02",
        /// Malware was found.
        Malware => "RA03",
        /// The sender's quota or rate limit is exhausted.
        QuotaExceeded => "RA04",
        /// Refused by policy (size, options, sender not allowed).
        Policy => "RA05",
        /// The recipient's system refused the message.
        RefusedByRecipientSystem => "RB07",
        /// The recipient's system could not be reached.
        Unreachable => "RB08",
        /// The recipient does not exist.
        UnknownRecipient => "RB09",
        /// Delivery attempts expired.
        Expired => "RD03",
    }
);

/// A 128-bit random evidence identifier, as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvidenceId([u8; 16]);

impl EvidenceId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// A SHA-256 digest, as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
}

macro_rules! hex_newtype {
    ($name:ident, $len:literal, $what:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let lower = s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                let mut out = [0u8; $len];
                if s.len() != 2 * $len || !lower || hex::decode_to_slice(s, &mut out).is_err() {
                    return Err(format!(
                        "{} must be {} lower-case hex digits",
                        $what,
                        2 * $len
                    ));
                }
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_newtype!(EvidenceId, 16, "an evidence id");
hex_newtype!(Sha256Digest, 32, "a SHA-256 digest");

/// An event time: UTC, millisecond precision, written as RFC 3339 (`…T…:ss.mmmZ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::rfc3339_ms(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::clock::parse_rfc3339_ms(&s).map(Self).ok_or_else(|| {
            serde::de::Error::custom("time must be RFC 3339 UTC with milliseconds (…Z)")
        })
    }
}

/// How the sender's identity was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityAssurance {
    /// Whether an operator verified it.
    pub verified: bool,
    /// How, when verified.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<IdentityMethod>,
}

/// The sender as the gateway knew them at the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// Address.
    pub address: EmailAddress,
    /// Identity assurance.
    pub identity: IdentityAssurance,
    /// Authentication level of the submission.
    pub auth_level: AuthLevel,
}

/// One attachment's name, size and digest (of its decoded bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// File name as given by the sender.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256Digest,
}

/// Which message the record is about: identifiers and digests, never subject or body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRef {
    /// The gateway's message id.
    pub gateway_id: String,
    /// The RFC 5322 Message-ID, where the message has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_id: Option<String>,
    /// SHA-256 of the exact RFC 5322 bytes as submitted.
    pub sha256: Sha256Digest,
    /// Size of those bytes.
    pub size: u64,
    /// Attachments: every one, or the first [`LISTED_ATTACHMENTS`] when there are more.
    pub attachments: Vec<Attachment>,
    /// When a message has more than [`LISTED_ATTACHMENTS`] attachments: how many, and the
    /// digest of the complete list, so the record stays small and still commits to all.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub all_attachments: Option<AttachmentList>,
}

/// Attachments a record lists one by one; beyond, it carries an [`AttachmentList`].
pub const LISTED_ATTACHMENTS: usize = 20;

/// The complete attachment list of a message, by count and digest: SHA-256 of the RFC 8785
/// canonical JSON array of every attachment (`[{"name":…,"sha256":…,"size":…},…]`, in
/// message order), which anyone holding the message can recompute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentList {
    /// How many attachments the message has.
    pub count: u64,
    /// SHA-256 of the canonical JSON of all of them.
    pub sha256: Sha256Digest,
}

impl AttachmentList {
    /// The listed attachments and, for a long list, its summary.
    pub fn bounded(
        mut all: Vec<Attachment>,
    ) -> Result<(Vec<Attachment>, Option<Self>), RecordError> {
        if all.len() <= LISTED_ATTACHMENTS {
            return Ok((all, None));
        }
        let canonical = canonical_json(&all)?;
        let summary = Self {
            count: all.len() as u64,
            sha256: Sha256Digest::of(&canonical),
        };
        all.truncate(LISTED_ATTACHMENTS);
        Ok((all, Some(summary)))
    }
}

/// Event details; absent fields do not apply to the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Details {
    /// The remote host of a relay.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote_host: Option<String>,
    /// The TLS version of a relay connection (`TLSv1.3`, or `none`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_version: Option<String>,
    /// The remote server's reply text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reply: Option<String>,
    /// The recipient's authentication level at handover.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipient_auth_level: Option<AuthLevel>,
    /// A note such as why content passed unscanned (already end-to-end encrypted).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// Version 2, ContentHandover of an office mailbox: who took it, as a pseudonym the
    /// operator can resolve (`u-` a member, `t-` office software, then 16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub member: Option<String>,
}

/// The options the sender chose (spec §2), as recorded from version 2 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    /// Absenderbestätigt.
    pub authoritative: bool,
    /// Persönlich.
    pub personal: bool,
    /// Abholbestätigung.
    pub retrieval_confirmation: bool,
}

/// Where a record stands in its (message, recipient) chain (version 2): its position and
/// the digest of the record before it, so that a chain with a record dropped, added or
/// reordered no longer links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainLink {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// SHA-256 of the previous record's canonical bytes; absent for the first.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prev: Option<Sha256Digest>,
}

impl ChainLink {
    /// The link of a chain's first record.
    pub fn first() -> Self {
        Self { seq: 1, prev: None }
    }

    /// The link of the record that follows `previous` (at position `previous_seq`).
    pub fn after(previous_seq: u64, previous: &[u8]) -> Self {
        Self {
            seq: previous_seq + 1,
            prev: Some(Sha256Digest::of(previous)),
        }
    }
}

/// The RFC 8785 (JCS) bytes of `value`. serde_jcs writes them by buffering and sorting
/// every member as it goes: 10 µs for a record here, and a relayed message has three
/// records written or read back. This builds serde_json's value tree and writes it with
/// each object's members sorted by UTF-16 code units: 3 µs, the same bytes (serde_json
/// escapes strings as JCS does). JCS writes numbers as ECMAScript doubles, which an
/// integer beyond ±2^53 or a float would not survive here: such a tree (records have
/// none) is left to serde_jcs.
fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>, RecordError> {
    let serialize = |e: serde_json::Error| RecordError::Serialize(e.to_string());
    let tree = serde_json::to_value(value).map_err(serialize)?;
    let mut out = Vec::with_capacity(1024);
    if write_canonical(&tree, &mut out).map_err(serialize)? {
        Ok(out)
    } else {
        serde_jcs::to_vec(value).map_err(|e| RecordError::Serialize(e.to_string()))
    }
}

/// Appends `value` in JCS form; `false` (and `out` unusable) for a number JCS would write
/// differently.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) -> serde_json::Result<bool> {
    use serde_json::Value;
    /// Integers a double holds exactly: JCS writes them as plain digits.
    const EXACT: u64 = 1 << 53;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => serde_json::to_writer(&mut *out, value)?,
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .map(|u| u <= EXACT)
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= EXACT));
            if exact != Some(true) {
                return Ok(false);
            }
            serde_json::to_writer(&mut *out, n)?;
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_canonical(item, out)? {
                    return Ok(false);
                }
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                if !write_canonical(member, out)? {
                    return Ok(false);
                }
            }
            out.push(b'}');
        }
    }
    Ok(true)
}

/// One evidence record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRecord {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Random id; salts the log commitment against guessing.
    pub evidence_id: EvidenceId,
    /// The event.
    pub event: Event,
    /// RA01 for positive events, a failure reason otherwise.
    pub reason: ReasonCode,
    /// When it happened.
    pub time: Timestamp,
    /// The issuing gateway (its first domain).
    pub issuer: String,
    /// The sender.
    pub sender: Sender,
    /// The one recipient this record is about (spec §3.4: per recipient).
    pub recipient: EmailAddress,
    /// The message.
    pub message: MessageRef,
    /// Event details.
    pub details: Details,
    /// Version 2: the evidence policy the record is issued under ([`EVIDENCE_POLICY`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy: Option<String>,
    /// Version 2: the fingerprint of the evidence key that signs the record (upper-case
    /// hex), binding `issuer` to the signing certificate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuer_key: Option<String>,
    /// Version 2: where `time` comes from ([`TIME_SOURCE`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time_source: Option<String>,
    /// Version 2: when the message was submitted (or received), on every record.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub submission_time: Option<Timestamp>,
    /// Version 2: the options the sender chose; absent in chains begun under version 1.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub options: Option<RecordOptions>,
    /// Version 2: the recipient's identity assurance, where the gateway knows the
    /// recipient (a local mailbox).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipient_identity: Option<IdentityAssurance>,
    /// Version 2: the record's place in its chain.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chain: Option<ChainLink>,
}

/// The log entry committing to one record: exactly the canonical JSON of spec §4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// The record's event.
    pub event: Event,
    /// SHA-256 of the record's canonical bytes.
    pub record_sha256: Sha256Digest,
    /// Always 1.
    pub version: u32,
}

impl EvidenceRecord {
    /// Checks the invariants serde cannot express.
    fn check(&self) -> Result<(), RecordError> {
        match self.version {
            1 => self.check_v1()?,
            2 => self.check_v2()?,
            other => return Err(RecordError::Version(other)),
        }
        if self.event.is_positive() != (self.reason == ReasonCode::Accepted) {
            return Err(RecordError::Reason {
                event: self.event,
                reason: self.reason,
            });
        }
        Ok(())
    }

    /// Version 1 knows none of the version 2 fields.
    fn check_v1(&self) -> Result<(), RecordError> {
        let v2_fields = [
            ("policy", self.policy.is_some()),
            ("issuer_key", self.issuer_key.is_some()),
            ("time_source", self.time_source.is_some()),
            ("submission_time", self.submission_time.is_some()),
            ("options", self.options.is_some()),
            ("recipient_identity", self.recipient_identity.is_some()),
            ("chain", self.chain.is_some()),
            ("details.member", self.details.member.is_some()),
        ];
        match v2_fields.iter().find(|(_, present)| *present) {
            Some((name, _)) => Err(RecordError::Fields {
                version: 1,
                problem: format!("`{name}` does not exist in this version"),
            }),
            None => Ok(()),
        }
    }

    /// Version 2 requires policy, issuer key, time source, submission time and chain link.
    fn check_v2(&self) -> Result<(), RecordError> {
        let problem = |problem: String| RecordError::Fields {
            version: 2,
            problem,
        };
        let required = [
            ("policy", self.policy.is_none()),
            ("issuer_key", self.issuer_key.is_none()),
            ("time_source", self.time_source.is_none()),
            ("submission_time", self.submission_time.is_none()),
            ("chain", self.chain.is_none()),
        ];
        if let Some((name, _)) = required.iter().find(|(_, absent)| *absent) {
            return Err(problem(format!("`{name}` is required")));
        }
        if let Some(key) = &self.issuer_key
            && (key.len() != 40
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        {
            return Err(problem(
                "`issuer_key` must be 40 upper-case hex digits (a v4 fingerprint)".into(),
            ));
        }
        if let Some(chain) = &self.chain
            && (chain.seq == 0 || (chain.seq == 1) != chain.prev.is_none())
        {
            return Err(problem(
                "`chain.seq` starts at 1, and every record but the first names `chain.prev`".into(),
            ));
        }
        if let Some(member) = &self.details.member {
            let well_formed = (member.starts_with("u-") || member.starts_with("t-"))
                && member.len() == 18
                && member[2..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !well_formed {
                return Err(problem(
                    "`details.member` is `u-` or `t-` and 16 lower-case hex digits".into(),
                ));
            }
        }
        Ok(())
    }

    /// The canonical (RFC 8785) bytes; fails for a record that breaks the invariants.
    pub fn to_canonical(&self) -> Result<Vec<u8>, RecordError> {
        self.check()?;
        canonical_json(self)
    }

    /// Parses canonical bytes; anything else (other shape, other version, non-canonical
    /// spelling of the same content) is refused.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: Self =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Shape(e.to_string()))?;
        if record.to_canonical()? != bytes {
            return Err(RecordError::NotCanonical);
        }
        Ok(record)
    }

    /// The log entry for this record's canonical bytes.
    pub fn commitment(event: Event, canonical: &[u8]) -> Commitment {
        Commitment {
            event,
            record_sha256: Sha256Digest::of(canonical),
            version: COMMITMENT_VERSION,
        }
    }

    /// The record's position in its chain: version 1 records carry none.
    pub fn seq(&self) -> Option<u64> {
        self.chain.map(|c| c.seq)
    }
}

impl Commitment {
    /// The entry bytes: canonical JSON, ASCII only.
    pub fn to_entry(&self) -> Vec<u8> {
        // RFC 8785 of this fixed shape, written out: members in code-point order, and every
        // value ASCII without anything to escape (an event name, hex digits, a number).
        format!(
            "{{\"event\":\"{}\",\"record_sha256\":\"{}\",\"version\":{}}}",
            self.event, self.record_sha256, self.version
        )
        .into_bytes()
    }

    /// Parses entry bytes, refusing non-canonical spellings.
    pub fn from_entry(bytes: &[u8]) -> Result<Self, RecordError> {
        let c: Self =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Shape(e.to_string()))?;
        if c.version != COMMITMENT_VERSION {
            return Err(RecordError::Version(c.version));
        }
        if c.to_entry() != bytes {
            return Err(RecordError::NotCanonical);
        }
        Ok(c)
    }
}

/// What every version 2 record about one submitted message shares.
#[derive(Debug, Clone)]
pub struct Head {
    /// The issuing gateway (its first domain).
    pub issuer: String,
    /// The evidence key's fingerprint (upper-case hex).
    pub issuer_key: String,
    /// The sender.
    pub sender: Sender,
    /// The message.
    pub message: MessageRef,
    /// The sender's options.
    pub options: Option<RecordOptions>,
    /// When the message was submitted.
    pub submission_time: Timestamp,
}

/// What one record states about its recipient.
#[derive(Debug, Clone)]
pub struct Fact {
    /// The event.
    pub event: Event,
    /// Its reason.
    pub reason: ReasonCode,
    /// The recipient.
    pub recipient: EmailAddress,
    /// The recipient's identity assurance, where known.
    pub recipient_identity: Option<IdentityAssurance>,
    /// Event details.
    pub details: Details,
    /// When it happened.
    pub time: Timestamp,
}

impl Head {
    /// The version 2 record of `fact` at position `chain` of its recipient's chain.
    pub fn record(&self, fact: Fact, chain: ChainLink) -> EvidenceRecord {
        EvidenceRecord {
            version: FORMAT_VERSION,
            evidence_id: EvidenceId::random(),
            event: fact.event,
            reason: fact.reason,
            time: fact.time,
            issuer: self.issuer.clone(),
            sender: self.sender.clone(),
            recipient: fact.recipient,
            message: self.message.clone(),
            details: fact.details,
            policy: Some(EVIDENCE_POLICY.to_owned()),
            issuer_key: Some(self.issuer_key.clone()),
            time_source: Some(TIME_SOURCE.to_owned()),
            submission_time: Some(self.submission_time),
            options: self.options,
            recipient_identity: fact.recipient_identity,
            chain: Some(chain),
        }
    }
}

impl EvidenceRecord {
    /// The link of the record that follows this one, which is at `position` (from 1) of
    /// its chain.
    pub fn link_next(&self, position: u64) -> Result<ChainLink, RecordError> {
        Ok(ChainLink::after(
            self.seq().unwrap_or(position),
            &self.to_canonical()?,
        ))
    }

    /// The next record of `chain` (stored records of one message and recipient): the same
    /// message, sender, recipient and submission, a new event. A chain begun under version
    /// 1 continues in version 2, linked to its last record. First and last are by log
    /// position, the order of commits: event times come from the clocks of possibly several
    /// gateway processes, and a clock stepped back would otherwise pick an older head.
    pub fn successor(
        chain: &[StoredEvidence],
        issuer_key: &str,
        event: Event,
        reason: ReasonCode,
        details: Details,
        time: Timestamp,
    ) -> Option<Self> {
        let first = &chain.iter().min_by_key(|e| e.log_index)?.record;
        let last = chain.iter().max_by_key(|e| e.log_index)?;
        let position = chain.len() as u64;
        let head = Head {
            issuer: last.record.issuer.clone(),
            issuer_key: issuer_key.to_owned(),
            sender: last.record.sender.clone(),
            message: last.record.message.clone(),
            options: last.record.options,
            submission_time: last.record.submission_time.unwrap_or(first.time),
        };
        let fact = Fact {
            event,
            reason,
            recipient: last.record.recipient.clone(),
            recipient_identity: last.record.recipient_identity.clone(),
            details,
            time,
        };
        let link = ChainLink::after(last.record.seq().unwrap_or(position), &last.canonical);
        Some(head.record(fact, link))
    }
}

/// A record with its canonical bytes and detached signature, ready to be stored.
#[derive(Debug, Clone)]
pub struct SignedRecord {
    /// The record.
    pub record: EvidenceRecord,
    /// Its canonical (RFC 8785) bytes.
    pub canonical: Vec<u8>,
    /// OpenPGP detached signature over `canonical` (binary packet).
    pub signature: Vec<u8>,
}

impl SignedRecord {
    /// The log entry committing to this record.
    pub fn entry(&self) -> Vec<u8> {
        EvidenceRecord::commitment(self.record.event, &self.canonical).to_entry()
    }
}

/// A stored record with its signature and log position.
#[derive(Debug, Clone)]
pub struct StoredEvidence {
    /// The record, parsed from its stored canonical bytes.
    pub record: EvidenceRecord,
    /// The canonical bytes as stored.
    pub canonical: Vec<u8>,
    /// Detached signature (binary).
    pub signature: Vec<u8>,
    /// Index of its commitment in the log.
    pub log_index: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(event: Event, reason: ReasonCode) -> EvidenceRecord {
        EvidenceRecord {
            version: FORMAT_VERSION,
            evidence_id: EvidenceId([7; 16]),
            event,
            reason,
            time: Timestamp(1_795_000_000_123),
            issuer: "lemgo.example".into(),
            sender: Sender {
                address: EmailAddress::parse("anna@lemgo.example").unwrap(),
                identity: IdentityAssurance {
                    verified: true,
                    method: Some(IdentityMethod::Eid),
                },
                auth_level: AuthLevel::High,
            },
            recipient: EmailAddress::parse("bauamt@lemgo.example").unwrap(),
            message: MessageRef {
                gateway_id: "m-1".into(),
                message_id: Some("<1@lemgo.example>".into()),
                sha256: Sha256Digest::of(b"message"),
                size: 7,
                attachments: vec![Attachment {
                    name: "Bauantrag.pdf".into(),
                    size: 3,
                    sha256: Sha256Digest::of(b"pdf"),
                }],
                all_attachments: None,
            },
            details: Details::default(),
            policy: Some(EVIDENCE_POLICY.into()),
            issuer_key: Some("0123456789ABCDEF0123456789ABCDEF01234567".into()),
            time_source: Some(TIME_SOURCE.into()),
            submission_time: Some(Timestamp(1_795_000_000_000)),
            options: Some(RecordOptions {
                authoritative: true,
                personal: false,
                retrieval_confirmation: false,
            }),
            recipient_identity: None,
            chain: Some(ChainLink::first()),
        }
    }

    /// The same record as version 1 wrote it.
    pub(crate) fn sample_v1(event: Event, reason: ReasonCode) -> EvidenceRecord {
        EvidenceRecord {
            version: 1,
            policy: None,
            issuer_key: None,
            time_source: None,
            submission_time: None,
            options: None,
            recipient_identity: None,
            chain: None,
            ..sample(event, reason)
        }
    }

    #[test]
    fn version_1_records_still_parse_and_keep_their_bytes() {
        let v1 = sample_v1(Event::ContentHandover, ReasonCode::Accepted);
        let bytes = v1.to_canonical().unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("chain"));
        assert_eq!(EvidenceRecord::from_canonical(&bytes).unwrap(), v1);
        // A version 1 record cannot carry version 2 fields, nor the reverse.
        let mut mixed = v1.clone();
        mixed.chain = Some(ChainLink::first());
        assert!(matches!(
            mixed.to_canonical(),
            Err(RecordError::Fields { version: 1, .. })
        ));
        let mut bare = sample(Event::ContentHandover, ReasonCode::Accepted);
        bare.chain = None;
        assert!(matches!(
            bare.to_canonical(),
            Err(RecordError::Fields { version: 2, .. })
        ));
    }

    #[test]
    fn chain_links_name_the_previous_record() {
        let first = sample(Event::SubmissionAcceptance, ReasonCode::Accepted);
        let first_bytes = first.to_canonical().unwrap();
        let mut second = sample(Event::ContentConsignment, ReasonCode::Accepted);
        second.chain = Some(ChainLink::after(1, &first_bytes));
        let bytes = second.to_canonical().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let digest = hex::encode(Sha256::digest(&first_bytes));
        assert!(
            text.contains(&format!("\"chain\":{{\"prev\":\"{digest}\",\"seq\":2}}")),
            "{text}"
        );
        // seq 1 with a predecessor, or a later record without one, is refused.
        let mut orphan = second.clone();
        orphan.chain = Some(ChainLink { seq: 2, prev: None });
        assert!(orphan.to_canonical().is_err());
        let mut zero = second;
        zero.chain = Some(ChainLink { seq: 0, prev: None });
        assert!(zero.to_canonical().is_err());
    }

    #[test]
    fn a_successor_continues_the_last_committed_record_whatever_the_clocks_said() {
        let stored = |record: EvidenceRecord, log_index| StoredEvidence {
            canonical: record.to_canonical().unwrap(),
            record,
            signature: Vec::new(),
            log_index,
        };
        let accepted = sample(Event::SubmissionAcceptance, ReasonCode::Accepted);
        let mut relayed = sample(Event::RelayToNonERDS, ReasonCode::Accepted);
        relayed.chain = Some(accepted.link_next(1).unwrap());
        // Committed later, by a process whose clock was a minute behind.
        relayed.time = Timestamp(accepted.time.0 - 60_000);
        let head = stored(relayed, 9);
        // In event-time order, as a search returns them.
        let chain = [head.clone(), stored(accepted, 4)];
        let next = EvidenceRecord::successor(
            &chain,
            "KEY",
            Event::RelayToNonERDSFailure,
            ReasonCode::RefusedByRecipientSystem,
            Details::default(),
            Timestamp(head.record.time.0 + 1),
        )
        .unwrap();
        assert_eq!(next.chain, Some(ChainLink::after(2, &head.canonical)));
    }

    #[test]
    fn canonical_form_is_stable_sorted_and_round_trips() {
        let r = sample(Event::SubmissionAcceptance, ReasonCode::Accepted);
        let bytes = r.to_canonical().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(
                "{\"chain\":{\"seq\":1},\"details\":{},\"event\":\"SubmissionAcceptance\""
            ),
            "{text}"
        );
        assert!(
            text.contains("\"time\":\"2026-11-18T11:06:40.123Z\""),
            "{text}"
        );
        assert!(!text.contains("subject"));
        assert_eq!(EvidenceRecord::from_canonical(&bytes).unwrap(), r);
        assert_eq!(r.to_canonical().unwrap(), bytes);
    }

    #[test]
    fn non_canonical_or_inconsistent_input_is_refused() {
        let r = sample(Event::ContentConsignment, ReasonCode::Accepted);
        let bytes = r.to_canonical().unwrap();
        let pretty = serde_json::to_vec_pretty(&r).unwrap();
        assert!(matches!(
            EvidenceRecord::from_canonical(&pretty),
            Err(RecordError::NotCanonical)
        ));
        let upper = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"evidence_id\":\"07", "\"evidence_id\":\"0A");
        assert!(EvidenceRecord::from_canonical(upper.as_bytes()).is_err());
        let extra =
            String::from_utf8(bytes.clone())
                .unwrap()
                .replacen('{', "{\"subject\":\"x\",", 1);
        assert!(matches!(
            EvidenceRecord::from_canonical(extra.as_bytes()),
            Err(RecordError::Shape(_))
        ));
        let wrong = sample(Event::RelayFailure, ReasonCode::Accepted);
        assert!(matches!(
            wrong.to_canonical(),
            Err(RecordError::Reason { .. })
        ));
        let mut v3 = r.clone();
        v3.version = 3;
        assert!(matches!(v3.to_canonical(), Err(RecordError::Version(3))));
    }

    #[test]
    fn commitment_is_exactly_the_spec_shape() {
        let r = sample(Event::SubmissionAcceptance, ReasonCode::Accepted);
        let bytes = r.to_canonical().unwrap();
        let entry = EvidenceRecord::commitment(r.event, &bytes).to_entry();
        let expected = format!(
            "{{\"event\":\"SubmissionAcceptance\",\"record_sha256\":\"{}\",\"version\":1}}",
            hex::encode(Sha256::digest(&bytes))
        );
        assert_eq!(String::from_utf8(entry.clone()).unwrap(), expected);
        assert_eq!(Commitment::from_entry(&entry).unwrap().event, r.event);
        // The written-out form is what RFC 8785 gives, for every event.
        for event in Event::ALL {
            let c = EvidenceRecord::commitment(*event, &bytes);
            assert_eq!(c.to_entry(), serde_jcs::to_vec(&c).unwrap());
        }
    }

    #[test]
    fn long_attachment_lists_are_summarised() {
        let attachment = |i: usize| Attachment {
            name: format!("seite-{i}.pdf"),
            size: i as u64,
            sha256: Sha256Digest::of(&i.to_be_bytes()),
        };
        let few: Vec<Attachment> = (0..LISTED_ATTACHMENTS).map(attachment).collect();
        assert_eq!(AttachmentList::bounded(few.clone()).unwrap(), (few, None));
        let many: Vec<Attachment> = (0..200_000).map(attachment).collect();
        let (listed, summary) = AttachmentList::bounded(many.clone()).unwrap();
        assert_eq!(listed, many[..LISTED_ATTACHMENTS]);
        let summary = summary.unwrap();
        assert_eq!(summary.count, 200_000);
        assert_eq!(
            summary.sha256,
            Sha256Digest::of(&serde_jcs::to_vec(&many).unwrap())
        );
        let mut r = sample(Event::SubmissionAcceptance, ReasonCode::Accepted);
        r.message.attachments = listed;
        r.message.all_attachments = Some(summary);
        let bytes = r.to_canonical().unwrap();
        assert!(bytes.len() < 4096, "{} bytes", bytes.len());
        assert_eq!(EvidenceRecord::from_canonical(&bytes).unwrap(), r);
    }

    #[test]
    fn exactly_twelve_events_and_positive_ones_take_ra01() {
        assert_eq!(Event::ALL.len(), 12);
        for e in Event::ALL {
            let reason = if e.is_positive() {
                ReasonCode::Accepted
            } else {
                ReasonCode::Unreachable
            };
            assert!(sample(*e, reason).to_canonical().is_ok(), "{e}");
        }
    }

    /// The fast canonical form is byte for byte what serde_jcs (RFC 8785) writes: records
    /// with any text in their strings (control characters, quotes, backslashes, characters
    /// outside the BMP), and sizes and times up to 2^53.
    #[test]
    fn canonical_bytes_are_what_serde_jcs_writes() {
        use proptest::prelude::*;
        let text = "(\\PC|[\\x00-\\x1f\"\\\\/\\x7f\u{2028}\u{e000}\u{1f600}]){0,24}";
        let config = ProptestConfig::with_cases(512);
        proptest!(config, |(issuer in text, id in text, name in text, size in 0u64..=1 << 53, time in -(1i64 << 53)..=(1i64 << 53), reply in proptest::option::of(text))| {
            let mut r = sample(Event::RelayToNonERDS, ReasonCode::Accepted);
            r.issuer = issuer;
            r.message.gateway_id = id;
            r.message.attachments[0].name = name;
            r.message.size = size;
            r.time = Timestamp(time);
            r.details.reply = reply;
            prop_assert_eq!(canonical_json(&r).unwrap(), serde_jcs::to_vec(&r).unwrap());
        });
    }

    /// What the fast form does not write itself, serde_jcs does: integers a double cannot
    /// hold and floats. Object members are ordered by UTF-16 code units, which differ from
    /// code points above U+FFFF.
    #[test]
    fn canonical_bytes_outside_the_fast_path_are_still_jcs() {
        let big = serde_json::json!({ "n": (1u64 << 60) + 1, "m": -((1i64 << 55) + 3) });
        let float = serde_json::json!({ "x": 0.1, "y": 1e21 });
        let keys = serde_json::json!({ "\u{e000}": 1, "\u{1f600}": 2, "a": [true, null] });
        for value in [big, float, keys] {
            assert_eq!(
                canonical_json(&value).unwrap(),
                serde_jcs::to_vec(&value).unwrap(),
                "{value}"
            );
        }
    }
}
