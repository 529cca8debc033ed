//! Account operations: validate, write in one transaction with an audit entry, commit.
//!
//! Every operation either changes exactly what it says and records it in the audit trail,
//! or returns an [`AccountError`] and changes nothing (checks happen before the first write,
//! and the transaction rolls back on any later failure).

use serde_json::json;
use sha2::{Digest, Sha256};

use super::credential::{Credential, Kind};
use super::password::{self, Password, PasswordError};
use super::{
    Actor, IdentityMethod, Mailbox, MailboxKind, Membership, MembershipState, Relay, RelayTls,
    Role, User, Verification,
};
use crate::address::{AddressError, DomainName, EmailAddress};
use crate::clock::now_ms;
use crate::crypto::{self, CryptoError};
use crate::error::{Classify, ErrorKind, Failure};
use crate::store::accounts::{self as repo, NewMailbox, NewUser};
use crate::store::vault::{self as keystore, Holder};
use crate::store::{Store, StoreError, audit};
use crate::vault;

/// Longest display name accepted.
const MAX_NAME: usize = 200;

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// An address is malformed.
    #[error("invalid address: {0}")]
    Address(#[from] AddressError),
    /// A local mailbox outside the gateway's domains.
    #[error("{address} is not in a domain this gateway serves ({served}); {what} must be")]
    ForeignDomain {
        /// The address.
        address: EmailAddress,
        /// The served domains.
        served: String,
        /// Which kind of mailbox.
        what: &'static str,
    },
    /// A display name is empty, too long or has control characters.
    #[error("invalid name: {0}")]
    Name(&'static str),
    /// Password refused by policy.
    #[error("{0}")]
    Password(#[from] PasswordError),
    /// User exists.
    #[error("user {0} already exists")]
    DuplicateUser(EmailAddress),
    /// Mailbox exists.
    #[error("mailbox {0} already exists")]
    DuplicateMailbox(EmailAddress),
    /// No such user.
    #[error("no user {0}")]
    UnknownUser(EmailAddress),
    /// No such mailbox.
    #[error("no mailbox {0}")]
    UnknownMailbox(EmailAddress),
    /// A scope for a role other than legal.
    #[error("only legal users can be limited to offices (--scope)")]
    ScopeNotLegal,
    /// Only staff can be office members.
    #[error("user {user} has role {role}; only staff users can be members of office mailboxes")]
    NotStaff {
        /// The user.
        user: EmailAddress,
        /// Their role.
        role: Role,
    },
    /// Members only exist for local office mailboxes.
    #[error(
        "mailbox {mailbox} is a {kind} mailbox; members can only be added to local office mailboxes"
    )]
    NotLocalOffice {
        /// The mailbox.
        mailbox: EmailAddress,
        /// Its kind.
        kind: MailboxKind,
    },
    /// Tokens are for office software.
    #[error("mailbox {0} is a citizen mailbox; tokens are for office mailboxes")]
    NotAnOffice(EmailAddress),
    /// Server certificates are for external offices (whose servers deliver over MX).
    #[error(
        "mailbox {0} is not an external office; only external offices' mail servers deliver \
         over MX (register it with --relay)"
    )]
    NotExternal(EmailAddress),
    /// That certificate is registered already.
    #[error("a mail server certificate with SHA-256 {0} is registered already")]
    ServerCertTaken(String),
    /// Rate limits are for offices; citizens have the daily quota.
    #[error(
        "mailbox {0} is a citizen mailbox; rate limits are for office mailboxes (citizens at \
         level normal have the daily quota, limits.citizen_daily_*)"
    )]
    RatesAreForOffices(EmailAddress),
    /// Not a member.
    #[error("{user} is not a member of {mailbox}")]
    NotAMember {
        /// The user.
        user: EmailAddress,
        /// The mailbox.
        mailbox: EmailAddress,
    },
    /// The current password given to change it is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// No pending grant of `user` to `mailbox` that the caller could confirm.
    #[error("no access request of {user} to {mailbox} that you can confirm")]
    NoPendingGrant {
        /// The user.
        user: EmailAddress,
        /// The mailbox.
        mailbox: EmailAddress,
    },
    /// The pending member's key is not the one the confirming member compared.
    #[error(
        "the key of {user} is now {fingerprint}, not the one you confirmed: compare it with them again"
    )]
    GrantKeyChanged {
        /// The user.
        user: EmailAddress,
        /// Their key's fingerprint now.
        fingerprint: String,
    },
    /// A mailbox without an active member: only its recovery code can grant access.
    #[error(
        "nobody holds the key of {0} yet: grant its first member with the mailbox recovery \
         code (--recovery-code-stdin), or name them when adding the mailbox (--member)"
    )]
    NoGrantor(EmailAddress),
    /// No live token with that id.
    #[error("no live token {0} (see `bote token list`)")]
    UnknownToken(i64),
    /// Already a member.
    #[error("{user} is already a member of {mailbox}")]
    AlreadyMember {
        /// The user.
        user: EmailAddress,
        /// The mailbox.
        mailbox: EmailAddress,
    },
    /// Relay target malformed.
    #[error("invalid relay target `{0}`: expected HOST:PORT, e.g. mail.bauamt.example:25")]
    RelayTarget(String),
    /// The external office's certificate is unusable.
    #[error("office certificate: {0}")]
    OfficeCertificate(CryptoError),
    /// Generating, wrapping or unwrapping a key failed.
    #[error("key operation failed: {0}")]
    Crypto(#[from] CryptoError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A recovery code that opens nothing.
    #[error("the recovery code is wrong (nothing was changed)")]
    WrongRecoveryCode,
    /// A password reset that would silently lose the user's key.
    #[error(
        "without the user's recovery code their key cannot be kept: give the recovery code \
         (--recovery-code-stdin, second line of standard input), or pass --new-key to give {0} \
         a new key (mail encrypted to the old one stays unreadable)"
    )]
    KeyWouldBeLost(EmailAddress),
}

