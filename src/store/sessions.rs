//! Repository for login sessions and TOTP second factors.

use sqlx::{AnyConnection, Row};

use super::StoreError;

/// A stored session (the token itself is never stored, only its SHA-256).
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// SHA-256 of the bearer token.
    pub token_hash: [u8; 32],
    /// The user.
    pub user_id: i64,
    /// `normal` or `high`.
    pub auth_level: String,
    /// The user key, sealed under a key derived from the token.
    pub sealed_user_key: Vec<u8>,
    /// Created.
    pub created_at: i64,
    /// Expires.
    pub expires_at: i64,
    /// The user's credentials version its password was checked under: the session ends
    /// with the next password change.
    pub credentials_version: i64,
}

/// Stores a session.
pub async fn insert(conn: &mut AnyConnection, s: &SessionRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, auth_level, sealed_user_key, created_at, \
         expires_at, credentials_version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(s.token_hash.to_vec())
    .bind(s.user_id)
    .bind(s.auth_level.clone())
    .bind(s.sealed_user_key.clone())
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(s.credentials_version)
    .execute(conn)
    .await?;
    Ok(())
}

/// The unexpired session with this token hash.
pub async fn find(
    conn: &mut AnyConnection,
    token_hash: &[u8; 32],
    now: i64,
) -> Result<Option<SessionRow>, StoreError> {
    let row = sqlx::query(
        "SELECT s.user_id, s.auth_level, s.sealed_user_key, s.created_at, s.expires_at, \
         s.credentials_version FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 \
         AND s.credentials_version = u.credentials_version",
    )
    .bind(token_hash.to_vec())
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(SessionRow {
            token_hash: *token_hash,
            user_id: r.try_get(0)?,
            auth_level: r.try_get(1)?,
            sealed_user_key: r.try_get(2)?,
            created_at: r.try_get(3)?,
            expires_at: r.try_get(4)?,
            credentials_version: r.try_get(5)?,
        })
    })
    .transpose()
}

/// Raises a session to level `high` (after a second factor).
pub async fn set_high(conn: &mut AnyConnection, token_hash: &[u8; 32]) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET auth_level = 'high' WHERE token_hash = $1")
        .bind(token_hash.to_vec())
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends a session.
pub async fn delete(conn: &mut AnyConnection, token_hash: &[u8; 32]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash.to_vec())
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the sessions that can no longer open: expired at `now`, or opened under a
/// password the user has changed since. Returns how many.
pub async fn purge(conn: &mut AnyConnection, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM sessions WHERE expires_at <= $1 OR credentials_version <> \
         (SELECT u.credentials_version FROM users u WHERE u.id = sessions.user_id)",
    )
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Ends every session of a user (password change, disabling).
pub async fn delete_for_user(conn: &mut AnyConnection, user_id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A user's TOTP factor: (secret, confirmed, last used time step).
pub async fn totp(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<(Vec<u8>, bool, Option<i64>)>, StoreError> {
    let row = sqlx::query(
        "SELECT secret, confirmed, last_used_step FROM auth_factors \
         WHERE user_id = $1 AND kind = 'totp'",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? == 1, r.try_get(2)?)))
        .transpose()
}

/// Sets (replaces) a user's TOTP secret.
pub async fn put_totp(
    conn: &mut AnyConnection,
    user_id: i64,
    secret: &[u8],
    confirmed: bool,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM auth_factors WHERE user_id = $1 AND kind = 'totp'")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO auth_factors (user_id, kind, secret, confirmed, created_at) \
         VALUES ($1, 'totp', $2, $3, $4)",
    )
    .bind(user_id)
    .bind(secret.to_vec())
    .bind(i64::from(confirmed))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a used time step (and confirms the factor); false if that step or a later one
/// was used already (a replayed code).
pub async fn use_totp_step(
    conn: &mut AnyConnection,
    user_id: i64,
    step: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE auth_factors SET last_used_step = $1, confirmed = 1 WHERE user_id = $2 \
         AND kind = 'totp' AND (last_used_step IS NULL OR last_used_step < $1)",
    )
    .bind(step)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
