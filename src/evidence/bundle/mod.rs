//! Proof bundles (spec §4, format in docs/proof-bundle.md): one uncompressed tar per
//! (message, recipient) holding the evidence chain, signatures, log entries, inclusion
//! proofs, the signed checkpoint, the keys and a README, under a signed manifest.
//!
//! Every bundle leaves the gateway through [`export_audited`], whoever asks (the CLI, the
//! legal role, a message's sender or recipient): it is built, verified against the
//! gateway's own keys, and recorded in the audit trail, in that order. The tar encoding is
//! canonical (fixed header fields, mtime from the signed manifest, no padding beyond the
//! end-of-archive blocks), so a change to any byte of the file is detected by [`verify`].

mod trust;
mod verify;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tlog_tiles::Hash;

use super::query::{self, QueryError};
use super::record::{EvidenceRecord, Sha256Digest, StoredEvidence, Timestamp};
use crate::accounts::Actor;
use crate::address::EmailAddress;
use crate::clock::{now_ms, rfc3339_ms};
use crate::crypto::{self, pool};
use crate::error::{Classify, Failure};
use crate::keys::{KeyError, KeyRing};
use crate::log::attest::{Attestor, attested_checkpoint};
use crate::log::{Log, LogError, SignedCheckpoint};
use crate::store::{Store, StoreError, audit};
pub use trust::{TrustFile, TrustFileError, TrustedGateway};
pub use verify::{Anchor, Trust, Trusted, Verified, VerifyError, verify};

/// The `format` value of a bundle manifest.
pub const FORMAT: &str = "bote-proof-bundle";
/// The manifest version this code writes.
pub const VERSION: u32 = 2;

/// The format specification, carried inside every bundle so that it can be checked
/// without the source code, years later.
pub const SPECIFICATION: &str = include_str!("../../../docs/proof-bundle.md");

