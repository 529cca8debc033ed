//! Bearer tokens: how they look and how they are stored (only their SHA-256).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of login session tokens.
pub const SESSION_PREFIX: &str = "bote_s_";
/// Prefix of mailbox credentials (send-only and read tokens).
pub const CREDENTIAL_PREFIX: &str = "bote_";

/// A new token: 256 random bits, URL-safe base64, behind a prefix that secret scanners and
/// people recognise.
pub fn new(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// What is stored of a token: its SHA-256.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