impl Classify for AccountError {
    fn failure(&self) -> Failure {
        let (kind, code, title) = match self {
            Self::Address(_)
            | Self::ForeignDomain { .. }
            | Self::Name(_)
            | Self::Password(
                PasswordError::TooShort | PasswordError::TooLong | PasswordError::Control,
            )
            | Self::RelayTarget(_)
            | Self::OfficeCertificate(_) => {
                (ErrorKind::Invalid, "invalid-account", "Invalid input")
            }
            Self::DuplicateUser(_)
            | Self::DuplicateMailbox(_)
            | Self::AlreadyMember { .. }
            | Self::ServerCertTaken(_) => (ErrorKind::Conflict, "exists", "Exists already"),
            Self::UnknownUser(_) | Self::UnknownMailbox(_) | Self::UnknownToken(_) => {
                return Failure::not_found();
            }
            Self::NotAMember { .. } => (ErrorKind::Conflict, "not-a-member", "Not a member"),
            Self::NoPendingGrant { .. } => return Failure::not_found(),
            Self::WrongPassword => (
                ErrorKind::Unauthenticated,
                "wrong-password",
                "Current password wrong",
            ),
            Self::GrantKeyChanged { .. } => (
                ErrorKind::Conflict,
                "grant-key-changed",
                "The member's key is another one now",
            ),
            Self::NotStaff { .. }
            | Self::NotLocalOffice { .. }
            | Self::NotAnOffice(_)
            | Self::ScopeNotLegal
            | Self::RatesAreForOffices(_)
            | Self::NotExternal(_) => (
                ErrorKind::Unprocessable,
                "not-allowed-here",
                "Not possible for this account",
            ),
            Self::WrongRecoveryCode | Self::KeyWouldBeLost(_) | Self::NoGrantor(_) => (
                ErrorKind::Forbidden,
                "recovery-code",
                "Recovery code needed",
            ),
            Self::Store(e) => return e.failure(),
            Self::Password(PasswordError::Hash(_)) | Self::Crypto(_) => {
                return Failure::internal(self);
            }
        };
        Failure::new(kind, code, title).detail(self)
    }
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// Input of [`add_user`].
#[derive(Debug)]
pub struct AddUser {
    /// Role.
    pub role: Role,
    /// Display name.
    pub name: String,
    /// Login (and, for citizens, mailbox address).
    pub email: EmailAddress,
    /// Initial password.
    pub password: Password,
    /// Optional notice address.
    pub notify_email: Option<EmailAddress>,
    /// For legal users: the mailboxes their evidence access is limited to (empty: all).
    pub scope: Vec<EmailAddress>,
}

/// A new user and their recovery code (shown once, never stored).
#[derive(Debug)]
pub struct AddedUser {
    /// The user.
    pub user: User,
    /// Opens the user's key if they forget their password.
    pub recovery_code: String,
}

/// A key a user made for themselves ([`Accounts::renew_own_key`]).
pub struct NewOwnKey {
    /// Its fingerprint (what colleagues compare before giving access to an office).
    pub fingerprint: String,
    /// Its recovery code, to show the user once; never stored.
    pub recovery_code: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for NewOwnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewOwnKey({}, recovery code ***)", self.fingerprint)
    }
}

/// A new mailbox and, for a local office, its recovery code (shown once, never stored).
#[derive(Debug)]
pub struct AddedMailbox {
    /// The mailbox.
    pub mailbox: Mailbox,
    /// Opens the mailbox key; lets an operator grant access to members.
    pub recovery_code: Option<String>,
}

/// Where an external office's mail goes.
#[derive(Debug)]
pub struct RelaySpec {
    /// `HOST:PORT`.
    pub target: String,
    /// TLS policy.
    pub tls: RelayTls,
    /// The office's OpenPGP certificate, armoured or binary.
    pub cert: Vec<u8>,
}

/// Account operations on one store, for one served set of domains.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    domains: Vec<DomainName>,
}

impl Accounts {
    /// Binds the operations to a store and the gateway's domains.
    pub fn new(store: Store, domains: Vec<DomainName>) -> Self {
        Self { store, domains }
    }

