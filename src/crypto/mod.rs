//! OpenPGP with sequoia (OpenSSL backend): certificate checks now; keys, signing and
//! encryption as the message core lands (see docs/ARCHITECTURE.md).
//!
//! Everything here is CPU-bound and synchronous; async callers use `spawn_blocking`.

pub mod endtoend;
pub mod keywrap;
pub mod mailbox;
pub mod message;
pub mod pkesk;
pub mod pool;
pub mod seipd;
pub mod signature;

use sequoia_openpgp as openpgp;

use openpgp::crypto::mpi;
use openpgp::packet::key::{KeyParts, KeyRole, SecretParts};
use openpgp::packet::{Key, Packet};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::SignatureType;
use std::sync::Arc;

use openpgp::{Cert, armor};

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
    /// A detached signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Encrypting failed.
    #[error("cannot encrypt: {0}")]
    Encryption(String),
    /// A message could not be decrypted with the key at hand.
    #[error("cannot decrypt: {0}")]
    Decryption(String),
    /// A wrapped key or sealed blob does not open.
    #[error("cannot unwrap: {0}")]
    Unwrap(String),
}

/// Verifies a detached binary-mode signature (binary or armoured) over `data` by the
/// primary key of `cert` (an Ed25519 key marked for signing, alive and valid under the
/// standard policy when the signature was made), in a certificate that is not revoked.
///
/// Strict about the parts OpenPGP leaves malleable, because bote's own signatures never use
/// them: the unhashed subpacket area must be empty and the two-byte digest prefix must be
/// right. Otherwise a byte could change in a signature file without the signature failing.
pub fn verify_detached(cert: &Cert, data: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    let bad = |m: String| CryptoError::BadSignature(m);
    let sig = match Packet::from_bytes(signature) {
        Ok(Packet::Signature(sig)) => sig,
        _ => return Err(bad("not an OpenPGP signature".into())),
    };
    if sig.typ() != SignatureType::Binary {
        return Err(bad(format!(
            "signature type {} where a binary document signature belongs",
            sig.typ()
        )));
    }
    if sig.unhashed_area().iter().next().is_some() {
        return Err(bad("unexpected unhashed subpackets".into()));
    }
    // The profile docs/proof-bundle.md specifies, so that a verifier written from it
    // accepts exactly what this one does: Ed25519 by the primary key, SHA-2 digests.
    use openpgp::types::{HashAlgorithm, PublicKeyAlgorithm};
    if !matches!(
        sig.hash_algo(),
        HashAlgorithm::SHA256 | HashAlgorithm::SHA384 | HashAlgorithm::SHA512
    ) {
        return Err(bad(format!(
            "hash algorithm {} where SHA-256, SHA-384 or SHA-512 belongs",
            sig.hash_algo()
        )));
    }
    if !matches!(
        sig.pk_algo(),
        PublicKeyAlgorithm::EdDSA | PublicKeyAlgorithm::Ed25519
    ) {
        return Err(bad(format!("{} where Ed25519 belongs", sig.pk_algo())));
    }
    let policy = policy();
    if let openpgp::types::RevocationStatus::Revoked(_) = cert.revocation_status(&policy, None) {
        return Err(bad(format!(
            "certificate {} is revoked",
            cert.fingerprint()
        )));
    }
    let when = sig.signature_creation_time();
    let valid = cert
        .with_policy(&policy, when)
        .map_err(|e| bad(format!("certificate not valid then: {e}")))?;
    sig.signature_alive(when, std::time::Duration::ZERO)
        .map_err(|e| bad(format!("signature not alive: {e}")))?;
    let primary = valid.primary_key();
    if !primary.for_signing() {
        return Err(bad(format!(
            "the primary key of {} is not marked for signing",
            cert.fingerprint()
        )));
    }
    primary
        .alive()
        .map_err(|e| bad(format!("the key was not alive then: {e}")))?;
    if sig.verify_message(primary.key(), data).is_err() {
        return Err(bad(format!(
            "not made by certificate {} over these bytes",
            cert.fingerprint()
        )));
    }
    let prefix_ok = sig
        .computed_digest()
        .is_some_and(|d| d.len() >= 2 && d[..2] == sig.digest_prefix()[..]);
    if !prefix_ok {
        return Err(bad("digest prefix does not match".into()));
    }
    Ok(())
}

/// ASCII armour for a binary signature packet (`.asc` files).
pub fn armor_signature(binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(binary.len() * 2);
    let written = armor::Writer::new(&mut out, armor::Kind::Signature).and_then(|mut w| {
        std::io::Write::write_all(&mut w, binary)?;
        w.finalize()?;
        Ok(())
    });
    // Writing to a Vec cannot fail.
    debug_assert!(written.is_ok());
    out
}

