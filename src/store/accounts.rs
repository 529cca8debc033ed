//! Repository for users, identities, mailboxes and memberships.
//!
//! Rows are parsed into the domain types of [`crate::accounts`] here, so a value that the
//! schema's CHECK constraints should have kept out surfaces as a [`StoreError`] instead of
//! travelling further.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::columns::Columns;
use super::{Store, StoreError};
use crate::accounts::{
    Identity, IdentityMethod, Mailbox, MailboxKind, Membership, MembershipState, Relay, RelayTls,
    Role, User, Verification,
};
use crate::address::EmailAddress;

/// A user row to insert.
#[derive(Debug)]
pub struct NewUser<'a> {
    /// Login.
    pub email: &'a EmailAddress,
    /// Display name.
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// PHC string.
    pub password_hash: &'a str,
    /// Notice address.
    pub notify_email: Option<&'a EmailAddress>,
    /// Creation time.
    pub now: i64,
}

/// A mailbox row to insert.
#[derive(Debug)]
pub struct NewMailbox<'a> {
    /// Address.
    pub address: &'a EmailAddress,
    /// Kind.
    pub kind: MailboxKind,
    /// Display name.
    pub name: &'a str,
    /// Owner (citizen mailboxes).
    pub owner_user_id: Option<i64>,
    /// Identity record to attach (a citizen's mailbox shares the owner's).
    pub identity_id: i64,
    /// Relay (external offices).
    pub relay: Option<&'a Relay>,
    /// Creation time.
    pub now: i64,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Query(sqlx::Error::Decode(
        format!("stored {what} is invalid: {detail}").into(),
    ))
}

fn parse_col<T: std::str::FromStr>(row: &impl Columns, col: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    row.text(col)?.parse().map_err(|e| corrupt(col, e))
}

fn parse_opt_address(row: &AnyRow, col: &str) -> Result<Option<EmailAddress>, StoreError> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| EmailAddress::parse(&t).map_err(|e| corrupt(col, e)))
        .transpose()
}

/// Creates an unverified identity record.
pub async fn insert_identity(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("INSERT INTO identities (verified) VALUES (0) RETURNING id")
            .fetch_one(conn)
            .await?,
    )
}

/// Marks an identity verified.
pub async fn verify_identity(
    conn: &mut AnyConnection,
    identity_id: i64,
    v: &Verification,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE identities SET verified = 1, method = $1, verified_by = $2, verified_at = $3 \
         WHERE id = $4",
    )
    .bind(v.method.as_str())
    .bind(&v.verified_by)
    .bind(v.verified_at)
    .bind(identity_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a user with a fresh identity; returns (user id, identity id).
pub async fn insert_user(
    conn: &mut AnyConnection,
    u: &NewUser<'_>,
) -> Result<(i64, i64), StoreError> {
    let identity_id = insert_identity(conn).await?;
    let id = sqlx::query_scalar(
        "INSERT INTO users (email, email_key, display_name, role, password_hash, notify_email, \
         identity_id, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) RETURNING id",
    )
    .bind(u.email.to_string())
    .bind(u.email.key())
    .bind(u.name)
    .bind(u.role.as_str())
    .bind(u.password_hash)
    .bind(u.notify_email.map(ToString::to_string))
    .bind(identity_id)
    .bind(u.now)
    .fetch_one(conn)
    .await?;
    Ok((id, identity_id))
}

const USER_COLUMNS: &str = "u.id, u.email, u.display_name, u.role, u.notify_email, u.disabled, \
     u.created_at, u.identity_id, u.key_origin, i.verified, i.method, i.verified_by, \
     i.verified_at";

fn identity_from_row(row: &impl Columns) -> Result<Identity, StoreError> {
    let verification = if row.int("verified")? == 1 {
        Some(Verification {
            method: parse_col::<IdentityMethod>(row, "method")?,
            verified_by: row.text("verified_by")?,
            verified_at: row.int("verified_at")?,
        })
    } else {
        None
    };
    Ok(Identity { verification })
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        email: parse_col(row, "email")?,
        name: row.try_get("display_name")?,
        role: parse_col(row, "role")?,
        notify_email: parse_opt_address(row, "notify_email")?,
        identity: identity_from_row(row)?,
        disabled: row.try_get::<i64, _>("disabled")? == 1,
        created_at: row.try_get("created_at")?,
        own_key: row.try_get::<String, _>("key_origin")? == "user",
    })
}

