//! Repository for evidence records (the full records live here; the log holds commitments).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::evidence::record::{Event, EvidenceRecord, SignedRecord, StoredEvidence};

/// Columns per evidence row.
const COLUMNS: usize = 11;

/// Stores signed records with their log indexes (same order).
pub async fn insert(
    conn: &mut AnyConnection,
    sealed: &[&SignedRecord],
    indexes: &[u64],
) -> Result<(), StoreError> {
    let rows: Vec<(&SignedRecord, u64)> = sealed
        .iter()
        .copied()
        .zip(indexes.iter().copied())
        .collect();
    for chunk in rows.chunks(super::INSERT_CHUNK) {
        let sql = super::multi_row_insert(
            "evidence (evidence_id, log_index, event, reason, event_time, gateway_message_id, \
             message_id, sender_key, recipient_key, record, signature)",
            chunk.len(),
            COLUMNS,
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (s, index) in chunk {
            let r = &s.record;
            query = query
                .bind(r.evidence_id.to_string())
                .bind(i64::try_from(*index).unwrap_or(i64::MAX))
                .bind(r.event.as_str())
                .bind(r.reason.as_str())
                .bind(r.time.0)
                .bind(r.message.gateway_id.clone())
                .bind(r.message.message_id.clone())
                .bind(r.sender.address.key())
                .bind(r.recipient.key())
                .bind(s.canonical.clone())
                .bind(s.signature.clone());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

fn from_row(row: &AnyRow) -> Result<StoredEvidence, StoreError> {
    let canonical: Vec<u8> = row.try_get("record")?;
    let record = EvidenceRecord::from_canonical(&canonical).map_err(|e| {
        StoreError::Query(sqlx::Error::Decode(
            format!("stored evidence record is invalid: {e}").into(),
        ))
    })?;
    let index: i64 = row.try_get("log_index")?;
    Ok(StoredEvidence {
        record,
        canonical,
        signature: row.try_get("signature")?,
        log_index: u64::try_from(index).unwrap_or_default(),
    })
}

/// What to look for; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Gateway message id or RFC 5322 Message-ID.
    pub message: Option<String>,
    /// Sender address key (lower-case).
    pub sender: Option<String>,
    /// Recipient address key (lower-case).
    pub recipient: Option<String>,
    /// Event time at or after (unix ms).
    pub from: Option<i64>,
    /// Event time before (unix ms).
    pub until: Option<i64>,
    /// Only records after the one at this log index, in the order below (a page cursor).
    pub after: Option<i64>,
    /// Most rows returned.
    pub limit: i64,
    /// Only records whose sender or recipient is in this legal user's scope
    /// (`legal_scopes`); `None`: no limit.
    pub scope_user: Option<i64>,
}

/// Records matching `filter`, oldest first (ties in log order).
///
/// Only the conditions of the filters given are in the statement: a generic
/// `($1 IS NULL OR col = $1)` keeps SQLite (and PostgreSQL's generic plans) from using the
/// indexes, and a message's timeline then scans every record (175 ms at 200,000 records).
pub async fn search(
    conn: &mut AnyConnection,
    filter: &Filter,
) -> Result<Vec<StoredEvidence>, StoreError> {
    enum Value {
        Text(String),
        Int(i64),
    }
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let param = |v: Value, values: &mut Vec<Value>| {
        values.push(v);
        format!("${}", values.len())
    };
    if let Some(m) = &filter.message {
        let p = param(Value::Text(m.clone()), &mut values);
        clauses.push(format!("(gateway_message_id = {p} OR message_id = {p})"));
    }
    // With a message named, its index finds the few records; SQLite (no statistics) would
    // rather walk a sender's or recipient's index in time order and filter, which reads
    // every record of a busy mailbox (50 ms at 200,000). `|| ''` keeps those indexes out.
    let unindexed = if filter.message.is_some() {
        " || ''"
    } else {
        ""
    };
    if let Some(s) = &filter.sender {
        let p = param(Value::Text(s.clone()), &mut values);
        clauses.push(format!("sender_key{unindexed} = {p}"));
    }
    if let Some(r) = &filter.recipient {
        let p = param(Value::Text(r.clone()), &mut values);
        clauses.push(format!("recipient_key{unindexed} = {p}"));
    }
    if let Some(from) = filter.from {
        let p = param(Value::Int(from), &mut values);
        clauses.push(format!("event_time >= {p}"));
    }
    if let Some(until) = filter.until {
        let p = param(Value::Int(until), &mut values);
        clauses.push(format!("event_time < {p}"));
    }
    if let Some(after) = filter.after {
        let p = param(Value::Int(after), &mut values);
        clauses.push(format!(
            "(event_time, log_index) > \
             (SELECT event_time, log_index FROM evidence WHERE log_index = {p})"
        ));
    }
    if let Some(user) = filter.scope_user {
        let p = param(Value::Int(user), &mut values);
        clauses.push(format!(
            "(sender_key IN (SELECT mailbox_key FROM legal_scopes WHERE user_id = {p}) \
              OR recipient_key IN (SELECT mailbox_key FROM legal_scopes WHERE user_id = {p}))"
        ));
    }
    let limit = param(Value::Int(filter.limit), &mut values);
    let condition = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    // Every fragment above is a constant of this function; values travel as parameters.
    let sql = format!(
        "SELECT record, signature, log_index FROM evidence {condition} \
         ORDER BY event_time, log_index LIMIT {limit}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in values {
        query = match v {
            Value::Text(t) => query.bind(t),
            Value::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

/// Every record stored, in log order, after `after_index`, each with the log entry at its
/// index (if any): for full audits.
pub async fn page_with_entries(
    conn: &mut AnyConnection,
    after_index: i64,
    limit: i64,
) -> Result<Vec<(StoredEvidence, Option<Vec<u8>>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.record, e.signature, e.log_index, l.entry FROM evidence e \
         LEFT JOIN log_entries l ON l.idx = e.log_index \
         WHERE e.log_index > $1 ORDER BY e.log_index LIMIT $2",
    )
    .bind(after_index)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((from_row(r)?, r.try_get("entry")?)))
        .collect()
}

/// The records of these (gateway id, recipient address key) pairs, oldest first (ties in
/// log order), in one query: the relay worker continues a chain per claimed job.
pub async fn of_pairs(
    conn: &mut AnyConnection,
    pairs: &[(String, String)],
) -> Result<Vec<StoredEvidence>, StoreError> {
    let mut out = Vec::new();
    for chunk in pairs.chunks(100) {
        let n = chunk.len();
        // Messages by their index, recipients filtered: the cross product of the two lists
        // may hold records of pairs not asked for, which are dropped below.
        let sql = format!(
            "SELECT record, signature, log_index FROM evidence \
             WHERE gateway_message_id IN ({}) AND recipient_key || '' IN ({}) \
             ORDER BY event_time, log_index",
            super::placeholders(1, n),
            super::placeholders(n + 1, n)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (gateway_id, _) in chunk {
            query = query.bind(gateway_id.as_str());
        }
        for (_, recipient) in chunk {
            query = query.bind(recipient.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let found = from_row(&row)?;
            let asked = chunk.iter().any(|(g, r)| {
                *g == found.record.message.gateway_id && *r == found.record.recipient.key()
            });
            if asked {
                out.push(found);
            }
        }
    }
    Ok(out)
}

/// The log index of the last record of the chain of (`gateway_id`, recipient address key
/// `recipient`), if it has one.
pub async fn chain_head(
    conn: &mut AnyConnection,
    gateway_id: &str,
    recipient: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT MAX(log_index) FROM evidence \
         WHERE gateway_message_id = $1 AND recipient_key = $2",
    )
    .bind(gateway_id)
    .bind(recipient)
    .fetch_one(conn)
    .await?)
}

/// The latest event per (message, recipient) of these messages, in message order then
/// recipient order: (gateway id, recipient address key, event).
pub async fn latest_events(
    conn: &mut AnyConnection,
    gateway_ids: &[String],
) -> Result<Vec<(String, String, Event)>, StoreError> {
    let mut latest: Vec<(String, String, Event)> = Vec::new();
    let mut at: std::collections::HashMap<(String, String), usize> = Default::default();
    for chunk in gateway_ids.chunks(200) {
        let sql = format!(
            "SELECT gateway_message_id, recipient_key, event FROM evidence \
             WHERE gateway_message_id IN ({}) ORDER BY log_index",
            super::placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let gid: String = row.try_get(0)?;
            let recipient: String = row.try_get(1)?;
            let event: String = row.try_get(2)?;
            let event: Event = event
                .parse()
                .map_err(|e: String| StoreError::Query(sqlx::Error::Decode(e.into())))?;
            match at.get(&(gid.clone(), recipient.clone())) {
                Some(i) => latest[*i].2 = event,
                None => {
                    at.insert((gid.clone(), recipient.clone()), latest.len());
                    latest.push((gid, recipient, event));
                }
            }
        }
    }
    Ok(latest)
}
