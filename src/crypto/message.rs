//! Messages at rest and on the wire: signed once with the provider key, carrying the
//! gateway's attestation as signature notations, then encrypted per recipient.
//!
//! The stored body of every copy, and the payload of every PGP/MIME relay, is the same
//! inline-signed OpenPGP message (one-pass signature, literal data, signature) encrypted to
//! one certificate. Signing once and encrypting the signed packets per recipient keeps the
//! cost of a second recipient at one public-key encryption. gpg decrypts and verifies it in
//! one step with the provider certificate.

use std::io::Write;

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::KeyHandle;
use openpgp::crypto::SessionKey;
use openpgp::packet::Packet;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::signature::subpacket::NotationDataFlags;
use openpgp::packet::{PKESK, SKESK, Signature};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::serialize::Marshal;
use openpgp::serialize::stream::{LiteralWriter, Message};
use openpgp::types::{SignatureType, SymmetricAlgorithm};
use zeroize::Zeroizing;

use super::{CryptoError, Ed25519Signer, mailbox, policy, signature};

/// What the gateway attests about a message, as signature notations `<name>@<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The sender's address.
    pub sender: String,
    /// `verified:<method>` or `unverified`.
    pub identity: String,
    /// `normal` or `high` (or `none` for mail from a non-ERDS origin).
    pub auth_level: String,
    /// Whether the message is `authoritative` (absenderbestätigt).
    pub authoritative: bool,
}

const SENDER: &str = "sender";
const IDENTITY: &str = "identity";
const AUTH_LEVEL: &str = "auth-level";
const AUTHORITATIVE: &str = "authoritative";

fn err(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Encryption(e.to_string())
}

/// Content hashed once: SHA-256 is both the digest evidence names a message by and the
/// provider signature's hash ([`signature::HASH`]), over the same octets, so one pass
/// serves both (a second pass was ~5 % of a 100 KiB message's CPU).
pub struct Digested {
    bytes: Vec<u8>,
    hash: openpgp::crypto::hash::Context,
    sha256: [u8; 32],
}

impl Digested {
    /// Hashes `bytes`.
    pub fn new(bytes: Vec<u8>) -> Result<Self, CryptoError> {
        let mut hash = signature::context().map_err(err)?;
        hash.update(&bytes);
        let sha256 = hash
            .clone()
            .into_digest()
            .map_err(err)?
            .try_into()
            .map_err(|_| err("the signature hash is not SHA-256"))?;
        Ok(Self {
            bytes,
            hash,
            sha256,
        })
    }

    /// The content's SHA-256.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The content.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Frees the content (once signed, the signed message holds it); the digest stays.
    pub fn clear(&mut self) {
        self.bytes = Vec::new();
    }
}

/// Signs `content` with the provider key: an inline-signed OpenPGP message (binary) whose
/// signature carries the attestation as human-readable notations in `domain`'s namespace.
pub fn sign(
    mut signer: Ed25519Signer,
    domain: &str,
    attestation: &Attestation,
    digested: &Digested,
) -> Result<Vec<u8>, CryptoError> {
    let content = digested.as_bytes();
    let flags = NotationDataFlags::empty().set_human_readable();
    let mut template = SignatureBuilder::new(SignatureType::Binary);
    for (name, value) in [
        (SENDER, attestation.sender.as_str()),
        (IDENTITY, attestation.identity.as_str()),
        (AUTH_LEVEL, attestation.auth_level.as_str()),
        (
            AUTHORITATIVE,
            if attestation.authoritative {
                "yes"
            } else {
                "no"
            },
        ),
    ] {
        template = template
            .add_notation(format!("{name}@{domain}"), value, flags.clone(), false)
            .map_err(err)?;
    }
    // One-pass signature, literal data, signature (RFC 9580 §10.3): what sequoia's
    // streaming `Signer` writes, with the signature made by `crypto::signature`.
    let mut out = Vec::with_capacity(content.len() + 512);
    Packet::from(signature::one_pass(&signer, &template))
        .serialize(&mut out)
        .map_err(err)?;
    let mut literal = LiteralWriter::new(Message::new(&mut out))
        .build()
        .map_err(err)?;
    literal.write_all(content).map_err(err)?;
    literal.finalize().map_err(err)?;
    let sig = signature::finish(&mut signer, template, digested.hash.clone()).map_err(err)?;
    Packet::from(sig).serialize(&mut out).map_err(err)?;
    Ok(out)
}

/// Encrypts a signed message (from [`sign`]) to one recipient, as a binary OpenPGP message
/// ([`armor`] makes it ready for the wire).
pub fn encrypt_signed(recipient: &Cert, signed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    mailbox::encrypt_packets(&[recipient], signed)
}

/// ASCII armour for a binary OpenPGP message from [`encrypt_signed`]: what a relayed
/// PGP/MIME part carries (RFC 3156), in CRLF lines of 76.
pub fn armor(binary: &[u8]) -> Result<Vec<u8>, CryptoError> {
    mailbox::armor_message(binary)
}

/// [`armor`] appended to `out`, which needs [`armored_len`] octets more.
pub fn armor_into(binary: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
    mailbox::armor_message_into(binary, out)
}

/// How long the armour of `binary` octets is.
pub fn armored_len(binary: usize) -> usize {
    mailbox::armored_len(binary)
}