/// A user and the id of their identity record, by login (case-insensitive).
pub async fn find_user(
    conn: &mut AnyConnection,
    email: &EmailAddress,
) -> Result<Option<(User, i64)>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN identities i ON i.id = u.identity_id \
         WHERE u.email_key = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(email.key())
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((user_from_row(&r)?, r.try_get("identity_id")?)))
        .transpose()
}

/// The stored password hash of an enabled user, for login.
pub async fn password_hash(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT password_hash, credentials_version FROM users WHERE id = $1 AND disabled = 0",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}

/// All users, ordered by login.
pub async fn list_users(conn: &mut AnyConnection) -> Result<Vec<User>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN identities i ON i.id = u.identity_id \
         ORDER BY u.email_key"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?;
    rows.iter().map(user_from_row).collect()
}

/// Sets or clears the disabled flag.
pub async fn set_user_disabled(
    conn: &mut AnyConnection,
    user_id: i64,
    disabled: bool,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
        .bind(i64::from(disabled))
        .bind(now)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces the password hash.
pub async fn set_password_hash(
    conn: &mut AnyConnection,
    user_id: i64,
    phc: &str,
    now: i64,
    expected_version: i64,
) -> Result<(), StoreError> {
    // A new credentials version ends every session opened under the old password, also
    // one whose login is still under way (migration 0013). The change applies only to the
    // version its caller read before its (slow) key work: two changes at once, in one
    // process or two, must not both write, the later one undoing the earlier one's key.
    let done = sqlx::query(
        "UPDATE users SET password_hash = $1, updated_at = $2, \
         credentials_version = credentials_version + 1 \
         WHERE id = $3 AND credentials_version = $4",
    )
    .bind(phc)
    .bind(now)
    .bind(user_id)
    .bind(expected_version)
    .execute(conn)
    .await?;
    super::one_row(&done, "the password was changed meanwhile: try again")
}

/// A user's credentials version (raised by every password change), disabled or not.
pub async fn credentials_version(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT credentials_version FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Takes the lock of user `user_id`'s row for the rest of the transaction (a write that
/// changes nothing): what changes a user's key takes it first, so a grant wrapped to
/// that key and the key's replacement do not interleave (PostgreSQL reads each statement
/// at the latest commit; SQLite's writers are serial anyway).
pub async fn lock_user(conn: &mut AnyConnection, user_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET credentials_version = credentials_version WHERE id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a mailbox; returns its id.
pub async fn insert_mailbox(
    conn: &mut AnyConnection,
    m: &NewMailbox<'_>,
) -> Result<i64, StoreError> {
    let relay = m.relay;
    Ok(sqlx::query_scalar(
        "INSERT INTO mailboxes (address, address_key, kind, display_name, owner_user_id, \
         identity_id, relay_host, relay_port, relay_tls, cert, cert_fingerprint, disabled, \
         created_at, wkd_hash, published) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14) RETURNING id",
    )
    .bind(m.address.to_string())
    .bind(m.address.key())
    .bind(m.kind.as_str())
    .bind(m.name)
    .bind(m.owner_user_id)
    .bind(m.identity_id)
    .bind(relay.map(|r| r.host.clone()))
    .bind(relay.map(|r| i64::from(r.port)))
    .bind(relay.map(|r| r.tls.as_str()))
    .bind(relay.map(|r| r.cert.clone()))
    .bind(relay.map(|r| r.cert_fingerprint.clone()))
    .bind(m.now)
    .bind(m.address.wkd_hash())
    // Offices are public bodies: listed. A citizen's key is listed only if they choose.
    .bind(i64::from(m.kind != MailboxKind::Citizen))
    .fetch_one(conn)
    .await?)
}

/// Whether the unauthenticated directory and WKD show a mailbox's certificate.
pub async fn set_published(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    published: bool,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE mailboxes SET published = $1 WHERE id = $2")
        .bind(i64::from(published))
        .bind(mailbox_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) const MAILBOX_COLUMNS: &str = "m.id, m.address, m.kind, m.display_name, m.owner_user_id, \
     m.identity_id, m.relay_host, m.relay_port, m.relay_tls, m.cert, m.cert_fingerprint, \
     m.disabled, m.created_at, i.verified, i.method, i.verified_by, i.verified_at";

pub(super) fn mailbox_from_row(row: &impl Columns) -> Result<Mailbox, StoreError> {
    let kind: MailboxKind = parse_col(row, "kind")?;
    let relay = if kind == MailboxKind::External {
        let port = row.int("relay_port")?;
        Some(Relay {
            host: row.text("relay_host")?,
            port: u16::try_from(port).map_err(|e| corrupt("relay_port", e))?,
            tls: parse_col::<RelayTls>(row, "relay_tls")?,
            cert: row.blob("cert")?,
            cert_fingerprint: row.text("cert_fingerprint")?,
        })
    } else {
        None
    };
    Ok(Mailbox {
        id: row.int("id")?,
        address: parse_col(row, "address")?,
        kind,
        name: row.text("display_name")?,
        owner_user_id: row.opt_int("owner_user_id")?,
        identity: identity_from_row(row)?,
        relay,
        disabled: row.int("disabled")? == 1,
        created_at: row.int("created_at")?,
    })
}

/// A mailbox and the id of its identity record, by address (case-insensitive).
pub async fn find_mailbox(
    conn: &mut AnyConnection,
    address: &EmailAddress,
) -> Result<Option<(Mailbox, i64)>, StoreError> {
    let sql = format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes m JOIN identities i ON i.id = m.identity_id \
         WHERE m.address_key = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(address.key())
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((mailbox_from_row(&r)?, r.try_get("identity_id")?)))
        .transpose()
}

/// A mailbox and its own key's certificate (none for external offices, whose registered
/// certificate is in the mailbox row).
pub type MailboxWithKeyCert = (Mailbox, Option<Vec<u8>>);

/// A mailbox by address with its own key's certificate: one query for a submission's
/// recipient.
pub async fn find_mailbox_with_key_cert(
    conn: &mut AnyConnection,
    address: &EmailAddress,
) -> Result<Option<MailboxWithKeyCert>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(mailbox_with_key_cert_sql()))
        .bind(address.key())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(mailbox_with_key_cert).transpose()
}

/// [`find_mailbox_with_key_cert`] as every RCPT TO and submission reads it: inline on
/// SQLite (`store::inline`).
pub async fn lookup_recipient(
    store: &Store,
    address: &EmailAddress,
) -> Result<Option<MailboxWithKeyCert>, StoreError> {
    store
        .lookup(
            |c| mailbox_with_key_cert_inline(c, address),
            async |c| find_mailbox_with_key_cert(c, address).await,
        )
        .await
}

fn mailbox_with_key_cert_inline(
    conn: &rusqlite::Connection,
    address: &EmailAddress,
) -> Result<Option<MailboxWithKeyCert>, StoreError> {
    super::inline::optional_row(conn, &mailbox_with_key_cert_sql(), [address.key()], |r| {
        mailbox_with_key_cert(r)
    })
}

fn mailbox_with_key_cert_sql() -> String {
    format!(
        "SELECT {MAILBOX_COLUMNS}, k.cert AS key_cert FROM mailboxes m \
         JOIN identities i ON i.id = m.identity_id \
         LEFT JOIN mailbox_keys k ON k.mailbox_id = m.id WHERE m.address_key = $1"
    )
}

fn mailbox_with_key_cert(r: &impl Columns) -> Result<MailboxWithKeyCert, StoreError> {
    Ok((mailbox_from_row(r)?, r.opt_blob("key_cert")?))
}

/// All mailboxes, ordered by address.
pub async fn list_mailboxes(conn: &mut AnyConnection) -> Result<Vec<Mailbox>, StoreError> {
    let sql = format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes m JOIN identities i ON i.id = m.identity_id \
         ORDER BY m.address_key"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?;
    rows.iter().map(mailbox_from_row).collect()
}

/// Records a membership.
pub async fn insert_membership(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
    state: MembershipState,
    granted_by: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO memberships (mailbox_id, user_id, state, granted_by, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(mailbox_id)
    .bind(user_id)
    .bind(state.as_str())
    .bind(granted_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A user's membership state in a mailbox, if any.
pub async fn membership_state(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
) -> Result<Option<MembershipState>, StoreError> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM memberships WHERE mailbox_id = $1 AND user_id = $2")
            .bind(mailbox_id)
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    state
        .map(|s| s.parse().map_err(|e| corrupt("membership state", e)))
        .transpose()
}

/// Sets one membership's state.
pub async fn set_membership_state(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
    state: MembershipState,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE memberships SET state = $1 WHERE mailbox_id = $2 AND user_id = $3")
        .bind(state.as_str())
        .bind(mailbox_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts every membership of a user back to pending (their key was replaced).
pub async fn reset_memberships(conn: &mut AnyConnection, user_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE memberships SET state = 'pending' WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The members of a mailbox.
pub async fn list_members(
    conn: &mut AnyConnection,
    mailbox_id: i64,
) -> Result<Vec<Membership>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.address, u.email, ms.state FROM memberships ms \
         JOIN mailboxes m ON m.id = ms.mailbox_id JOIN users u ON u.id = ms.user_id \
         WHERE ms.mailbox_id = $1 ORDER BY u.email_key",
    )
    .bind(mailbox_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Membership {
                mailbox: parse_col(r, "address")?,
                user: parse_col(r, "email")?,
                state: parse_col(r, "state")?,
            })
        })
        .collect()
}

/// A credential row to insert (the token itself is never stored, only its SHA-256).
#[derive(Debug)]
pub struct NewCredential<'a> {
    /// The mailbox it is bound to.
    pub mailbox_id: i64,
    /// `send` or `read`.
    pub scope: &'a str,
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// SHA-256 of the DER client certificate it must come with, hex.
    pub client_cert_sha256: Option<String>,
    /// Audit actor.
    pub created_by: &'a str,
    /// The user whose session created it (read tokens), if any.
    pub creator_user_id: Option<i64>,
    /// Creation time.
    pub now: i64,
}

/// Inserts a credential; returns its id.
pub async fn insert_credential(
    conn: &mut AnyConnection,
    c: &NewCredential<'_>,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO credentials (mailbox_id, scope, token_hash, client_cert_sha256, created_by, \
         creator_user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(c.mailbox_id)
    .bind(c.scope)
    .bind(c.token_hash.to_vec())
    .bind(c.client_cert_sha256.clone())
    .bind(c.created_by)
    .bind(c.creator_user_id)
    .bind(c.now)
    .fetch_one(conn)
    .await?)
}

