//! OpenPGP with sequoia (OpenSSL backend): certificate checks now; keys, signing and
//! encryption as the message core lands (see docs/ARCHITECTURE.md).
//!
//! Everything here is CPU-bound and synchronous; async callers use `spawn_blocking`.

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;

/// The policy bote applies to every certificate and signature it accepts.
pub fn policy() -> StandardPolicy<'static> {
    StandardPolicy::new()
}

/// Why OpenPGP data was refused.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Not an OpenPGP certificate at all.
    #[error("not an OpenPGP certificate: {0}")]
    NotACert(String),
    /// A secret key was given where a public certificate belongs.
    #[error("the file contains secret key material; give the public certificate only")]
    SecretKey,
    /// The certificate fails the standard policy (expired, revoked, weak algorithms).
    #[error("certificate {fingerprint} is not valid: {reason}")]
    Invalid {
        /// Its fingerprint.
        fingerprint: String,
        /// Why.
        reason: String,
    },
    /// No key that can receive encrypted mail.
    #[error("certificate {0} has no valid encryption-capable key")]
    NoEncryptionKey(String),
}

/// A certificate accepted as a recipient of encrypted mail.
#[derive(Debug, Clone)]
pub struct RecipientCert {
    /// The certificate, binary (public parts only).
    pub binary: Vec<u8>,
    /// Upper-case hex fingerprint.
    pub fingerprint: String,
}

impl RecipientCert {
    /// Parses an armoured or binary certificate and checks it can receive encrypted mail now.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let cert = Cert::from_bytes(bytes).map_err(|e| CryptoError::NotACert(e.to_string()))?;
        if cert.is_tsk() {
            return Err(CryptoError::SecretKey);
        }
        let fingerprint = cert.fingerprint().to_hex();
        let policy = policy();
        let valid = cert
            .with_policy(&policy, None)
            .map_err(|e| CryptoError::Invalid {
                fingerprint: fingerprint.clone(),
                reason: e.to_string(),
            })?;
        valid.alive().map_err(|e| CryptoError::Invalid {
            fingerprint: fingerprint.clone(),
            reason: e.to_string(),
        })?;
        let can_encrypt = valid
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .for_transport_encryption()
            .next()
            .is_some();
        if !can_encrypt {
            return Err(CryptoError::NoEncryptionKey(fingerprint));
        }
        let binary = cert
            .to_vec()
            .map_err(|e| CryptoError::NotACert(e.to_string()))?;
        Ok(Self {
            binary,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;

    #[test]
    fn accepts_an_encryption_capable_certificate_and_refuses_the_rest() {
        let (cert, _) = CertBuilder::general_purpose(Some("Bauamt <bauamt@example.org>"))
            .generate()
            .unwrap();
        let armored = cert.armored().to_vec().unwrap();
        let parsed = RecipientCert::parse(&armored).unwrap();
        assert_eq!(parsed.fingerprint, cert.fingerprint().to_hex());

        let secret = cert.as_tsk().armored().to_vec().unwrap();
        assert!(matches!(
            RecipientCert::parse(&secret),
            Err(CryptoError::SecretKey)
        ));

        let (signing_only, _) = CertBuilder::new()
            .add_userid("S <s@example.org>")
            .add_signing_subkey()
            .generate()
            .unwrap();
        let bytes = signing_only.armored().to_vec().unwrap();
        assert!(matches!(
            RecipientCert::parse(&bytes),
            Err(CryptoError::NoEncryptionKey(_))
        ));

        assert!(matches!(
            RecipientCert::parse(b"hello"),
            Err(CryptoError::NotACert(_))
        ));
    }
}
