//! Mailbox keys and message encryption (OpenPGP, SEIPDv1 so that GnuPG 2.2/2.4 can read
//! what bote writes; spec §5 and ../shared/FIELD-NOTES.md).
//!
//! Every mailbox has a v4 key: an Ed25519 primary (certification, signing) and a Cv25519
//! encryption subkey, without expiry, advertising only the RFC 4880 features (MDC, i.e.
//! SEIPDv1). Bodies are stored only as binary OpenPGP messages to that certificate.
//! Encrypting needs the certificate alone; decrypting needs the secret key, which bote keeps
//! only wrapped (see [`super::keywrap`]).

use std::io::{Read, Write};

use sequoia_openpgp as openpgp;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use openpgp::types::{Features, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle, Profile};
use zeroize::Zeroizing;

use super::{CryptoError, policy};

fn err(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Encryption(e.to_string())
}

/// A new mailbox key for `name <address>`; returns the certificate with its secret parts
/// (unencrypted: the caller wraps them at once).
pub fn generate(name: &str, address: &str) -> Result<Cert, CryptoError> {
    let (cert, _revocation) = CertBuilder::new()
        .set_profile(Profile::RFC4880)
        .map_err(err)?
        // The RFC 4880 profile alone still advertises SEIPDv2; say SEIPDv1 only, or senders
        // would pick a format GnuPG 2.2/2.4 cannot decrypt.
        .set_features(Features::empty().set_seipdv1())
        .map_err(err)?
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_userid(format!("{name} <{address}>"))
        .add_signing_subkey()
        .add_transport_encryption_subkey()
        .add_storage_encryption_subkey()
        .set_validity_period(None)
        .generate()
        .map_err(err)?;
    Ok(cert)
}

/// The secret key material of `cert`, serialised (binary TSK), for wrapping.
pub fn secret_bytes(cert: &Cert) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    Ok(Zeroizing::new(cert.as_tsk().to_vec().map_err(err)?))
}

/// The public certificate of `cert`, binary.
pub fn public_bytes(cert: &Cert) -> Result<Vec<u8>, CryptoError> {
    cert.clone()
        .strip_secret_key_material()
        .to_vec()
        .map_err(err)
}

/// Encrypts `plaintext` to every certificate in `recipients` (binary OpenPGP message).
pub fn encrypt(recipients: &[&Cert], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    encrypt_packets(recipients, &literal(plaintext)?)
}

/// `plaintext` as one OpenPGP literal data packet.
pub(super) fn literal(plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plaintext.len() + 64);
    let mut literal = LiteralWriter::new(Message::new(&mut out))
        .build()
        .map_err(err)?;
    literal.write_all(plaintext).map_err(err)?;
    literal.finalize().map_err(err)?;
    Ok(out)
}

/// Encrypts ready-made OpenPGP packets (a literal packet, or a signed message) to every
/// certificate in `recipients`, as a binary OpenPGP message. Encrypting serialised packets
/// lets a message be signed once and encrypted for many recipients.
pub(super) fn encrypt_packets(
    recipients: &[&Cert],
    packets: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let policy = policy();
    let mut keys = Vec::new();
    for cert in recipients {
        let before = keys.len();
        keys.extend(
            cert.keys()
                .with_policy(&policy, None)
                .supported()
                .alive()
                .revoked(false)
                .for_storage_encryption()
                .for_transport_encryption(),
        );
        if keys.len() == before {
            return Err(CryptoError::NoEncryptionKey(cert.fingerprint().to_hex()));
        }
    }
    let mut out = Vec::with_capacity(packets.len() + 1024);
    // As sequoia decides (a certificate without a Features subpacket supports SEIPDv1).
    let seipdv2 = keys.iter().all(|k| {
        use openpgp::cert::Preferences;
        use openpgp::cert::amalgamation::ValidAmalgamation;
        k.valid_cert()
            .features()
            .is_some_and(|f| f.supports_seipdv2())
    });
    if seipdv2 {
        // SEIPDv2 recipients: sequoia makes v6 PKESKs and the packet as usual.
        let mut encryptor = Encryptor::for_recipients(Message::new(&mut out), keys)
            .build()
            .map_err(err)?;
        encryptor.write_all(packets).map_err(err)?;
        encryptor.finalize().map_err(err)?;
    } else {
        // SEIPDv1 (what gpg 2.2 reads): the session key goes out in v3 PKESKs that
        // `pkesk` makes for Cv25519 keys and sequoia for any other; `seipd` encrypts.
        let sym = openpgp::types::SymmetricAlgorithm::default();
        let session_key = fresh_session_key(sym.key_size().map_err(err)?);
        for key in &keys {
            let packet =
                match super::pkesk::cv25519(key.key().role_as_unspecified(), sym, &session_key) {
                    Some(made) => made.map_err(err)?,
                    None => {
                        openpgp::packet::pkesk::PKESK3::for_recipient(sym, &session_key, key.key())
                            .map_err(err)?
                            .into()
                    }
                };
            openpgp::serialize::Marshal::serialize(&openpgp::Packet::PKESK(packet), &mut out)
                .map_err(err)?;
        }
        super::seipd::write_v1(sym, &session_key, packets, &mut out).map_err(err)?;
    }
    Ok(out)
}

