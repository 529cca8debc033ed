//! The offline verifier of proof bundles (`bote verify`). It trusts nothing in the file
//! beyond what the caller anchors, and names the first check that fails as a typed
//! [`VerifyError`], so that callers (and tests) branch on what failed, not on wording.

use std::collections::HashMap;

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use tlog_tiles::{Hash, check_record, record_hash};

use super::trust::{TrustFile, TrustedGateway};
use super::{
    CHECKPOINT, EVIDENCE_CERT, FORMAT, FORMAT_DOC, InclusionProof, LOG_VKEY, MANIFEST,
    MANIFEST_SIG, Manifest, Member, README, RECORD, RECORD_PROOF, RECORD_SIG, TIMESTAMP, VERSION,
    encode_tar, mtime_secs, record_member,
};
use crate::crypto;
use crate::evidence::record::{Event, EvidenceRecord, Sha256Digest};
use crate::log::{LogError, SignedCheckpoint};
use crate::timestamp::{self, TimeStamp};
use crate::witness::service::checkpoint_text;
use crate::witness::{Cosignature, WitnessKey, cosignatures};

/// Longest inclusion proof a log of up to 2^64 entries can need.
const MAX_PROOF: usize = 64;

/// Most members an archive may hold: eight fixed ones and three per record leave room for
/// over 33,000 records, far more than the events of one (message, recipient) chain, while
/// bounding the work a crafted file of tiny members can cause.
const MAX_MEMBERS: usize = 100_000;

/// Why a bundle does not verify: the first failed check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The file is not a (valid) tar archive.
    #[error("not a valid tar archive: {0}")]
    Archive(String),
    /// A member is not a regular file.
    #[error("member `{0}` is not a regular file")]
    NotRegular(String),
    /// A member name occurs twice.
    #[error("member `{0}` appears twice")]
    Duplicate(String),
    /// A member the format does not know.
    #[error("unknown member `{0}`")]
    Unknown(String),
    /// More members than any bundle holds.
    #[error("the archive holds more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// A required member is absent.
    #[error("member `{0}` is missing")]
    Missing(String),
    /// A text member is not UTF-8.
    #[error("member `{0}` is not UTF-8 text")]
    NotText(String),
    /// The evidence certificate in the bundle does not parse.
    #[error("{EVIDENCE_CERT}: not an OpenPGP certificate: {0}")]
    Certificate(String),
    /// The bundle is signed by another evidence key than the anchored one.
    #[error("the bundle is signed by evidence key {found}, not by the expected key {expected}")]
    WrongKey {
        /// Fingerprint in the bundle.
        found: String,
        /// Fingerprint the caller anchored.
        expected: String,
    },
    /// A detached signature does not verify.
    #[error("{member}: {reason}")]
    Signature {
        /// The signature member.
        member: String,
        /// Why.
        reason: String,
    },
    /// The manifest signature is not in the canonical armour bote writes.
    #[error("{MANIFEST_SIG}: not in canonical armour")]
    ArmourNotCanonical,
    /// The manifest does not parse or has an unsupported format or version.
    #[error("{MANIFEST}: {0}")]
    Manifest(String),
    /// A member is not listed in the manifest.
    #[error("member `{0}` is not listed in the manifest")]
    Unlisted(String),
    /// A member's size or digest differs from the manifest's.
    #[error("member `{0}` does not match its SHA-256 in the manifest")]
    Digest(String),
    /// The archive bytes are not the canonical encoding of its members.
    #[error(
        "the archive is not in canonical form (first difference at byte {at}): tar headers, \
         padding or trailing data were changed"
    )]
    NotCanonical {
        /// Offset of the first differing byte.
        at: usize,
    },
    /// The log key is not the anchored one.
    #[error("{LOG_VKEY}: the bundle's log key is `{found}`, not the expected `{expected}`")]
    WrongLogKey {
        /// Key in the bundle.
        found: String,
        /// Key the caller anchored.
        expected: String,
    },
    /// The checkpoint does not parse or is not signed by the log key.
    #[error("{CHECKPOINT}: {0}")]
    Checkpoint(String),
    /// The checkpoint is of another log than the issuer's.
    #[error("{CHECKPOINT}: origin `{origin}` is not the log of issuer {issuer}")]
    Origin {
        /// Checkpoint origin.
        origin: String,
        /// Manifest issuer.
        issuer: String,
    },
    /// The checkpoint size differs from the manifest's.
    #[error("{CHECKPOINT}: size {checkpoint} differs from the manifest's {manifest}")]
    CheckpointSize {
        /// Checkpoint size.
        checkpoint: u64,
        /// Manifest size.
        manifest: u64,
    },
    /// No evidence record at all.
    #[error("the bundle holds no evidence record")]
    NoRecords,
    /// Records without all three members.
    #[error("the evidence records are incomplete: each needs .json, .json.asc and .proof.json")]
    IncompleteRecords,
    /// A record or proof member does not parse.
    #[error("{member}: {reason}")]
    Malformed {
        /// The member.
        member: String,
        /// Why.
        reason: String,
    },
    /// A record of a newer version than the manifest's: a version 1 manifest lists
    /// version 1 records only (it predates version 2 records).
    #[error("{member}: a version {version} record in a version 1 bundle")]
    RecordVersion {
        /// The record member.
        member: String,
        /// Its version.
        version: u32,
    },
    /// A record is about another message or recipient than the manifest names.
    #[error("{0}: is about another message or recipient than the bundle")]
    OtherMessage(String),
    /// A proof's log entry does not commit to its record.
    #[error("{proof}: the log entry does not commit to {record} (record missing from the log)")]
    EntryMismatch {
        /// The proof member.
        proof: String,
        /// The record member.
        record: String,
    },
    /// A proof is against another tree size than the checkpoint's.
    #[error("{proof}: proof is for tree size {size}, the checkpoint's is {checkpoint}")]
    ProofSize {
        /// The proof member.
        proof: String,
        /// Its tree size.
        size: u64,
        /// The checkpoint's.
        checkpoint: u64,
    },
    /// An inclusion proof longer than any tree can need.
    #[error("{0}: the inclusion proof is impossibly long")]
    ProofTooLong(String),
    /// A hash in a proof is not 32 bytes of base64.
    #[error("{0}: malformed hash in the proof")]
    ProofHash(String),
    /// The record's entry is not in the checkpoint's tree.
    #[error("{proof}: entry {index} is not included in the checkpoint's tree: {reason}")]
    NotIncluded {
        /// The proof member.
        proof: String,
        /// The claimed log index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The caller's trusted checkpoint does not parse or is not the bundle's.
    #[error("--checkpoint: {0}")]
    TrustedCheckpoint(String),
    /// Too few valid cosignatures by the witnesses the caller trusts, or a bad one.
    #[error("{CHECKPOINT}: {0}")]
    Cosignatures(String),
    /// The time-stamp is missing where required, or does not verify.
    #[error("{TIMESTAMP}: {0}")]
    TimeStamp(String),
    /// The manifest does not list exactly the members the format prescribes, in order.
    #[error("{MANIFEST}: {0}")]
    Members(String),
    /// The records do not form one complete chain (version 2): one is missing, added,
    /// reordered or from another issuer.
    #[error("{member}: the evidence chain is broken: {reason}")]
    Chain {
        /// The record where the chain breaks.
        member: String,
        /// How.
        reason: String,
    },
}

