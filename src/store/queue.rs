//! The outbound relay queue (`outbound_jobs`): claiming by lease, outcomes, and the
//! operator's view. A claim is one conditional UPDATE per job, so two workers (two gateway
//! instances on one PostgreSQL, or two processes on one SQLite file) never hold the same
//! job: the second finds the row no longer claimable.

use sqlx::{AnyConnection, Row};

use super::accounts::{MAILBOX_COLUMNS, mailbox_from_row};
use super::{Store, StoreError, placeholders};
use crate::accounts::Relay;
use crate::evidence::StoredEvidence;

/// A job claimed for sending, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// The message.
    pub gateway_id: String,
    /// The external office's address.
    pub recipient: String,
    /// The office's mail server and TLS mode (`None`: its mailbox is no longer external).
    pub relay: Option<Relay>,
    /// The message's sender (the envelope sender of the relay).
    pub sender: String,
    /// Attempts so far (this one not counted).
    pub attempts: i64,
    /// When the job was queued (unix ms).
    pub created_at: i64,
    /// Whether its previous worker died mid-attempt (the office may get it twice).
    pub orphan: bool,
    /// The size of its message in octets.
    pub payload_size: i64,
    /// The recipient's evidence of the message so far, oldest first (filled by the worker).
    pub chain: Vec<StoredEvidence>,
}

/// A job as the operator sees it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Row id.
    pub id: i64,
    /// The message.
    pub gateway_id: String,
    /// The recipient.
    pub recipient: String,
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Next attempt (unix ms).
    pub due_at: i64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// The query of [`due`] (`$1` now, `$2` the limit); public for the test of what it reads.
pub const DUE_JOBS: &str = "SELECT id, state FROM ( \
      SELECT * FROM (SELECT id, state, due_at FROM outbound_jobs \
        WHERE state = 'queued' AND due_at <= $1 ORDER BY due_at LIMIT $2) AS queued \
      UNION ALL \
      SELECT * FROM (SELECT id, state, due_at FROM outbound_jobs \
        WHERE state = 'running' AND lease_expires_at < $1 ORDER BY due_at LIMIT $2) AS orphans \
    ) AS due ORDER BY due_at LIMIT $2";

/// Ids of up to `limit` jobs due at `now` (queued and due, or running with an expired
/// lease: their worker died), each with whether it is such an orphan.
///
/// One ordered scan of the `(state, due_at)` index per state, not one query with `OR`:
/// PostgreSQL answers the `OR` with bitmap scans, which visit every index entry of a
/// finished job's earlier versions (queued, running) until VACUUM removes them, and never
/// mark them dead. A gateway that had relayed 7,800 messages since the last VACUUM spent
/// 1.8 ms per claim in them. A plain index scan marks such an entry dead the first time
/// it meets it and skips it after (docs/decisions.md, "SMTP path on PostgreSQL").
async fn due(
    conn: &mut AnyConnection,
    now: i64,
    limit: i64,
) -> Result<Vec<(i64, bool)>, StoreError> {
    let rows = sqlx::query(DUE_JOBS)
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get(1)?;
            Ok((r.try_get(0)?, state == "running"))
        })
        .collect()
}

/// Whether any job is due at `now`.
pub async fn any_due(conn: &mut AnyConnection, now: i64) -> Result<bool, StoreError> {
    Ok(!due(conn, now, 1).await?.is_empty())
}

