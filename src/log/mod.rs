//! The transparency log (spec §4): an append-only RFC 6962 Merkle tree following C2SP
//! tlog-checkpoint, signed-note and tlog-tiles, stored in the database.
//!
//! Storage is the "stored hashes" layout of Go's `sumdb/tlog` (ported by `tlog_tiles`):
//! record `n` adds the hashes of every complete subtree it finishes, at stored-hash indexes
//! that depend on `n` alone. Every tile element is such a stored hash, so tiles, tree hashes,
//! inclusion and consistency proofs all read O(log n) rows and never rehash the log.
//!
//! Architecture invariants:
//! - Entries are commitments (`evidence::Commitment`), never records: no personal data.
//! - One sequencer at a time: [`Log::append`] starts by updating the single `log_head` row,
//!   which takes the row lock (PostgreSQL) or the write lock (SQLite) until the caller's
//!   transaction ends. Two processes can therefore never assign the same index.
//! - A checkpoint is signed inside the appending transaction for exactly the new size, so
//!   stored checkpoints strictly grow and always describe committed data.
//! - The last published checkpoint also lives in `data_dir/log-checkpoint`; a start against a
//!   database whose log is shorter than, or inconsistent with, it is refused.

pub mod attest;
mod hashes;
pub mod note;
pub mod tiles;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sqlx::AnyConnection;
use tlog_tiles::{Hash, stored_hash_count, stored_hashes, tree_hash};

use crate::clock::now_ms;
use crate::keys::LogKey;
use crate::store::StoreError;
use crate::store::log::{self as repo, Table};
pub use note::SignedCheckpoint;
pub use verify::{LogReport, StartupCheck};

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A proof or hash computation failed (corrupt or missing stored hashes).
    #[error("log hashes: {0}")]
    Tlog(String),
    /// An index or size outside the tree.
    #[error("{0}")]
    OutOfRange(String),
    /// A checkpoint is malformed or badly signed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The database holds fewer entries than the last published checkpoint.
    #[error(
        "the evidence log in the database has {db} entries, but the last published checkpoint \
         ({file}) covers {published}: the database was restored from an older backup or lost \
         commits. Restore a backup at least as new as that checkpoint; bote will not sign a \
         checkpoint that does not extend it (see deploy/README.md, \"Backup and restore\")"
    )]
    RolledBack {
        /// Entries in the database.
        db: u64,
        /// Size of the published checkpoint.
        published: u64,
        /// Where it is kept.
        file: String,
    },
    /// The database's tree at the published size has another root.
    #[error(
        "the evidence log in the database does not match the last published checkpoint ({file}, \
         size {size}): entries were changed or reordered. Restore the database from a backup \
         that matches it; do not serve from this one"
    )]
    Inconsistent {
        /// Where the checkpoint is kept.
        file: String,
        /// Its size.
        size: u64,
    },
    /// The stored log contradicts itself or its signed checkpoint.
    #[error("the stored log is corrupt: {0}")]
    Corrupt(String),
    /// Writing the published checkpoint file failed.
    #[error("cannot write {path}: {reason}")]
    Publish {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<sqlx::Error> for LogError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

impl From<tlog_tiles::Error> for LogError {
    fn from(e: tlog_tiles::Error) -> Self {
        Self::Tlog(e.to_string())
    }
}

/// The sequencer lock held in a transaction, and the log's size under it. Not `Clone`:
/// one lock, one append.
#[derive(Debug)]
pub struct Locked {
    size: u64,
}

/// What one append produced.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Index of the first new entry.
    pub first_index: u64,
    /// The checkpoint for the new size, stored in the same transaction.
    pub checkpoint: SignedCheckpoint,
}

/// The log of one gateway: its origin, its key, and where it publishes checkpoints.
#[derive(Debug)]
pub struct Log {
    signer: Option<Arc<LogKey>>,
    vkey: String,
    origin: String,
    published_file: PathBuf,
    published_size: Mutex<Option<u64>>,
}

impl Log {
    /// A log named `origin`, signing with `key`, publishing into `data_dir`.
    pub fn new(key: Arc<LogKey>, origin: String, data_dir: &Path) -> Self {
        Self {
            vkey: key.verifier_key().to_owned(),
            signer: Some(key),
            origin,
            published_file: data_dir.join("log-checkpoint"),
            published_size: Mutex::new(None),
        }
    }

    /// A log that can be read and verified but not appended to (no secret key needed).
    pub fn read_only(vkey: String, origin: String, data_dir: &Path) -> Self {
        Self {
            signer: None,
            vkey,
            origin,
            published_file: data_dir.join("log-checkpoint"),
            published_size: Mutex::new(None),
        }
    }