/// What the verifier is told to trust.
#[derive(Debug, Clone)]
pub enum Anchor {
    /// Nothing: use the certificate inside the bundle and say so.
    None,
    /// The evidence certificate must have this fingerprint (hex, any case, spaces allowed).
    Fingerprint(String),
    /// The evidence certificate must be this one.
    Cert(Box<Cert>),
    /// The evidence certificate must be one a trust file lists, for the bundle's issuer.
    Listed(TrustFile),
}

/// A successful verification.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Fingerprint of the evidence key that signed everything.
    pub fingerprint: String,
    /// Whether that key was anchored by the caller.
    pub anchored: bool,
    /// The verified records, in chain order.
    pub records: Vec<EvidenceRecord>,
    /// The checkpoint the proofs hold against.
    pub checkpoint: SignedCheckpoint,
    /// Valid cosignatures of that checkpoint by the trusted witnesses.
    pub cosignatures: Vec<Cosignature>,
    /// The checkpoint's time-stamp, if the bundle has one, and whether its TSA is anchored.
    pub timestamp: Option<(TimeStamp, bool)>,
}

/// The archive's members in archive order, indexed by name: a member is looked up in
/// constant time, so that checking each of many members stays linear in their number.
struct Members {
    list: Vec<(String, Vec<u8>)>,
    index: HashMap<String, usize>,
}