/// A user by row id.
pub async fn user_by_id(conn: &mut AnyConnection, id: i64) -> Result<Option<User>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN identities i ON i.id = u.identity_id \
         WHERE u.id = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// A mailbox by row id.
pub async fn mailbox_by_id(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<Mailbox>, StoreError> {
    let sql = format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes m JOIN identities i ON i.id = m.identity_id \
         WHERE m.id = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(mailbox_from_row).transpose()
}

/// The mailboxes a user can open: their own citizen mailbox and their active memberships.
pub async fn mailboxes_of_user(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Vec<Mailbox>, StoreError> {
    let sql = format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes m JOIN identities i ON i.id = m.identity_id \
         WHERE m.disabled = 0 AND (m.owner_user_id = $1 OR m.id IN \
         (SELECT mailbox_id FROM memberships WHERE user_id = $1 AND state = 'active')) \
         ORDER BY m.address_key"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(mailbox_from_row).collect()
}

/// Records who could know the secrets that open a user's key: `operator` after an
/// operator's command made or reset them, `user` once the user made their own key.
pub async fn set_key_origin(
    conn: &mut AnyConnection,
    user_id: i64,
    origin: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET key_origin = $1 WHERE id = $2")
        .bind(origin)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A pending membership that an active member of its mailbox may confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingGrant {
    /// The mailbox's row id.
    pub mailbox_id: i64,
    /// The mailbox.
    pub mailbox: String,
    /// The waiting user's row id.
    pub user_id: i64,
    /// The waiting user.
    pub user: String,
    /// Their display name.
    pub name: String,
    /// Their user key's fingerprint: what the confirming member compares with them.
    pub fingerprint: String,
    /// Who asked for the membership (the operator's command).
    pub requested_by: String,
    /// When (unix ms).
    pub requested_at: i64,
}

/// Pending members (enabled, with a key they made themselves) of the mailboxes in which
/// `user_id` is active, by mailbox and user: a key an operator's command made is one the
/// operator could open, and giving it an office's key would give the operator the office.
pub async fn pending_grants_for(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Vec<PendingGrant>, StoreError> {
    let rows = sqlx::query(
        "SELECT p.mailbox_id, mb.address, p.user_id, u.email, u.display_name, k.fingerprint, \
         p.granted_by, p.created_at FROM memberships p JOIN memberships a \
         ON a.mailbox_id = p.mailbox_id JOIN mailboxes mb ON mb.id = p.mailbox_id \
         JOIN users u ON u.id = p.user_id JOIN user_keys k ON k.user_id = p.user_id \
         WHERE a.user_id = $1 AND a.state = 'active' AND p.state = 'pending' \
         AND u.disabled = 0 AND u.key_origin = 'user' ORDER BY mb.address_key, u.email_key",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingGrant {
                mailbox_id: r.try_get(0)?,
                mailbox: r.try_get(1)?,
                user_id: r.try_get(2)?,
                user: r.try_get(3)?,
                name: r.try_get(4)?,
                fingerprint: r.try_get(5)?,
                requested_by: r.try_get(6)?,
                requested_at: r.try_get(7)?,
            })
        })
        .collect()
}

/// Makes a pending membership active, if the user's key is still the one with
/// `fingerprint` and still their own; false if not, or if it is no longer pending.
pub async fn activate_pending(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
    fingerprint: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE memberships SET state = 'active' \
         WHERE mailbox_id = $1 AND user_id = $2 AND state = 'pending' \
         AND EXISTS (SELECT 1 FROM user_keys k JOIN users u ON u.id = k.user_id \
           WHERE k.user_id = $2 AND k.fingerprint = $3 AND u.key_origin = 'user')",
    )
    .bind(mailbox_id)
    .bind(user_id)
    .bind(fingerprint)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A live credential found by the SHA-256 of its token, with its mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCredential {
    /// Row id.
    pub id: i64,
    /// The mailbox it is bound to.
    pub mailbox: Mailbox,
    /// `send` or `read`.
    pub scope: String,
    /// Required client certificate (SHA-256 of DER, hex), if bound.
    pub client_cert_sha256: Option<String>,
}

/// The unrevoked credential whose token hashes to `token_hash`, over sqlx.
pub async fn credential_by_hash(
    conn: &mut AnyConnection,
    token_hash: &[u8; 32],
) -> Result<Option<FoundCredential>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(credential_sql()))
        .bind(token_hash.to_vec())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(found_credential).transpose()
}