/// Claims up to `limit` jobs due at `now` for `owner` until `lease_until`, in one UPDATE
/// that re-checks each job is still claimable (another instance on the same database may
/// have taken it meanwhile). Returns the ids claimed, each with whether it was an orphan.
pub async fn claim_due(
    conn: &mut AnyConnection,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<(i64, bool)>, StoreError> {
    let due = due(conn, now, limit).await?;
    if due.is_empty() {
        return Ok(due);
    }
    let sql = format!(
        "UPDATE outbound_jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2 \
         WHERE id IN ({}) AND ((state = 'queued' AND due_at <= $3) \
         OR (state = 'running' AND lease_expires_at < $3)) RETURNING id",
        placeholders(4, due.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(lease_until)
        .bind(now);
    for (id, _) in &due {
        query = query.bind(*id);
    }
    let mut claimed = Vec::with_capacity(due.len());
    for row in query.fetch_all(&mut *conn).await? {
        claimed.push(row.try_get::<i64, _>(0)?);
    }
    Ok(due
        .into_iter()
        .filter(|(id, _)| claimed.contains(id))
        .collect())
}

/// The jobs `claims` (from [`claim_due`]) as `owner` holds them, with their sender and
/// relay (a job whose payload is missing too, with size 0: its attempt fails it), in one query (each payload is read by [`payload`] when its session starts); a
/// job whose lease was lost meanwhile is left out.
pub async fn claimed(
    conn: &mut AnyConnection,
    owner: &str,
    claims: &[(i64, bool)],
) -> Result<Vec<Claimed>, StoreError> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT j.id AS job_id, j.gateway_id, j.recipient, j.attempts, \
         j.created_at AS job_created_at, msg.sender, \
         COALESCE(length(p.payload), 0) AS payload_size, {MAILBOX_COLUMNS} \
         FROM outbound_jobs j LEFT JOIN outbound_payloads p ON p.job_id = j.id \
         JOIN messages msg ON msg.gateway_id = j.gateway_id \
         JOIN mailboxes m ON m.id = j.mailbox_id JOIN identities i ON i.id = m.identity_id \
         WHERE j.lease_owner = $1 AND j.id IN ({})",
        placeholders(2, claims.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(owner);
    for (id, _) in claims {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("job_id")?;
            Ok(Claimed {
                id,
                gateway_id: r.try_get("gateway_id")?,
                recipient: r.try_get("recipient")?,
                relay: mailbox_from_row(r)?.relay,
                sender: r.try_get("sender")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("job_created_at")?,
                orphan: claims.iter().any(|(c, orphan)| *c == id && *orphan),
                payload_size: r.try_get("payload_size")?,
                chain: Vec::new(),
            })
        })
        .collect()
}

/// The PGP/MIME message of job `id`, read when its session starts: a claim takes more
/// jobs than the worker talks to servers about at once, and only jobs in a session hold
/// their message in memory. `None` if `owner` no longer holds the job's lease at `now`
/// (a job can wait minutes for a session; a lease that ran out meanwhile may be another
/// worker's claim).
pub async fn payload(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
    now: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = sqlx::query(PAYLOAD)
        .bind(id)
        .bind(owner)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("payload")).transpose()?)
}

/// Largest message read inline (`store::inline`): a 100 KiB message is 137 KiB
/// armoured, read in about 50 µs; a larger one is read on a connection's own thread.
const INLINE_PAYLOAD: i64 = 256 * 1024;

/// [`payload`] as the relay worker reads it before each attempt: inline on SQLite if
/// the message (of `size` octets, [`Claimed::payload_size`]) is small.
pub async fn lookup_payload(
    store: &Store,
    (id, size): (i64, i64),
    owner: &str,
    now: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let pooled = async |c: &mut AnyConnection| payload(c, id, owner, now).await;
    if size <= INLINE_PAYLOAD {
        store
            .lookup(|c| payload_inline(c, id, owner, now), pooled)
            .await
    } else {
        store.read(pooled).await
    }
}

fn payload_inline(
    conn: &rusqlite::Connection,
    id: i64,
    owner: &str,
    now: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    super::inline::optional_row(conn, PAYLOAD, rusqlite::params![id, owner, now], |r| {
        Ok(r.get("payload")?)
    })
}

const PAYLOAD: &str = "SELECT p.payload FROM outbound_payloads p \
     JOIN outbound_jobs j ON j.id = p.job_id \
     WHERE p.job_id = $1 AND j.lease_owner = $2 AND j.state = 'running' \
     AND j.lease_expires_at > $3";