    /// The origin line, `<domain>/log`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key of the log key.
    pub fn verifier_key(&self) -> &str {
        &self.vkey
    }

    /// Where the last published checkpoint is kept outside the database.
    pub fn published_file(&self) -> &Path {
        &self.published_file
    }

    /// Takes the sequencer lock (the `log_head` row) in the caller's transaction and reads
    /// the size under it: call this first to take the lock before other work, then
    /// [`Log::append_locked`] in the same transaction.
    pub async fn lock(&self, conn: &mut AnyConnection) -> Result<Locked, LogError> {
        let size = repo::lock_size(conn, now_ms()).await?;
        let size = u64::try_from(size).map_err(|_| LogError::Tlog("negative log size".into()))?;
        Ok(Locked { size })
    }

    /// Appends `entries` in the caller's transaction and signs the checkpoint for the new
    /// size. Nothing is visible to others until the caller commits; then call
    /// [`Log::publish`] with the returned checkpoint.
    pub async fn append(
        &self,
        conn: &mut AnyConnection,
        entries: &[Vec<u8>],
    ) -> Result<Appended, LogError> {
        let locked = self.lock(conn).await?;
        self.append_locked(conn, locked, entries).await
    }

    /// [`Log::append`] in a transaction that took the lock with [`Log::lock`] already (one
    /// statement less: the writer's batches).
    pub async fn append_locked(
        &self,
        conn: &mut AnyConnection,
        locked: Locked,
        entries: &[Vec<u8>],
    ) -> Result<Appended, LogError> {
        let n0 = locked.size;
        let new_size = n0 + entries.len() as u64;
        let base = stored_hash_count(n0);

        let (new_hashes, root) = hashes::two_phase(conn, |reader| {
            let mut fresh = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                let hs = stored_hashes(n0 + i as u64, entry, reader)?;
                for h in hs {
                    reader.insert(base + fresh.len() as u64, h);
                    fresh.push(h);
                }
            }
            let root = tree_hash(new_size, reader)?;
            Ok((fresh, root))
        })
        .await?;