fn decode_tar(bytes: &[u8]) -> Result<Members, VerifyError> {
    use std::io::Read;
    let archive_err = |e: std::io::Error| VerifyError::Archive(e.to_string());
    let mut archive = tar::Archive::new(bytes);
    let mut out = Members {
        list: Vec::new(),
        index: HashMap::new(),
    };
    for entry in archive.entries().map_err(archive_err)? {
        if out.list.len() == MAX_MEMBERS {
            return Err(VerifyError::TooManyMembers);
        }
        let mut entry = entry.map_err(archive_err)?;
        let name = entry
            .path()
            .map_err(archive_err)?
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| VerifyError::Archive("a member name is not UTF-8".into()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(VerifyError::NotRegular(name));
        }
        if out.index.contains_key(&name) {
            return Err(VerifyError::Duplicate(name));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(archive_err)?;
        out.index.insert(name.clone(), out.list.len());
        out.list.push((name, data));
    }
    Ok(out)
}

fn member<'a>(members: &'a Members, name: &str) -> Result<&'a [u8], VerifyError> {
    members
        .index
        .get(name)
        .and_then(|&i| members.list.get(i))
        .map(|(_, d)| d.as_slice())
        .ok_or_else(|| VerifyError::Missing(name.to_owned()))
}

fn text<'a>(members: &'a Members, name: &str) -> Result<&'a str, VerifyError> {
    std::str::from_utf8(member(members, name)?).map_err(|_| VerifyError::NotText(name.to_owned()))
}

fn allowed_name(name: &str) -> bool {
    if [
        README,
        FORMAT_DOC,
        CHECKPOINT,
        TIMESTAMP,
        EVIDENCE_CERT,
        LOG_VKEY,
        MANIFEST,
        MANIFEST_SIG,
    ]
    .contains(&name)
    {
        return true;
    }
    record_number(name).is_some()
}

/// The number of an `evidence/NNN…` member, if the name is one: at least three digits,
/// zero-padded only to three, from 1.
fn record_number(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("evidence/")?;
    let digits = rest
        .strip_suffix(RECORD_PROOF)
        .or_else(|| rest.strip_suffix(RECORD_SIG))
        .or_else(|| rest.strip_suffix(RECORD))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    (n >= 1 && format!("{n:03}") == digits).then_some(n)
}

/// The members a manifest of `version` must list, in archive order, for `records`
/// records.
fn prescribed_members(version: u32, records: usize, timestamped: bool) -> Vec<String> {
    let mut names = vec![README.to_owned()];
    if version >= 2 {
        names.push(FORMAT_DOC.to_owned());
    }
    names.push(CHECKPOINT.to_owned());
    if timestamped && version >= 2 {
        names.push(TIMESTAMP.to_owned());
    }
    names.extend([EVIDENCE_CERT, LOG_VKEY].map(str::to_owned));
    for n in 1..=records {
        for suffix in [RECORD, RECORD_SIG, RECORD_PROOF] {
            names.push(record_member(n, suffix));
        }
    }
    names
}

fn check_member_list(manifest: &Manifest) -> Result<usize, VerifyError> {
    let listed: Vec<&str> = manifest.members.iter().map(|m| m.name.as_str()).collect();
    let records = listed
        .iter()
        .filter(|n| record_number(n).is_some_and(|i| **n == record_member(i, RECORD)))
        .count();
    if records == 0 {
        return Err(VerifyError::NoRecords);
    }
    let timestamped = listed.contains(&TIMESTAMP);
    let prescribed = prescribed_members(manifest.version, records, timestamped);
    if listed != prescribed {
        let at = listed
            .iter()
            .zip(&prescribed)
            .position(|(a, b)| a != b)
            .unwrap_or(listed.len().min(prescribed.len()));
        return Err(VerifyError::Members(format!(
            "member {} is `{}` where the format prescribes `{}` ({} records)",
            at + 1,
            listed.get(at).copied().unwrap_or("(none)"),
            prescribed.get(at).map_or("(none)", String::as_str),
            records
        )));
    }
    Ok(records)
}

/// Why a checkpoint does not parse, without the "checkpoint:" its error already names.
fn checkpoint_reason(e: LogError) -> String {
    match e {
        LogError::Checkpoint(why) => why,
        other => other.to_string(),
    }
}

fn normalise_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

fn unb64(s: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let v = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

/// A signed checkpoint the caller trusts (a witness's, a court's, today's public one), and,
/// when it is newer than the bundle's, the consistency proof from the bundle's tree to it
/// (as `/log/proof/consistency?old=BUNDLE&new=TRUSTED` serves it).
#[derive(Debug, Clone)]
pub struct Trusted<'a> {
    /// The signed note.
    pub checkpoint: &'a str,
    /// Base64 hashes of the RFC 6962 consistency proof, if the sizes differ.
    pub consistency: Option<Vec<String>>,
}

