//! Evidence: signed records of every dispatch, relay, delivery, pickup and failure,
//! committed in the same transaction as the event and appended to the transparency log.
//!
//! The API the rest of bote uses is small:
//! - build an [`EvidenceRecord`], [`sign`] it (canonical bytes + OpenPGP signature; CPU work,
//!   run it on the crypto pool, in parallel, before the writer);
//! - hand the signed records (and the event's own rows, as a closure) to the [`Writer`],
//!   which batches concurrent callers into one transaction (group commit), appends to the
//!   log, signs one checkpoint and commits once; or call [`record_in_tx`] inside a
//!   transaction of your own;
//! - read back with [`query`] and export with [`bundle`].

pub mod bundle;
pub mod query;
pub mod record;
mod writer;

use sqlx::AnyConnection;

use crate::error::{Classify, Failure};
use crate::keys::{EvidenceKey, KeyError};
use crate::log::{Appended, Log, LogError};
use crate::store::{StoreError, evidence as repo};
pub use record::{
    Attachment, Commitment, Details, Event, EvidenceId, EvidenceRecord, IdentityAssurance,
    MessageRef, ReasonCode, RecordError, Sender, Sha256Digest, SignedRecord, StoredEvidence,
    Timestamp,
};
pub use writer::{Committed, Work, Writer, WriterError};

/// Why evidence could not be signed or recorded.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The record breaks an invariant.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record fails its checks.
    #[error("{0}")]
    Audit(String),
}

impl Classify for EvidenceError {
    fn failure(&self) -> Failure {
        match self {
            Self::Store(e) | Self::Log(LogError::Store(e)) => e.failure(),
            _ => Failure::internal(self),
        }
    }
}

impl From<sqlx::Error> for EvidenceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// Serialises and signs records with the evidence key. CPU-bound: call from a blocking thread.
pub fn sign(
    key: &EvidenceKey,
    records: Vec<EvidenceRecord>,
) -> Result<Vec<SignedRecord>, EvidenceError> {
    let canonical: Vec<Vec<u8>> = records
        .iter()
        .map(EvidenceRecord::to_canonical)
        .collect::<Result<_, _>>()?;
    let signatures = key.sign_many(canonical.iter().map(Vec::as_slice))?;
    Ok(records
        .into_iter()
        .zip(canonical)
        .zip(signatures)
        .map(|((record, canonical), signature)| SignedRecord {
            record,
            canonical,
            signature,
        })
        .collect())
}

/// Checks every stored record: its signature by `cert`, and that the log entry at its index
/// commits to exactly its bytes. Returns how many records were checked.
pub async fn audit_records(
    conn: &mut AnyConnection,
    cert: &sequoia_openpgp::Cert,
) -> Result<u64, EvidenceError> {
    let mut after = -1_i64;
    let mut count = 0_u64;
    loop {
        let page = repo::page_with_entries(conn, after, 1000).await?;
        let Some((last, _)) = page.last() else {
            return Ok(count);
        };
        after = i64::try_from(last.log_index).unwrap_or(i64::MAX);
        let checked = page.len() as u64;
        let cert = cert.clone();
        crate::crypto::pool::run(move || audit_page(&cert, &page)).await?;
        count += checked;
    }
}

fn audit_page(
    cert: &sequoia_openpgp::Cert,
    page: &[(StoredEvidence, Option<Vec<u8>>)],
) -> Result<(), EvidenceError> {
    for (e, entry) in page {
        let id = e.record.evidence_id;
        crate::crypto::verify_detached(cert, &e.canonical, &e.signature)
            .map_err(|err| EvidenceError::Audit(format!("evidence {id}: {err}")))?;
        let expected = EvidenceRecord::commitment(e.record.event, &e.canonical).to_entry();
        if entry.as_deref() != Some(expected.as_slice()) {
            return Err(EvidenceError::Audit(format!(
                "evidence {id} is missing from the log (entry {} does not commit to it)",
                e.log_index
            )));
        }
    }
    Ok(())
}

/// [`sign`] from async code: on the crypto pool, or in place for a few records.
pub async fn sign_async(
    key: std::sync::Arc<EvidenceKey>,
    records: Vec<EvidenceRecord>,
) -> Result<Vec<SignedRecord>, EvidenceError> {
    let cost = crate::crypto::pool::Cost::of(records.len(), 0);
    crate::crypto::pool::run_costed(cost, move || sign(&key, records)).await
}

/// Appends signed records to the log and stores them, inside the caller's transaction,
/// which holds the log's lock ([`Log::lock`]).
/// Returns each record's log index (in order) and the checkpoint to publish after commit.
pub async fn record_in_tx(
    conn: &mut AnyConnection,
    log: &Log,
    locked: crate::log::Locked,
    sealed: &[&SignedRecord],
) -> Result<(Vec<u64>, Appended), EvidenceError> {
    let entries: Vec<Vec<u8>> = sealed.iter().map(|s| s.entry()).collect();
    let appended = log.append_locked(conn, locked, &entries).await?;
    let indexes: Vec<u64> = (0..sealed.len() as u64)
        .map(|i| appended.first_index + i)
        .collect();
    repo::insert(conn, sealed, &indexes).await?;
    Ok((indexes, appended))
}
