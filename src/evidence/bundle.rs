//! Proof bundles (spec §4, format in docs/proof-bundle.md): one uncompressed tar per
//! (message, recipient) holding the evidence chain, signatures, log entries, inclusion
//! proofs, the signed checkpoint, the keys and a README, under a signed manifest.
//!
//! [`verify`] trusts nothing in the file beyond what the caller anchors: it names the first
//! thing that fails. The tar encoding itself is canonical (fixed header fields, mtime from
//! the signed manifest, no padding beyond the end-of-archive blocks), so a change to any
//! byte of the file, headers and padding included, is detected.

use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use tlog_tiles::{Hash, check_record, record_hash};

use openpgp::Cert;
use openpgp::parse::Parse;

use super::query::{self, QueryError};
use super::record::{EvidenceRecord, Sha256Digest, Timestamp};
use crate::address::EmailAddress;
use crate::clock::{now_ms, rfc3339_ms};
use crate::crypto;
use crate::keys::KeyRing;
use crate::log::{Log, LogError, SignedCheckpoint};
use crate::store::evidence::StoredEvidence;

/// The `format` value of a bundle manifest.
pub const FORMAT: &str = "bote-proof-bundle";
/// The manifest version this code writes and reads.
pub const VERSION: u32 = 1;

const README: &str = "README.txt";
const MANIFEST: &str = "manifest.json";
const MANIFEST_SIG: &str = "manifest.json.asc";
const CHECKPOINT: &str = "checkpoint";
const EVIDENCE_CERT: &str = "keys/evidence.cert.asc";
const LOG_VKEY: &str = "keys/log.vkey";

/// The signed table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// When the bundle was made.
    pub created: Timestamp,
    /// The gateway's domain.
    pub issuer: String,
    /// The message.
    pub gateway_message_id: String,
    /// The recipient whose chain this is.
    pub recipient: EmailAddress,
    /// Size of the tree the proofs are against.
    pub checkpoint_size: u64,
    /// Every other member, in archive order.
    pub members: Vec<Member>,
}

/// One member of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Path inside the archive.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256Digest,
}

/// The inclusion proof of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The log entry (the record's commitment), as text.
    pub entry: String,
    /// Its index in the log.
    pub log_index: u64,
    /// The tree size the proof is against (the checkpoint's).
    pub tree_size: u64,
    /// The RFC 6962 audit path, base64 hashes, leaf to root.
    pub inclusion: Vec<String>,
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Query.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record is newer than the checkpoint asked for.
    #[error(
        "evidence {index} is not covered by the checkpoint of size {size}: export at a newer checkpoint"
    )]
    NotCovered {
        /// Log index of the record.
        index: u64,
        /// Checkpoint size.
        size: u64,
    },
    /// Signing or encoding.
    #[error("cannot build bundle: {0}")]
    Build(String),
}

/// Why a bundle does not verify: the first failed check, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerifyError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError(msg.into()))
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

/// Builds the bundle of one (message, recipient) chain against `at` (default: the latest
/// checkpoint).
pub async fn export(
    conn: &mut sqlx::AnyConnection,
    log: &Log,
    keys: &KeyRing,
    message: &str,
    recipient: Option<&EmailAddress>,
    at: Option<SignedCheckpoint>,
) -> Result<Vec<u8>, ExportError> {
    let chain = query::chain(conn, message, recipient).await?;
    let checkpoint = match at {
        Some(cp) => cp,
        None => log
            .latest_checkpoint(conn)
            .await?
            .ok_or_else(|| ExportError::Build("the log has no checkpoint yet".into()))?,
    };
    let mut proofs = Vec::with_capacity(chain.len());
    for e in &chain {
        if e.log_index >= checkpoint.size {
            return Err(ExportError::NotCovered {
                index: e.log_index,
                size: checkpoint.size,
            });
        }
        proofs.push(
            log.inclusion_proof(conn, e.log_index, checkpoint.size)
                .await?,
        );
    }
    let keys = keys.clone();
    tokio::task::spawn_blocking(move || build(&chain, &proofs, &checkpoint, &keys, now_ms()))
        .await
        .map_err(|e| ExportError::Build(e.to_string()))?
}