/// How a job that a worker holds ends, for [`finish_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// Row id.
    pub id: i64,
    /// The worker holding its lease.
    pub owner: String,
    /// `done` or `failed`.
    pub state: &'static str,
    /// What a failed job keeps as its last error.
    pub error: Option<String>,
}

/// Ids per `IN (…)` list of [`finish_all`]; lists are padded to a power of two (repeating
/// the last id), so a handful of statement shapes stay in sqlx's statement cache.
const FINISH_CHUNK: usize = 32;

/// Ends jobs, each held by its worker and in its state, with one UPDATE per owner, state and
/// error (ids in `IN` lists) and one DELETE of the delivered jobs' payloads (the office has
/// the message, the evidence its hash; a failed job keeps its payload for `bote queue
/// retry`). False if any lease was lost: the caller rolls back.
pub async fn finish_all(conn: &mut AnyConnection, ends: &[JobEnd]) -> Result<bool, StoreError> {
    let mut groups = std::collections::BTreeMap::<_, Vec<i64>>::new();
    for end in ends {
        groups
            .entry((end.owner.as_str(), end.state, end.error.as_deref()))
            .or_default()
            .push(end.id);
    }
    for ((owner, state, error), ids) in &groups {
        for chunk in ids.chunks(FINISH_CHUNK) {
            let sql = format!(
                "UPDATE outbound_jobs SET state = $1, attempts = attempts + 1, last_error = $2, \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE lease_owner = $3 AND id IN ({})",
                placeholders(4, chunk.len().next_power_of_two())
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(*state)
                .bind(*error)
                .bind(*owner);
            let done = bind_padded(query, chunk).execute(&mut *conn).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Ok(false);
            }
        }
    }
    let delivered: Vec<i64> = ends
        .iter()
        .filter(|e| e.state == "done")
        .map(|e| e.id)
        .collect();
    for chunk in delivered.chunks(FINISH_CHUNK) {
        let sql = format!(
            "DELETE FROM outbound_payloads WHERE job_id IN ({})",
            placeholders(1, chunk.len().next_power_of_two())
        );
        bind_padded(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Binds `ids`, then the last of them again up to the next power of two.
fn bind_padded<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ids: &[i64],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let last = ids.last().copied().unwrap_or_default();
    for i in 0..ids.len().next_power_of_two() {
        query = query.bind(ids.get(i).copied().unwrap_or(last));
    }
    query
}

/// Extends the lease of a job `owner` is sending to `lease_until`; false if it no longer
/// holds it.
pub async fn renew(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
    lease_until: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE outbound_jobs SET lease_expires_at = $1 \
         WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
    )
    .bind(lease_until)
    .bind(id)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts jobs `owner` holds and has not tried back in the queue, as they were before the
/// claim (attempts, due time and last error unchanged).
pub async fn give_back(
    conn: &mut AnyConnection,
    ids: &[i64],
    owner: &str,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE outbound_jobs SET state = 'queued', lease_owner = NULL, \
             lease_expires_at = NULL WHERE lease_owner = $1 AND state = 'running' \
             AND id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(owner);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Puts a job held by `owner` back in the queue, due at `due_at`.
/// Returns whether this deferral is the one that warns the sender: the first at or after
/// `warn_from` (unix ms).
pub async fn retry_later(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
    due_at: i64,
    error: &str,
    (now, warn_from): (i64, i64),
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "UPDATE outbound_jobs SET state = 'queued', attempts = attempts + 1, due_at = $1, \
         last_error = $2, lease_owner = NULL, lease_expires_at = NULL, \
         warned_at = CASE WHEN warned_at IS NULL AND $5 >= $6 THEN $5 ELSE warned_at END \
         WHERE id = $3 AND lease_owner = $4 RETURNING warned_at",
    )
    .bind(due_at)
    .bind(error)
    .bind(id)
    .bind(owner)
    .bind(now)
    .bind(warn_from)
    .fetch_optional(conn)
    .await?;
    let warned_at: Option<i64> = match row {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    Ok(warned_at == Some(now))
}

/// Of these messages' relay jobs, the (gateway id, recipient) of those still waiting after
/// their sender was warned of the delay.
pub async fn delayed(
    conn: &mut AnyConnection,
    gateway_ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    for chunk in gateway_ids.chunks(200) {
        let sql = format!(
            "SELECT gateway_id, recipient FROM outbound_jobs \
             WHERE gateway_id IN ({}) AND state IN ('queued', 'running') \
             AND warned_at IS NOT NULL",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            out.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(out)
}

/// Jobs not done, oldest first (all jobs with `all`).
pub async fn list(conn: &mut AnyConnection, all: bool) -> Result<Vec<Listed>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, gateway_id, recipient, state, attempts, due_at, last_error \
         FROM outbound_jobs WHERE $1 = 1 OR state <> 'done' ORDER BY id",
    )
    .bind(i64::from(all))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Listed {
                id: r.try_get(0)?,
                gateway_id: r.try_get(1)?,
                recipient: r.try_get(2)?,
                state: r.try_get(3)?,
                attempts: r.try_get(4)?,
                due_at: r.try_get(5)?,
                last_error: r.try_get(6)?,
            })
        })
        .collect()
}