/// A fresh session key of `size` bytes from the thread's CSPRNG (rand's ChaCha, seeded
/// and reseeded from the OS, as the key-wrapping keys are): sequoia's OpenSSL backend sets
/// up a new HMAC-DRBG for every random value it draws, 7.6 µs here against 0.1 µs.
fn fresh_session_key(size: usize) -> openpgp::crypto::SessionKey {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; size]);
    rand::fill(&mut bytes[..]);
    openpgp::crypto::SessionKey::from(&bytes[..])
}

/// ASCII armour for an OpenPGP message (RFC 9580 §6.2), in CRLF lines of 76 characters,
/// ready for a MIME body.
///
/// - No CRC-24 line: RFC 4880 made it optional ("MAY"), RFC 9580 says not to emit it, and
///   gpg 2.2 and every reader since accept armour without it. Computing it byte by byte
///   was the largest single cost of relaying a 100 KiB message (sequoia's armour writer,
///   6–8 % of the gateway's CPU).
/// - 76 characters, the longest line both RFC 9580 §6.3 and MIME's base64 (RFC 2045)
///   allow, where sequoia and gpg write 64: a sixth fewer lines for every SMTP server and
///   reader on the way (docs/decisions.md, tenth round).
/// - CRLF written here, not converted afterwards: one pass over the payload less.
pub(super) fn armor_message(binary: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut armored = Vec::new();
    armor_message_into(binary, &mut armored)?;
    Ok(armored)
}

const ARMOR_HEAD: &[u8] = b"-----BEGIN PGP MESSAGE-----\r\n\r\n";
const ARMOR_TAIL: &[u8] = b"-----END PGP MESSAGE-----\r\n";
/// Octets per armour line: 57 encode to 76 characters.
const ARMOR_OCTETS: usize = 57;

/// The length of [`armor_message`]'s output for `binary` octets.
pub(super) fn armored_len(binary: usize) -> usize {
    ARMOR_HEAD.len() + binary.div_ceil(ARMOR_OCTETS) * 78 + ARMOR_TAIL.len()
}

/// [`armor_message`] appended to `out`.
pub(super) fn armor_message_into(binary: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
    use base64::Engine as _;
    out.reserve(armored_len(binary.len()));
    out.extend_from_slice(ARMOR_HEAD);
    for chunk in binary.chunks(ARMOR_OCTETS) {
        let at = out.len();
        out.resize(at + 76, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut out[at..])
            .map_err(err)?;
        out.truncate(at + written);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(ARMOR_TAIL);
    Ok(())
}

/// Most plaintext bote decrypts from one message: above the largest message a gateway
/// accepts (45 MiB), and a stop for compression bombs in content that senders encrypted.
pub const MAX_PLAINTEXT: u64 = 64 * 1024 * 1024;

/// Reads a decryptor to its end, refusing more than [`MAX_PLAINTEXT`] bytes.
pub(super) fn read_limited(
    reader: impl Read,
    size_hint: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(size_hint));
    reader
        .take(MAX_PLAINTEXT + 1)
        .read_to_end(&mut plaintext)
        .map_err(|e| CryptoError::Decryption(e.to_string()))?;
    if plaintext.len() as u64 > MAX_PLAINTEXT {
        return Err(CryptoError::Decryption(format!(
            "the plaintext exceeds {MAX_PLAINTEXT} bytes"
        )));
    }
    Ok(plaintext)
}

/// Decrypts a message with the secret key in `tsk` (a certificate with secret parts).
pub fn decrypt(tsk: &Cert, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let policy = policy();
    let helper = Helper { tsk };
    let mut decryptor = DecryptorBuilder::from_bytes(message)
        .map_err(|e| CryptoError::Decryption(e.to_string()))?
        .with_policy(&policy, None, helper)
        .map_err(|e| CryptoError::Decryption(e.to_string()))?;
    read_limited(&mut decryptor, message.len())
}

/// Parses a certificate with secret parts (binary or armoured).
pub fn parse_tsk(bytes: &[u8]) -> Result<Cert, CryptoError> {
    let cert = Cert::from_bytes(bytes).map_err(|e| CryptoError::NotACert(e.to_string()))?;
    if !cert.is_tsk() {
        return Err(CryptoError::NotACert("no secret key material".into()));
    }
    Ok(cert)
}

struct Helper<'a> {
    tsk: &'a Cert,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        // Signatures inside stored messages are checked where they matter (the provider
        // signature in the message core), not by the storage layer.
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        session_key(self.tsk, pkesks, sym_algo, decrypt)
    }
}

