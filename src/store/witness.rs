//! Witness state and attested checkpoints (migration 0006).

use sqlx::{AnyConnection, Row};

use super::StoreError;

/// The latest checkpoint this gateway cosigned for a peer's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Vec<u8>,
}

fn size_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What this witness last cosigned for `origin`, if anything.
pub async fn witnessed(
    conn: &mut AnyConnection,
    origin: &str,
) -> Result<Option<Witnessed>, StoreError> {
    let row = sqlx::query("SELECT size, root FROM witness_state WHERE origin = $1")
        .bind(origin)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(Witnessed {
            size: size_of(r.try_get(0)?),
            root: r.try_get(1)?,
        })
    })
    .transpose()
}

/// Moves `origin` from `from` (or from nothing) to the new checkpoint, only if it is still
/// at `from`: false if another request moved it first.
pub async fn advance(
    conn: &mut AnyConnection,
    origin: &str,
    from: Option<&Witnessed>,
    to: &Witnessed,
    checkpoint: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done =
        match from {
            Some(from) => sqlx::query(
                "UPDATE witness_state SET size = $1, root = $2, checkpoint = $3, updated_at = $4 \
                 WHERE origin = $5 AND size = $6 AND root = $7",
            )
            .bind(to_i64(to.size))
            .bind(to.root.clone())
            .bind(checkpoint)
            .bind(now)
            .bind(origin)
            .bind(to_i64(from.size))
            .bind(from.root.clone())
            .execute(conn)
            .await?,
            None => {
                sqlx::query(
                    "INSERT INTO witness_state (origin, size, root, checkpoint, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (origin) DO NOTHING",
                )
                .bind(origin)
                .bind(to_i64(to.size))
                .bind(to.root.clone())
                .bind(checkpoint)
                .bind(now)
                .execute(conn)
                .await?
            }
        };
    Ok(done.rows_affected() == 1)
}

/// Every origin this witness follows, with its latest cosigned size.
pub async fn all_witnessed(conn: &mut AnyConnection) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = sqlx::query("SELECT origin, size FROM witness_state ORDER BY origin")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, size_of(r.try_get(1)?))))
        .collect()
}

/// One of this gateway's checkpoints with its cosignatures and time-stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// Tree size.
    pub size: u64,
    /// The signed note with the witnesses' cosignature lines appended.
    pub checkpoint: String,
    /// How many witnesses cosigned.
    pub cosignatures: u64,
    /// RFC 3161 time-stamp token (DER) over the checkpoint body, if one was obtained.
    pub timestamp_token: Option<Vec<u8>>,
}

/// Records an attestation (a later one for the same size replaces it).
pub async fn put_attestation(
    conn: &mut AnyConnection,
    a: &Attestation,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO log_attestations (size, checkpoint, cosignatures, timestamp_token, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size) DO UPDATE SET \
         checkpoint = excluded.checkpoint, cosignatures = excluded.cosignatures, \
         timestamp_token = excluded.timestamp_token, created_at = excluded.created_at",
    )
    .bind(to_i64(a.size))
    .bind(&a.checkpoint)
    .bind(to_i64(a.cosignatures))
    .bind(a.timestamp_token.clone())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest attestation of at least `min_size` entries with at least `cosignatures`
/// cosignatures (and a time-stamp token if `timestamped`).
pub async fn newest_attestation(
    conn: &mut AnyConnection,
    min_size: u64,
    cosignatures: u64,
    timestamped: bool,
) -> Result<Option<Attestation>, StoreError> {
    let row = sqlx::query(
        "SELECT size, checkpoint, cosignatures, timestamp_token FROM log_attestations \
         WHERE size >= $1 AND cosignatures >= $2 AND ($3 = 0 OR timestamp_token IS NOT NULL) \
         ORDER BY size DESC LIMIT 1",
    )
    .bind(to_i64(min_size))
    .bind(to_i64(cosignatures))
    .bind(i64::from(timestamped))
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Attestation {
            size: size_of(r.try_get(0)?),
            checkpoint: r.try_get(1)?,
            cosignatures: size_of(r.try_get(2)?),
            timestamp_token: r.try_get(3)?,
        })
    })
    .transpose()
}
