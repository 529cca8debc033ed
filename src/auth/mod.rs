//! Authentication: login sessions (password, then TOTP for level `high`), bearer tokens for
//! office software, and turning either into an [`Access`] that can open mailboxes.
//!
//! Zero access (spec §5, docs/key-hierarchy.md): at login the user key is unlocked with the
//! password and immediately sealed again under a key derived from the new session token,
//! which only the client holds; the database keeps the sealed form and the token's SHA-256.
//! Read tokens work the same way for a mailbox data key. So a database dump opens nothing,
//! and several gateway instances share sessions through the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sequoia_openpgp::Cert;
use totp_rs::{Builder as TotpBuilder, Secret, Totp};

use crate::accounts::password;
use crate::accounts::token::{self, CREDENTIAL_PREFIX, SESSION_PREFIX};
use crate::accounts::{Actor, AuthLevel, MailboxKind, MembershipState, User};
use crate::address::EmailAddress;
use crate::clock::now_ms;
use crate::crypto::keywrap::{self, Key32};
use crate::crypto::{CryptoError, mailbox as mailbox_crypto, pool};
use crate::pipeline::{Access, complete_pending_grants};
use crate::store::accounts as account_repo;
use crate::store::sessions::{self as repo, SessionRow};
use crate::store::vault::{self as keystore, Holder};
use crate::store::{Store, StoreError, audit};
use crate::vault;

/// How long a session lives.
const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
/// Failed logins per address before it is locked for [`LOCKOUT_MS`].
const MAX_FAILURES: u32 = 5;
/// How long a locked login stays locked.
const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// Most addresses whose failures are tracked at once.
const MAX_TRACKED: usize = 100_000;
/// Key-derivation purposes (a secret derived for one never opens another).
const PURPOSE_SESSION: &str = "session";
const PURPOSE_READ_TOKEN: &str = "read-token";

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong login or password, or a disabled user (one answer for all: no enumeration).
    #[error("wrong email address or password")]
    BadCredentials,
    /// Too many failures.
    #[error("too many failed logins: try again in 15 minutes")]
    LockedOut,
    /// No, expired or unknown bearer credential.
    #[error("authentication required")]
    Unauthenticated,
    /// The user has no TOTP factor.
    #[error("no second factor is enrolled for this account")]
    NoSecondFactor,
    /// Wrong or replayed TOTP code.
    #[error("the one-time code is wrong or was used already")]
    BadCode,
    /// The operation needs a level the session does not have.
    #[error("{0}")]
    NeedsHigh(&'static str),
    /// Not allowed for this caller.
    #[error("{0}")]
    Forbidden(String),
    /// Something the caller named does not exist (or is not theirs).
    #[error("not found")]
    NotFound,
    /// Internal.
    #[error("authentication failed: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<CryptoError> for AuthError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A new session.
pub struct LoggedIn {
    /// The bearer token (shown once).
    pub token: String,
    /// The user.
    pub user: User,
    /// `normal` until a second factor is given.
    pub level: AuthLevel,
    /// Whether a second factor can raise the session to `high`.
    pub second_factor: bool,
    /// Pending grants this login completed.
    pub grants_completed: usize,
}

impl std::fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LoggedIn({}, {}, token ***)",
            self.user.email, self.level
        )
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// What they can open.
    pub access: Access,
    /// The session token's hash (sessions only).
    session: Option<[u8; 32]>,
}

impl Caller {
    /// The logged-in user, for sessions.
    pub fn user(&self) -> Option<&User> {
        match &self.access {
            Access::User { user, .. } => Some(user),
            Access::Token { .. } => None,
        }
    }
}

/// Sessions, tokens and second factors over one store.
#[derive(Clone, Debug)]
pub struct Auth {
    store: Store,
    issuer: String,
    failures: Arc<Mutex<HashMap<String, (u32, i64)>>>,
}

fn session_context(user_id: i64) -> String {
    format!("session-user-key:{user_id}")
}

fn token_context(credential_id: i64) -> String {
    format!("read-token-data-key:{credential_id}")
}

/// The TOTP of a secret (RFC 6238 defaults: SHA-1, 6 digits, 30 s, one step of skew).
fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<Totp, AuthError> {
    TotpBuilder::new()
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(issuer.to_owned()))
        .with_account_name(account.to_owned())
        .build()
        .map_err(|e| AuthError::Internal(format!("TOTP: {e:?}")))
}

