//! The zero-access key hierarchy (spec §5; docs/key-hierarchy.md): who can open which
//! mailbox key, and with which secret. Pure and CPU-bound (run it on the crypto pool); the
//! rows it produces are stored by `store::vault`.
//!
//! ```text
//! password ──Argon2id──┐
//!                      ├─► user secret key (OpenPGP) ──decrypts──► data key ─► mailbox secret key
//! user recovery code ──┘                                   ▲
//!                         mailbox recovery code ──HKDF─────┤ (office mailboxes)
//!                         read token ─────────────HKDF─────┘
//! ```
//!
//! Architecture invariant: no function here takes or returns a secret that the gateway
//! stores; every secret that opens something comes from a person (password, recovery code)
//! or a client (token, session secret) at the moment of use.

use sequoia_openpgp::Cert;
use zeroize::Zeroizing;

use crate::crypto::keywrap::{self, Key32};
use crate::crypto::{CryptoError, mailbox};

/// Key-derivation purposes: a secret derived for one can never open another.
const PURPOSE_USER_RECOVERY: &str = "user-recovery";
const PURPOSE_MAILBOX_RECOVERY: &str = "mailbox-recovery";

/// The stored material of a user key.
#[derive(Debug, Clone)]
pub struct UserKeyRow {
    /// Public certificate (binary).
    pub cert: Vec<u8>,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Argon2id salt.
    pub password_salt: Vec<u8>,
    /// Secret key sealed under the password-derived key.
    pub secret_by_password: Vec<u8>,
    /// Secret key sealed under the recovery-code-derived key.
    pub secret_by_recovery: Vec<u8>,
}

/// The stored material of a mailbox key.
#[derive(Debug, Clone)]
pub struct MailboxKeyRow {
    /// Public certificate (binary).
    pub cert: Vec<u8>,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Secret key sealed under the mailbox's data key.
    pub sealed_secret: Vec<u8>,
}

/// A freshly made user key: what to store, and the recovery code to show once.
#[derive(Debug)]
pub struct NewUserKey {
    /// To store.
    pub row: UserKeyRow,
    /// To print once (`recovery-code: …`); never stored.
    pub recovery_code: String,
}

/// A freshly made mailbox key: what to store and its data key (to wrap for holders).
#[derive(Debug)]
pub struct NewMailboxKey {
    /// To store.
    pub row: MailboxKeyRow,
    /// The data key, in memory only until wrapped.
    pub data_key: Key32,
}

fn user_context(fingerprint: &str) -> String {
    format!("user-secret:{fingerprint}")
}

fn mailbox_context(address: &str) -> String {
    format!("mailbox-secret:{}", address.to_ascii_lowercase())
}

fn recovery_context(address: &str) -> String {
    format!("data-key:{}", address.to_ascii_lowercase())
}

/// Creates a user's key, sealed under `password` and under a new recovery code.
pub fn create_user_key(name: &str, email: &str, password: &str) -> Result<NewUserKey, CryptoError> {
    let cert = mailbox::generate(name, email)?;
    let secret = mailbox::secret_bytes(&cert)?;
    let fingerprint = cert.fingerprint().to_hex();
    let salt: [u8; 16] = rand::random();
    let by_password = Key32::from_password(password, &salt)?;
    let recovery_code = keywrap::recovery_code();
    let by_recovery = Key32::from_secret(
        keywrap::normalise_recovery_code(&recovery_code).as_bytes(),
        PURPOSE_USER_RECOVERY,
    );
    let context = user_context(&fingerprint);
    Ok(NewUserKey {
        row: UserKeyRow {
            cert: mailbox::public_bytes(&cert)?,
            secret_by_password: keywrap::seal(&by_password, &secret, &context)?,
            secret_by_recovery: keywrap::seal(&by_recovery, &secret, &context)?,
            password_salt: salt.to_vec(),
            fingerprint,
        },
        recovery_code,
    })
}

/// Opens a user's secret key with their password.
pub fn unlock_user_with_password(row: &UserKeyRow, password: &str) -> Result<Cert, CryptoError> {
    let salt: [u8; 16] = row
        .password_salt
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Unwrap("stored salt has the wrong length".into()))?;
    let key = Key32::from_password(password, &salt)?;
    let secret = keywrap::open(
        &key,
        &row.secret_by_password,
        &user_context(&row.fingerprint),
    )?;
    mailbox::parse_tsk(&secret)
}

/// Opens a user's secret key with their recovery code.
pub fn unlock_user_with_recovery(row: &UserKeyRow, code: &str) -> Result<Cert, CryptoError> {
    let key = Key32::from_secret(
        keywrap::normalise_recovery_code(code).as_bytes(),
        PURPOSE_USER_RECOVERY,
    );
    let secret = keywrap::open(
        &key,
        &row.secret_by_recovery,
        &user_context(&row.fingerprint),
    )?;
    mailbox::parse_tsk(&secret)
}

/// Re-seals an unlocked user key under a new password (a password change that keeps the key).
pub fn reseal_user_password(
    row: &UserKeyRow,
    user_secret: &Cert,
    new_password: &str,
) -> Result<UserKeyRow, CryptoError> {
    let secret = mailbox::secret_bytes(user_secret)?;
    let salt: [u8; 16] = rand::random();
    let key = Key32::from_password(new_password, &salt)?;
    Ok(UserKeyRow {
        password_salt: salt.to_vec(),
        secret_by_password: keywrap::seal(&key, &secret, &user_context(&row.fingerprint))?,
        ..row.clone()
    })
}

