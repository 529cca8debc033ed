//! Account operations: validate, write in one transaction with an audit entry, commit.
//!
//! Every operation either changes exactly what it says and records it in the audit trail,
//! or returns an [`AccountError`] and changes nothing (checks happen before the first write,
//! and the transaction rolls back on any later failure).

use serde_json::json;

use super::password::{self, Password, PasswordError};
use super::{
    Actor, IdentityMethod, Mailbox, MailboxKind, Membership, MembershipState, Relay, RelayTls,
    Role, User, Verification,
};
use crate::address::{AddressError, DomainName, EmailAddress};
use crate::clock::now_ms;
use crate::crypto::{self, CryptoError};
use crate::store::accounts::{self as repo, NewMailbox, NewUser};
use crate::store::{Store, StoreError, audit};

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
    /// Office certificate unusable.
    #[error("office certificate: {0}")]
    Certificate(#[from] CryptoError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

    /// Adds a user; a citizen also gets a mailbox at their address.
    pub async fn add_user(&self, actor: &Actor, new: AddUser) -> Result<User, AccountError> {
        let name = check_name(&new.name)?;
        if new.role == Role::Citizen {
            self.require_local(&new.email, "citizen mailboxes")?;
        }
        let phc = hash_off_thread(new.password).await?;
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
            password_hash: &phc,
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
            repo::insert_mailbox(&mut tx, &mailbox).await?;
        }
        let details = json!({ "role": new.role, "name": name });
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
        Ok(user)
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

    /// Replaces a user's password.
    pub async fn set_password(
        &self,
        actor: &Actor,
        email: &EmailAddress,
        password: Password,
    ) -> Result<(), AccountError> {
        // Look the user up first so a typo in the address fails before the slow hash.
        self.user(email).await?;
        let phc = hash_off_thread(password).await?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (user, _) = repo::find_user(&mut tx, email)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(email.clone()))?;
        repo::set_password_hash(&mut tx, user.id, &phc, now).await?;
        audit::record(
            &mut tx,
            actor,
            "user.set-password",
            &email.to_string(),
            json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
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

    /// Adds an office mailbox: local, or external with a relay target and certificate.
    pub async fn add_office(
        &self,
        actor: &Actor,
        address: &EmailAddress,
        name: &str,
        relay: Option<RelaySpec>,
    ) -> Result<Mailbox, AccountError> {
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
        repo::insert_mailbox(&mut tx, &row)
            .await
            .map_err(|e| duplicate_or(e, AccountError::DuplicateMailbox(address.clone())))?;
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
        Ok(mailbox)
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

    /// Makes a staff user a member of a local office mailbox. The membership stays pending
    /// until the mailbox key is shared with them (zero access: the operator cannot do that).
    pub async fn add_member(
        &self,
        actor: &Actor,
        mailbox: &EmailAddress,
        user: &EmailAddress,
    ) -> Result<MembershipState, AccountError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let (mb, _) = repo::find_mailbox(&mut tx, mailbox)
            .await?
            .ok_or_else(|| AccountError::UnknownMailbox(mailbox.clone()))?;
        if mb.kind != MailboxKind::Office {
            return Err(AccountError::NotLocalOffice {
                mailbox: mailbox.clone(),
                kind: mb.kind,
            });
        }
        let (u, _) = repo::find_user(&mut tx, user)
            .await?
            .ok_or_else(|| AccountError::UnknownUser(user.clone()))?;
        if u.role != Role::Staff {
            return Err(AccountError::NotStaff {
                user: user.clone(),
                role: u.role,
            });
        }
        let state = MembershipState::Pending;
        let already = || AccountError::AlreadyMember {
            user: user.clone(),
            mailbox: mailbox.clone(),
        };
        repo::insert_membership(&mut tx, mb.id, u.id, state, &actor.to_string(), now)
            .await
            .map_err(|e| duplicate_or(e, already()))?;
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

async fn hash_off_thread(password: Password) -> Result<String, AccountError> {
    password::check_policy(&password)?;
    let phc = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))??;
    Ok(phc)
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
    let cert = crypto::RecipientCert::parse(&spec.cert)?;
    Ok(Relay {
        host,
        port,
        tls: spec.tls,
        cert: cert.binary,
        cert_fingerprint: cert.fingerprint,
    })
}
