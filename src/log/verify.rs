//! `bote log verify`: recompute the whole stored log from its entries and compare with every
//! stored hash, the head, the signed checkpoint and the published checkpoint file.

use sqlx::AnyConnection;
use tlog_tiles::{
    Hash, HashReader, record_hash, stored_hash_count, stored_hashes_for_record_hash, tree_hash,
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
