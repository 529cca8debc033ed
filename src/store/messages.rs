//! Repository for messages, their encrypted per-mailbox copies and outbound relay jobs.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::columns::Columns;
use super::{INSERT_CHUNK, Store, StoreError, multi_row_insert};

/// A message row: cleartext metadata only (the content lives in the copies' bodies).
#[derive(Debug, Clone)]
pub struct MessageRow {
    /// Gateway message id.
    pub gateway_id: String,
    /// RFC 5322 Message-ID.
    pub message_id: Option<String>,
    /// Sender address.
    pub sender: String,
    /// Its lower-cased key (quota lookups).
    pub sender_key: String,
    /// `web`, `api` or `smtp`.
    pub channel: &'static str,
    /// Authentication level at submission.
    pub auth_level: String,
    /// Options.
    pub authoritative: bool,
    /// Options.
    pub personal: bool,
    /// Options.
    pub retrieval_confirmation: bool,
    /// Content was already end-to-end encrypted.
    pub end_to_end: bool,
    /// Size of the submitted bytes.
    pub size: i64,
    /// SHA-256 of the submitted bytes, hex.
    pub sha256: String,
    /// Number of recipients.
    pub recipients: i64,
    /// Submission time.
    pub created_at: i64,
}

/// One mailbox's encrypted copy of a message.
#[derive(Debug, Clone)]
pub struct CopyRow {
    /// Opaque random id (what the API shows).
    pub id: String,
    /// The message.
    pub gateway_id: String,
    /// The mailbox holding it.
    pub mailbox_id: i64,
    /// `inbox` or `sent`.
    pub folder: &'static str,
    /// The recipient this copy is for (the sender's own address for `sent`).
    pub recipient: String,
    /// OpenPGP message to the mailbox certificate.
    pub body: Vec<u8>,
    /// Time of arrival.
    pub created_at: i64,
}

/// A relay job for an external office.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The message.
    pub gateway_id: String,
    /// The external office mailbox.
    pub mailbox_id: i64,
    /// Its address.
    pub recipient: String,
    /// The complete PGP/MIME message.
    pub payload: Vec<u8>,
    /// When it may first run.
    pub due_at: i64,
}

/// A stored copy joined with its message's metadata.
#[derive(Debug, Clone)]
pub struct StoredCopy {
    /// The copy.
    pub copy: CopyRow,
    /// The message.
    pub message: MessageRow,
    /// First opening that counted as handover, if any.
    pub opened_at: Option<i64>,
}

