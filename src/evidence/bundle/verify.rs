//! The offline verifier of proof bundles (`bote verify`). It trusts nothing in the file
//! beyond what the caller anchors, and names the first check that fails as a typed
//! [`VerifyError`], so that callers (and tests) branch on what failed, not on wording.

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use tlog_tiles::{Hash, check_record, record_hash};

use super::{
    CHECKPOINT, EVIDENCE_CERT, FORMAT, InclusionProof, LOG_VKEY, MANIFEST, MANIFEST_SIG, Manifest,
    README, VERSION, encode_tar, mtime_secs,
};
use crate::crypto;
use crate::evidence::record::{EvidenceRecord, Sha256Digest};
use crate::log::{LogError, SignedCheckpoint};

/// Longest inclusion proof a log of up to 2^64 entries can need.
const MAX_PROOF: usize = 64;

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
}

type Members = Vec<(String, Vec<u8>)>;

fn decode_tar(bytes: &[u8]) -> Result<Members, VerifyError> {
    use std::io::Read;
    let archive_err = |e: std::io::Error| VerifyError::Archive(e.to_string());
    let mut archive = tar::Archive::new(bytes);
    let mut out: Members = Vec::new();
    for entry in archive.entries().map_err(archive_err)? {
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
        if out.iter().any(|(n, _)| *n == name) {
            return Err(VerifyError::Duplicate(name));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(archive_err)?;
        out.push((name, data));
    }
    Ok(out)
}

fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> Result<&'a [u8], VerifyError> {
    members
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_slice())
        .ok_or_else(|| VerifyError::Missing(name.to_owned()))
}

fn text<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> Result<&'a str, VerifyError> {
    std::str::from_utf8(member(members, name)?).map_err(|_| VerifyError::NotText(name.to_owned()))
}

fn allowed_name(name: &str) -> bool {
    if [
        README,
        CHECKPOINT,
        EVIDENCE_CERT,
        LOG_VKEY,
        MANIFEST,
        MANIFEST_SIG,
    ]
    .contains(&name)
    {
        return true;
    }
    let Some(rest) = name.strip_prefix("evidence/") else {
        return false;
    };
    let digits = rest
        .strip_suffix(".proof.json")
        .or_else(|| rest.strip_suffix(".json.asc"))
        .or_else(|| rest.strip_suffix(".json"));
    digits.is_some_and(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()) && d != "000")
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

/// Verifies a bundle offline. `log_key`, if given, is the log verifier key the caller
/// trusts (otherwise the bundle's, vouched for by the evidence key's manifest signature);
/// `trusted`, if given, is a checkpoint the caller trusts: the bundle's tree must be it, or
/// a prefix of it by the consistency proof given.
pub fn verify(
    bytes: &[u8],
    anchor: &Anchor,
    log_key: Option<&str>,
    trusted: Option<&Trusted<'_>>,
) -> Result<Verified, VerifyError> {
    // 1. Archive structure and member names.
    let members = decode_tar(bytes)?;
    if let Some((name, _)) = members.iter().find(|(n, _)| !allowed_name(n)) {
        return Err(VerifyError::Unknown(name.clone()));
    }

    // 2. The manifest, signed by the (anchored) evidence key.
    let (cert, fingerprint, anchored) = anchored_cert(&members, anchor)?;
    let manifest = signed_manifest(&members, &cert)?;

    // 3. Every member listed, with its digest; nothing unlisted.
    check_listed(&members, &manifest)?;

    // 4. The archive is exactly the canonical encoding of these members.
    check_canonical(bytes, &members, &manifest)?;

    // 5. The checkpoint, signed by the log key the manifest vouches for (and the caller
    //    anchored, if they did), for this issuer's log.
    let vkey = text(&members, LOG_VKEY)?.trim().to_owned();
    if let Some(expected) = log_key
        && expected.trim() != vkey
    {
        return Err(VerifyError::WrongLogKey {
            found: vkey,
            expected: expected.trim().to_owned(),
        });
    }
    let checkpoint = SignedCheckpoint::parse(text(&members, CHECKPOINT)?, &vkey)
        .map_err(|e| VerifyError::Checkpoint(checkpoint_reason(e)))?;
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

    // 6. Each record: canonical, signed, about this message and recipient, and included.
    let records = check_records(&members, &manifest, &cert, &checkpoint)?;

    // 7. Optionally, the bundle's tree must be (a prefix of) a checkpoint the caller trusts.
    if let Some(trusted) = trusted {
        check_trusted(trusted, &vkey, &checkpoint)?;
    }

    Ok(Verified {
        fingerprint,
        anchored,
        records,
        checkpoint,
    })
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
    }
}

/// The manifest, after its signature and armour are checked.
fn signed_manifest(members: &Members, cert: &Cert) -> Result<Manifest, VerifyError> {
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
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| VerifyError::Manifest(e.to_string()))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(VerifyError::Manifest(format!(
            "unsupported format {} version {}",
            manifest.format, manifest.version
        )));
    }
    Ok(manifest)
}

fn check_listed(members: &Members, manifest: &Manifest) -> Result<(), VerifyError> {
    for (name, data) in members {
        if name == MANIFEST || name == MANIFEST_SIG {
            continue;
        }
        let Some(listed) = manifest.members.iter().find(|m| &m.name == name) else {
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
    let ordered: Members = expected_order
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

/// The evidence members are exactly 001..=count, each with all three files; each record
/// is signed, about the manifest's message and recipient, and included in the checkpoint.
fn check_records(
    members: &Members,
    manifest: &Manifest,
    cert: &Cert,
    checkpoint: &SignedCheckpoint,
) -> Result<Vec<EvidenceRecord>, VerifyError> {
    let evidence_members = members
        .iter()
        .filter(|(n, _)| n.starts_with("evidence/"))
        .count();
    let count = evidence_members / 3;
    if count == 0 {
        return Err(VerifyError::NoRecords);
    }
    if evidence_members % 3 != 0 {
        return Err(VerifyError::IncompleteRecords);
    }
    for n in 1..=count {
        for suffix in [".json", ".json.asc", ".proof.json"] {
            member(members, &format!("evidence/{n:03}{suffix}"))?;
        }
    }
    let malformed = |member: &str, e: &dyn std::fmt::Display| VerifyError::Malformed {
        member: member.to_owned(),
        reason: e.to_string(),
    };
    let mut records = Vec::with_capacity(count);
    for n in 1..=count {
        let name = format!("evidence/{n:03}.json");
        let canonical = member(members, &name)?;
        let record = EvidenceRecord::from_canonical(canonical).map_err(|e| malformed(&name, &e))?;
        let sig_name = format!("{name}.asc");
        crypto::verify_detached(cert, canonical, member(members, &sig_name)?).map_err(|e| {
            VerifyError::Signature {
                member: sig_name.clone(),
                reason: e.to_string(),
            }
        })?;
        if record.message.gateway_id != manifest.gateway_message_id
            || record.recipient.key() != manifest.recipient.key()
        {
            return Err(VerifyError::OtherMessage(name));
        }
        let proof_name = format!("evidence/{n:03}.proof.json");
        let proof: InclusionProof = serde_json::from_slice(member(members, &proof_name)?)
            .map_err(|e| malformed(&proof_name, &e))?;
        let entry = EvidenceRecord::commitment(record.event, canonical).to_entry();
        check_inclusion(&proof_name, &name, &proof, &entry, checkpoint)?;
        records.push(record);
    }
    Ok(records)
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
