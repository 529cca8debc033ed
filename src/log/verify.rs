//! `bote log verify`: recompute the whole stored log from its entries and compare with every
//! stored hash, the head, the signed checkpoint and the published checkpoint file.

use sqlx::{AnyConnection, Row};
use tlog_tiles::{
    Hash, HashReader, record_hash, stored_hash_count, stored_hashes_for_record_hash, tree_hash,
};

use super::{Log, LogError, SignedCheckpoint};

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

/// Streams the `(idx, bytes)` rows that `select` (`SELECT idx, <bytes> FROM <table>`) yields
/// for `idx` in `0..end`, in order, page by page, into `f`.
async fn scan(
    conn: &mut AnyConnection,
    select: &'static str,
    end: u64,
    mut f: impl FnMut(u64, Vec<u8>) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let sql = format!("{select} WHERE idx >= $1 AND idx < $2 ORDER BY idx LIMIT $3");
    let mut from: u64 = 0;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(i64::try_from(from).unwrap_or(i64::MAX))
            .bind(i64::try_from(end).unwrap_or(i64::MAX))
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        from = u64::try_from(last.try_get::<i64, _>(0)?)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        for row in &rows {
            let idx = u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(u64::MAX);
            f(idx, row.try_get(1)?)?;
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
        let head = sqlx::query("SELECT size, root, checkpoint FROM log_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        let size = u64::try_from(head.try_get::<i64, _>("size")?).unwrap_or(0);
        let head_root: Vec<u8> = head.try_get("root")?;
        let note: String = head.try_get("checkpoint")?;
        if note.is_empty() {
            return Err(corrupt("the log has no signed checkpoint".into()));
        }
        let checkpoint = SignedCheckpoint::parse(&note, &self.vkey)?;

        // Entries, in order, without gaps; the stored hashes they imply.
        let mut computed: Vec<Hash> = Vec::new();
        let mut expected: u64 = 0;
        scan(
            conn,
            "SELECT idx, entry FROM log_entries",
            size,
            |idx, entry| {
                if idx != expected {
                    return Err(corrupt(format!("log entry {expected} is missing")));
                }
                let new =
                    stored_hashes_for_record_hash(idx, record_hash(&entry), &InMemory(&computed))?;
                computed.extend(new);
                expected += 1;
                Ok(())
            },
        )
        .await?;
        if expected != size {
            return Err(corrupt(format!(
                "the log head says {size} entries, but {expected} are stored"
            )));
        }

        // Every stored hash equals the recomputed one.
        let mut next: u64 = 0;
        let hash_count = stored_hash_count(size);
        scan(conn, "SELECT idx, hash FROM log_hashes", hash_count, |idx, hash| {
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
