//! Bearer credentials: what they look like, parsed once at the edge into a [`Credential`],
//! and how they are stored (only their SHA-256).
//!
//! Each kind has its own prefix, and neither prefix begins the other; a credential is the
//! prefix followed by exactly [`SECRET_LEN`] URL-safe base64 characters (256 random bits),
//! so the kind is decided by the whole string, never by a prefix test alone. Credentials
//! issued before these prefixes (`bote_s_…` sessions, `bote_…` tokens) are still read:
//! their lengths differ, so they cannot be mistaken for each other or for the new forms
//! (docs/decisions.md, "Credential prefixes").

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix of login session tokens.
pub const SESSION_PREFIX: &str = "bote_session_";
/// Prefix of mailbox credentials (send-only and read tokens).
pub const TOKEN_PREFIX: &str = "bote_token_";
/// Characters of the random part: 32 bytes in unpadded base64url.
pub const SECRET_LEN: usize = 43;

/// Earlier spellings, still accepted: (prefix, kind).
const LEGACY: [(&str, Kind); 2] = [("bote_s_", Kind::Session), ("bote_", Kind::MailboxToken)];

/// What a credential opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A login session of a user.
    Session,
    /// A token bound to one mailbox (send-only or read).
    MailboxToken,
}

/// A parsed bearer credential. The text is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    kind: Kind,
    text: Zeroizing<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({:?}, ***)", self.kind)
    }
}

impl Credential {
    /// Parses a presented credential; `None` for anything that is not exactly one.
    pub fn parse(text: &str) -> Option<Self> {
        let kind = [
            (SESSION_PREFIX, Kind::Session),
            (TOKEN_PREFIX, Kind::MailboxToken),
        ]
        .into_iter()
        .chain(LEGACY)
        .find_map(|(prefix, kind)| {
            text.strip_prefix(prefix)
                .filter(|rest| is_secret(rest))
                .map(|_| kind)
        })?;
        Some(Self {
            kind,
            text: Zeroizing::new(text.to_owned()),
        })
    }

    /// A fresh credential of `kind`.
    pub fn generate(kind: Kind) -> Self {
        let prefix = match kind {
            Kind::Session => SESSION_PREFIX,
            Kind::MailboxToken => TOKEN_PREFIX,
        };
        let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        Self {
            kind,
            text: Zeroizing::new(format!("{prefix}{secret}")),
        }
    }

    /// What it opens.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The text, to hand to its holder once (never to log or store).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What is stored of it: its SHA-256.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

fn is_secret(s: &str) -> bool {
    s.len() == SECRET_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_part(first: &str) -> String {
        let mut s = first.to_owned();
        while s.len() < SECRET_LEN {
            s.push('A');
        }
        s
    }

    #[test]
    fn every_kind_parses_as_itself() {
        for kind in [Kind::Session, Kind::MailboxToken] {
            for _ in 0..100 {
                let c = Credential::generate(kind);
                assert_eq!(Credential::parse(c.expose()).map(|p| p.kind()), Some(kind));
            }
        }
    }

    #[test]
    fn prefixes_never_decide_alone() {
        // An older token whose random part happens to begin with `s_` (about one in 4,096)
        // is a token, not a session; one beginning with `session_` or `token_` likewise.
        for first in ["s_", "session_", "token_", "s_AAA"] {
            let legacy = format!("bote_{}", random_part(first));
            assert_eq!(
                Credential::parse(&legacy).map(|c| c.kind()),
                Some(Kind::MailboxToken),
                "{legacy}"
            );
        }
        let legacy_session = format!("bote_s_{}", random_part(""));
        assert_eq!(
            Credential::parse(&legacy_session).map(|c| c.kind()),
            Some(Kind::Session)
        );
        assert!(!SESSION_PREFIX.starts_with(TOKEN_PREFIX));
        assert!(!TOKEN_PREFIX.starts_with(SESSION_PREFIX));
    }

    #[test]
    fn anything_else_is_refused() {
        let good = Credential::generate(Kind::Session).expose().to_owned();
        for bad in [
            "",
            "bote_",
            "bote_session_",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &format!("{}!{}", &good[..20], &good[21..]),
            "Bearer x",
            &good.to_uppercase(),
        ] {
            assert!(Credential::parse(bad).is_none(), "{bad}");
        }
    }
}
