//! Authentication: login sessions (password, then TOTP for level `high`), mailbox tokens
//! for office software, and turning a presented [`Credential`] into a [`Caller`] whose
//! [`Access`] can open mailboxes.
//!
//! Zero access (spec §5, docs/key-hierarchy.md): at login the user key is unlocked with the
//! password and immediately sealed again under a key derived from the new session token,
//! which only the client holds; the database keeps the sealed form and the token's SHA-256.
//! Read tokens work the same way for a mailbox data key. So a database dump opens nothing,
//! and several gateway instances share sessions through the database.
//!
//! Files: `session.rs` (login, logout, session resolution), `tokens.rs` (mailbox tokens,
//! read-token creation), `totp.rs` (second factors), `lockout.rs` (failed-login tracking).

mod grants;
mod lockout;
mod session;
mod tokens;
mod totp;

use std::sync::Arc;

use sequoia_openpgp::Cert;

use crate::accounts::credential::{Credential, Kind};
use crate::accounts::service::AccountError;
use crate::accounts::{Actor, AuthLevel, Mailbox, User};
use crate::address::EmailAddress;
use crate::crypto::CryptoError;
use crate::crypto::keywrap::Key32;
use crate::error::{Classify, ErrorKind, Failure};
use crate::store::{Store, StoreError, audit};
pub use grants::Grants;
pub use lockout::Lockout;
pub use session::LoggedIn;
pub use totp::totp_code_now;

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong login or password, or a disabled user (one answer for all: no enumeration).
    #[error("wrong email address or password")]
    BadCredentials,
    /// Too many failures: wait before the next attempt.
    #[error("too many failed attempts: try again in {0} s")]
    LockedOut(u64),
    /// No, expired or unknown credential.
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
    Forbidden(&'static str),
    /// Something the caller named does not exist (or is not theirs).
    #[error("not found")]
    NotFound,
    /// The user has no key (an account created before keys existed, or a broken one).
    #[error("the account of {0} has no key")]
    NoUserKey(EmailAddress),
    /// The password verified but does not open the user key: the stored key and the
    /// password hash disagree.
    #[error("the password of {0} does not open its user key")]
    KeyMismatch(EmailAddress),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key unwrapping or sealing.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Completing pending grants at login.
    #[error(transparent)]
    Grants(#[from] AccountError),
    /// The TOTP library refused a secret or URL.
    #[error("TOTP: {0}")]
    Totp(String),
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

impl Classify for AuthError {
    fn failure(&self) -> Failure {
        let (kind, code, title) = match self {
            Self::BadCredentials => (
                ErrorKind::Unauthenticated,
                "bad-credentials",
                "Login failed",
            ),
            Self::LockedOut(seconds) => {
                return Failure::new(
                    ErrorKind::RateLimited,
                    "locked-out",
                    "Too many failed attempts",
                )
                .detail(self)
                .retry_after(*seconds);
            }
            Self::Unauthenticated => (
                ErrorKind::Unauthenticated,
                "unauthenticated",
                "Authentication required",
            ),
            Self::NoSecondFactor => (
                ErrorKind::Conflict,
                "no-second-factor",
                "No second factor enrolled",
            ),
            Self::BadCode => (
                ErrorKind::Unauthenticated,
                "bad-code",
                "Wrong one-time code",
            ),
            Self::NeedsHigh(_) => (
                ErrorKind::Forbidden,
                "needs-high",
                "Authentication level high required",
            ),
            Self::Forbidden(_) => (ErrorKind::Forbidden, "forbidden", "Forbidden"),
            Self::NotFound => return Failure::not_found(),
            Self::Store(e) => return e.failure(),
            Self::Grants(e) => return e.failure(),
            Self::NoUserKey(_) | Self::KeyMismatch(_) | Self::Crypto(_) | Self::Totp(_) => {
                return Failure::internal(self);
            }
        };
        Failure::new(kind, code, title).detail(self)
    }
}

/// Who is acting, with the secret that opens their mailboxes.
#[derive(Clone)]
pub enum Access {
    /// A logged-in user and their unlocked user key.
    User {
        /// The user.
        user: User,
        /// Session level.
        level: AuthLevel,
        /// The user's secret key, unlocked for this request only.
        key: Arc<Cert>,
    },
    /// Office software with a token bound to one mailbox.
    Token {
        /// The credential (for the audit trail).
        credential_id: i64,
        /// The mailbox, as it was when the token was presented (read with the token).
        mailbox: Arc<Mailbox>,
        /// The mailbox data key, for read tokens; `None` for send-only tokens.
        data_key: Option<Arc<Key32>>,
        /// `high` when presented with its registered client certificate.
        level: AuthLevel,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User { user, level, .. } => write!(f, "Access::User({}, {level})", user.email),
            Self::Token { mailbox, level, .. } => {
                write!(f, "Access::Token(mailbox {}, {level})", mailbox.id)
            }
        }
    }
}

impl Access {
    /// The authentication level of the caller.
    pub fn level(&self) -> AuthLevel {
        match self {
            Self::User { level, .. } | Self::Token { level, .. } => *level,
        }
    }

    /// True for a send-only token (it can read nothing).
    pub fn is_send_only(&self) -> bool {
        matches!(self, Self::Token { data_key: None, .. })
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

    /// Who this is in the audit trail.
    pub fn actor(&self) -> Actor {
        match &self.access {
            Access::User { user, .. } => Actor::User(user.email.clone()),
            Access::Token { credential_id, .. } => Actor::Token(*credential_id),
        }
    }
}

/// SHA-256 of a client certificate's DER encoding, as presented in a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCert(pub [u8; 32]);

/// Sessions, tokens and second factors over one store.
#[derive(Clone, Debug)]
pub struct Auth {
    store: Store,
    issuer: String,
    lockout: Lockout,
}

impl Auth {
    /// Authentication for a gateway serving `issuer` (its first domain, shown in TOTP apps).
    pub fn new(store: Store, issuer: String) -> Self {
        Self {
            store,
            issuer,
            lockout: Lockout::default(),
        }
    }

    /// The failed-login tracker, shared with SMTP AUTH (whose failures count per client
    /// address too).
    pub fn lockout(&self) -> &Lockout {
        &self.lockout
    }

    /// Resolves a presented credential to a caller. `client_cert` is the certificate the
    /// connection presented, if any: a token bound to a certificate opens only with it,
    /// and then at level `high`.
    pub async fn resolve(
        &self,
        credential: &Credential,
        client_cert: Option<ClientCert>,
    ) -> Result<Caller, AuthError> {
        match credential.kind() {
            Kind::Session => self.resolve_session(credential).await,
            Kind::MailboxToken => self.resolve_token(credential, client_cert).await,
        }
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
