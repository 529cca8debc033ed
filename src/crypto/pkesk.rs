//! Public-key encrypted session keys (RFC 4880 §5.1, RFC 6637) for Cv25519 recipients,
//! computed with x25519-dalek.
//!
//! sequoia's OpenSSL backend spends about 280 µs on each X25519 key agreement (it imports
//! raw keys into OpenSSL EVP objects every time): 41 % of all CPU of a submission
//! (docs/decisions.md, "Throughput"). The ECDH part of a PKESK is small and fully specified:
//! an ephemeral X25519 key, the shared secret, the RFC 6637 KDF and AES key wrap. This file
//! does that key agreement with x25519-dalek (constant time) and leaves everything else,
//! the KDF parameters, the key wrap, the packet and the encryption, to sequoia, whose
//! `aes_key_wrap` is public. gpg decrypts the result in the interop tests.

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::crypto::mem::Protected;
use openpgp::crypto::mpi::{self, MPI};
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::pkesk::PKESK3;
use openpgp::packet::{Key, PKESK};
use openpgp::types::{Curve, HashAlgorithm, PublicKeyAlgorithm, SymmetricAlgorithm};
use sha2::Digest;

/// The PKESK of `session_key` (for `sym`) to `key` if it is a Cv25519 ECDH key; `None` for
/// any other key (sequoia then makes the packet as usual).
pub fn cv25519(
    key: &Key<PublicParts, UnspecifiedRole>,
    sym: SymmetricAlgorithm,
    session_key: &SessionKey,
) -> Option<openpgp::Result<PKESK>> {
    let mpi::PublicKey::ECDH {
        curve: Curve::Cv25519,
        q,
        hash,
        sym: kek,
    } = key.mpis()
    else {
        return None;
    };
    Some(wrap(key, q, *hash, *kek, sym, session_key))
}

fn wrap(
    key: &Key<PublicParts, UnspecifiedRole>,
    q: &MPI,
    hash: HashAlgorithm,
    kek: SymmetricAlgorithm,
    sym: SymmetricAlgorithm,
    session_key: &SessionKey,
) -> openpgp::Result<PKESK> {
    let recipient: [u8; 32] = q
        .value()
        .strip_prefix(&[0x40])
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| openpgp::Error::MalformedMPI("Cv25519 point".into()))?;
    // A fresh secret per PKESK, from the OS-seeded CSPRNG (x25519-dalek clamps it).
    let ephemeral = x25519_dalek::StaticSecret::from(rand::random::<[u8; 32]>());
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(recipient));
    let shared: Protected = shared.as_bytes().to_vec().into();

    // m = algorithm ‖ session key ‖ checksum, PKCS #5-padded to 40 bytes (RFC 6637 §8).
    let mut m: Vec<u8> = Vec::with_capacity(40);
    m.push(sym.into());
    m.extend_from_slice(session_key);
    let checksum = session_key
        .iter()
        .map(|b| u16::from(*b))
        .fold(0u16, u16::wrapping_add);
    m.extend_from_slice(&checksum.to_be_bytes());
    let pad = 40usize.saturating_sub(m.len()).max(1);
    m.extend(std::iter::repeat_n(u8::try_from(pad).unwrap_or(0), pad));
    let m: Protected = m.into();

    // Param = OID ‖ 18 ‖ 03 01 hash kek ‖ "Anonymous Sender    " ‖ fingerprint.
    let oid = Curve::Cv25519.oid();
    let mut param = Vec::with_capacity(1 + oid.len() + 5 + 20 + 20);
    param.push(u8::try_from(oid.len()).unwrap_or(0));
    param.extend_from_slice(oid);
    param.push(PublicKeyAlgorithm::ECDH.into());
    param.extend_from_slice(&[3, 1, hash.into(), kek.into()]);
    param.extend_from_slice(b"Anonymous Sender    ");
    param.extend_from_slice(key.fingerprint().as_bytes());

    // Z = KDF(S, param): SHA-2 over 00000001 ‖ S ‖ param, cut to the KEK's key size.
    let digest: Vec<u8> = match hash {
        HashAlgorithm::SHA256 => kdf::<sha2::Sha256>(&shared, &param),
        HashAlgorithm::SHA384 => kdf::<sha2::Sha384>(&shared, &param),
        HashAlgorithm::SHA512 => kdf::<sha2::Sha512>(&shared, &param),
        other => {
            return Err(openpgp::Error::UnsupportedHashAlgorithm(other).into());
        }
    };
    let size = kek.key_size()?;
    let z: Protected = digest
        .get(..size)
        .ok_or_else(|| openpgp::Error::InvalidArgument("hash digest too short".into()))?
        .to_vec()
        .into();
    let c = openpgp::crypto::ecdh::aes_key_wrap(kek, &z, &m)?;

    let mut e = vec![0x40];
    e.extend_from_slice(ephemeral_public.as_bytes());
    let ciphertext = mpi::Ciphertext::ECDH {
        e: MPI::new(&e),
        key: c.into_boxed_slice(),
    };
    Ok(PKESK3::new(Some(key.keyid()), PublicKeyAlgorithm::ECDH, ciphertext)?.into())
}

fn kdf<D: Digest>(shared: &[u8], param: &[u8]) -> Vec<u8> {
    let mut h = D::new();
    h.update([0, 0, 0, 1]);
    h.update(shared);
    h.update(param);
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::{CertBuilder, CipherSuite};
    use openpgp::policy::StandardPolicy;

    #[test]
    fn sequoia_unwraps_what_x25519_dalek_wrapped() {
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let policy = StandardPolicy::new();
        let ka = cert
            .keys()
            .with_policy(&policy, None)
            .for_transport_encryption()
            .secret()
            .next()
            .unwrap();
        let sym = SymmetricAlgorithm::AES256;
        let session_key = SessionKey::new(32).unwrap();
        let public = ka.key().clone().parts_into_public().role_into_unspecified();
        let pkesk = cv25519(&public, sym, &session_key).unwrap().unwrap();
        let mut keypair = ka.key().clone().into_keypair().unwrap();
        let (algo, unwrapped) = pkesk.decrypt(&mut keypair, None).unwrap();
        assert_eq!(algo, Some(sym));
        assert_eq!(&unwrapped[..], &session_key[..]);
        // Each call uses a fresh ephemeral key.
        let again = cv25519(&public, sym, &session_key).unwrap().unwrap();
        assert_ne!(
            openpgp::serialize::MarshalInto::to_vec(&again).unwrap(),
            openpgp::serialize::MarshalInto::to_vec(&pkesk).unwrap()
        );
        // Other algorithms are left to sequoia.
        let signing = cert.primary_key().key().clone().role_into_unspecified();
        assert!(cv25519(&signing, sym, &session_key).is_none());
    }
}