/// Assembles and signs a bundle (pure apart from the signature).
pub fn build(
    chain: &[StoredEvidence],
    proofs: &[Vec<Hash>],
    checkpoint: &SignedCheckpoint,
    keys: &KeyRing,
    created_ms: i64,
) -> Result<Vec<u8>, ExportError> {
    let first = chain
        .first()
        .ok_or_else(|| ExportError::Build("empty evidence chain".into()))?;
    // Whole seconds: tar headers carry seconds, and the manifest must state the same time.
    let created = Timestamp(created_ms - created_ms.rem_euclid(1000));
    let mut members: Vec<(String, Vec<u8>)> = vec![
        (README.into(), readme(chain, checkpoint, keys).into_bytes()),
        (CHECKPOINT.into(), checkpoint.note.clone().into_bytes()),
        (
            EVIDENCE_CERT.into(),
            keys.evidence.armored_cert().as_bytes().to_vec(),
        ),
        (
            LOG_VKEY.into(),
            format!("{}\n", keys.log.verifier_key()).into_bytes(),
        ),
    ];
    for (i, (e, proof)) in chain.iter().zip(proofs).enumerate() {
        let n = i + 1;
        let inclusion = InclusionProof {
            entry: String::from_utf8_lossy(
                &EvidenceRecord::commitment(e.record.event, &e.canonical).to_entry(),
            )
            .into_owned(),
            log_index: e.log_index,
            tree_size: checkpoint.size,
            inclusion: proof.iter().map(|h| b64(&h.0)).collect(),
        };
        let proof_json =
            serde_jcs::to_vec(&inclusion).map_err(|e| ExportError::Build(e.to_string()))?;
        members.push((format!("evidence/{n:03}.json"), e.canonical.clone()));
        members.push((
            format!("evidence/{n:03}.json.asc"),
            crypto::armor_signature(&e.signature),
        ));
        members.push((format!("evidence/{n:03}.proof.json"), proof_json));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        created,
        issuer: first.record.issuer.clone(),
        gateway_message_id: first.record.message.gateway_id.clone(),
        recipient: first.record.recipient.clone(),
        checkpoint_size: checkpoint.size,
        members: members
            .iter()
            .map(|(name, data)| Member {
                name: name.clone(),
                size: data.len() as u64,
                sha256: Sha256Digest::of(data),
            })
            .collect(),
    };
    let manifest_bytes =
        serde_jcs::to_vec(&manifest).map_err(|e| ExportError::Build(e.to_string()))?;
    let signature = keys
        .evidence
        .sign(&manifest_bytes)
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let mut ordered = vec![members.remove(0)];
    ordered.push((MANIFEST.into(), manifest_bytes));
    ordered.push((MANIFEST_SIG.into(), crypto::armor_signature(&signature)));
    ordered.extend(members);
    encode_tar(&ordered, mtime_secs(created)).map_err(|e| ExportError::Build(e.to_string()))
}

fn mtime_secs(t: Timestamp) -> u64 {
    u64::try_from(t.0.div_euclid(1000)).unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let v = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

/// The canonical tar encoding: ustar headers with mode 0644, uid/gid 0, no owner names,
/// the given mtime, then the two zero blocks of the end-of-archive marker and nothing else.
pub fn encode_tar(members: &[(String, Vec<u8>)], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, data.as_slice())?;
    }
    builder.into_inner()
}

fn decode_tar(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, VerifyError> {
    use std::io::Read;
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| VerifyError(format!("not a tar archive: {e}")))?;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| VerifyError(format!("not a valid tar archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| VerifyError(format!("bad member name: {e}")))?
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| VerifyError("member name is not UTF-8".into()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return fail(format!("member `{name}` is not a regular file"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return fail(format!("member `{name}` appears twice"));
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| VerifyError(format!("member `{name}`: {e}")))?;
        out.push((name, data));
    }
    Ok(out)
}

fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> Result<&'a [u8], VerifyError> {
    members
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_slice())
        .ok_or_else(|| VerifyError(format!("member `{name}` is missing")))
}

fn text<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> Result<&'a str, VerifyError> {
    std::str::from_utf8(member(members, name)?)
        .map_err(|_| VerifyError(format!("member `{name}` is not UTF-8 text")))
}

