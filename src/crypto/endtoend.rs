//! Content a sender encrypted end to end (RFC 3156 PGP/MIME to a mailbox's published
//! certificate): whom it is for, read from its PKESK packets without any secret, and
//! opening it for the reader with a report of who signed inside.

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper,
};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle, Packet};
use zeroize::Zeroizing;

use super::{CryptoError, mailbox, policy};

/// Most PKESKs read from one message (a real message names a handful of recipients).
const MAX_PKESKS: usize = 1000;

/// The recipients a message's PKESK packets name; `None` in the list is an anonymous
/// ("wildcard") recipient. Reads only the packets before the encrypted data.
pub fn pkesk_recipients(message: &[u8]) -> Result<Vec<Option<KeyHandle>>, CryptoError> {
    let bad = |e: openpgp::anyhow::Error| CryptoError::Decryption(e.to_string());
    let mut out = Vec::new();
    let mut ppr = PacketParser::from_bytes(message).map_err(bad)?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => {
                if out.len() >= MAX_PKESKS {
                    return Err(CryptoError::Decryption(format!(
                        "more than {MAX_PKESKS} encrypted session keys"
                    )));
                }
                out.push(p.recipient().filter(|h| !is_wildcard(h)));
            }
            Packet::SKESK(_) => {}
            // The encrypted data follows the session keys: nothing further is needed.
            _ => break,
        }
        ppr = pp.next().map_err(bad)?.1;
    }
    if out.is_empty() {
        return Err(CryptoError::Decryption(
            "no public-key encrypted session key: not encrypted to any certificate".into(),
        ));
    }
    Ok(out)
}

fn is_wildcard(handle: &KeyHandle) -> bool {
    matches!(handle, KeyHandle::KeyID(id) if id.is_wildcard())
}

/// Whether a message with these PKESK recipients can be opened with `cert`'s keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// A PKESK names one of the certificate's encryption keys.
    Yes,
    /// No named key is the certificate's, but an anonymous recipient might be.
    Unknown,
    /// No PKESK can be for the certificate.
    No,
}

/// Checks the named recipients against the encryption keys of `cert`.
pub fn readable_by(recipients: &[Option<KeyHandle>], cert: &Cert) -> Readable {
    let policy = policy();
    let names_ours = cert
        .keys()
        .with_policy(&policy, None)
        .supported()
        .for_storage_encryption()
        .for_transport_encryption()
        .any(|ka| {
            let ours = ka.key().key_handle();
            recipients
                .iter()
                .flatten()
                .any(|named| named.aliases(&ours))
        });
    if names_ours {
        Readable::Yes
    } else if recipients.iter().any(Option::is_none) {
        Readable::Unknown
    } else {
        Readable::No
    }
}

/// A signature found inside a sender's end-to-end layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerSignature {
    /// The signing key (fingerprint, or key id where only that is known), upper-case hex.
    pub issuer: String,
    /// What checking it showed.
    pub status: SignatureStatus,
}

/// The outcome of checking an inner signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Good, by a certificate the gateway holds for the sender.
    Good,
    /// The gateway holds no certificate of that key: unverified.
    UnknownKey,
    /// The signature or its key does not check out.
    Bad(String),
}

/// Decrypts a sender's end-to-end layer with the mailbox key `tsk` and reports every
/// signature inside, checked against `signers` (the certificates the gateway holds for the
/// sender). At most [`mailbox::MAX_PLAINTEXT`] bytes.
pub fn open(
    tsk: &Cert,
    message: &[u8],
    signers: &[Cert],
) -> Result<(Zeroizing<Vec<u8>>, Vec<InnerSignature>), CryptoError> {
    let policy = policy();
    let helper = Helper {
        tsk,
        signers,
        found: Vec::new(),
    };
    let bad = |e: openpgp::anyhow::Error| CryptoError::Decryption(e.to_string());
    let mut decryptor = DecryptorBuilder::from_bytes(message)
        .map_err(bad)?
        .with_policy(&policy, None, helper)
        .map_err(bad)?;
    let plaintext = mailbox::read_limited(&mut decryptor, message.len())?;
    Ok((plaintext, decryptor.into_helper().found))
}