    /// The store these operations write to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn require_local(
        &self,
        address: &EmailAddress,
        what: &'static str,
    ) -> Result<(), AccountError> {
        if self.domains.contains(address.domain()) {
            return Ok(());
        }
        Err(AccountError::ForeignDomain {
            address: address.clone(),
            served: self
                .domains
                .iter()
                .map(DomainName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            what,
        })
    }

    /// Adds a user with their own key; a citizen also gets a mailbox at their address, with
    /// a mailbox key only they can open. Returns the user's recovery code, to show once.
    pub async fn add_user(&self, actor: &Actor, new: AddUser) -> Result<AddedUser, AccountError> {
        let name = check_name(&new.name)?;
        if new.role == Role::Citizen {
            self.require_local(&new.email, "citizen mailboxes")?;
        }
        password::check_policy(&new.password)?;
        if !new.scope.is_empty() && new.role != Role::Legal {
            return Err(AccountError::ScopeNotLegal);
        }
        let material = {
            let (name, email, password) =
                (name.to_owned(), new.email.to_string(), new.password.clone());
            let citizen = new.role == Role::Citizen;
            crate::crypto::pool::run(move || new_user_material(&name, &email, &password, citizen))
                .await?
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        if repo::find_user(&mut tx, &new.email).await?.is_some() {
            return Err(AccountError::DuplicateUser(new.email));
        }
        if new.role == Role::Citizen && repo::find_mailbox(&mut tx, &new.email).await?.is_some() {
            return Err(AccountError::DuplicateMailbox(new.email));
        }
        let row = NewUser {
            email: &new.email,
            name,
            role: new.role,
            password_hash: &material.password_hash,
            notify_email: new.notify_email.as_ref(),
            now,
        };
        let (user_id, identity_id) = repo::insert_user(&mut tx, &row)
            .await
            .map_err(|e| duplicate_or(e, AccountError::DuplicateUser(new.email.clone())))?;
        if new.role == Role::Citizen {
            let mailbox = NewMailbox {
                address: &new.email,
                kind: MailboxKind::Citizen,
                name,
                owner_user_id: Some(user_id),
                identity_id,
                relay: None,
                now,
            };
            let mailbox_id = repo::insert_mailbox(&mut tx, &mailbox).await?;
            if let Some((key, wrap)) = &material.citizen_mailbox {
                keystore::put_mailbox_key(&mut tx, mailbox_id, &key.row, now).await?;
                keystore::put_wrap(&mut tx, mailbox_id, Holder::User(user_id), wrap, now).await?;
            }
        }
        keystore::put_user_key(&mut tx, user_id, &material.user_key.row, now).await?;
        let mut scope = Vec::new();
        for office in &new.scope {
            let (mailbox, _) = repo::find_mailbox(&mut tx, office)
                .await?
                .ok_or_else(|| AccountError::UnknownMailbox(office.clone()))?;
            if !scope.contains(&mailbox.address.key()) {
                repo::add_legal_scope(&mut tx, user_id, &mailbox.address.key()).await?;
                scope.push(mailbox.address.key());
            }
        }
        let details = json!({
            "role": new.role,
            "name": name,
            "user_key": material.user_key.row.fingerprint,
            "scope": scope,
        });
        audit::record(
            &mut tx,
            actor,
            "user.add",
            &new.email.to_string(),
            details,
            now,
        )
        .await?;
        let (user, _) = repo::find_user(&mut tx, &new.email)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(new.email.clone()))?;
        tx.commit().await?;
        Ok(AddedUser {
            user,
            recovery_code: material.user_key.recovery_code,
        })
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<User>, AccountError> {
        let mut conn = self.store.pool().acquire().await?;
        Ok(repo::list_users(&mut conn).await?)
    }

    /// One user by login.
    pub async fn user(&self, email: &EmailAddress) -> Result<User, AccountError> {
        let mut conn = self.store.pool().acquire().await?;
        repo::find_user(&mut conn, email)
            .await?
            .map(|(u, _)| u)
            .ok_or_else(|| AccountError::UnknownUser(email.clone()))
    }

    /// Allows a disabled user to log in again (their sessions and read tokens stay ended).
    pub async fn enable_user(
        &self,
        actor: &Actor,
        email: &EmailAddress,
    ) -> Result<(), AccountError> {
        self.user_change(actor, email, "user.enable", |tx, user, now| {
            Box::pin(async move { Ok(repo::set_user_disabled(tx, user.id, false, now).await?) })
        })
        .await
    }

    /// Lifts the login throttle of a user (failures counted so far stop slowing them).
    pub async fn unlock_user(
        &self,
        actor: &Actor,
        email: &EmailAddress,
    ) -> Result<(), AccountError> {
        self.user_change(actor, email, "user.unlock", |tx, user, now| {
            Box::pin(async move { Ok(repo::set_unlocked(tx, user.id, now).await?) })
        })
        .await
    }

    /// One change to one user, audited in its transaction.
    async fn user_change(
        &self,
        actor: &Actor,
        email: &EmailAddress,
        action: &str,
        change: impl for<'c> FnOnce(
            &'c mut sqlx::AnyConnection,
            &'c User,
            i64,
        )
            -> futures_util::future::BoxFuture<'c, Result<(), AccountError>>,
    ) -> Result<(), AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (user, _) = repo::find_user(&mut tx, email)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(email.clone()))?;
        change(&mut tx, &user, now).await?;
        audit::record(&mut tx, actor, action, &email.to_string(), json!({}), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refuses further logins by a user.
    pub async fn disable_user(
        &self,
        actor: &Actor,
        email: &EmailAddress,
    ) -> Result<(), AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (user, _) = repo::find_user(&mut tx, email)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(email.clone()))?;
        repo::set_user_disabled(&mut tx, user.id, true, now).await?;
        end_sessions_and_tokens(&mut tx, actor, &user, "user disabled", now).await?;
        audit::record(
            &mut tx,
            actor,
            "user.disable",
            &email.to_string(),
            json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a user's password. With the user's recovery code the user keeps their key
    /// (and so their mail); without it the key cannot be kept, and only with `new_key` does
    /// the user get a new one: their older mail stays unreadable, memberships go back to
    /// pending, and a new recovery code is returned.
    pub async fn set_password(
        &self,
        actor: &Actor,
        email: &EmailAddress,
        password: Password,
        recovery_code: Option<Password>,
        new_key: bool,
    ) -> Result<Option<String>, AccountError> {
        password::check_policy(&password)?;
        let user = self.user(email).await?;
        let (stored, version) = {
            let mut conn = self.store.pool().acquire().await?;
            let version = repo::credentials_version(&mut conn, user.id).await?;
            let version = version.ok_or_else(|| AccountError::UnknownUser(email.clone()))?;
            (keystore::user_key(&mut conn, user.id).await?, version)
        };
        let (phc, row, new_code) = match (stored, recovery_code) {
            (Some(row), Some(code)) => {
                let (phc, resealed) = crate::crypto::pool::run(move || {
                    let secret = vault::unlock_user_with_recovery(&row, &code)
                        .map_err(|_| AccountError::WrongRecoveryCode)?;
                    let resealed = vault::reseal_user_password(&row, &secret, &password)?;
                    Ok::<_, AccountError>((password::hash(&password)?, resealed))
                })
                .await?;
                (phc, resealed, None)
            }
            (_, _) if new_key => {
                let (name, addr) = (user.name.clone(), user.email.to_string());
                let citizen = user.role == Role::Citizen;
                let m = crate::crypto::pool::run(move || {
                    new_user_material(&name, &addr, &password, citizen)
                })
                .await?;
                return self
                    .replace_user_key(actor, &user, m, version)
                    .await
                    .map(Some);
            }
            _ => return Err(AccountError::KeyWouldBeLost(email.clone())),
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        repo::set_password_hash(&mut tx, user.id, &phc, now, version).await?;
        end_sessions_and_tokens(&mut tx, actor, &user, "password changed", now).await?;
        keystore::put_user_key(&mut tx, user.id, &row, now).await?;
        if !matches!(actor, Actor::User(_)) {
            // Not the user's own doing (an operator chose the new password): the key is
            // one they can open.
            repo::set_key_origin(&mut tx, user.id, "operator").await?;
        }
        audit::record(
            &mut tx,
            actor,
            "user.set-password",
            &email.to_string(),
            json!({ "key": "kept" }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(new_code)
    }

    /// The user, with their current password, changes it and gets a new key that only
    /// they hold: a new user key and recovery code (returned, to show once), every mailbox
    /// key they hold wrapped anew for it, the old key gone. Until then their key is one an
    /// operator made: the operator chose its first password and saw its recovery code.
    /// Ends the user's sessions (and the read tokens they created), as any password change.
    pub async fn renew_own_key(
        &self,
        user: &User,
        current: Password,
        new_password: Password,
    ) -> Result<NewOwnKey, AccountError> {
        password::check_policy(&new_password)?;
        let (stored, phc, wraps) = {
            let mut conn = self.store.pool().acquire().await?;
            let stored = keystore::user_key(&mut conn, user.id).await?;
            let phc = repo::password_hash(&mut conn, user.id).await?;
            (stored, phc, keystore::user_wraps(&mut conn, user.id).await?)
        };
        let (Some(row), Some((phc, version))) = (stored, phc) else {
            return Err(AccountError::WrongPassword);
        };
        let (name, addr) = (user.name.clone(), user.email.to_string());
        let (hash, key, rewrapped) = crate::crypto::pool::run(move || {
            if !password::verify(&current, &phc) {
                return Err(AccountError::WrongPassword);
            }
            let old = vault::unlock_user_with_password(&row, &current)
                .map_err(|_| AccountError::WrongPassword)?;
            let key = vault::create_user_key(&name, &addr, &new_password)?;
            let rewrapped = wraps
                .iter()
                .map(|(mailbox_id, wrapped)| {
                    let data_key = vault::unwrap_for_user(wrapped, &old)?;
                    Ok((*mailbox_id, vault::wrap_for_user(&data_key, &key.row.cert)?))
                })
                .collect::<Result<Vec<_>, AccountError>>()?;
            Ok::<_, AccountError>((password::hash(&new_password)?, key, rewrapped))
        })
        .await?;
        let now = now_ms();
        let actor = Actor::User(user.email.clone());
        let mut tx = self.store.begin().await?;
        repo::set_password_hash(&mut tx, user.id, &hash, now, version).await?;
        end_sessions_and_tokens(&mut tx, &actor, user, "password changed", now).await?;
        keystore::put_user_key(&mut tx, user.id, &key.row, now).await?;
        for (mailbox_id, wrapped) in &rewrapped {
            keystore::put_wrap(&mut tx, *mailbox_id, Holder::User(user.id), wrapped, now).await?;
        }
        // A grant a member confirmed while the key was being made wrapped the mailbox's key
        // for the old key, which this drops: the user would be an active member who cannot
        // read. Start again instead (nothing is written).
        let now_held = keystore::user_wraps(&mut tx, user.id).await?;
        if now_held.len() != rewrapped.len()
            || now_held
                .iter()
                .any(|(m, _)| !rewrapped.iter().any(|(r, _)| r == m))
        {
            return Err(AccountError::Store(StoreError::Conflict(
                "your access to a mailbox changed meanwhile: try again",
            )));
        }
        repo::set_key_origin(&mut tx, user.id, "user").await?;
        let details = json!({ "user_key": key.row.fingerprint, "mailboxes": rewrapped.len() });
        let target = user.email.to_string();
        audit::record(&mut tx, &actor, "user.renew-key", &target, details, now).await?;
        tx.commit().await?;
        Ok(NewOwnKey {
            fingerprint: key.row.fingerprint,
            recovery_code: zeroize::Zeroizing::new(key.recovery_code),
        })
    }

    async fn replace_user_key(
        &self,
        actor: &Actor,
        user: &User,
        material: UserMaterial,
        version: i64,
    ) -> Result<String, AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        repo::set_password_hash(&mut tx, user.id, &material.password_hash, now, version).await?;
        end_sessions_and_tokens(&mut tx, actor, user, "password changed", now).await?;
        keystore::put_user_key(&mut tx, user.id, &material.user_key.row, now).await?;
        repo::set_key_origin(&mut tx, user.id, "operator").await?;
        // The old key is gone: its wraps can never open again, and memberships wait for a
        // new grant from a member or the mailbox recovery code.
        keystore::drop_user_wraps(&mut tx, user.id).await?;
        repo::reset_memberships(&mut tx, user.id).await?;
        if let Some((key, wrap)) = &material.citizen_mailbox
            && let Some((mailbox, _)) = repo::find_mailbox(&mut tx, &user.email).await?
        {
            keystore::put_mailbox_key(&mut tx, mailbox.id, &key.row, now).await?;
            keystore::put_wrap(&mut tx, mailbox.id, Holder::User(user.id), wrap, now).await?;
        }
        let details = json!({ "key": "replaced", "user_key": material.user_key.row.fingerprint });
        audit::record(
            &mut tx,
            actor,
            "user.set-password",
            &user.email.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(material.user_key.recovery_code)
    }

    /// Records that an operator verified a user's identity.
    pub async fn verify_user_identity(
        &self,
        actor: &Actor,
        email: &EmailAddress,
        method: IdentityMethod,
    ) -> Result<Verification, AccountError> {
        let mut tx = self.store.begin().await?;
        let (_, identity_id) = repo::find_user(&mut tx, email)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(email.clone()))?;
        let v = record_verification(&mut tx, actor, identity_id, method, "user", email).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Records that an operator verified an office's identity.
    pub async fn verify_mailbox_identity(
        &self,
        actor: &Actor,
        address: &EmailAddress,
        method: IdentityMethod,
    ) -> Result<Verification, AccountError> {
        let mut tx = self.store.begin().await?;
        let (_, identity_id) = repo::find_mailbox(&mut tx, address)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(address.clone()))?;
        let v =
            record_verification(&mut tx, actor, identity_id, method, "mailbox", address).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Adds an office mailbox: local (with a mailbox key and its recovery code, returned to
    /// show once), or external with a relay target and certificate.
    pub async fn add_office(
        &self,
        actor: &Actor,
        address: &EmailAddress,
        name: &str,
        relay: Option<RelaySpec>,
    ) -> Result<AddedMailbox, AccountError> {
        let name = check_name(name)?;
        let relay = match relay {
            Some(spec) => Some(parse_relay(spec)?),
            None => {
                self.require_local(address, "local office mailboxes")?;
                None
            }
        };
        let kind = if relay.is_some() {
            MailboxKind::External
        } else {
            MailboxKind::Office
        };
        // A local office gets a mailbox key whose only way in, at first, is its recovery code.
        let local_key = if kind == MailboxKind::Office {
            let (name, addr) = (name.to_owned(), address.to_string());
            Some(
                crate::crypto::pool::run(move || {
                    let key = vault::create_mailbox_key(&name, &addr)?;
                    let (wrap, code) = vault::wrap_for_recovery(&key.data_key, &addr)?;
                    Ok::<_, CryptoError>((key, wrap, code))
                })
                .await?,
            )
        } else {
            None
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        if repo::find_mailbox(&mut tx, address).await?.is_some() {
            return Err(AccountError::DuplicateMailbox(address.clone()));
        }
        let identity_id = repo::insert_identity(&mut tx).await?;
        let row = NewMailbox {
            address,
            kind,
            name,
            owner_user_id: None,
            identity_id,
            relay: relay.as_ref(),
            now,
        };
        let mailbox_id = repo::insert_mailbox(&mut tx, &row)
            .await
            .map_err(|e| duplicate_or(e, AccountError::DuplicateMailbox(address.clone())))?;
        let mut recovery_code = None;
        if let Some((key, wrap, code)) = local_key {
            keystore::put_mailbox_key(&mut tx, mailbox_id, &key.row, now).await?;
            keystore::put_wrap(&mut tx, mailbox_id, Holder::Recovery, &wrap, now).await?;
            recovery_code = Some(code);
        }
        let mut details = json!({ "kind": kind, "name": name });
        if let Some(r) = &relay {
            details["relay"] = json!(format!("{}:{}", r.host, r.port));
            details["relay_tls"] = json!(r.tls);
            details["cert_fingerprint"] = json!(r.cert_fingerprint);
        }
        audit::record(
            &mut tx,
            actor,
            "mailbox.add",
            &address.to_string(),
            details,
            now,
        )
        .await?;
        let (mailbox, _) = repo::find_mailbox(&mut tx, address)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(address.clone()))?;
        tx.commit().await?;
        Ok(AddedMailbox {
            mailbox,
            recovery_code,
        })
    }

    /// Every mailbox.
    pub async fn list_mailboxes(&self) -> Result<Vec<Mailbox>, AccountError> {
        let mut conn = self.store.pool().acquire().await?;
        Ok(repo::list_mailboxes(&mut conn).await?)
    }

    /// The members of a mailbox.
    pub async fn members(&self, address: &EmailAddress) -> Result<Vec<Membership>, AccountError> {
        let mut conn = self.store.pool().acquire().await?;
        let (mailbox, _) = repo::find_mailbox(&mut conn, address)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(address.clone()))?;
        Ok(repo::list_members(&mut conn, mailbox.id).await?)
    }

    /// Refuses a user who could not become an office member (before anything is made).
    pub async fn check_member(&self, user: &EmailAddress) -> Result<(), AccountError> {
        let found = self.user(user).await?;
        if found.role != Role::Staff {
            return Err(AccountError::NotStaff {
                user: user.clone(),
                role: found.role,
            });
        }
        Ok(())
    }

    /// Makes a staff user a member of a local office mailbox. The membership stays pending
    /// Tokens, every one or one mailbox's, oldest first (never the token itself).
    pub async fn list_tokens(
        &self,
        mailbox: Option<&EmailAddress>,
    ) -> Result<Vec<repo::CredentialRow>, AccountError> {
        let mut conn = self.store.pool().acquire().await?;
        let which = match mailbox {
            Some(address) => {
                let (mb, _) = repo::find_mailbox(&mut conn, address)
                    .await?
                    .ok_or_else(|| AccountError::UnknownMailbox(address.clone()))?;
                repo::Credentials::Mailbox(mb.id)
            }
            None => repo::Credentials::All,
        };
        Ok(repo::list_credentials(&mut conn, which).await?)
    }

    /// Revokes one token (and, for a read token, its key wrap).
    pub async fn revoke_token(&self, actor: &Actor, id: i64) -> Result<(), AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let row = repo::list_credentials(&mut tx, repo::Credentials::Id(id))
            .await?
            .into_iter()
            .next()
            .filter(|r| r.revoked_at.is_none())
            .ok_or(AccountError::UnknownToken(id))?;
        revoke(
            &mut tx,
            actor,
            repo::Credentials::Id(id),
            &row.mailbox,
            "revoked by an operator",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers the client certificate (DER) of an external office's mail server: over MX
    /// it may then deliver that office's mail from any network. Returns its SHA-256 (hex).
    pub async fn add_office_server_cert(
        &self,
        actor: &Actor,
        office: &EmailAddress,
        cert_der: &[u8],
    ) -> Result<String, AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (mb, _) = repo::find_mailbox(&mut tx, office)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(office.clone()))?;
        if mb.kind != MailboxKind::External {
            return Err(AccountError::NotExternal(office.clone()));
        }
        let fingerprint = hex::encode(Sha256::digest(cert_der));
        if !repo::add_office_server_cert(&mut tx, mb.id, &fingerprint, now).await? {
            return Err(AccountError::ServerCertTaken(fingerprint));
        }
        let details = json!({ "cert_sha256": fingerprint });
        audit::record(
            &mut tx,
            actor,
            "mailbox.server-cert",
            &office.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(fingerprint)
    }

    /// Sets an office mailbox's own send rates per hour (`None`: the configured default;
    /// 0: unlimited); returns them as now stored.
    pub async fn set_office_rate_limits(
        &self,
        actor: &Actor,
        mailbox: &EmailAddress,
        messages: Option<u32>,
        recipients: Option<u32>,
    ) -> Result<(), AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (mb, _) = repo::find_mailbox(&mut tx, mailbox)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(mailbox.clone()))?;
        if mb.kind == MailboxKind::Citizen {
            return Err(AccountError::RatesAreForOffices(mailbox.clone()));
        }
        let limits = (messages.map(i64::from), recipients.map(i64::from));
        repo::set_office_rate_limits(&mut tx, mb.id, limits).await?;
        let details = json!({ "messages_per_hour": messages, "recipients_per_hour": recipients });
        audit::record(
            &mut tx,
            actor,
            "mailbox.rate-limit",
            &mailbox.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a user's membership of an office mailbox: the membership, their wrap of the
    /// mailbox data key, and the read tokens they created for it. (A member who kept a
    /// copy of the data key outside bote is beyond reach; docs/key-hierarchy.md.)
    pub async fn remove_member(
        &self,
        actor: &Actor,
        mailbox: &EmailAddress,
        user: &EmailAddress,
    ) -> Result<(), AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (mb, _) = repo::find_mailbox(&mut tx, mailbox)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(mailbox.clone()))?;
        let (u, _) = repo::find_user(&mut tx, user)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(user.clone()))?;
        if !repo::remove_membership(&mut tx, mb.id, u.id).await? {
            return Err(AccountError::NotAMember {
                user: user.clone(),
                mailbox: mailbox.clone(),
            });
        }
        let which = repo::Credentials::CreatedBy {
            user_id: u.id,
            mailbox_id: Some(mb.id),
        };
        revoke(
            &mut tx,
            actor,
            which,
            &mailbox.to_string(),
            "member removed",
            now,
        )
        .await?;
        let details = json!({ "user": user.to_string() });
        audit::record(
            &mut tx,
            actor,
            "mailbox.remove-member",
            &mailbox.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// until the mailbox key is shared with them (zero access: the operator cannot do that).
    pub async fn add_member(
        &self,
        actor: &Actor,
        mailbox: &EmailAddress,
        user: &EmailAddress,
        recovery_code: Option<Password>,
    ) -> Result<MembershipState, AccountError> {
        let mut conn = self.store.pool().acquire().await?;
        let (mb, _) = repo::find_mailbox(&mut conn, mailbox)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(mailbox.clone()))?;
        if mb.kind != MailboxKind::Office {
            return Err(AccountError::NotLocalOffice {
                mailbox: mailbox.clone(),
                kind: mb.kind,
            });
        }
        let (u, _) = repo::find_user(&mut conn, user)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(user.clone()))?;
        if u.role != Role::Staff {
            return Err(AccountError::NotStaff {
                user: user.clone(),
                role: u.role,
            });
        }
        let existing = repo::membership_state(&mut conn, mb.id, u.id).await?;
        let someone_active = repo::list_members(&mut conn, mb.id)
            .await?
            .iter()
            .any(|m| m.state == MembershipState::Active);
        if !someone_active && recovery_code.is_none() {
            // Nobody could ever complete the grant: it would stay pending forever.
            return Err(AccountError::NoGrantor(mailbox.clone()));
        }
        if existing == Some(MembershipState::Active)
            || (existing.is_some() && recovery_code.is_none())
        {
            return Err(AccountError::AlreadyMember {
                user: user.clone(),
                mailbox: mailbox.clone(),
            });
        }
        // With the mailbox recovery code the operator can complete the grant at once: the
        // code opens the data key, which is then encrypted to the member's public user key.
        let grant = match recovery_code {
            Some(code) => {
                let wrap = keystore::wrap(&mut conn, mb.id, Holder::Recovery)
                    .await?
                    .ok_or_else(|| AccountError::WrongRecoveryCode)?;
                let user_key = keystore::user_key(&mut conn, u.id)
                    .await?
                    .ok_or_else(|| AccountError::UnknownUser(user.clone()))?;
                let address = mailbox.to_string();
                let fingerprint = user_key.fingerprint.clone();
                let wrapped = crate::crypto::pool::run(move || {
                    let data_key = vault::unwrap_with_recovery(&wrap, &code, &address)
                        .map_err(|_| AccountError::WrongRecoveryCode)?;
                    Ok::<_, AccountError>(vault::wrap_for_user(&data_key, &user_key.cert)?)
                })
                .await?;
                Some((wrapped, fingerprint))
            }
            None => None,
        };
        drop(conn);
        let state = if grant.is_some() {
            MembershipState::Active
        } else {
            MembershipState::Pending
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        if let Some((_, fingerprint)) = &grant {
            // The key wrapped to must still be the user's: one renewed meanwhile would
            // leave an active member who cannot read.
            repo::lock_user(&mut tx, u.id).await?;
            let now_key = keystore::user_key(&mut tx, u.id).await?;
            if now_key.is_none_or(|k| k.fingerprint != *fingerprint) {
                return Err(AccountError::Store(StoreError::Conflict(
                    "the user's key changed meanwhile: try again",
                )));
            }
        }
        if existing.is_some() {
            repo::set_membership_state(&mut tx, mb.id, u.id, state).await?;
        } else {
            repo::insert_membership(&mut tx, mb.id, u.id, state, &actor.to_string(), now)
                .await
                .map_err(|e| {
                    duplicate_or(
                        e,
                        AccountError::AlreadyMember {
                            user: user.clone(),
                            mailbox: mailbox.clone(),
                        },
                    )
                })?;
        }
        if let Some((wrap, _)) = &grant {
            keystore::put_wrap(&mut tx, mb.id, Holder::User(u.id), wrap, now).await?;
        }
        let details = json!({ "user": u.email.to_string(), "state": state });
        audit::record(
            &mut tx,
            actor,
            "mailbox.add-member",
            &mailbox.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(state)
    }
}

impl Accounts {
    /// Creates a send-only token for office software, bound to an office mailbox and
    /// optionally to a client certificate (DER); returns the token, to show once. Send-only
    /// because the operator holds no mailbox key: read tokens come from members' sessions.
    pub async fn create_send_token(
        &self,
        actor: &Actor,
        mailbox: &EmailAddress,
        client_cert_der: Option<&[u8]>,
    ) -> Result<String, AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (mb, _) = repo::find_mailbox(&mut tx, mailbox)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(mailbox.clone()))?;
        if mb.kind == MailboxKind::Citizen {
            return Err(AccountError::NotAnOffice(mailbox.clone()));
        }
        let token = Credential::generate(Kind::MailboxToken);
        let client_cert_sha256 = client_cert_der.map(|der| hex::encode(Sha256::digest(der)));
        let actor_name = actor.to_string();
        let row = repo::NewCredential {
            mailbox_id: mb.id,
            scope: "send",
            token_hash: token.digest(),
            client_cert_sha256: client_cert_sha256.clone(),
            created_by: &actor_name,
            creator_user_id: None,
            now,
        };
        let id = repo::insert_credential(&mut tx, &row).await?;
        let details =
            json!({ "credential": id, "scope": "send", "client_cert_sha256": client_cert_sha256 });
        audit::record(
            &mut tx,
            actor,
            "token.create",
            &mailbox.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(token.expose().to_owned())
    }
}

/// Everything CPU-heavy that making a user needs, computed off the async threads.
struct UserMaterial {
    password_hash: String,
    user_key: vault::NewUserKey,
    /// For citizens: their mailbox key and its data key wrapped for the user key.
    citizen_mailbox: Option<(vault::NewMailboxKey, Vec<u8>)>,
}

/// A password change, a disabled account or a removed membership ends what the user's
/// old access opened: every session (which holds their user key, sealed), and every read
/// token they created (which holds a mailbox data key), with the tokens' key wraps.
async fn end_sessions_and_tokens(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    user: &User,
    why: &str,
    now: i64,
) -> Result<(), AccountError> {
    crate::store::sessions::delete_for_user(tx, user.id).await?;
    let which = repo::Credentials::CreatedBy {
        user_id: user.id,
        mailbox_id: None,
    };
    revoke(tx, actor, which, &user.email.to_string(), why, now).await
}

/// Revokes the credentials `which` selects and audits it (nothing to audit if none was
/// live).
pub async fn revoke(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    which: repo::Credentials,
    target: &str,
    why: &str,
    now: i64,
) -> Result<(), AccountError> {
    let ids = repo::revoke_credentials(tx, which, now).await?;
    if !ids.is_empty() {
        let details = json!({ "credentials": ids, "reason": why });
        audit::record(tx, actor, "token.revoke", target, details, now).await?;
    }
    Ok(())
}

fn new_user_material(
    name: &str,
    email: &str,
    password: &str,
    citizen: bool,
) -> Result<UserMaterial, AccountError> {
    let password_hash = password::hash(password)?;
    let user_key = vault::create_user_key(name, email, password)?;
    let citizen_mailbox = if citizen {
        let key = vault::create_mailbox_key(name, email)?;
        let wrap = vault::wrap_for_user(&key.data_key, &user_key.row.cert)?;
        Some((key, wrap))
    } else {
        None
    };
    Ok(UserMaterial {
        password_hash,
        user_key,
        citizen_mailbox,
    })
}

async fn record_verification(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    identity_id: i64,
    method: IdentityMethod,
    kind: &str,
    target: &EmailAddress,
) -> Result<Verification, AccountError> {
    let now = now_ms();
    let v = Verification {
        method,
        verified_by: actor.to_string(),
        verified_at: now,
    };
    repo::verify_identity(tx, identity_id, &v).await?;
    let action = format!("{kind}.verify-identity");
    audit::record(
        tx,
        actor,
        &action,
        &target.to_string(),
        json!({ "method": method }),
        now,
    )
    .await?;
    Ok(v)
}

fn check_name(name: &str) -> Result<&str, AccountError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AccountError::Name("it is empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(AccountError::Name("at most 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(AccountError::Name("it contains a control character"));
    }
    Ok(name)
}

fn duplicate_or(e: StoreError, duplicate: AccountError) -> AccountError {
    if e.is_unique_violation() {
        duplicate
    } else {
        AccountError::Store(e)
    }
}

/// Parses `HOST:PORT` (`[v6]:PORT` for IPv6 literals) and the office certificate.
fn parse_relay(spec: RelaySpec) -> Result<Relay, AccountError> {
    let bad = || AccountError::RelayTarget(spec.target.clone());
    let (host, port) = spec.target.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        v6.to_owned()
    } else if host.parse::<std::net::Ipv4Addr>().is_ok() {
        host.to_owned()
    } else {
        DomainName::parse(host)
            .map_err(|_| bad())?
            .as_str()
            .to_owned()
    };
    let cert = crypto::RecipientCert::parse(&spec.cert).map_err(AccountError::OfficeCertificate)?;
    Ok(Relay {
        host,
        port,
        tls: spec.tls,
        cert: cert.binary,
        cert_fingerprint: cert.fingerprint,
    })
}
