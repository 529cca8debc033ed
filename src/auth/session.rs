//! Login sessions: password login (level `normal`), logout, and resolving a session token
//! to its user with the user key unsealed for the request.

use std::net::IpAddr;
use std::sync::Arc;

use sequoia_openpgp::Cert;

use super::{Access, Auth, AuthError, Caller, audit_self};
use crate::accounts::credential::{Credential, Kind};
use crate::accounts::{Actor, AuthLevel, User, grants, password};
use crate::address::EmailAddress;
use crate::clock::now_ms;
use crate::crypto::keywrap::{self, Key32};
use crate::crypto::{mailbox as mailbox_crypto, pool};
use crate::store::accounts as account_repo;
use crate::store::sessions::{self as repo, SessionRow};
use crate::store::vault as keystore;
use crate::vault;

/// How long a session lives.
const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
/// Key-derivation purpose of session secrets (a secret derived for one purpose never opens
/// another).
const PURPOSE_SESSION: &str = "session";

/// A new session.
pub struct LoggedIn {
    /// The session credential (shown once).
    pub credential: Credential,
    /// The user.
    pub user: User,
    /// `normal` until a second factor is given.
    pub level: AuthLevel,
    /// Whether a second factor can raise the session to `high`.
    pub second_factor: bool,
    /// Pending grants the user may confirm (members waiting for the key of a mailbox the
    /// user is active in).
    pub grants_waiting: usize,
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

/// How logs name an account: the first 12 hex digits of the SHA-256 of its lower-cased
/// address, enough to follow one account through a log without writing the address.
pub(super) fn pseudonym(account_key: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(account_key.as_bytes())[..6])
}

/// Associated data binding a sealed user key to its user.
fn session_context(user_id: i64) -> String {
    format!("session-user-key:{user_id}")
}