        let entry_rows = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Ok((to_i64(n0 + i as u64)?, e.clone())))
            .collect::<Result<Vec<_>, LogError>>()?;
        repo::insert_pairs(conn, Table::Entries, &entry_rows).await?;
        let hash_rows = new_hashes
            .iter()
            .enumerate()
            .map(|(i, h)| Ok((to_i64(base + i as u64)?, h.0.to_vec())))
            .collect::<Result<Vec<_>, LogError>>()?;
        repo::insert_pairs(conn, Table::Hashes, &hash_rows).await?;
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| LogError::Checkpoint("this log was opened read-only".into()))?;
        let checkpoint = SignedCheckpoint::sign(signer, &self.origin, new_size, root)?;
        repo::set_head(conn, to_i64(new_size)?, &root.0, &checkpoint.note).await?;
        Ok(Appended {
            first_index: n0,
            checkpoint,
        })
    }

    /// Records a committed checkpoint as published: writes it to the data directory
    /// (atomically) unless a larger one was published already by this process.
    pub fn publish(&self, checkpoint: &SignedCheckpoint) -> Result<(), LogError> {
        let mut last = self
            .published_size
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|s| s >= checkpoint.size) {
            return Ok(());
        }
        // Another process sharing the data directory may have published a newer one.
        let on_disk = std::fs::read_to_string(&self.published_file)
            .ok()
            .and_then(|t| SignedCheckpoint::parse(&t, &self.vkey).ok());
        if on_disk.is_some_and(|c| c.size >= checkpoint.size) {
            *last = Some(checkpoint.size);
            return Ok(());
        }
        write_atomically(&self.published_file, checkpoint.note.as_bytes()).map_err(|e| {
            LogError::Publish {
                path: self.published_file.clone(),
                reason: e.to_string(),
            }
        })?;
        *last = Some(checkpoint.size);
        Ok(())
    }

    /// The current size of the log.
    pub async fn size(&self, conn: &mut AnyConnection) -> Result<u64, LogError> {
        let size = repo::size(conn).await?;
        u64::try_from(size).map_err(|_| LogError::Tlog("negative log size".into()))
    }

    /// The newest checkpoint, if any was signed yet.
    pub async fn latest_checkpoint(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<Option<SignedCheckpoint>, LogError> {
        let note = repo::checkpoint(conn).await?;
        if note.is_empty() {
            return Ok(None);
        }
        SignedCheckpoint::parse(&note, &self.vkey).map(Some)
    }

    /// Checks that `checkpoint` (signed by this log's key) describes the stored tree at its
    /// size: used to export bundles against a checkpoint someone holds.
    pub async fn check_checkpoint(
        &self,
        conn: &mut AnyConnection,
        note: &str,
    ) -> Result<SignedCheckpoint, LogError> {
        let cp = SignedCheckpoint::parse(note, &self.vkey)?;
        self.check_size(conn, cp.size).await?;
        if self.root_at(conn, cp.size).await? != cp.root {
            return Err(LogError::Checkpoint(format!(
                "the stored log does not have this checkpoint's root at size {}",
                cp.size
            )));
        }
        Ok(cp)
    }

    /// Signs and stores a checkpoint for the empty log if none exists yet, so that
    /// `/log/checkpoint` always answers.
    pub async fn ensure_checkpoint(&self, conn: &mut AnyConnection) -> Result<(), LogError> {
        if let Some(cp) = self.latest_checkpoint(conn).await? {
            return self.publish(&cp);
        }
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        let appended = self.append(&mut tx, &[]).await?;
        tx.commit().await?;
        self.publish(&appended.checkpoint)
    }

    /// The tree hash of the first `size` entries, from stored hashes.
    pub async fn root_at(&self, conn: &mut AnyConnection, size: u64) -> Result<Hash, LogError> {
        hashes::two_phase(conn, |r| Ok(tree_hash(size, &*r)?)).await
    }

    /// An RFC 6962 inclusion proof of entry `index` in the tree of `size` entries.
    pub async fn inclusion_proof(
        &self,
        conn: &mut AnyConnection,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, LogError> {
        if index >= size {
            return Err(LogError::OutOfRange(format!(
                "entry {index} is not in a tree of size {size}"
            )));
        }
        self.check_size(conn, size).await?;
        hashes::two_phase(conn, |r| Ok(tlog_tiles::prove_record(size, index, &*r)?)).await
    }

    /// An RFC 6962 consistency proof from the tree of `old` entries to the one of `new`.
    pub async fn consistency_proof(
        &self,
        conn: &mut AnyConnection,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, LogError> {
        if old == 0 || old > new {
            return Err(LogError::OutOfRange(format!(
                "no consistency proof from size {old} to size {new}"
            )));
        }
        self.check_size(conn, new).await?;
        hashes::two_phase(conn, |r| Ok(tlog_tiles::prove_tree(new, old, &*r)?)).await
    }

    async fn check_size(&self, conn: &mut AnyConnection, size: u64) -> Result<(), LogError> {
        let current = self.size(conn).await?;
        if size > current {
            return Err(LogError::OutOfRange(format!(
                "the log has {current} entries, not {size}"
            )));
        }
        Ok(())
    }

    /// The entry at `index`.
    pub async fn entry(&self, conn: &mut AnyConnection, index: u64) -> Result<Vec<u8>, LogError> {
        repo::entry(conn, to_i64(index)?)
            .await?
            .ok_or_else(|| LogError::OutOfRange(format!("no log entry {index}")))
    }

    /// Refuses a database whose log is shorter than, or inconsistent with, the checkpoint
    /// last published from this data directory, or whose recent entries do not match their
    /// hashes ([`Log::check_recent`]); then publishes the newest stored one.
    pub async fn check_published(&self, conn: &mut AnyConnection) -> Result<(), LogError> {
        let file = self.published_file.display().to_string();
        match std::fs::read_to_string(&self.published_file) {
            Ok(text) => {
                let published = SignedCheckpoint::parse(&text, &self.vkey)
                    .map_err(|e| LogError::Checkpoint(format!("{file}: {e}")))?;
                let db = self.size(conn).await?;
                if db < published.size {
                    return Err(LogError::RolledBack {
                        db,
                        published: published.size,
                        file,
                    });
                }
                if self.root_at(conn, published.size).await? != published.root {
                    return Err(LogError::Inconsistent {
                        file,
                        size: published.size,
                    });
                }
                *self
                    .published_size
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(published.size);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(LogError::Checkpoint(format!("cannot read {file}: {e}")));
            }
        }
        let checked = self.check_recent(conn).await?;
        tracing::info!(
            rehashed = checked.rehashed,
            sampled = checked.sampled,
            size = checked.size,
            "log entries match their hashes"
        );
        self.ensure_checkpoint(conn).await
    }
}

fn to_i64(n: u64) -> Result<i64, LogError> {
    i64::try_from(n).map_err(|_| LogError::OutOfRange(format!("{n} is too large")))
}

/// Writes a file so that readers see the old or the new content, never a mix, and the new
/// content survives a crash once this returns.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A name of its own per writer: two processes sharing a data directory never write
    // into the same temporary file.
    let tmp = path.with_extension(format!(
        "tmp.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