/// [`credential_by_hash`] as every AUTH and token-authenticated request reads it: inline
/// on SQLite (`store::inline`).
pub async fn lookup_credential(
    store: &Store,
    token_hash: &[u8; 32],
) -> Result<Option<FoundCredential>, StoreError> {
    store
        .lookup(
            |c| credential_inline(c, token_hash),
            async |c| credential_by_hash(c, token_hash).await,
        )
        .await
}

fn credential_inline(
    conn: &rusqlite::Connection,
    token_hash: &[u8; 32],
) -> Result<Option<FoundCredential>, StoreError> {
    super::inline::optional_row(conn, &credential_sql(), [token_hash], |r| {
        found_credential(r)
    })
}

fn credential_sql() -> String {
    // The mailbox in the same read: every SMTP AUTH and token-authenticated request needs
    // it next, and each read after a commit rereads its pages (docs/decisions.md). A token
    // a member created lives only while its creator is an enabled, active member: removing
    // the member revokes the tokens it finds, and this also ends one created by a request
    // that raced the removal.
    format!(
        "SELECT c.id AS credential_id, c.scope, c.client_cert_sha256, {MAILBOX_COLUMNS} \
         FROM credentials c JOIN mailboxes m ON m.id = c.mailbox_id \
         JOIN identities i ON i.id = m.identity_id \
         WHERE c.token_hash = $1 AND c.revoked_at IS NULL \
         AND (c.creator_user_id IS NULL OR EXISTS (SELECT 1 FROM memberships ms \
              JOIN users u ON u.id = ms.user_id WHERE ms.mailbox_id = c.mailbox_id \
              AND ms.user_id = c.creator_user_id AND ms.state = 'active' AND u.disabled = 0))"
    )
}

