//! The audit trail: who did what to which account, when. Append-only by convention: no
//! code path updates or deletes rows here.

use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::accounts::Actor;

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (unix ms).
    pub at: i64,
    /// Who (`operator:NAME`, `user:EMAIL`, `system`).
    pub actor: String,
    /// What, as a dotted verb (`user.add`, `mailbox.add-member`, …).
    pub action: String,
    /// On what (an address).
    pub target: String,
    /// Extra facts as a JSON object; never secrets.
    pub details: serde_json::Value,
}

/// Appends an entry (inside the caller's transaction, so it lands with the change).
pub async fn record(
    conn: &mut AnyConnection,
    actor: &Actor,
    action: &str,
    target: &str,
    details: serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now)
    .bind(actor.to_string())
    .bind(action)
    .bind(target)
    .bind(details.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// The entries about one target, oldest first (all entries when `target` is `None`).
pub async fn entries(
    conn: &mut AnyConnection,
    target: Option<&str>,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT at, actor, action, target, details FROM audit_log \
         WHERE $1 IS NULL OR target = $1 ORDER BY id",
    )
    .bind(target)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let details: String = r.try_get("details")?;
            Ok(AuditEntry {
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}