/// Makes a queued or failed job due now; false if there is no such job.
pub async fn retry_now(conn: &mut AnyConnection, id: i64, now: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE outbound_jobs SET state = 'queued', due_at = $1 \
         WHERE id = $2 AND state IN ('queued', 'failed')",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notes on delivered job `id` the failure its office's server reported later (a DSN), in
/// the transaction of its evidence; a conflict if one was noted already: two reports
/// recorded at once would fork the recipient's chain, and the job row is what the second
/// finds taken, even inside one batch of the evidence writer.
pub async fn note_reported_failure(
    conn: &mut AnyConnection,
    id: i64,
    report: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE outbound_jobs SET last_error = $1 \
         WHERE id = $2 AND state = 'done' AND last_error IS NULL",
    )
    .bind(report)
    .bind(id)
    .execute(conn)
    .await?;
    super::one_row(&done, "a failure was reported for this job already")
}

/// Whether `owner` holds job `id`'s lease (the job is running under it).
pub async fn holds_lease(
    conn: &mut AnyConnection,
    id: i64,
    owner: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM outbound_jobs WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// A job as `bote queue delete` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    /// The message.
    pub gateway_id: String,
    /// The recipient.
    pub recipient: String,
}

/// Job `id`, if there is one.
pub async fn find(conn: &mut AnyConnection, id: i64) -> Result<Option<Found>, StoreError> {
    let row = sqlx::query("SELECT state, gateway_id, recipient FROM outbound_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(Found {
            state: r.try_get(0)?,
            gateway_id: r.try_get(1)?,
            recipient: r.try_get(2)?,
        })
    })
    .transpose()
}

/// Removes a job whose chain ends in its outcome (`done` or `failed`) and its payload;
/// false if there is no such job.
pub async fn delete_finished(conn: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    let done =
        sqlx::query("DELETE FROM outbound_jobs WHERE id = $1 AND state IN ('done', 'failed')")
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a job still waiting to be sent, and its payload (in the transaction of the
/// evidence that says so); a conflict if a worker claimed it meanwhile.
pub async fn delete_queued(conn: &mut AnyConnection, id: i64) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM outbound_jobs WHERE id = $1 AND state = 'queued'")
        .bind(id)
        .execute(conn)
        .await?;
    super::one_row(&done, "the job is being sent")
}

/// Jobs not yet finished, and the creation time (unix ms) of the oldest of them.
pub async fn depth(conn: &mut AnyConnection) -> Result<(i64, Option<i64>), StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*), MIN(created_at) FROM outbound_jobs WHERE state IN ('queued', 'running')",
    )
    .fetch_one(conn)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}