fn found_credential(r: &impl Columns) -> Result<FoundCredential, StoreError> {
    Ok(FoundCredential {
        id: r.int("credential_id")?,
        mailbox: mailbox_from_row(r)?,
        scope: r.text("scope")?,
        client_cert_sha256: r.opt_text("client_cert_sha256")?,
    })
}

/// A credential as listed for operators and its creator (never the token).
#[derive(Debug, Clone)]
pub struct CredentialRow {
    /// Row id (what `bote token revoke` takes).
    pub id: i64,
    /// The mailbox it is bound to.
    pub mailbox_id: i64,
    /// The mailbox's address.
    pub mailbox: String,
    /// `send` or `read`.
    pub scope: String,
    /// Required client certificate (SHA-256 of DER, hex), if bound.
    pub client_cert_sha256: Option<String>,
    /// Audit actor that created it.
    pub created_by: String,
    /// The user whose session created it, if any.
    pub creator_user_id: Option<i64>,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

/// Which credentials a listing or revocation covers.
#[derive(Debug, Clone, Copy)]
pub enum Credentials {
    /// Every one.
    All,
    /// One by id.
    Id(i64),
    /// Those of one mailbox.
    Mailbox(i64),
    /// Those a user created, optionally only for one mailbox.
    CreatedBy {
        /// The creator.
        user_id: i64,
        /// Only this mailbox's.
        mailbox_id: Option<i64>,
    },
}

impl Credentials {
    /// (id, mailbox, creator, creator's mailbox) filters, NULL meaning "any".
    fn binds(self) -> (Option<i64>, Option<i64>, Option<i64>) {
        match self {
            Self::All => (None, None, None),
            Self::Id(id) => (Some(id), None, None),
            Self::Mailbox(m) => (None, Some(m), None),
            Self::CreatedBy {
                user_id,
                mailbox_id,
            } => (None, mailbox_id, Some(user_id)),
        }
    }
}

/// Credentials matching `which`, oldest first.
pub async fn list_credentials(
    conn: &mut AnyConnection,
    which: Credentials,
) -> Result<Vec<CredentialRow>, StoreError> {
    let (id, mailbox, creator) = which.binds();
    let rows = sqlx::query(
        "SELECT c.id, c.mailbox_id, m.address, c.scope, c.client_cert_sha256, c.created_by, \
         c.creator_user_id, c.created_at, c.revoked_at FROM credentials c \
         JOIN mailboxes m ON m.id = c.mailbox_id \
         WHERE ($1 IS NULL OR c.id = $1) AND ($2 IS NULL OR c.mailbox_id = $2) \
         AND ($3 IS NULL OR c.creator_user_id = $3) ORDER BY c.id",
    )
    .bind(id)
    .bind(mailbox)
    .bind(creator)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CredentialRow {
                id: r.try_get(0)?,
                mailbox_id: r.try_get(1)?,
                mailbox: r.try_get(2)?,
                scope: r.try_get(3)?,
                client_cert_sha256: r.try_get(4)?,
                created_by: r.try_get(5)?,
                creator_user_id: r.try_get(6)?,
                created_at: r.try_get(7)?,
                revoked_at: r.try_get(8)?,
            })
        })
        .collect()
}

