//! bote as a witness for its peers' logs: `POST /witness/add-checkpoint` (C2SP
//! tlog-witness). Per configured log it keeps the latest checkpoint it cosigned and cosigns
//! a new one only if the consistency proof shows it extends that one.

use tlog_tiles::{Hash, check_tree};

use super::{AddCheckpoint, Cosigner};
use crate::clock::now_ms;
use crate::log::SignedCheckpoint;
use crate::store::witness::{self as repo, Witnessed};
use crate::store::{Store, StoreError};

/// Why a checkpoint was not cosigned; each maps to the status C2SP tlog-witness names.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The request is malformed (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The witness does not follow this log (404).
    #[error("this witness does not follow log `{0}`")]
    UnknownLog(String),
    /// No valid signature by the log's key (403).
    #[error("the checkpoint is not signed by the log's key: {0}")]
    NotSigned(String),
    /// The old size is not the witness's (409, the body names the witness's size).
    #[error("the witness's latest checkpoint of this log has size {0}")]
    Conflict(u64),
    /// Same size, another root: the log forked (409).
    #[error("a checkpoint of size {0} with another root hash was cosigned before: the log forked")]
    Fork(u64),
    /// The consistency proof does not verify (422).
    #[error("the consistency proof does not verify: {0}")]
    Inconsistent(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The witness's own state is damaged.
    #[error("witness state: {0}")]
    State(String),
}

/// One log this witness follows.
#[derive(Debug, Clone)]
pub struct FollowedLog {
    /// Its origin (the verifier key's name).
    pub origin: String,
    /// Its signed-note verifier key.
    pub vkey: String,
}

/// The witness role.
#[derive(Debug)]
pub struct Witness {
    cosigner: Cosigner,
    logs: Vec<FollowedLog>,
    store: Store,
}

impl Witness {
    /// A witness signing with `cosigner` for `logs`, keeping its state in `store`.
    pub fn new(cosigner: Cosigner, logs: Vec<FollowedLog>, store: Store) -> Self {
        Self {
            cosigner,
            logs,
            store,
        }
    }

    /// The verifier key of this witness's cosignatures.
    pub fn verifier_key(&self) -> String {
        self.cosigner.verifier_key()
    }

    /// Handles one add-checkpoint request body; on success, the cosignature line(s).
    pub async fn add_checkpoint(&self, body: &str) -> Result<String, WitnessError> {
        let request = AddCheckpoint::parse(body).map_err(WitnessError::Malformed)?;
        let origin = request
            .checkpoint
            .split('\n')
            .next()
            .unwrap_or_default()
            .to_owned();
        let log = self
            .logs
            .iter()
            .find(|l| l.origin == origin)
            .ok_or_else(|| WitnessError::UnknownLog(origin.clone()))?;
        let checkpoint = SignedCheckpoint::parse(&request.checkpoint, &log.vkey)
            .map_err(|e| WitnessError::NotSigned(e.to_string()))?;
        if request.old > checkpoint.size {
            return Err(WitnessError::Malformed(format!(
                "old size {} is larger than the checkpoint's {}",
                request.old, checkpoint.size
            )));
        }
        if request.old == 0 && !request.proof.is_empty() {
            return Err(WitnessError::Malformed(
                "a request from size 0 carries no proof".into(),
            ));
        }
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        let current = repo::witnessed(&mut conn, &origin).await?;
        let held = current.as_ref().map_or(0, |c| c.size);
        if request.old != held {
            return Err(WitnessError::Conflict(held));
        }
        let next = Witnessed {
            size: checkpoint.size,
            root: checkpoint.root.0.to_vec(),
        };
        match &current {
            Some(c) if c.size == checkpoint.size && c.root != next.root => {
                return Err(WitnessError::Fork(c.size));
            }
            Some(c) if c.size == checkpoint.size => {}
            // Every tree extends the empty one.
            Some(c) if c.size == 0 => {}
            Some(c) => {
                let old_root = Hash(c.root.clone().try_into().map_err(|_| {
                    WitnessError::State(format!("the stored root of {origin} is not 32 bytes"))
                })?);
                check_tree(
                    &request.proof,
                    checkpoint.size,
                    checkpoint.root,
                    c.size,
                    old_root,
                )
                .map_err(|e| WitnessError::Inconsistent(e.to_string()))?;
            }
            None => {}
        }
        let moves = current.as_ref().is_none_or(|c| c.size != next.size);
        if moves
            && !repo::advance(
                &mut conn,
                &origin,
                current.as_ref(),
                &next,
                &request.checkpoint,
                now_ms(),
            )
            .await?
        {
            // Another submission moved it first: the client retries from the new size.
            let now = repo::witnessed(&mut conn, &origin).await?;
            return Err(WitnessError::Conflict(now.map_or(0, |c| c.size)));
        }
        let text = checkpoint_text(&request.checkpoint);
        Ok(self.cosigner.cosign(text.as_bytes()))
    }
}

/// The note text of a signed note: everything up to and including the line before the
/// blank line.
pub fn checkpoint_text(note: &str) -> String {
    match note.split_once("\n\n") {
        Some((text, _)) => format!("{text}\n"),
        None => note.to_owned(),
    }
}
