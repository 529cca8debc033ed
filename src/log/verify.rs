//! `bote log verify`: recompute the whole stored log from its entries and compare with every
//! stored hash, the head, the signed checkpoint and the published checkpoint file.

use sqlx::AnyConnection;
use tlog_tiles::{
    Hash, HashReader, record_hash, stored_hash_count, stored_hash_index,
    stored_hashes_for_record_hash, tree_hash,
};

use super::{Log, LogError, SignedCheckpoint};
use crate::store;
use crate::store::log::Table;

/// Rows per page while streaming the log.
const PAGE: i64 = 10_000;

/// What a full verification established.
#[derive(Debug, Clone)]
pub struct LogReport {
    /// Entries in the log.
    pub entries: u64,
    /// The verified checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// Size of the published checkpoint file, if one exists.
    pub published: Option<u64>,
}

struct InMemory<'a>(&'a [Hash]);

impl HashReader for InMemory<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| self.0.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Streams the rows of `table` for `idx` in `0..end`, in order, page by page, into `f`.
async fn scan(
    conn: &mut AnyConnection,
    table: Table,
    end: u64,
    mut f: impl FnMut(u64, Vec<u8>) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let end = i64::try_from(end).unwrap_or(i64::MAX);
    let mut from: i64 = 0;
    loop {
        let rows = store::log::range(conn, table, from, end, PAGE).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        from = last.saturating_add(1);
        for (idx, bytes) in rows {
            f(u64::try_from(idx).unwrap_or(u64::MAX), bytes)?;
        }
    }
}

fn corrupt(msg: String) -> LogError {
    LogError::Corrupt(msg)
}

impl Log {
    /// Recomputes the tree from the stored entries and checks every stored hash, the head,
    /// the signed checkpoint and the published checkpoint file against it. Entries appended
    /// while it runs are beyond the head it read first and are left for the next run.
    pub async fn verify_stored(&self, conn: &mut AnyConnection) -> Result<LogReport, LogError> {
        let head = store::log::head(conn).await?;
        let size = u64::try_from(head.size).unwrap_or(0);
        let head_root = head.root;
        let note = head.checkpoint;
        if note.is_empty() {
            return Err(corrupt("the log has no signed checkpoint".into()));
        }
        let checkpoint = SignedCheckpoint::parse(&note, &self.vkey)?;

        // Entries, in order, without gaps; the stored hashes they imply.
        let mut computed: Vec<Hash> = Vec::new();
        let mut expected: u64 = 0;
        scan(conn, Table::Entries, size, |idx, entry| {
            if idx != expected {
                return Err(corrupt(format!("log entry {expected} is missing")));
            }
            let new =
                stored_hashes_for_record_hash(idx, record_hash(&entry), &InMemory(&computed))?;
            computed.extend(new);
            expected += 1;
            Ok(())
        })
        .await?;
        if expected != size {
            return Err(corrupt(format!(
                "the log head says {size} entries, but {expected} are stored"
            )));
        }

        // Every stored hash equals the recomputed one.
        let mut next: u64 = 0;
        let hash_count = stored_hash_count(size);
        scan(conn, Table::Hashes, hash_count, |idx, hash| {
            let want = usize::try_from(idx).ok().and_then(|i| computed.get(i));
            if idx != next || want.map(|h| &h.0[..]) != Some(hash.as_slice()) {
                return Err(corrupt(format!(
                    "stored hash {idx} does not match the entries (entries changed or reordered)"
                )));
            }
            next += 1;
            Ok(())
        })
        .await?;
        if next != hash_count {
            return Err(corrupt(format!(
                "{next} stored hashes for {size} entries; expected {hash_count}"
            )));
        }

        let root = tree_hash(size, &InMemory(&computed))?;
        if head_root != root.0 {
            return Err(corrupt(
                "the log head's root does not match the entries".into(),
            ));
        }
        if checkpoint.size != size || checkpoint.root != root {
            return Err(corrupt(format!(
                "the signed checkpoint (size {}) does not match the entries",
                checkpoint.size
            )));
        }

        let published = match std::fs::read_to_string(&self.published_file) {
            Ok(text) => {
                let file = self.published_file.display();
                let cp = SignedCheckpoint::parse(&text, &self.vkey)
                    .map_err(|e| LogError::Checkpoint(format!("{file}: {e}")))?;
                if cp.size > size || tree_hash(cp.size, &InMemory(&computed))? != cp.root {
                    return Err(corrupt(format!(
                        "the published checkpoint {file} (size {}) is not a prefix of the stored log",
                        cp.size
                    )));
                }
                Some(cp.size)
            }
            Err(_) => None,
        };
        Ok(LogReport {
            entries: size,
            checkpoint,
            published,
        })
    }
}