impl Auth {
    /// Logs in with a password from `client`: a `normal` session whose token seals the
    /// user key. Failures slow further attempts ([`super::Lockout`]).
    pub async fn login(
        &self,
        email: &str,
        pw: &str,
        client: Option<IpAddr>,
    ) -> Result<LoggedIn, AuthError> {
        // Only well-formed addresses are tracked: the key is short and bounded.
        let Ok(address) = EmailAddress::parse(email) else {
            return Err(AuthError::BadCredentials);
        };
        // No password is longer (`accounts::password`): a longer one is wrong without
        // hashing megabytes. The answer does not depend on the account.
        if pw.len() > crate::accounts::password::MAX_LEN {
            return Err(AuthError::BadCredentials);
        }
        let key = address.key();
        let _turn = self.lockout.turn(&key, client).await;
        // After the turn: the failures counted meanwhile are later than an earlier `now`.
        let now = now_ms();
        let mut wait = self.lockout.wait_secs(&key, client, now);
        if wait > 0 {
            // An operator may have lifted the throttle since (another process: the CLI).
            let mut conn = self.store.pool().acquire().await?;
            if let Some(unlocked_at) = account_repo::unlocked_at(&mut conn, &address).await? {
                self.lockout.clear_account(&key, unlocked_at);
                wait = self.lockout.wait_secs(&key, client, now);
            }
        }
        if wait > 0 {
            tracing::info!(account = %pseudonym(&key), client = ?client, wait, "login throttled");
            return Err(AuthError::LockedOut(wait));
        }
        let result = self.try_login(&address, pw, now).await;
        match &result {
            Ok(_) => self.lockout.note_success(&key, client),
            Err(AuthError::BadCredentials) => {
                // The wait counts from the refusal, not from the request: a slow password
                // check must not use up the wait of the failure it reports.
                self.lockout.note_failure(&key, client, now_ms());
                tracing::info!(account = %pseudonym(&key), client = ?client, "login refused");
            }
            Err(_) => {}
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
        let (Some((user, _)), Some((phc, credentials_version))) = (found, phc) else {
            // As slow as a real check, so response times do not tell which accounts exist.
            let pw = zeroize::Zeroizing::new(pw.to_owned());
            pool::run(move || password::verify(&pw, password::DUMMY_HASH)).await;
            return Err(AuthError::BadCredentials);
        };
        let key_row = keystore::user_key(&mut conn, user.id).await?;
        let second_factor = repo::totp(&mut conn, user.id).await?.is_some_and(|t| t.1);
        drop(conn);
        let pw = zeroize::Zeroizing::new(pw.to_owned());
        let credential = Credential::generate(Kind::Session);
        let session_key = Key32::from_secret(credential.expose().as_bytes(), PURPOSE_SESSION);
        let context = session_context(user.id);
        let email = user.email.clone();
        // Both Argon2id runs (hash check, key unlock) on the crypto pool.
        let (cert, sealed) = pool::run(move || {
            if !password::verify(&pw, &phc) {
                return Err(AuthError::BadCredentials);
            }
            let row = key_row.ok_or_else(|| AuthError::NoUserKey(email.clone()))?;
            let cert = vault::unlock_user_with_password(&row, &pw)
                .map_err(|_| AuthError::KeyMismatch(email))?;
            let secret = mailbox_crypto::secret_bytes(&cert)?;
            Ok((cert, keywrap::seal(&session_key, &secret, &context)?))
        })
        .await?;
        let mut tx = self.store.begin().await?;
        repo::insert(
            &mut tx,
            &SessionRow {
                token_hash: credential.digest(),
                user_id: user.id,
                auth_level: AuthLevel::Normal.as_str().to_owned(),
                sealed_user_key: sealed,
                created_at: now,
                expires_at: now + SESSION_TTL_MS,
                credentials_version,
            },
        )
        .await?;
        drop(cert);
        let grants_waiting = grants::pending(&mut tx, &user).await?.len();
        let actor = Actor::User(user.email.clone());
        let details = serde_json::json!({});
        audit_self(&mut tx, &actor, "session.login", &user.email, details, now).await?;
        tx.commit().await?;
        Ok(LoggedIn {
            credential,
            user,
            level: AuthLevel::Normal,
            second_factor,
            grants_waiting,
        })
    }

    /// Ends the caller's session (tokens have no session to end).
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        let hash = caller.session.ok_or(AuthError::Forbidden(
            "only login sessions can be logged out",
        ))?;
        let mut conn = self.store.pool().acquire().await?;
        repo::delete(&mut conn, &hash).await?;
        Ok(())
    }

    /// Deletes the sessions that can no longer open (expired, or from before a password
    /// change): each holds its user's key, sealed under a token only the browser had, and
    /// has no reason to stay in the database and its backups. Returns how many.
    pub async fn purge_sessions(&self) -> Result<u64, AuthError> {
        let mut conn = self.store.pool().acquire().await?;
        Ok(repo::purge(&mut conn, now_ms()).await?)
    }

