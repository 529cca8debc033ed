//! Passwords: policy and argon2id hashing (PHC strings, OWASP-recommended parameters).

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use zeroize::Zeroizing;

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; offices get more).
pub const MIN_LEN: usize = 10;
/// Longest password accepted, to bound hashing work per login attempt.
pub const MAX_LEN: usize = 1024;

/// A password held in memory that is wiped when dropped.
pub type Password = Zeroizing<String>;

/// Why a password is refused or cannot be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short.
    #[error("password too short: at least {MIN_LEN} characters")]
    TooShort,
    /// Too long.
    #[error("password too long: at most {MAX_LEN} bytes")]
    TooLong,
    /// Contains a control character (often a pasted newline or tab).
    #[error("password contains a control character")]
    Control,
    /// The hashing library failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks the policy; the password itself is never part of an error.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordError::Control);
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // 19 MiB, 2 passes, 1 lane: the OWASP baseline for argon2id, which is also the argon2
    // crate's constant default (no fallible construction at run time).
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// A PHC string with the same parameters as every real hash, for logins of unknown users:
/// checking it costs what checking a real password costs, so response times do not tell
/// which accounts exist. A constant, so it cannot fail to exist (its password is unknown to
/// bote and irrelevant: the result is always discarded).
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bpuj4fLeP5ioA0Iav1+c5g$1s52V86GG37ZNx84DT04B1HLsR9RlpCYawIc33b7QC4";

/// Hashes a password that meets the policy. CPU-heavy: call from a blocking thread.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check_policy(password)?;
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// True when `password` matches the stored PHC string. CPU-heavy: call from a blocking thread.
pub fn verify(password: &str, phc: &str) -> bool {
    argon2().verify_password(password.as_bytes(), phc).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_argon2id_and_verifies() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterz", &phc));
        assert_ne!(
            phc,
            hash("correct horse battery").unwrap(),
            "salt must differ"
        );
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_costs() {
        let real = hash("correct horse battery").unwrap();
        let params = |phc: &str| phc.split('$').nth(3).unwrap().to_owned();
        assert_eq!(params(DUMMY_HASH), params(&real));
        assert!(argon2::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify("correct horse battery", DUMMY_HASH));
    }

    #[test]
    fn policy_is_enforced() {
        assert!(matches!(
            check_policy("short"),
            Err(PasswordError::TooShort)
        ));
        assert!(matches!(
            check_policy(&"x".repeat(1025)),
            Err(PasswordError::TooLong)
        ));
        assert!(matches!(
            check_policy("has a\nnewline"),
            Err(PasswordError::Control)
        ));
        assert!(check_policy("ten chars!").is_ok());
    }
}