/// What the verifier is told to trust.
#[derive(Debug, Clone)]
pub struct Trust<'a> {
    /// The evidence key.
    pub anchor: Anchor,
    /// The log verifier key the caller trusts (otherwise the bundle's, vouched for by the
    /// evidence key's manifest signature).
    pub log_key: Option<String>,
    /// A checkpoint the caller trusts: the bundle's tree must be it, or a prefix of it by
    /// the consistency proof given.
    pub checkpoint: Option<Trusted<'a>>,
    /// Witnesses whose cosignatures count.
    pub witnesses: Vec<WitnessKey>,
    /// How many of them must have cosigned the bundle's checkpoint.
    pub quorum: usize,
    /// SHA-256 (hex) of the TSA certificates trusted; if any is given, the bundle must
    /// carry a time-stamp by one of them.
    pub tsa: Vec<String>,
}

impl Trust<'_> {
    /// Trust in `anchor` alone.
    pub fn key(anchor: Anchor) -> Self {
        Self {
            anchor,
            log_key: None,
            checkpoint: None,
            witnesses: Vec::new(),
            quorum: 0,
            tsa: Vec::new(),
        }
    }
}

/// How far a record's time may lie after the time-stamp of a checkpoint that contains it:
/// the gateway's clock and the TSA's differ a little; more is a false time.
pub const CLOCK_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// Verifies a bundle offline, in the order docs/proof-bundle.md gives; the first failed
/// check is the error.
pub fn verify(bytes: &[u8], trust: &Trust<'_>) -> Result<Verified, VerifyError> {
    // 1. Archive structure and member names.
    let members = decode_tar(bytes)?;
    if let Some((name, _)) = members.list.iter().find(|(n, _)| !allowed_name(n)) {
        return Err(VerifyError::Unknown(name.clone()));
    }

    // 2. The manifest, signed by the (anchored) evidence key.
    let (cert, fingerprint, anchored) = anchored_cert(&members, &trust.anchor)?;
    let manifest = signed_manifest(&members, &cert, &fingerprint)?;

    // 3. Exactly the prescribed members, each with its digest; nothing unlisted.
    let count = check_member_list(&manifest)?;
    check_listed(&members, &manifest)?;

    // 4. The archive is exactly the canonical encoding of these members.
    check_canonical(bytes, &members, &manifest)?;

    // 5. The checkpoint, signed by the log key the manifest vouches for (and the caller
    //    anchored, if they did), for this issuer's log.
    let vkey = bundled_log_key(&members, manifest.version)?;
    let listed = listed_gateway(&trust.anchor, &fingerprint, &manifest.issuer)?;
    let expected_log_key = trust
        .log_key
        .as_ref()
        .or(listed.and_then(|g| g.log_key.as_ref()));
    if let Some(expected) = expected_log_key
        && expected.trim() != vkey
    {
        return Err(VerifyError::WrongLogKey {
            found: vkey,
            expected: expected.trim().to_owned(),
        });
    }
    let checkpoint = SignedCheckpoint::parse(text(&members, CHECKPOINT)?, &vkey)
        .map_err(|e| VerifyError::Checkpoint(checkpoint_reason(e)))?;
    if checkpoint_text(&checkpoint.note).lines().count() != 3 {
        return Err(VerifyError::Checkpoint(
            "a bundle's checkpoint has exactly three lines (no extension lines)".into(),
        ));
    }
    if checkpoint.origin != format!("{}/log", manifest.issuer) {
        return Err(VerifyError::Origin {
            origin: checkpoint.origin,
            issuer: manifest.issuer,
        });
    }
    if checkpoint.size != manifest.checkpoint_size {
        return Err(VerifyError::CheckpointSize {
            checkpoint: checkpoint.size,
            manifest: manifest.checkpoint_size,
        });
    }

    // 6. Witnesses' cosignatures of the checkpoint, and its time-stamp.
    let cosigned = check_cosignatures(&checkpoint.note, trust)?;
    let stamped = check_timestamp(&members, &checkpoint.note, trust)?;

    // 7. Each record: canonical, signed, about this message and recipient, and included.
    let records = check_records(&members, &manifest, count, &cert, &checkpoint)?;

    // 8. Together, the records form one chain, none claiming a time after the time-stamp.
    check_chain(&records, &manifest, &fingerprint)?;
    if let Some((stamp, _)) = &stamped {
        check_times(&records, stamp)?;
    }

    // 9. Optionally, the bundle's tree must be (a prefix of) a checkpoint the caller trusts.
    if let Some(trusted) = &trust.checkpoint {
        check_trusted(trusted, &vkey, &checkpoint)?;
    }

    Ok(Verified {
        fingerprint,
        anchored,
        records: records.into_iter().map(|r| r.record).collect(),
        checkpoint,
        cosignatures: cosigned,
        timestamp: stamped,
    })
}