/// The first `bytes` bytes of a sender's end-to-end layer, for its header fields alone:
/// listing a folder must not decompress a whole message per line (nor check signatures,
/// which needs it all).
pub fn open_head(
    tsk: &Cert,
    message: &[u8],
    bytes: u64,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    use std::io::Read;
    let policy = policy();
    let helper = Helper {
        tsk,
        signers: &[],
        found: Vec::new(),
    };
    let bad = |e: openpgp::anyhow::Error| CryptoError::Decryption(e.to_string());
    let decryptor = DecryptorBuilder::from_bytes(message)
        .map_err(bad)?
        .buffer_size(0)
        .with_policy(&policy, None, helper)
        .map_err(bad)?;
    let mut head = Zeroizing::new(Vec::new());
    decryptor
        .take(bytes)
        .read_to_end(&mut head)
        .map_err(|e| CryptoError::Decryption(e.to_string()))?;
    Ok(head)
}

struct Helper<'a> {
    tsk: &'a Cert,
    signers: &'a [Cert],
    found: Vec<InnerSignature>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.signers.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // Reported to the reader, never a reason to withhold the content.
        for layer in structure {
            let MessageLayer::SignatureGroup { results } = layer else {
                continue;
            };
            for result in results {
                self.found.push(match result {
                    Ok(good) => InnerSignature {
                        issuer: good.ka.key().fingerprint().to_hex(),
                        status: SignatureStatus::Good,
                    },
                    Err(VerificationError::MissingKey { sig }) => InnerSignature {
                        issuer: issuer(sig),
                        status: SignatureStatus::UnknownKey,
                    },
                    Err(e) => {
                        let sig = match &e {
                            VerificationError::UnboundKey { sig, .. }
                            | VerificationError::BadKey { sig, .. }
                            | VerificationError::BadSignature { sig, .. }
                            | VerificationError::MalformedSignature { sig, .. } => Some(*sig),
                            _ => None,
                        };
                        InnerSignature {
                            issuer: sig.map(issuer).unwrap_or_default(),
                            status: SignatureStatus::Bad(e.to_string()),
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

fn issuer(sig: &openpgp::packet::Signature) -> String {
    sig.get_issuers()
        .into_iter()
        .next()
        .map(|h| h.to_hex())
        .unwrap_or_default()
}

impl DecryptionHelper for Helper<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Signer};
    use std::io::Write;

    fn signed_and_encrypted(to: &Cert, signer: Option<&Cert>) -> Vec<u8> {
        let policy = policy();
        let keys: Vec<_> = to
            .keys()
            .with_policy(&policy, None)
            .for_transport_encryption()
            .collect();
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let mut message = Encryptor::for_recipients(message, keys).build().unwrap();
        if let Some(signer) = signer {
            let pair = signer
                .keys()
                .with_policy(&policy, None)
                .for_signing()
                .secret()
                .next()
                .unwrap()
                .key()
                .clone()
                .into_keypair()
                .unwrap();
            message = Signer::new(message, pair).unwrap().build().unwrap();
        }
        let mut literal = LiteralWriter::new(message).build().unwrap();
        literal.write_all(b"Widerspruch").unwrap();
        literal.finalize().unwrap();
        out
    }

    #[test]
    fn recipients_are_read_without_secrets_and_signers_reported() {
        let amt = mailbox::generate("Amt", "amt@lemgo.example").unwrap();
        let other = mailbox::generate("Other", "other@elsewhere.example").unwrap();
        let anna = mailbox::generate("Anna", "anna@elsewhere.example").unwrap();
        let message = signed_and_encrypted(&amt, Some(&anna));
        let named = pkesk_recipients(&message).unwrap();
        assert_eq!(readable_by(&named, &amt), Readable::Yes);
        assert_eq!(readable_by(&named, &other), Readable::No);

        let public_anna = anna.clone().strip_secret_key_material();
        let (text, sigs) = open(&amt, &message, &[public_anna]).unwrap();
        assert_eq!(&text[..], b"Widerspruch");
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].status, SignatureStatus::Good);
        let (_, sigs) = open(&amt, &message, &[]).unwrap();
        assert_eq!(sigs[0].status, SignatureStatus::UnknownKey);
        assert!(!sigs[0].issuer.is_empty());
        assert!(open(&other, &message, &[]).is_err());
        assert!(pkesk_recipients(b"not openpgp").is_err());
    }
}
