//! Repository for the transparency log: the sequencer row (`log_head`), the entries and
//! the tlog stored hashes. `crate::log` holds the algorithms; this file holds its SQL.

use sqlx::{AnyConnection, Row};

use super::StoreError;

/// Rows per multi-row INSERT of (index, bytes) pairs: small enough that SQLite's quadratic
/// parameter-name lookup stays cheap, large enough to save round trips.
const PAIR_CHUNK: usize = 64;

/// Which table of (index, bytes) rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `log_entries (idx, entry)`.
    Entries,
    /// `log_hashes (idx, hash)`.
    Hashes,
}

impl Table {
    fn insert_into(self) -> &'static str {
        match self {
            Self::Entries => "log_entries (idx, entry)",
            Self::Hashes => "log_hashes (idx, hash)",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Self::Entries => "SELECT idx, entry FROM log_entries",
            Self::Hashes => "SELECT idx, hash FROM log_hashes",
        }
    }
}

/// The sequencer row.
#[derive(Debug, Clone)]
pub struct Head {
    /// Entries in the log.
    pub size: i64,
    /// Root hash at that size.
    pub root: Vec<u8>,
    /// The latest signed checkpoint (empty before the first).
    pub checkpoint: String,
}

/// Takes the sequencer lock (row lock on PostgreSQL, write lock on SQLite) in the caller's
/// transaction and returns the current size, in one statement.
pub async fn lock_size(conn: &mut AnyConnection, now: i64) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("UPDATE log_head SET updated_at = $1 WHERE id = 1 RETURNING size")
            .bind(now)
            .fetch_one(conn)
            .await?,
    )
}

/// Sets the head after an append (inside the transaction that holds the lock).
pub async fn set_head(
    conn: &mut AnyConnection,
    size: i64,
    root: &[u8],
    checkpoint: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE log_head SET size = $1, root = $2, checkpoint = $3 WHERE id = 1")
        .bind(size)
        .bind(root.to_vec())
        .bind(checkpoint)
        .execute(conn)
        .await?;
    Ok(())
}

/// The head row.
pub async fn head(conn: &mut AnyConnection) -> Result<Head, StoreError> {
    let row = sqlx::query("SELECT size, root, checkpoint FROM log_head WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(Head {
        size: row.try_get("size")?,
        root: row.try_get("root")?,
        checkpoint: row.try_get("checkpoint")?,
    })
}

/// The current size.
pub async fn size(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT size FROM log_head WHERE id = 1")
        .fetch_one(conn)
        .await?)
}

/// The latest signed checkpoint note (empty before the first).
pub async fn checkpoint(conn: &mut AnyConnection) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT checkpoint FROM log_head WHERE id = 1")
            .fetch_one(conn)
            .await?,
    )
}

/// Inserts (index, bytes) rows with multi-row INSERTs.
pub async fn insert_pairs(
    conn: &mut AnyConnection,
    table: Table,
    rows: &[(i64, Vec<u8>)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(PAIR_CHUNK) {
        let sql = super::multi_row_insert(table.insert_into(), chunk.len(), 2);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (index, bytes) in chunk {
            query = query.bind(*index).bind(bytes.clone());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The entry at `index`, if stored.
pub async fn entry(conn: &mut AnyConnection, index: i64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT entry FROM log_entries WHERE idx = $1")
            .bind(index)
            .fetch_optional(conn)
            .await?,
    )
}

/// Rows of `table` with `from <= idx < end`, in order, at most `limit`.
pub async fn range(
    conn: &mut AnyConnection,
    table: Table,
    from: i64,
    end: i64,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let sql = format!(
        "{} WHERE idx >= $1 AND idx < $2 ORDER BY idx LIMIT $3",
        table.select()
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(end)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Stored hashes by index; absent ones are simply not returned.
pub async fn hashes(
    conn: &mut AnyConnection,
    indexes: &[i64],
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let mut out = Vec::with_capacity(indexes.len());
    for chunk in indexes.chunks(500) {
        let sql = format!(
            "SELECT idx, hash FROM log_hashes WHERE idx IN ({})",
            super::placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in chunk {
            query = query.bind(*i);
        }
        for row in query.fetch_all(&mut *conn).await? {
            out.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(out)
}