/// The trusted witnesses' cosignatures: each must verify, and at least the quorum present.
fn check_cosignatures(note: &str, trust: &Trust<'_>) -> Result<Vec<Cosignature>, VerifyError> {
    let found = cosignatures(note, &trust.witnesses).map_err(VerifyError::Cosignatures)?;
    if found.len() < trust.quorum {
        return Err(VerifyError::Cosignatures(format!(
            "{} of the {} required cosignatures by the trusted witnesses ({})",
            found.len(),
            trust.quorum,
            trust
                .witnesses
                .iter()
                .map(WitnessKey::name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(found)
}

/// The time-stamp over the checkpoint body, if present (required when TSAs are trusted):
/// verified, and anchored if the caller pinned its certificate.
fn check_timestamp(
    members: &Members,
    note: &str,
    trust: &Trust<'_>,
) -> Result<Option<(TimeStamp, bool)>, VerifyError> {
    let Ok(token) = member(members, TIMESTAMP) else {
        if trust.tsa.is_empty() {
            return Ok(None);
        }
        return Err(VerifyError::TimeStamp(
            "missing: the bundle carries no time-stamp, and one by a trusted TSA is required"
                .into(),
        ));
    };
    let text = checkpoint_text(note);
    let stamp = timestamp::verify(token, text.as_bytes(), &trust.tsa)
        .map_err(|e| VerifyError::TimeStamp(e.to_string()))?;
    Ok(Some((stamp, !trust.tsa.is_empty())))
}

/// No record claims a time after the time-stamp of the checkpoint that includes it.
fn check_times(records: &[Checked], stamp: &TimeStamp) -> Result<(), VerifyError> {
    let stamped_ms = i64::try_from(stamp.time)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    for (i, checked) in records.iter().enumerate() {
        if checked.record.time.0 > stamped_ms.saturating_add(CLOCK_TOLERANCE_MS) {
            return Err(VerifyError::TimeStamp(format!(
                "{} claims a time after the checkpoint that contains it was time-stamped",
                record_member(i + 1, RECORD)
            )));
        }
    }
    Ok(())
}

/// Parses JSON that must be in its canonical form (RFC 8785), as every JSON member is.
fn canonical_json<T: serde::de::DeserializeOwned + serde::Serialize>(
    bytes: &[u8],
) -> Result<T, String> {
    let value: T = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match serde_jcs::to_vec(&value) {
        Ok(canonical) if canonical == bytes => Ok(value),
        _ => Err("not in canonical JSON form (RFC 8785)".into()),
    }
}

/// `keys/log.vkey`: from version 2 exactly the key and one line feed.
fn bundled_log_key(members: &Members, version: u32) -> Result<String, VerifyError> {
    let text = text(members, LOG_VKEY)?;
    if version >= 2 {
        // Whitespace around the key is checked here, since the checkpoint parser trims the
        // key it is given: version 2 has exactly one spelling of the member.
        let line = text
            .strip_suffix('\n')
            .filter(|l| !l.contains(['\n', '\r']) && *l == l.trim());
        return line
            .map(str::to_owned)
            .ok_or_else(|| VerifyError::Malformed {
                member: LOG_VKEY.into(),
                reason: "must be the verifier key on one line ending in a line feed, without \
                         surrounding whitespace"
                    .into(),
            });
    }
    Ok(text.trim().to_owned())
}

fn check_trusted(
    trusted: &Trusted<'_>,
    vkey: &str,
    checkpoint: &SignedCheckpoint,
) -> Result<(), VerifyError> {
    let bad = |why: String| VerifyError::TrustedCheckpoint(why);
    let newer =
        SignedCheckpoint::parse(trusted.checkpoint, vkey).map_err(|e| bad(checkpoint_reason(e)))?;
    if newer.origin != checkpoint.origin {
        return Err(bad(format!(
            "the trusted checkpoint is of log `{}`, the bundle's of `{}`",
            newer.origin, checkpoint.origin
        )));
    }
    if newer.size == checkpoint.size {
        if newer.root != checkpoint.root {
            return Err(bad(format!(
                "the trusted checkpoint and the bundle's have the same size {} but different \
                 roots: the log forked",
                newer.size
            )));
        }
        return Ok(());
    }
    if newer.size < checkpoint.size {
        return Err(bad(format!(
            "the trusted checkpoint (size {}) is older than the bundle's (size {}): trust a \
             newer one",
            newer.size, checkpoint.size
        )));
    }
    let proof = trusted.consistency.as_ref().ok_or_else(|| {
        bad(format!(
            "the trusted checkpoint (size {}) is newer than the bundle's (size {}): give the \
             consistency proof between them (/log/proof/consistency?old={}&new={})",
            newer.size, checkpoint.size, checkpoint.size, newer.size
        ))
    })?;
    if proof.len() > MAX_PROOF {
        return Err(bad("the consistency proof is impossibly long".into()));
    }
    let proof: Vec<Hash> = proof
        .iter()
        .map(|h| unb64(h).map(Hash))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("malformed hash in the consistency proof".into()))?;
    tlog_tiles::check_tree(
        &proof,
        newer.size,
        newer.root,
        checkpoint.size,
        checkpoint.root,
    )
    .map_err(|e| {
        bad(format!(
            "the bundle's tree (size {}) is not a prefix of the trusted one (size {}): {e}",
            checkpoint.size, newer.size
        ))
    })
}

/// The evidence certificate to check signatures with, its fingerprint, and whether the
/// caller anchored it.
fn anchored_cert(members: &Members, anchor: &Anchor) -> Result<(Cert, String, bool), VerifyError> {
    let bundle_cert = Cert::from_bytes(member(members, EVIDENCE_CERT)?)
        .map_err(|e| VerifyError::Certificate(e.to_string()))?;
    let fingerprint = bundle_cert.fingerprint().to_hex();
    let wrong = |expected: String| VerifyError::WrongKey {
        found: fingerprint.clone(),
        expected,
    };
    match anchor {
        Anchor::None => Ok((bundle_cert, fingerprint, false)),
        Anchor::Fingerprint(fpr) => {
            if normalise_fingerprint(fpr) != fingerprint {
                return Err(wrong(normalise_fingerprint(fpr)));
            }
            Ok((bundle_cert, fingerprint, true))
        }
        Anchor::Cert(expected) => {
            if expected.fingerprint() != bundle_cert.fingerprint() {
                return Err(wrong(expected.fingerprint().to_hex()));
            }
            Ok((expected.as_ref().clone(), fingerprint, true))
        }
        Anchor::Listed(file) => {
            if !file.gateways.iter().any(|g| g.fingerprint == fingerprint) {
                return Err(wrong("one of those the trust file lists".into()));
            }
            Ok((bundle_cert, fingerprint, true))
        }
    }
}

/// With a trust file, the listed entry of the signing key must be for the bundle's issuer,
/// and the log key it pins (if any) is the one to expect.
fn listed_gateway<'a>(
    anchor: &'a Anchor,
    fingerprint: &str,
    issuer: &str,
) -> Result<Option<&'a TrustedGateway>, VerifyError> {
    let Anchor::Listed(file) = anchor else {
        return Ok(None);
    };
    file.gateways
        .iter()
        .find(|g| g.fingerprint == fingerprint && g.domain.eq_ignore_ascii_case(issuer))
        .map(Some)
        .ok_or_else(|| {
            VerifyError::Manifest(format!(
                "the trust file lists evidence key {fingerprint} for another gateway than the \
                 issuer {issuer}"
            ))
        })
}

/// The manifest, after its signature and armour are checked.
fn signed_manifest(
    members: &Members,
    cert: &Cert,
    fingerprint: &str,
) -> Result<Manifest, VerifyError> {
    let manifest_bytes = member(members, MANIFEST)?;
    let manifest_sig = member(members, MANIFEST_SIG)?;
    crypto::verify_detached(cert, manifest_bytes, manifest_sig).map_err(|e| {
        VerifyError::Signature {
            member: MANIFEST_SIG.into(),
            reason: e.to_string(),
        }
    })?;
    // The one member no digest covers: its armour must be exactly what bote writes, so that
    // not even an armour header or checksum byte can change unnoticed.
    if crypto::canonical_armored_signature(manifest_sig).as_deref() != Some(manifest_sig) {
        return Err(VerifyError::ArmourNotCanonical);
    }
    let manifest: Manifest = canonical_json(manifest_bytes).map_err(VerifyError::Manifest)?;
    if manifest.format != FORMAT || !(1..=VERSION).contains(&manifest.version) {
        return Err(VerifyError::Manifest(format!(
            "unsupported format {} version {} (this bote reads versions 1 to {VERSION})",
            manifest.format, manifest.version
        )));
    }
    if manifest.created.0 % 1000 != 0 {
        return Err(VerifyError::Manifest(
            "`created` must have whole seconds (tar headers carry seconds)".into(),
        ));
    }
    match (manifest.version, &manifest.issuer_key) {
        (1, None) => {}
        (1, Some(_)) => {
            return Err(VerifyError::Manifest(
                "`issuer_key` does not exist in version 1".into(),
            ));
        }
        (_, Some(key)) if key == fingerprint => {}
        (_, Some(key)) => {
            return Err(VerifyError::Manifest(format!(
                "`issuer_key` {key} is not the signing key {fingerprint}"
            )));
        }
        (_, None) => return Err(VerifyError::Manifest("`issuer_key` is required".into())),
    }
    Ok(manifest)
}

fn check_listed(members: &Members, manifest: &Manifest) -> Result<(), VerifyError> {
    let by_name: HashMap<&str, &Member> = manifest
        .members
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    for (name, data) in &members.list {
        if name == MANIFEST || name == MANIFEST_SIG {
            continue;
        }
        let Some(listed) = by_name.get(name.as_str()) else {
            return Err(VerifyError::Unlisted(name.clone()));
        };
        if listed.size != data.len() as u64 || listed.sha256 != Sha256Digest::of(data) {
            return Err(VerifyError::Digest(name.clone()));
        }
    }
    for listed in &manifest.members {
        member(members, &listed.name)?;
    }
    Ok(())
}

/// Headers, order, padding, no trailing data: the bytes must be what bote would write.
fn check_canonical(
    bytes: &[u8],
    members: &Members,
    manifest: &Manifest,
) -> Result<(), VerifyError> {
    let mut expected_order: Vec<&str> = Vec::new();
    if let Some(readme) = manifest.members.first() {
        expected_order.push(&readme.name);
    }
    expected_order.extend([MANIFEST, MANIFEST_SIG]);
    expected_order.extend(manifest.members.iter().skip(1).map(|m| m.name.as_str()));
    let ordered: Vec<(String, Vec<u8>)> = expected_order
        .iter()
        .map(|n| member(members, n).map(|d| ((*n).to_owned(), d.to_vec())))
        .collect::<Result<_, _>>()?;
    let canonical = encode_tar(&ordered, mtime_secs(manifest.created))
        .map_err(|e| VerifyError::Archive(e.to_string()))?;
    if canonical != bytes {
        let at = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        return Err(VerifyError::NotCanonical { at });
    }
    Ok(())
}

/// One verified record with its canonical bytes and log position.
struct Checked {
    record: EvidenceRecord,
    canonical: Vec<u8>,
    log_index: u64,
}

/// Each record is canonical, signed, about the manifest's message and recipient, and
/// included in the checkpoint.
fn check_records(
    members: &Members,
    manifest: &Manifest,
    count: usize,
    cert: &Cert,
    checkpoint: &SignedCheckpoint,
) -> Result<Vec<Checked>, VerifyError> {
    let malformed = |member: &str, e: &dyn std::fmt::Display| VerifyError::Malformed {
        member: member.to_owned(),
        reason: e.to_string(),
    };
    let mut records = Vec::with_capacity(count);
    for n in 1..=count {
        let name = record_member(n, RECORD);
        let canonical = member(members, &name)?;
        let record = EvidenceRecord::from_canonical(canonical).map_err(|e| malformed(&name, &e))?;
        // A version 1 manifest predates version 2 records: no version 1 writer made a bundle
        // holding one (docs/proof-bundle.md §5).
        if manifest.version == 1 && record.version > 1 {
            return Err(VerifyError::RecordVersion {
                member: name,
                version: record.version,
            });
        }
        let sig_name = record_member(n, RECORD_SIG);
        let sig = member(members, &sig_name)?;
        crypto::verify_detached(cert, canonical, sig).map_err(|e| VerifyError::Signature {
            member: sig_name.clone(),
            reason: e.to_string(),
        })?;
        if crypto::canonical_armored_signature(sig).as_deref() != Some(sig) {
            return Err(VerifyError::Signature {
                member: sig_name,
                reason: "not in canonical armour".into(),
            });
        }
        if record.message.gateway_id != manifest.gateway_message_id
            || record.recipient.key() != manifest.recipient.key()
        {
            return Err(VerifyError::OtherMessage(name));
        }
        let proof_name = record_member(n, RECORD_PROOF);
        let proof: InclusionProof = canonical_json(member(members, &proof_name)?)
            .map_err(|e| malformed(&proof_name, &e))?;
        let entry = EvidenceRecord::commitment(record.event, canonical).to_entry();
        check_inclusion(&proof_name, &name, &proof, &entry, checkpoint)?;
        records.push(Checked {
            record,
            canonical: canonical.to_vec(),
            log_index: proof.log_index,
        });
    }
    Ok(records)
}

/// The records form one chain, in log order, by one issuer. Version 2 records also link:
/// record n is at position n and names the digest of record n - 1, so that none can be
/// dropped, added or reordered without breaking a signature; they name the signing key
/// and share the submission's time, options, message and sender.
fn check_chain(
    records: &[Checked],
    manifest: &Manifest,
    fingerprint: &str,
) -> Result<(), VerifyError> {
    let mut previous: Option<&Checked> = None;
    for (i, checked) in records.iter().enumerate() {
        let n = i + 1;
        let broken = |reason: String| VerifyError::Chain {
            member: record_member(n, RECORD),
            reason,
        };
        let record = &checked.record;
        if record.issuer != manifest.issuer {
            return Err(broken(format!(
                "issued by `{}`, the bundle by `{}`",
                record.issuer, manifest.issuer
            )));
        }
        if let Some(prev) = previous
            && checked.log_index <= prev.log_index
        {
            return Err(broken(format!(
                "log entry {} does not come after the previous record's {}",
                checked.log_index, prev.log_index
            )));
        }
        match (record.version, previous.map(|p| p.record.version)) {
            (1, Some(2)) => {
                return Err(broken("a version 1 record after a version 2 record".into()));
            }
            (1, _) => {}
            _ => check_link(record, previous, n, fingerprint).map_err(broken)?,
        }
        previous = Some(checked);
    }
    Ok(())
}

/// The version 2 rules for record `n`, given the record before it.
fn check_link(
    record: &EvidenceRecord,
    previous: Option<&Checked>,
    n: usize,
    fingerprint: &str,
) -> Result<(), String> {
    if record.issuer_key.as_deref() != Some(fingerprint) {
        return Err(format!(
            "names issuer key {}, but is signed by {fingerprint}",
            record.issuer_key.as_deref().unwrap_or("(none)")
        ));
    }
    let link = record.chain.ok_or("no chain link")?;
    if link.seq != n as u64 {
        return Err(format!(
            "it is record {} of its chain, but number {n} in the bundle: a record is missing \
             or was added",
            link.seq
        ));
    }
    let starts = matches!(
        record.event,
        Event::SubmissionAcceptance | Event::SubmissionRejection | Event::ReceivedFromNonERDS
    );
    if starts != (n == 1) {
        return Err(format!("{} cannot be record {n} of a chain", record.event));
    }
    let Some(prev) = previous else {
        return Ok(());
    };
    if link.prev != Some(Sha256Digest::of(&prev.canonical)) {
        return Err("does not name the digest of the record before it".into());
    }
    if prev.record.version >= 2
        && (prev.record.submission_time != record.submission_time
            || prev.record.options != record.options)
    {
        return Err(
            "names another submission time or other options than the record before it".into(),
        );
    }
    // One message's chain tells of one message from one sender: a record that names
    // another digest or sender than its predecessor is not part of this story, however
    // well it links.
    if prev.record.version >= 2
        && (prev.record.message != record.message || prev.record.sender != record.sender)
    {
        return Err("names another message or sender than the record before it".into());
    }
    Ok(())
}

fn check_inclusion(
    proof_name: &str,
    record_name: &str,
    proof: &InclusionProof,
    entry: &[u8],
    checkpoint: &SignedCheckpoint,
) -> Result<(), VerifyError> {
    if proof.entry.as_bytes() != entry {
        return Err(VerifyError::EntryMismatch {
            proof: proof_name.to_owned(),
            record: record_name.to_owned(),
        });
    }
    if proof.tree_size != checkpoint.size {
        return Err(VerifyError::ProofSize {
            proof: proof_name.to_owned(),
            size: proof.tree_size,
            checkpoint: checkpoint.size,
        });
    }
    if proof.inclusion.len() > MAX_PROOF {
        return Err(VerifyError::ProofTooLong(proof_name.to_owned()));
    }
    let path: Vec<Hash> = proof
        .inclusion
        .iter()
        .map(|h| unb64(h).map(Hash))
        .collect::<Option<_>>()
        .ok_or_else(|| VerifyError::ProofHash(proof_name.to_owned()))?;
    check_record(
        &path,
        checkpoint.size,
        checkpoint.root,
        proof.log_index,
        record_hash(entry),
    )
    .map_err(|e| VerifyError::NotIncluded {
        proof: proof_name.to_owned(),
        index: proof.log_index,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive of `n` empty members with distinct allowed names.
    fn archive_of(n: usize) -> Vec<u8> {
        let members: Vec<(String, Vec<u8>)> = (1..=n)
            .map(|i| (record_member(i, RECORD), Vec::new()))
            .collect();
        encode_tar(&members, 0).unwrap()
    }

    #[test]
    fn an_archive_of_more_members_than_any_bundle_is_refused() {
        let trust = Trust::key(Anchor::None);
        assert_eq!(
            verify(&archive_of(MAX_MEMBERS + 1), &trust).unwrap_err(),
            VerifyError::TooManyMembers
        );
        // At the bound the archive is read, and refused for what it lacks.
        assert_eq!(
            verify(&archive_of(MAX_MEMBERS), &trust).unwrap_err(),
            VerifyError::Missing(EVIDENCE_CERT.into())
        );
    }
}