/// Entries below the last verified size checked again, at random, at every start.
const SAMPLES: usize = 64;

/// What the start-up check established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupCheck {
    /// Entries rehashed because they were written since the last verified size.
    pub rehashed: u64,
    /// Older entries rehashed at random.
    pub sampled: u64,
    /// The size now verified.
    pub size: u64,
}

impl Log {
    /// Where the size whose entries were last rehashed is kept (beside the published
    /// checkpoint: outside the database, which it vouches for).
    fn verified_file(&self) -> std::path::PathBuf {
        self.published_file.with_file_name("log-verified")
    }

    /// At start-up: rehashes every entry written since the last verified size, and a random
    /// sample of older ones, against the stored leaf hashes that tiles and proofs are built
    /// from, and checks the stored tree against the signed checkpoint. A changed entry in
    /// `log_entries` would otherwise be served in tiles that contradict it. The full
    /// recomputation is `bote log verify`.
    pub async fn check_recent(&self, conn: &mut AnyConnection) -> Result<StartupCheck, LogError> {
        let head = store::log::head(conn).await?;
        let size = u64::try_from(head.size).unwrap_or(0);
        let verified = std::fs::read_to_string(self.verified_file())
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(size);
        let mut from = verified;
        while from < size {
            let end = size.min(from + PAGE as u64);
            let rows =
                store::log::range(conn, Table::Entries, to_i64(from), to_i64(end), PAGE).await?;
            self.check_leaves(conn, from, end, &rows).await?;
            from = end;
        }
        let mut sampled = 0;
        if verified > 0 {
            let picks: std::collections::BTreeSet<u64> = (0..SAMPLES)
                .map(|_| rand::random_range(0..verified))
                .collect();
            for i in &picks {
                let rows =
                    store::log::range(conn, Table::Entries, to_i64(*i), to_i64(*i + 1), 1).await?;
                self.check_leaves(conn, *i, *i + 1, &rows).await?;
            }
            sampled = picks.len() as u64;
        }
        if !head.checkpoint.is_empty() {
            let checkpoint = SignedCheckpoint::parse(&head.checkpoint, &self.vkey)?;
            if checkpoint.size != size || self.root_at(conn, size).await? != checkpoint.root {
                return Err(corrupt(format!(
                    "the stored tree does not have the root of the signed checkpoint (size {})",
                    checkpoint.size
                )));
            }
        }
        super::write_atomically(&self.verified_file(), format!("{size}\n").as_bytes()).map_err(
            |e| LogError::Publish {
                path: self.verified_file(),
                reason: e.to_string(),
            },
        )?;
        Ok(StartupCheck {
            rehashed: size - verified,
            sampled,
            size,
        })
    }

    /// The entries `rows` (expected: every index in `from..end`) hash to their stored leaves.
    async fn check_leaves(
        &self,
        conn: &mut AnyConnection,
        from: u64,
        end: u64,
        rows: &[(i64, Vec<u8>)],
    ) -> Result<(), LogError> {
        let indexes: Vec<i64> = (from..end)
            .map(|i| to_i64(stored_hash_index(0, i)))
            .collect();
        let stored: std::collections::HashMap<i64, Vec<u8>> = store::log::hashes(conn, &indexes)
            .await?
            .into_iter()
            .collect();
        for i in from..end {
            let entry = rows
                .iter()
                .find(|(idx, _)| *idx == to_i64(i))
                .ok_or_else(|| corrupt(format!("log entry {i} is missing")))?;
            let leaf = stored.get(&to_i64(stored_hash_index(0, i)));
            if leaf.map(Vec::as_slice) != Some(&record_hash(&entry.1).0[..]) {
                return Err(corrupt(format!(
                    "log entry {i} does not match its leaf hash: the entry was changed after it \
                     was logged. Restore the database from a backup; `bote log verify` checks \
                     every entry"
                )));
            }
        }
        Ok(())
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
