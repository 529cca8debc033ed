//! Version 4 signatures (RFC 4880 §5.2.3, RFC 9580 §5.2.3) made by the provider key: the
//! evidence records' detached signatures and the signature of every message.
//!
//! sequoia's `SignatureBuilder::pre_sign` gives each v4 signature a salt notation
//! (`salt@notations.sequoia-pgp.org`, 32 random octets) drawn from its OpenSSL backend's
//! `random`, which instantiates a new HMAC-DRBG on every call: 2.7 % of the CPU of a 1 KiB
//! SMTP submission, which signs three times (docs/decisions.md, tenth round). This file
//! builds the same hashed area (creation time, issuer, issuer fingerprint, the salt from
//! rand's CSPRNG) with sequoia's subpacket types, hashes it with sequoia's v4 rules and
//! lets the `Signer` sign the digest: only the builder's call to the DRBG is left out.
//! sequoia and gpg verify the result in the tests.

use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::crypto::hash::{Context, Hash};
use openpgp::crypto::{Signer, mpi};
use openpgp::packet::signature::{Signature4, SignatureBuilder};
use openpgp::packet::{OnePassSig, Signature};
use openpgp::types::{HashAlgorithm, SignatureType};
use rand::RngCore;

/// The digest every signature of the gateway uses. SHA-256, not sequoia's default SHA-512:
/// it is also the digest evidence names a message by, so one pass over the content serves
/// both ([`super::message::Digested`]), and on CPUs with SHA extensions (this one) it is
/// the faster of the two; signatures made before with SHA-512 verify as ever.
pub const HASH: HashAlgorithm = HashAlgorithm::SHA256;

/// The notation sequoia salts v4 signatures with, so that a signature's digest cannot be
/// chosen by whoever supplies the signed data.
const SALT: &str = "salt@notations.sequoia-pgp.org";

/// A hash context for a v4 signature; feed it the signed data, then [`finish`].
pub fn context() -> openpgp::Result<Context> {
    Ok(HASH.context()?.for_signature(4))
}

/// A one-pass signature packet announcing the signature [`finish`] makes with `signer`
/// (the last and only one).
pub fn one_pass(signer: &dyn Signer, template: &SignatureBuilder) -> OnePassSig {
    let mut ops = openpgp::packet::one_pass_sig::OnePassSig3::new(template.typ());
    ops.set_pk_algo(signer.public().pk_algo());
    ops.set_hash_algo(HASH);
    ops.set_issuer(signer.public().keyid());
    ops.set_last(true);
    ops.into()
}

/// Signs what `data` has hashed, with `template`'s subpackets plus the creation time, the
/// issuer and a fresh salt. Binary signatures only: a text signature would need the data
/// hashed with normalised line ends, which nothing here does.
pub fn finish(
    signer: &mut dyn Signer,
    template: SignatureBuilder,
    mut data: Context,
) -> openpgp::Result<Signature> {
    if template.typ() != SignatureType::Binary {
        return Err(openpgp::Error::UnsupportedSignatureType(template.typ()).into());
    }
    let mut salt = [0u8; 32];
    rand::rng().fill_bytes(&mut salt);
    let public = signer.public();
    let (pk_algo, keyid, fingerprint) = (public.pk_algo(), public.keyid(), public.fingerprint());
    let fields = template
        .set_signature_creation_time(SystemTime::now())?
        .set_issuer(keyid)?
        .set_issuer_fingerprint(fingerprint)?
        .set_notation(SALT, salt, None, false)?;
    let unsigned = |digest_prefix, mpis| {
        Signature4::new(
            fields.typ(),
            pk_algo,
            HASH,
            fields.hashed_area().clone(),
            fields.unhashed_area().clone(),
            digest_prefix,
            mpis,
        )
    };
    let placeholder = mpi::Signature::Unknown {
        mpis: Box::new([]),
        rest: Box::new([]),
    };
    unsigned([0; 2], placeholder).hash(&mut data)?;
    let digest = data.into_digest()?;
    let mpis = signer.sign(HASH, &digest)?;
    Ok(unsigned([digest[0], digest[1]], mpis).into())
}

/// A detached signature of `template`'s type over `data`.
pub fn detached(
    signer: &mut dyn Signer,
    template: SignatureBuilder,
    data: &[u8],
) -> openpgp::Result<Signature> {
    let mut hash = context()?;
    hash.update(data);
    finish(signer, template, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::packet::signature::subpacket::NotationDataFlags;
    use openpgp::policy::StandardPolicy;

    /// What sequoia's own builder makes and what this file makes verify the same way and
    /// carry the same subpackets; a changed octet or another key fails.
    #[test]
    fn detached_signatures_verify_like_sequoias() {
        let policy = StandardPolicy::new();
        let (cert, _) = CertBuilder::new().add_signing_subkey().generate().unwrap();
        let other = CertBuilder::new()
            .add_signing_subkey()
            .generate()
            .unwrap()
            .0;
        let key = |c: &openpgp::Cert| {
            c.keys()
                .with_policy(&policy, None)
                .for_signing()
                .secret()
                .next()
                .unwrap()
                .key()
                .clone()
        };
        let mut signer = key(&cert).into_keypair().unwrap();
        let template = || {
            SignatureBuilder::new(SignatureType::Binary)
                .add_notation(
                    "sender@lemgo.example",
                    "bauamt@lemgo.example",
                    NotationDataFlags::empty().set_human_readable(),
                    false,
                )
                .unwrap()
        };
        for data in [&b""[..], b"x", &[0xA5; 70_000]] {
            let ours = detached(&mut signer, template(), data).unwrap();
            let theirs = template()
                .set_hash_algo(HASH)
                .sign_message(&mut signer, data)
                .unwrap();
            let tags = |s: &Signature| {
                let mut t: Vec<_> = s.hashed_area().iter().map(|p| p.tag()).collect();
                t.sort();
                t
            };
            assert_eq!(tags(&ours), tags(&theirs));
            assert_eq!(ours.hash_algo(), theirs.hash_algo());
            ours.verify_message(key(&cert).parts_as_public(), data)
                .unwrap();
            let mut altered = data.to_vec();
            altered.push(0);
            assert!(
                ours.verify_message(key(&cert).parts_as_public(), &altered)
                    .is_err()
            );
            assert!(
                ours.verify_message(key(&other).parts_as_public(), data)
                    .is_err()
            );
        }
        // A text signature would need line ends normalised first: refused, not made wrong.
        let text = SignatureBuilder::new(SignatureType::Text);
        assert!(detached(&mut signer, text, b"a\nb").is_err());
        let a = detached(&mut signer, template(), b"same").unwrap();
        let b = detached(&mut signer, template(), b"same").unwrap();
        assert_ne!(a.mpis(), b.mpis(), "each signature has a salt of its own");
    }
}