/// Re-armours an (armoured or binary) signature the way [`armor_signature`] writes it.
pub fn canonical_armored_signature(signature: &[u8]) -> Option<Vec<u8>> {
    use openpgp::serialize::SerializeInto;
    match Packet::from_bytes(signature) {
        Ok(p @ Packet::Signature(_)) => p.to_vec().ok().map(|b| armor_signature(&b)),
        _ => None,
    }
}

/// An OpenPGP signer for an Ed25519 key that keeps the key parsed in memory.
///
/// sequoia's OpenSSL backend re-imports the secret key into OpenSSL for every signature,
/// which costs more than the signature itself; evidence is signed thousands of times a
/// second, so bote signs with ed25519-dalek (constant-time) behind sequoia's `Signer`
/// trait, the extension point sequoia offers for HSMs and agents. The packets are built
/// by sequoia as always.
#[derive(Clone)]
pub struct Ed25519Signer {
    public: Key<openpgp::packet::key::PublicParts, openpgp::packet::key::UnspecifiedRole>,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({})", self.public.fingerprint())
    }
}

impl Ed25519Signer {
    /// A signer for an unencrypted Ed25519 secret key; `None` for any other key or if the
    /// secret does not belong to the public key.
    pub fn new<R: KeyRole>(key: &Key<SecretParts, R>) -> Option<Self>
    where
        Key<SecretParts, R>: Clone,
    {
        let seed = ed25519_seed(key)?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mpi::PublicKey::EdDSA { q, .. } = key.mpis() else {
            return None;
        };
        let (point, _) = q.decode_point(&openpgp::types::Curve::Ed25519).ok()?;
        if point != signing.verifying_key().as_bytes() {
            return None;
        }
        let public = key.clone().parts_into_public().role_into_unspecified();
        Some(Self {
            public,
            key: signing,
        })
    }
}

impl Ed25519Signer {
    /// A secret for `label`, derived one-way from the secret key (SHA-256 of label and
    /// seed): keyed pseudonyms without another secret to keep.
    pub fn derived_secret(&self, label: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(label);
        hasher.update([0u8]);
        hasher.update(self.key.to_bytes());
        hasher.finalize().into()
    }
}

impl openpgp::crypto::Signer for Ed25519Signer {
    fn public(
        &self,
    ) -> &Key<openpgp::packet::key::PublicParts, openpgp::packet::key::UnspecifiedRole> {
        &self.public
    }

    fn sign(
        &mut self,
        _hash_algo: openpgp::types::HashAlgorithm,
        digest: &[u8],
    ) -> openpgp::Result<mpi::Signature> {
        use ed25519_dalek::Signer as _;
        let sig = self.key.sign(digest).to_bytes();
        Ok(mpi::Signature::EdDSA {
            r: mpi::MPI::new(&sig[..32]),
            s: mpi::MPI::new(&sig[32..]),
        })
    }
}

/// The 32-byte seed of an unencrypted Ed25519 secret key.
pub fn ed25519_seed<P: KeyParts, R: KeyRole>(key: &Key<P, R>) -> Option<[u8; 32]>
where
    Key<P, R>: Clone,
{
    let key: Key<SecretParts, R> = key.clone().parts_into_secret().ok()?;
    let mpi::PublicKey::EdDSA { .. } = key.mpis() else {
        return None;
    };
    match key.secret() {
        openpgp::packet::key::SecretKeyMaterial::Unencrypted(u) => u.map(|m| match m {
            mpi::SecretKeyMaterial::EdDSA { scalar } => {
                let padded = scalar.value_padded(32);
                <[u8; 32]>::try_from(&padded[..]).ok()
            }
            _ => None,
        }),
        _ => None,
    }
}

/// Stored certificates already parsed, by SHA-256 of their bytes. Parsing a certificate and
/// checking its self-signatures costs several signature verifications; the same few
/// thousand mailbox certificates are used for every message, and a parsed [`Cert`] keeps
/// its verification results. Keyed by content, so a changed certificate is a new entry.
fn cert_cache() -> &'static std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Cert>>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Cert>>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Most certificates kept parsed; the cache starts over when full.
const CERT_CACHE_SIZE: usize = 10_000;

/// A stored (public) certificate, parsed once and shared.
pub fn stored_cert(bytes: &[u8]) -> Result<Arc<Cert>, CryptoError> {
    use sha2::Digest as _;
    let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
    let cached = cert_cache()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some(cert) = cached {
        return Ok(cert);
    }
    let cert = Arc::new(Cert::from_bytes(bytes).map_err(|e| CryptoError::NotACert(e.to_string()))?);
    let mut cache = cert_cache()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= CERT_CACHE_SIZE {
        cache.clear();
    }
    cache.insert(key, cert.clone());
    Ok(cert)
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