/// Finds the PKESK that a key of `tsk` opens and hands its session key to `decrypt`.
pub(super) fn session_key(
    tsk: &Cert,
    pkesks: &[PKESK],
    sym_algo: Option<SymmetricAlgorithm>,
    decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
) -> openpgp::Result<Option<Cert>> {
    {
        let policy = policy();
        for ka in tsk
            .keys()
            .with_policy(&policy, None)
            .supported()
            .secret()
            .for_storage_encryption()
            .for_transport_encryption()
        {
            let mut pair = ka.key().clone().into_keypair()?;
            for pkesk in pkesks {
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &sk)
                {
                    return Ok(Some(tsk.clone()));
                }
            }
        }
        Err(openpgp::Error::InvalidOperation(
            "no key of this mailbox can decrypt the message".into(),
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRLF lines of 76 characters (the last one shorter), which sequoia's armour reader
    /// turns back into the same octets.
    #[test]
    fn armour_is_crlf_lines_of_76_that_sequoia_reads() {
        use openpgp::armor::{Kind, Reader, ReaderMode};
        for len in [1usize, 56, 57, 58, 114, 1000, 70_001] {
            let binary: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let armored = armor_message(&binary).unwrap();
            let text = std::str::from_utf8(&armored).unwrap();
            let body = text
                .strip_prefix("-----BEGIN PGP MESSAGE-----\r\n\r\n")
                .and_then(|t| t.strip_suffix("-----END PGP MESSAGE-----\r\n"))
                .unwrap();
            let lines: Vec<&str> = body.strip_suffix("\r\n").unwrap().split("\r\n").collect();
            assert_eq!(lines.len(), len.div_ceil(57));
            assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
            assert!(
                lines
                    .iter()
                    .all(|l| !l.contains(['\r', '\n']) && l.len() <= 76)
            );
            let mut back = Vec::new();
            Reader::from_bytes(&armored, ReaderMode::Tolerant(Some(Kind::Message)))
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, binary, "{len} octets");
        }
    }

    #[test]
    fn round_trip_and_only_the_recipient_can_read() {
        let anna = generate("Anna Muster", "anna@lemgo.example").unwrap();
        let other = generate("Other", "other@lemgo.example").unwrap();
        let public = Cert::from_bytes(&public_bytes(&anna).unwrap()).unwrap();
        assert!(!public.is_tsk());
        let message = encrypt(&[&public], b"Bauantrag, vertraulich").unwrap();
        assert!(!message.windows(10).any(|w| w == b"vertraulic"));
        let tsk = parse_tsk(&secret_bytes(&anna).unwrap()).unwrap();
        assert_eq!(
            &decrypt(&tsk, &message).unwrap()[..],
            b"Bauantrag, vertraulich"
        );
        assert!(matches!(
            decrypt(&other, &message),
            Err(CryptoError::Decryption(_))
        ));
        assert!(decrypt(&tsk, b"garbage").is_err());
    }

    #[test]
    fn every_message_gets_a_session_key_of_its_own() {
        let keys: Vec<Vec<u8>> = (0..64).map(|_| fresh_session_key(32).to_vec()).collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(key.len(), 32);
            assert!(key.iter().any(|b| *b != 0));
            assert!(keys[..i].iter().all(|earlier| earlier != key));
        }
    }

    #[test]
    fn a_compression_bomb_is_refused() {
        use openpgp::serialize::stream::Compressor;
        let anna = generate("Anna Muster", "anna@lemgo.example").unwrap();
        let public = Cert::from_bytes(&public_bytes(&anna).unwrap()).unwrap();
        let mut packets = Vec::new();
        {
            let message = Message::new(&mut packets);
            let compressed = Compressor::new(message).build().unwrap();
            let mut literal = LiteralWriter::new(compressed).build().unwrap();
            let zeros = vec![0u8; 1024 * 1024];
            for _ in 0..=(MAX_PLAINTEXT / zeros.len() as u64) {
                literal.write_all(&zeros).unwrap();
            }
            literal.finalize().unwrap();
        }
        assert!(packets.len() < 1024 * 1024, "{}", packets.len());
        let bomb = encrypt_packets(&[&public], &packets).unwrap();
        let err = decrypt(&anna, &bomb).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn keys_advertise_seipdv1_only() {
        let cert = generate("Amt", "amt@lemgo.example").unwrap();
        let policy = policy();
        let valid = cert.with_policy(&policy, None).unwrap();
        let features = valid
            .primary_userid()
            .unwrap()
            .binding_signature()
            .features()
            .unwrap();
        assert!(features.supports_seipdv1());
        assert!(
            !features.supports_seipdv2(),
            "GnuPG 2.2/2.4 cannot read SEIPDv2"
        );
        assert!(valid.primary_key().key_expiration_time().is_none());
    }
}
