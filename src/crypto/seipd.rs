//! The symmetrically encrypted and integrity protected data packet, version 1 (RFC 4880
//! §5.13, §5.14): the encrypted part of every copy bote writes.
//!
//! sequoia's stream writer hashes the modification detection code with its
//! collision-detecting SHA-1 (sha1collisiondetection), whose checks are for *verifying*
//! signatures made by someone else; a digest bote computes over its own random prefix and
//! plaintext gains nothing from them, and they were 7.5 % of the CPU of a relayed 100 KiB
//! message (docs/decisions.md, "Ninth round"). This file writes the packet with the
//! `sha1` crate (SHA-NI where the CPU has it) and leaves framing and the CFB encryption
//! (OpenSSL through sequoia's backend) to sequoia. sequoia's decryptor and gpg read the
//! result in the tests.

use std::io::Write;

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::crypto::symmetric::{BlockCipherMode, Encryptor, PaddingMode};
use openpgp::packet::Tag;
use openpgp::packet::header::{BodyLength, CTB};
use openpgp::serialize::Marshal;
use openpgp::types::SymmetricAlgorithm;
use sha1::Digest;

/// The MDC packet's header: new-format tag 19, length 20 (RFC 4880 §5.14). The digest
/// covers it.
const MDC_HEADER: [u8; 2] = [0xD3, 0x14];

/// Appends to `out` the SEIPDv1 packet that encrypts `plaintext` (serialised OpenPGP
/// packets) with `session_key` under `sym`.
pub fn write_v1(
    sym: SymmetricAlgorithm,
    session_key: &SessionKey,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> openpgp::Result<()> {
    // Every OpenPGP block cipher has 8- or 16-octet blocks, so `block - 2` cannot wrap.
    let block = sym.block_size()?;
    // The random prefix, one block, and its last two octets repeated (the "quick check").
    let mut prefix = vec![0u8; block + 2];
    rand::fill(&mut prefix[..block]);
    prefix.copy_within(block - 2..block, block);

    let mut mdc = sha1::Sha1::new();
    mdc.update(&prefix);
    mdc.update(plaintext);
    mdc.update(MDC_HEADER);
    let digest = mdc.finalize();

    // version ‖ prefix ‖ plaintext ‖ MDC packet: a known length, so one definite length
    // header (sequoia's writer streams partial body chunks; readers take either).
    let body = 1 + prefix.len() + plaintext.len() + MDC_HEADER.len() + digest.len();
    let length = u32::try_from(body)
        .map_err(|_| openpgp::Error::InvalidArgument("message too large".into()))?;
    out.reserve(body + 6);
    CTB::new(Tag::SEIP).serialize(out)?;
    BodyLength::Full(length).serialize(out)?;
    out.push(1);

    let mut cfb = Encryptor::new(
        sym,
        BlockCipherMode::CFB,
        PaddingMode::None,
        session_key,
        None,
        out,
    )?;
    cfb.write_all(&prefix)?;
    cfb.write_all(plaintext)?;
    cfb.write_all(&MDC_HEADER)?;
    cfb.write_all(&digest)?;
    cfb.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::KeyHandle;
    use openpgp::packet::{Literal, Packet};
    use openpgp::parse::stream::{
        DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
    };
    use openpgp::parse::{PacketParser, PacketParserResult, Parse};
    use openpgp::policy::StandardPolicy;
    use openpgp::serialize::MarshalInto;
    use std::io::Read;

    struct Key(SessionKey);

    impl VerificationHelper for Key {
        fn get_certs(&mut self, _: &[KeyHandle]) -> openpgp::Result<Vec<openpgp::Cert>> {
            Ok(Vec::new())
        }
        fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
            Ok(())
        }
    }

    impl DecryptionHelper for Key {
        fn decrypt(
            &mut self,
            _: &[openpgp::packet::PKESK],
            _: &[openpgp::packet::SKESK],
            sym: Option<SymmetricAlgorithm>,
            decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
        ) -> openpgp::Result<Option<openpgp::Cert>> {
            if decrypt(sym.or(Some(SymmetricAlgorithm::AES256)), &self.0) {
                Ok(None)
            } else {
                Err(openpgp::Error::MissingSessionKey("wrong key".into()).into())
            }
        }
    }

    fn literal(body: &[u8]) -> Vec<u8> {
        let mut lit = Literal::new(openpgp::types::DataFormat::Binary);
        lit.set_body(body.to_vec());
        Packet::from(lit).to_vec().unwrap()
    }

    /// The packet alone, decrypted by sequoia with the session key (an SKESK-less message
    /// whose key the helper supplies).
    fn open(packet: &[u8], key: &SessionKey) -> openpgp::Result<Vec<u8>> {
        let policy = StandardPolicy::new();
        let mut reader =
            DecryptorBuilder::from_bytes(packet)?.with_policy(&policy, None, Key(key.clone()))?;
        let mut plaintext = Vec::new();
        reader.read_to_end(&mut plaintext)?;
        Ok(plaintext)
    }

    #[test]
    fn sequoia_decrypts_and_checks_the_mdc() {
        let sym = SymmetricAlgorithm::AES256;
        for size in [0usize, 1, 15, 16, 17, 191, 8383, 8384, 100 * 1024 + 7] {
            let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let key = SessionKey::new(32).unwrap();
            let mut packet = Vec::new();
            write_v1(sym, &key, &literal(&body), &mut packet).unwrap();
            assert_eq!(open(&packet, &key).unwrap(), body, "size {size}");
        }
    }

    #[test]
    fn a_flipped_bit_or_another_key_is_refused() {
        let sym = SymmetricAlgorithm::AES256;
        let key = SessionKey::new(32).unwrap();
        let mut packet = Vec::new();
        write_v1(sym, &key, &literal(b"an office's reply"), &mut packet).unwrap();
        // Every octet of the ciphertext, the MDC's included, is covered.
        for at in [8, packet.len() / 2, packet.len() - 1] {
            let mut broken = packet.clone();
            broken[at] ^= 0x01;
            assert!(open(&broken, &key).is_err(), "flip at {at}");
        }
        let other = SessionKey::new(32).unwrap();
        assert!(open(&packet, &other).is_err());
    }

    #[test]
    fn each_packet_has_its_own_prefix_and_a_definite_length() {
        let sym = SymmetricAlgorithm::AES256;
        let key = SessionKey::new(32).unwrap();
        let plaintext = literal(b"same text");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_v1(sym, &key, &plaintext, &mut a).unwrap();
        write_v1(sym, &key, &plaintext, &mut b).unwrap();
        assert_ne!(a, b, "the random prefix makes equal plaintexts differ");
        let PacketParserResult::Some(pp) = PacketParser::from_bytes(&a).unwrap() else {
            panic!("no packet");
        };
        assert_eq!(pp.packet.tag(), Tag::SEIP);
        assert_eq!(pp.header().length(), &BodyLength::Full(a.len() as u32 - 2));
    }
}
