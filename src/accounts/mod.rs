//! Accounts: users, roles, identity records, mailboxes and memberships.
//!
//! The types here are pure (no I/O); [`service`] holds the operations that validate input,
//! write through the store and leave an audit entry in the same transaction.

pub mod credential;
pub mod grants;
pub mod password;
pub mod service;

use std::fmt;

use crate::address::EmailAddress;

named_enum!(
    /// What a user may do.
    Role, "role", {
        /// Sends to offices, receives notices; owns a mailbox at their address.
        Citizen => "citizen",
        /// Member of one or more office mailboxes.
        Staff => "staff",
        /// Searches and exports evidence; never reads bodies.
        Legal => "legal",
        /// Manages accounts; never reads bodies.
        Admin => "admin",
    }
);

named_enum!(
    /// How an identity was verified.
    IdentityMethod, "identity method", {
        /// In person, with an identity document.
        InPerson => "in-person",
        /// With the electronic ID card (eID).
        Eid => "eid",
        /// With a qualified electronic signature.
        QualifiedSignature => "qualified-signature",
    }
);

named_enum!(
    /// How strongly a sender or reader was authenticated (spec §2).
    AuthLevel, "authentication level", {
        /// Not authenticated by this gateway (mail from a non-ERDS origin).
        None => "none",
        /// One factor.
        Normal => "normal",
        /// Two factors, or a token with its registered client certificate.
        High => "high",
    }
);

named_enum!(
    /// What kind of mailbox an address is.
    MailboxKind, "mailbox kind", {
        /// A citizen's own mailbox.
        Citizen => "citizen",
        /// An office mailbox read by its staff in the web inbox.
        Office => "office",
        /// An office whose own mail server receives relayed, encrypted mail.
        External => "external",
    }
);

named_enum!(
    /// TLS policy towards an external office's mail server.
    RelayTls, "relay TLS mode", {
        /// Verified TLS or no delivery.
        Required => "required",
        /// TLS if offered, unverified.
        Opportunistic => "opportunistic",
        /// Plain SMTP.
        None => "none",
    }
);

named_enum!(
    /// State of a staff member's access to an office mailbox.
    MembershipState, "membership state", {
        /// Recorded by an operator; the mailbox key is not yet shared with the member.
        Pending => "pending",
        /// The member can open the mailbox.
        Active => "active",
    }
);

/// Who did something, as written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator at the command line (the Unix account name).
    Operator(String),
    /// A logged-in user.
    User(EmailAddress),
    /// Office software, by the id of the token it presented.
    Token(i64),
    /// The gateway itself.
    System,
}

impl Actor {
    /// The operator running this process, named by its Unix account.
    pub fn current_operator() -> Self {
        let name = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Self::Operator(name)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operator(name) => write!(f, "operator:{name}"),
            Self::User(email) => write!(f, "user:{email}"),
            Self::Token(id) => write!(f, "token:{id}"),
            Self::System => f.write_str("system"),
        }
    }
}

/// An identity record: whether and how a person or organisation was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Verification, if any.
    pub verification: Option<Verification>,
}

/// A completed identity verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// How.
    pub method: IdentityMethod,
    /// Who verified (audit actor string).
    pub verified_by: String,
    /// When (unix ms).
    pub verified_at: i64,
}

/// A user as stored (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login address.
    pub email: EmailAddress,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Where to send arrival notices, if wanted.
    pub notify_email: Option<EmailAddress>,
    /// Identity record.
    pub identity: Identity,
    /// Whether login is refused.
    pub disabled: bool,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// The user made their key (changed their password themselves); else an operator's
    /// command made it, under a password the operator chose (`users.key_origin`).
    pub own_key: bool,
}

/// Where and how mail for an external office is relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Host name or IP of the office's mail server.
    pub host: String,
    /// Its SMTP port.
    pub port: u16,
    /// TLS policy.
    pub tls: RelayTls,
    /// The office's OpenPGP certificate (binary).
    pub cert: Vec<u8>,
    /// Its fingerprint (upper-case hex).
    pub cert_fingerprint: String,
}

/// A mailbox as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Row id.
    pub id: i64,
    /// Address.
    pub address: EmailAddress,
    /// Kind.
    pub kind: MailboxKind,
    /// Display name (office name or citizen's name).
    pub name: String,
    /// The citizen owning it (citizen mailboxes only).
    pub owner_user_id: Option<i64>,
    /// Identity record of the office (for citizens: shared with the owner).
    pub identity: Identity,
    /// Relay target (external offices only).
    pub relay: Option<Relay>,
    /// Whether it accepts mail.
    pub disabled: bool,
    /// Creation time (unix ms).
    pub created_at: i64,
}

/// A staff member's link to an office mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The mailbox address.
    pub mailbox: EmailAddress,
    /// The member's login.
    pub user: EmailAddress,
    /// Pending until the mailbox key is shared.
    pub state: MembershipState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_choices() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
        let e = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            e,
            "unknown role `root`: expected one of citizen, staff, legal, admin"
        );
        assert_eq!(
            "eid".parse::<IdentityMethod>().unwrap(),
            IdentityMethod::Eid
        );
    }

    #[test]
    fn actors_render_for_the_audit_trail() {
        assert_eq!(Actor::Operator("ops".into()).to_string(), "operator:ops");
        let a = EmailAddress::parse("a@b.example").unwrap();
        assert_eq!(Actor::User(a).to_string(), "user:a@b.example");
    }
}
