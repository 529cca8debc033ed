//! Second factors (TOTP, RFC 6238): enrolment and raising a session to level `high`.

use std::net::IpAddr;

use totp_rs::{Builder as TotpBuilder, Secret, Totp};

use super::{Access, Auth, AuthError, Caller, audit_self};
use crate::accounts::{Actor, AuthLevel, User};
use crate::clock::now_ms;
use crate::crypto::pool;
use crate::store::sessions as repo;
use crate::store::vault as keystore;
use crate::vault;

/// The TOTP of a secret (RFC 6238 defaults: SHA-1, 6 digits, 30 s, one step of skew).
fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<Totp, AuthError> {
    TotpBuilder::new()
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(issuer.to_owned()))
        .with_account_name(account.to_owned())
        .build()
        .map_err(|e| AuthError::Totp(format!("{e:?}")))
}

impl Auth {
    /// Raises the caller's session to `high` with a TOTP code from `client`; wrong codes
    /// count as failed logins.
    pub async fn second_factor(
        &self,
        caller: &Caller,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let (Access::User { user, .. }, Some(session)) = (&caller.access, caller.session) else {
            return Err(AuthError::Forbidden(
                "second factors belong to logged-in users",
            ));
        };
        let key = user.email.key();
        // As for passwords: guesses sent at once wait in turn (`Lockout::turn`).
        let _turn = self.lockout.turn(&key, client).await;
        let now = now_ms();
        let mut conn = self.store.pool().acquire().await?;
        let (secret, _, _) = repo::totp(&mut conn, user.id)
            .await?
            .ok_or(AuthError::NoSecondFactor)?;
        drop(conn);
        let wait = self.lockout.wait_secs(&key, client, now);
        if wait > 0 {
            return Err(AuthError::LockedOut(wait));
        }
        let totp = totp(&secret, &self.issuer, &user.email.to_string())?;
        let seconds = u64::try_from(now / 1000).unwrap_or_default();
        let Some(step) = totp.check(code.trim(), seconds) else {
            self.lockout.note_failure(&key, client, now);
            tracing::info!(account = %super::session::pseudonym(&key), client = ?client, "one-time code refused");
            return Err(AuthError::BadCode);
        };
        let mut tx = self.store.begin().await?;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !repo::use_totp_step(&mut tx, user.id, step).await? {
            return Err(AuthError::BadCode);
        }
        repo::set_high(&mut tx, &session).await?;
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

    /// Whether the caller's user has a confirmed second factor.
    pub async fn has_second_factor(&self, caller: &Caller) -> Result<bool, AuthError> {
        let Some(user) = caller.user() else {
            return Ok(false);
        };
        let mut conn = self.store.pool().acquire().await?;
        Ok(repo::totp(&mut conn, user.id).await?.is_some_and(|t| t.1))
    }

    /// Starts TOTP enrolment for the caller: a new secret, confirmed by its first valid
    /// code. A password alone must not lead to level `high`: the first factor needs the
    /// user's recovery code (the second secret, handed out at account creation), and
    /// replacing a confirmed factor needs a `high` session.
    pub async fn enrol_totp(
        &self,
        caller: &Caller,
        recovery_code: Option<&str>,
    ) -> Result<String, AuthError> {
        let (Access::User { user, level, .. }, Some(_)) = (&caller.access, caller.session) else {
            return Err(AuthError::Forbidden(
                "second factors belong to logged-in users",
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
                .ok_or_else(|| AuthError::NoUserKey(user.email.clone()))?;
            let code = recovery_code.ok_or(AuthError::Forbidden(
                "enrolling a first second factor needs your recovery code",
            ))?;
            let code = zeroize::Zeroizing::new(code.to_owned());
            // Argon2id-strength unwrapping: on the crypto pool like every key operation.
            let opens =
                pool::run(move || vault::unlock_user_with_recovery(&row, &code).is_ok()).await;
            if !opens {
                return Err(AuthError::Forbidden("the recovery code is wrong"));
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
            .map_err(|e| AuthError::Totp(format!("{e:?}")))?;
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
}

/// The current TOTP code of an `otpauth://` URL (tests and operators' scripts).
pub fn totp_code_now(otpauth: &str) -> Option<String> {
    Totp::from_url(otpauth)
        .ok()
        .map(|t| t.generate_current().to_string())
}