/// Inserts message rows, a chunk per statement.
pub async fn insert_messages(
    conn: &mut AnyConnection,
    messages: &[MessageRow],
) -> Result<(), StoreError> {
    for chunk in messages.chunks(INSERT_CHUNK) {
        let sql = multi_row_insert(
            "messages (gateway_id, message_id, sender, sender_key, channel, auth_level, \
             authoritative, personal, retrieval_confirmation, end_to_end, size, sha256, \
             recipients, created_at)",
            chunk.len(),
            14,
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in chunk {
            query = query
                .bind(m.gateway_id.as_str())
                .bind(m.message_id.as_deref())
                .bind(m.sender.as_str())
                .bind(m.sender_key.as_str())
                .bind(m.channel)
                .bind(m.auth_level.as_str())
                .bind(i64::from(m.authoritative))
                .bind(i64::from(m.personal))
                .bind(i64::from(m.retrieval_confirmation))
                .bind(i64::from(m.end_to_end))
                .bind(m.size)
                .bind(m.sha256.as_str())
                .bind(m.recipients)
                .bind(m.created_at);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Bytes of bodies bound in one statement at most (the driver copies every bound blob:
/// two 45 MiB copies in one statement would double their memory).
const BODY_BYTES_PER_STATEMENT: usize = 1024 * 1024;

/// Splits rows into statements of at most [`INSERT_CHUNK`] rows and, past one row,
/// [`BODY_BYTES_PER_STATEMENT`] bytes of bodies (`body` tells a row's).
fn body_chunks<T>(rows: &[T], body: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, row) in rows.iter().enumerate() {
        let full = i - start == INSERT_CHUNK || bytes + body(row) > BODY_BYTES_PER_STATEMENT;
        if i > start && full {
            chunks.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += body(row);
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// Inserts encrypted copies, a chunk per statement.
pub async fn insert_copies(conn: &mut AnyConnection, copies: &[CopyRow]) -> Result<(), StoreError> {
    for chunk in body_chunks(copies, |c| c.body.len()) {
        let sql = multi_row_insert(
            "message_copies (id, gateway_id, mailbox_id, folder, recipient, body, created_at)",
            chunk.len(),
            7,
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            query = query
                .bind(c.id.as_str())
                .bind(c.gateway_id.as_str())
                .bind(c.mailbox_id)
                .bind(c.folder)
                .bind(c.recipient.as_str())
                .bind(c.body.as_slice())
                .bind(c.created_at);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Queues relay jobs: a row per job (its id keys the payload), then the payloads, a chunk
/// per statement.
pub async fn insert_jobs(conn: &mut AnyConnection, jobs: &[JobRow]) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(INSERT_CHUNK) {
        // One statement per chunk; RETURNING's row order is unspecified, so each new id
        // is matched to its job by (message, recipient). The pipeline makes that pair
        // unique (recipients are deduplicated by address key); a caller that did not would
        // give two jobs one id, so it is refused before anything is written.
        let mut pairs = std::collections::HashSet::with_capacity(chunk.len());
        if !chunk
            .iter()
            .all(|j| pairs.insert((j.gateway_id.as_str(), j.recipient.as_str())))
        {
            return Err(StoreError::Conflict(
                "two relay jobs for one message and recipient",
            ));
        }
        let sql = format!(
            "{} RETURNING id, gateway_id, recipient",
            multi_row_insert(
                "outbound_jobs (gateway_id, mailbox_id, recipient, state, due_at, created_at)",
                chunk.len(),
                6,
            )
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in chunk {
            query = query
                .bind(j.gateway_id.as_str())
                .bind(j.mailbox_id)
                .bind(j.recipient.as_str())
                .bind("queued")
                .bind(j.due_at)
                .bind(j.due_at);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        for j in chunk {
            let id = rows
                .iter()
                .find(|r| {
                    r.try_get::<&str, _>(1).is_ok_and(|g| g == j.gateway_id)
                        && r.try_get::<&str, _>(2).is_ok_and(|r| r == j.recipient)
                })
                .ok_or(StoreError::Conflict(
                    "a relay job's id did not come back from its INSERT",
                ))?
                .try_get::<i64, _>(0)?;
            ids.push((id, j.payload.as_slice()));
        }
    }
    for chunk in body_chunks(&ids, |(_, payload)| payload.len()) {
        let sql = multi_row_insert("outbound_payloads (job_id, payload)", chunk.len(), 2);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, payload) in chunk {
            query = query.bind(*id).bind(*payload);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What a sender sent since a time: messages, recipients addressed, the oldest one's time.
#[derive(Debug, Clone, Copy)]
pub struct SentSince {
    /// Messages.
    pub messages: i64,
    /// Recipients over all of them.
    pub recipients: i64,
    /// When the oldest was sent (unix ms), if any was.
    pub oldest: Option<i64>,
}

/// Messages `sender_key` sent at or after `since`.
pub async fn sent_since(
    conn: &mut AnyConnection,
    sender_key: &str,
    since: i64,
) -> Result<SentSince, StoreError> {
    let row = sqlx::query(
        // PostgreSQL sums BIGINT as NUMERIC, which the Any driver cannot decode.
        "SELECT COUNT(*), CAST(COALESCE(SUM(recipients), 0) AS BIGINT), MIN(created_at) \
         FROM messages WHERE sender_key = $1 AND created_at >= $2",
    )
    .bind(sender_key)
    .bind(since)
    .fetch_one(conn)
    .await?;
    Ok(SentSince {
        messages: row.try_get(0)?,
        recipients: row.try_get(1)?,
        oldest: row.try_get(2)?,
    })
}

/// What the policy reads about a sender for one submission, in one statement: a round trip
/// to SQLite's connection thread is a good part of a small message's cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderReads {
    /// The gateway id of the sender's earlier message with the asked Message-ID, if any.
    pub earlier: Option<String>,
    /// The office mailbox's own hourly message rate, if it has one.
    pub messages_per_hour: Option<i64>,
    /// The office mailbox's own hourly recipient rate, if it has one.
    pub recipients_per_hour: Option<i64>,
}

/// The sender's earlier message with `message_id` (if one is given) and the own rates of
/// `office` (if given), each `None` where there is none (the configured default rates apply).
pub async fn sender_reads(
    conn: &mut AnyConnection,
    sender_key: &str,
    message_id: Option<&str>,
    office: Option<i64>,
) -> Result<SenderReads, StoreError> {
    let row = sqlx::query(SENDER_READS)
        .bind(message_id)
        .bind(sender_key)
        .bind(office)
        .fetch_one(conn)
        .await?;
    sender_reads_from(&row)
}

/// [`sender_reads`] as the policy reads it for every submission: inline on SQLite
/// (`store::inline`).
pub async fn lookup_sender_reads(
    store: &Store,
    sender_key: &str,
    message_id: Option<&str>,
    office: Option<i64>,
) -> Result<SenderReads, StoreError> {
    // Nothing to ask: a citizen's message without a Message-ID.
    if message_id.is_none() && office.is_none() {
        return Ok(SenderReads::default());
    }
    store
        .lookup(
            |c| sender_reads_inline(c, sender_key, message_id, office),
            async |c| sender_reads(c, sender_key, message_id, office).await,
        )
        .await
}

fn sender_reads_inline(
    conn: &rusqlite::Connection,
    sender_key: &str,
    message_id: Option<&str>,
    office: Option<i64>,
) -> Result<SenderReads, StoreError> {
    let found = super::inline::optional_row(
        conn,
        SENDER_READS,
        rusqlite::params![message_id, sender_key, office],
        |r| sender_reads_from(r),
    )?;
    // One row always: each scalar subquery gives a value or NULL.
    Ok(found.unwrap_or_default())
}

// A NULL parameter matches no row: each subquery is then NULL.
const SENDER_READS: &str = "SELECT \
     (SELECT gateway_id FROM messages WHERE message_id = $1 AND sender_key = $2 LIMIT 1) \
     AS earlier, \
     (SELECT messages_per_hour FROM office_rate_limits WHERE mailbox_id = $3) AS messages, \
     (SELECT recipients_per_hour FROM office_rate_limits WHERE mailbox_id = $3) AS recipients";

fn sender_reads_from(r: &impl Columns) -> Result<SenderReads, StoreError> {
    Ok(SenderReads {
        earlier: r.opt_text("earlier")?,
        messages_per_hour: r.opt_int("messages")?,
        recipients_per_hour: r.opt_int("recipients")?,
    })
}

/// The gateway id of the message `sender_key` sent with this RFC 5322 Message-ID, if any.
pub async fn message_with_id(
    conn: &mut AnyConnection,
    sender_key: &str,
    message_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT gateway_id FROM messages WHERE message_id = $1 AND sender_key = $2 LIMIT 1",
    )
    .bind(message_id)
    .bind(sender_key)
    .fetch_optional(conn)
    .await?)
}

const COPY_COLUMNS: &str = "c.id, c.gateway_id, c.mailbox_id, c.folder, c.recipient, c.body, \
     c.created_at, c.opened_at, m.message_id, m.sender, m.sender_key, m.channel, m.auth_level, \
     m.authoritative, m.personal, m.retrieval_confirmation, m.end_to_end, m.size, m.sha256, \
     m.recipients, m.created_at AS submitted_at";

fn flag(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    Ok(row.try_get::<i64, _>(col)? == 1)
}

fn static_str(value: &str, choices: &[&'static str]) -> &'static str {
    choices.iter().find(|c| **c == value).copied().unwrap_or("")
}

fn copy_from_row(row: &AnyRow) -> Result<StoredCopy, StoreError> {
    let folder: String = row.try_get("folder")?;
    let channel: String = row.try_get("channel")?;
    Ok(StoredCopy {
        copy: CopyRow {
            id: row.try_get("id")?,
            gateway_id: row.try_get("gateway_id")?,
            mailbox_id: row.try_get("mailbox_id")?,
            folder: static_str(&folder, &["inbox", "sent"]),
            recipient: row.try_get("recipient")?,
            body: row
                .try_get::<Option<Vec<u8>>, _>("body")?
                .unwrap_or_default(),
            created_at: row.try_get("created_at")?,
        },
        message: MessageRow {
            gateway_id: row.try_get("gateway_id")?,
            message_id: row.try_get("message_id")?,
            sender: row.try_get("sender")?,
            sender_key: row.try_get("sender_key")?,
            channel: static_str(&channel, &["web", "api", "smtp"]),
            auth_level: row.try_get("auth_level")?,
            authoritative: flag(row, "authoritative")?,
            personal: flag(row, "personal")?,
            retrieval_confirmation: flag(row, "retrieval_confirmation")?,
            end_to_end: flag(row, "end_to_end")?,
            size: row.try_get("size")?,
            sha256: row.try_get("sha256")?,
            recipients: row.try_get("recipients")?,
            created_at: row.try_get("submitted_at")?,
        },
        opened_at: row.try_get("opened_at")?,
    })
}

/// One copy by id.
pub async fn copy(conn: &mut AnyConnection, id: &str) -> Result<Option<StoredCopy>, StoreError> {
    let sql = format!(
        "SELECT {COPY_COLUMNS} FROM message_copies c JOIN messages m \
         ON m.gateway_id = c.gateway_id WHERE c.id = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(copy_from_row).transpose()
}

/// The newest copies in one folder of a mailbox, newest first, without their bodies (fetch
/// those one at a time with [`body`]: a folder of large messages must not be in memory at
/// once). `before` is the last copy id of the previous page.
pub async fn list_copies(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    folder: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredCopy>, StoreError> {
    let columns = COPY_COLUMNS.replace("c.body", "NULL AS body");
    let sql = format!(
        "SELECT {columns} FROM message_copies c JOIN messages m \
         ON m.gateway_id = c.gateway_id WHERE c.mailbox_id = $1 AND c.folder = $2 \
         AND ($3 IS NULL OR (c.created_at, c.id) < \
              (SELECT created_at, id FROM message_copies WHERE id = $3)) \
         ORDER BY c.created_at DESC, c.id DESC LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(mailbox_id)
        .bind(folder)
        .bind(before)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(copy_from_row).collect()
}

/// Every copy of one message, without bodies.
pub async fn copies_of(
    conn: &mut AnyConnection,
    gateway_id: &str,
) -> Result<Vec<StoredCopy>, StoreError> {
    let columns = COPY_COLUMNS.replace("c.body", "NULL AS body");
    let sql = format!(
        "SELECT {columns} FROM message_copies c JOIN messages m \
         ON m.gateway_id = c.gateway_id WHERE c.gateway_id = $1 ORDER BY c.id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(gateway_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(copy_from_row).collect()
}

/// The sender address of a message.
pub async fn sender_of(
    conn: &mut AnyConnection,
    gateway_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT sender FROM messages WHERE gateway_id = $1")
            .bind(gateway_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// The encrypted body of one copy.
pub async fn body(conn: &mut AnyConnection, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT body FROM message_copies WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Whether a copy's handover has been recorded.
pub async fn is_opened(conn: &mut AnyConnection, id: &str) -> Result<bool, StoreError> {
    let at: Option<Option<i64>> =
        sqlx::query_scalar("SELECT opened_at FROM message_copies WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(at.flatten().is_some())
}

/// Records the first opening of a copy; false if it was opened before (handover happened).
pub async fn mark_opened(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE message_copies SET opened_at = $1 WHERE id = $2 AND opened_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// A queued relay job, as `bote queue list` and the SMTP worker see it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// Row id.
    pub id: i64,
    /// The message.
    pub gateway_id: String,
    /// The external office.
    pub recipient: String,
    /// The external office's mailbox.
    pub mailbox_id: i64,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
}

/// Relay jobs of one message.
pub async fn jobs_of(
    conn: &mut AnyConnection,
    gateway_id: &str,
) -> Result<Vec<QueuedJob>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, gateway_id, recipient, mailbox_id, state, attempts FROM outbound_jobs \
         WHERE gateway_id = $1 ORDER BY id",
    )
    .bind(gateway_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QueuedJob {
                id: r.try_get(0)?,
                gateway_id: r.try_get(1)?,
                recipient: r.try_get(2)?,
                mailbox_id: r.try_get(3)?,
                state: r.try_get(4)?,
                attempts: r.try_get(5)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(size: usize) -> CopyRow {
        CopyRow {
            id: String::new(),
            gateway_id: String::new(),
            mailbox_id: 1,
            folder: "inbox",
            recipient: String::new(),
            body: vec![0; size],
            created_at: 0,
        }
    }

    #[test]
    fn large_bodies_get_a_statement_each_small_ones_share() {
        let sizes = |copies: &[CopyRow]| -> Vec<usize> {
            body_chunks(copies, |c| c.body.len())
                .iter()
                .map(|c| c.len())
                .collect()
        };
        assert_eq!(
            sizes(&(0..40).map(|_| copy(1000)).collect::<Vec<_>>()),
            [16, 16, 8]
        );
        let big = [copy(45 << 20), copy(45 << 20), copy(10)];
        assert_eq!(sizes(&big), [1, 1, 1]);
        assert!(sizes(&[]).is_empty());
    }
}
