//! Repository for the zero-access key material (see `crate::vault`).

use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::vault::{MailboxKeyRow, UserKeyRow};

/// Who holds a wrap of a mailbox data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A member (users.id).
    User(i64),
    /// The mailbox recovery code.
    Recovery,
    /// A read token (credentials.id).
    Token(i64),
}

impl Holder {
    fn parts(self) -> (&'static str, i64) {
        match self {
            Self::User(id) => ("user", id),
            Self::Recovery => ("recovery", 0),
            Self::Token(id) => ("token", id),
        }
    }
}

/// Stores (or replaces) a user's key.
pub async fn put_user_key(
    conn: &mut AnyConnection,
    user_id: i64,
    row: &UserKeyRow,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM user_keys WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO user_keys (user_id, cert, fingerprint, password_salt, secret_by_password, \
         secret_by_recovery, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(user_id)
    .bind(row.cert.clone())
    .bind(row.fingerprint.clone())
    .bind(row.password_salt.clone())
    .bind(row.secret_by_password.clone())
    .bind(row.secret_by_recovery.clone())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A user's key material.
pub async fn user_key(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<UserKeyRow>, StoreError> {
    let row = sqlx::query(
        "SELECT cert, fingerprint, password_salt, secret_by_password, secret_by_recovery \
         FROM user_keys WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(UserKeyRow {
            cert: r.try_get(0)?,
            fingerprint: r.try_get(1)?,
            password_salt: r.try_get(2)?,
            secret_by_password: r.try_get(3)?,
            secret_by_recovery: r.try_get(4)?,
        })
    })
    .transpose()
}

/// Stores (or replaces) a mailbox's key.
pub async fn put_mailbox_key(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    row: &MailboxKeyRow,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mailbox_keys WHERE mailbox_id = $1")
        .bind(mailbox_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO mailbox_keys (mailbox_id, cert, fingerprint, sealed_secret, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(mailbox_id)
    .bind(row.cert.clone())
    .bind(row.fingerprint.clone())
    .bind(row.sealed_secret.clone())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A mailbox's key material.
pub async fn mailbox_key(
    conn: &mut AnyConnection,
    mailbox_id: i64,
) -> Result<Option<MailboxKeyRow>, StoreError> {
    let row = sqlx::query(
        "SELECT cert, fingerprint, sealed_secret FROM mailbox_keys WHERE mailbox_id = $1",
    )
    .bind(mailbox_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(MailboxKeyRow {
            cert: r.try_get(0)?,
            fingerprint: r.try_get(1)?,
            sealed_secret: r.try_get(2)?,
        })
    })
    .transpose()
}

/// Stores (or replaces) one holder's wrap of a mailbox data key.
pub async fn put_wrap(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    holder: Holder,
    wrapped: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    let (kind, id) = holder.parts();
    sqlx::query(
        "DELETE FROM key_wraps WHERE mailbox_id = $1 AND holder_kind = $2 AND holder_id = $3",
    )
    .bind(mailbox_id)
    .bind(kind)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO key_wraps (mailbox_id, holder_kind, holder_id, wrapped, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(mailbox_id)
    .bind(kind)
    .bind(id)
    .bind(wrapped.to_vec())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// One holder's wrap of a mailbox data key.
pub async fn wrap(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    holder: Holder,
) -> Result<Option<Vec<u8>>, StoreError> {
    let (kind, id) = holder.parts();
    Ok(sqlx::query_scalar(
        "SELECT wrapped FROM key_wraps WHERE mailbox_id = $1 AND holder_kind = $2 AND holder_id = $3",
    )
    .bind(mailbox_id)
    .bind(kind)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// When user `user_id`'s current key was made (unix ms).
pub async fn user_key_made_at(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT created_at FROM user_keys WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Every mailbox data key wrapped for user `user_id`: (mailbox id, wrap).
pub async fn user_wraps(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT mailbox_id, wrapped FROM key_wraps WHERE holder_kind = 'user' AND holder_id = $1",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Removes every wrap held by a user (their key was replaced: the wraps can never open).
pub async fn drop_user_wraps(conn: &mut AnyConnection, user_id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM key_wraps WHERE holder_kind = 'user' AND holder_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A mailbox's published certificate: its own key, or an external office's registered one.
#[derive(Debug, Clone)]
pub struct Published {
    /// The canonical address.
    pub address: String,
    /// `citizen`, `office` or `external`.
    pub kind: String,
    /// The certificate (binary).
    pub cert: Vec<u8>,
    /// Whether unauthenticated lookups (directory, WKD) may show it.
    pub public: bool,
}

const PUBLISHED: &str = "SELECT m.address, m.kind, m.published, COALESCE(k.cert, m.cert) AS cert \
     FROM mailboxes m LEFT JOIN mailbox_keys k ON k.mailbox_id = m.id WHERE m.disabled = 0 AND ";

fn published(row: &sqlx::any::AnyRow) -> Result<Option<Published>, StoreError> {
    let cert: Option<Vec<u8>> = row.try_get("cert")?;
    let public = row.try_get::<i64, _>("published")? == 1;
    Ok(cert.map(|cert| Published {
        address: row.try_get("address").unwrap_or_default(),
        kind: row.try_get("kind").unwrap_or_default(),
        cert,
        public,
    }))
}

/// The published certificate of one address (case-insensitive).
pub async fn published_by_address(
    conn: &mut AnyConnection,
    address_key: &str,
) -> Result<Option<Published>, StoreError> {
    let sql = format!("{PUBLISHED}m.address_key = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(address_key)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(published).transpose()?.flatten())
}

/// The published certificates whose address has this WKD hash, in `domain`.
pub async fn published_by_wkd(
    conn: &mut AnyConnection,
    domain: &str,
    hash: &str,
) -> Result<Vec<Published>, StoreError> {
    let sql = format!("{PUBLISHED}m.wkd_hash = $1 ORDER BY m.address_key");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hash)
        .fetch_all(conn)
        .await?;
    let suffix = format!("@{}", domain.to_ascii_lowercase());
    Ok(rows
        .iter()
        .map(published)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter(|p| p.address.to_ascii_lowercase().ends_with(&suffix))
        .collect())
}