    /// Ends every session of the caller's user ("log out everywhere"), audited.
    pub async fn logout_everywhere(&self, caller: &Caller) -> Result<(), AuthError> {
        let (Access::User { user, .. }, Some(_)) = (&caller.access, caller.session) else {
            return Err(AuthError::Forbidden(
                "only login sessions can be logged out",
            ));
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        repo::delete_for_user(&mut tx, user.id).await?;
        let actor = Actor::User(user.email.clone());
        audit_self(
            &mut tx,
            &actor,
            "session.logout-everywhere",
            &user.email,
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a new password with the user's recovery code (the user keeps their key and
    /// mail), from `client`: throttled and counted like logins, since a recovery code is a
    /// login secret too. Unknown accounts and wrong codes get the same answer.
    pub async fn recover(
        &self,
        accounts: &crate::accounts::service::Accounts,
        email: &str,
        recovery_code: &str,
        new_password: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        use crate::accounts::service::AccountError;
        let Ok(address) = EmailAddress::parse(email) else {
            return Err(AuthError::BadCredentials);
        };
        let key = address.key();
        let _turn = self.lockout.turn(&key, client).await;
        // After the turn: the failures counted meanwhile are later than an earlier `now`.
        let now = now_ms();
        let wait = self.lockout.wait_secs(&key, client, now);
        if wait > 0 {
            tracing::info!(account = %pseudonym(&key), client = ?client, wait, "recovery throttled");
            return Err(AuthError::LockedOut(wait));
        }
        let actor = Actor::User(address.clone());
        let result = accounts
            .set_password(
                &actor,
                &address,
                zeroize::Zeroizing::new(new_password.to_owned()),
                Some(zeroize::Zeroizing::new(recovery_code.trim().to_owned())),
                false,
            )
            .await;
        match result {
            Ok(_) => {
                self.lockout.note_success(&key, client);
                Ok(())
            }
            Err(AccountError::WrongRecoveryCode | AccountError::UnknownUser(_)) => {
                self.lockout.note_failure(&key, client, now_ms());
                tracing::info!(account = %pseudonym(&key), client = ?client, "recovery refused");
                Err(AuthError::BadCredentials)
            }
            Err(e) => Err(AuthError::Grants(e)),
        }
    }

    /// The logged-in caller changes their password and gets a key only they hold
    /// ([`crate::accounts::service::Accounts::renew_own_key`]); throttled and counted like
    /// logins, since the current password is checked. Ends the caller's sessions.
    pub async fn renew_own_key(
        &self,
        accounts: &crate::accounts::service::Accounts,
        caller: &Caller,
        current: &str,
        new_password: &str,
        client: Option<IpAddr>,
    ) -> Result<crate::accounts::service::NewOwnKey, AuthError> {
        use crate::accounts::service::AccountError;
        let (Access::User { user, level, .. }, Some(_)) = (&caller.access, caller.session) else {
            return Err(AuthError::Forbidden(
                "a password is changed from the user's own logged-in session",
            ));
        };
        // With a second factor, the password alone must not replace the key (and its
        // recovery code) and lock its owner out, as it may not replace the factor.
        {
            let mut conn = self.store.pool().acquire().await?;
            let confirmed = repo::totp(&mut conn, user.id).await?.is_some_and(|t| t.1);
            if confirmed && *level != AuthLevel::High {
                return Err(AuthError::NeedsHigh(
                    "changing the password needs a session at level high (second factor)",
                ));
            }
        }
        let key = user.email.key();
        let _turn = self.lockout.turn(&key, client).await;
        let wait = self.lockout.wait_secs(&key, client, now_ms());
        if wait > 0 {
            return Err(AuthError::LockedOut(wait));
        }
        let current = zeroize::Zeroizing::new(current.to_owned());
        let new_password = zeroize::Zeroizing::new(new_password.to_owned());
        match accounts.renew_own_key(user, current, new_password).await {
            Ok(renewed) => {
                self.lockout.note_success(&key, client);
                Ok(renewed)
            }
            Err(AccountError::WrongPassword) => {
                self.lockout.note_failure(&key, client, now_ms());
                Err(AuthError::Grants(AccountError::WrongPassword))
            }
            Err(e) => Err(AuthError::Grants(e)),
        }
    }

    pub(super) async fn resolve_session(
        &self,
        credential: &Credential,
    ) -> Result<Caller, AuthError> {
        let now = now_ms();
        let token_hash = credential.digest();
        let mut conn = self.store.pool().acquire().await?;
        let session = repo::find(&mut conn, &token_hash, now)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        let user = account_repo::user_by_id(&mut conn, session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Unauthenticated)?;
        drop(conn);
        let level = if session.auth_level == AuthLevel::High.as_str() {
            AuthLevel::High
        } else {
            AuthLevel::Normal
        };
        let key = Key32::from_secret(credential.expose().as_bytes(), PURPOSE_SESSION);
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
}