fn allowed_name(name: &str) -> bool {
    if [README, CHECKPOINT, EVIDENCE_CERT, LOG_VKEY].contains(&name) {
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

fn normalise_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Longest inclusion proof a log of up to 2^64 entries can need.
const MAX_PROOF: usize = 64;

/// Verifies a bundle offline. `log_key`, if given, is the log verifier key the caller
/// trusts (otherwise the bundle's, vouched for by the evidence key's manifest signature);
/// `trusted_checkpoint`, if given, is a signed checkpoint the caller trusts, and the
/// bundle's proofs must be against exactly that tree.
pub fn verify(
    bytes: &[u8],
    anchor: &Anchor,
    log_key: Option<&str>,
    trusted_checkpoint: Option<&str>,
) -> Result<Verified, VerifyError> {
    // 1. Archive structure and member names.
    let members = decode_tar(bytes)?;
    for (name, _) in &members {
        if name != MANIFEST && name != MANIFEST_SIG && !allowed_name(name) {
            return fail(format!("unknown member `{name}`"));
        }
    }

    // 2. The manifest, signed by the (anchored) evidence key.
    let bundle_cert = Cert::from_bytes(member(&members, EVIDENCE_CERT)?)
        .map_err(|e| VerifyError(format!("{EVIDENCE_CERT}: not an OpenPGP certificate: {e}")))?;
    let fingerprint = bundle_cert.fingerprint().to_hex();
    let (cert, anchored) = match anchor {
        Anchor::None => (bundle_cert, false),
        Anchor::Fingerprint(fpr) => {
            if normalise_fingerprint(fpr) != fingerprint {
                return fail(format!(
                    "the bundle is signed by evidence key {fingerprint}, not by the expected key {}",
                    normalise_fingerprint(fpr)
                ));
            }
            (bundle_cert, true)
        }
        Anchor::Cert(expected) => {
            if expected.fingerprint() != bundle_cert.fingerprint() {
                return fail(format!(
                    "the bundle is signed by evidence key {fingerprint}, not by the expected key {}",
                    expected.fingerprint().to_hex()
                ));
            }
            (expected.as_ref().clone(), true)
        }
    };
    let manifest_bytes = member(&members, MANIFEST)?;
    let manifest_sig = member(&members, MANIFEST_SIG)?;
    crypto::verify_detached(&cert, manifest_bytes, manifest_sig)
        .map_err(|e| VerifyError(format!("{MANIFEST_SIG}: {e}")))?;
    // The one member no digest covers: its armour must be exactly what bote writes, so that
    // not even an armour header or checksum byte can change unnoticed.
    if crypto::canonical_armored_signature(manifest_sig).as_deref() != Some(manifest_sig) {
        return fail(format!("{MANIFEST_SIG}: not in canonical armour"));
    }
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| VerifyError(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return fail(format!(
            "{MANIFEST}: unsupported format {} version {}",
            manifest.format, manifest.version
        ));
    }

    // 3. Every member listed, with its digest; nothing unlisted.
    for (name, data) in &members {
        if name == MANIFEST || name == MANIFEST_SIG {
            continue;
        }
        let Some(listed) = manifest.members.iter().find(|m| &m.name == name) else {
            return fail(format!("member `{name}` is not listed in the manifest"));
        };
        if listed.size != data.len() as u64 || listed.sha256 != Sha256Digest::of(data) {
            return fail(format!(
                "member `{name}` does not match its SHA-256 in the manifest"
            ));
        }
    }
    for listed in &manifest.members {
        member(&members, &listed.name)?;
    }

    // 4. The archive is exactly the canonical encoding of these members (headers, order,
    //    padding, no trailing data).
    let mut expected_order: Vec<&str> = Vec::new();
    if let Some(readme) = manifest.members.first() {
        expected_order.push(&readme.name);
    }
    expected_order.extend([MANIFEST, MANIFEST_SIG]);
    expected_order.extend(manifest.members.iter().skip(1).map(|m| m.name.as_str()));
    let ordered: Vec<(String, Vec<u8>)> = expected_order
        .iter()
        .map(|n| member(&members, n).map(|d| ((*n).to_owned(), d.to_vec())))
        .collect::<Result<_, _>>()?;
    let canonical = encode_tar(&ordered, mtime_secs(manifest.created))
        .map_err(|e| VerifyError(format!("cannot re-encode archive: {e}")))?;
    if canonical != bytes {
        let at = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        return fail(format!(
            "the archive is not in canonical form (first difference at byte {at}): tar headers, \
             padding or trailing data were changed"
        ));
    }

    // 5. The checkpoint, signed by the log key the manifest vouches for (and the caller
    //    anchored, if they did), for this issuer's log.
    let vkey = text(&members, LOG_VKEY)?.trim().to_owned();
    if let Some(expected) = log_key
        && expected.trim() != vkey
    {
        return fail(format!(
            "{LOG_VKEY}: the bundle's log key is `{vkey}`, not the expected `{}`",
            expected.trim()
        ));
    }
    let checkpoint = SignedCheckpoint::parse(text(&members, CHECKPOINT)?, &vkey)
        .map_err(|e| VerifyError(e.to_string()))?;
    if checkpoint.origin != format!("{}/log", manifest.issuer) {
        return fail(format!(
            "{CHECKPOINT}: origin `{}` is not the log of issuer {}",
            checkpoint.origin, manifest.issuer
        ));
    }
    if checkpoint.size != manifest.checkpoint_size {
        return fail(format!(
            "{CHECKPOINT}: size {} differs from the manifest's {}",
            checkpoint.size, manifest.checkpoint_size
        ));
    }

    // 6. Each record: canonical, signed, about this message and recipient, and included.
    //    The evidence members are exactly 001..=count, each with all three files.
    let evidence_members = members
        .iter()
        .filter(|(n, _)| n.starts_with("evidence/"))
        .count();
    let count = evidence_members / 3;
    if count == 0 {
        return fail("the bundle holds no evidence record");
    }
    if evidence_members % 3 != 0 {
        return fail(
            "the evidence records are incomplete: each needs .json, .json.asc and .proof.json",
        );
    }
    for n in 1..=count {
        for suffix in [".json", ".json.asc", ".proof.json"] {
            member(&members, &format!("evidence/{n:03}{suffix}"))?;
        }
    }
    let mut records = Vec::with_capacity(count);
    for n in 1..=count {
        let name = format!("evidence/{n:03}.json");
        let canonical = member(&members, &name)?;
        let record = EvidenceRecord::from_canonical(canonical)
            .map_err(|e| VerifyError(format!("{name}: {e}")))?;
        crypto::verify_detached(&cert, canonical, member(&members, &format!("{name}.asc"))?)
            .map_err(|e| VerifyError(format!("{name}.asc: {e}")))?;
        if record.message.gateway_id != manifest.gateway_message_id
            || record.recipient.key() != manifest.recipient.key()
        {
            return fail(format!(
                "{name}: is about another message or recipient than the bundle"
            ));
        }
        let proof_name = format!("evidence/{n:03}.proof.json");
        let proof: InclusionProof = serde_json::from_slice(member(&members, &proof_name)?)
            .map_err(|e| VerifyError(format!("{proof_name}: {e}")))?;
        let entry = EvidenceRecord::commitment(record.event, canonical).to_entry();
        if proof.entry.as_bytes() != entry.as_slice() {
            return fail(format!(
                "{proof_name}: the log entry does not commit to {name} (record missing from the log)"
            ));
        }
        if proof.tree_size != checkpoint.size {
            return fail(format!(
                "{proof_name}: proof is for tree size {}, the checkpoint's is {}",
                proof.tree_size, checkpoint.size
            ));
        }
        if proof.inclusion.len() > MAX_PROOF {
            return fail(format!(
                "{proof_name}: the inclusion proof is impossibly long"
            ));
        }
        let path: Vec<Hash> = proof
            .inclusion
            .iter()
            .map(|h| unb64(h).map(Hash))
            .collect::<Option<_>>()
            .ok_or_else(|| VerifyError(format!("{proof_name}: malformed hash in the proof")))?;
        check_record(
            &path,
            checkpoint.size,
            checkpoint.root,
            proof.log_index,
            record_hash(&entry),
        )
        .map_err(|e| {
            VerifyError(format!(
                "{proof_name}: entry {} is not included in the checkpoint's tree: {e}",
                proof.log_index
            ))
        })?;
        records.push(record);
    }

    // 7. Optionally, the proofs must hold against a checkpoint the caller trusts.
    if let Some(trusted) = trusted_checkpoint {
        let trusted = SignedCheckpoint::parse(trusted, &vkey)
            .map_err(|e| VerifyError(format!("--checkpoint: {e}")))?;
        if trusted.size != checkpoint.size || trusted.root != checkpoint.root {
            return fail(format!(
                "--checkpoint: the trusted checkpoint (size {}) is not the bundle's (size {}); \
                 export the bundle at that checkpoint (`bote proof export … --checkpoint FILE`)",
                trusted.size, checkpoint.size
            ));
        }
    }

    Ok(Verified {
        fingerprint,
        anchored,
        records,
        checkpoint,
    })
}

fn readme(chain: &[StoredEvidence], checkpoint: &SignedCheckpoint, keys: &KeyRing) -> String {
    let first = &chain[0].record;
    let mut events = String::new();
    for (i, e) in chain.iter().enumerate() {
        events.push_str(&format!(
            "  evidence/{:03}.json  {}  {}  {}\n",
            i + 1,
            rfc3339_ms(e.record.time.0),
            e.record.event,
            e.record.reason
        ));
    }
    format!(
        "PROOF BUNDLE\n\
         ============\n\n\
         This file is a proof bundle issued by the registered-delivery gateway {issuer}.\n\
         It proves what happened to one message for one recipient:\n\n\
         \x20 message:    {gateway_id}{message_id}\n\
         \x20 sender:     {sender}\n\
         \x20 recipient:  {recipient}\n\n\
         Events (each is a signed evidence record):\n\n{events}\n\
         The records name the message by its SHA-256 digest; they contain neither its subject\n\
         nor its text. Every file in this bundle is listed with its SHA-256 digest in\n\
         manifest.json, and manifest.json is signed (manifest.json.asc) with the gateway's\n\
         evidence key. Changing any byte of any file, this README included, is detected.\n\n\
         WHO SIGNED\n\
         \x20 evidence key fingerprint: {fpr}\n\
         \x20 transparency log:         {origin} (checkpoint of {size} entries)\n\
         Compare the fingerprint with the one the gateway operator publishes (its website,\n\
         https://<gateway>/log/key, or a letter). Only then does the check below prove that\n\
         this gateway, and nobody else, issued the evidence.\n\n\
         HOW TO CHECK WITH bote (one command)\n\
         \x20 bote verify THIS-FILE.tar --key {fpr}\n\
         It checks every signature, every digest, every log inclusion proof and the\n\
         checkpoint signature, and prints the first thing that fails, if any.\n\n\
         HOW TO CHECK BY HAND WITH GnuPG\n\
         \x20 1. Unpack:            tar -xf THIS-FILE.tar\n\
         \x20 2. Import the key:    gpg --import keys/evidence.cert.asc\n\
         \x20    and compare its fingerprint with the one published by the gateway.\n\
         \x20 3. Check the manifest: gpg --verify manifest.json.asc manifest.json\n\
         \x20    (\"Good signature\" from the key above).\n\
         \x20 4. Check each file against the manifest: sha256sum FILE, and compare with the\n\
         \x20    \"sha256\" value listed for it in manifest.json.\n\
         \x20 5. Check each record: gpg --verify evidence/001.json.asc evidence/001.json\n\
         \x20    (and so on for every record).\n\
         \x20 6. The log: evidence/NNN.proof.json holds the record's log entry and its\n\
         \x20    inclusion proof in the signed checkpoint (file `checkpoint`, signed with the\n\
         \x20    log key in keys/log.vkey). Checking it needs a tool that implements RFC 6962;\n\
         \x20    `bote verify` does. Anyone can compare the checkpoint with the gateway's public\n\
         \x20    log at https://<gateway>/log/checkpoint, which only ever grows.\n\n\
         The format is described in docs/proof-bundle.md of the bote source code.\n",
        issuer = first.issuer,
        gateway_id = first.message.gateway_id,
        message_id = first
            .message
            .message_id
            .as_ref()
            .map(|m| format!(" (Message-ID {m})"))
            .unwrap_or_default(),
        sender = first.sender.address,
        recipient = first.recipient,
        fpr = keys.evidence.fingerprint(),
        origin = checkpoint.origin,
        size = checkpoint.size,
    )
}