const README: &str = "README.txt";
const FORMAT_DOC: &str = "FORMAT.md";
const MANIFEST: &str = "manifest.json";
const MANIFEST_SIG: &str = "manifest.json.asc";
const CHECKPOINT: &str = "checkpoint";
const TIMESTAMP: &str = "checkpoint.tst";
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
    /// Version 2: the fingerprint of the evidence key that signs the manifest and every
    /// record (upper-case hex).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuer_key: Option<String>,
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
    /// No checkpoint was signed yet.
    #[error("the log has no checkpoint yet")]
    NoCheckpoint,
    /// The chain is empty (the query layer never returns one).
    #[error("empty evidence chain")]
    EmptyChain,
    /// Canonical JSON encoding failed.
    #[error("cannot encode bundle member: {0}")]
    Encode(#[from] serde_json::Error),
    /// Signing the manifest failed.
    #[error(transparent)]
    Sign(#[from] KeyError),
    /// Writing the tar failed.
    #[error("cannot write bundle: {0}")]
    Tar(#[from] std::io::Error),
    /// The bundle made does not verify against the gateway's own keys: never handed out.
    #[error("the exported bundle does not verify: {0}")]
    SelfCheck(#[from] VerifyError),
    /// Storage (the audit entry, or reading the chain).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for ExportError {
    fn failure(&self) -> Failure {
        match self {
            Self::Query(e) => e.failure(),
            Self::Store(e) | Self::Log(LogError::Store(e)) => e.failure(),
            _ => Failure::internal(self),
        }
    }
}

/// An exported bundle, verified and audited.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The tar file.
    pub bytes: Vec<u8>,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
    /// The recipient whose chain it holds.
    pub recipient: EmailAddress,
    /// How many records.
    pub records: usize,
    /// The tree size its proofs are against.
    pub checkpoint_size: u64,
}

/// What bundles are made from: the gateway's store, log and keys, and its attestor (the
/// witnesses and TSA whose cosignatures and time-stamps bundles carry), if configured.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The database.
    pub store: &'a Store,
    /// The log.
    pub log: &'a Log,
    /// The keys.
    pub keys: &'a KeyRing,
    /// Witnesses and time-stamping, if configured.
    pub attestor: Option<&'a Attestor>,
}

/// Exports the bundle of one (message, recipient), checks it with `bote verify`'s rules
/// against the gateway's own evidence certificate, log key and witness keys, and records
/// who took it. The one path by which bundles leave the gateway.
pub async fn export_audited(
    src: Sources<'_>,
    actor: &Actor,
    message: &str,
    recipient: Option<&EmailAddress>,
    at: Option<SignedCheckpoint>,
) -> Result<Exported, ExportError> {
    let mut conn = src.store.pool().acquire().await.map_err(StoreError::from)?;
    let bytes = export(
        &mut conn,
        src.log,
        src.keys,
        src.attestor,
        message,
        recipient,
        at,
    )
    .await?;
    drop(conn);
    let trust = Trust {
        log_key: Some(src.keys.log.verifier_key().to_owned()),
        witnesses: src.attestor.map(Attestor::witness_keys).unwrap_or_default(),
        tsa: src
            .attestor
            .map(|a| a.tsa_pins().to_vec())
            .unwrap_or_default(),
        ..Trust::key(Anchor::Cert(Box::new(src.keys.evidence.cert().clone())))
    };
    let (bytes, verified) = pool::run(move || {
        let verified = verify(&bytes, &trust);
        (bytes, verified)
    })
    .await;
    let verified = verified?;
    let sha256 = Sha256Digest::of(&bytes);
    let recipient = verified
        .records
        .first()
        .map(|r| r.recipient.clone())
        .ok_or(ExportError::EmptyChain)?;
    let details = json!({
        "recipient": recipient.to_string(),
        "records": verified.records.len(),
        "checkpoint_size": verified.checkpoint.size,
        "cosignatures": verified.cosignatures.len(),
        "timestamped": verified.timestamp.is_some(),
        "bundle_sha256": sha256.to_string(),
    });
    let mut conn = src.store.pool().acquire().await.map_err(StoreError::from)?;
    audit::record(&mut conn, actor, "proof.export", message, details, now_ms()).await?;
    Ok(Exported {
        bytes,
        sha256,
        recipient,
        records: verified.records.len(),
        checkpoint_size: verified.checkpoint.size,
    })
}

/// The checkpoint a bundle proves against, with what witnesses and a TSA attested.
#[derive(Debug, Clone)]
pub struct ProvenAt {
    /// The checkpoint; its note carries the witnesses' cosignature lines, if any.
    pub checkpoint: SignedCheckpoint,
    /// An RFC 3161 time-stamp token over the checkpoint body.
    pub timestamp_token: Option<Vec<u8>>,
}

impl From<SignedCheckpoint> for ProvenAt {
    fn from(checkpoint: SignedCheckpoint) -> Self {
        Self {
            checkpoint,
            timestamp_token: None,
        }
    }
}

/// Builds the bundle of one (message, recipient) chain against `at`, or else the newest
/// attested checkpoint that covers it (with `attestor`), or else the latest checkpoint.
pub async fn export(
    conn: &mut sqlx::AnyConnection,
    log: &Log,
    keys: &KeyRing,
    attestor: Option<&Attestor>,
    message: &str,
    recipient: Option<&EmailAddress>,
    at: Option<SignedCheckpoint>,
) -> Result<Vec<u8>, ExportError> {
    let chain = query::chain(conn, message, recipient).await?;
    let last = chain.last().ok_or(ExportError::EmptyChain)?.log_index;
    let at: ProvenAt = match (at, attestor) {
        (Some(cp), _) => cp.into(),
        (None, Some(attestor)) => match attestor.covering(last + 1).await {
            Ok(Some(found)) => ProvenAt {
                checkpoint: attested_checkpoint(log, &found)?,
                timestamp_token: found.timestamp_token,
            },
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "cannot attest the checkpoint");
                }
                tracing::warn!(message, "bundle exported without the required attestations");
                latest(conn, log).await?.into()
            }
        },
        (None, None) => latest(conn, log).await?.into(),
    };
    let size = at.checkpoint.size;
    let mut proofs = Vec::with_capacity(chain.len());
    for e in &chain {
        if e.log_index >= size {
            return Err(ExportError::NotCovered {
                index: e.log_index,
                size,
            });
        }
        proofs.push(log.inclusion_proof(conn, e.log_index, size).await?);
    }
    let keys = keys.clone();
    pool::run(move || build_at(&chain, &proofs, &at, &keys, now_ms())).await
}

async fn latest(
    conn: &mut sqlx::AnyConnection,
    log: &Log,
) -> Result<SignedCheckpoint, ExportError> {
    log.latest_checkpoint(conn)
        .await?
        .ok_or(ExportError::NoCheckpoint)
}

/// Assembles and signs a bundle against a bare checkpoint.
pub fn build(
    chain: &[StoredEvidence],
    proofs: &[Vec<Hash>],
    checkpoint: &SignedCheckpoint,
    keys: &KeyRing,
    created_ms: i64,
) -> Result<Vec<u8>, ExportError> {
    build_at(chain, proofs, &checkpoint.clone().into(), keys, created_ms)
}