/// A decrypted message and, if the provider signature verified, what it attests.
#[derive(Debug)]
pub struct Opened {
    /// The content as signed (RFC 5322 bytes).
    pub content: Zeroizing<Vec<u8>>,
    /// The attestation of a good provider signature; `None` if there was none.
    pub attestation: Option<Attestation>,
    /// When the provider signed it (unix ms).
    pub signed_at: Option<i64>,
}

/// Decrypts a stored body with the mailbox key `tsk` and checks the provider signature
/// against `provider` (the current and former provider certificates).
pub fn open(
    tsk: &Cert,
    provider: &[Cert],
    domain: &str,
    body: &[u8],
) -> Result<Opened, CryptoError> {
    let policy = policy();
    let helper = OpenHelper {
        tsk,
        provider,
        good: None,
    };
    let decryption = |e: openpgp::anyhow::Error| CryptoError::Decryption(e.to_string());
    let mut decryptor = DecryptorBuilder::from_bytes(body)
        .map_err(decryption)?
        .with_policy(&policy, None, helper)
        .map_err(decryption)?;
    let content = mailbox::read_limited(&mut decryptor, body.len())?;
    let good = decryptor.into_helper().good;
    Ok(Opened {
        content,
        attestation: good.as_ref().map(|sig| attestation(sig, domain)),
        signed_at: good
            .as_ref()
            .and_then(|sig| sig.signature_creation_time())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
    })
}

fn attestation(sig: &Signature, domain: &str) -> Attestation {
    let get = |name: &str| {
        sig.notation(format!("{name}@{domain}"))
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    Attestation {
        sender: get(SENDER),
        identity: get(IDENTITY),
        auth_level: get(AUTH_LEVEL),
        authoritative: get(AUTHORITATIVE) == "yes",
    }
}

struct OpenHelper<'a> {
    tsk: &'a Cert,
    provider: &'a [Cert],
    good: Option<Signature>,
}

impl VerificationHelper for OpenHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.provider.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // A missing or bad signature is reported to the reader (no attestation), not
        // turned into an unreadable message.
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer
                && let Some(Ok(good)) = results.into_iter().find(Result::is_ok)
            {
                self.good = Some(good.sig.clone());
            }
        }
        Ok(())
    }
}

impl DecryptionHelper for OpenHelper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        mailbox::session_key(self.tsk, pkesks, sym_algo, decrypt)
    }
}

/// Parses an armoured or binary certificate list (e.g. `provider.cert.asc`).
pub fn certs(bytes: &[u8]) -> Result<Vec<Cert>, CryptoError> {
    openpgp::cert::CertParser::from_bytes(bytes)
        .map_err(|e| CryptoError::NotACert(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CryptoError::NotACert(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::packet::key::SecretParts;

    fn provider() -> (Cert, Ed25519Signer) {
        let (cert, _) = openpgp::cert::CertBuilder::new()
            .set_cipher_suite(openpgp::cert::CipherSuite::Cv25519)
            .add_userid("provider <provider@lemgo.example>")
            .set_primary_key_flags(
                openpgp::types::KeyFlags::empty()
                    .set_certification()
                    .set_signing(),
            )
            .generate()
            .unwrap();
        let key = cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap();
        let key: openpgp::packet::Key<SecretParts, _> = key;
        let signer = Ed25519Signer::new(&key).unwrap();
        (cert.strip_secret_key_material(), signer)
    }

    #[test]
    fn signed_once_encrypted_per_recipient_and_attested() {
        let (provider_cert, signer) = provider();
        let anna = mailbox::generate("Anna", "anna@lemgo.example").unwrap();
        let amt = mailbox::generate("Amt", "amt@lemgo.example").unwrap();
        let att = Attestation {
            sender: "anna@lemgo.example".into(),
            identity: "verified:eid".into(),
            auth_level: "high".into(),
            authoritative: true,
        };
        let content = Digested::new(b"Subject: x\r\n\r\nhello".to_vec()).unwrap();
        // The one pass gives the content's plain SHA-256, as evidence names it.
        use sha2::Digest as _;
        let plain: [u8; 32] = sha2::Sha256::digest(content.as_bytes()).into();
        assert_eq!(content.sha256(), plain);
        let signed = sign(signer, "lemgo.example", &att, &content).unwrap();
        let to_anna = encrypt_signed(&anna, &signed).unwrap();
        let to_amt = armor(&encrypt_signed(&amt, &signed).unwrap()).unwrap();
        assert!(to_amt.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        let opened = open(
            &anna,
            std::slice::from_ref(&provider_cert),
            "lemgo.example",
            &to_anna,
        )
        .unwrap();
        assert_eq!(&opened.content[..], b"Subject: x\r\n\r\nhello");
        assert_eq!(opened.attestation.as_ref(), Some(&att));
        assert!(opened.signed_at.is_some());
        // The other recipient's copy is not readable with Anna's key.
        assert!(open(&anna, &[provider_cert], "lemgo.example", &to_amt).is_err());
        // Without the provider certificate there is no attestation, but the content reads.
        let unverified = open(&amt, &[], "lemgo.example", &to_amt).unwrap();
        assert!(unverified.attestation.is_none());
    }
}