/// Creates a mailbox key and its data key.
pub fn create_mailbox_key(name: &str, address: &str) -> Result<NewMailboxKey, CryptoError> {
    let cert = mailbox::generate(name, address)?;
    let data_key = Key32::random();
    let secret = mailbox::secret_bytes(&cert)?;
    Ok(NewMailboxKey {
        row: MailboxKeyRow {
            cert: mailbox::public_bytes(&cert)?,
            fingerprint: cert.fingerprint().to_hex(),
            sealed_secret: keywrap::seal(&data_key, &secret, &mailbox_context(address))?,
        },
        data_key,
    })
}

/// Opens a mailbox's secret key with its data key.
pub fn open_mailbox_key(
    row: &MailboxKeyRow,
    data_key: &Key32,
    address: &str,
) -> Result<Cert, CryptoError> {
    let secret = keywrap::open(data_key, &row.sealed_secret, &mailbox_context(address))?;
    mailbox::parse_tsk(&secret)
}

/// Wraps a data key for a user: encrypted to their (public) user certificate, so anyone who
/// holds the data key can grant it, and only the user can open it.
pub fn wrap_for_user(data_key: &Key32, user_cert: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cert = <Cert as sequoia_openpgp::parse::Parse<Cert>>::from_bytes(user_cert)
        .map_err(|e| CryptoError::NotACert(e.to_string()))?;
    mailbox::encrypt(&[&cert], data_key.as_bytes())
}

/// Opens a data key wrapped for a user with the user's unlocked key.
pub fn unwrap_for_user(wrapped: &[u8], user_secret: &Cert) -> Result<Key32, CryptoError> {
    let bytes: Zeroizing<Vec<u8>> = mailbox::decrypt(user_secret, wrapped)?;
    Key32::from_bytes(&bytes)
}

/// Wraps a data key under a new mailbox recovery code; returns (wrap, code to print once).
pub fn wrap_for_recovery(
    data_key: &Key32,
    address: &str,
) -> Result<(Vec<u8>, String), CryptoError> {
    let code = keywrap::recovery_code();
    let key = Key32::from_secret(
        keywrap::normalise_recovery_code(&code).as_bytes(),
        PURPOSE_MAILBOX_RECOVERY,
    );
    let wrapped = keywrap::seal(&key, data_key.as_bytes(), &recovery_context(address))?;
    Ok((wrapped, code))
}

/// Opens a data key with the mailbox recovery code.
pub fn unwrap_with_recovery(
    wrapped: &[u8],
    code: &str,
    address: &str,
) -> Result<Key32, CryptoError> {
    let key = Key32::from_secret(
        keywrap::normalise_recovery_code(code).as_bytes(),
        PURPOSE_MAILBOX_RECOVERY,
    );
    let bytes = keywrap::open(&key, wrapped, &recovery_context(address))?;
    Key32::from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reaches_the_mailbox_key_only_through_their_own_secrets() {
        let user =
            create_user_key("Bernd", "bernd@lemgo.example", "a long enough password").unwrap();
        assert!(unlock_user_with_password(&user.row, "wrong password!").is_err());
        let by_password = unlock_user_with_password(&user.row, "a long enough password").unwrap();
        let by_code =
            unlock_user_with_recovery(&user.row, &user.recovery_code.to_lowercase()).unwrap();
        assert_eq!(by_password.fingerprint(), by_code.fingerprint());
        assert!(unlock_user_with_recovery(&user.row, &keywrap::recovery_code()).is_err());

        let office = create_mailbox_key("Bauamt", "bauamt@lemgo.example").unwrap();
        let (recovery_wrap, office_code) =
            wrap_for_recovery(&office.data_key, "bauamt@lemgo.example").unwrap();
        // An operator with only the office recovery code grants the member access.
        let data_key =
            unwrap_with_recovery(&recovery_wrap, &office_code, "bauamt@lemgo.example").unwrap();
        assert!(
            unwrap_with_recovery(&recovery_wrap, &office_code, "ordnungsamt@lemgo.example")
                .is_err()
        );
        let grant = wrap_for_user(&data_key, &user.row.cert).unwrap();
        // The member opens it with their password alone.
        let member_key = unwrap_for_user(&grant, &by_password).unwrap();
        let mailbox_secret =
            open_mailbox_key(&office.row, &member_key, "bauamt@lemgo.example").unwrap();
        assert_eq!(
            mailbox_secret.fingerprint().to_hex(),
            office.row.fingerprint
        );

        // A password change keeps the key; the old password stops working.
        let changed =
            reseal_user_password(&user.row, &by_password, "another long password").unwrap();
        assert!(unlock_user_with_password(&changed, "a long enough password").is_err());
        assert_eq!(
            unlock_user_with_password(&changed, "another long password")
                .unwrap()
                .fingerprint(),
            by_password.fingerprint()
        );
        // Nothing stored contains the secret key in clear.
        let tsk = mailbox::secret_bytes(&mailbox_secret).unwrap();
        for stored in [
            &office.row.sealed_secret,
            &recovery_wrap,
            &grant,
            &user.row.secret_by_password,
        ] {
            assert!(!stored.windows(32).any(|w| tsk.windows(32).any(|t| t == w)));
        }
    }
}