/// Assembles and signs a bundle (pure apart from the signature).
pub fn build_at(
    chain: &[StoredEvidence],
    proofs: &[Vec<Hash>],
    at: &ProvenAt,
    keys: &KeyRing,
    created_ms: i64,
) -> Result<Vec<u8>, ExportError> {
    let checkpoint = &at.checkpoint;
    let first = chain.first().ok_or(ExportError::EmptyChain)?;
    // Whole seconds: tar headers carry seconds, and the manifest must state the same time.
    let created = Timestamp(created_ms - created_ms.rem_euclid(1000));
    let mut members: Vec<(String, Vec<u8>)> = vec![
        (README.into(), readme(chain, at, keys).into_bytes()),
        (FORMAT_DOC.into(), SPECIFICATION.as_bytes().to_vec()),
        (CHECKPOINT.into(), checkpoint.note.clone().into_bytes()),
    ];
    if let Some(token) = &at.timestamp_token {
        members.push((TIMESTAMP.into(), token.clone()));
    }
    members.extend([
        (
            EVIDENCE_CERT.into(),
            keys.evidence.armored_cert().as_bytes().to_vec(),
        ),
        (
            LOG_VKEY.into(),
            format!("{}\n", keys.log.verifier_key()).into_bytes(),
        ),
    ]);
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
        let proof_json = serde_jcs::to_vec(&inclusion)?;
        members.push((record_member(n, RECORD), e.canonical.clone()));
        members.push((
            record_member(n, RECORD_SIG),
            crypto::armor_signature(&e.signature),
        ));
        members.push((record_member(n, RECORD_PROOF), proof_json));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        created,
        issuer: first.record.issuer.clone(),
        issuer_key: Some(keys.evidence.fingerprint()),
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
    let manifest_bytes = serde_jcs::to_vec(&manifest)?;
    let signature = keys.evidence.sign(&manifest_bytes)?;
    let mut ordered = vec![members.remove(0)];
    ordered.push((MANIFEST.into(), manifest_bytes));
    ordered.push((MANIFEST_SIG.into(), crypto::armor_signature(&signature)));
    ordered.extend(members);
    Ok(encode_tar(&ordered, mtime_secs(created))?)
}

const RECORD: &str = ".json";
const RECORD_SIG: &str = ".json.asc";
const RECORD_PROOF: &str = ".proof.json";

/// `evidence/NNN<suffix>`: the record number in decimal, zero-padded to three digits
/// (`001`…`999`, then `1000`…).
fn record_member(n: usize, suffix: &str) -> String {
    format!("evidence/{n:03}{suffix}")
}

fn mtime_secs(t: Timestamp) -> u64 {
    u64::try_from(t.0.div_euclid(1000)).unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

fn readme(chain: &[StoredEvidence], at: &ProvenAt, keys: &KeyRing) -> String {
    let checkpoint = &at.checkpoint;
    let first = &chain[0].record;
    let cosigners: Vec<&str> = checkpoint
        .note
        .split_once("\n\n")
        .map(|(_, sigs)| {
            sigs.lines()
                .skip(1)
                .filter_map(|l| l.split(' ').nth(1))
                .collect()
        })
        .unwrap_or_default();
    let attested = match (cosigners.is_empty(), at.timestamp_token.is_some()) {
        (true, false) => {
            "Neither witnesses nor a time-stamping authority attest this checkpoint:\n\
                          its time and uniqueness rest on the gateway's signatures.\n"
                .to_owned()
        }
        (no_witness, stamped) => {
            let mut text = String::new();
            if !no_witness {
                text.push_str(&format!(
                    "Independent witnesses cosigned the checkpoint (extra lines in the file\n\
                     `checkpoint`): {}. Each saw it as a consistent extension of\n\
                     everything it had seen of this log. Check them with --witness KEY\n\
                     (or a trust file) using the witnesses' published keys.\n",
                    cosigners.join(", ")
                ));
            }
            if stamped {
                text.push_str(
                    "A time-stamping authority (RFC 3161) stamped the checkpoint:\n\
                     checkpoint.tst. Check it with --tsa SHA256-OF-ITS-CERTIFICATE (or a trust\n\
                     file); `openssl ts -reply -in checkpoint.tst -token_in -text` shows it.\n",
                );
            }
            text
        }
    };
    let mut events = String::new();
    for (i, e) in chain.iter().enumerate() {
        events.push_str(&format!(
            "  {}  {}  {}  {}\n",
            record_member(i + 1, RECORD),
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
         WITNESSES AND TIME\n{attested}\n\
         HOW TO CHECK WITH bote (one command)\n\
         \x20 bote verify THIS-FILE.tar --key {fpr}\n\
         \x20 (or: bote verify THIS-FILE.tar --trust TRUST-FILE, as your association of\n\
         \x20 municipalities publishes it, naming gateways, witnesses and time-stamp authorities)\n\
         It checks every signature, every digest, every log inclusion proof, the chain of\n\
         records and the checkpoint signature, and prints the first thing that fails, if any.\n\
         It exits with status 0 only if everything holds and the keys are the ones you named.\n\
         Cosignatures count only from witnesses you trust (--witness, or the trust file), and\n\
         the time-stamp only from an authority you trust (--tsa); otherwise the output says\n\
         \"not checked\" or \"not anchored\" for them.\n\n\
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
         FORMAT.md, in this bundle, specifies the format and every check, so that anyone can\n\
         write a verifier of their own.\n",
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