impl Auth {
    /// Authentication for a gateway serving `issuer` (its first domain, shown in TOTP apps).
    pub fn new(store: Store, issuer: String) -> Self {
        Self {
            store,
            issuer,
            failures: Arc::default(),
        }
    }

    fn locked(&self, key: &str, now: i64) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(key)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now - since < LOCKOUT_MS)
    }

    fn note_failure(&self, key: &str, now: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: forget expired entries when the map grows (one entry per real address).
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| now - *since < LOCKOUT_MS);
        }
        if failures.len() >= MAX_TRACKED {
            return;
        }
        let entry = failures.entry(key.to_owned()).or_insert((0, now));
        if now - entry.1 >= LOCKOUT_MS {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Logs in with a password: a `normal` session whose token seals the user key.
    pub async fn login(&self, email: &str, pw: &str) -> Result<LoggedIn, AuthError> {
        let now = now_ms();
        // Only well-formed addresses are tracked: the key is short and bounded.
        let Ok(address) = EmailAddress::parse(email) else {
            return Err(AuthError::BadCredentials);
        };
        let key = address.key();
        if self.locked(&key, now) {
            return Err(AuthError::LockedOut);
        }
        let result = self.try_login(&address, pw, now).await;
        if matches!(result, Err(AuthError::BadCredentials)) {
            self.note_failure(&key, now);
            tracing::info!("login refused");
        }
        result
    }

    async fn try_login(
        &self,
        address: &EmailAddress,
        pw: &str,
        now: i64,
    ) -> Result<LoggedIn, AuthError> {
        let mut conn = self.store.pool().acquire().await?;
        let found = account_repo::find_user(&mut conn, address).await?;
        let phc = match &found {
            Some((user, _)) => account_repo::password_hash(&mut conn, user.id).await?,
            None => None,
        };
        let (Some((user, _)), Some(phc)) = (found, phc) else {
            // As slow as a real check, so response times do not tell which accounts exist.
            let pw = zeroize::Zeroizing::new(pw.to_owned());
            pool::run(move || password::verify(&pw, password::DUMMY_HASH)).await;
            return Err(AuthError::BadCredentials);
        };
        let key_row = keystore::user_key(&mut conn, user.id).await?;
        let second_factor = repo::totp(&mut conn, user.id).await?.is_some_and(|t| t.1);
        drop(conn);
        let pw = zeroize::Zeroizing::new(pw.to_owned());
        let token = token::new(SESSION_PREFIX);
        let session_key = Key32::from_secret(token.as_bytes(), PURPOSE_SESSION);
        let context = session_context(user.id);
        // Both Argon2id runs (hash check, key unlock) on the crypto pool.
        let unlocked = pool::run(move || {
            if !password::verify(&pw, &phc) {
                return Err(AuthError::BadCredentials);
            }
            let row = key_row.ok_or_else(|| AuthError::Internal("user has no key".into()))?;
            let cert = vault::unlock_user_with_password(&row, &pw)
                .map_err(|_| AuthError::Internal("password does not open the user key".into()))?;
            let secret = mailbox_crypto::secret_bytes(&cert)?;
            Ok((cert, keywrap::seal(&session_key, &secret, &context)?))
        })
        .await?;
        let (cert, sealed) = unlocked;
        let mut tx = self.store.begin().await?;
        repo::insert(
            &mut tx,
            &SessionRow {
                token_hash: token::digest(&token),
                user_id: user.id,
                auth_level: AuthLevel::Normal.as_str().to_owned(),
                sealed_user_key: sealed,
                created_at: now,
                expires_at: now + SESSION_TTL_MS,
            },
        )
        .await?;
        let grants_completed = complete_pending_grants(&mut tx, &user, Arc::new(cert))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let actor = Actor::User(user.email.clone());
        let details = serde_json::json!({ "grants_completed": grants_completed });
        audit_self(&mut tx, &actor, "session.login", &user.email, details, now).await?;
        tx.commit().await?;
        Ok(LoggedIn {
            token,
            user,
            level: AuthLevel::Normal,
            second_factor,
            grants_completed,
        })
    }

    /// Raises the session of `token` to `high` with a TOTP code.
    pub async fn second_factor(&self, token: &str, code: &str) -> Result<(), AuthError> {
        let now = now_ms();
        let mut conn = self.store.pool().acquire().await?;
        let session = repo::find(&mut conn, &token::digest(token), now)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        let user = account_repo::user_by_id(&mut conn, session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Unauthenticated)?;
        let (secret, _, _) = repo::totp(&mut conn, user.id)
            .await?
            .ok_or(AuthError::NoSecondFactor)?;
        let key = user.email.key();
        if self.locked(&key, now) {
            return Err(AuthError::LockedOut);
        }
        let totp = totp(&secret, &self.issuer, &user.email.to_string())?;
        let seconds = u64::try_from(now / 1000).unwrap_or_default();
        let Some(step) = totp.check(code.trim(), seconds) else {
            self.note_failure(&key, now);
            return Err(AuthError::BadCode);
        };
        let mut tx = self.store.begin().await?;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !repo::use_totp_step(&mut tx, user.id, step).await? {
            return Err(AuthError::BadCode);
        }
        repo::set_high(&mut tx, &session.token_hash).await?;
        let actor = Actor::User(user.email.clone());
        audit_self(
            &mut tx,
            &actor,
            "session.second-factor",
            &user.email,
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts TOTP enrolment for `user`: a new secret, confirmed by its first valid code.
    /// A password alone must not lead to level `high`: the first factor needs the user's
    /// recovery code (the second secret, handed out at account creation), and replacing a
    /// confirmed factor needs a `high` session.
    pub async fn enrol_totp(
        &self,
        caller: &Caller,
        recovery_code: Option<&str>,
    ) -> Result<String, AuthError> {
        let (Access::User { user, level, .. }, Some(_)) = (&caller.access, caller.session) else {
            return Err(AuthError::Forbidden(
                "second factors belong to logged-in users".into(),
            ));
        };
        let mut conn = self.store.pool().acquire().await?;
        let confirmed = repo::totp(&mut conn, user.id).await?.is_some_and(|t| t.1);
        if confirmed && *level != AuthLevel::High {
            return Err(AuthError::NeedsHigh(
                "replacing a second factor needs a session at level high",
            ));
        }
        if !confirmed {
            let row = keystore::user_key(&mut conn, user.id)
                .await?
                .ok_or_else(|| AuthError::Internal("user has no key".into()))?;
            let code = recovery_code.ok_or_else(|| {
                AuthError::Forbidden(
                    "enrolling a first second factor needs your recovery code".into(),
                )
            })?;
            if vault::unlock_user_with_recovery(&row, code).is_err() {
                return Err(AuthError::Forbidden("the recovery code is wrong".into()));
            }
        }
        drop(conn);
        self.set_totp(user, false).await
    }

    /// Sets a new TOTP secret for `user`; returns its `otpauth://` URL. `confirmed` is for
    /// operators enrolling a user in person (`bote user totp`).
    pub async fn set_totp(&self, user: &User, confirmed: bool) -> Result<String, AuthError> {
        let secret: [u8; 20] = rand::random();
        let url = totp(&secret, &self.issuer, &user.email.to_string())?
            .to_url()
            .map_err(|e| AuthError::Internal(format!("TOTP: {e:?}")))?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        repo::put_totp(&mut tx, user.id, &secret, confirmed, now).await?;
        let actor = if confirmed {
            Actor::current_operator()
        } else {
            Actor::User(user.email.clone())
        };
        audit_self(
            &mut tx,
            &actor,
            "user.totp",
            &user.email,
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(url)
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let mut conn = self.store.pool().acquire().await?;
        repo::delete(&mut conn, &token::digest(token)).await?;
        Ok(())
    }

    /// Resolves a bearer token (session or mailbox credential) to a caller.
    pub async fn resolve(&self, token: &str) -> Result<Caller, AuthError> {
        if token.starts_with(SESSION_PREFIX) {
            self.resolve_session(token).await
        } else if token.starts_with(CREDENTIAL_PREFIX) {
            self.resolve_credential(token).await
        } else {
            Err(AuthError::Unauthenticated)
        }
    }

    async fn resolve_session(&self, token: &str) -> Result<Caller, AuthError> {
        let now = now_ms();
        let token_hash = token::digest(token);
        let mut conn = self.store.pool().acquire().await?;
        let session = repo::find(&mut conn, &token_hash, now)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        let user = account_repo::user_by_id(&mut conn, session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Unauthenticated)?;
        drop(conn);
        let level = if session.auth_level == "high" {
            AuthLevel::High
        } else {
            AuthLevel::Normal
        };
        let key = Key32::from_secret(token.as_bytes(), PURPOSE_SESSION);
        let context = session_context(user.id);
        let cert: Cert = pool::run(move || {
            let secret = keywrap::open(&key, &session.sealed_user_key, &context)?;
            mailbox_crypto::parse_tsk(&secret)
        })
        .await
        .map_err(|_| AuthError::Unauthenticated)?;
        Ok(Caller {
            access: Access::User {
                user,
                level,
                key: Arc::new(cert),
            },
            session: Some(token_hash),
        })
    }

    async fn resolve_credential(&self, token: &str) -> Result<Caller, AuthError> {
        let mut conn = self.store.pool().acquire().await?;
        let credential = account_repo::credential_by_hash(&mut conn, &token::digest(token))
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        if credential.client_cert_sha256.is_some() {
            // The HTTPS listener does not request client certificates: a token bound to
            // one is for SMTP with mutual TLS only.
            return Err(AuthError::Unauthenticated);
        }
        let data_key = if credential.scope == "read" {
            let wrap = keystore::wrap(
                &mut conn,
                credential.mailbox_id,
                Holder::Token(credential.id),
            )
            .await?
            .ok_or(AuthError::Unauthenticated)?;
            let key = Key32::from_secret(token.as_bytes(), PURPOSE_READ_TOKEN);
            let bytes = keywrap::open(&key, &wrap, &token_context(credential.id))
                .map_err(|_| AuthError::Unauthenticated)?;
            Some(Arc::new(Key32::from_bytes(&bytes)?))
        } else {
            None
        };
        Ok(Caller {
            access: Access::Token {
                mailbox_id: credential.mailbox_id,
                data_key,
                level: AuthLevel::Normal,
            },
            session: None,
        })
    }

    /// Creates a read token for an office mailbox the logged-in member can open: the
    /// mailbox data key is sealed under the new token, so the token alone can read.
    pub async fn create_read_token(
        &self,
        caller: &Caller,
        mailbox: &EmailAddress,
    ) -> Result<String, AuthError> {
        let Access::User { user, key, .. } = &caller.access else {
            return Err(AuthError::Forbidden(
                "read tokens are created from a logged-in member's session".into(),
            ));
        };
        let mut conn = self.store.pool().acquire().await?;
        let (mb, _) = account_repo::find_mailbox(&mut conn, mailbox)
            .await?
            .ok_or(AuthError::NotFound)?;
        let active = account_repo::membership_state(&mut conn, mb.id, user.id).await?
            == Some(MembershipState::Active);
        if !active || mb.kind != MailboxKind::Office {
            return Err(AuthError::NotFound);
        }
        let wrap = keystore::wrap(&mut conn, mb.id, Holder::User(user.id))
            .await?
            .ok_or(AuthError::NotFound)?;
        drop(conn);
        let key = key.clone();
        let data_key = pool::run(move || vault::unwrap_for_user(&wrap, &key)).await?;
        let token = token::new(CREDENTIAL_PREFIX);
        let now = now_ms();
        let actor = Actor::User(user.email.clone());
        let actor_name = actor.to_string();
        let mut tx = self.store.begin().await?;
        let id = account_repo::insert_credential(
            &mut tx,
            &account_repo::NewCredential {
                mailbox_id: mb.id,
                scope: "read",
                token_hash: token::digest(&token),
                client_cert_sha256: None,
                created_by: &actor_name,
                now,
            },
        )
        .await?;
        let sealing = Key32::from_secret(token.as_bytes(), PURPOSE_READ_TOKEN);
        let sealed = keywrap::seal(&sealing, data_key.as_bytes(), &token_context(id))?;
        keystore::put_wrap(&mut tx, mb.id, Holder::Token(id), &sealed, now).await?;
        let details = serde_json::json!({ "credential": id, "scope": "read" });
        audit::record(
            &mut tx,
            &actor,
            "token.create",
            &mailbox.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }
}

/// Records what a user did to their own account, in the same transaction.
async fn audit_self(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    action: &str,
    target: &EmailAddress,
    details: serde_json::Value,
    now: i64,
) -> Result<(), AuthError> {
    audit::record(tx, actor, action, &target.to_string(), details, now).await?;
    Ok(())
}

/// The current TOTP code of an `otpauth://` URL (tests and operators' scripts).
pub fn totp_code_now(otpauth: &str) -> Option<String> {
    Totp::from_url(otpauth)
        .ok()
        .map(|t| t.generate_current().to_string())
}