/// Revokes the live credentials matching `which` and drops the key wraps of read tokens
/// among them (a revoked token must open nothing, even with the database in hand).
/// Returns the ids revoked.
pub async fn revoke_credentials(
    conn: &mut AnyConnection,
    which: Credentials,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let (id, mailbox, creator) = which.binds();
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE credentials SET revoked_at = $4 WHERE revoked_at IS NULL \
         AND ($1 IS NULL OR id = $1) AND ($2 IS NULL OR mailbox_id = $2) \
         AND ($3 IS NULL OR creator_user_id = $3) RETURNING id",
    )
    .bind(id)
    .bind(mailbox)
    .bind(creator)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for revoked in &ids {
        sqlx::query("DELETE FROM key_wraps WHERE holder_kind = 'token' AND holder_id = $1")
            .bind(*revoked)
            .execute(&mut *conn)
            .await?;
    }
    Ok(ids)
}

/// Removes a membership and the member's wrap of that mailbox's data key.
pub async fn remove_membership(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
) -> Result<bool, StoreError> {
    let removed = sqlx::query("DELETE FROM memberships WHERE mailbox_id = $1 AND user_id = $2")
        .bind(mailbox_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query(
        "DELETE FROM key_wraps WHERE mailbox_id = $1 AND holder_kind = 'user' AND holder_id = $2",
    )
    .bind(mailbox_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(removed > 0)
}

/// When an operator last lifted `email`'s login throttle.
pub async fn unlocked_at(
    conn: &mut AnyConnection,
    email: &EmailAddress,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT unlocked_at FROM users WHERE email_key = $1")
            .bind(email.key())
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}

/// Lifts a user's login throttle from `now` on.
pub async fn set_unlocked(
    conn: &mut AnyConnection,
    user_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET unlocked_at = $1 WHERE id = $2")
        .bind(now)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets an office mailbox's own send rates (`None`: back to the default).
pub async fn set_office_rate_limits(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    (messages, recipients): (Option<i64>, Option<i64>),
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO office_rate_limits (mailbox_id, messages_per_hour, recipients_per_hour) \
         VALUES ($1, $2, $3) ON CONFLICT (mailbox_id) DO UPDATE SET \
         messages_per_hour = excluded.messages_per_hour, \
         recipients_per_hour = excluded.recipients_per_hour",
    )
    .bind(mailbox_id)
    .bind(messages)
    .bind(recipients)
    .execute(conn)
    .await?;
    Ok(())
}

/// Registers an office mail server's client certificate (SHA-256, hex) for `mailbox_id`;
/// false if it is registered already (for any office).
pub async fn add_office_server_cert(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    cert_sha256: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO office_server_certs (cert_sha256, mailbox_id, created_at) \
         VALUES ($1, $2, $3) ON CONFLICT (cert_sha256) DO NOTHING",
    )
    .bind(cert_sha256)
    .bind(mailbox_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The office mailbox whose mail server holds the certificate with this SHA-256 (hex).
pub async fn office_of_server_cert(
    conn: &mut AnyConnection,
    cert_sha256: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT mailbox_id FROM office_server_certs WHERE cert_sha256 = $1")
            .bind(cert_sha256)
            .fetch_optional(conn)
            .await?,
    )
}

/// Limits a legal user's evidence access to one more mailbox (by its address key).
pub async fn add_legal_scope(
    conn: &mut AnyConnection,
    user_id: i64,
    mailbox_key: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO legal_scopes (user_id, mailbox_key) VALUES ($1, $2)")
        .bind(user_id)
        .bind(mailbox_key)
        .execute(conn)
        .await?;
    Ok(())
}

/// The mailboxes (address keys) a legal user's evidence access is limited to; empty when
/// it is not limited.
pub async fn legal_scope(
    conn: &mut AnyConnection,
    user_id: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT mailbox_key FROM legal_scopes WHERE user_id = $1 ORDER BY mailbox_key",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}
